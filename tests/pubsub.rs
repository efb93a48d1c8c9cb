//! Publish / subscribe end to end with real clients (rumqttc v4 and v5) and raw bytes:
//! wildcards, fan-out, unsubscribe, `$` topics, QoS 1 and 2 inbound acknowledgements.

mod common;

use common::raw::{pid, publish, Raw};
use common::*;
use starling_proto::{Packet, Protocol, PubResponse, QoS, ReasonCode, TopicFilter, Unsubscribe};

async fn expect_publish(raw: &mut Raw, topic: &str, payload: &[u8]) {
    match raw.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!(p.topic.as_str(), topic);
            assert_eq!(&p.payload[..], payload);
        }
        other => panic!("expected PUBLISH on {topic}, got {other:?}"),
    }
}

/// A v3.1.1 client's QoS 0 message reaches a v5 subscriber on `a/#`, as in the issue's
/// mosquitto_sub / mosquitto_pub check.
#[tokio::test]
async fn v311_publish_reaches_v5_wildcard_subscriber() {
    let broker = TestBroker::default_broker();
    let (sub, mut sub_loop) = rumqttc::v5::AsyncClient::new(v5_options(&broker, "sub5"), 10);
    v5_until(&mut sub_loop, |e| match e {
        rumqttc::v5::Event::Incoming(rumqttc::v5::Incoming::ConnAck(_)) => Some(()),
        _ => None,
    })
    .await;
    sub.subscribe("a/#", rumqttc::v5::mqttbytes::QoS::AtMostOnce)
        .await
        .expect("subscribe");
    v5_until(&mut sub_loop, |e| match e {
        rumqttc::v5::Event::Incoming(rumqttc::v5::Incoming::SubAck(_)) => Some(()),
        _ => None,
    })
    .await;

    let (publisher, pub_loop) = rumqttc::AsyncClient::new(v4_options(&broker, "pub4"), 10);
    let _driver = v4_drive(pub_loop);
    publisher
        .publish("a/b", rumqttc::QoS::AtMostOnce, false, "hi")
        .await
        .expect("publish");

    let (topic, payload) = v5_until(&mut sub_loop, |e| match e {
        rumqttc::v5::Event::Incoming(rumqttc::v5::Incoming::Publish(p)) => {
            Some((p.topic.clone(), p.payload.clone()))
        }
        _ => None,
    })
    .await;
    assert_eq!(&topic[..], b"a/b");
    assert_eq!(&payload[..], b"hi");
}

/// A v5 publisher reaches a v3.1.1 subscriber on a `+` filter.
#[tokio::test]
async fn v5_publish_reaches_v4_single_level_wildcard_subscriber() {
    let broker = TestBroker::default_broker();
    let (sub, mut sub_loop) = rumqttc::AsyncClient::new(v4_options(&broker, "sub4"), 10);
    sub.subscribe("sensors/+/temp", rumqttc::QoS::AtMostOnce)
        .await
        .expect("subscribe");
    v4_until(&mut sub_loop, |e| match e {
        rumqttc::Event::Incoming(rumqttc::Incoming::SubAck(_)) => Some(()),
        _ => None,
    })
    .await;

    let (publisher, pub_loop) = rumqttc::v5::AsyncClient::new(v5_options(&broker, "pub5"), 10);
    let _driver = v5_drive(pub_loop);
    publisher
        .publish(
            "sensors/kitchen/humidity",
            rumqttc::v5::mqttbytes::QoS::AtMostOnce,
            false,
            "no",
        )
        .await
        .expect("publish");
    publisher
        .publish(
            "sensors/kitchen/temp",
            rumqttc::v5::mqttbytes::QoS::AtMostOnce,
            false,
            "21.5",
        )
        .await
        .expect("publish");

    let publish = v4_until(&mut sub_loop, |e| match e {
        rumqttc::Event::Incoming(rumqttc::Incoming::Publish(p)) => Some(p.clone()),
        _ => None,
    })
    .await;
    assert_eq!(publish.topic, "sensors/kitchen/temp");
    assert_eq!(&publish.payload[..], b"21.5");
}

