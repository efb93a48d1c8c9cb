//! A raw-bytes MQTT client for tests where a client library would hide the wire: malformed
//! packets, exact reason codes, what the broker writes before it closes.

use std::net::SocketAddr;
use std::num::NonZeroU16;

use bytes::{Bytes, BytesMut};
use starling_proto::{
    decode, encode, ConnAck, Connect, Limits, Packet, Properties, Protocol, PubResponse, Publish,
    QoS, ReasonCode, Subscribe, SubscriptionOptions, TopicFilter, TopicName,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::WAIT;

/// A TCP connection to the broker that speaks bytes.
pub struct Raw {
    stream: TcpStream,
    buf: BytesMut,
    /// The protocol used to encode and decode packets.
    pub protocol: Protocol,
}

/// A CONNECT packet with a client id and clean start, nothing else.
pub fn connect_packet(protocol: Protocol, client_id: &str) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol,
        clean_start: true,
        keep_alive: 30,
        client_id: client_id.to_owned(),
        will: None,
        username: None,
        password: None,
        properties: None,
    }))
}

/// A CONNECT built from `connect_packet` and changed by `f`.
pub fn connect_with(protocol: Protocol, client_id: &str, f: impl FnOnce(&mut Connect)) -> Packet {
    let Packet::Connect(mut c) = connect_packet(protocol, client_id) else {
        unreachable!("connect_packet builds a CONNECT")
    };
    f(&mut c);
    Packet::Connect(c)
}

/// A PUBLISH without properties.
pub fn publish(topic: &str, qos: QoS, id: Option<u16>, payload: impl Into<Bytes>) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: TopicName::new(topic).expect("valid topic"),
        packet_id: id.map(pid),
        properties: None,
        payload: payload.into(),
    })
}

/// A retained PUBLISH without properties.
pub fn retained(topic: &str, qos: QoS, id: Option<u16>, payload: impl Into<Bytes>) -> Packet {
    let mut packet = publish(topic, qos, id, payload);
    if let Packet::Publish(p) = &mut packet {
        p.retain = true;
    }
    packet
}

/// MQTT 5 properties with a Session Expiry Interval.
pub fn session_expiry(seconds: u32) -> Option<Box<Properties>> {
    Some(Box::new(Properties {
        session_expiry_interval: Some(seconds),
        ..Properties::default()
    }))
}

/// A packet id for tests.
pub fn pid(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).expect("non-zero packet id")
}

impl Raw {
    /// Opens a TCP connection; nothing is sent.
    pub async fn open(addr: SocketAddr, protocol: Protocol) -> Raw {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Raw {
            stream,
            buf: BytesMut::new(),
            protocol,
        }
    }

    /// Opens a connection and completes CONNECT/CONNACK successfully.
    pub async fn connected(
        addr: SocketAddr,
        protocol: Protocol,
        client_id: &str,
    ) -> (Raw, ConnAck) {
        let mut raw = Raw::open(addr, protocol).await;
        raw.send_packet(&connect_packet(protocol, client_id)).await;
        match raw.recv().await {
            Some(Packet::ConnAck(ack)) if ack.code == ReasonCode::SUCCESS => (raw, ack),
            other => panic!("expected a successful CONNACK, got {other:?}"),
        }
    }

    /// A persistent MQTT 5 client (clean start 0, session expiry `expiry` s) and its Session
    /// Present flag.
    pub async fn persistent(addr: SocketAddr, client_id: &str, expiry: u32) -> (Raw, bool) {
        let connect = connect_with(Protocol::V5, client_id, |c| {
            c.clean_start = false;
            c.properties = Some(Box::new(Properties {
                session_expiry_interval: Some(expiry),
                ..Properties::default()
            }));
        });
        let (raw, ack) = Raw::connect(addr, Protocol::V5, &connect).await;
        assert_eq!(ack.code, ReasonCode::SUCCESS);
        (raw, ack.session_present)
    }

    /// Resends QoS 2 PUBLISH `id` with DUP=1 and completes the exchange, checking that the
    /// broker answers PUBREC and PUBCOMP for that id.
    pub async fn resend_qos2(&mut self, topic: &str, id: u16, payload: &'static str) {
        let mut resend = publish(topic, QoS::ExactlyOnce, Some(id), payload);
        if let Packet::Publish(p) = &mut resend {
            p.dup = true;
        }
        self.send_packet(&resend).await;
        assert_eq!(
            self.recv().await,
            Some(Packet::PubRec(PubResponse::success(pid(id))))
        );
        self.send_packet(&Packet::PubRel(PubResponse::success(pid(id))))
            .await;
        assert_eq!(
            self.recv().await,
            Some(Packet::PubComp(PubResponse::success(pid(id))))
        );
    }

