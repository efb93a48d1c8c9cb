//! Will messages: published when a connection ends abnormally (socket drop, keep alive
//! timeout, protocol error, takeover), not after a normal DISCONNECT (MQTT 5: unless 0x04),
//! with MQTT 5 Will Delay Interval (cancelled by a reconnect in time, cut short by the session's
//! end), will retain and will QoS. A quick reconnect (DISCONNECT, then at once a new
//! connection that takes the session over) keeps what the old connection had sent: its
//! DISCONNECT and its last publishes.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::raw::{connect_with, publish, Raw};
use common::*;
use starling_proto::{
    Disconnect, LastWill, Packet, Properties, Protocol, QoS, ReasonCode, TopicName,
};

fn will(topic: &str, qos: QoS, retain: bool, delay: Option<u32>) -> LastWill {
    LastWill {
        topic: TopicName::new(topic).expect("topic"),
        payload: Bytes::from_static(b"gone"),
        qos,
        retain,
        properties: delay.map(|d| {
            Box::new(Properties {
                will_delay_interval: Some(d),
                ..Properties::default()
            })
        }),
    }
}

/// A client with a will; `expiry` is its MQTT 5 session expiry.
async fn with_will(
    broker: &TestBroker,
    protocol: Protocol,
    id: &str,
    w: LastWill,
    expiry: Option<u32>,
    keep_alive: u16,
) -> Raw {
    let connect = connect_with(protocol, id, |c| {
        c.will = Some(w);
        c.keep_alive = keep_alive;
        if let Some(e) = expiry {
            c.clean_start = false;
            c.properties = Some(Box::new(Properties {
                session_expiry_interval: Some(e),
                ..Properties::default()
            }));
        }
    });
    let (raw, ack) = Raw::connect(broker.addr, protocol, &connect).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    raw
}

async fn watcher(broker: &TestBroker, filter: &str) -> Raw {
    let (mut raw, _) = Raw::connected(broker.addr, Protocol::V311, "watcher").await;
    raw.subscribe(filter, QoS::ExactlyOnce).await;
    raw
}

/// [MQTT-3.1.2-8] The will is published when the network connection closes without DISCONNECT.
#[tokio::test]
async fn will_is_published_when_the_socket_drops() {
    let broker = TestBroker::default_broker();
    let mut watch = watcher(&broker, "will/#").await;
    let client = with_will(
        &broker,
        Protocol::V311,
        "dev",
        will("will/dev", QoS::AtLeastOnce, false, None),
        None,
        30,
    )
    .await;
    drop(client);
    let p = watch.recv_publish().await;
    assert_eq!(p.topic.as_str(), "will/dev");
    assert_eq!(&p.payload[..], b"gone");
    assert_eq!(p.qos, QoS::AtLeastOnce);
}

/// [MQTT-3.14.4-3] After a normal DISCONNECT the will is discarded.
#[tokio::test]
async fn will_is_not_published_after_a_normal_disconnect() {
    let broker = TestBroker::default_broker();
    let mut watch = watcher(&broker, "will/#").await;
    for protocol in [Protocol::V311, Protocol::V5] {
        let mut client = with_will(
            &broker,
            protocol,
            "polite",
            will("will/p", QoS::AtMostOnce, false, None),
            None,
            30,
        )
        .await;
        client
            .send_packet(&Packet::Disconnect(Disconnect::with_reason(
                ReasonCode::NORMAL_DISCONNECTION,
            )))
            .await;
        client.expect_closed().await;
    }
    watch.expect_silence(400).await;
}

/// MQTT 5 DISCONNECT with reason 0x04 (Disconnect with Will Message) publishes the will.
#[tokio::test]
async fn disconnect_with_will_message_publishes_the_will() {
    let broker = TestBroker::default_broker();
    let mut watch = watcher(&broker, "will/#").await;
    let mut client = with_will(
        &broker,
        Protocol::V5,
        "asks",
        will("will/asks", QoS::AtMostOnce, false, None),
        None,
        30,
    )
    .await;
    client
        .send_packet(&Packet::Disconnect(Disconnect::with_reason(
            ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
        )))
        .await;
    assert_eq!(watch.recv_publish().await.topic.as_str(), "will/asks");
}

/// [MQTT-3.1.2-24] A client silent for 1.5 x its keep alive is disconnected and its will
/// published.
#[tokio::test]
async fn will_is_published_after_keep_alive_timeout() {
    let broker = TestBroker::default_broker();
    let mut watch = watcher(&broker, "will/#").await;
    let started = Instant::now();
    let mut client = with_will(
        &broker,
        Protocol::V5,
        "silent",
        will("will/silent", QoS::AtMostOnce, false, None),
        None,
        1,
    )
    .await;
    client
        .expect_disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT)
        .await;
    assert_eq!(watch.recv_publish().await.topic.as_str(), "will/silent");
    assert!(started.elapsed() >= Duration::from_millis(1400));
}

