//! Unit tests of the outbound session state machine.

use std::time::{Duration, Instant};

use super::*;

fn d(n: u32, qos: QoS) -> Delivery<u32> {
    Delivery {
        msg: n,
        qos,
        retain: false,
        subscription_ids: Vec::new(),
        expires_at: None,
        size: 10,
    }
}

fn sent_msg(send: Option<Send<u32>>) -> (u32, Option<PacketId>, bool) {
    match send {
        Some(Send::Publish {
            delivery,
            packet_id,
            dup,
        }) => (delivery.msg, packet_id, dup),
        other => panic!("expected a PUBLISH, got {other:?}"),
    }
}

fn id(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero")
}

#[test]
fn the_window_bounds_messages_in_flight_and_acks_open_it() {
    let now = Instant::now();
    let mut out = Outbound::new(QueueLimits::default(), 2);
    for n in 0..5 {
        assert!(out.push(d(n, QoS::AtLeastOnce), true));
    }
    assert_eq!(sent_msg(out.next_send(now)), (0, Some(id(1)), false));
    assert_eq!(sent_msg(out.next_send(now)), (1, Some(id(2)), false));
    assert_eq!(out.next_send(now), None, "window of 2 is full");
    assert_eq!(out.puback(id(1)).map(|d| d.msg), Ok(0));
    assert_eq!(sent_msg(out.next_send(now)), (2, Some(id(3)), false));
    assert_eq!(out.inflight(), 2);
    assert_eq!(out.queued(), 2);
}

#[test]
fn qos0_behind_a_blocked_qos1_head_waits_to_keep_order() {
    let now = Instant::now();
    let mut out = Outbound::new(QueueLimits::default(), 1);
    out.push(d(0, QoS::AtLeastOnce), true);
    out.push(d(1, QoS::AtLeastOnce), true);
    out.push(d(2, QoS::AtMostOnce), true);
    assert_eq!(sent_msg(out.next_send(now)).0, 0);
    assert_eq!(out.next_send(now), None);
    out.puback(id(1)).expect("ack");
    assert_eq!(sent_msg(out.next_send(now)).0, 1);
    // Now the QoS 0 message is at the head and needs no window.
    assert_eq!(sent_msg(out.next_send(now)), (2, None, false));
    assert_eq!(out.next_send(now), None);
}

#[test]
fn qos0_is_sent_without_a_packet_id_and_never_in_flight() {
    let now = Instant::now();
    let mut out = Outbound::new(QueueLimits::default(), 1);
    out.push(d(7, QoS::AtMostOnce), true);
    assert_eq!(sent_msg(out.next_send(now)), (7, None, false));
    assert_eq!(out.inflight(), 0);
}

#[test]
fn qos2_goes_through_pubrec_and_pubcomp() {
    let now = Instant::now();
    let mut out = Outbound::new(QueueLimits::default(), 10);
    out.push(d(1, QoS::ExactlyOnce), true);
    let (_, pid, _) = sent_msg(out.next_send(now));
    let pid = pid.expect("id");
    assert_eq!(out.pubcomp(pid).map(|_| ()), Err(AckError::WrongState));
    assert_eq!(out.puback(pid).map(|_| ()), Err(AckError::WrongState));
    assert!(out.pubrec(pid).is_ok());
    assert!(
        out.pubrec(pid).is_ok(),
        "a repeated PUBREC is answered again"
    );
    assert_eq!(out.replay(), vec![Send::PubRel(pid)]);
    assert!(out.pubcomp(pid).is_ok());
    assert_eq!(out.inflight(), 0);
    assert_eq!(out.pubcomp(pid).map(|_| ()), Err(AckError::NotFound));
}

#[test]
fn replay_resends_unacknowledged_publishes_with_dup_in_order() {
    let now = Instant::now();
    let mut out = Outbound::new(QueueLimits::default(), 10);
    for n in 0..3 {
        out.push(d(n, QoS::ExactlyOnce), true);
        out.next_send(now);
    }
    out.pubrec(id(2)).expect("pubrec");
    let replay = out.replay();
    assert_eq!(replay.len(), 3);
    assert_eq!(sent_msg(Some(replay[0].clone())), (0, Some(id(1)), true));
    assert_eq!(replay[1], Send::PubRel(id(2)));
    assert_eq!(sent_msg(Some(replay[2].clone())), (2, Some(id(3)), true));
}

