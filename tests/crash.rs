//! Crash safety: what the broker acknowledged survives `kill -9`.
//!
//! The broker runs as a child process with `sync = "always"`. A publisher streams 20 000 QoS 1
//! and 2 000 QoS 2 messages (plus retained ones) to a persistent subscriber that is offline;
//! the broker is killed with SIGKILL mid-stream, restarted on the same store, and the
//! subscriber must then receive every message the publisher had an acknowledgement for
//! (PUBACK, or PUBREC for QoS 2), with no QoS 2 message twice. Several kill points are tried.

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::daemon::spawn_daemon;
use common::raw::{connect_with, publish, retained, Raw};
use starling_proto::{decode, encode, Limits, Packet, Properties, Protocol, PubResponse, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const QOS1_MESSAGES: usize = 20_000;
const QOS2_MESSAGES: usize = 2_000;
const RETAINED: usize = 50;
/// Publishes the publisher keeps unacknowledged at once.
const WINDOW: usize = 100;

fn settings(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("starling.toml");
    let mut f = std::fs::File::create(&path).expect("settings");
    write!(
        f,
        "[core]\nworkers = 2\n\n[session]\nmax_queued_messages = 100000\n\n\
         [persistence]\ndir = {:?}\nsync = \"always\"\n\n[logging]\nformat = \"json\"\n\n\
         [[acceptors]]\nname = \"main\"\nurl = \"tcp://127.0.0.1:0?protocols=MQTT\"\n",
        dir.join("data").display().to_string()
    )
    .expect("write");
    path
}

async fn persistent_subscriber(addr: SocketAddr) -> (Raw, bool) {
    let connect = connect_with(Protocol::V5, "crash-sub", |c| {
        c.clean_start = false;
        c.properties = Some(Box::new(Properties {
            session_expiry_interval: Some(3600),
            ..Properties::default()
        }));
    });
    let (raw, ack) = Raw::connect(addr, Protocol::V5, &connect).await;
    (raw, ack.session_present)
}

/// Message `n` of the stream: QoS 1 for the first `QOS1_MESSAGES`, then QoS 2.
fn stream_message(n: usize) -> (QoS, String) {
    if n < QOS1_MESSAGES {
        (QoS::AtLeastOnce, format!("q1-{n}"))
    } else {
        (QoS::ExactlyOnce, format!("q2-{n}"))
    }
}

/// Streams the messages with `WINDOW` in flight, until they are all acknowledged or the
/// connection dies; `kill` runs once `kill_after` are acknowledged. Returns the payloads
/// acknowledged.
async fn stream(addr: SocketAddr, kill_after: usize, kill: impl FnOnce()) -> HashSet<String> {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    let mut out = BytesMut::new();
    let connect = connect_with(Protocol::V311, "crash-pub", |c| c.clean_start = true);
    encode(&connect, Protocol::V311, &mut out).expect("encode");
    socket.write_all(&out).await.expect("send CONNECT");
    out.clear();
    let limits = Limits::new(Protocol::V311);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut free: VecDeque<u16> = (1..=WINDOW as u16).collect();
    let mut inflight: HashMap<u16, usize> = HashMap::new();
    let mut acked = HashSet::new();
    let mut next = 0;
    let mut kill = Some(kill);
    let total = QOS1_MESSAGES + QOS2_MESSAGES;
    let mut connected = false;
    loop {
        if connected {
            while next < total {
                let Some(id) = free.pop_front() else { break };
                let (qos, payload) = stream_message(next);
                let packet = publish(&format!("load/{}", next % 4), qos, Some(id), payload);
                encode(&packet, Protocol::V311, &mut out).expect("encode");
                inflight.insert(id, next);
                next += 1;
            }
        }
        if !out.is_empty() {
            if socket.write_all(&out).await.is_err() {
                return acked;
            }
            out.clear();
        }
        if acked.len() >= kill_after {
            if let Some(kill) = kill.take() {
                kill();
            }
        }
        if next >= total && inflight.is_empty() {
            return acked;
        }
        match tokio::time::timeout(Duration::from_secs(10), socket.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return acked,
        }
        while let Ok(Some(packet)) = decode(&mut buf, &limits) {
            match packet {
                Packet::ConnAck(_) => connected = true,
                Packet::PubAck(ack) => {
                    if let Some(n) = inflight.remove(&ack.packet_id.get()) {
                        acked.insert(stream_message(n).1);
                        free.push_back(ack.packet_id.get());
                    }
                }
                Packet::PubRec(rec) => {
                    if let Some(&n) = inflight.get(&rec.packet_id.get()) {
                        acked.insert(stream_message(n).1);
                    }
                    let rel = Packet::PubRel(PubResponse::success(rec.packet_id));
                    encode(&rel, Protocol::V311, &mut out).expect("encode");
                }
                Packet::PubComp(comp) if inflight.remove(&comp.packet_id.get()).is_some() => {
                    free.push_back(comp.packet_id.get());
                }
                _ => {}
            }
        }
    }
}

/// The daemon, killed when the test ends however it ends.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One kill point: a fresh broker and store, the stream, SIGKILL, a restart, and the check.
async fn crash_at(kill_after: usize) {
    let dir = tempfile::tempdir().expect("dir");
    let settings = settings(dir.path());
    let (child, addr) = spawn_daemon(&settings);
    let mut daemon = Daemon(child);

    // The subscriber subscribes, then goes offline; everything queues for it.
    let (mut sub, _) = persistent_subscriber(addr).await;
    sub.subscribe("load/#", QoS::ExactlyOnce).await;
    drop(sub);
    let (mut retainer, _) = Raw::connected(addr, Protocol::V311, "retainer").await;
    for i in 0..RETAINED {
        let packet = retained(
            &format!("ret/{i}"),
            QoS::AtLeastOnce,
            Some(i as u16 + 1),
            format!("r{i}"),
        );
        retainer.send_packet(&packet).await;
        assert!(matches!(retainer.recv().await, Some(Packet::PubAck(_))));
    }
    drop(retainer);

    let pid = daemon.0.id();
    let acked = stream(addr, kill_after, || {
        // SIGKILL: no chance to flush anything.
        daemon.0.kill().expect("kill -9");
    })
    .await;
    drop(daemon);
    assert!(
        acked.len() >= kill_after,
        "killed after {} acknowledgements (pid {pid})",
        acked.len()
    );

    let (child, addr) = spawn_daemon(&settings);
    let _daemon = Daemon(child);
    let (mut sub, present) = persistent_subscriber(addr).await;
    assert!(present, "the session survived the crash");
    let mut qos1 = HashSet::new();
    let mut qos2 = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "redelivery took too long");
        let packet = match tokio::time::timeout(Duration::from_secs(3), sub.recv()).await {
            Ok(Some(packet)) => packet,
            Ok(None) => panic!("the broker closed the subscriber's connection"),
            Err(_) => break, // quiet: everything has come
        };
        match packet {
            Packet::Publish(p) => {
                let payload = String::from_utf8_lossy(&p.payload).into_owned();
                let id = p.packet_id.expect("QoS 1/2");
                if p.qos == QoS::ExactlyOnce {
                    assert!(qos2.insert(payload), "a QoS 2 message arrived twice");
                    sub.send_packet(&Packet::PubRec(PubResponse::success(id)))
                        .await;
                } else {
                    qos1.insert(payload);
                    sub.puback(&p).await;
                }
            }
            Packet::PubRel(rel) => {
                sub.send_packet(&Packet::PubComp(PubResponse::success(rel.packet_id)))
                    .await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let missing: Vec<_> = acked
        .iter()
        .filter(|p| !qos1.contains(*p) && !qos2.contains(*p))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "kill after {kill_after}: {} acknowledged, {} + {} received; missing e.g. {missing:?}",
        acked.len(),
        qos1.len(),
        qos2.len()
    );
    assert!(
        qos2.iter().all(|p| p.starts_with("q2-")),
        "QoS 2 deliveries are the QoS 2 messages"
    );

    // Every retained message is still there.
    let (mut reader, _) = Raw::connected(addr, Protocol::V5, "reader").await;
    reader.subscribe("ret/#", QoS::AtMostOnce).await;
    let mut found = HashSet::new();
    while found.len() < RETAINED {
        found.insert(reader.recv_publish().await.payload);
    }
}

/// Several kill points, early to late in the stream (and into the QoS 2 part), each with its
/// own broker and store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill_at_several_points() {
    // Vary the exact point from run to run.
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize % 1000);
    for kill_after in [1_500 + jitter, 11_000 + jitter, 20_600 + jitter] {
        crash_at(kill_after).await;
    }
}

