//! QoS 1 and 2 in both directions: delivery QoS, acknowledgement flows, redelivery with DUP
//! after a reconnect, exactly-once across reconnects, ordering, and the in-flight window.

mod common;

use common::raw::{connect_with, pid, publish, session_expiry, Raw};
use common::*;
use starling_proto::{Packet, Properties, Protocol, PubResponse, QoS, ReasonCode};

/// A persistent MQTT 5 subscriber (session expiry 60 s, clean start off).
async fn persistent_v5(broker: &TestBroker, id: &str, receive_maximum: Option<u16>) -> (Raw, bool) {
    let connect = connect_with(Protocol::V5, id, |c| {
        c.clean_start = false;
        let mut props = Properties {
            session_expiry_interval: Some(60),
            ..Properties::default()
        };
        props.receive_maximum = receive_maximum;
        c.properties = Some(Box::new(props));
    });
    let (raw, ack) = Raw::connect(broker.addr, Protocol::V5, &connect).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    (raw, ack.session_present)
}

/// [MQTT-3.8.4-6] The delivery QoS is the minimum of the published QoS and the granted QoS.
#[tokio::test]
async fn delivery_qos_is_the_minimum_of_message_and_subscription() {
    let broker = TestBroker::default_broker();
    let (mut sub1, _) = Raw::connected(broker.addr, Protocol::V311, "sub1").await;
    assert_eq!(
        sub1.subscribe("m", QoS::AtLeastOnce).await,
        vec![ReasonCode::GRANTED_QOS_1]
    );
    let (mut sub2, _) = Raw::connected(broker.addr, Protocol::V311, "sub2").await;
    assert_eq!(
        sub2.subscribe("m", QoS::ExactlyOnce).await,
        vec![ReasonCode::GRANTED_QOS_2]
    );
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "pub").await;

    publisher
        .send_packet(&publish("m", QoS::ExactlyOnce, Some(1), "two"))
        .await;
    assert_eq!(sub1.recv_publish().await.qos, QoS::AtLeastOnce);
    assert_eq!(sub2.recv_publish().await.qos, QoS::ExactlyOnce);

    publisher
        .send_packet(&publish("m", QoS::AtMostOnce, None, "zero"))
        .await;
    let p = sub2.recv_publish().await;
    assert_eq!((p.qos, p.packet_id), (QoS::AtMostOnce, None));
}

