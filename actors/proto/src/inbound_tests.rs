//! Unit tests of the inbound QoS 2 state.

use super::*;

fn id(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero")
}

/// Connection ids, as the broker numbers them.
const C1: u64 = 1;
const C2: u64 = 2;

fn all_due(inbound: &mut InboundQos2<u64>, current: Option<u64>) -> Vec<u16> {
    std::iter::from_fn(|| inbound.due(current))
        .map(|i| i.get())
        .collect()
}

#[test]
fn a_new_id_is_routed_and_its_pubrec_waits_for_the_route() {
    let mut inbound = InboundQos2::default();
    assert_eq!(inbound.publish(id(1), C1, 10), Arrival::Route);
    assert_eq!(all_due(&mut inbound, Some(C1)), Vec::<u16>::new());
    inbound.routed(id(1));
    assert_eq!(all_due(&mut inbound, Some(C1)), [1]);
    assert!(inbound.contains(id(1)));
    assert!(inbound.release(id(1)));
    assert!(!inbound.contains(id(1)));
    assert!(inbound.is_empty());
}

#[test]
fn pubrecs_go_in_the_order_the_publishes_came_whatever_order_the_routes_finish_in() {
    let mut inbound = InboundQos2::default();
    for n in 1..=3 {
        assert_eq!(inbound.publish(id(n), C1, 10), Arrival::Route);
    }
    inbound.routed(id(3));
    inbound.routed(id(2));
    assert_eq!(all_due(&mut inbound, Some(C1)), Vec::<u16>::new());
    inbound.routed(id(1));
    assert_eq!(all_due(&mut inbound, Some(C1)), [1, 2, 3]);
}

/// [MQTT-4.3.3-10] and [MQTT-4.6.0-3]: a resend of a routed id is answered without a second
/// route, but still after the PUBRECs of what came before it.
#[test]
fn a_resend_is_not_routed_again_and_its_pubrec_keeps_its_place() {
    let mut inbound = InboundQos2::default();
    assert_eq!(inbound.publish(id(1), C1, 10), Arrival::Route);
    inbound.routed(id(1));
    assert_eq!(all_due(&mut inbound, Some(C1)), [1]);
    assert_eq!(inbound.publish(id(2), C1, 10), Arrival::Route);
    assert_eq!(inbound.publish(id(1), C1, 10), Arrival::Duplicate);
    assert_eq!(all_due(&mut inbound, Some(C1)), Vec::<u16>::new());
    inbound.routed(id(2));
    assert_eq!(all_due(&mut inbound, Some(C1)), [2, 1]);
}

#[test]
fn resends_during_the_route_each_get_a_pubrec_once_it_is_confirmed() {
    let mut inbound = InboundQos2::default();
    assert_eq!(inbound.publish(id(7), C1, 10), Arrival::Route);
    for _ in 0..3 {
        assert_eq!(inbound.publish(id(7), C1, 10), Arrival::Duplicate);
    }
    assert_eq!(all_due(&mut inbound, Some(C1)), Vec::<u16>::new());
    inbound.routed(id(7));
    assert_eq!(all_due(&mut inbound, Some(C1)), [7, 7, 7, 7]);
}

/// The defect this type was made for: the client sent PUBLISH 5 on its first connection, lost
/// it before the PUBREC, and resent PUBLISH 5 on its second one while the first copy was still
/// being routed. The second connection asked once and is answered once (before: twice, the
/// old connection's PUBREC going to the new one too).
#[test]
fn a_pubrec_owed_to_a_connection_that_is_gone_is_not_sent_on_the_next_one() {
    let mut inbound = InboundQos2::default();
    assert_eq!(inbound.publish(id(5), C1, 10), Arrival::Route);
    // The client reconnects and resends, DUP set.
    assert_eq!(inbound.publish(id(5), C2, 10), Arrival::Duplicate);
    inbound.routed(id(5));
    assert_eq!(all_due(&mut inbound, Some(C2)), [5]);
    assert!(inbound.contains(id(5)));
    assert_eq!(inbound.len(), 1, "routed once, unreleased until PUBREL");
}

