//! Accepting connections: one accept loop per acceptor and worker; the first bytes tell TCP,
//! TLS and WebSocket apart on one port.
//!
//! Every acceptor binds one listening socket per worker, with `SO_REUSEPORT`, and each worker
//! runs an accept loop on its own: the kernel spreads connections over the workers, and a
//! socket is served on the thread that accepted it (no hand-over between threads; with one
//! worker a CONNECT never leaves its thread). The TLS and WebSocket handshakes run there too.
//! Sniffing: `0x16` starts a TLS handshake (when the acceptor has TLS), after which the first
//! decrypted bytes are sniffed again; `GET` is a WebSocket upgrade; anything else is raw MQTT (whose decoder closes on garbage). With
//! `sslEnabled=true` only TLS is accepted; with `optional`, all four transports are. The whole
//! handshake is bounded by `core.handshake_timeout`. A plain MQTT socket whose first byte is
//! already there when it is accepted (the usual case) skips the handshake task and goes to the
//! broker from the accept loop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use slog::{debug, warn, Logger};
use starling_actors::broker::{BrokerHandle, Transport, TransportInfo};
use starling_actors::config::MqttConfig;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::acceptor::SocketOptions;
use crate::tls::{certificate_identity, SslMode, Tls};
use crate::websocket::{self, WsSettings};

/// Binds `count` listening sockets to `address` with `SO_REUSEPORT`, one per worker: the kernel
/// spreads incoming connections over them, so each worker accepts and serves its own share with
/// no socket handed between threads. The first socket resolves port 0; the others join it.
/// The buffer sizes of `options` are set on the listening sockets, before `listen` (so that
/// the TCP window scale offered in the handshake fits them); accepted sockets inherit them.
/// Must run inside a tokio runtime (the sockets are converted to std ones for their workers).
pub async fn bind_for_workers(
    address: &str,
    count: usize,
    options: SocketOptions,
) -> io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host(address).await? {
        match bind_group(addr, count.max(1), options) {
            Ok(listeners) => return Ok(listeners),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )
    }))
}

fn bind_group(
    addr: SocketAddr,
    count: usize,
    options: SocketOptions,
) -> io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    if addr.port() != 0 {
        // With `SO_REUSEPORT` alone, a second broker on this port would silently share it. A
        // plain bind first fails, as it should, when anything listens there already.
        drop(std::net::TcpListener::bind(addr)?);
    }
    let first = listen_on(addr, options)?;
    let bound = first.local_addr()?;
    let mut listeners = vec![first.into_std()?];
    for _ in 1..count {
        listeners.push(listen_on(bound, options)?.into_std()?);
    }
    Ok((bound, listeners))
}

fn listen_on(addr: SocketAddr, options: SocketOptions) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    if let Some(size) = options.send_buffer_size {
        socket.set_send_buffer_size(size)?;
    }
    if let Some(size) = options.receive_buffer_size {
        socket.set_recv_buffer_size(size)?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Pending connections the kernel holds per listening socket.
const LISTEN_BACKLOG: u32 = 1024;

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

/// Accepts connections until `stop` flips to true (or its sender is gone), and serves each on
/// this worker: the listener is this worker's own (`bind_for_workers`).
pub async fn accept_loop(
    listener: std::net::TcpListener,
    endpoint: Arc<Endpoint>,
    broker: BrokerHandle,
    log: Logger,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
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
        starling_actors::busy_poll::touch();
        // Small packets must leave at once (Nagle adds ~40 ms).
        let _ = stream.set_nodelay(true);
        // Clients send CONNECT as soon as they are connected, so its first byte is usually
        // here already: plain MQTT then goes to the broker at once, without a handshake task.
        if first_byte_now(&stream).is_some_and(|b| matches!(endpoint.sniff(b), Sniffed::Mqtt)) {
            broker.accept(
                Box::new(stream),
                peer,
                Arc::clone(&endpoint.mqtt),
                plain_tcp(),
            );
            continue;
        }
        let (broker, endpoint, log) = (broker.clone(), Arc::clone(&endpoint), log.clone());
        actix_rt::spawn(serve(stream, peer, endpoint, broker, log));
    }
}

