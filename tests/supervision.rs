//! Supervision: every supervised actor kind fails (a panic, or failure as a value) and comes
//! back with its state while clients keep working; the restart is logged and counted; past
//! the restart budget the broker reports that it gives up.

mod common;

use std::time::Duration;

use common::raw::{publish, retained, Raw};
use common::*;
use starling_actors::broker::FaultTarget;
use starling_actors::supervisor::InjectFault;
use starling_proto::{Packet, Protocol, QoS, ReasonCode};

const FAULTS_ON: &str = "[supervisor]\nfault_injection = true\n\n[logging]\nformat = \"json\"\n";

async fn inject(broker: &TestBroker, target: FaultTarget, fault: InjectFault) {
    let server = broker.server.as_ref().expect("running");
    server
        .broker()
        .inject_fault(target, fault)
        .await
        .expect("fault injected");
}

/// Waits for the supervisor's record of a restart of `kind`.
async fn restarted(broker: &TestBroker, kind: &str) -> serde_json::Value {
    let logs = broker.logs.as_ref().expect("captured");
    logs.wait_for(&format!("{kind} restarted"), |r| {
        r["msg"] == "actor failed and was restarted" && r["kind"] == kind
    })
    .await
}

async fn persistent(broker: &TestBroker, id: &str) -> (Raw, bool) {
    Raw::persistent(broker.addr, id, 300).await
}

async fn publish_qos1(broker: &TestBroker, topic: &str, payload: &str) {
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "publisher").await;
    publisher
        .send_packet(&publish(
            topic,
            QoS::AtLeastOnce,
            Some(1),
            payload.to_owned(),
        ))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
}

/// A TopicNode shard that panics is restarted and refilled from the Sessions' subscription
/// tables: subscribers on it (exact and wildcard) still receive messages afterwards.
#[tokio::test]
async fn a_failed_topic_shard_is_rebuilt_from_the_sessions_subscriptions() {
    let broker = TestBroker::start_captured("", FAULTS_ON);
    let (mut exact, _) = Raw::connected(broker.addr, Protocol::V5, "exact").await;
    exact.subscribe("plant/1/temp", QoS::AtLeastOnce).await;
    let (mut wild, _) = Raw::connected(broker.addr, Protocol::V5, "wild").await;
    wild.subscribe("+/1/#", QoS::AtMostOnce).await;
    // Both shards (workers = 2), so whichever holds "plant" failed.
    inject(&broker, FaultTarget::Shard(0), InjectFault::Panic).await;
    inject(&broker, FaultTarget::Shard(1), InjectFault::Panic).await;
    let record = restarted(&broker, "topic_node").await;
    assert!(
        record["cause"]
            .as_str()
            .is_some_and(|c| c.contains("injected fault")),
        "{record}"
    );
    publish_qos1(&broker, "plant/1/temp", "21.5").await;
    assert_eq!(&exact.recv_publish().await.payload[..], b"21.5");
    assert_eq!(&wild.recv_publish().await.payload[..], b"21.5");
}

/// The RetainStore fails (as a value, not a panic) and reloads its messages from the store.
#[tokio::test]
async fn a_failed_retain_store_reloads_its_messages_from_the_store() {
    let broker = TestBroker::start_captured("", FAULTS_ON);
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "retainer").await;
    publisher
        .send_packet(&retained("config/a", QoS::AtLeastOnce, Some(1), "on"))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    inject(&broker, FaultTarget::RetainStore, InjectFault::Fail).await;
    restarted(&broker, "retain_store").await;
    // Its memory is kept across the restart, so the answer below alone would not show that
    // the store was read: the log says what came back from it.
    let logs = broker.logs.as_ref().expect("captured");
    logs.wait_for("retain store reloaded", |r| {
        r["msg"] == "retain store reloaded" && r["messages"] == 1
    })
    .await;
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V5, "reader").await;
    sub.subscribe("config/#", QoS::AtMostOnce).await;
    let p = sub.recv_publish().await;
    assert!(p.retain);
    assert_eq!(&p.payload[..], b"on");
}

/// The Registry fails and keeps its table: connected clients keep their traffic, new clients
/// connect, and a persistent client resumes its session.
#[tokio::test]
async fn a_failed_registry_keeps_serving_its_sessions() {
    let broker = TestBroker::start_captured("", FAULTS_ON);
    let (mut sub, _) = persistent(&broker, "loyal").await;
    sub.subscribe("news", QoS::AtLeastOnce).await;
    inject(&broker, FaultTarget::Registry, InjectFault::Panic).await;
    restarted(&broker, "registry").await;
    publish_qos1(&broker, "news", "still here").await;
    let p = sub.recv_publish().await;
    assert_eq!(&p.payload[..], b"still here");
    sub.puback(&p).await;
    drop(sub);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_sub, present) = persistent(&broker, "loyal").await;
    assert!(present, "the session survived the registry's restart");
}

