//! Sessions: expiry (MQTT 5 Session Expiry Interval and the acceptor's
//! `defaultMqttSessionExpiryInterval`, scanned every `mqtt_session_scan_interval`), clean
//! start, and takeover under a storm of reconnects with nothing acknowledged lost.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::raw::{connect_with, publish, session_expiry, Raw};
use common::*;
use starling_proto::{Packet, Protocol, QoS, ReasonCode};

/// [MQTT-3.1.2-23] After its Session Expiry Interval the session is gone: a reconnect finds no
/// session, no subscription, and nothing queued.
#[tokio::test]
async fn session_expiry_frees_the_session() {
    let broker = TestBroker::default_broker(); // scan interval 200 ms in the tests
    let persistent = connect_with(Protocol::V5, "fleeting", |c| {
        c.clean_start = false;
        c.properties = session_expiry(1);
    });
    let (mut sub, _) = Raw::connect(broker.addr, Protocol::V5, &persistent).await;
    sub.subscribe("e", QoS::AtLeastOnce).await;
    drop(sub);

    assert!(
        broker.session_info("fleeting").await.is_some(),
        "kept while within expiry"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        broker.session_info("fleeting").await,
        None,
        "the registry forgot it"
    );
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    publisher
        .send_packet(&publish("e", QoS::AtLeastOnce, Some(1), "late"))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));

    let (mut sub, ack) = Raw::connect(broker.addr, Protocol::V5, &persistent).await;
    assert!(!ack.session_present, "the session expired");
    sub.expect_silence(300).await;
}

/// Within its expiry the session is kept (and what arrived meanwhile queued).
#[tokio::test]
async fn a_session_is_kept_until_its_expiry() {
    let broker = TestBroker::default_broker();
    let persistent = connect_with(Protocol::V5, "stays", |c| {
        c.clean_start = false;
        c.properties = session_expiry(3);
    });
    let (mut sub, _) = Raw::connect(broker.addr, Protocol::V5, &persistent).await;
    sub.subscribe("k", QoS::AtLeastOnce).await;
    drop(sub);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    publisher
        .send_packet(&publish("k", QoS::AtLeastOnce, Some(1), "kept"))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    let (mut sub, ack) = Raw::connect(broker.addr, Protocol::V5, &persistent).await;
    assert!(ack.session_present);
    assert_eq!(&sub.recv_publish().await.payload[..], b"kept");
}

/// The seed: `defaultMqttSessionExpiryInterval` expires MQTT 3.x persistent sessions.
#[tokio::test]
async fn default_session_expiry_applies_to_v3_persistent_sessions() {
    let broker = TestBroker::start(";defaultMqttSessionExpiryInterval=1", "");
    let persistent = connect_with(Protocol::V311, "old-school", |c| c.clean_start = false);
    let (raw, _) = Raw::connect(broker.addr, Protocol::V311, &persistent).await;
    drop(raw);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (raw, ack) = Raw::connect(broker.addr, Protocol::V311, &persistent).await;
    assert!(ack.session_present, "still within a second");
    drop(raw);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_raw, ack) = Raw::connect(broker.addr, Protocol::V311, &persistent).await;
    assert!(!ack.session_present, "expired after a second offline");
}

/// A session whose expiry interval has passed no longer exists ([MQTT-3.1.2-23]: "the Server
/// MUST store the Session State after the Network Connection is closed [only] if the Session
/// Expiry Interval is greater than 0", for that long): a CONNECT after it gets session present
/// 0, even when `mqtt_session_scan_interval` (a minute here) has not fired yet. The scan only
/// frees memory.
#[tokio::test]
async fn an_expired_session_is_not_resumed_before_the_scan_runs() {
    let broker = TestBroker::start("", "mqtt_session_scan_interval = 60000");
    let (mut raw, _) = Raw::persistent(broker.addr, "lapsed", 1).await;
    raw.subscribe("lapsed/t", QoS::AtLeastOnce).await;
    drop(raw);
    assert!(broker.wait_offline("lapsed").await);
    // Measures the expiry, nothing else: 2 s offline against an interval of 1 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mut raw, present) = Raw::persistent(broker.addr, "lapsed", 1).await;
    assert!(!present, "an expired session was resumed");
    // Nor its subscription: a message on its topic is not delivered.
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "lapsed-pub").await;
    publisher
        .send_packet(&publish("lapsed/t", QoS::AtLeastOnce, Some(1), "late"))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    raw.expect_silence(300).await;
}

/// The seed: with the default -1, MQTT 3.x persistent sessions never expire.
#[tokio::test]
async fn v3_persistent_sessions_do_not_expire_by_default() {
    let broker = TestBroker::default_broker();
    let persistent = connect_with(Protocol::V311, "forever", |c| c.clean_start = false);
    let (raw, _) = Raw::connect(broker.addr, Protocol::V311, &persistent).await;
    drop(raw);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_raw, ack) = Raw::connect(broker.addr, Protocol::V311, &persistent).await;
    assert!(ack.session_present);
}

