//! The seed's wildcard subscriptions, example by example, against the real broker with real
//! clients (rumqttc, MQTT 3.1.1): `/uk/#` matches `/uk/cities`, `/uk/cities/newcastle` and
//! `/uk/rivers/tyne`; `#` matches all topics; `/uk/+/stores` matches `/uk/newcastle/stores`
//! but not `/uk/cities/newcastle/stores`.
//!
//! A publish that must not arrive is proven absent without waiting for a timeout: it goes at
//! QoS 1 and the publisher waits for its PUBACK, which the broker sends once the message is
//! routed to every matching session; a marker published after that to a matching topic would
//! queue behind a wrongly routed copy, so the marker arriving first proves there is none.

mod common;

use common::*;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, QoS};

/// A subscriber to one filter, its SUBACK received.
struct Subscriber {
    _client: AsyncClient,
    eventloop: EventLoop,
}

impl Subscriber {
    async fn new(broker: &TestBroker, id: &str, filter: &str) -> Subscriber {
        let (client, mut eventloop) = AsyncClient::new(v4_options(broker, id), 10);
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        v4_until(&mut eventloop, |e| match e {
            Event::Incoming(Incoming::SubAck(_)) => Some(()),
            _ => None,
        })
        .await;
        Subscriber {
            _client: client,
            eventloop,
        }
    }

    /// The topic of the next message delivered (its payload is its topic, checked).
    async fn next_topic(&mut self) -> String {
        let (topic, payload) = v4_until(&mut self.eventloop, |e| match e {
            Event::Incoming(Incoming::Publish(p)) => Some((p.topic.clone(), p.payload.clone())),
            _ => None,
        })
        .await;
        assert_eq!(payload, topic.as_bytes(), "the payload names its topic");
        topic
    }
}

/// A publisher that sends one QoS 1 message at a time and waits for its PUBACK.
struct Publisher {
    client: AsyncClient,
    eventloop: EventLoop,
}

impl Publisher {
    async fn new(broker: &TestBroker, id: &str) -> Publisher {
        let (client, mut eventloop) = AsyncClient::new(v4_options(broker, id), 10);
        v4_until(&mut eventloop, |e| match e {
            Event::Incoming(Incoming::ConnAck(_)) => Some(()),
            _ => None,
        })
        .await;
        Publisher { client, eventloop }
    }

    /// Publishes `topic` (payload: the topic) and returns once the broker acknowledged it,
    /// that is once it was routed to every matching subscriber.
    async fn publish(&mut self, topic: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, topic.as_bytes().to_vec())
            .await
            .expect("publish");
        v4_until(&mut self.eventloop, |e| match e {
            Event::Incoming(Incoming::PubAck(_)) => Some(()),
            _ => None,
        })
        .await;
    }
}

/// Publishes each topic and checks the subscriber receives exactly it, in order.
async fn each_arrives(publisher: &mut Publisher, subscriber: &mut Subscriber, topics: &[&str]) {
    for topic in topics {
        publisher.publish(topic).await;
        assert_eq!(subscriber.next_topic().await, *topic);
    }
}

/// Publishes each of `unmatched`, then `marker` (which matches): the marker is the next thing
/// the subscriber receives, so none of the others was delivered.
async fn none_arrives(
    publisher: &mut Publisher,
    subscriber: &mut Subscriber,
    unmatched: &[&str],
    marker: &str,
) {
    for topic in unmatched {
        publisher.publish(topic).await;
    }
    publisher.publish(marker).await;
    assert_eq!(
        subscriber.next_topic().await,
        marker,
        "none of {unmatched:?} may arrive before the marker"
    );
}

/// The seed: "`/uk/#` Would match `/uk/cities`, `/uk/cities/newcastle` and also
/// `/uk/rivers/tyne`".
#[tokio::test]
async fn uk_hash_matches_uk_cities_newcastle_and_rivers_tyne() {
    let broker = TestBroker::default_broker();
    let mut subscriber = Subscriber::new(&broker, "uk-sub", "/uk/#").await;
    let mut publisher = Publisher::new(&broker, "uk-pub").await;
    each_arrives(
        &mut publisher,
        &mut subscriber,
        &["/uk/cities", "/uk/cities/newcastle", "/uk/rivers/tyne"],
    )
    .await;
}

/// `/uk/#` matches the branch under `/uk` only: not a sibling, not a longer first word, not
/// `uk` without the leading empty level.
#[tokio::test]
async fn uk_hash_does_not_match_outside_the_uk_branch() {
    let broker = TestBroker::default_broker();
    let mut subscriber = Subscriber::new(&broker, "uk-sub", "/uk/#").await;
    let mut publisher = Publisher::new(&broker, "uk-pub").await;
    none_arrives(
        &mut publisher,
        &mut subscriber,
        &["/us/cities", "/ukraine/kyiv", "uk/cities", "/fr/uk/cities"],
        "/uk/marker",
    )
    .await;
}

/// The seed: "Subscribing to an address `#` would result in subscribing to all topics in the
/// broker."
#[tokio::test]
async fn hash_alone_matches_all_topics() {
    let broker = TestBroker::default_broker();
    let mut subscriber = Subscriber::new(&broker, "all-sub", "#").await;
    let mut publisher = Publisher::new(&broker, "all-pub").await;
    each_arrives(
        &mut publisher,
        &mut subscriber,
        &[
            "/uk/cities",
            "/uk/cities/newcastle",
            "/uk/rivers/tyne",
            "/uk/newcastle/stores",
            "sensors",
            "a/b/c/d",
            "/",
        ],
    )
    .await;
}

/// The seed: "`/uk/+/stores` would match `/uk/newcastle/stores`".
#[tokio::test]
async fn uk_plus_stores_matches_uk_newcastle_stores() {
    let broker = TestBroker::default_broker();
    let mut subscriber = Subscriber::new(&broker, "stores-sub", "/uk/+/stores").await;
    let mut publisher = Publisher::new(&broker, "stores-pub").await;
    each_arrives(&mut publisher, &mut subscriber, &["/uk/newcastle/stores"]).await;
}

/// The seed: "`/uk/+/stores` would match `/uk/newcastle/stores` but not
/// `/uk/cities/newcastle/stores`": `+` is exactly one level (not two, not none, and the levels
/// after it must follow).
#[tokio::test]
async fn uk_plus_stores_does_not_match_uk_cities_newcastle_stores() {
    let broker = TestBroker::default_broker();
    let mut subscriber = Subscriber::new(&broker, "stores-sub", "/uk/+/stores").await;
    let mut publisher = Publisher::new(&broker, "stores-pub").await;
    none_arrives(
        &mut publisher,
        &mut subscriber,
        &[
            "/uk/cities/newcastle/stores",
            "/uk/stores",
            "/uk/newcastle/stores/food",
            "/uk/newcastle/shops",
        ],
        "/uk/leeds/stores",
    )
    .await;
}