/// A persistent Session that fails is rebuilt from the store: its client is disconnected
/// (0x80), and on reconnecting finds its session present, its subscription active and its
/// unacknowledged message resent.
#[tokio::test]
async fn a_failed_persistent_session_is_rebuilt_and_its_client_reconnects_to_it() {
    let broker = TestBroker::start_captured("", FAULTS_ON);
    let (mut sub, _) = persistent(&broker, "fragile").await;
    sub.subscribe("orders/#", QoS::AtLeastOnce).await;
    publish_qos1(&broker, "orders/1", "first").await;
    let first = sub.recv_publish().await; // not acknowledged
    inject(
        &broker,
        FaultTarget::Session("fragile".into()),
        InjectFault::Panic,
    )
    .await;
    sub.expect_disconnect(ReasonCode::UNSPECIFIED_ERROR).await;
    restarted(&broker, "session").await;
    // The session keeps its queue in memory across the restart, so the resend below alone
    // would not show that the store was read: the log says what came back from it.
    let logs = broker.logs.as_ref().expect("captured");
    logs.wait_for("session rebuilt", |r| {
        r["msg"] == "session rebuilt from the store"
            && r["subscriptions"] == 1
            && r["inflight"] == 1
    })
    .await;

    let (mut sub, present) = persistent(&broker, "fragile").await;
    assert!(present, "session present after the rebuild");
    let again = sub.recv_publish().await;
    assert!(again.dup);
    assert_eq!(again.packet_id, first.packet_id);
    sub.puback(&again).await;
    publish_qos1(&broker, "orders/2", "second").await;
    assert_eq!(&sub.recv_publish().await.payload[..], b"second");
}

/// A clean session that fails has nothing to be rebuilt from: its client is disconnected and
/// starts afresh.
#[tokio::test]
async fn a_failed_clean_session_ends_and_its_client_starts_afresh() {
    let broker = TestBroker::start_captured("", FAULTS_ON);
    let (mut client, _) = Raw::connected(broker.addr, Protocol::V5, "brief").await;
    client.subscribe("x", QoS::AtMostOnce).await;
    inject(
        &broker,
        FaultTarget::Session("brief".into()),
        InjectFault::Fail,
    )
    .await;
    client
        .expect_disconnect(ReasonCode::UNSPECIFIED_ERROR)
        .await;
    restarted(&broker, "session").await;
    let (_client, ack) = Raw::connected(broker.addr, Protocol::V5, "brief").await;
    assert!(!ack.session_present);
}

/// More restarts than `max_restarts` within `restart_window` and the broker gives up (the
/// daemon then exits with code 3).
#[tokio::test]
async fn past_the_restart_budget_the_broker_gives_up() {
    let broker = TestBroker::start_captured(
        "",
        "[supervisor]\nfault_injection = true\nmax_restarts = 2\nrestart_window = 60\n\n\
         [logging]\nformat = \"json\"\n",
    );
    let handle = broker.server.as_ref().expect("running").broker().clone();
    for _ in 0..3 {
        inject(&broker, FaultTarget::Registry, InjectFault::Panic).await;
    }
    let why = tokio::time::timeout(WAIT, handle.failed())
        .await
        .expect("the supervisor gives up");
    assert!(why.contains("3 restarts within 60 s"), "{why}");
}

/// A store whose commit failed takes no more writes, so the broker cannot keep what it would
/// acknowledge: it gives up (the daemon exits with code 3, and its restart recovers the last
/// good commit) instead of acknowledging on, and what still needs the store is refused, here
/// a persistent subscription in its SUBACK.
#[tokio::test]
async fn a_failed_store_commit_makes_the_broker_give_up() {
    let broker = TestBroker::start_captured("", FAULTS_ON);
    let handle = broker.server.as_ref().expect("running").broker().clone();
    inject(&broker, FaultTarget::Store, InjectFault::Fail).await;
    let why = tokio::time::timeout(WAIT, handle.failed())
        .await
        .expect("the broker gives up");
    assert!(why.contains("store commit failed"), "{why}");
    let logs = broker.logs.as_ref().expect("captured");
    logs.wait_for("the store's failure logged", |r| {
        r["msg"] == "store commit failed; the broker stops" && r["level"] == "CRIT"
    })
    .await;
    let (mut sub, _) = persistent(&broker, "too-late").await;
    assert_eq!(
        sub.subscribe("x", QoS::AtLeastOnce).await,
        vec![ReasonCode::UNSPECIFIED_ERROR]
    );
}

/// PUBCOMP frees a packet id only once its release is on disk; when the store cannot record
/// it, the client gets no PUBCOMP but a DISCONNECT, and resends its PUBREL on reconnecting
/// (here the store has failed before the PUBREL comes).
#[tokio::test]
async fn no_pubcomp_goes_out_for_a_release_the_store_did_not_record() {
    let broker = TestBroker::start_captured("", FAULTS_ON);
    let handle = broker.server.as_ref().expect("running").broker().clone();
    let (mut publisher, _) = persistent(&broker, "releaser").await;
    publisher
        .send_packet(&publish("r", QoS::ExactlyOnce, Some(3), "x"))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubRec(_))));
    inject(&broker, FaultTarget::Store, InjectFault::Fail).await;
    tokio::time::timeout(WAIT, handle.failed())
        .await
        .expect("the broker gives up");
    publisher
        .send_packet(&Packet::PubRel(starling_proto::PubResponse::success(
            common::raw::pid(3),
        )))
        .await;
    publisher
        .expect_disconnect(ReasonCode::UNSPECIFIED_ERROR)
        .await;
}

/// Fault injection is off by default: nothing can be made to fail.
#[tokio::test]
async fn fault_injection_is_refused_when_off() {
    let broker = TestBroker::default_broker();
    let server = broker.server.as_ref().expect("running");
    assert!(server
        .broker()
        .inject_fault(FaultTarget::Registry, InjectFault::Panic)
        .await
        .is_err());
}