/// A connected client's session is not offline: killed with SIGKILL after the client has been
/// connected for longer than its Session Expiry Interval (2 s), the broker comes back with the
/// session, its subscription and the client's will, and counts the expiry from the restart
/// ([MQTT-3.1.2-23]: the session is kept while the connection lasts, then for the interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_clients_session_survives_a_crash_long_after_it_connected() {
    let dir = tempfile::tempdir().expect("dir");
    let settings = settings(dir.path());
    let (child, addr) = spawn_daemon(&settings);
    let mut daemon = Daemon(child);
    let lasting = |with_will: bool| {
        connect_with(Protocol::V5, "lasting", move |c| {
            c.clean_start = false;
            c.properties = Some(Box::new(Properties {
                session_expiry_interval: Some(2),
                ..Properties::default()
            }));
            if with_will {
                c.will = Some(starling_proto::LastWill {
                    topic: starling_proto::TopicName::new("gone/lasting").expect("topic"),
                    payload: bytes::Bytes::from_static(b"crashed"),
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    properties: None,
                });
            }
        })
    };
    let (mut client, _) = Raw::connect(addr, Protocol::V5, &lasting(true)).await;
    client.subscribe("keep/#", QoS::AtLeastOnce).await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    daemon.0.kill().expect("kill -9");
    let _ = daemon.0.wait();
    drop(client);

    let (child, addr) = spawn_daemon(&settings);
    let _daemon = Daemon(child);
    // The will of the connection the crash cut went out on recovery (retained, so it is here
    // for a subscriber that comes after).
    let (mut watcher, _) = Raw::connected(addr, Protocol::V5, "watcher").await;
    watcher.subscribe("gone/#", QoS::AtLeastOnce).await;
    assert_eq!(&watcher.recv_publish().await.payload[..], b"crashed");
    let (mut client, ack) = Raw::connect(addr, Protocol::V5, &lasting(false)).await;
    assert!(ack.session_present, "the session outlived the crash");
    let (mut publisher, _) = Raw::connected(addr, Protocol::V5, "pub").await;
    publisher
        .send_packet(&publish("keep/1", QoS::AtLeastOnce, Some(1), "still here"))
        .await;
    assert_eq!(&client.recv_publish().await.payload[..], b"still here");
}