/// A protocol error ends the connection abnormally: the will is published.
#[tokio::test]
async fn will_is_published_after_a_protocol_error() {
    let broker = TestBroker::default_broker();
    let mut watch = watcher(&broker, "will/#").await;
    let mut client = with_will(
        &broker,
        Protocol::V311,
        "broken",
        will("will/broken", QoS::AtMostOnce, false, None),
        None,
        30,
    )
    .await;
    client.send(&[0xC1, 0x00]).await; // PINGREQ with reserved flags set
    client.expect_closed().await;
    assert_eq!(watch.recv_publish().await.topic.as_str(), "will/broken");
}

/// [MQTT-3.1.2-17] A will with Will Retain is published as a retained message.
#[tokio::test]
async fn a_retained_will_is_retained() {
    let broker = TestBroker::default_broker();
    let client = with_will(
        &broker,
        Protocol::V311,
        "ret",
        will("will/ret", QoS::AtMostOnce, true, None),
        None,
        30,
    )
    .await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut late, _) = Raw::connected(broker.addr, Protocol::V311, "late").await;
    late.subscribe("will/ret", QoS::AtMostOnce).await;
    let p = late.recv_publish().await;
    assert!(p.retain);
    assert_eq!(&p.payload[..], b"gone");
}

/// [MQTT-3.1.3-9] A reconnect within the Will Delay Interval cancels the will.
#[tokio::test]
async fn will_delay_is_cancelled_by_a_reconnect() {
    let broker = TestBroker::default_broker();
    let mut watch = watcher(&broker, "will/#").await;
    let client = with_will(
        &broker,
        Protocol::V5,
        "back",
        will("will/back", QoS::AtMostOnce, false, Some(1)),
        Some(60),
        30,
    )
    .await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _again = with_will(
        &broker,
        Protocol::V5,
        "back",
        will("will/back", QoS::AtMostOnce, false, Some(1)),
        Some(60),
        30,
    )
    .await;
    watch.expect_silence(1500).await;
}

/// MQTT 5 Will Delay Interval: the will is published once the delay has passed.
#[tokio::test]
async fn will_is_published_after_its_delay() {
    let broker = TestBroker::default_broker();
    let mut watch = watcher(&broker, "will/#").await;
    let client = with_will(
        &broker,
        Protocol::V5,
        "late",
        will("will/late", QoS::AtMostOnce, false, Some(1)),
        Some(60),
        30,
    )
    .await;
    let dropped = Instant::now();
    drop(client);
    watch.expect_silence(500).await;
    assert_eq!(watch.recv_publish().await.topic.as_str(), "will/late");
    assert!(dropped.elapsed() >= Duration::from_millis(900));
}

/// [MQTT-3.1.2-8] The will is published when the session ends, if that comes before the delay.
#[tokio::test]
async fn will_is_published_when_the_session_ends_before_the_delay() {
    let broker = TestBroker::default_broker();
    let mut watch = watcher(&broker, "will/#").await;
    let client = with_will(
        &broker,
        Protocol::V5,
        "short",
        will("will/short", QoS::AtMostOnce, false, Some(30)),
        Some(0),
        30,
    )
    .await;
    drop(client);
    assert_eq!(watch.recv_publish().await.topic.as_str(), "will/short");
}

/// [MQTT-3.1.4-3] On takeover the old connection's will (without delay) is published.
#[tokio::test]
async fn takeover_publishes_the_old_connections_will() {
    let broker = TestBroker::default_broker();
    let mut watch = watcher(&broker, "will/#").await;
    let mut old = with_will(
        &broker,
        Protocol::V311,
        "twin",
        will("will/twin", QoS::AtMostOnce, false, None),
        None,
        30,
    )
    .await;
    let (_new, _) = Raw::connected(broker.addr, Protocol::V311, "twin").await;
    old.expect_closed().await;
    assert_eq!(watch.recv_publish().await.topic.as_str(), "will/twin");
}

