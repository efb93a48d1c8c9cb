//! The order of one connection's packets: a SUBSCRIBE (or UNSUBSCRIBE) takes effect before
//! anything the client sent after it, also when both arrive in one read, under many clients
//! at once.

mod common;

use common::raw::{pid, publish, Raw};
use common::*;
use starling_proto::{
    Packet, Properties, Protocol, QoS, Subscribe, SubscriptionOptions, TopicFilter, Unsubscribe,
};

fn subscribe(id: u16, filter: &str, subscription_id: Option<u32>) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        properties: subscription_id.map(|sid| {
            Box::new(Properties {
                subscription_identifiers: vec![sid],
                ..Properties::default()
            })
        }),
        filters: vec![(
            TopicFilter::new(filter).expect("filter"),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..SubscriptionOptions::default()
            },
        )],
    })
}

/// What `raw` receives until it has seen the PUBLISH packets whose payloads are `wanted`,
/// SUBACKs, UNSUBACKs and PUBACKs skipped: the publishes in the order received.
async fn publishes_until(raw: &mut Raw, last: &[u8]) -> Vec<starling_proto::Publish> {
    let mut got = Vec::new();
    loop {
        match raw.recv().await {
            Some(Packet::Publish(p)) => {
                if let Some(id) = p.packet_id {
                    raw.send_packet(&Packet::PubAck(starling_proto::PubResponse::success(id)))
                        .await;
                }
                let done = &p.payload[..] == last;
                got.push(p);
                if done {
                    return got;
                }
            }
            Some(Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PubAck(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// MQTT 3.1.1 §4.6 / MQTT 5 §4.6: the Server handles a connection's packets in order. A client
/// that subscribes and publishes to the same topic in one write receives its own QoS 0 and
/// QoS 1 messages: the PUBLISH is routed after the subscription exists. Before, the SUBSCRIBE
/// went through the Session and the PUBLISH straight to a shard, and the PUBLISH could win.
/// Sixteen clients at once, fifty rounds each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_right_after_a_subscribe_sees_the_subscription() {
    let broker = TestBroker::default_broker();
    let mut clients = Vec::new();
    for c in 0..16 {
        let addr = broker.addr;
        clients.push(tokio::spawn(async move {
            let (mut raw, _) = Raw::connected(addr, Protocol::V5, &format!("order-{c}")).await;
            for round in 0..50u16 {
                let topic = format!("order/{c}/{round}");
                raw.send_together(&[
                    subscribe(1, &topic, Some(u32::from(round) + 1)),
                    publish(&topic, QoS::AtMostOnce, None, "zero"),
                    publish(&topic, QoS::AtLeastOnce, Some(2), "one"),
                ])
                .await;
                let got = publishes_until(&mut raw, b"one").await;
                let payloads: Vec<&[u8]> = got.iter().map(|p| &p.payload[..]).collect();
                assert_eq!(payloads, [&b"zero"[..], b"one"], "client {c} round {round}");
                for p in &got {
                    let ids = p
                        .properties
                        .as_ref()
                        .map(|p| p.subscription_identifiers.clone())
                        .unwrap_or_default();
                    assert_eq!(ids, [u32::from(round) + 1], "client {c} round {round}");
                }
            }
        }));
    }
    for client in clients {
        client.await.expect("client ran");
    }
}

/// The same for UNSUBSCRIBE: a PUBLISH sent right after it, in one write, is not delivered
/// on the subscription it removed; a marker to a still-subscribed topic, sent after, is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_right_after_an_unsubscribe_is_not_delivered_to_it() {
    let broker = TestBroker::default_broker();
    let mut clients = Vec::new();
    for c in 0..16 {
        let addr = broker.addr;
        clients.push(tokio::spawn(async move {
            let (mut raw, _) = Raw::connected(addr, Protocol::V311, &format!("unorder-{c}")).await;
            let marker = format!("marker/{c}");
            raw.subscribe(&marker, QoS::AtLeastOnce).await;
            for round in 0..50u16 {
                let topic = format!("unorder/{c}/{round}");
                raw.send_packet(&subscribe(1, &topic, None)).await;
                assert!(matches!(raw.recv().await, Some(Packet::SubAck(_))));
                raw.send_together(&[
                    Packet::Unsubscribe(Unsubscribe {
                        packet_id: pid(3),
                        properties: None,
                        filters: vec![TopicFilter::new(&topic).expect("filter")],
                    }),
                    publish(&topic, QoS::AtMostOnce, None, "gone"),
                    publish(&marker, QoS::AtMostOnce, None, "marker"),
                ])
                .await;
                let got = publishes_until(&mut raw, b"marker").await;
                assert_eq!(got.len(), 1, "client {c} round {round}: {got:?}");
            }
        }));
    }
    for client in clients {
        client.await.expect("client ran");
    }
}
