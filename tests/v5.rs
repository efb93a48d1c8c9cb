//! The MQTT 5 features clients rely on: shared subscriptions, No Local, Message Expiry,
//! Request/Response and user properties passed through unchanged, CONNACK capabilities that
//! tell the truth, DISCONNECT rules, reason strings.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use common::raw::{connect_with, pid, publish, retained, session_expiry, Raw};
use common::*;
use starling_proto::{
    Disconnect, Packet, Properties, Protocol, Publish, QoS, ReasonCode, Subscribe,
    SubscriptionOptions, TopicFilter, TopicName,
};

fn publish_with(
    topic: &str,
    qos: QoS,
    id: Option<u16>,
    payload: &'static str,
    props: Properties,
) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: TopicName::new(topic).expect("topic"),
        packet_id: id.map(pid),
        properties: Some(Box::new(props)),
        payload: Bytes::from_static(payload.as_bytes()),
    })
}

async fn subscribe_opts(raw: &mut Raw, filter: &str, options: SubscriptionOptions) {
    raw.send_packet(&Packet::Subscribe(Subscribe {
        packet_id: pid(2),
        properties: None,
        filters: vec![(TopicFilter::new(filter).expect("filter"), options)],
    }))
    .await;
    match raw.recv().await {
        Some(Packet::SubAck(ack)) => assert!(ack.reasons[0].is_success(), "{:?}", ack.reasons),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

async fn persistent_member(broker: &TestBroker, id: &str) -> Raw {
    let connect = connect_with(Protocol::V5, id, |c| {
        c.clean_start = false;
        c.properties = session_expiry(60);
    });
    Raw::connect(broker.addr, Protocol::V5, &connect).await.0
}

/// MQTT 5 §4.8.2: each message on a shared subscription goes to one member of the group;
/// ordinary subscribers still get every message.
#[tokio::test]
async fn a_shared_subscription_delivers_each_message_to_one_member() {
    let broker = TestBroker::default_broker();
    let mut a = Raw::connected(broker.addr, Protocol::V5, "a").await.0;
    let mut b = Raw::connected(broker.addr, Protocol::V5, "b").await.0;
    a.subscribe("$share/workers/jobs/#", QoS::AtLeastOnce).await;
    b.subscribe("$share/workers/jobs/#", QoS::AtLeastOnce).await;
    let mut all = Raw::connected(broker.addr, Protocol::V5, "all").await.0;
    all.subscribe("jobs/#", QoS::AtMostOnce).await;

    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    for n in 0..20u16 {
        publisher
            .send_packet(&publish(
                "jobs/x",
                QoS::AtLeastOnce,
                Some(n + 1),
                n.to_string(),
            ))
            .await;
    }
    let mut seen = BTreeSet::new();
    let (mut got_a, mut got_b) = (0, 0);
    for _ in 0..20 {
        tokio::select! {
            p = a.recv_publish() => { a.puback(&p).await; got_a += 1; assert!(seen.insert(p.payload)); }
            p = b.recv_publish() => { b.puback(&p).await; got_b += 1; assert!(seen.insert(p.payload)); }
        }
    }
    assert_eq!(seen.len(), 20, "every message once");
    assert!(
        got_a > 0 && got_b > 0,
        "both members served: {got_a} / {got_b}"
    );
    a.expect_silence(200).await;
    b.expect_silence(50).await;
    for _ in 0..20 {
        all.recv_publish().await;
    }
}

/// A member that disconnects gets no more messages, and the ones it had not acknowledged go to
/// another member.
#[tokio::test]
async fn a_departing_members_unacknowledged_messages_go_to_another_member() {
    let broker = TestBroker::default_broker();
    let mut leaver = persistent_member(&broker, "leaver").await;
    leaver.subscribe("$share/g/work", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    publisher
        .send_packet(&publish("work", QoS::AtLeastOnce, Some(1), "first"))
        .await;
    assert_eq!(&leaver.recv_publish().await.payload[..], b"first");
    // Joined by a second member; the first leaves without acknowledging.
    let mut stayer = persistent_member(&broker, "stayer").await;
    stayer.subscribe("$share/g/work", QoS::AtLeastOnce).await;
    drop(leaver);
    let p = stayer.recv_publish().await;
    assert_eq!(&p.payload[..], b"first", "handed over");
    stayer.puback(&p).await;
    for n in 2..=5u16 {
        publisher
            .send_packet(&publish("work", QoS::AtLeastOnce, Some(n), n.to_string()))
            .await;
        let p = stayer.recv_publish().await;
        assert_eq!(
            p.payload,
            Bytes::from(n.to_string()),
            "the offline member gets none"
        );
        stayer.puback(&p).await;
    }
    let mut back = persistent_member(&broker, "leaver").await;
    back.expect_silence(300).await;
}

/// Retained messages are not sent when a shared subscription is made (MQTT 5 §4.8.2).
#[tokio::test]
async fn a_shared_subscription_gets_no_retained_messages() {
    let broker = TestBroker::default_broker();
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    publisher
        .send_packet(&retained("kept", QoS::AtMostOnce, None, "r"))
        .await;
    publisher.send_packet(&Packet::PingReq).await;
    assert_eq!(publisher.recv().await, Some(Packet::PingResp));
    let mut member = Raw::connected(broker.addr, Protocol::V5, "m").await.0;
    member.subscribe("$share/g/kept", QoS::AtMostOnce).await;
    member.expect_silence(300).await;
}

/// [MQTT-3.8.3-3] No Local: a client's own messages are not sent back on that subscription.
#[tokio::test]
async fn no_local_keeps_a_clients_own_messages_from_it() {
    let broker = TestBroker::default_broker();
    let (mut me, _) = Raw::connected(broker.addr, Protocol::V5, "me").await;
    subscribe_opts(
        &mut me,
        "chat",
        SubscriptionOptions {
            no_local: true,
            ..SubscriptionOptions::default()
        },
    )
    .await;
    let (mut other, _) = Raw::connected(broker.addr, Protocol::V5, "other").await;
    subscribe_opts(&mut other, "chat", SubscriptionOptions::default()).await;
    me.send_packet(&publish("chat", QoS::AtMostOnce, None, "mine"))
        .await;
    assert_eq!(&other.recv_publish().await.payload[..], b"mine");
    me.expect_silence(300).await;
    other
        .send_packet(&publish("chat", QoS::AtMostOnce, None, "theirs"))
        .await;
    assert_eq!(&me.recv_publish().await.payload[..], b"theirs");
}

/// [MQTT-3.3.2-5] A message whose expiry passed while queued for an offline client is not
/// delivered; [MQTT-3.3.2-6] one still valid carries the remaining interval.
#[tokio::test]
async fn message_expiry_applies_to_queued_messages() {
    let broker = TestBroker::default_broker();
    let mut sub = persistent_member(&broker, "queued").await;
    sub.subscribe("exp", QoS::AtLeastOnce).await;
    drop(sub);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    let expiring = |secs| Properties {
        message_expiry_interval: Some(secs),
        ..Properties::default()
    };
    publisher
        .send_packet(&publish_with(
            "exp",
            QoS::AtLeastOnce,
            Some(1),
            "short",
            expiring(1),
        ))
        .await;
    publisher
        .send_packet(&publish_with(
            "exp",
            QoS::AtLeastOnce,
            Some(2),
            "long",
            expiring(100),
        ))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut sub = persistent_member(&broker, "queued").await;
    let p = sub.recv_publish().await;
    assert_eq!(&p.payload[..], b"long");
    let left = p
        .properties
        .as_ref()
        .and_then(|p| p.message_expiry_interval)
        .expect("interval");
    assert!((98..100).contains(&left), "remaining interval {left}");
    sub.puback(&p).await;
    sub.expect_silence(200).await;
    let info = broker.session_info("queued").await.expect("session");
    assert_eq!(info.drops.expired, 1);
}

/// Response Topic, Correlation Data, User Properties (order kept), Payload Format Indicator and
/// Content Type reach the subscriber unchanged ([MQTT-3.3.2-15], [MQTT-3.3.2-16],
/// [MQTT-3.3.2-17], [MQTT-3.3.2-18], [MQTT-3.3.2-20]).
#[tokio::test]
async fn publish_properties_are_passed_through_unchanged() {
    let broker = TestBroker::default_broker();
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V5, "sub").await;
    sub.subscribe("req", QoS::AtMostOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    let sent = Properties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".to_owned()),
        response_topic: Some("reply/to/me".to_owned()),
        correlation_data: Some(Bytes::from_static(&[1, 2, 3])),
        user_properties: vec![
            ("b".to_owned(), "2".to_owned()),
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "3".to_owned()),
        ],
        ..Properties::default()
    };
    publisher
        .send_packet(&publish_with(
            "req",
            QoS::AtMostOnce,
            None,
            "{}",
            sent.clone(),
        ))
        .await;
    let got = sub.recv_publish().await.properties.expect("properties");
    assert_eq!(*got, sent);
}

/// CONNACK tells the truth: retained messages, wildcards, subscription identifiers and shared
/// subscriptions are available (absent properties mean "available") and QoS 2 is served.
#[tokio::test]
async fn connack_capabilities_tell_the_truth() {
    let broker = TestBroker::default_broker();
    let (_raw, ack) = Raw::connected(broker.addr, Protocol::V5, "caps").await;
    let p = ack.properties.expect("properties");
    assert_eq!(p.retain_available, None);
    assert_eq!(p.wildcard_subscription_available, None);
    assert_eq!(p.subscription_identifier_available, None);
    assert_eq!(p.shared_subscription_available, None);
    assert_eq!(p.maximum_qos, None);
}

/// [MQTT-3.14.2-2] A DISCONNECT may not set a Session Expiry Interval when CONNECT had 0: the
/// broker answers DISCONNECT 0x82 with a reason string.
#[tokio::test]
async fn disconnect_cannot_revive_a_session_that_had_expiry_zero() {
    let broker = TestBroker::default_broker();
    let (mut raw, _) = Raw::connected(broker.addr, Protocol::V5, "zero").await;
    raw.send_packet(&Packet::Disconnect(Disconnect {
        reason: ReasonCode::NORMAL_DISCONNECTION,
        properties: session_expiry(60),
    }))
    .await;
    match raw.recv().await {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason, ReasonCode::PROTOCOL_ERROR);
            assert!(
                d.properties.and_then(|p| p.reason_string).is_some(),
                "reason string"
            );
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}

/// A DISCONNECT may shorten a session's expiry: 0 ends it with the connection.
#[tokio::test]
async fn disconnect_with_expiry_zero_ends_a_persistent_session() {
    let broker = TestBroker::default_broker();
    let connect = connect_with(Protocol::V5, "shorten", |c| {
        c.clean_start = false;
        c.properties = session_expiry(60);
    });
    let (mut raw, _) = Raw::connect(broker.addr, Protocol::V5, &connect).await;
    raw.send_packet(&Packet::Disconnect(Disconnect {
        reason: ReasonCode::NORMAL_DISCONNECTION,
        properties: session_expiry(0),
    }))
    .await;
    raw.expect_closed().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_raw, ack) = Raw::connect(broker.addr, Protocol::V5, &connect).await;
    assert!(!ack.session_present);
}

