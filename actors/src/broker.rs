//! The broker as a whole: starts the long-lived actors and hands sockets to Connections.
//!
//! `Broker::start` starts the TopicNode shards (spread over the worker arbiters), the
//! RetainStore and the Registry. A worker's accept loop calls `BrokerHandle::accept` for the
//! sockets it accepted; the Connection actor is created on that worker. `Broker::shutdown` tells every
//! Connection to close (MQTT 5 clients get DISCONNECT 0x8B) and waits for them to go.
//!
//! Every long-lived actor is started through the Supervisor (`supervisor`), which restarts it
//! when it fails; the store is opened first, and what it holds is what the actors start with.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use slog::{info, o, Logger};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::config::{BrokerConfig, MqttConfig};
use crate::connection::Connection;
use crate::metrics::{Metrics, Reporter};
use crate::msg::{FlushSessions, QuerySession, SessionInfo};
use crate::registry::{InjectSessionFault, Registry, RegistryParts, SessionTable};
use crate::retain::RetainStore;
use crate::security::{AuthMethods, FailureTracker, SecurityManager};
use crate::session::SessionShared;
use crate::store::{Recovered, Store, StoreError};
use crate::supervisor::{InjectFault, Supervision, Supervisor};
use crate::topic::{Router, ShardParts, TopicNode};

/// Any byte stream a Connection can speak MQTT over: TCP, TLS, WebSocket.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + 'static> Transport for T {}

/// How a client reached the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportInfo {
    /// `tcp`, `tls`, `ws` or `wss`.
    pub kind: &'static str,
    /// The subject common name of the client's TLS certificate, when it presented one.
    pub client_identity: Option<String>,
    /// The largest packet the transport itself can carry (WebSocket: its largest message).
    /// When the acceptor has a `maximumPacketSize`, the connection's Maximum Packet Size is
    /// the smaller of the two, and CONNACK says so; with `maximumPacketSize=-1` nothing is
    /// announced and only the transport enforces its limit.
    pub max_packet_size: Option<u32>,
}

/// The broker's access control.
#[derive(Debug, Clone)]
pub struct BrokerSecurity {
    /// Authentication and authorization.
    pub manager: Arc<dyn SecurityManager>,
    /// MQTT 5 enhanced authentication methods.
    pub auth_methods: AuthMethods,
    /// Each failed login from an address waits this long times its recent failures.
    pub failure_delay: Duration,
}

/// What every Connection shares: where to send things, and the shutdown signal.
#[derive(Debug)]
pub struct BrokerContext {
    /// The Registry actor (session queries, fault injection, flushing at shutdown).
    pub registry: Addr<Registry>,
    /// What sessions are opened with: the session table and what every session is given.
    pub sessions: Arc<SessionShared>,
    /// The TopicNode shards.
    pub router: Router,
    /// Flips to `true` when the broker shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Connections currently open.
    pub connections: AtomicUsize,
    /// MQTT 5 enhanced authentication methods on offer.
    pub auth_methods: AuthMethods,
    /// Who may connect, publish, subscribe.
    pub security: Arc<dyn SecurityManager>,
    /// Slows repeated failed logins from one address.
    pub failures: FailureTracker,
    /// Per-worker counters.
    pub metrics: Arc<Metrics>,
    /// `[supervisor] fault_injection`.
    fault_injection: bool,
    /// Becomes `Some(why)` when the broker gives up (the supervisor's restart budget is
    /// spent, or the store failed).
    failed: watch::Receiver<Option<String>>,
    next_conn_id: AtomicU64,
    /// The root logger.
    pub log: Logger,
}

impl BrokerContext {
    /// A fresh connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// A cheap, thread-safe handle for accepting connections.
#[derive(Debug, Clone)]
pub struct BrokerHandle(Arc<BrokerContext>);

/// Which actor an injected fault hits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultTarget {
    /// TopicNode shard number.
    Shard(usize),
    /// The RetainStore.
    RetainStore,
    /// The Registry.
    Registry,
    /// The Session of this client id.
    Session(String),
    /// The durable store: its next commit fails.
    Store,
}