/// [MQTT-4.3.2-1] QoS 1: the broker keeps the message until PUBACK; unacknowledged, it is
/// resent with DUP=1 when the session reconnects ([MQTT-4.4.0-1]).
#[tokio::test]
async fn qos1_is_redelivered_with_dup_after_the_subscriber_drops_without_acking() {
    let broker = TestBroker::default_broker();
    let (mut sub, present) = persistent_v5(&broker, "dropper", None).await;
    assert!(!present);
    sub.subscribe("r/#", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    publisher
        .send_packet(&publish("r/1", QoS::AtLeastOnce, Some(9), "important"))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    let first = sub.recv_publish().await;
    assert!(!first.dup);
    drop(sub); // no PUBACK

    let (mut sub, present) = persistent_v5(&broker, "dropper", None).await;
    assert!(present);
    let again = sub.recv_publish().await;
    assert!(again.dup, "redelivery carries DUP=1");
    assert_eq!(again.packet_id, first.packet_id, "same packet id");
    assert_eq!(&again.payload[..], b"important");
    sub.puback(&again).await;
    sub.expect_silence(300).await;

    // Acknowledged now: a further reconnect gets nothing again.
    drop(sub);
    let (mut sub, _) = persistent_v5(&broker, "dropper", None).await;
    sub.expect_silence(300).await;
}

/// [MQTT-3.3.4-9] A subscriber that reconnects with a smaller Receive Maximum than it had gets
/// no more unacknowledged messages resent than that: two of its six, then one more per PUBACK,
/// in the original order ([MQTT-4.4.0-1]).
#[tokio::test]
async fn a_reconnect_with_a_smaller_receive_maximum_limits_the_resent_messages() {
    let broker = TestBroker::default_broker();
    let (mut sub, _) = persistent_v5(&broker, "shrinks", None).await;
    sub.subscribe("r/#", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    for n in 1..=6u16 {
        publisher
            .send_packet(&publish("r/1", QoS::AtLeastOnce, Some(n), n.to_string()))
            .await;
    }
    for _ in 1..=6 {
        sub.recv_publish().await;
    }
    drop(sub); // none acknowledged

    let (mut sub, present) = persistent_v5(&broker, "shrinks", Some(2)).await;
    assert!(present);
    let first = sub.recv_publish().await;
    let second = sub.recv_publish().await;
    sub.expect_silence(300).await;
    let mut got = vec![first.clone(), second];
    sub.puback(&first).await;
    for _ in 3..=6 {
        let next = sub.recv_publish().await;
        sub.expect_silence(50).await;
        sub.puback(&next).await;
        got.push(next);
    }
    let payloads: Vec<_> = got
        .iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect();
    assert_eq!(payloads, ["1", "2", "3", "4", "5", "6"]);
    assert!(got.iter().all(|p| p.dup), "resends carry DUP=1");
}

/// QoS 2 out, exactly once across a reconnect in the middle of the exchange: after PUBREC the
/// broker resends PUBREL, never the PUBLISH ([MQTT-4.4.0-1], [MQTT-4.3.3-5]).
#[tokio::test]
async fn qos2_delivery_survives_a_reconnect_between_pubrec_and_pubcomp() {
    let broker = TestBroker::default_broker();
    let (mut sub, _) = persistent_v5(&broker, "exact", None).await;
    sub.subscribe("x", QoS::ExactlyOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    publisher
        .send_packet(&publish("x", QoS::ExactlyOnce, Some(3), "once"))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubRec(_))));
    publisher
        .send_packet(&Packet::PubRel(PubResponse::success(pid(3))))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubComp(_))));

    let p = sub.recv_publish().await;
    let id = p.packet_id.expect("id");
    sub.send_packet(&Packet::PubRec(PubResponse::success(id)))
        .await;
    assert_eq!(
        sub.recv().await,
        Some(Packet::PubRel(PubResponse::success(id)))
    );
    drop(sub); // no PUBCOMP

    let (mut sub, present) = persistent_v5(&broker, "exact", None).await;
    assert!(present);
    assert_eq!(
        sub.recv().await,
        Some(Packet::PubRel(PubResponse::success(id))),
        "PUBREL, not PUBLISH"
    );
    sub.send_packet(&Packet::PubComp(PubResponse::success(id)))
        .await;
    sub.expect_silence(300).await;
}

/// QoS 2 in, exactly once across a reconnect: the publisher resends its PUBLISH (DUP) on a new
/// connection before PUBREL; the broker answers PUBREC without routing it again
/// ([MQTT-4.3.3-10]), and PUBREL on the new connection completes it.
#[tokio::test]
async fn qos2_publish_resent_on_a_new_connection_is_routed_once() {
    let broker = TestBroker::default_broker();
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V5, "watch").await;
    sub.subscribe("in", QoS::AtMostOnce).await;

    let (mut publisher, _) = persistent_v5(&broker, "sender", None).await;
    publisher
        .send_packet(&publish("in", QoS::ExactlyOnce, Some(42), "payload"))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubRec(_))));
    drop(publisher); // before PUBREL

    let (mut publisher, present) = persistent_v5(&broker, "sender", None).await;
    assert!(present);
    publisher.resend_qos2("in", 42, "payload").await;

    assert_eq!(&sub.recv_publish().await.payload[..], b"payload");
    sub.expect_silence(300).await;
}