/// [MQTT-3.3.4-9] A client that reconnects with a smaller Receive Maximum gets no more
/// unacknowledged PUBLISH packets than it: the replay holds the rest back, and each
/// acknowledgement lets the next one out, in the original order and before anything queued.
#[test]
fn a_replay_into_a_smaller_window_resends_the_rest_as_acks_make_room() {
    let now = Instant::now();
    let mut out = Outbound::new(QueueLimits::default(), 10);
    for n in 0..6 {
        out.push(d(n, QoS::AtLeastOnce), true);
        out.next_send(now);
    }
    out.push(d(6, QoS::AtLeastOnce), true);
    out.set_window(2);
    let replay = out.replay();
    let sent: Vec<_> = replay.into_iter().map(|s| sent_msg(Some(s))).collect();
    assert_eq!(sent, vec![(0, Some(id(1)), true), (1, Some(id(2)), true)]);
    assert_eq!(out.next_send(now), None, "the window is full");
    out.puback(id(1)).expect("puback");
    assert_eq!(sent_msg(out.next_send(now)), (2, Some(id(3)), true));
    assert_eq!(out.next_send(now), None);
    for n in 2..6u16 {
        out.puback(id(n)).expect("puback");
        let expected = if n < 5 {
            (u32::from(n) + 1, Some(id(n + 2)), true)
        } else {
            // Every held message is out: the queue's turn, with a fresh id.
            (6, Some(id(7)), false)
        };
        assert_eq!(sent_msg(out.next_send(now)), expected);
    }
}

/// Held-back messages acknowledged or handed away before they were resent are no longer owed.
#[test]
fn held_back_messages_leave_with_their_acknowledgement_or_hand_over() {
    let now = Instant::now();
    let mut out = Outbound::new(QueueLimits::default(), 10);
    for n in 0..4 {
        let qos = if n == 3 {
            QoS::ExactlyOnce
        } else {
            QoS::AtLeastOnce
        };
        out.push(d(n, qos), true);
        out.next_send(now);
    }
    out.set_window(1);
    assert_eq!(out.replay().len(), 1);
    // The client acknowledges one it had from the last connection, before its resend.
    out.puback(id(2)).expect("puback");
    // A PUBREC for a held QoS 2 message: PUBREL follows, the PUBLISH is not resent.
    out.pubrec(id(4)).expect("pubrec");
    // The rest goes to another member of a shared subscription.
    assert_eq!(out.take_where(|d| d.msg == 2).len(), 1);
    out.puback(id(1)).expect("puback");
    assert_eq!(out.next_send(now), None, "nothing is owed any more");
    assert_eq!(out.replay(), vec![Send::PubRel(id(4))]);
}

#[test]
fn packet_ids_are_not_reused_while_in_flight() {
    let now = Instant::now();
    let mut out = Outbound::new(QueueLimits::default(), 3);
    out.next_id = u16::MAX;
    for n in 0..3 {
        out.push(d(n, QoS::AtLeastOnce), true);
    }
    assert_eq!(sent_msg(out.next_send(now)).1, Some(id(u16::MAX)));
    assert_eq!(sent_msg(out.next_send(now)).1, Some(id(1)), "wraps past 0");
    out.next_id = u16::MAX;
    assert_eq!(
        sent_msg(out.next_send(now)).1,
        Some(id(2)),
        "skips ids still in flight"
    );
}

#[test]
fn a_full_queue_drops_the_oldest_by_default_and_counts_it() {
    let limits = QueueLimits {
        max_messages: 2,
        ..QueueLimits::default()
    };
    let mut out = Outbound::new(limits, 1);
    for n in 0..4 {
        assert!(out.push(d(n, QoS::AtLeastOnce), false));
    }
    assert_eq!(out.queued(), 2);
    assert_eq!(out.drops().queue_full, 2);
    let now = Instant::now();
    assert_eq!(sent_msg(out.next_send(now)).0, 2);
}

#[test]
fn drop_newest_keeps_what_was_queued_first() {
    let limits = QueueLimits {
        max_messages: 2,
        policy: DropPolicy::DropNewest,
        ..QueueLimits::default()
    };
    let mut out = Outbound::new(limits, 1);
    assert!(out.push(d(0, QoS::AtLeastOnce), false));
    assert!(out.push(d(1, QoS::AtLeastOnce), false));
    assert!(!out.push(d(2, QoS::AtLeastOnce), false));
    assert_eq!(out.drops().queue_full, 1);
    assert_eq!(sent_msg(out.next_send(Instant::now())).0, 0);
}

#[test]
fn the_byte_bound_limits_the_queue_too() {
    let limits = QueueLimits {
        max_messages: 100,
        max_bytes: 25,
        ..QueueLimits::default()
    };
    let mut out = Outbound::new(limits, 1);
    for n in 0..5 {
        out.push(d(n, QoS::AtLeastOnce), false);
    }
    assert_eq!(out.queued(), 2);
    assert_eq!(out.queued_bytes(), 20);
    let mut big = d(9, QoS::AtLeastOnce);
    big.size = 26;
    assert!(
        !out.push(big, false),
        "a message over the byte bound never fits"
    );
}

#[test]
fn offline_qos0_is_dropped_unless_configured() {
    let mut out = Outbound::new(QueueLimits::default(), 1);
    assert!(!out.push(d(0, QoS::AtMostOnce), false));
    assert_eq!(out.drops().offline_qos0, 1);
    out.set_limits(QueueLimits {
        queue_qos0_offline: true,
        ..QueueLimits::default()
    });
    assert!(out.push(d(1, QoS::AtMostOnce), false));
}

