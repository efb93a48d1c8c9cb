//! Persistence across restarts: sessions, subscriptions, queued and in-flight messages,
//! inbound QoS 2 ids and retained messages come back from the store; expired ones do not; a
//! store that cannot be read is a clear start-up error. (Crashes are in `tests/crash.rs`.)

mod common;

use std::time::Duration;

use common::raw::{pid, publish, retained, Raw};
use common::*;
use starling_proto::{Packet, Protocol, PubResponse, QoS, ReasonCode};

/// A persistent MQTT 5 client (clean start off, session expiry `expiry` seconds).
async fn persistent(broker: &TestBroker, id: &str, expiry: u32) -> (Raw, bool) {
    Raw::persistent(broker.addr, id, expiry).await
}

/// Publishes `n` QoS `qos` messages `m0..` to `topic` and waits for every acknowledgement.
async fn publish_acked(broker: &TestBroker, topic: &str, qos: QoS, n: u16) {
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "publisher").await;
    for i in 0..n {
        let id = i + 1;
        publisher
            .send_packet(&publish(topic, qos, Some(id), format!("m{i}")))
            .await;
        match publisher.recv().await {
            Some(Packet::PubAck(_)) => {}
            Some(Packet::PubRec(_)) => {
                publisher
                    .send_packet(&Packet::PubRel(PubResponse::success(pid(id))))
                    .await;
                assert!(matches!(publisher.recv().await, Some(Packet::PubComp(_))));
            }
            other => panic!("expected an acknowledgement, got {other:?}"),
        }
    }
}

/// [MQTT-3.2.2-3] After a restart, a client resuming its session (clean start 0) finds it
/// present, with its subscriptions active.
#[tokio::test]
async fn sessions_and_subscriptions_survive_a_restart() {
    let mut broker = TestBroker::default_broker();
    let (mut sub, present) = persistent(&broker, "keeper", 300).await;
    assert!(!present);
    assert_eq!(
        sub.subscribe("plant/+/temp", QoS::AtLeastOnce).await,
        vec![ReasonCode::GRANTED_QOS_1]
    );
    drop(sub);
    broker.restart();

    let (mut sub, present) = persistent(&broker, "keeper", 300).await;
    assert!(present, "session present after the restart");
    publish_acked(&broker, "plant/7/temp", QoS::AtLeastOnce, 1).await;
    let p = sub.recv_publish().await;
    assert_eq!(p.topic.as_str(), "plant/7/temp");
    assert_eq!(&p.payload[..], b"m0");
}

