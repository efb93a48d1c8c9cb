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