#[test]
fn expired_messages_are_dropped_before_sending() {
    let now = Instant::now();
    let mut out = Outbound::new(QueueLimits::default(), 5);
    let mut old = d(0, QoS::AtLeastOnce);
    old.expires_at = Some(now);
    out.push(old, true);
    let mut fresh = d(1, QoS::AtLeastOnce);
    fresh.expires_at = Some(now + Duration::from_secs(5));
    out.push(fresh, true);
    assert_eq!(sent_msg(out.next_send(now)).0, 1);
    assert_eq!(out.drops().expired, 1);
    assert_eq!(out.queued_bytes(), 0);
}

#[test]
fn clear_forgets_queue_and_flight() {
    let now = Instant::now();
    let mut out = Outbound::new(QueueLimits::default(), 5);
    out.push(d(0, QoS::AtLeastOnce), true);
    out.push(d(1, QoS::AtLeastOnce), true);
    out.next_send(now);
    out.clear();
    assert_eq!(
        (out.queued(), out.inflight(), out.queued_bytes()),
        (0, 0, 0)
    );
    assert!(out.replay().is_empty());
}

#[test]
fn push_unbounded_ignores_the_bounds_but_keeps_order() {
    let limits = QueueLimits {
        max_messages: 1,
        ..QueueLimits::default()
    };
    let mut out = Outbound::new(limits, 10);
    for n in 0..3 {
        assert!(out.push_unbounded(d(n, QoS::AtLeastOnce)));
    }
    assert_eq!(out.queued(), 3);
    let now = Instant::now();
    for n in 0..3 {
        assert_eq!(sent_msg(out.next_send(now)).0, n);
    }
}

#[test]
fn push_unbounded_is_still_bounded_far_above_the_queue_bound() {
    let limits = QueueLimits {
        max_messages: 1,
        ..QueueLimits::default()
    };
    let mut out = Outbound::new(limits, 1);
    for n in 0..RETAINED_ALLOWANCE as u32 {
        assert!(out.push_unbounded(d(n, QoS::AtLeastOnce)));
    }
    assert!(!out.push_unbounded(d(0, QoS::AtLeastOnce)));
    assert_eq!(out.drops().queue_full, 1);
}

#[test]
fn take_where_removes_matching_deliveries_but_not_released_qos2() {
    let now = Instant::now();
    let mut out = Outbound::new(QueueLimits::default(), 2);
    out.push(d(1, QoS::AtLeastOnce), true); // in flight
    out.push(d(2, QoS::ExactlyOnce), true); // in flight, PUBREC received below
    out.push(d(3, QoS::AtLeastOnce), true); // queued
    out.push(d(4, QoS::AtLeastOnce), true); // queued
    out.next_send(now);
    out.next_send(now);
    out.pubrec(id(2)).expect("pubrec");
    let taken: Vec<u32> = out
        .take_where(|d| d.msg != 4)
        .into_iter()
        .map(|d| d.msg)
        .collect();
    assert_eq!(taken, vec![1, 3]);
    assert_eq!(out.inflight(), 1);
    assert_eq!(out.queued(), 1);
    assert_eq!(out.queued_bytes(), 10);
}

#[test]
fn dropped_messages_are_kept_for_the_store_only_when_asked() {
    let now = Instant::now();
    let limits = QueueLimits {
        max_messages: 1,
        ..QueueLimits::default()
    };
    let mut out = Outbound::new(limits, 1);
    out.push(d(0, QoS::AtLeastOnce), false);
    out.push(d(1, QoS::AtLeastOnce), false);
    assert!(out.take_dropped().is_empty(), "not kept unless asked");
    out.set_keep_dropped(true);
    out.push(d(2, QoS::AtLeastOnce), false);
    let mut expiring = d(3, QoS::AtLeastOnce);
    expiring.expires_at = Some(now);
    out.push(expiring, false);
    assert_eq!(out.take_dropped(), vec![1, 2], "evicted by the queue bound");
    assert_eq!(out.next_send(now), None, "the expired head is dropped");
    assert_eq!(out.take_dropped(), vec![3]);
}

#[test]
fn restored_deliveries_keep_their_packet_ids_states_and_order() {
    let now = Instant::now();
    let mut out = Outbound::new(QueueLimits::default(), 10);
    out.restore(
        d(0, QoS::ExactlyOnce),
        Some((id(7), InflightState::AwaitingPubComp)),
    );
    out.restore(
        d(1, QoS::AtLeastOnce),
        Some((id(9), InflightState::AwaitingPubAck)),
    );
    out.restore(d(2, QoS::AtLeastOnce), None);
    let replay = out.replay();
    assert_eq!(replay[0], Send::PubRel(id(7)));
    assert_eq!(sent_msg(Some(replay[1].clone())), (1, Some(id(9)), true));
    assert_eq!(out.queued(), 1);
    // New packet ids continue after the restored ones.
    assert_eq!(sent_msg(out.next_send(now)), (2, Some(id(10)), false));
    let states: Vec<_> = out.inflight_entries().map(|(_, i, s)| (i, s)).collect();
    assert_eq!(states[0], (id(7), InflightState::AwaitingPubComp));
}
