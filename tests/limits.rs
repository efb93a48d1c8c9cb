//! The seed's acceptor parameters, each with its default, with -1, with 0 where allowed and
//! with a small value: the CONNACK property sent and the behaviour enforced. Plus the limits a
//! client announces to the broker (Receive Maximum, Maximum Packet Size, Topic Alias Maximum),
//! which the broker obeys outbound.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::raw::{connect_with, publish, Raw};
use common::*;
use starling_proto::{ConnAck, Packet, Properties, Protocol, QoS, ReasonCode};

async fn connack(broker: &TestBroker, keep_alive: u16) -> ConnAck {
    let connect = connect_with(Protocol::V5, "probe", |c| c.keep_alive = keep_alive);
    Raw::connect(broker.addr, Protocol::V5, &connect).await.1
}

fn props(ack: &ConnAck) -> Properties {
    ack.properties.as_deref().cloned().unwrap_or_default()
}

/// A PUBLISH with a Topic Alias (and its topic, or empty to use the alias).
fn aliased(topic: &str, alias: u16) -> Vec<u8> {
    let mut v = vec![0x30, 0, 0x00, topic.len() as u8];
    v.extend(topic.as_bytes());
    v.extend([0x03, 0x23, (alias >> 8) as u8, alias as u8, b'p']);
    v[1] = (v.len() - 2) as u8;
    v
}

// receiveMaximum

#[tokio::test]
async fn receive_maximum_default_is_announced_as_65535() {
    let broker = TestBroker::default_broker();
    assert_eq!(
        props(&connack(&broker, 30).await).receive_maximum,
        Some(65535)
    );
}

/// The seed: -1 prevents the broker from informing the client of any receive maximum.
#[tokio::test]
async fn receive_maximum_minus_one_is_not_announced() {
    let broker = TestBroker::start(";receiveMaximum=-1", "");
    assert_eq!(props(&connack(&broker, 30).await).receive_maximum, None);
    // And flow control from clients is off: many pipelined QoS 2 publishes are fine.
    let (mut raw, _) = Raw::connected(broker.addr, Protocol::V5, "many").await;
    for id in 1..=50u16 {
        raw.send_packet(&publish("rm", QoS::ExactlyOnce, Some(id), "x"))
            .await;
    }
    for _ in 1..=50 {
        assert!(matches!(raw.recv().await, Some(Packet::PubRec(_))));
    }
}