/// Messages queued for an offline persistent session, QoS 1 and 2, are delivered after a
/// restart, in order, each once.
#[tokio::test]
async fn queued_messages_survive_a_restart_in_order() {
    let mut broker = TestBroker::default_broker();
    let (mut sub, _) = persistent(&broker, "offline", 300).await;
    sub.subscribe("q/#", QoS::ExactlyOnce).await;
    drop(sub);
    publish_acked(&broker, "q/1", QoS::AtLeastOnce, 5).await;
    publish_acked(&broker, "q/2", QoS::ExactlyOnce, 5).await;
    broker.restart();

    let (mut sub, present) = persistent(&broker, "offline", 300).await;
    assert!(present);
    let mut got = Vec::new();
    let mut released = 0;
    while got.len() < 10 || released < 5 {
        match sub.recv().await {
            Some(Packet::Publish(p)) => {
                got.push((p.topic.as_str().to_owned(), p.qos, p.payload.clone()));
                let id = p.packet_id.expect("id");
                match p.qos {
                    QoS::ExactlyOnce => {
                        sub.send_packet(&Packet::PubRec(PubResponse::success(id)))
                            .await
                    }
                    _ => sub.puback(&p).await,
                }
            }
            Some(Packet::PubRel(rel)) => {
                released += 1;
                sub.send_packet(&Packet::PubComp(PubResponse::success(rel.packet_id)))
                    .await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected: Vec<_> = (0..5)
        .map(|i| ("q/1".to_owned(), QoS::AtLeastOnce, format!("m{i}")))
        .chain((0..5).map(|i| ("q/2".to_owned(), QoS::ExactlyOnce, format!("m{i}"))))
        .collect();
    let got: Vec<_> = got
        .into_iter()
        .map(|(t, q, p)| (t, q, String::from_utf8_lossy(&p).into_owned()))
        .collect();
    assert_eq!(got, expected);
    sub.expect_silence(300).await;
    // Acknowledged messages are gone from the store too.
    drop(sub);
    broker.restart();
    let (mut sub, present) = persistent(&broker, "offline", 300).await;
    assert!(present);
    sub.expect_silence(300).await;
}

/// [MQTT-4.4.0-1] A message in flight when the broker stopped is resent after the restart with
/// DUP=1 and its original packet identifier; a QoS 2 message whose PUBREC came gets PUBREL.
#[tokio::test]
async fn in_flight_messages_are_resent_with_dup_and_their_packet_ids_after_a_restart() {
    let mut broker = TestBroker::default_broker();
    let (mut sub, _) = persistent(&broker, "flying", 300).await;
    sub.subscribe("f/1", QoS::AtLeastOnce).await;
    sub.subscribe("f/2", QoS::ExactlyOnce).await;
    publish_acked(&broker, "f/1", QoS::AtLeastOnce, 1).await;
    let first = sub.recv_publish().await;
    publish_acked(&broker, "f/2", QoS::ExactlyOnce, 1).await;
    let second = sub.recv_publish().await;
    let second_id = second.packet_id.expect("id");
    sub.send_packet(&Packet::PubRec(PubResponse::success(second_id)))
        .await;
    assert!(matches!(sub.recv().await, Some(Packet::PubRel(_))));
    drop(sub); // no PUBACK, no PUBCOMP
    broker.restart();

    let (mut sub, present) = persistent(&broker, "flying", 300).await;
    assert!(present);
    let again = sub.recv_publish().await;
    assert!(again.dup, "resent with DUP=1");
    assert_eq!(again.packet_id, first.packet_id, "original packet id");
    assert_eq!(&again.payload[..], b"m0");
    assert_eq!(
        sub.recv().await,
        Some(Packet::PubRel(PubResponse::success(second_id))),
        "the released QoS 2 message gets its PUBREL again"
    );
}

/// [MQTT-4.3.3-10] An inbound QoS 2 packet id acknowledged with PUBREC is remembered across a
/// restart: the publisher's resend is acknowledged again and not delivered twice.
#[tokio::test]
async fn an_inbound_qos2_id_survives_a_restart_so_a_resend_is_not_delivered_twice() {
    let mut broker = TestBroker::default_broker();
    let (mut sub, _) = persistent(&broker, "watcher", 300).await;
    sub.subscribe("once", QoS::ExactlyOnce).await;
    drop(sub);
    let (mut publisher, _) = persistent(&broker, "sender", 300).await;
    publisher
        .send_packet(&publish("once", QoS::ExactlyOnce, Some(42), "exactly"))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubRec(_))));
    drop(publisher); // before PUBREL
    broker.restart();

    let (mut publisher, present) = persistent(&broker, "sender", 300).await;
    assert!(present);
    publisher.resend_qos2("once", 42, "exactly").await;

    let (mut sub, _) = persistent(&broker, "watcher", 300).await;
    let p = sub.recv_publish().await;
    assert_eq!(&p.payload[..], b"exactly");
    let id = p.packet_id.expect("id");
    sub.send_packet(&Packet::PubRec(PubResponse::success(id)))
        .await;
    assert!(matches!(sub.recv().await, Some(Packet::PubRel(_))));
    sub.send_packet(&Packet::PubComp(PubResponse::success(id)))
        .await;
    sub.expect_silence(300).await;
}

/// Retained messages survive a restart; a cleared one stays cleared.
#[tokio::test]
async fn retained_messages_survive_a_restart() {
    let mut broker = TestBroker::default_broker();
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "retainer").await;
    for (topic, payload, id) in [("r/a", "A", 1), ("r/b", "B", 2), ("r/c", "C", 3)] {
        publisher
            .send_packet(&retained(topic, QoS::AtLeastOnce, Some(id), payload))
            .await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    }
    publisher
        .send_packet(&retained("r/b", QoS::AtLeastOnce, Some(4), ""))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    drop(publisher);
    broker.restart();

    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V5, "reader").await;
    sub.subscribe("r/#", QoS::AtMostOnce).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = sub.recv_publish().await;
        assert!(p.retain);
        got.push(String::from_utf8_lossy(&p.payload).into_owned());
    }
    got.sort();
    assert_eq!(got, ["A", "C"]);
    sub.expect_silence(300).await;
}

