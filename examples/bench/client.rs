//! A minimal MQTT client for the load generator: opening sockets (optionally from a chosen
//! loopback source address), the CONNECT handshake, and a zero-copy frame parser for the packets
//! on the hot path (PUBLISH and its acknowledgements). Everything else is handed to
//! `starling_proto::decode`.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU16;

use bytes::{BufMut, BytesMut};
use starling_proto::{
    decode, encode, Connect, Disconnect, Limits, Packet, Protocol, ReasonCode, Subscribe,
    SubscriptionOptions, TopicFilter,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout_at, Instant};

/// Packet type nibbles of the acknowledgements the bench handles on the hot path.
pub(crate) const PUBACK: u8 = 4;
/// PUBREC type nibble.
pub(crate) const PUBREC: u8 = 5;
/// PUBREL type nibble.
pub(crate) const PUBREL: u8 = 6;
/// PUBCOMP type nibble.
pub(crate) const PUBCOMP: u8 = 7;

/// Read buffer growth step: reads are done into at least this much spare room.
const READ_CHUNK: usize = 64 * 1024;

/// An error of the load generator, already worded for the user.
#[derive(Debug, Clone)]
pub(crate) struct Error(pub(crate) String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error(format!("I/O error: {e}"))
    }
}

/// Shorthand for results of the bench.
pub(crate) type Result<T> = std::result::Result<T, Error>;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The broker's address.
    pub(crate) addr: SocketAddr,
    /// MQTT 3.1.1 or 5.
    pub(crate) protocol: Protocol,
    /// Local addresses to bind client sockets to, used round robin; empty: the kernel picks.
    pub(crate) source_ips: Vec<IpAddr>,
    /// Connect with persistent sessions (clean start 0; MQTT 5: session expiry 300 s), so
    /// that a broker with persistence stores what it queues for them.
    pub(crate) persistent: bool,
}

/// One connection: the socket and its buffers.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The socket.
    pub(crate) stream: TcpStream,
    /// Bytes read and not yet parsed.
    pub(crate) rbuf: BytesMut,
    /// Bytes encoded and not yet written.
    pub(crate) wbuf: BytesMut,
    /// The protocol of the connection.
    pub(crate) protocol: Protocol,
}

/// One packet parsed from the read buffer.
#[derive(Debug)]
pub(crate) enum Frame<'a> {
    /// A PUBLISH, borrowed from the buffer.
    Publish {
        /// QoS 0, 1 or 2.
        qos: u8,
        /// Packet identifier (0 for QoS 0).
        packet_id: u16,
        /// Application payload.
        payload: &'a [u8],
    },
    /// PUBACK, PUBREC, PUBREL or PUBCOMP.
    Ack {
        /// The packet type nibble (`PUBACK` ..= `PUBCOMP`).
        kind: u8,
        /// The acknowledged packet identifier.
        packet_id: u16,
        /// The reason code (MQTT 5; 0 when absent).
        reason: u8,
    },
    /// Anything else, decoded by `starling_proto`.
    Other(Packet),
}