#[tokio::test]
async fn a_small_receive_maximum_is_announced_and_enforced() {
    let broker = TestBroker::start(";receiveMaximum=3", "");
    assert_eq!(props(&connack(&broker, 30).await).receive_maximum, Some(3));
    let (mut raw, _) = Raw::connected(broker.addr, Protocol::V5, "four").await;
    for id in 1..=4u16 {
        raw.send_packet(&publish("rm", QoS::ExactlyOnce, Some(id), "x"))
            .await;
    }
    loop {
        match raw.recv().await {
            Some(Packet::PubRec(_)) => continue,
            Some(Packet::Disconnect(d)) => {
                assert_eq!(d.reason, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
                break;
            }
            other => panic!("expected DISCONNECT 0x93, got {other:?}"),
        }
    }
}

/// `receiveMaximum` is announced in an MQTT 5 CONNACK; a 3.1.1 CONNACK cannot carry it, so a
/// 3.1.1 client is not held to it: more unacknowledged QoS 2 publishes than it are answered
/// like any others ([MQTT-3.3.4-1]: the receiver responds per Table 3.4), not a disconnect.
#[tokio::test]
async fn a_small_receive_maximum_does_not_bind_v311_clients_who_were_never_told() {
    let broker = TestBroker::start(";receiveMaximum=3", "");
    let (mut raw, _) = Raw::connected(broker.addr, Protocol::V311, "old-school").await;
    for id in 1..=10u16 {
        raw.send_packet(&publish("rm", QoS::ExactlyOnce, Some(id), "x"))
            .await;
    }
    for _ in 1..=10 {
        assert!(matches!(raw.recv().await, Some(Packet::PubRec(_))));
    }
}

// topicAliasMaximum

#[tokio::test]
async fn topic_alias_maximum_default_is_announced_and_aliases_work() {
    let broker = TestBroker::default_broker();
    assert_eq!(
        props(&connack(&broker, 30).await).topic_alias_maximum,
        Some(65535)
    );
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V5, "sub").await;
    sub.subscribe("alias/#", QoS::AtMostOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    publisher.send(&aliased("alias/a", 65535)).await;
    publisher.send(&aliased("", 65535)).await;
    assert_eq!(sub.recv_publish().await.topic.as_str(), "alias/a");
    assert_eq!(
        sub.recv_publish().await.topic.as_str(),
        "alias/a",
        "alias resolved"
    );
}

/// The seed: -1 does not announce a maximum, so aliasing from clients is disabled.
#[tokio::test]
async fn topic_alias_maximum_minus_one_is_not_announced_and_aliases_are_refused() {
    let broker = TestBroker::start(";topicAliasMaximum=-1", "");
    assert_eq!(props(&connack(&broker, 30).await).topic_alias_maximum, None);
    let (mut raw, _) = Raw::connected(broker.addr, Protocol::V5, "c").await;
    raw.send(&aliased("t", 1)).await;
    raw.expect_disconnect(ReasonCode::TOPIC_ALIAS_INVALID).await;
}

/// The seed: 0 disables topic aliasing from clients.
#[tokio::test]
async fn topic_alias_maximum_zero_disables_aliases() {
    let broker = TestBroker::start(";topicAliasMaximum=0", "");
    assert_eq!(props(&connack(&broker, 30).await).topic_alias_maximum, None);
    let (mut raw, _) = Raw::connected(broker.addr, Protocol::V5, "c").await;
    raw.send(&aliased("t", 1)).await;
    raw.expect_disconnect(ReasonCode::TOPIC_ALIAS_INVALID).await;
}

#[tokio::test]
async fn a_small_topic_alias_maximum_is_announced_and_enforced() {
    let broker = TestBroker::start(";topicAliasMaximum=2", "");
    assert_eq!(
        props(&connack(&broker, 30).await).topic_alias_maximum,
        Some(2)
    );
    let (mut raw, _) = Raw::connected(broker.addr, Protocol::V5, "c").await;
    raw.send(&aliased("t", 2)).await;
    raw.send(&aliased("t", 3)).await;
    raw.expect_disconnect(ReasonCode::TOPIC_ALIAS_INVALID).await;
}

// maximumPacketSize

#[tokio::test]
async fn maximum_packet_size_default_is_announced() {
    let broker = TestBroker::default_broker();
    assert_eq!(
        props(&connack(&broker, 30).await).maximum_packet_size,
        Some(268_435_455)
    );
}

/// The seed: -1 announces nothing and enforces no limit but the protocol's.
#[tokio::test]
async fn maximum_packet_size_minus_one_is_not_announced_and_large_packets_pass() {
    let broker = TestBroker::start(";maximumPacketSize=-1", "");
    assert_eq!(props(&connack(&broker, 30).await).maximum_packet_size, None);
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V5, "sub").await;
    sub.subscribe("big", QoS::AtMostOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    let payload = Bytes::from(vec![7u8; 2 * 1024 * 1024]);
    publisher
        .send_packet(&publish("big", QoS::AtMostOnce, None, payload.clone()))
        .await;
    assert_eq!(sub.recv_publish().await.payload, payload);
}

#[tokio::test]
async fn a_small_maximum_packet_size_is_announced_and_enforced() {
    let broker = TestBroker::start(";maximumPacketSize=100", "");
    assert_eq!(
        props(&connack(&broker, 30).await).maximum_packet_size,
        Some(100)
    );
    let (mut raw, _) = Raw::connected(broker.addr, Protocol::V5, "c").await;
    raw.send_packet(&publish("t", QoS::AtMostOnce, None, vec![0u8; 80]))
        .await;
    raw.send_packet(&publish("t", QoS::AtMostOnce, None, vec![0u8; 120]))
        .await;
    raw.expect_disconnect(ReasonCode::PACKET_TOO_LARGE).await;
}

// serverKeepAlive

#[tokio::test]
async fn server_keep_alive_default_applies_when_less_than_the_clients() {
    let broker = TestBroker::default_broker();
    assert_eq!(
        props(&connack(&broker, 300).await).server_keep_alive,
        Some(60)
    );
    assert_eq!(props(&connack(&broker, 30).await).server_keep_alive, None);
}

/// The seed: -1 always accepts the client's keep alive, even 0.
#[tokio::test]
async fn server_keep_alive_minus_one_accepts_the_clients_value() {
    let broker = TestBroker::start(";serverKeepAlive=-1", "");
    assert_eq!(props(&connack(&broker, 0).await).server_keep_alive, None);
    assert_eq!(props(&connack(&broker, 300).await).server_keep_alive, None);
}

/// The seed: 0 disables keep alive whatever the client asks: a silent client stays connected.
#[tokio::test]
async fn server_keep_alive_zero_disables_keep_alive() {
    let broker = TestBroker::start(";serverKeepAlive=0", "");
    let connect = connect_with(Protocol::V5, "idle", |c| c.keep_alive = 1);
    let (mut raw, ack) = Raw::connect(broker.addr, Protocol::V5, &connect).await;
    assert_eq!(props(&ack).server_keep_alive, Some(0));
    raw.expect_silence(2000).await;
    raw.send_packet(&Packet::PingReq).await;
    assert_eq!(raw.recv().await, Some(Packet::PingResp));
}

/// A small serverKeepAlive replaces a longer (or zero) client keep alive and is enforced.
#[tokio::test]
async fn a_small_server_keep_alive_is_announced_and_enforced() {
    let broker = TestBroker::start(";serverKeepAlive=1", "");
    let connect = connect_with(Protocol::V5, "idle", |c| c.keep_alive = 0);
    let (mut raw, ack) = Raw::connect(broker.addr, Protocol::V5, &connect).await;
    assert_eq!(props(&ack).server_keep_alive, Some(1));
    raw.expect_disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT).await;
}

