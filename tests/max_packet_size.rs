//! The client's Maximum Packet Size (MQTT 5), outbound: every PUBLISH larger than it is
//! discarded for that client as if it had been sent ([MQTT-3.1.2-25]), whatever makes it large
//! (payload, properties) and however it reaches the client (live, queued while offline,
//! resent on reconnect); everything that fits is sent, at every QoS. (The broker's own
//! `maximumPacketSize`, inbound, is tested in `limits.rs`.)

mod common;

use common::raw::{connect_with, publish, Raw};
use common::*;
use starling_proto::{Packet, Properties, Protocol, QoS, ReasonCode};

/// A persistent MQTT 5 client announcing `max` as its Maximum Packet Size.
async fn client(broker: &TestBroker, id: &str, max: u32) -> (Raw, bool) {
    let connect = connect_with(Protocol::V5, id, |c| {
        c.clean_start = false;
        c.properties = Some(Box::new(Properties {
            maximum_packet_size: Some(max),
            session_expiry_interval: Some(60),
            ..Properties::default()
        }))
    });
    let (raw, ack) = Raw::connect(broker.addr, Protocol::V5, &connect).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    (raw, ack.session_present)
}

/// [MQTT-3.1.2-25] discards only what exceeds the limit: a small QoS 0 message to a client
/// with a small Maximum Packet Size arrives (at QoS 0 and downgraded from QoS 1).
#[tokio::test]
async fn qos0_messages_under_a_small_maximum_packet_size_are_delivered() {
    let broker = TestBroker::default_broker();
    let (mut sub, _) = client(&broker, "small-q0", 100).await;
    sub.subscribe("q0", QoS::AtMostOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    publisher
        .send_packet(&publish("q0", QoS::AtMostOnce, None, "zero"))
        .await;
    publisher
        .send_packet(&publish("q0", QoS::AtLeastOnce, Some(1), "one"))
        .await;
    assert_eq!(&sub.recv_publish().await.payload[..], b"zero");
    assert_eq!(&sub.recv_publish().await.payload[..], b"one");
}

/// [MQTT-3.1.2-25] Properties count: a ten-byte payload with 500 bytes of User Properties
/// does not go to a client whose maximum is 200; the next small message does.
#[tokio::test]
async fn a_message_made_large_by_its_properties_is_not_sent() {
    let broker = TestBroker::default_broker();
    let (mut sub, _) = client(&broker, "small-props", 200).await;
    sub.subscribe("p", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    let mut heavy = publish("p", QoS::AtLeastOnce, Some(1), "ten bytes!");
    if let Packet::Publish(p) = &mut heavy {
        p.properties = Some(Box::new(Properties {
            user_properties: vec![("k".to_owned(), "v".repeat(500))],
            ..Properties::default()
        }));
    }
    publisher.send_packet(&heavy).await;
    publisher
        .send_packet(&publish("p", QoS::AtLeastOnce, Some(2), "light"))
        .await;
    let p = sub.recv_publish().await;
    assert_eq!(&p.payload[..], b"light");
    sub.puback(&p).await;
    sub.expect_silence(200).await;
}

/// [MQTT-3.1.2-25] Messages queued while the client was offline are checked against the
/// maximum it announces when it comes back.
#[tokio::test]
async fn messages_queued_offline_are_checked_against_the_maximum_announced_on_return() {
    let broker = TestBroker::default_broker();
    let (mut sub, _) = client(&broker, "returns-small", 10_000).await;
    sub.subscribe("q", QoS::AtLeastOnce).await;
    drop(sub);
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    publisher
        .send_packet(&publish("q", QoS::AtLeastOnce, Some(1), vec![7u8; 500]))
        .await;
    publisher
        .send_packet(&publish("q", QoS::AtLeastOnce, Some(2), "small"))
        .await;
    for _ in 0..2 {
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    }
    let (mut sub, present) = client(&broker, "returns-small", 100).await;
    assert!(present);
    let p = sub.recv_publish().await;
    assert_eq!(&p.payload[..], b"small");
    sub.puback(&p).await;
    sub.expect_silence(200).await;
    let info = broker.session_info("returns-small").await.expect("session");
    assert_eq!(info.dropped_too_large, 1);
}

/// [MQTT-3.1.2-25] An unacknowledged message is not resent to a client that reconnects with a
/// maximum it exceeds: it is discarded as if sent, and its place in the in-flight window is
/// free again (Receive Maximum 1 here, so the next message shows it).
#[tokio::test]
async fn an_unacknowledged_message_over_the_new_maximum_is_not_resent() {
    let broker = TestBroker::default_broker();
    let connect = |max: u32| {
        connect_with(Protocol::V5, "shrinking", move |c| {
            c.clean_start = false;
            c.properties = Some(Box::new(Properties {
                maximum_packet_size: Some(max),
                receive_maximum: Some(1),
                session_expiry_interval: Some(60),
                ..Properties::default()
            }))
        })
    };
    let (mut sub, _) = Raw::connect(broker.addr, Protocol::V5, &connect(10_000)).await;
    sub.subscribe("r", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    publisher
        .send_packet(&publish("r", QoS::AtLeastOnce, Some(1), vec![7u8; 500]))
        .await;
    assert_eq!(sub.recv_publish().await.payload.len(), 500);
    drop(sub); // not acknowledged

    let (mut sub, ack) = Raw::connect(broker.addr, Protocol::V5, &connect(100)).await;
    assert!(ack.session_present);
    publisher
        .send_packet(&publish("r", QoS::AtLeastOnce, Some(2), "next"))
        .await;
    let p = sub.recv_publish().await;
    assert_eq!(&p.payload[..], b"next");
    assert!(!p.dup);
}