/// Opens a TCP connection to the broker, bound to source address number `index` (modulo the
/// list) when source addresses are configured.
pub(crate) async fn open(target: &Target, index: usize, deadline: Instant) -> Result<TcpStream> {
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if !target.source_ips.is_empty() {
        let ip = target.source_ips[index % target.source_ips.len()];
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| Error(format!("cannot bind a client socket to {ip}: {e}")))?;
    }
    let stream = match timeout_at(deadline, socket.connect(target.addr)).await {
        Err(_) => return Err(Error(format!("connecting to {} timed out", target.addr))),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(Error(format!(
                "connection refused by {}: is the broker running?",
                target.addr
            )))
        }
        Ok(Err(e)) if e.raw_os_error() == Some(99) => {
            return Err(Error(format!(
                "no free local port to connect to {} (EADDRNOTAVAIL): add --source-ips",
                target.addr
            )))
        }
        Ok(Err(e)) => return Err(Error(format!("connecting to {}: {e}", target.addr))),
        Ok(Ok(s)) => s,
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The varint-encoded remaining length.
fn put_remaining_length(out: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

/// Appends the header of a PUBLISH (fixed header, topic, packet id, empty v5 properties); the
/// caller appends exactly `payload_len` payload bytes next.
pub(crate) fn put_publish_header(
    out: &mut BytesMut,
    protocol: Protocol,
    topic: &[u8],
    qos: u8,
    retain: bool,
    packet_id: u16,
    payload_len: usize,
) {
    let props = usize::from(protocol.is_v5());
    let id = if qos > 0 { 2 } else { 0 };
    let remaining = 2 + topic.len() + id + props + payload_len;
    out.reserve(remaining + 5);
    out.put_u8(0x30 | (qos << 1) | u8::from(retain));
    put_remaining_length(out, remaining);
    out.put_u16(topic.len() as u16);
    out.put_slice(topic);
    if qos > 0 {
        out.put_u16(packet_id);
    }
    if props == 1 {
        out.put_u8(0);
    }
}

/// Appends PUBACK, PUBREC, PUBREL or PUBCOMP (success, no properties: the same bytes in 3.1.1
/// and 5).
pub(crate) fn put_ack(out: &mut BytesMut, kind: u8, packet_id: u16) {
    let flags = if kind == PUBREL { 0x02 } else { 0 };
    out.put_u8((kind << 4) | flags);
    out.put_u8(2);
    out.put_u16(packet_id);
}

/// Parses one packet at the start of `buf`. `Ok(None)`: not complete yet. `Ok(Some((frame,
/// len)))`: a packet of `len` bytes.
pub(crate) fn parse(buf: &[u8], protocol: Protocol) -> Result<Option<(Frame<'_>, usize)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let mut remaining: usize = 0;
    let mut shift = 0;
    let mut pos = 1;
    loop {
        let Some(&byte) = buf.get(pos) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7f) << shift;
        pos += 1;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return Err(Error("malformed remaining length from the broker".into()));
        }
    }
    let total = pos + remaining;
    if buf.len() < total {
        return Ok(None);
    }
    let first = buf[0];
    let body = &buf[pos..total];
    let malformed = |what: &str| Error(format!("malformed {what} from the broker"));
    let frame = match first >> 4 {
        3 => {
            let qos = (first >> 1) & 3;
            let topic_len = usize::from(u16::from_be_bytes(
                body.get(..2)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| malformed("PUBLISH"))?,
            ));
            let mut at = 2 + topic_len;
            let mut packet_id = 0;
            if qos > 0 {
                let b = body.get(at..at + 2).ok_or_else(|| malformed("PUBLISH"))?;
                packet_id = u16::from_be_bytes([b[0], b[1]]);
                at += 2;
            }
            if protocol.is_v5() {
                let (len, used) = varint(body.get(at..).unwrap_or_default())
                    .ok_or_else(|| malformed("PUBLISH properties"))?;
                at += used + len;
            }
            let payload = body.get(at..).ok_or_else(|| malformed("PUBLISH"))?;
            Frame::Publish {
                qos,
                packet_id,
                payload,
            }
        }
        kind @ (PUBACK | PUBREC | PUBREL | PUBCOMP) => {
            let b = body.get(..2).ok_or_else(|| malformed("acknowledgement"))?;
            Frame::Ack {
                kind,
                packet_id: u16::from_be_bytes([b[0], b[1]]),
                reason: body.get(2).copied().unwrap_or(0),
            }
        }
        _ => {
            let mut bytes = BytesMut::from(&buf[..total]);
            let limits = Limits {
                protocol,
                max_packet_size: None,
            };
            match decode(&mut bytes, &limits) {
                Ok(Some(packet)) => Frame::Other(packet),
                Ok(None) => return Err(malformed("packet (truncated)")),
                Err(e) => return Err(Error(format!("undecodable packet from the broker: {e}"))),
            }
        }
    };
    Ok(Some((frame, total)))
}