/// Every matching subscriber gets a copy; a non-matching one gets none.
#[tokio::test]
async fn a_message_fans_out_to_every_matching_subscriber() {
    let broker = TestBroker::default_broker();
    let mut subs = Vec::new();
    for (i, filter) in ["a/b", "a/+", "a/#", "#", "+/b"].iter().enumerate() {
        let (mut raw, _) = Raw::connected(broker.addr, Protocol::V311, &format!("s{i}")).await;
        assert_eq!(
            raw.subscribe(filter, QoS::AtMostOnce).await,
            vec![ReasonCode::GRANTED_QOS_0]
        );
        subs.push(raw);
    }
    let (mut other, _) = Raw::connected(broker.addr, Protocol::V311, "other").await;
    other.subscribe("a/c", QoS::AtMostOnce).await;

    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "p").await;
    publisher
        .send_packet(&publish("a/b", QoS::AtMostOnce, None, "x"))
        .await;
    for sub in &mut subs {
        expect_publish(sub, "a/b", b"x").await;
    }
    other.expect_silence(300).await;
}

/// [MQTT-4.7.2-1] The Server MUST NOT match Topic Filters starting with a wildcard character
/// (# or +) with Topic Names beginning with a $ character.
#[tokio::test]
async fn dollar_topics_are_not_matched_by_leading_wildcards() {
    let broker = TestBroker::default_broker();
    let (mut hash, _) = Raw::connected(broker.addr, Protocol::V311, "hash").await;
    hash.subscribe("#", QoS::AtMostOnce).await;
    let (mut plus, _) = Raw::connected(broker.addr, Protocol::V311, "plus").await;
    plus.subscribe("+/x", QoS::AtMostOnce).await;
    let (mut explicit, _) = Raw::connected(broker.addr, Protocol::V311, "explicit").await;
    explicit.subscribe("$app/#", QoS::AtMostOnce).await;

    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "p").await;
    publisher
        .send_packet(&publish("$app/x", QoS::AtMostOnce, None, "d"))
        .await;
    expect_publish(&mut explicit, "$app/x", b"d").await;
    hash.expect_silence(300).await;
    plus.expect_silence(100).await;
}

/// After UNSUBACK no more messages arrive for the filter ([MQTT-3.10.4-2]).
#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let broker = TestBroker::default_broker();
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V5, "sub").await;
    sub.subscribe("t/#", QoS::AtMostOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    publisher
        .send_packet(&publish("t/1", QoS::AtMostOnce, None, "1"))
        .await;
    expect_publish(&mut sub, "t/1", b"1").await;

    sub.send_packet(&Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(7),
        properties: None,
        filters: vec![TopicFilter::new("t/#").expect("filter")],
    }))
    .await;
    match sub.recv().await {
        Some(Packet::UnsubAck(ack)) => {
            assert_eq!(ack.packet_id, pid(7));
            assert_eq!(ack.reasons, vec![ReasonCode::SUCCESS]);
        }
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    publisher
        .send_packet(&publish("t/2", QoS::AtMostOnce, None, "2"))
        .await;
    sub.expect_silence(300).await;
}

/// MQTT 5 UNSUBACK says 0x11 for a filter that was not subscribed.
#[tokio::test]
async fn unsubscribe_of_unknown_filter_reports_no_subscription_existed() {
    let broker = TestBroker::default_broker();
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V5, "sub").await;
    sub.send_packet(&Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(3),
        properties: None,
        filters: vec![TopicFilter::new("never").expect("filter")],
    }))
    .await;
    match sub.recv().await {
        Some(Packet::UnsubAck(ack)) => {
            assert_eq!(ack.reasons, vec![ReasonCode::NO_SUBSCRIPTION_EXISTED])
        }
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
}

/// [MQTT-3.3.4-1] The receiver of a PUBLISH Packet MUST respond according to the QoS:
/// PUBACK for QoS 1, PUBREC for QoS 2, then PUBCOMP for the PUBREL.
#[tokio::test]
async fn qos1_and_qos2_publishes_are_acknowledged_and_routed() {
    let broker = TestBroker::default_broker();
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V311, "sub").await;
    sub.subscribe("q/#", QoS::AtMostOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "pub").await;

    publisher
        .send_packet(&publish("q/1", QoS::AtLeastOnce, Some(10), "one"))
        .await;
    assert_eq!(
        publisher.recv().await,
        Some(Packet::PubAck(PubResponse::success(pid(10))))
    );
    expect_publish(&mut sub, "q/1", b"one").await;

    publisher
        .send_packet(&publish("q/2", QoS::ExactlyOnce, Some(11), "two"))
        .await;
    assert_eq!(
        publisher.recv().await,
        Some(Packet::PubRec(PubResponse::success(pid(11))))
    );
    publisher
        .send_packet(&Packet::PubRel(PubResponse::success(pid(11))))
        .await;
    assert_eq!(
        publisher.recv().await,
        Some(Packet::PubComp(PubResponse::success(pid(11))))
    );
    expect_publish(&mut sub, "q/2", b"two").await;
}

