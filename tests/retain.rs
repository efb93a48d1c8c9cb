//! Retained messages: stored per topic, sent to new subscribers (wildcards too) with RETAIN=1,
//! cleared by an empty payload, Retain Handling and Retain As Published (MQTT 5), expiry, and a
//! `#` subscription over 10 000 retained topics.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::raw::{pid, publish, retained, Raw};
use common::*;
use starling_proto::{
    Packet, Properties, Protocol, Publish, QoS, ReasonCode, RetainHandling, Subscribe,
    SubscriptionOptions, TopicFilter, TopicName,
};

/// Publishes and waits until the broker has handled it (PINGRESP follows every earlier packet).
async fn publish_and_sync(raw: &mut Raw, packet: &Packet) {
    raw.send_packet(packet).await;
    raw.send_packet(&Packet::PingReq).await;
    loop {
        match raw.recv().await {
            Some(Packet::PingResp) => return,
            Some(_) => continue,
            None => panic!("publisher disconnected"),
        }
    }
}

async fn subscribe_with(raw: &mut Raw, filter: &str, options: SubscriptionOptions) {
    raw.send_packet(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: None,
        filters: vec![(TopicFilter::new(filter).expect("filter"), options)],
    }))
    .await;
    assert!(matches!(raw.recv().await, Some(Packet::SubAck(_))));
}

/// [MQTT-3.3.1-6] A new subscription gets the last retained message of each matching topic,
/// [MQTT-3.3.1-8] with RETAIN set.
#[tokio::test]
async fn a_new_subscriber_gets_the_last_retained_message_with_retain_set() {
    let broker = TestBroker::default_broker();
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "pub").await;
    publish_and_sync(
        &mut publisher,
        &retained("home/temp", QoS::AtMostOnce, None, "20"),
    )
    .await;
    publish_and_sync(
        &mut publisher,
        &retained("home/temp", QoS::AtMostOnce, None, "21"),
    )
    .await;
    publish_and_sync(
        &mut publisher,
        &retained("home/hum", QoS::AtMostOnce, None, "40"),
    )
    .await;

    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V311, "sub").await;
    sub.subscribe("home/temp", QoS::AtMostOnce).await;
    let p = sub.recv_publish().await;
    assert!(p.retain);
    assert_eq!(&p.payload[..], b"21");
    sub.expect_silence(200).await;

    let (mut wild, _) = Raw::connected(broker.addr, Protocol::V311, "wild").await;
    wild.subscribe("home/+", QoS::AtMostOnce).await;
    let mut got = [wild.recv_publish().await, wild.recv_publish().await];
    got.sort_by(|a, b| a.topic.as_str().cmp(b.topic.as_str()));
    assert_eq!(got[0].topic.as_str(), "home/hum");
    assert_eq!(got[1].topic.as_str(), "home/temp");
    assert!(got.iter().all(|p| p.retain));
}

/// [MQTT-3.3.1-12] A live message sent to an existing subscription has RETAIN cleared (3.1.1).
#[tokio::test]
async fn live_messages_to_existing_subscribers_have_retain_cleared() {
    let broker = TestBroker::default_broker();
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V311, "sub").await;
    sub.subscribe("live", QoS::AtMostOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "pub").await;
    publisher
        .send_packet(&retained("live", QoS::AtMostOnce, None, "now"))
        .await;
    let p = sub.recv_publish().await;
    assert!(!p.retain);
}

/// [MQTT-3.3.1-10] A retained PUBLISH with an empty payload removes the retained message.
#[tokio::test]
async fn an_empty_retained_payload_clears_the_topic() {
    let broker = TestBroker::default_broker();
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "pub").await;
    publish_and_sync(
        &mut publisher,
        &retained("gone", QoS::AtLeastOnce, Some(1), "x"),
    )
    .await;
    publish_and_sync(
        &mut publisher,
        &retained("gone", QoS::AtMostOnce, None, Bytes::new()),
    )
    .await;
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V311, "sub").await;
    sub.subscribe("gone", QoS::AtLeastOnce).await;
    sub.expect_silence(300).await;
}

/// Retained messages are sent at min(message QoS, subscription QoS).
#[tokio::test]
async fn retained_messages_keep_their_qos_up_to_the_subscription() {
    let broker = TestBroker::default_broker();
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "pub").await;
    publish_and_sync(
        &mut publisher,
        &retained("q", QoS::AtLeastOnce, Some(1), "x"),
    )
    .await;
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V311, "sub").await;
    sub.subscribe("q", QoS::ExactlyOnce).await;
    let p = sub.recv_publish().await;
    assert_eq!(p.qos, QoS::AtLeastOnce);
    assert!(p.packet_id.is_some());
}

