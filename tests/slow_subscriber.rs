//! Bounded memory for slow subscribers: a QoS 1 subscriber that never reads while 100 000
//! messages are published costs the broker at most its bounded queue; the drop counter says
//! what was dropped; a fast subscriber on the same topic receives everything, in order.
//!
//! This file holds one test so that the process's memory is this scenario's alone.

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::raw::{publish, Raw};
use common::*;
use starling_proto::{encode, Packet, Protocol, PubResponse, QoS};

const MESSAGES: u32 = 100_000;
const PAYLOAD: usize = 1024;
/// Publisher pipelining: QoS 1 publishes outstanding at once.
const WINDOW: u32 = 16;

/// Resident memory of this process, in KiB (Linux).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_costs_only_its_bounded_queue() {
    let broker = TestBroker::default_broker();
    let (mut slow, _) = Raw::connected(broker.addr, Protocol::V311, "slow").await;
    slow.subscribe("load", QoS::AtLeastOnce).await;
    let (mut fast, _) = Raw::connected(broker.addr, Protocol::V311, "fast").await;
    fast.subscribe("load", QoS::AtLeastOnce).await;
    let before = rss_kib();

    let addr = broker.addr;
    let publisher = tokio::spawn(async move {
        let (mut publisher, _) = Raw::connected(addr, Protocol::V311, "pub").await;
        let payload = Bytes::from(vec![b'x'; PAYLOAD]);
        let mut outstanding = 0;
        for n in 0..MESSAGES {
            let id = (n % 60_000 + 1) as u16;
            let mut packet = publish("load", QoS::AtLeastOnce, Some(id), payload.clone());
            if let Packet::Publish(p) = &mut packet {
                // The sequence number leads the payload.
                let mut body = BytesMut::from(&p.payload[..]);
                body[..4].copy_from_slice(&n.to_be_bytes());
                p.payload = body.freeze();
            }
            publisher.send_packet(&packet).await;
            outstanding += 1;
            while outstanding >= WINDOW {
                assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
                outstanding -= 1;
            }
        }
        while outstanding > 0 {
            assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
            outstanding -= 1;
        }
    });

    // The fast subscriber reads and acknowledges everything, in order.
    let mut acks = BytesMut::new();
    let mut peak = before;
    for n in 0..MESSAGES {
        let p = fast.recv_publish().await;
        let seq = u32::from_be_bytes([p.payload[0], p.payload[1], p.payload[2], p.payload[3]]);
        assert_eq!(seq, n, "in order, nothing missing");
        let id = p.packet_id.expect("QoS 1");
        encode(
            &Packet::PubAck(PubResponse::success(id)),
            Protocol::V311,
            &mut acks,
        )
        .expect("encode");
        // Well under the broker's in-flight window of 100.
        if acks.len() >= 64 {
            fast.send(&acks.split()).await;
        }
        if n % 10_000 == 0 {
            peak = peak.max(rss_kib());
        }
    }
    fast.send(&acks.split()).await;
    publisher.await.expect("publisher finished");
    peak = peak.max(rss_kib());

    let info = broker.session_info("slow").await.expect("slow session");
    let growth_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "slow subscriber: queued {} in flight {} dropped {:?} + {} at the mailbox; RSS grew {} MiB while {} MiB were published",
        info.queued,
        info.inflight,
        info.drops,
        info.dropped_backlog,
        growth_mib,
        u64::from(MESSAGES) * PAYLOAD as u64 / (1024 * 1024)
    );
    // The slow session holds its bounded queue and window, and says what it dropped.
    assert!(info.queued <= 1000, "queue bound: {}", info.queued);
    assert!(info.inflight <= 100, "in-flight window: {}", info.inflight);
    let dropped = info.drops.queue_full + info.dropped_backlog;
    assert!(dropped > 0, "drops are counted");
    // A QoS 1 reader that never acknowledges keeps every message it was sent in flight, so
    // each message is accounted for exactly once: dropped by its session's queue, dropped
    // before its mailbox (backlog), queued, or in flight.
    assert_eq!(
        u64::from(MESSAGES),
        dropped + info.queued as u64 + info.inflight as u64,
        "every message is queued, in flight, or counted as dropped: {info:?}"
    );
    // 100 MiB went through; the broker kept a few MiB for the slow reader.
    assert!(growth_mib < 48, "memory grew {growth_mib} MiB");
    drop(slow);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
