//! The broker's threads: an actix System on its own thread, plus one worker Arbiter per core.
//!
//! The System thread binds the acceptors and starts the broker actors; the accept loops, the
//! Registry and the connections live on the workers. `Server` is the handle the daemon and the
//! tests hold: it knows the bound addresses and stops everything gracefully.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use actix::prelude::*;
use slog::{info, o, warn, Logger};
use starling_actors::broker::{Broker, BrokerHandle, BrokerSecurity};
use starling_actors::security::{DefaultSecurityManager, SecurityManager};
use tokio::sync::oneshot;

use crate::listener::{accept_loop, bind_for_workers, Endpoint};
use crate::settings::{Settings, SettingsError};
use crate::tls::{SslMode, Tls};

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The settings are invalid.
    #[error("invalid settings:\n{0}")]
    Settings(#[from] SettingsError),
    /// An acceptor could not listen.
    #[error("acceptor {acceptor:?}: cannot listen on {address}: {source}")]
    Bind {
        /// The acceptor's name.
        acceptor: String,
        /// The address it tried.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// A thread could not be started, or died during start-up.
    #[error("broker thread: {0}")]
    Thread(String),
    /// The durable store cannot be opened or read.
    #[error("{0}")]
    Store(#[from] starling_actors::store::StoreError),
}

/// A running broker.
#[derive(Debug)]
pub struct Server {
    addrs: Vec<(String, SocketAddr)>,
    security: Arc<dyn SecurityManager>,
    /// Each TLS acceptor's configuration, for `reload`.
    tls: Vec<(String, Tls)>,
    broker: BrokerHandle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Every acceptor's name and bound address, in settings order.
    pub fn addresses(&self) -> &[(String, SocketAddr)] {
        &self.addrs
    }

    /// The bound address of the named acceptor (port 0 in settings gives the real port here).
    pub fn local_addr(&self, acceptor: &str) -> Option<SocketAddr> {
        self.addrs
            .iter()
            .find(|(name, _)| name == acceptor)
            .map(|(_, addr)| *addr)
    }

    /// Re-reads what can change while running: the security manager's password and ACL
    /// files, and the TLS keystores and truststores (new handshakes use the new certificates;
    /// open connections are untouched). Returns what was reloaded and what failed; whatever
    /// failed keeps its previous state.
    pub fn reload(&self) -> (Vec<String>, Vec<String>) {
        let mut reloaded = Vec::new();
        let mut failed = Vec::new();
        match self.security.reload() {
            Ok(files) => reloaded.extend(files),
            Err(e) => failed.push(e),
        }
        for (name, tls) in &self.tls {
            match tls.reload() {
                Ok(()) => reloaded.push(format!("acceptor {name:?}: TLS certificate")),
                Err(e) => failed.push(format!("acceptor {name:?}: {e}")),
            }
        }
        (reloaded, failed)
    }

    /// A handle on the broker's actors (session snapshots, connection count).
    pub fn broker(&self) -> &BrokerHandle {
        &self.broker
    }

    /// Stops accepting, closes every connection (MQTT 5: DISCONNECT 0x8B), and waits for the
    /// broker's threads to end.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Starts the broker on its own threads and returns once every acceptor is listening.
pub fn start(settings: Settings, log: Logger) -> Result<Server, StartError> {
    let manager = DefaultSecurityManager::new(settings.security_options())
        .map_err(|e| StartError::Settings(SettingsError { problems: vec![e] }))?;
    start_with_security(settings, log, Arc::new(manager))
}

/// Like `start`, with a security manager of the embedder's (often a wrapper around
/// `DefaultSecurityManager` that changes one thing; see `examples/security_manager.rs`).
pub fn start_with_security(
    settings: Settings,
    log: Logger,
    manager: Arc<dyn SecurityManager>,
) -> Result<Server, StartError> {
    let acceptors = settings.acceptors()?;
    for acceptor in &acceptors {
        if !acceptor.ignored.is_empty() {
            warn!(log, "acceptor parameters ignored: they do not apply to MQTT in Starling";
                "acceptor" => &acceptor.name, "parameters" => acceptor.ignored.join(", "));
        }
    }
    let auth_methods = settings.auth_methods()?;
    let ws = Arc::new(settings.websocket());
    let handshake_timeout = Duration::from_millis(settings.core.handshake_timeout);
    let mut endpoints = Vec::new();
    let mut tls_handles = Vec::new();
    for acceptor in &acceptors {
        let tls = match acceptor.tls.mode {
            SslMode::Off => None,
            _ => Some(Tls::new(acceptor.tls.clone()).map_err(|e| {
                StartError::Settings(SettingsError {
                    problems: vec![format!("acceptor {:?}: {e}", acceptor.name)],
                })
            })?),
        };
        if let Some(tls) = &tls {
            tls_handles.push((acceptor.name.clone(), tls.clone()));
        }
        endpoints.push(Endpoint {
            mqtt: Arc::new(acceptor.mqtt.clone()),
            tls,
            ws: Arc::clone(&ws),
            handshake_timeout,
        });
    }
    let security_manager = Arc::clone(&manager);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("starling-system".to_owned())
        .spawn(move || {
            let system = actix_rt::System::new();
            let workers: Vec<Arbiter> = (0..settings.worker_count())
                .map(|_| Arbiter::new())
                .collect();
            let handles: Vec<ArbiterHandle> = workers.iter().map(Arbiter::handle).collect();
            system.block_on(async move {
                let mut bound = Vec::new();
                for (acceptor, endpoint) in acceptors.into_iter().zip(endpoints) {
                    let address = acceptor.bind_address();
                    match bind_for_workers(&address, handles.len(), acceptor.socket).await {
                        Ok((addr, listeners)) => bound.push((acceptor, endpoint, addr, listeners)),
                        Err(source) => {
                            let _ = ready_tx.send(Err(StartError::Bind {
                                acceptor: acceptor.name,
                                address,
                                source,
                            }));
                            return;
                        }
                    }
                }
                let security = BrokerSecurity {
                    manager: security_manager,
                    auth_methods,
                    failure_delay: Duration::from_millis(settings.security.auth_failure_delay),
                };
                let broker =
                    match Broker::start(&settings.broker_config(), security, &handles, &log) {
                        Ok(broker) => broker,
                        Err(e) => {
                            let _ = ready_tx.send(Err(StartError::Store(e)));
                            return;
                        }
                    };
                let mut addrs = Vec::new();
                // Flips to true to stop every accept loop.
                let (stop_accepting, accepting) = tokio::sync::watch::channel(false);
                for (acceptor, endpoint, addr, listeners) in bound {
                    // Shared by every socket's handshake task: one pointer each, not a copy.
                    let endpoint = Arc::new(endpoint);
                    info!(log, "listening"; "acceptor" => &acceptor.name, "address" => %addr);
                    addrs.push((acceptor.name.clone(), addr));
                    let log = log.new(o!("acceptor" => acceptor.name.clone()));
                    for (listener, worker) in listeners.into_iter().zip(&handles) {
                        worker.spawn(accept_loop(
                            listener,
                            Arc::clone(&endpoint),
                            broker.handle(),
                            log.clone(),
                            accepting.clone(),
                        ));
                    }
                }
                if ready_tx.send(Ok((addrs, broker.handle()))).is_err() {
                    return;
                }
                let _ = stop_rx.await;
                let _ = stop_accepting.send(true);
                info!(
                    log,
                    "shutting down: no longer accepting, closing connections"
                );
                broker
                    .shutdown(Duration::from_millis(settings.core.shutdown_grace))
                    .await;
                info!(log, "broker stopped");
            });
            for worker in workers {
                worker.stop();
                let _ = worker.join();
            }
        })
        .map_err(|e| StartError::Thread(e.to_string()))?;
    match ready_rx.recv() {
        Ok(Ok((addrs, broker))) => Ok(Server {
            addrs,
            security: manager,
            tls: tls_handles,
            broker,
            stop: Some(stop_tx),
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(StartError::Thread(
                "the broker thread ended during start-up".to_owned(),
            ))
        }
    }
}