/// [MQTT-3.3.4-6] A PUBLISH from a client must not carry a Subscription Identifier.
#[tokio::test]
async fn a_client_publish_with_a_subscription_identifier_is_a_protocol_error() {
    let broker = TestBroker::default_broker();
    let (mut raw, _) = Raw::connected(broker.addr, Protocol::V5, "bad").await;
    let props = Properties {
        subscription_identifiers: vec![5],
        ..Properties::default()
    };
    raw.send_packet(&publish_with("t", QoS::AtMostOnce, None, "x", props))
        .await;
    raw.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}

/// [MQTT-3.14.2-3] The Reason String of a DISCONNECT is left out when it would make the packet
/// larger than the client's Maximum Packet Size (here 10 bytes); the reason code still goes.
#[tokio::test]
async fn a_disconnect_reason_string_is_left_out_past_the_clients_maximum_packet_size() {
    let broker = TestBroker::default_broker();
    let connect = connect_with(Protocol::V5, "tiny", |c| {
        c.properties = Some(Box::new(Properties {
            maximum_packet_size: Some(10),
            ..Properties::default()
        }))
    });
    let (mut raw, _) = Raw::connect(broker.addr, Protocol::V5, &connect).await;
    let props = Properties {
        subscription_identifiers: vec![5],
        ..Properties::default()
    };
    raw.send_packet(&publish_with("t", QoS::AtMostOnce, None, "x", props))
        .await;
    match raw.recv().await {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason, ReasonCode::PROTOCOL_ERROR);
            assert_eq!(d.properties, None, "no Reason String");
        }
        other => panic!("expected DISCONNECT 0x82, got {other:?}"),
    }
    raw.expect_closed().await;
}

