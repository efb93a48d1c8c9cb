//! CONNECT and CONNACK for MQTT 3.1, 3.1.1 and 5.0: client id rules, the seed's acceptor
//! defaults in CONNACK, enhanced authentication refusal, session present, takeover, timeouts
//! and graceful shutdown.

mod common;

use bytes::Bytes;
use common::raw::{connect_packet, connect_with, Raw};
use common::*;
use starling_proto::{Connect, Packet, Properties, Protocol, Publish, QoS, ReasonCode, TopicName};

/// [MQTT-3.2.0-1] The first packet sent from the Server to the Client MUST be a CONNACK.
#[tokio::test]
async fn every_protocol_version_connects() {
    let broker = TestBroker::default_broker();
    for protocol in [Protocol::V31, Protocol::V311, Protocol::V5] {
        let (_raw, ack) = Raw::connected(broker.addr, protocol, "c1").await;
        assert!(!ack.session_present, "{protocol}");
        assert_eq!(ack.properties.is_some(), protocol.is_v5(), "{protocol}");
    }
}

/// The seed's acceptor defaults are announced in CONNACK: receiveMaximum 65535,
/// topicAliasMaximum 65535, maximumPacketSize 268435455.
#[tokio::test]
async fn v5_connack_announces_the_acceptor_defaults() {
    let broker = TestBroker::default_broker();
    let (_raw, ack) = Raw::connected(broker.addr, Protocol::V5, "props").await;
    let props = ack.properties.expect("CONNACK properties");
    assert_eq!(props.receive_maximum, Some(65535));
    assert_eq!(props.topic_alias_maximum, Some(65535));
    assert_eq!(props.maximum_packet_size, Some(268_435_455));
    // The client asked for 30 s, less than serverKeepAlive 60: its value stands, unannounced.
    assert_eq!(props.server_keep_alive, None);
    assert_eq!(
        props.shared_subscription_available, None,
        "absent: available"
    );
}