/// [MQTT-3.1.2-4] Clean Start discards the existing session.
#[tokio::test]
async fn clean_start_discards_the_existing_session() {
    let broker = TestBroker::default_broker();
    let persistent = connect_with(Protocol::V311, "wiped", |c| c.clean_start = false);
    let (mut raw, _) = Raw::connect(broker.addr, Protocol::V311, &persistent).await;
    raw.subscribe("w", QoS::AtLeastOnce).await;
    drop(raw);
    let (raw, ack) = Raw::connected(broker.addr, Protocol::V311, "wiped").await;
    assert!(!ack.session_present);
    drop(raw);
    let (mut raw, ack) = Raw::connect(broker.addr, Protocol::V311, &persistent).await;
    assert!(!ack.session_present);
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "pub").await;
    publisher
        .send_packet(&publish("w", QoS::AtLeastOnce, Some(1), "x"))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    raw.expect_silence(300).await;
}

/// Takeover storm: a persistent QoS 1 subscriber reconnects 50 times in quick succession with
/// the same client id (each new connection taking over the previous one, which gets DISCONNECT
/// 0x8E) while a publisher sends 500 QoS 1 messages. Every message the broker acknowledged to
/// the publisher reaches the subscriber; no connection is left attached twice.
#[tokio::test]
async fn takeover_storm_loses_nothing_acknowledged() {
    const MESSAGES: u32 = 500;
    let broker = TestBroker::default_broker();
    let connect = connect_with(Protocol::V5, "flappy", |c| {
        c.clean_start = false;
        c.properties = session_expiry(300);
    });
    let (mut sub, _) = Raw::connect(broker.addr, Protocol::V5, &connect).await;
    sub.subscribe("storm", QoS::AtLeastOnce).await;

    let addr = broker.addr;
    let publisher = tokio::spawn(async move {
        let (mut publisher, _) = Raw::connected(addr, Protocol::V5, "pub").await;
        let mut acked = BTreeSet::new();
        for n in 1..=MESSAGES {
            let id = (n % 60000 + 1) as u16;
            publisher
                .send_packet(&publish("storm", QoS::AtLeastOnce, Some(id), n.to_string()))
                .await;
            match publisher.recv().await {
                Some(Packet::PubAck(_)) => {
                    acked.insert(n);
                }
                other => panic!("expected PUBACK, got {other:?}"),
            }
            if n % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        acked
    });

    let mut received = BTreeSet::new();
    let mut previous = Some(sub);
    for round in 0..50 {
        let (mut next, ack) = Raw::connect(broker.addr, Protocol::V5, &connect).await;
        assert!(
            ack.session_present,
            "round {round}: the session survives takeover"
        );
        if let Some(mut old) = previous.take() {
            // The old connection is told and closed; whatever it still had is not acked.
            loop {
                match old.recv().await {
                    Some(Packet::Disconnect(d)) => {
                        assert_eq!(d.reason, ReasonCode::SESSION_TAKEN_OVER);
                    }
                    Some(Packet::Publish(_)) => {}
                    None => break,
                    Some(other) => panic!("unexpected {other:?}"),
                }
            }
        }
        // Take a few messages on this connection, acknowledging them.
        for _ in 0..3 {
            match tokio::time::timeout(Duration::from_millis(20), next.recv()).await {
                Ok(Some(Packet::Publish(p))) => {
                    received.insert(
                        String::from_utf8_lossy(&p.payload)
                            .parse::<u32>()
                            .expect("n"),
                    );
                    next.puback(&p).await;
                }
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => break,
            }
        }
        previous = Some(next);
    }

    let acked = publisher.await.expect("publisher");
    assert_eq!(acked.len(), MESSAGES as usize);
    // Drain: everything acknowledged to the publisher must arrive.
    let mut last = previous.expect("a connection");
    while !acked.is_subset(&received) {
        let p = last.recv_publish().await;
        received.insert(
            String::from_utf8_lossy(&p.payload)
                .parse::<u32>()
                .expect("n"),
        );
        last.puback(&p).await;
    }
}

/// [MQTT-3.1.2-6] A clean session lasts as long as its network connection: a persistent
/// CONNECT that takes it over (even before the broker saw the old socket close) gets a fresh
/// session, Session Present = 0, and none of its subscriptions.
#[tokio::test]
async fn taking_over_a_clean_session_starts_a_fresh_one() {
    let broker = TestBroker::default_broker();
    let (mut clean, _) = Raw::connected(broker.addr, Protocol::V311, "twin").await;
    clean.subscribe("c", QoS::AtLeastOnce).await;
    // The clean connection is still open when the persistent one arrives.
    let persistent = connect_with(Protocol::V311, "twin", |c| c.clean_start = false);
    let (mut raw, ack) = Raw::connect(broker.addr, Protocol::V311, &persistent).await;
    assert!(!ack.session_present);
    clean.expect_closed().await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "pub").await;
    publisher
        .send_packet(&publish("c", QoS::AtLeastOnce, Some(1), "x"))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    raw.expect_silence(300).await;
}