/// A variable byte integer at the start of `b`: its value and length.
fn varint(b: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, &byte) in b.iter().enumerate().take(4) {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// A non-zero packet id, for the codec's types.
fn nz(id: u16) -> NonZeroU16 {
    NonZeroU16::new(id).unwrap_or(NonZeroU16::MIN)
}

impl Conn {
    /// Opens a connection and completes CONNECT / CONNACK (clean start unless the target asks
    /// for persistent sessions, no will).
    pub(crate) async fn connect(
        target: &Target,
        index: usize,
        client_id: &str,
        keep_alive: u16,
        deadline: Instant,
    ) -> Result<Conn> {
        Self::handshake(target, index, client_id, keep_alive, false, deadline).await
    }

    /// One whole connection's life in a single write: CONNECT and DISCONNECT together (a client
    /// need not wait for CONNACK before sending more, MQTT 3.1.1 section 3.1.4), then the CONNACK
    /// is awaited and the socket reset. This is what the connect-rate scenario repeats: it costs
    /// the load generator one write less per connection than a CONNACK round trip before the
    /// DISCONNECT, which on loopback is what keeps it from being the bottleneck.
    pub(crate) async fn connect_and_disconnect(
        target: &Target,
        index: usize,
        client_id: &str,
        deadline: Instant,
    ) -> Result<()> {
        let conn = Self::handshake(target, index, client_id, 0, true, deadline).await?;
        let _ = conn.stream.set_zero_linger();
        Ok(())
    }

    /// CONNECT (followed by DISCONNECT when `then_disconnect`) and the CONNACK.
    async fn handshake(
        target: &Target,
        index: usize,
        client_id: &str,
        keep_alive: u16,
        then_disconnect: bool,
        deadline: Instant,
    ) -> Result<Conn> {
        let stream = open(target, index, deadline).await?;
        let mut conn = Conn {
            stream,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            protocol: target.protocol,
        };
        let connect = Packet::Connect(Box::new(Connect {
            protocol: target.protocol,
            clean_start: !target.persistent,
            keep_alive,
            client_id: client_id.to_owned(),
            will: None,
            username: None,
            password: None,
            properties: (target.persistent && target.protocol == Protocol::V5).then(|| {
                Box::new(starling_proto::Properties {
                    session_expiry_interval: Some(300),
                    ..starling_proto::Properties::default()
                })
            }),
        }));
        encode(&connect, conn.protocol, &mut conn.wbuf)
            .map_err(|e| Error(format!("cannot encode CONNECT: {e}")))?;
        if then_disconnect {
            let disconnect = Packet::Disconnect(Disconnect::with_reason(ReasonCode::SUCCESS));
            encode(&disconnect, conn.protocol, &mut conn.wbuf)
                .map_err(|e| Error(format!("cannot encode DISCONNECT: {e}")))?;
        }
        conn.flush(deadline).await?;
        loop {
            match parse(&conn.rbuf, conn.protocol)? {
                Some((Frame::Other(Packet::ConnAck(ack)), len)) => {
                    let _ = conn.rbuf.split_to(len);
                    if ack.code != ReasonCode::SUCCESS {
                        return Err(Error(format!(
                            "the broker refused CONNECT of {client_id}: {} (0x{:02x})",
                            ack.code.name(),
                            ack.code.0
                        )));
                    }
                    return Ok(conn);
                }
                Some((other, _)) => {
                    return Err(Error(format!(
                        "expected CONNACK for {client_id}, got {other:?}"
                    )))
                }
                None => conn.fill(deadline).await?,
            }
        }
    }

    /// Appends a SUBSCRIBE for one filter to the write buffer.
    pub(crate) fn put_subscribe(&mut self, filter: &str, qos: u8) -> Result<()> {
        let filter =
            TopicFilter::new(filter).map_err(|e| Error(format!("bad filter {filter}: {e:?}")))?;
        let packet = Packet::Subscribe(Subscribe {
            packet_id: nz(1),
            properties: None,
            filters: vec![(
                filter,
                SubscriptionOptions {
                    qos: starling_proto::QoS::from_u8(qos).unwrap_or_default(),
                    ..SubscriptionOptions::default()
                },
            )],
        });
        encode(&packet, self.protocol, &mut self.wbuf)
            .map_err(|e| Error(format!("cannot encode SUBSCRIBE: {e}")))
    }

    /// Writes the whole write buffer, then empties it.
    pub(crate) async fn flush(&mut self, deadline: Instant) -> Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        match timeout_at(deadline, self.stream.write_all(&self.wbuf)).await {
            Err(_) => Err(Error("writing to the broker timed out".into())),
            Ok(Err(e)) => Err(Error(format!("writing to the broker: {e}"))),
            Ok(Ok(())) => {
                self.wbuf.clear();
                Ok(())
            }
        }
    }

    /// Makes room in the read buffer for one more read.
    pub(crate) fn reserve(&mut self) {
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            self.rbuf.reserve(READ_CHUNK);
        }
    }

    /// Reads once (waiting until `deadline`); the broker closing the connection is an error.
    pub(crate) async fn fill(&mut self, deadline: Instant) -> Result<()> {
        self.reserve();
        match timeout_at(deadline, self.stream.read_buf(&mut self.rbuf)).await {
            Err(_) => Err(Error("timed out waiting for the broker".into())),
            Ok(Ok(0)) => Err(Error("the broker closed the connection".into())),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Error(format!("reading from the broker: {e}"))),
        }
    }

    /// Reads what is available without waiting. `Ok(false)`: nothing was available.
    pub(crate) fn try_fill(&mut self) -> Result<bool> {
        self.reserve();
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => Err(Error("the broker closed the connection".into())),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(Error(format!("reading from the broker: {e}"))),
        }
    }

    /// Sends DISCONNECT, then waits (until `deadline`) for the broker to close its side, so that
    /// everything sent before was read by the broker and the TIME_WAIT state stays with it.
    pub(crate) async fn disconnect(mut self, deadline: Instant) {
        let packet = Packet::Disconnect(Disconnect::with_reason(ReasonCode::SUCCESS));
        if encode(&packet, self.protocol, &mut self.wbuf).is_err()
            || self.flush(deadline).await.is_err()
        {
            return;
        }
        // The broker closes first ([MQTT-3.14.4-1]); no shutdown of ours before it: one syscall
        // less here, which counts when the load generator is the bottleneck.
        let mut sink = [0u8; 4096];
        while let Ok(Ok(n)) = timeout_at(deadline, self.stream.read(&mut sink)).await {
            if n == 0 {
                // The broker has closed its side: nothing can be lost any more, so end ours
                // with a reset instead of a FIN handshake (less kernel work on both sides).
                let _ = self.stream.set_zero_linger();
                break;
            }
        }
    }
}