/// The seed: serverKeepAlive applies when the client's keep alive is 0.
#[tokio::test]
async fn server_keep_alive_replaces_a_zero_client_keep_alive() {
    let broker = TestBroker::default_broker();
    let mut raw = Raw::open(broker.addr, Protocol::V5).await;
    raw.send_packet(&connect_with(Protocol::V5, "ka", |c| c.keep_alive = 0))
        .await;
    match raw.recv().await {
        Some(Packet::ConnAck(ack)) => {
            let props = ack.properties.expect("properties");
            assert_eq!(props.server_keep_alive, Some(60));
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// [MQTT-3.2.2-16] An empty client id gets an Assigned Client Identifier (MQTT 5).
#[tokio::test]
async fn v5_empty_client_id_is_assigned_one() {
    let broker = TestBroker::default_broker();
    let (_raw, ack) = Raw::connected(broker.addr, Protocol::V5, "").await;
    let assigned = ack
        .properties
        .and_then(|p| p.assigned_client_identifier)
        .expect("assigned client id");
    assert!(!assigned.is_empty());
}

/// [MQTT-3.1.3-8] If the Client supplies a zero-byte ClientId with CleanSession set to 0, the
/// Server MUST respond to the CONNECT Packet with a CONNACK return code 0x02 (Identifier
/// rejected) and then close the Network Connection.
#[tokio::test]
async fn v311_empty_client_id_without_clean_session_is_rejected() {
    let broker = TestBroker::default_broker();
    let mut raw = Raw::open(broker.addr, Protocol::V311).await;
    raw.send_packet(&connect_with(Protocol::V311, "", |c| c.clean_start = false))
        .await;
    raw.expect_connack_refusal(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID)
        .await;

    // With clean session it is accepted (and given an id by the broker).
    let (_raw, ack) = Raw::connected(broker.addr, Protocol::V311, "").await;
    assert!(!ack.session_present);
}

/// MQTT 3.1: a client id longer than 23 characters is "identifier rejected" (return code 2).
#[tokio::test]
async fn v31_client_id_over_23_characters_is_rejected() {
    let broker = TestBroker::default_broker();
    let mut raw = Raw::open(broker.addr, Protocol::V31).await;
    raw.send_packet(&connect_packet(Protocol::V31, "abcdefghijklmnopqrstuvwxyz"))
        .await;
    raw.expect_connack_refusal(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID)
        .await;
}

/// The seed's Enhanced Authentication: an Authentication Method in CONNECT gets CONNACK 0x8C
/// (bad authentication method) and the connection is closed.
#[tokio::test]
async fn authentication_method_is_refused_with_0x8c() {
    let broker = TestBroker::default_broker();
    let mut raw = Raw::open(broker.addr, Protocol::V5).await;
    raw.send_packet(&connect_with(Protocol::V5, "auth", |c| {
        c.properties = Some(Box::new(Properties {
            authentication_method: Some("SCRAM-SHA-256".to_owned()),
            ..Properties::default()
        }))
    }))
    .await;
    raw.expect_connack_refusal(ReasonCode::BAD_AUTHENTICATION_METHOD)
        .await;
}

/// A connection that starts a CONNECT but never completes it is closed after
/// `core.connect_timeout` (one that sends nothing at all meets `core.handshake_timeout`).
#[tokio::test]
async fn a_silent_connection_is_closed_after_the_connect_timeout() {
    let broker = TestBroker::start("", "connect_timeout = 300");
    let mut raw = Raw::open(broker.addr, Protocol::V311).await;
    raw.send(&[0x10]).await;
    let started = std::time::Instant::now();
    raw.expect_closed().await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
}

/// [MQTT-3.2.2-2] A persistent session survives its connection: the reconnect sees Session
/// Present = 1 and the subscription still delivers without subscribing again.
#[tokio::test]
async fn a_persistent_session_keeps_its_subscriptions_across_reconnects() {
    let broker = TestBroker::default_broker();
    let persistent = |c: &mut Connect| c.clean_start = false;
    let mut sub = Raw::open(broker.addr, Protocol::V311).await;
    sub.send_packet(&connect_with(Protocol::V311, "keeper", persistent))
        .await;
    match sub.recv().await {
        Some(Packet::ConnAck(ack)) => assert!(!ack.session_present),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    sub.subscribe("keep/#", QoS::AtMostOnce).await;
    drop(sub);

    let mut sub = Raw::open(broker.addr, Protocol::V311).await;
    sub.send_packet(&connect_with(Protocol::V311, "keeper", persistent))
        .await;
    match sub.recv().await {
        Some(Packet::ConnAck(ack)) => assert!(ack.session_present, "session present"),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "pub").await;
    publisher
        .send_packet(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: TopicName::new("keep/x").expect("topic"),
            packet_id: None,
            properties: None,
            payload: Bytes::from_static(b"still here"),
        }))
        .await;
    match sub.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"still here"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

/// [MQTT-3.1.4-3] A second connection with the same client id takes over: the first is
/// closed, with DISCONNECT 0x8E (Session taken over) on MQTT 5.
#[tokio::test]
async fn a_second_connection_with_the_same_client_id_takes_over() {
    let broker = TestBroker::default_broker();
    let (mut first, _) = Raw::connected(broker.addr, Protocol::V5, "twin").await;
    let (mut second, _) = Raw::connected(broker.addr, Protocol::V5, "twin").await;
    first
        .expect_disconnect(ReasonCode::SESSION_TAKEN_OVER)
        .await;
    second.send_packet(&Packet::PingReq).await;
    assert_eq!(second.recv().await, Some(Packet::PingResp));

    let (mut old3, _) = Raw::connected(broker.addr, Protocol::V311, "twin3").await;
    let (_new3, _) = Raw::connected(broker.addr, Protocol::V311, "twin3").await;
    old3.expect_closed().await;
}

/// On shutdown MQTT 5 clients are told DISCONNECT 0x8B (Server shutting down); 3.1.1 clients
/// see the connection close.
#[tokio::test]
async fn shutdown_sends_server_shutting_down_to_v5_clients() {
    let mut broker = TestBroker::default_broker();
    let (mut v5, _) = Raw::connected(broker.addr, Protocol::V5, "v5").await;
    let (mut v4, _) = Raw::connected(broker.addr, Protocol::V311, "v4").await;
    let stopper = std::thread::spawn(move || broker.stop());
    v5.expect_disconnect(ReasonCode::SERVER_SHUTTING_DOWN).await;
    v4.expect_closed().await;
    stopper.join().expect("broker stopped");
}

/// [MQTT-3.1.2-24] A client silent for one and a half times its keep alive is disconnected
/// (DISCONNECT 0x8D on MQTT 5).
#[tokio::test]
async fn keep_alive_timeout_closes_a_silent_client() {
    let broker = TestBroker::start(";serverKeepAlive=1", "");
    let mut raw = Raw::open(broker.addr, Protocol::V5).await;
    raw.send_packet(&connect_with(Protocol::V5, "sleepy", |c| c.keep_alive = 1))
        .await;
    assert!(matches!(raw.recv().await, Some(Packet::ConnAck(_))));
    // [MQTT-3.1.2-24]: nothing for 1.5 x keep alive closes the connection.
    let started = std::time::Instant::now();
    raw.expect_disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(1400));
}

/// [MQTT-3.1.2-24] Keep alive counts from the last packet: a client that pings within its
/// keep alive stays connected long past one and a half times it.
#[tokio::test]
async fn a_client_that_keeps_pinging_is_never_timed_out() {
    let broker = TestBroker::start(";serverKeepAlive=1", "");
    let mut raw = Raw::open(broker.addr, Protocol::V5).await;
    raw.send_packet(&connect_with(Protocol::V5, "pinger", |c| c.keep_alive = 1))
        .await;
    assert!(matches!(raw.recv().await, Some(Packet::ConnAck(_))));
    for _ in 0..8 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        raw.send_packet(&Packet::PingReq).await;
        assert!(matches!(raw.recv().await, Some(Packet::PingResp)));
    }
}
