//! A WebSocket connection's Maximum Packet Size: `[websocket] max_frame_size` bounds what a
//! WebSocket can carry. With a numeric `maximumPacketSize` the smaller of the two is announced
//! in CONNACK and enforced (0x95); with `maximumPacketSize=-1` nothing is announced, as on TCP,
//! and only the WebSocket layer's own limit holds (a larger message ends the connection).

mod common;

use bytes::BytesMut;
use common::raw::{connect_packet, Raw};
use common::ws::WsRaw;
use common::*;
use starling_proto::{encode, Packet, Protocol, QoS, ReasonCode};
use tokio::net::TcpStream;

async fn ws(broker: &TestBroker) -> WsRaw<TcpStream> {
    let stream = TcpStream::connect(broker.addr).await.expect("connect");
    let (ws, _) = WsRaw::open(stream, "/", Some("mqtt"))
        .await
        .expect("upgrade");
    ws
}

/// The Maximum Packet Size a WebSocket client's CONNACK announces.
async fn announced(ws: &mut WsRaw<TcpStream>, id: &str) -> Option<u32> {
    ws.send_packet(&connect_packet(Protocol::V5, id)).await;
    match ws.recv().await {
        Some(Packet::ConnAck(ack)) => {
            assert_eq!(ack.code, ReasonCode::SUCCESS);
            ack.properties.and_then(|p| p.maximum_packet_size)
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// An MQTT 5 PUBLISH at QoS 0 on `topic`, encoded.
fn publish_bytes(topic: &str, payload_len: usize) -> Vec<u8> {
    let mut out = BytesMut::new();
    let publish = common::raw::publish(topic, QoS::AtMostOnce, None, vec![7u8; payload_len]);
    encode(&publish, Protocol::V5, &mut out).expect("encode");
    out.to_vec()
}

/// A WebSocket message larger than `[websocket] max_frame_size` cannot arrive, so a WebSocket
/// connection's Maximum Packet Size is at most that, and its CONNACK says so (TCP connections
/// keep the acceptor's). A packet over it that does arrive, in frames each under the limit,
/// gets DISCONNECT 0x95 like on TCP.
#[tokio::test]
async fn a_websocket_connack_announces_the_frame_limit_as_maximum_packet_size() {
    let broker = TestBroker::start("", "[websocket]\nmax_frame_size = 65536");
    let mut ws = ws(&broker).await;
    ws.send_packet(&connect_packet(Protocol::V5, "framed"))
        .await;
    match ws.recv().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(
            ack.properties.and_then(|p| p.maximum_packet_size),
            Some(65536)
        ),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    let (_, ack) = Raw::connected(broker.addr, Protocol::V5, "plain").await;
    assert_eq!(
        ack.properties.and_then(|p| p.maximum_packet_size),
        Some(268_435_455)
    );

    let mut big = BytesMut::new();
    let publish = Packet::Publish(starling_proto::Publish {
        dup: false,
        qos: starling_proto::QoS::AtMostOnce,
        retain: false,
        topic: starling_proto::TopicName::new("big").expect("topic"),
        packet_id: None,
        properties: None,
        payload: vec![0u8; 70_000].into(),
    });
    encode(&publish, Protocol::V5, &mut big).expect("encode");
    let (head, tail) = big.split_at(40_000);
    ws.send_frame(head.to_vec()).await;
    ws.send_frame(tail.to_vec()).await;
    match ws.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::PACKET_TOO_LARGE),
        other => panic!("expected DISCONNECT 0x95, got {other:?}"),
    }
}

/// The seed: "A value of -1 will prevent the broker from informing the client of any maximum
/// packet size which means no limit will be enforced on the size of incoming packets." Issue
/// 19: on WebSocket connections too. The frame limit is the WebSocket layer's: a message over
/// it ends the connection, while a packet larger than it, sent in frames each under it,
/// is taken (no MQTT limit applies).
#[tokio::test]
async fn with_maximum_packet_size_minus_one_a_websocket_connack_announces_nothing() {
    let broker = TestBroker::start(
        ";maximumPacketSize=-1",
        "[websocket]\nmax_frame_size = 2048",
    );
    let (mut subscriber, _) = Raw::connected(broker.addr, Protocol::V5, "sub").await;
    subscriber.subscribe("big/#", QoS::AtMostOnce).await;

    let mut split = ws(&broker).await;
    assert_eq!(announced(&mut split, "split").await, None);
    let packet = publish_bytes("big/split", 3000);
    let (head, tail) = packet.split_at(1500);
    split.send_frame(head.to_vec()).await;
    split.send_frame(tail.to_vec()).await;
    let delivered = subscriber.recv_publish().await;
    assert_eq!(delivered.payload.len(), 3000);

    let mut whole = ws(&broker).await;
    assert_eq!(announced(&mut whole, "whole").await, None);
    whole.send_frame(publish_bytes("big/whole", 3000)).await;
    assert_eq!(
        whole.recv().await,
        None,
        "a frame over the limit ends the connection"
    );
}

/// With a numeric `maximumPacketSize`, a WebSocket connection announces the smaller of it and
/// the frame limit: the frame limit only when it is below what the acceptor allows.
#[tokio::test]
async fn a_websocket_connack_announces_the_smaller_of_the_acceptor_and_frame_limits() {
    let below = TestBroker::start(
        ";maximumPacketSize=1500",
        "[websocket]\nmax_frame_size = 2048",
    );
    assert_eq!(announced(&mut ws(&below).await, "below").await, Some(1500));
    let above = TestBroker::start(
        ";maximumPacketSize=100000",
        "[websocket]\nmax_frame_size = 2048",
    );
    assert_eq!(announced(&mut ws(&above).await, "above").await, Some(2048));
    let (_, ack) = Raw::connected(above.addr, Protocol::V5, "plain").await;
    assert_eq!(
        ack.properties.and_then(|p| p.maximum_packet_size),
        Some(100_000),
        "TCP connections announce the acceptor's"
    );
}