/// The seed: "Any other value means the `serverKeepAlive` will be applied if it is *less
/// than* the client's keep alive value". Artemis applies it whatever the protocol version
/// (its MQTTProtocolHandler.calculateKeepAlive does not look at it), so a 3.1.1 client,
/// which no CONNACK property can tell, is held to it too: with keep alive 60 on an acceptor
/// with `serverKeepAlive=1` it is closed after about 1.5 s of silence, not 90 s.
#[tokio::test]
async fn server_keep_alive_also_shortens_an_mqtt_3_1_1_keep_alive() {
    let broker = TestBroker::start(";serverKeepAlive=1", "");
    let connect = connect_with(Protocol::V311, "old-timer", |c| c.keep_alive = 60);
    let (mut raw, ack) = Raw::connect(broker.addr, Protocol::V311, &connect).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    let silent_since = std::time::Instant::now();
    raw.expect_closed().await;
    let silence = silent_since.elapsed();
    assert!(
        silence >= Duration::from_millis(1000) && silence < Duration::from_millis(4000),
        "closed after {silence:?} of silence"
    );
}

// defaultMqttSessionExpiryInterval

/// [MQTT-3.1.2-23] An MQTT 5 CONNECT without a Session Expiry Interval means 0: the session
/// ends when the network connection closes, whatever `defaultMqttSessionExpiryInterval` says.
/// The seed's default applies to sessions that "do not pass their own session expiry
/// interval"; Artemis' implementation reads an MQTT 5 CONNECT without the property as passing
/// 0, and so do we (the specification leaves no other reading for MQTT 5).
#[tokio::test]
async fn a_v5_session_without_an_interval_ends_with_its_connection_whatever_the_default() {
    for params in ["", ";defaultMqttSessionExpiryInterval=60"] {
        let broker = TestBroker::start(params, "");
        let connect = connect_with(Protocol::V5, "fleeting", |c| c.clean_start = false);
        let (mut raw, _) = Raw::connect(broker.addr, Protocol::V5, &connect).await;
        raw.subscribe("f", QoS::AtLeastOnce).await;
        drop(raw);
        assert!(
            !broker.wait_offline("fleeting").await,
            "{params:?}: the session outlived its connection"
        );
        let (_raw, ack) = Raw::connect(broker.addr, Protocol::V5, &connect).await;
        assert!(!ack.session_present, "{params:?}");
    }
}

/// The seed: `defaultMqttSessionExpiryInterval` (here 60 s) keeps MQTT 3.x persistent sessions.
#[tokio::test]
async fn default_session_expiry_keeps_v3_persistent_sessions() {
    let broker = TestBroker::start(";defaultMqttSessionExpiryInterval=60", "");
    let connect = connect_with(Protocol::V311, "kept", |c| c.clean_start = false);
    let (raw, _) = Raw::connect(broker.addr, Protocol::V311, &connect).await;
    drop(raw);
    assert!(broker.wait_offline("kept").await);
    let (_raw, ack) = Raw::connect(broker.addr, Protocol::V311, &connect).await;
    assert!(ack.session_present);
}