/// [MQTT-3.1.2-10] A normal DISCONNECT discards the will, even when the client reconnects at
/// once with the same client id (the reconnect must not find the old connection attached).
#[tokio::test]
async fn a_quick_reconnect_after_a_normal_disconnect_publishes_no_will() {
    let broker = TestBroker::default_broker();
    let mut watch = watcher(&broker, "will/#").await;
    for _ in 0..20 {
        let (client, again) = disconnect_and_reconnect_at_once(
            &broker,
            Protocol::V311,
            "quick",
            ReasonCode::NORMAL_DISCONNECTION,
        )
        .await;
        drop(client);
        again_disconnect(again).await;
    }
    watch.expect_silence(400).await;
}

/// [MQTT-3.1.3-9] A takeover is a new connection before the Will Delay Interval ran out: the
/// old connection's delayed will is not published.
#[tokio::test]
async fn takeover_cancels_a_delayed_will() {
    let broker = TestBroker::default_broker();
    let mut watch = watcher(&broker, "will/#").await;
    let mut old = with_will(
        &broker,
        Protocol::V5,
        "late",
        will("will/late", QoS::AtMostOnce, false, Some(1)),
        Some(60),
        30,
    )
    .await;
    let _new = with_will(
        &broker,
        Protocol::V5,
        "late",
        will("will/late", QoS::AtMostOnce, false, Some(1)),
        Some(60),
        30,
    )
    .await;
    old.expect_disconnect(ReasonCode::SESSION_TAKEN_OVER).await;
    watch.expect_silence(1500).await;
}

/// [MQTT-3.14.4-3] MQTT 5 DISCONNECT with 0x04 asks for the will, also when the client
/// reconnects at once and the old connection is taken over before it has read the DISCONNECT.
#[tokio::test]
async fn a_quick_reconnect_after_disconnect_with_will_publishes_the_will_once() {
    let broker = TestBroker::default_broker();
    let mut watch = watcher(&broker, "will/#").await;
    for _ in 0..10 {
        let (client, again) = disconnect_and_reconnect_at_once(
            &broker,
            Protocol::V5,
            "asked",
            ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
        )
        .await;
        drop(client);
        assert_eq!(watch.recv_publish().await.topic.as_str(), "will/asked");
        again_disconnect(again).await;
    }
    watch.expect_silence(400).await;
}

/// Connects `id` with a will on `will/{id}`, sends DISCONNECT with `reason` and connects again
/// at once, without waiting for the broker to close the first connection; returns both.
async fn disconnect_and_reconnect_at_once(
    broker: &TestBroker,
    protocol: Protocol,
    id: &str,
    reason: ReasonCode,
) -> (Raw, Raw) {
    let topic = format!("will/{id}");
    let w = will(&topic, QoS::AtMostOnce, false, None);
    let mut client = with_will(broker, protocol, id, w, None, 30).await;
    client
        .send_packet(&Packet::Disconnect(Disconnect::with_reason(reason)))
        .await;
    let again = connect_with(protocol, id, |c| c.keep_alive = 30);
    let (again, ack) = Raw::connect(broker.addr, protocol, &again).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    (client, again)
}

async fn again_disconnect(mut raw: Raw) {
    raw.send_packet(&Packet::Disconnect(Disconnect::with_reason(
        ReasonCode::NORMAL_DISCONNECTION,
    )))
    .await;
    raw.expect_closed().await;
}

/// What a client published right before it disconnected and reconnected at once is routed,
/// also when its new connection takes the session over before the old one has read it.
#[tokio::test]
async fn a_publish_sent_right_before_a_quick_reconnect_is_delivered() {
    let broker = TestBroker::default_broker();
    let (mut watch, _) = Raw::connected(broker.addr, Protocol::V311, "watcher").await;
    watch.subscribe("said/#", QoS::AtMostOnce).await;
    for i in 0..20 {
        let (mut client, _) = Raw::connected(broker.addr, Protocol::V311, "talker").await;
        let said = publish(&format!("said/{i}"), QoS::AtMostOnce, None, "x");
        let bye = Packet::Disconnect(Disconnect::with_reason(ReasonCode::NORMAL_DISCONNECTION));
        client.send_together(&[said, bye]).await;
        let (again, _) = Raw::connected(broker.addr, Protocol::V311, "talker").await;
        drop(client);
        assert_eq!(
            watch.recv_publish().await.topic.as_str(),
            format!("said/{i}")
        );
        again_disconnect(again).await;
    }
}