/// [MQTT-4.3.3-10] A QoS 2 PUBLISH resent before PUBREL is acknowledged again but not
/// delivered onwards twice.
#[tokio::test]
async fn a_resent_qos2_publish_is_routed_once() {
    let broker = TestBroker::default_broker();
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V5, "sub").await;
    sub.subscribe("once", QoS::AtMostOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    let mut packet = publish("once", QoS::ExactlyOnce, Some(5), "x");
    publisher.send_packet(&packet).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubRec(_))));
    if let Packet::Publish(p) = &mut packet {
        p.dup = true;
    }
    publisher.send_packet(&packet).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubRec(_))));
    expect_publish(&mut sub, "once", b"x").await;
    sub.expect_silence(300).await;
}

/// [MQTT-3.12.4-1] The Server MUST send a PINGRESP packet in response to a PINGREQ packet.
#[tokio::test]
async fn pingreq_gets_pingresp() {
    let broker = TestBroker::default_broker();
    for protocol in [Protocol::V31, Protocol::V311, Protocol::V5] {
        let (mut raw, _) = Raw::connected(broker.addr, protocol, "pinger").await;
        raw.send_packet(&Packet::PingReq).await;
        assert_eq!(raw.recv().await, Some(Packet::PingResp), "{protocol}");
    }
}

/// A client that DISCONNECTs gets its connection closed by the broker, quietly.
#[tokio::test]
async fn disconnect_closes_the_connection() {
    let broker = TestBroker::default_broker();
    let (mut raw, _) = Raw::connected(broker.addr, Protocol::V5, "bye").await;
    raw.send_packet(&Packet::Disconnect(
        starling_proto::Disconnect::with_reason(ReasonCode::NORMAL_DISCONNECTION),
    ))
    .await;
    raw.expect_closed().await;
}

/// Publishes a client sent before its DISCONNECT are routed before its connection goes, even
/// when they arrive in one burst with the DISCONNECT (the connection may not drop publishes
/// still waiting for a busy shard).
#[tokio::test]
async fn qos0_publishes_sent_just_before_disconnect_are_all_delivered() {
    const SUBSCRIBERS: usize = 200;
    const MESSAGES: usize = 300;
    let broker = TestBroker::default_broker();
    let mut subs = Vec::new();
    for i in 0..SUBSCRIBERS {
        let (mut raw, _) = Raw::connected(broker.addr, Protocol::V311, &format!("s{i}")).await;
        raw.subscribe("burst", QoS::AtMostOnce).await;
        subs.push(raw);
    }
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "p").await;
    let mut burst: Vec<Packet> = (0..MESSAGES)
        .map(|i| publish("burst", QoS::AtMostOnce, None, i.to_string()))
        .collect();
    burst.push(Packet::Disconnect(starling_proto::Disconnect::with_reason(
        ReasonCode::NORMAL_DISCONNECTION,
    )));
    publisher.send_together(&burst).await;
    drop(publisher);
    for sub in subs.iter_mut().step_by(SUBSCRIBERS / 10) {
        for i in 0..MESSAGES {
            expect_publish(sub, "burst", i.to_string().as_bytes()).await;
        }
    }
}

/// [MQTT-4.6.0-6] A burst far larger than what a session takes from its inbox in one turn
/// (256 deliveries) reaches the subscriber whole and in publish order: the session wakes itself
/// for what it left. (Usually more than 256 wait at once here, not always; the inbox's
/// put-back rule itself is unit-tested in `msg::inbox_tests`.)
#[tokio::test]
async fn a_large_burst_reaches_a_subscriber_whole_and_in_order() {
    let broker = TestBroker::start("", "[session]\nmax_queued_messages = 10000");
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V311, "burst-sub").await;
    sub.subscribe("burst", QoS::AtMostOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "burst-pub").await;
    let burst: Vec<Packet> = (0..3000)
        .map(|n| publish("burst", QoS::AtMostOnce, None, n.to_string()))
        .collect();
    publisher.send_together(&burst).await;
    for n in 0..3000 {
        let p = sub.recv_publish().await;
        assert_eq!(
            std::str::from_utf8(&p.payload).expect("utf8"),
            n.to_string()
        );
    }
}