/// [MQTT-4.3.3-10] Until PUBREL, every PUBLISH with the same packet id is acknowledged with a
/// PUBREC and routed only once: also resends that arrive while the first copy is still being
/// routed. (Each of them also must give its place in the connection's routing window back: 200
/// resends are more than the window holds, and the connection must go on reading.)
#[tokio::test]
async fn qos2_resends_while_the_first_copy_is_routed_each_get_a_pubrec_and_are_routed_once() {
    let broker = TestBroker::default_broker();
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V5, "watch").await;
    sub.subscribe("in", QoS::AtMostOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "eager").await;
    let mut copies = vec![publish("in", QoS::ExactlyOnce, Some(7), "once")];
    for _ in 0..200 {
        let mut resend = publish("in", QoS::ExactlyOnce, Some(7), "once");
        if let Packet::Publish(p) = &mut resend {
            p.dup = true;
        }
        copies.push(resend);
    }
    publisher.send_together(&copies).await;
    for n in 0..copies.len() {
        match publisher.recv().await {
            Some(Packet::PubRec(r)) => assert_eq!(r.packet_id, pid(7)),
            other => panic!("PUBREC {n} of {}: got {other:?}", copies.len()),
        }
    }
    publisher
        .send_packet(&Packet::PubRel(PubResponse::success(pid(7))))
        .await;
    assert_eq!(
        publisher.recv().await,
        Some(Packet::PubComp(PubResponse::success(pid(7))))
    );
    publisher.send_packet(&Packet::PingReq).await;
    assert_eq!(publisher.recv().await, Some(Packet::PingResp));
    assert_eq!(&sub.recv_publish().await.payload[..], b"once");
    sub.expect_silence(300).await;
}

/// [MQTT-4.6.0-5] Messages of one QoS from one publisher arrive in the order published.
#[tokio::test]
async fn qos1_messages_arrive_in_order() {
    let broker = TestBroker::default_broker();
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V311, "ordered").await;
    sub.subscribe("seq", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "pub").await;
    for n in 1..=500u16 {
        publisher
            .send_packet(&publish("seq", QoS::AtLeastOnce, Some(n), n.to_string()))
            .await;
    }
    for n in 1..=500u16 {
        let p = sub.recv_publish().await;
        assert_eq!(
            std::str::from_utf8(&p.payload).expect("utf8"),
            n.to_string()
        );
        sub.puback(&p).await;
    }
}

/// [MQTT-3.3.4-7] The broker never has more unacknowledged QoS 1 messages in flight than the
/// client's Receive Maximum; the rest wait in order. Receive Maximum 1, 1 000 messages.
#[tokio::test]
async fn receive_maximum_one_keeps_one_message_in_flight_and_delivers_all_in_order() {
    let broker = TestBroker::start("", "[session]\nmax_queued_messages = 2000");
    let (mut sub, _) = persistent_v5(&broker, "narrow", Some(1)).await;
    sub.subscribe("w", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    for n in 0..1000u16 {
        publisher
            .send_packet(&publish("w", QoS::AtLeastOnce, Some(n + 1), n.to_string()))
            .await;
    }
    for n in 0..1000u16 {
        let p = sub.recv_publish().await;
        assert_eq!(
            std::str::from_utf8(&p.payload).expect("utf8"),
            n.to_string()
        );
        if n % 100 == 0 {
            // Nothing more may come while this one is unacknowledged.
            sub.expect_silence(20).await;
        }
        sub.puback(&p).await;
    }
}

/// QoS 1 messages published while a persistent subscriber is offline are queued and delivered
/// when it reconnects; QoS 0 ones are not (unless `queue_qos0_messages`).
#[tokio::test]
async fn offline_persistent_sessions_queue_qos1_but_not_qos0() {
    let broker = TestBroker::default_broker();
    let (mut sub, _) = persistent_v5(&broker, "away", None).await;
    sub.subscribe("q", QoS::AtLeastOnce).await;
    drop(sub);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    publisher
        .send_packet(&publish("q", QoS::AtMostOnce, None, "lost"))
        .await;
    publisher
        .send_packet(&publish("q", QoS::AtLeastOnce, Some(1), "kept"))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));

    let (mut sub, present) = persistent_v5(&broker, "away", None).await;
    assert!(present);
    let p = sub.recv_publish().await;
    assert_eq!(&p.payload[..], b"kept");
    sub.puback(&p).await;
    sub.expect_silence(300).await;
}