/// A PUBREC owed to a gone connection does not hold up those of the new one either.
#[test]
fn an_unrouted_pubrec_of_a_gone_connection_does_not_hold_up_the_new_ones() {
    let mut inbound = InboundQos2::default();
    assert_eq!(inbound.publish(id(1), C1, 10), Arrival::Route);
    assert_eq!(inbound.publish(id(2), C2, 10), Arrival::Route);
    inbound.routed(id(2));
    assert_eq!(all_due(&mut inbound, Some(C2)), [2]);
    // The first copy's route ends later; nobody is owed its PUBREC any more, and a resend on
    // the new connection is answered without routing it again.
    inbound.routed(id(1));
    assert_eq!(all_due(&mut inbound, Some(C2)), Vec::<u16>::new());
    assert_eq!(inbound.publish(id(1), C2, 10), Arrival::Duplicate);
    assert_eq!(all_due(&mut inbound, Some(C2)), [1]);
}

#[test]
fn while_offline_nothing_is_due_and_nothing_stays_owed() {
    let mut inbound = InboundQos2::default();
    assert_eq!(inbound.publish(id(1), C1, 10), Arrival::Route);
    inbound.routed(id(1));
    assert_eq!(all_due(&mut inbound, None), Vec::<u16>::new());
    assert_eq!(all_due(&mut inbound, Some(C1)), Vec::<u16>::new());
    assert!(inbound.contains(id(1)), "the id stays until PUBREL");
}

/// [MQTT-3.3.4-9]: unreleased ids count against the Receive Maximum, across connections;
/// resends do not.
#[test]
fn new_ids_past_the_receive_maximum_are_refused_and_resends_are_not() {
    let mut inbound = InboundQos2::default();
    assert_eq!(inbound.publish(id(1), C1, 2), Arrival::Route);
    assert_eq!(inbound.publish(id(2), C1, 2), Arrival::Route);
    assert_eq!(inbound.publish(id(3), C1, 2), Arrival::OverReceiveMaximum);
    assert_eq!(inbound.publish(id(2), C2, 2), Arrival::Duplicate);
    assert!(inbound.release(id(1)));
    assert_eq!(inbound.publish(id(3), C2, 2), Arrival::Route);
}

#[test]
fn a_failed_route_forgets_the_id_and_names_the_connections_that_were_owed_a_pubrec() {
    let mut inbound = InboundQos2::default();
    assert_eq!(inbound.publish(id(1), C1, 10), Arrival::Route);
    assert_eq!(inbound.publish(id(2), C1, 10), Arrival::Route);
    assert_eq!(inbound.publish(id(1), C2, 10), Arrival::Duplicate);
    assert_eq!(inbound.route_failed(id(1)), [C1, C2]);
    assert!(!inbound.contains(id(1)));
    inbound.routed(id(2));
    assert_eq!(all_due(&mut inbound, Some(C1)), [2]);
    // A resend is a new message now.
    assert_eq!(inbound.publish(id(1), C1, 10), Arrival::Route);
}

#[test]
fn a_release_ahead_of_its_pubrec_still_gets_the_pubrec() {
    let mut inbound = InboundQos2::default();
    assert_eq!(inbound.publish(id(4), C1, 10), Arrival::Route);
    assert!(inbound.release(id(4)));
    assert!(!inbound.release(id(4)), "a second release finds nothing");
    inbound.routed(id(4));
    assert_eq!(all_due(&mut inbound, Some(C1)), [4]);
    assert!(inbound.is_empty());
}

#[test]
fn a_restored_id_is_answered_as_a_resend() {
    let mut inbound = InboundQos2::default();
    inbound.restore(id(9));
    assert_eq!(inbound.publish(id(9), C1, 10), Arrival::Duplicate);
    assert_eq!(all_due(&mut inbound, Some(C1)), [9]);
}