/// A clean session keeps nothing in the store: after a restart it is not there.
#[tokio::test]
async fn clean_sessions_are_not_kept_across_a_restart() {
    let mut broker = TestBroker::default_broker();
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V311, "fleeting").await;
    sub.subscribe("x", QoS::AtLeastOnce).await;
    broker.restart();
    assert_eq!(broker.session_info("fleeting").await, None);
}

/// [MQTT-4.1.0-2] A session whose expiry passed while the broker was down is removed when the
/// store is read back: the store gives back only the other session, and the client finds none.
#[tokio::test]
async fn sessions_that_expired_while_the_broker_was_down_are_removed() {
    let mut broker = TestBroker::start_captured("", "[logging]\nformat = \"json\"\n");
    let (mut sub, _) = persistent(&broker, "short", 1).await;
    sub.subscribe("s", QoS::AtLeastOnce).await;
    drop(sub);
    let (mut long, _) = persistent(&broker, "long", 300).await;
    long.subscribe("s", QoS::AtLeastOnce).await;
    drop(long);
    tokio::time::sleep(Duration::from_millis(100)).await;
    broker.stop();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    broker.restart();
    // Read straight from the store: the session's own expiry timer, had it been recovered,
    // would have removed it by now too.
    let logs = broker.logs.as_ref().expect("captured");
    let opened: Vec<_> = logs
        .records()
        .into_iter()
        .filter(|r| r["msg"] == "store opened")
        .collect();
    assert_eq!(opened.len(), 2, "{}", logs.text());
    assert_eq!(opened[0]["sessions"], 0);
    assert_eq!(
        opened[1]["sessions"], 1,
        "only the unexpired session comes back"
    );
    assert_eq!(broker.session_info("short").await, None);
    assert!(broker.session_info("long").await.is_some());
    let (_sub, present) = persistent(&broker, "short", 1).await;
    assert!(!present);
}

/// A store file that is not a store stops the broker at start-up with an error naming the
/// file, rather than starting empty.
#[test]
fn a_corrupt_store_is_a_start_up_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("starling.redb");
    std::fs::write(&file, vec![0x5a; 64 * 1024]).expect("write garbage");
    let mut settings = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("settings");
    use std::io::Write;
    write!(
        settings,
        "[persistence]\ndir = {:?}\n\n[[acceptors]]\nname = \"test\"\n\
         url = \"tcp://127.0.0.1:0?protocols=MQTT\"\n",
        dir.path().display().to_string()
    )
    .expect("write");
    let settings =
        starling::Settings::load_with_env(&[settings.path().to_path_buf()], None).expect("valid");
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let err = starling::start(settings, log).expect_err("must not start");
    let text = err.to_string();
    assert!(text.contains(&file.display().to_string()), "{text}");
}

/// With persistence off nothing is kept: a restarted broker knows no session.
#[tokio::test]
async fn with_persistence_off_nothing_survives_a_restart() {
    let mut broker = TestBroker::start("", "[persistence]\nenabled = false\n");
    let (mut sub, _) = persistent(&broker, "gone", 300).await;
    sub.subscribe("x", QoS::AtLeastOnce).await;
    drop(sub);
    broker.restart();
    let (_sub, present) = persistent(&broker, "gone", 300).await;
    assert!(!present);
    assert!(
        std::fs::read_dir(broker.data_dir.path())
            .expect("dir")
            .next()
            .is_none(),
        "no store file written"
    );
}