/// With `queue_qos0_messages = true` offline QoS 0 messages are queued too.
#[tokio::test]
async fn queue_qos0_messages_keeps_qos0_for_offline_sessions() {
    let broker = TestBroker::start("", "[session]\nqueue_qos0_messages = true");
    let (mut sub, _) = persistent_v5(&broker, "away0", None).await;
    sub.subscribe("q0", QoS::AtMostOnce).await;
    drop(sub);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    publisher
        .send_packet(&publish("q0", QoS::AtMostOnce, None, "kept"))
        .await;
    publisher.send_packet(&Packet::PingReq).await;
    assert_eq!(publisher.recv().await, Some(Packet::PingResp));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (mut sub, _) = persistent_v5(&broker, "away0", None).await;
    assert_eq!(&sub.recv_publish().await.payload[..], b"kept");
}

/// A full offline queue drops the oldest message (the default policy) and keeps the newest.
#[tokio::test]
async fn a_full_offline_queue_drops_the_oldest() {
    let broker = TestBroker::start("", "[session]\nmax_queued_messages = 3");
    let (mut sub, _) = persistent_v5(&broker, "full", None).await;
    sub.subscribe("f", QoS::AtLeastOnce).await;
    drop(sub);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    for n in 1..=5u16 {
        publisher
            .send_packet(&publish("f", QoS::AtLeastOnce, Some(n), n.to_string()))
            .await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (mut sub, _) = persistent_v5(&broker, "full", None).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let p = sub.recv_publish().await;
        got.push(String::from_utf8_lossy(&p.payload).into_owned());
        sub.puback(&p).await;
    }
    assert_eq!(got, ["3", "4", "5"]);
    sub.expect_silence(300).await;
}

/// [MQTT-3.3.5-1] Overlapping subscriptions of one client give one copy at the highest QoS
/// (with every matching Subscription Identifier on MQTT 5).
#[tokio::test]
async fn overlapping_subscriptions_deliver_one_copy_at_the_highest_qos() {
    let broker = TestBroker::default_broker();
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V311, "overlap").await;
    sub.subscribe("o/#", QoS::AtMostOnce).await;
    sub.subscribe("o/+", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "pub").await;
    publisher
        .send_packet(&publish("o/1", QoS::ExactlyOnce, Some(1), "x"))
        .await;
    let p = sub.recv_publish().await;
    assert_eq!(p.qos, QoS::AtLeastOnce);
    sub.puback(&p).await;
    sub.expect_silence(300).await;
}

/// A session with Session Expiry Interval 0 ends with its connection; a later connection
/// finds no session ([MQTT-3.1.2-23] with the value 0).
#[tokio::test]
async fn expiry_zero_sessions_end_with_the_connection() {
    let broker = TestBroker::default_broker();
    let connect = |clean| {
        connect_with(Protocol::V5, "brief", move |c| {
            c.clean_start = clean;
            c.properties = session_expiry(0);
        })
    };
    let (mut raw, _) = Raw::connect(broker.addr, Protocol::V5, &connect(true)).await;
    raw.subscribe("b", QoS::AtLeastOnce).await;
    drop(raw);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (_raw, ack) = Raw::connect(broker.addr, Protocol::V5, &connect(false)).await;
    assert!(!ack.session_present);
}