/// [MQTT-3.2.2-19] The same for a refusing CONNACK: its reason code, without the Reason
/// String that would exceed the client's Maximum Packet Size.
#[tokio::test]
async fn a_connack_reason_string_is_left_out_past_the_clients_maximum_packet_size() {
    let broker = TestBroker::default_broker();
    let connect = connect_with(Protocol::V5, "tiny", |c| {
        c.properties = Some(Box::new(Properties {
            maximum_packet_size: Some(10),
            authentication_data: Some(Bytes::from_static(b"no method")),
            ..Properties::default()
        }))
    });
    let (mut raw, ack) = Raw::connect(broker.addr, Protocol::V5, &connect).await;
    assert_eq!(ack.code, ReasonCode::PROTOCOL_ERROR);
    assert_eq!(ack.properties, None, "no Reason String");
    raw.expect_closed().await;
}

/// [MQTT-3.3.2-4] Payload Format Indicator 1 with a payload that is not UTF-8: 0x99.
#[tokio::test]
async fn a_payload_not_matching_its_format_indicator_is_refused() {
    let broker = TestBroker::default_broker();
    let (mut raw, _) = Raw::connected(broker.addr, Protocol::V5, "bad").await;
    raw.send_packet(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: TopicName::new("t").expect("topic"),
        packet_id: None,
        properties: Some(Box::new(Properties {
            payload_format_indicator: Some(1),
            ..Properties::default()
        })),
        payload: Bytes::from_static(&[0xFF, 0xFE]),
    }))
    .await;
    raw.expect_disconnect(ReasonCode::PAYLOAD_FORMAT_INVALID)
        .await;
}