/// [MQTT-4.3.3-11] Once PUBCOMP is sent, the packet id is free and a new message may reuse
/// it: so its release must be durable before PUBCOMP goes out. Killed right after PUBCOMP,
/// the broker must come back without the id pending, and route the next QoS 2 message that
/// reuses it instead of taking it for a resend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_id_released_by_pubcomp_is_free_after_a_crash() {
    let dir = tempfile::tempdir().expect("dir");
    let settings = settings(dir.path());
    let (child, addr) = spawn_daemon(&settings);
    let mut daemon = Daemon(child);
    let reuser = || {
        connect_with(Protocol::V5, "reuser", |c| {
            c.clean_start = false;
            c.properties = Some(Box::new(Properties {
                session_expiry_interval: Some(300),
                ..Properties::default()
            }));
        })
    };
    let exchange = |payload: &'static str| {
        (
            publish("reuse", QoS::ExactlyOnce, Some(5), payload),
            Packet::PubRel(PubResponse::success(common::raw::pid(5))),
        )
    };
    let (mut publisher, _) = Raw::connect(addr, Protocol::V5, &reuser()).await;
    let (first, release) = exchange("first");
    publisher.send_packet(&first).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubRec(_))));
    publisher.send_packet(&release).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubComp(_))));
    daemon.0.kill().expect("kill -9");
    let _ = daemon.0.wait();
    drop(publisher);

    let (child, addr) = spawn_daemon(&settings);
    let _daemon = Daemon(child);
    let (mut sub, _) = Raw::connected(addr, Protocol::V5, "reader").await;
    sub.subscribe("reuse", QoS::ExactlyOnce).await;
    let (mut publisher, ack) = Raw::connect(addr, Protocol::V5, &reuser()).await;
    assert!(ack.session_present);
    let (second, release) = exchange("second");
    publisher.send_packet(&second).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubRec(_))));
    publisher.send_packet(&release).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubComp(_))));
    assert_eq!(&sub.recv_publish().await.payload[..], b"second");
}
