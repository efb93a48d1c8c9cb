//! Accepting connections: one accept loop per acceptor; on a worker arbiter, the first bytes
//! tell TCP, TLS and WebSocket apart on one port.
//!
//! Each accept loop runs on a worker arbiter itself (acceptors spread over the workers), and
//! sockets go to the workers round-robin. One for the loop's own worker is served right there
//! (no thread switch: with one worker, a CONNECT never leaves its thread). A tokio socket
//! stays driven by the reactor it was created on, so one for another worker is turned into a
//! std socket, moved, and rebuilt there; the TLS and WebSocket handshakes run on the worker
//! too. Sniffing: `0x16` starts a TLS handshake
//! (when the acceptor has TLS), after which the first decrypted bytes are sniffed again; `GET`
//! is a WebSocket upgrade; anything else is raw MQTT (whose decoder closes on garbage). With
//! `sslEnabled=true` only TLS is accepted; with `optional`, all four transports are. The whole
//! handshake is bounded by `core.handshake_timeout`.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use slog::{debug, warn, Logger};
use starling_actors::broker::{BrokerHandle, Transport, TransportInfo};
use starling_actors::config::MqttConfig;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::tls::{certificate_identity, SslMode, Tls};
use crate::websocket::{self, WsSettings};

/// Round-robin over the worker arbiters.
#[derive(Debug)]
pub struct Workers {
    arbiters: Vec<ArbiterHandle>,
    next: AtomicUsize,
}

impl Workers {
    /// Workers over started arbiters (at least one).
    pub fn new(arbiters: Vec<ArbiterHandle>) -> Workers {
        Workers {
            arbiters,
            next: AtomicUsize::new(0),
        }
    }

    /// The next worker, round-robin, with its index.
    fn pick(&self) -> Option<(usize, &ArbiterHandle)> {
        if self.arbiters.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        self.arbiters.get(i).map(|arbiter| (i, arbiter))
    }

    /// The worker an acceptor's accept loop runs on (acceptors are spread over them).
    pub fn home(&self, acceptor: usize) -> Option<(usize, &ArbiterHandle)> {
        let i = acceptor % self.arbiters.len().max(1);
        self.arbiters.get(i).map(|arbiter| (i, arbiter))
    }
}

/// Everything one acceptor needs to serve a socket.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The acceptor's MQTT parameters.
    pub mqtt: Arc<MqttConfig>,
    /// TLS, when `sslEnabled` is true or optional.
    pub tls: Option<Tls>,
    /// WebSocket settings.
    pub ws: Arc<WsSettings>,
    /// Bound on sniffing plus TLS and WebSocket handshakes.
    pub handshake_timeout: Duration,
}

impl Endpoint {
    fn plain_allowed(&self) -> bool {
        self.tls
            .as_ref()
            .is_none_or(|tls| tls.mode() != SslMode::Required)
    }
}

/// Accepts connections until `stop` flips to true (or its sender is gone). It runs on worker
/// `home`: a socket it gives to that same worker is served where it was accepted, with no
/// thread switch; one for another worker is handed over as a std socket.
pub async fn accept_loop(
    listener: std::net::TcpListener,
    home: usize,
    endpoint: Endpoint,
    workers: Arc<Workers>,
    broker: BrokerHandle,
    log: Logger,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // Shared by every socket's handshake task: one pointer each instead of a copy.
    let endpoint = Arc::new(endpoint);
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            warn!(log, "listener adoption failed; not accepting"; "error" => %e);
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow_and_update() {
                    return;
                }
                continue;
            }
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(log, "accept failed"; "error" => %e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Small packets must leave at once (Nagle adds ~40 ms).
        let _ = stream.set_nodelay(true);
        let Some((index, worker)) = workers.pick() else {
            return;
        };
        let (broker, endpoint, log) = (broker.clone(), Arc::clone(&endpoint), log.clone());
        if index == home {
            actix_rt::spawn(serve(stream, peer, endpoint, broker, log));
            continue;
        }
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                debug!(log, "socket hand-over failed"; "error" => %e);
                continue;
            }
        };
        worker.spawn(async move {
            match TcpStream::from_std(std_stream) {
                Ok(stream) => serve(stream, peer, endpoint, broker, log).await,
                Err(e) => debug!(log, "socket adoption failed"; "error" => %e),
            }
        });
    }
}

/// Runs the transport's handshakes on an accepted socket, then hands it to the broker.
async fn serve(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    endpoint: Arc<Endpoint>,
    broker: BrokerHandle,
    log: Logger,
) {
    let timeout = endpoint.handshake_timeout;
    match tokio::time::timeout(timeout, handshake(stream, &endpoint)).await {
        Ok(Ok(Some((io, info)))) => broker.accept(io, peer, Arc::clone(&endpoint.mqtt), info),
        Ok(Ok(None)) => debug!(log, "connection refused by transport rules"; "peer" => %peer),
        Ok(Err(e)) => debug!(log, "handshake failed"; "peer" => %peer, "error" => %e),
        Err(_) => debug!(log, "handshake timed out"; "peer" => %peer),
    }
}

type Accepted = Option<(Box<dyn Transport>, TransportInfo)>;

/// Sniffs and completes the transport's handshakes; `None` when the transport is not allowed.
async fn handshake(stream: TcpStream, endpoint: &Endpoint) -> io::Result<Accepted> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Ok(None);
    }
    match (first[0], &endpoint.tls) {
        // The TLS and WebSocket handshakes are large futures (the TLS one over 15 KB): boxed,
        // so that the plain-TCP path, which every task of a connect burst is sized for, stays
        // small and leaves no large holes in the heap.
        (0x16, Some(tls)) => Box::pin(tls_handshake(stream, tls, endpoint))
            .await
            .map(Some),
        (b'G', _) if endpoint.plain_allowed() => {
            Box::pin(finish(stream, true, false, None, endpoint))
                .await
                .map(Some)
        }
        (_, _) if endpoint.plain_allowed() => Ok(Some((
            Box::new(stream),
            TransportInfo {
                kind: "tcp",
                client_identity: None,
            },
        ))),
        _ => Ok(None),
    }
}

/// TLS, then the first decrypted bytes tell MQTT from a WebSocket upgrade.
async fn tls_handshake(
    stream: TcpStream,
    tls: &Tls,
    endpoint: &Endpoint,
) -> io::Result<(Box<dyn Transport>, TransportInfo)> {
    let tls_stream = tls.acceptor().accept(stream).await?;
    let identity = tls_stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| certificate_identity(cert));
    // Sniff again inside TLS: a small buffer, so that little stays allocated.
    let mut inner = BufReader::with_capacity(64, tls_stream);
    let is_ws = inner.fill_buf().await?.first() == Some(&b'G');
    finish(inner, is_ws, true, identity, endpoint).await
}

async fn finish<S>(
    stream: S,
    websocket: bool,
    tls: bool,
    client_identity: Option<String>,
    endpoint: &Endpoint,
) -> io::Result<(Box<dyn Transport>, TransportInfo)>
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let kind = match (websocket, tls) {
        (false, false) => "tcp",
        (false, true) => "tls",
        (true, false) => "ws",
        (true, true) => "wss",
    };
    let info = TransportInfo {
        kind,
        client_identity,
    };
    if websocket {
        let ws = websocket::accept(stream, &endpoint.ws).await?;
        Ok((Box::new(ws), info))
    } else {
        Ok((Box::new(stream), info))
    }
}