/// The socket's first byte if it has arrived, without waiting.
fn first_byte_now(stream: &TcpStream) -> Option<u8> {
    let mut first = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut first);
    let mut task = std::task::Context::from_waker(std::task::Waker::noop());
    match stream.poll_peek(&mut task, &mut buf) {
        std::task::Poll::Ready(Ok(1)) => Some(first[0]),
        _ => None,
    }
}

fn plain_tcp() -> TransportInfo {
    TransportInfo {
        kind: "tcp",
        client_identity: None,
        max_packet_size: None,
    }
}

/// What a socket's first byte makes of it on an acceptor.
#[derive(Debug, Clone, Copy)]
enum Sniffed<'a> {
    /// `0x16` with TLS configured: a TLS handshake with these settings.
    Tls(&'a Tls),
    /// `G`: a WebSocket upgrade request.
    WebSocket,
    /// Anything else: raw MQTT (whose decoder closes on garbage).
    Mqtt,
    /// A transport the acceptor does not allow (plain bytes where TLS is required).
    Refused,
}

impl Endpoint {
    fn sniff(&self, first: u8) -> Sniffed<'_> {
        match (first, &self.tls) {
            (0x16, Some(tls)) => Sniffed::Tls(tls),
            _ if !self.plain_allowed() => Sniffed::Refused,
            (b'G', _) => Sniffed::WebSocket,
            _ => Sniffed::Mqtt,
        }
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
    // The TLS and WebSocket handshakes are large futures (the TLS one over 15 KB): boxed, so
    // that this task stays small and leaves no large holes in the heap.
    match endpoint.sniff(first[0]) {
        Sniffed::Tls(tls) => Box::pin(tls_handshake(stream, tls, endpoint))
            .await
            .map(Some),
        Sniffed::WebSocket => Box::pin(finish(stream, true, false, None, endpoint))
            .await
            .map(Some),
        Sniffed::Mqtt => Ok(Some((Box::new(stream), plain_tcp()))),
        Sniffed::Refused => Ok(None),
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
        // A WebSocket message larger than this is refused by the WebSocket layer before the
        // MQTT codec could answer 0x95: clients are told the limit instead, when it is below
        // the acceptor's `maximumPacketSize` (with -1, nothing is announced).
        max_packet_size: websocket
            .then(|| u32::try_from(endpoint.ws.max_frame_size).unwrap_or(u32::MAX)),
    };
    if websocket {
        let ws = websocket::accept(stream, &endpoint.ws).await?;
        Ok((Box::new(ws), info))
    } else {
        Ok((Box::new(stream), info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tcpSendBufferSize` / `tcpReceiveBufferSize` reach the sockets a listener accepts.
    /// (Linux reports twice the size asked for, its bookkeeping included. Its defaults for an
    /// accepted socket come from `tcp_wmem` / `tcp_rmem`: commonly MiBs to send and 128 KiB to
    /// receive, outside the ranges checked.)
    #[tokio::test]
    async fn accepted_sockets_get_the_buffer_sizes_of_the_acceptor() {
        let options = SocketOptions {
            send_buffer_size: Some(50_000),
            receive_buffer_size: Some(40_000),
        };
        let (addr, mut listeners) = bind_for_workers("127.0.0.1:0", 1, options)
            .await
            .expect("bind");
        let listener = TcpListener::from_std(listeners.remove(0)).expect("listener");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        let socket = TcpSocket::from_std_stream(accepted.into_std().expect("std stream"));
        let send = socket.send_buffer_size().expect("SO_SNDBUF");
        let receive = socket.recv_buffer_size().expect("SO_RCVBUF");
        assert!((50_000..=100_000).contains(&send), "SO_SNDBUF {send}");
        assert!((40_000..=80_000).contains(&receive), "SO_RCVBUF {receive}");
    }
}