impl BrokerHandle {
    /// Makes an actor fail (tests only): refused unless `[supervisor] fault_injection` is on.
    pub async fn inject_fault(
        &self,
        target: FaultTarget,
        fault: InjectFault,
    ) -> Result<(), &'static str> {
        if !self.0.fault_injection {
            return Err("fault injection is off ([supervisor] fault_injection)");
        }
        let router = &self.0.router;
        match target {
            FaultTarget::Shard(i) => router.shard(i).ok_or("no such shard")?.do_send(fault),
            FaultTarget::RetainStore => router.retain_store().do_send(fault),
            FaultTarget::Registry => self.0.registry.do_send(fault),
            FaultTarget::Store => self
                .0
                .sessions
                .store
                .as_ref()
                .ok_or("persistence is off")?
                .send(crate::store::Op::FailCommit),
            FaultTarget::Session(client_id) => {
                let found = self
                    .0
                    .registry
                    .send(InjectSessionFault { client_id, fault })
                    .await
                    .map_err(|_| "registry unavailable")?;
                if !found {
                    return Err("no such session");
                }
            }
        }
        Ok(())
    }

    /// Resolves with the reason once the broker has given up: the supervisor's restart budget
    /// is spent, or the store failed to commit.
    pub async fn failed(&self) -> String {
        let mut failed = self.0.failed.clone();
        loop {
            if let Some(why) = failed.borrow_and_update().clone() {
                return why;
            }
            if failed.changed().await.is_err() {
                // The broker is gone without giving up: never resolves.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Starts a Connection actor for `io` on the current arbiter (the worker that accepted
    /// the socket).
    pub fn accept(
        &self,
        io: Box<dyn Transport>,
        peer: SocketAddr,
        config: Arc<MqttConfig>,
        transport: TransportInfo,
    ) {
        Connection::start_for(Arc::clone(&self.0), io, peer, config, transport);
    }

    /// A snapshot of the session of `client_id`, if there is one. Usable from any runtime.
    pub async fn session_info(&self, client_id: &str) -> Option<SessionInfo> {
        self.0
            .registry
            .send(QuerySession {
                client_id: client_id.to_owned(),
            })
            .await
            .ok()
            .flatten()
    }
}

/// The running broker actors.
#[derive(Debug)]
pub struct Broker {
    context: Arc<BrokerContext>,
    shutdown: watch::Sender<bool>,
    store: Option<Store>,
}

impl Broker {
    /// Opens the store (reading back what it holds), then starts the TopicNode shards
    /// round-robin over `workers` and the Registry on the first worker, with the recovered
    /// sessions and retained messages. Must be called inside a running actix System.
    pub fn start(
        config: &BrokerConfig,
        security: BrokerSecurity,
        workers: &[ArbiterHandle],
        log: &Logger,
    ) -> Result<Broker, StoreError> {
        // Why the broker gave up: too many actor failures, or a store that failed.
        let failed_tx = Arc::new(watch::channel(None).0);
        let failed = failed_tx.subscribe();
        let (store, recovered) = match &config.persistence {
            Some(persistence) => {
                let (store, recovered) = Store::open(persistence, Arc::clone(&failed_tx), log)?;
                (Some(store), recovered)
            }
            None => (None, Recovered::default()),
        };
        let metrics = Metrics::new(workers.len());
        let supervisor = Supervisor::new(config.supervision, Arc::clone(&metrics), failed_tx, log);
        let supervision = Supervision::new(supervisor.start());
        // Every session, by client id: the shards ask them for their subscriptions when
        // rebuilt, connections open them, the Registry fills it from the store.
        let table = Arc::new(SessionTable::new());
        for (i, worker) in workers.iter().enumerate() {
            // Before anything else runs there: every actor on the worker counts in its slot.
            worker.spawn(async move { Metrics::enter_worker(i) });
            if !config.busy_poll.is_zero() {
                let (window, metrics) = (config.busy_poll, Arc::clone(&metrics));
                // The poller holds thread-local state, so it is made on its worker.
                worker.spawn_fn(move || {
                    actix_rt::spawn(crate::busy_poll::run(window, metrics));
                });
            }
        }
        let shard_count = config.topic_shards.max(1);
        // A safety valve against overload, well above the queue bound, so that in normal
        // operation the session's own queue and its drop policy decide what is dropped.
        let mailbox_limit = config
            .session
            .queue
            .max_messages
            .saturating_mul(2)
            .max(1000);
        let shard_parts = ShardParts {
            mailbox_limit,
            metrics: Arc::clone(&metrics),
            store: store.clone(),
            sessions: Arc::clone(&table),
        };
        let shards = (0..shard_count)
            .map(|i| {
                let log = log.clone();
                let parts = shard_parts.clone();
                supervision.start(
                    workers.get(i % workers.len().max(1)),
                    "topic_node",
                    i.to_string().into(),
                    move |_| TopicNode::new(i, parts, &log),
                )
            })
            .collect();
        let retain_store = RetainStore::new(
            config.retained_expiry,
            config.session_scan_interval,
            store.clone(),
            recovered.retained,
            log,
        );
        let retain = supervision.start(None, "retain_store", "".into(), move |_| retain_store);
        let router = Router::new(shards, retain);
        Reporter::new(
            Arc::clone(&metrics),
            router.clone(),
            config.metrics_log_interval,
            config.sys_interval,
            &log.new(o!()),
        )
        .start();
        let (registry, sessions) = Registry::start(
            RegistryParts {
                router: router.clone(),
                security: Arc::clone(&security.manager),
                metrics: Arc::clone(&metrics),
                config: config.session,
                scan_interval: config.session_scan_interval,
                store: store.clone(),
                supervision,
                table,
            },
            recovered.sessions,
            recovered.expired_wills,
            workers,
            log,
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        info!(log, "broker actors started"; "topic_shards" => shard_count, "workers" => workers.len());
        Ok(Broker {
            store,
            context: Arc::new(BrokerContext {
                registry,
                sessions,
                router,
                shutdown: shutdown_rx,
                connections: AtomicUsize::new(0),
                auth_methods: security.auth_methods,
                security: security.manager,
                failures: FailureTracker::new(security.failure_delay),
                metrics,
                fault_injection: config.supervision.fault_injection,
                failed,
                next_conn_id: AtomicU64::new(1),
                log: log.new(o!()),
            }),
            shutdown,
        })
    }

    /// A handle the accept loops use to turn sockets into Connections.
    pub fn handle(&self) -> BrokerHandle {
        BrokerHandle(Arc::clone(&self.context))
    }

    /// Tells every Connection to close and waits, at most `grace`, until they have; then lets
    /// every Session record its client's departure and closes the store (a durable commit).
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let deadline = Instant::now() + grace;
        while self.context.connections.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Some(store) = &self.store {
            // Every Detach is queued by now; a round trip to each session passes it.
            let _ = tokio::time::timeout(grace, self.context.registry.send(FlushSessions)).await;
            store.close().await;
        }
    }
}