    /// Writes raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Encodes `packets` and writes them in one write, so the broker reads them together.
    pub async fn send_together(&mut self, packets: &[Packet]) {
        let mut out = BytesMut::new();
        for packet in packets {
            encode(packet, self.protocol, &mut out).expect("encodable test packet");
        }
        self.send(&out).await;
    }

    /// Encodes and writes a packet.
    pub async fn send_packet(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        encode(packet, self.protocol, &mut out).expect("encodable test packet");
        self.send(&out).await;
    }

    /// Opens a connection, sends `connect`, and returns the CONNACK (whatever its code).
    pub async fn connect(addr: SocketAddr, protocol: Protocol, connect: &Packet) -> (Raw, ConnAck) {
        let mut raw = Raw::open(addr, protocol).await;
        raw.send_packet(connect).await;
        match raw.recv().await {
            Some(Packet::ConnAck(ack)) => (raw, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// The next PUBLISH (skipping nothing: anything else is a failure).
    pub async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Some(Packet::Publish(p)) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// The next PUBLISH, skipping acknowledgements, waiting as long as the caller's own
    /// timeout allows (for peers that take long to start, like a browser).
    pub async fn recv_publish_patiently(&mut self) -> Publish {
        let limits = Limits {
            protocol: self.protocol,
            max_packet_size: None,
        };
        loop {
            match decode(&mut self.buf, &limits) {
                Ok(Some(Packet::Publish(p))) => return p,
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => panic!("broker sent an undecodable packet: {e}"),
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => panic!("the broker closed the connection"),
                Ok(_) => {}
            }
        }
    }

    /// Acknowledges a QoS 1 delivery.
    pub async fn puback(&mut self, p: &Publish) {
        let id = p.packet_id.expect("QoS 1 delivery has a packet id");
        self.send_packet(&Packet::PubAck(PubResponse::success(id)))
            .await;
    }

    /// Subscribes to one filter and waits for the SUBACK; returns its reason codes.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<ReasonCode> {
        self.send_packet(&Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            properties: None,
            filters: vec![(
                TopicFilter::new(filter).expect("valid filter"),
                SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            )],
        }))
        .await;
        match self.recv().await {
            Some(Packet::SubAck(ack)) => ack.reasons,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// The next packet from the broker, or `None` once it closed the connection. Panics if
    /// nothing arrives within `WAIT` or the bytes do not decode.
    pub async fn recv(&mut self) -> Option<Packet> {
        let limits = Limits {
            protocol: self.protocol,
            max_packet_size: None,
        };
        tokio::time::timeout(WAIT, async {
            loop {
                match decode(&mut self.buf, &limits) {
                    Ok(Some(packet)) => return Some(packet),
                    Ok(None) => {}
                    Err(e) => panic!("broker sent an undecodable packet: {e}"),
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("timed out waiting for a packet from the broker")
    }

    /// Asserts the broker closes the connection without sending anything more.
    pub async fn expect_closed(&mut self) {
        if let Some(packet) = self.recv().await {
            panic!("expected the connection to close, got {packet:?}");
        }
    }

    /// Asserts the broker sends DISCONNECT with `reason` and closes (MQTT 5).
    pub async fn expect_disconnect(&mut self, reason: ReasonCode) {
        match self.recv().await {
            Some(Packet::Disconnect(d)) => assert_eq!(d.reason, reason, "DISCONNECT reason"),
            other => panic!("expected DISCONNECT {reason}, got {other:?}"),
        }
        self.expect_closed().await;
    }

    /// Asserts the broker answers CONNACK with `code` and closes.
    pub async fn expect_connack_refusal(&mut self, code: ReasonCode) {
        match self.recv().await {
            Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, code, "CONNACK code"),
            other => panic!("expected CONNACK {code}, got {other:?}"),
        }
        self.expect_closed().await;
    }

    /// Asserts nothing arrives for `ms` milliseconds (the connection stays open and quiet).
    pub async fn expect_silence(&mut self, ms: u64) {
        let limits = Limits {
            protocol: self.protocol,
            max_packet_size: None,
        };
        if let Ok(Some(p)) = decode(&mut self.buf, &limits) {
            panic!("expected silence, got {p:?}");
        }
        let read = tokio::time::timeout(
            std::time::Duration::from_millis(ms),
            self.stream.read_buf(&mut self.buf),
        )
        .await;
        if let Ok(result) = read {
            panic!("expected silence, read {result:?} ({:?})", &self.buf[..]);
        }
    }
}

/// Default MQTT 5 properties, for building packets in tests.
pub fn props() -> Properties {
    Properties::default()
}