/// [MQTT-3.3.4-4] With overlapping subscriptions, the one delivery carries the Subscription
/// Identifiers of every matching subscription (MQTT 5).
#[tokio::test]
async fn overlapping_subscriptions_carry_every_subscription_identifier() {
    use starling_proto::{Subscribe, SubscriptionOptions, TopicFilter};
    let broker = TestBroker::default_broker();
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V5, "ids").await;
    for (filter, id) in [("s/#", 7), ("s/+", 9)] {
        sub.send_packet(&Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            properties: Some(Box::new(Properties {
                subscription_identifiers: vec![id],
                ..Properties::default()
            })),
            filters: vec![(
                TopicFilter::new(filter).expect("filter"),
                SubscriptionOptions::default(),
            )],
        }))
        .await;
        assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    }
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    publisher
        .send_packet(&publish("s/1", QoS::AtMostOnce, None, "x"))
        .await;
    let p = sub.recv_publish().await;
    let mut ids = p.properties.expect("properties").subscription_identifiers;
    ids.sort_unstable();
    assert_eq!(ids, vec![7, 9]);
    sub.expect_silence(200).await;
}

/// A QoS 2 PUBLISH followed at once by DISCONNECT: the message is routed (it is the session's
/// from the moment it is handed over) and the connection closes at once. It does not wait out
/// the 2 s close grace for a PUBREC that can no longer reach it.
#[tokio::test]
async fn a_qos2_publish_right_before_disconnect_is_routed_and_the_close_is_prompt() {
    let broker = TestBroker::default_broker();
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V311, "watch").await;
    sub.subscribe("last/word", QoS::ExactlyOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "leaving").await;
    let last = publish("last/word", QoS::ExactlyOnce, Some(1), "bye");
    let bye = Packet::Disconnect(starling_proto::Disconnect::with_reason(
        ReasonCode::NORMAL_DISCONNECTION,
    ));
    let start = std::time::Instant::now();
    publisher.send_together(&[last, bye]).await;
    // A PUBREC may or may not come first; then the broker closes.
    while publisher.recv().await.is_some() {}
    assert!(
        start.elapsed() < std::time::Duration::from_millis(1500),
        "the close took {:?}",
        start.elapsed()
    );
    let delivered = sub.recv_publish().await;
    assert_eq!(delivered.topic.as_str(), "last/word");
}

/// Concurrent inbound QoS 2 conversations, each publisher on its own topic with one QoS 2
/// subscriber (see `qos2_handshakes_never_wait_on_slow_subscribers`). `STRESS_PAIRS`,
/// `STRESS_MESSAGES` and `STRESS_ROUNDS` scale it up for a long run.
mod stress {
    use std::collections::HashSet;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use super::common::raw::{connect_with, pid, publish, Raw};
    use super::common::{TestBroker, WAIT};
    use starling_proto::{Packet, Properties, Protocol, PubResponse, Publish, QoS, ReasonCode};

    /// The longest a publisher may wait for the PUBREC of its PUBLISH, or the PUBCOMP of its
    /// PUBREL.
    pub(crate) const LIMIT: Duration = Duration::from_secs(1);