/// 0: sessions without their own interval end with their connection.
#[tokio::test]
async fn default_session_expiry_zero_ends_sessions_with_their_connection() {
    let broker = TestBroker::start(";defaultMqttSessionExpiryInterval=0", "");
    for protocol in [Protocol::V311, Protocol::V5] {
        let connect = connect_with(protocol, "gone", |c| c.clean_start = false);
        let (raw, _) = Raw::connect(broker.addr, protocol, &connect).await;
        drop(raw);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_raw, ack) = Raw::connect(broker.addr, protocol, &connect).await;
        assert!(!ack.session_present, "{protocol}");
    }
}

/// A client's own Session Expiry Interval wins over the acceptor default.
#[tokio::test]
async fn a_clients_session_expiry_overrides_the_default() {
    let broker = TestBroker::start(";defaultMqttSessionExpiryInterval=0", "");
    let connect = connect_with(Protocol::V5, "own", |c| {
        c.clean_start = false;
        c.properties = common::raw::session_expiry(60);
    });
    let (raw, _) = Raw::connect(broker.addr, Protocol::V5, &connect).await;
    drop(raw);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_raw, ack) = Raw::connect(broker.addr, Protocol::V5, &connect).await;
    assert!(ack.session_present);
}

// Limits the client announces.

/// [MQTT-3.1.2-25] A message larger than the client's Maximum Packet Size is not sent to it
/// (dropped for that client and counted); the connection stays up.
#[tokio::test]
async fn messages_over_the_clients_maximum_packet_size_are_dropped_for_it() {
    let broker = TestBroker::default_broker();
    let connect = connect_with(Protocol::V5, "small", |c| {
        c.properties = Some(Box::new(Properties {
            maximum_packet_size: Some(200),
            ..Properties::default()
        }))
    });
    let (mut sub, _) = Raw::connect(broker.addr, Protocol::V5, &connect).await;
    sub.subscribe("sz", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    publisher
        .send_packet(&publish("sz", QoS::AtLeastOnce, Some(1), vec![1u8; 500]))
        .await;
    publisher
        .send_packet(&publish("sz", QoS::AtLeastOnce, Some(2), "small"))
        .await;
    let p = sub.recv_publish().await;
    assert_eq!(&p.payload[..], b"small");
    let info = broker.session_info("small").await.expect("session");
    assert_eq!(info.dropped_too_large, 1);
}

/// Outbound topic aliases: a client that announces a Topic Alias Maximum gets repeated topics
/// as aliases.
#[tokio::test]
async fn repeated_topics_are_sent_as_aliases_to_clients_that_allow_them() {
    let broker = TestBroker::default_broker();
    let connect = connect_with(Protocol::V5, "aliased", |c| {
        c.properties = Some(Box::new(Properties {
            topic_alias_maximum: Some(5),
            ..Properties::default()
        }))
    });
    let (mut sub, _) = Raw::connect(broker.addr, Protocol::V5, &connect).await;
    sub.subscribe("long/topic/name/#", QoS::AtMostOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    for _ in 0..2 {
        publisher
            .send_packet(&publish("long/topic/name/x", QoS::AtMostOnce, None, "v"))
            .await;
    }
    let first = sub.recv_publish().await;
    let second = sub.recv_publish().await;
    let alias = |p: &starling_proto::Publish| p.properties.as_ref().and_then(|p| p.topic_alias);
    assert_eq!(first.topic.as_str(), "long/topic/name/x");
    assert_eq!(alias(&first), Some(1));
    assert!(second.topic.is_empty(), "the name is left out");
    assert_eq!(alias(&second), Some(1));

    // A client that announces none gets names only.
    let (mut plain, _) = Raw::connected(broker.addr, Protocol::V5, "plain").await;
    plain.subscribe("p", QoS::AtMostOnce).await;
    for _ in 0..2 {
        publisher
            .send_packet(&publish("p", QoS::AtMostOnce, None, "v"))
            .await;
    }
    for _ in 0..2 {
        let p = plain.recv_publish().await;
        assert_eq!((p.topic.as_str(), alias(&p)), ("p", None));
    }
}