/// MQTT 5 Retain Handling: 0 sends at every subscribe, 1 only for a new subscription, 2 never
/// ([MQTT-3.3.1-9], [MQTT-3.3.1-10], [MQTT-3.3.1-11]).
#[tokio::test]
async fn retain_handling_options_are_honoured() {
    let broker = TestBroker::default_broker();
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    publish_and_sync(&mut publisher, &retained("rh", QoS::AtMostOnce, None, "v")).await;
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V5, "sub").await;
    let opts = |rh| SubscriptionOptions {
        retain_handling: rh,
        ..SubscriptionOptions::default()
    };

    subscribe_with(&mut sub, "rh", opts(RetainHandling::DoNotSend)).await;
    sub.expect_silence(200).await;
    // The subscription exists now: "send if new" sends nothing.
    subscribe_with(&mut sub, "rh", opts(RetainHandling::SendIfNew)).await;
    sub.expect_silence(200).await;
    // "Send at subscribe" sends, even for an existing subscription.
    subscribe_with(&mut sub, "rh", opts(RetainHandling::SendAtSubscribe)).await;
    assert!(sub.recv_publish().await.retain);

    let (mut fresh, _) = Raw::connected(broker.addr, Protocol::V5, "fresh").await;
    subscribe_with(&mut fresh, "rh", opts(RetainHandling::SendIfNew)).await;
    assert!(fresh.recv_publish().await.retain);
}

/// MQTT 5 Retain As Published: live messages keep their RETAIN flag ([MQTT-3.3.1-13]).
#[tokio::test]
async fn retain_as_published_keeps_the_flag_on_live_messages() {
    let broker = TestBroker::default_broker();
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V5, "sub").await;
    subscribe_with(
        &mut sub,
        "rap",
        SubscriptionOptions {
            retain_as_published: true,
            ..SubscriptionOptions::default()
        },
    )
    .await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    publisher
        .send_packet(&retained("rap", QoS::AtMostOnce, None, "a"))
        .await;
    publisher
        .send_packet(&publish("rap", QoS::AtMostOnce, None, "b"))
        .await;
    assert!(sub.recv_publish().await.retain);
    assert!(!sub.recv_publish().await.retain);
}

/// [MQTT-3.3.2-5] A retained message whose Message Expiry Interval has passed is not sent.
#[tokio::test]
async fn an_expired_retained_message_is_not_delivered() {
    let broker = TestBroker::default_broker();
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    let expiring = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: true,
        topic: TopicName::new("exp").expect("topic"),
        packet_id: None,
        properties: Some(Box::new(Properties {
            message_expiry_interval: Some(1),
            ..Properties::default()
        })),
        payload: Bytes::from_static(b"soon gone"),
    });
    publish_and_sync(&mut publisher, &expiring).await;
    let (mut early, _) = Raw::connected(broker.addr, Protocol::V5, "early").await;
    early.subscribe("exp", QoS::AtMostOnce).await;
    let p = early.recv_publish().await;
    let left = p
        .properties
        .and_then(|p| p.message_expiry_interval)
        .expect("remaining expiry is sent");
    assert!(left <= 1);

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (mut late, _) = Raw::connected(broker.addr, Protocol::V5, "late").await;
    late.subscribe("exp", QoS::AtMostOnce).await;
    late.expect_silence(300).await;
}

/// `[retain] expiry_delay` expires retained messages that carry no expiry of their own.
#[tokio::test]
async fn retained_expiry_delay_applies_to_messages_without_expiry() {
    let broker = TestBroker::start("", "[retain]\nexpiry_delay = 500");
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "pub").await;
    publish_and_sync(&mut publisher, &retained("d", QoS::AtMostOnce, None, "x")).await;
    let (mut early, _) = Raw::connected(broker.addr, Protocol::V311, "early").await;
    early.subscribe("d", QoS::AtMostOnce).await;
    assert!(early.recv_publish().await.retain);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (mut late, _) = Raw::connected(broker.addr, Protocol::V311, "late").await;
    late.subscribe("d", QoS::AtMostOnce).await;
    late.expect_silence(300).await;
}

/// 10 000 retained topics: one `#` subscriber receives every one of them. The time taken is
/// printed (run with `--nocapture` to see it); the benchmark program measures it properly.
#[tokio::test]
async fn a_hash_subscriber_receives_all_10000_retained_messages() {
    const TOPICS: usize = 10_000;
    let broker = TestBroker::default_broker();
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "pub").await;
    let mut batch = bytes::BytesMut::new();
    for i in 0..TOPICS {
        let packet = retained(
            &format!("r/{}/{}", i % 100, i),
            QoS::AtMostOnce,
            None,
            i.to_string(),
        );
        starling_proto::encode(&packet, Protocol::V311, &mut batch).expect("encode");
    }
    publisher.send(&batch).await;
    publish_and_sync(&mut publisher, &Packet::PingReq).await;

    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V311, "all").await;
    let started = Instant::now();
    assert_eq!(
        sub.subscribe("#", QoS::AtMostOnce).await,
        vec![ReasonCode::GRANTED_QOS_0]
    );
    let mut seen = vec![false; TOPICS];
    for _ in 0..TOPICS {
        let p = sub.recv_publish().await;
        assert!(p.retain);
        let i: usize = std::str::from_utf8(&p.payload)
            .expect("utf8")
            .parse()
            .expect("number");
        seen[i] = true;
    }
    let elapsed = started.elapsed();
    assert!(
        seen.iter().all(|s| *s),
        "every retained topic delivered once"
    );
    sub.expect_silence(200).await;
    eprintln!("10 000 retained messages delivered to a # subscriber in {elapsed:?}");
}