    /// One run of the scenario.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Plan {
        /// Publisher/subscriber pairs.
        pub pairs: usize,
        /// QoS 2 messages per publisher per round.
        pub messages: u16,
        /// Rounds on the same broker (the same client ids each round).
        pub rounds: usize,
        /// Clean Start 0 with a Session Expiry Interval, for publishers and subscribers.
        pub persistent: bool,
        /// Publishers reconnect (same client id) during their exchanges.
        pub reconnect: bool,
    }

    impl Plan {
        /// The normal-suite plan (16 pairs, 4 messages each, one round), or what
        /// `STRESS_PAIRS`, `STRESS_MESSAGES` and `STRESS_ROUNDS` say.
        pub(crate) fn from_env(persistent: bool, reconnect: bool) -> Plan {
            fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
                std::env::var(name)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(default)
            }
            Plan {
                pairs: env("STRESS_PAIRS", 16),
                messages: env("STRESS_MESSAGES", 4u16).max(1),
                rounds: env("STRESS_ROUNDS", 1),
                persistent,
                reconnect,
            }
        }

        /// A bound on one round: the slowest subscriber withholds each PUBREC for at most
        /// 500 ms, plus the LIMIT per handshake and connection set-up.
        fn round_bound(&self) -> Duration {
            Duration::from_millis(600) * u32::from(self.messages) + WAIT * 2
        }
    }

    /// How long subscriber `i` withholds each PUBREC: half of them (MQTT 5, Receive
    /// Maximum 1) 200 to 500 ms, the others not at all.
    fn hold_of(i: usize) -> Option<Duration> {
        i.is_multiple_of(2)
            .then(|| Duration::from_millis(200 + (i as u64 * 37) % 300))
    }

    fn connect_packet(
        id: &str,
        protocol: Protocol,
        plan: &Plan,
        receive_maximum: Option<u16>,
    ) -> Packet {
        connect_with(protocol, id, |c| {
            c.clean_start = !plan.persistent;
            if protocol.is_v5() {
                c.properties = Some(Box::new(Properties {
                    session_expiry_interval: plan.persistent.then_some(60),
                    receive_maximum,
                    ..Properties::default()
                }));
            }
        })
    }

    async fn connect(
        addr: SocketAddr,
        id: &str,
        protocol: Protocol,
        plan: &Plan,
        rm: Option<u16>,
    ) -> Raw {
        let (raw, ack) =
            Raw::connect(addr, protocol, &connect_packet(id, protocol, plan, rm)).await;
        assert_eq!(ack.code, ReasonCode::SUCCESS, "CONNACK of {id}");
        raw
    }

    /// Waits for the next packet, which must be what `want` accepts, and says how long it took
    /// from `asked`. Past `LIMIT` it goes on waiting (up to `WAIT` more) only to report how
    /// late the packet was.
    async fn answer(
        raw: &mut Raw,
        who: &str,
        what: &str,
        asked: Instant,
        want: impl Fn(&Packet) -> bool,
    ) -> Result<(), String> {
        let got = match tokio::time::timeout(LIMIT, raw.recv()).await {
            Ok(got) => got,
            Err(_) => {
                let late = tokio::time::timeout(WAIT, raw.recv()).await;
                let waited = asked.elapsed();
                return Err(match late {
                    Ok(Some(p)) if want(&p) => format!("{who}: {what} came after {waited:?}"),
                    Ok(other) => format!("{who}: no {what} within {LIMIT:?}, then {other:?}"),
                    Err(_) => format!("{who}: no {what} within {waited:?}"),
                });
            }
        };
        match got {
            Some(p) if want(&p) => {
                let waited = asked.elapsed();
                if waited > LIMIT {
                    return Err(format!("{who}: {what} came after {waited:?}"));
                }
                Ok(())
            }
            other => Err(format!("{who}: expected {what}, got {other:?}")),
        }
    }

    fn is_pubrec(id: u16) -> impl Fn(&Packet) -> bool {
        move |p| matches!(p, Packet::PubRec(r) if r.packet_id == pid(id) && r.reason.is_success())
    }

    fn is_pubcomp(id: u16) -> impl Fn(&Packet) -> bool {
        move |p| matches!(p, Packet::PubComp(r) if r.packet_id == pid(id) && r.reason.is_success())
    }

    /// Publisher `i`: `messages` QoS 2 messages in sequence, each PUBLISH -> PUBREC, PUBREL ->
    /// PUBCOMP, every answer within `LIMIT`. Reconnecting, it leaves at three places in turn:
    /// before the PUBREC (and resends the PUBLISH with DUP), between PUBREC and PUBREL (and
    /// sends PUBREL on the new connection), and not at all.
    async fn publisher(addr: SocketAddr, i: usize, round: usize, plan: Plan) -> Result<(), String> {
        let id = format!("stress-pub-{i}");
        let protocol = if i % 4 < 2 {
            Protocol::V5
        } else {
            Protocol::V311
        };
        let mut raw = connect(addr, &id, protocol, &plan, None).await;
        let topic = format!("stress{i}/t");
        for n in 1..=plan.messages {
            let payload = format!("{round}:{n}");
            let packet = publish(&topic, QoS::ExactlyOnce, Some(n), payload.clone());
            let who = format!("{id} message {payload}");
            let leave = if plan.reconnect {
                usize::from(n) % 3
            } else {
                0
            };
            raw.send_packet(&packet).await;
            let mut asked = Instant::now();
            if leave == 1 {
                // Gone before the PUBREC: resend on a new connection, DUP set.
                drop(raw);
                raw = connect(addr, &id, protocol, &plan, None).await;
                let mut resend = packet.clone();
                if let Packet::Publish(p) = &mut resend {
                    p.dup = true;
                }
                raw.send_packet(&resend).await;
                asked = Instant::now();
            }
            answer(&mut raw, &who, "PUBREC", asked, is_pubrec(n)).await?;
            if leave == 2 {
                // Gone between PUBREC and PUBREL: the session keeps the id.
                drop(raw);
                raw = connect(addr, &id, protocol, &plan, None).await;
            }
            let asked = Instant::now();
            raw.send_packet(&Packet::PubRel(PubResponse::success(pid(n))))
                .await;
            answer(&mut raw, &who, "PUBCOMP", asked, is_pubcomp(n)).await?;
        }
        raw.send_packet(&Packet::Disconnect(
            starling_proto::Disconnect::with_reason(ReasonCode::NORMAL_DISCONNECTION),
        ))
        .await;
        Ok(())
    }

    /// Subscriber `i`, connected and subscribed: takes `messages` QoS 2 messages, withholding
    /// each PUBREC for `hold_of(i)`, and checks they came exactly once, in order.
    async fn subscriber(mut raw: Raw, i: usize, round: usize, plan: Plan) -> Result<(), String> {
        let hold = hold_of(i);
        let mut got: Vec<String> = Vec::new();
        let mut awaiting_pubrel: HashSet<u16> = HashSet::new();
        while got.len() < usize::from(plan.messages) || !awaiting_pubrel.is_empty() {
            match raw.recv().await {
                Some(Packet::Publish(Publish {
                    qos: QoS::ExactlyOnce,
                    packet_id: Some(id),
                    payload,
                    ..
                })) => {
                    got.push(String::from_utf8_lossy(&payload).into_owned());
                    if let Some(hold) = hold {
                        // A slow client: it withholds its PUBREC for a while.
                        tokio::time::sleep(hold).await;
                    }
                    awaiting_pubrel.insert(id.get());
                    raw.send_packet(&Packet::PubRec(PubResponse::success(id)))
                        .await;
                }
                Some(Packet::PubRel(rel)) => {
                    awaiting_pubrel.remove(&rel.packet_id.get());
                    raw.send_packet(&Packet::PubComp(PubResponse::success(rel.packet_id)))
                        .await;
                }
                other => return Err(format!("subscriber {i}: unexpected {other:?}")),
            }
        }
        let want: Vec<String> = (1..=plan.messages)
            .map(|n| format!("{round}:{n}"))
            .collect();
        if got != want {
            return Err(format!("subscriber {i}: got {got:?}, expected {want:?}"));
        }
        Ok(())
    }

    /// Runs `plan` on `broker`; the errors of every round, if any.
    pub(crate) async fn run(broker: &TestBroker, plan: Plan) -> Vec<String> {
        let addr = broker.addr;
        let mut errors = Vec::new();
        let started = Instant::now();
        for round in 0..plan.rounds {
            let mut subscribers = Vec::new();
            for i in 0..plan.pairs {
                let (protocol, rm) = match hold_of(i) {
                    Some(_) => (Protocol::V5, Some(1)),
                    None if i % 4 == 1 => (Protocol::V5, None),
                    None => (Protocol::V311, None),
                };
                let mut raw = connect(addr, &format!("stress-sub-{i}"), protocol, &plan, rm).await;
                let granted = raw
                    .subscribe(&format!("stress{i}/t"), QoS::ExactlyOnce)
                    .await;
                assert_eq!(granted, vec![ReasonCode::GRANTED_QOS_2]);
                subscribers.push(tokio::spawn(subscriber(raw, i, round, plan)));
            }
            let publishers: Vec<_> = (0..plan.pairs)
                .map(|i| tokio::spawn(publisher(addr, i, round, plan)))
                .collect();
            let all = async {
                let mut results = Vec::new();
                for task in publishers.into_iter().chain(subscribers) {
                    results.push(
                        task.await
                            .map_err(|e| format!("task failed: {e}"))
                            .and_then(|r| r),
                    );
                }
                results
            };
            match tokio::time::timeout(plan.round_bound(), all).await {
                Ok(results) => errors.extend(results.into_iter().filter_map(Result::err)),
                Err(_) => errors.push(format!(
                    "round {round} did not end within {:?}",
                    plan.round_bound()
                )),
            }
            if !errors.is_empty() {
                errors.insert(
                    0,
                    format!(
                        "round {round} of {} ({:?} in)",
                        plan.rounds,
                        started.elapsed()
                    ),
                );
                break;
            }
        }
        errors
    }
}