/// [MQTT-3.1.2-8] Only a normal DISCONNECT (0x00) discards the will ([MQTT-3.14.4-3]): an
/// MQTT 5 DISCONNECT with an error reason leaves it to be published.
#[tokio::test]
async fn a_disconnect_with_an_error_reason_publishes_the_will() {
    let broker = TestBroker::default_broker();
    let mut watch = watcher(&broker, "will/#").await;
    let mut client = with_will(
        &broker,
        Protocol::V5,
        "failing",
        will("will/failing", QoS::AtMostOnce, false, None),
        None,
        30,
    )
    .await;
    client
        .send_packet(&Packet::Disconnect(Disconnect::with_reason(
            ReasonCode::UNSPECIFIED_ERROR,
        )))
        .await;
    assert_eq!(watch.recv_publish().await.topic.as_str(), "will/failing");
}

/// [MQTT-3.1.3-9] "If a new Network Connection to this Session is made before the Will Delay
/// Interval has passed, the Server MUST NOT send the Will Message", and [MQTT-3.1.2-10] removes
/// it: a reconnect with Clean Start 1 within the delay deletes the will too. Reading chosen:
/// Clean Start 1 makes a new session, but the delay exists so that a client that comes back
/// quickly raises no alarm, and it has come back all the same (Mosquitto does the same).
#[tokio::test]
async fn a_clean_start_reconnect_within_the_will_delay_deletes_the_will() {
    let broker = TestBroker::default_broker();
    let mut watch = watcher(&broker, "will/#").await;
    let client = with_will(
        &broker,
        Protocol::V5,
        "fresh",
        will("will/fresh", QoS::AtMostOnce, false, Some(1)),
        Some(60),
        30,
    )
    .await;
    drop(client);
    assert!(broker.wait_offline("fresh").await);
    let (_again, ack) = Raw::connected(broker.addr, Protocol::V5, "fresh").await;
    assert!(!ack.session_present);
    // Past the 1 s delay: a will still pending would have gone out by now.
    watch.expect_silence(1500).await;
}

/// [MQTT-3.1.3-9] A takeover by a connection with Clean Start 1 is a new connection before the
/// delay passed: the old connection's delayed will is deleted, not published.
#[tokio::test]
async fn a_clean_start_takeover_deletes_a_delayed_will() {
    let broker = TestBroker::default_broker();
    let mut watch = watcher(&broker, "will/#").await;
    let mut old = with_will(
        &broker,
        Protocol::V5,
        "ousted",
        will("will/ousted", QoS::AtMostOnce, false, Some(1)),
        Some(60),
        30,
    )
    .await;
    let (_new, ack) = Raw::connected(broker.addr, Protocol::V5, "ousted").await;
    assert!(!ack.session_present);
    old.expect_disconnect(ReasonCode::SESSION_TAKEN_OVER).await;
    watch.expect_silence(1500).await;
}

/// [MQTT-3.1.2-8] "until the Will Delay Interval has passed or the Session ends, whichever
/// happens first": a session that expires (1 s) before its will's delay (30 s) publishes the
/// will when it expires, not when the next scan (here a minute away) frees it.
#[tokio::test]
async fn a_will_goes_out_when_the_session_expires_not_at_the_next_scan() {
    let broker = TestBroker::start("", "mqtt_session_scan_interval = 60000");
    let mut watch = watcher(&broker, "will/#").await;
    let client = with_will(
        &broker,
        Protocol::V5,
        "expiring",
        will("will/expiring", QoS::AtMostOnce, false, Some(30)),
        Some(1),
        30,
    )
    .await;
    let dropped = Instant::now();
    drop(client);
    assert_eq!(watch.recv_publish().await.topic.as_str(), "will/expiring");
    assert!(dropped.elapsed() >= Duration::from_millis(900));
}

/// MQTT 5 §3.1.3.2.4: the will's Message Expiry Interval is the lifetime of the published
/// will, sent as its Publication Expiry Interval; it does not run while the client is still
/// connected. A will with a 1 s interval from a client connected for 1.5 s is still delivered.
#[tokio::test]
async fn a_wills_message_expiry_counts_from_its_publication() {
    let broker = TestBroker::default_broker();
    let (mut watch, _) = Raw::connected(broker.addr, Protocol::V5, "watcher").await;
    watch.subscribe("will/#", QoS::AtLeastOnce).await;
    let short_lived = LastWill {
        topic: TopicName::new("will/brief").expect("topic"),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Some(Box::new(Properties {
            message_expiry_interval: Some(1),
            ..Properties::default()
        })),
    };
    let client = with_will(&broker, Protocol::V5, "brief", short_lived, None, 30).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(client);
    let p = watch.recv_publish().await;
    assert_eq!(p.topic.as_str(), "will/brief");
    let interval = p.properties.and_then(|p| p.message_expiry_interval);
    assert!(
        matches!(interval, Some(0..=1)),
        "sent with what is left of its interval: {interval:?}"
    );
}