/// A protocol violation's DISCONNECT carries a reason string saying what was wrong.
#[tokio::test]
async fn disconnects_for_bad_packets_carry_a_reason_string() {
    let broker = TestBroker::default_broker();
    let (mut raw, _) = Raw::connected(broker.addr, Protocol::V5, "bad").await;
    raw.send(&[0x30, 0x04, 0x00, 0x01, b'#', 0x00]).await;
    match raw.recv().await {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason, ReasonCode::TOPIC_NAME_INVALID);
            let text = d
                .properties
                .and_then(|p| p.reason_string)
                .expect("reason string");
            assert!(text.contains("topic"), "{text}");
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}

/// MQTT 5 PUBACK says 0x10 (No matching subscribers) when a QoS 1 message matched nobody, and
/// 0x00 when it reached someone.
#[tokio::test]
async fn puback_reports_no_matching_subscribers() {
    let broker = TestBroker::default_broker();
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    publisher
        .send_packet(&publish("nobody/home", QoS::AtLeastOnce, Some(1), "x"))
        .await;
    match publisher.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason, ReasonCode::NO_MATCHING_SUBSCRIBERS),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V5, "sub").await;
    sub.subscribe("nobody/#", QoS::AtMostOnce).await;
    publisher
        .send_packet(&publish("nobody/home", QoS::AtLeastOnce, Some(2), "x"))
        .await;
    match publisher.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason, ReasonCode::SUCCESS),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

/// A shared subscription's only member that drops before acknowledging keeps the message: it
/// has nowhere else to go, and is redelivered when the member returns (never lost).
#[tokio::test]
async fn a_sole_shared_member_gets_its_unacknowledged_message_back() {
    let broker = TestBroker::default_broker();
    let mut member = persistent_member(&broker, "only").await;
    member.subscribe("$share/g/solo", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    publisher
        .send_packet(&publish("solo", QoS::AtLeastOnce, Some(1), "keep me"))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    assert_eq!(&member.recv_publish().await.payload[..], b"keep me");
    drop(member); // no PUBACK
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut member = persistent_member(&broker, "only").await;
    let p = member.recv_publish().await;
    assert_eq!(&p.payload[..], b"keep me");
}