/// [MQTT-4.3.3-8] The receiver of a QoS 2 PUBLISH "MUST respond with a PUBREC containing the
/// Packet Identifier from the incoming PUBLISH packet, having accepted ownership of the
/// Application Message", and [MQTT-4.3.3-11] "MUST respond to a PUBREL packet by sending a
/// PUBCOMP packet containing the same Packet Identifier as the PUBREL": the broker accepts
/// ownership when it has routed the message, so neither answer waits on a subscriber. Sixteen
/// concurrent publishers, each sending QoS 2 messages in sequence to its own topic with one
/// QoS 2 subscriber, half of those MQTT 5 with Receive Maximum 1 withholding every PUBREC for
/// 200 to 500 ms: every PUBREC and every PUBCOMP comes within a second of the PUBLISH or
/// PUBREL that asks for it, and every subscriber gets its messages once, in order
/// ([MQTT-4.6.0-6] within a topic). `STRESS_PAIRS`, `STRESS_MESSAGES` and `STRESS_ROUNDS`
/// make it wider and longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_handshakes_never_wait_on_slow_subscribers() {
    let broker = TestBroker::default_broker();
    let errors = stress::run(&broker, stress::Plan::from_env(false, false)).await;
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// As `qos2_handshakes_never_wait_on_slow_subscribers`, with persistent sessions (Clean
/// Start 0, Session Expiry 60 s) for publishers and subscribers, so that routes, inbound ids
/// and releases go through the store (persistence is on in the test settings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_handshakes_of_persistent_sessions_never_wait_on_slow_subscribers() {
    let broker = TestBroker::default_broker();
    let errors = stress::run(&broker, stress::Plan::from_env(true, false)).await;
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
/// As `qos2_handshakes_of_persistent_sessions_never_wait_on_slow_subscribers`, with publishers
/// that reconnect under the same client id in the middle of their exchanges: before the PUBREC
/// (then resending the PUBLISH with DUP) and between PUBREC and PUBREL. [MQTT-4.3.3-10]
/// "Until it has received the corresponding PUBREL packet, the receiver MUST acknowledge any
/// subsequent PUBLISH packet with the same Packet Identifier by sending a PUBREC": one PUBREC
/// for the resend, on the new connection, within a second (the PUBREC owed to the old
/// connection used to be sent on the new one too, answering one PUBLISH twice), and PUBCOMP
/// for a PUBREL on the new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_handshakes_across_publisher_reconnects_never_wait_on_slow_subscribers() {
    let broker = TestBroker::default_broker();
    let errors = stress::run(&broker, stress::Plan::from_env(true, true)).await;
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