/// A persistent client with a delayed, retained will, gone without DISCONNECT.
async fn gone_with_a_delayed_will(broker: &TestBroker, id: &str, expiry: u32, delay: u32) {
    let connect = common::raw::connect_with(Protocol::V5, id, |c| {
        c.clean_start = false;
        c.properties = common::raw::session_expiry(expiry);
        c.will = Some(starling_proto::LastWill {
            topic: starling_proto::TopicName::new(&format!("gone/{id}")).expect("topic"),
            payload: bytes::Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Some(Box::new(starling_proto::Properties {
                will_delay_interval: Some(delay),
                ..starling_proto::Properties::default()
            })),
        });
    });
    let (client, ack) = Raw::connect(broker.addr, Protocol::V5, &connect).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    drop(client);
    // The session has recorded its client's departure, with the will still pending.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// [MQTT-3.1.2-8] The will goes out when the session ends, if that comes before the will
/// delay: also when the session's expiry (1 s) ran out while the broker was down. The will is
/// published when the broker comes back (retained here, so a later subscriber sees it).
#[tokio::test]
async fn the_will_of_a_session_that_expired_while_the_broker_was_down_is_published() {
    let mut broker = TestBroker::default_broker();
    gone_with_a_delayed_will(&broker, "expired-away", 1, 60).await;
    broker.stop();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    broker.restart();
    let (mut watcher, _) = Raw::connected(broker.addr, Protocol::V5, "watcher").await;
    watcher.subscribe("gone/#", QoS::AtLeastOnce).await;
    let p = watcher.recv_publish().await;
    assert_eq!(p.topic.as_str(), "gone/expired-away");
    let (_client, present) = persistent(&broker, "expired-away", 60).await;
    assert!(!present, "the session itself is gone");
}

/// MQTT 5 Will Delay Interval: the delay counts from when the client went, and the broker's
/// downtime is part of it. A 3 s delay of which 2 s passed while the broker was down leaves
/// about 1 s after the restart, not 3.
#[tokio::test]
async fn a_will_delay_counts_the_time_the_broker_was_down() {
    let mut broker = TestBroker::default_broker();
    gone_with_a_delayed_will(&broker, "delayed-away", 300, 3).await;
    broker.stop();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    broker.restart();
    let restarted = std::time::Instant::now();
    let (mut watcher, _) = Raw::connected(broker.addr, Protocol::V5, "watcher").await;
    watcher.subscribe("gone/#", QoS::AtLeastOnce).await;
    let p = tokio::time::timeout(Duration::from_secs(10), watcher.recv_publish_patiently())
        .await
        .expect("the will within 10 s");
    assert_eq!(p.topic.as_str(), "gone/delayed-away");
    let waited = restarted.elapsed();
    assert!(
        waited < Duration::from_millis(2000),
        "published {waited:?} after the restart; about 1 s of its delay was left"
    );
}

/// Upgrading a store written before an MQTT 5 CONNECT without a Session Expiry Interval meant
/// 0 ([MQTT-3.1.2-23]): its session records (format 1) that never expire may be sessions that
/// bug kept. They are kept for a day from the upgrade (an MQTT 3.x client that comes back in
/// that time keeps its session; its CONNECT then sets the expiry anew) and no longer: the
/// upgraded record has an expiry of a day, counted from the upgrade, and is written back.
#[tokio::test]
async fn sessions_stored_without_expiry_by_an_earlier_version_are_bounded_at_upgrade() {
    use starling_actors::store::{
        now_unix_ms, Op, PersistenceConfig, Store, SyncMode, LEGACY_SESSION_GRACE_SECS,
    };
    use std::sync::Arc;

    let mut broker = TestBroker::default_broker();
    broker.stop();
    let config = PersistenceConfig {
        dir: broker.data_dir.path().to_owned(),
        sync: SyncMode::Always,
        sync_interval: Duration::from_millis(100),
    };
    let open = || {
        let failed = Arc::new(tokio::sync::watch::channel(None).0);
        Store::open(&config, failed, &test_logger()).expect("store opens")
    };
    // A format-1 record: version byte 1, no expiry, offline for a week, no user, no will.
    let week_ago = now_unix_ms() - 7 * 86_400_000;
    let mut v1 = vec![1u8, 0];
    v1.extend_from_slice(&week_ago.to_be_bytes());
    v1.extend_from_slice(&[0, 0]);
    let (store, _) = open();
    let put = store.send_confirmed(Op::PutSession {
        client: Arc::from("legacy"),
        record: v1.into(),
    });
    put.await.expect("answered").expect("stored");
    store.close().await;

    let before = now_unix_ms();
    let (store, recovered) = open();
    let session = &recovered.sessions[0];
    assert_eq!(&*session.client_id, "legacy");
    assert_eq!(session.record.expiry, Some(LEGACY_SESSION_GRACE_SECS));
    let since = session.record.offline_since.expect("offline");
    assert!(since >= before, "the grace counts from the upgrade");
    store.close().await;
    // Written back in the current format: read again, the grace is not restarted.
    let (store, recovered) = open();
    assert_eq!(recovered.sessions[0].record.offline_since, Some(since));
    store.close().await;

    // Within the grace its client still finds it.
    broker.restart();
    let connect = common::raw::connect_with(Protocol::V311, "legacy", |c| c.clean_start = false);
    let (_raw, ack) = Raw::connect(broker.addr, Protocol::V311, &connect).await;
    assert!(ack.session_present);
}
