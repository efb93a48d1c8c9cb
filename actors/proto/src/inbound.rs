//! The receiving half of QoS 2 for one session: packet ids not yet released, and the PUBRECs
//! owed for them.
//!
//! Sans-IO and generic over the connection id `C`: the Session actor reports each QoS 2
//! PUBLISH (with the connection it came on), the outcome of each route, and each PUBREL, and
//! asks which PUBRECs are due for the connection it has now.
//!
//! The rules, in one place:
//! - [MQTT-4.3.3-8]: a PUBLISH with a new packet id is routed once; its PUBREC waits until the
//!   route is confirmed (the broker then owns the message).
//! - [MQTT-4.3.3-10]: until PUBREL, every PUBLISH with that id gets a PUBREC of its own and is
//!   not routed again; a resend that comes while the first copy is still being routed gets its
//!   PUBREC once that route is confirmed.
//! - [MQTT-4.6.0-3]: PUBRECs go out in the order their PUBLISH packets were received.
//! - Every PUBLISH is answered on the connection it came on, exactly once (or the connection is
//!   closed). A PUBREC owed to a connection that is gone is dropped: its client resends the
//!   PUBLISH on its new connection ([MQTT-4.4.0-1]) and gets its own PUBREC there. Sending the
//!   old one on the new connection as well would answer one PUBLISH twice, and the Connection
//!   counts one PUBREC per QoS 2 PUBLISH it passed on (its routing window).
//! - [MQTT-3.3.4-9]: more unreleased ids than the Receive Maximum the broker announced is a
//!   protocol error (`Arrival::OverReceiveMaximum`).
//! - [MQTT-4.3.3-11]: PUBREL releases the id (`release`); the caller answers PUBCOMP.

use std::collections::{HashSet, VecDeque};

use crate::packet::PacketId;

/// What to do with a QoS 2 PUBLISH (see `InboundQos2::publish`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// A new packet id: route the message, then report the outcome (`routed`, `route_failed`).
    Route,
    /// A resend of an unreleased id: not routed again; its PUBREC is queued (see `due`).
    Duplicate,
    /// A new id past the Receive Maximum: refuse it (close the connection, 0x93).
    OverReceiveMaximum,
}

/// A PUBREC owed to the connection a PUBLISH came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owed<C> {
    id: PacketId,
    conn: C,
    /// The route of the id's first copy is confirmed.
    routed: bool,
}

/// Inbound QoS 2 state of one session; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundQos2<C> {
    /// Ids received and not yet released by PUBREL.
    unreleased: HashSet<PacketId>,
    /// Ids whose first copy is still being routed.
    routing: HashSet<PacketId>,
    /// PUBRECs owed, in the order their PUBLISH packets came.
    owed: VecDeque<Owed<C>>,
}

impl<C> Default for InboundQos2<C> {
    fn default() -> Self {
        InboundQos2 {
            unreleased: HashSet::new(),
            routing: HashSet::new(),
            owed: VecDeque::new(),
        }
    }
}

impl<C: Copy + Eq> InboundQos2<C> {
    /// Ids not yet released.
    pub fn len(&self) -> usize {
        self.unreleased.len()
    }

    /// Nothing unreleased and nothing owed: the state can be dropped.
    pub fn is_empty(&self) -> bool {
        self.unreleased.is_empty() && self.routing.is_empty() && self.owed.is_empty()
    }

    /// Whether `id` was received and not yet released.
    pub fn contains(&self, id: PacketId) -> bool {
        self.unreleased.contains(&id)
    }

    /// Puts back an unreleased id whose message was routed before (recovered from the store,
    /// or a release the store did not record).
    pub fn restore(&mut self, id: PacketId) {
        self.unreleased.insert(id);
    }

    /// A QoS 2 PUBLISH with `id` came on connection `conn`; `receive_maximum` is what the
    /// broker announced to it.
    pub fn publish(&mut self, id: PacketId, conn: C, receive_maximum: u16) -> Arrival {
        if self.unreleased.contains(&id) {
            let routed = !self.routing.contains(&id);
            self.owed.push_back(Owed { id, conn, routed });
            return Arrival::Duplicate;
        }
        if self.unreleased.len() >= usize::from(receive_maximum) {
            return Arrival::OverReceiveMaximum;
        }
        self.unreleased.insert(id);
        self.routing.insert(id);
        self.owed.push_back(Owed {
            id,
            conn,
            routed: false,
        });
        Arrival::Route
    }

    /// The route of `id`'s first copy is confirmed: its PUBRECs (and those queued behind
    /// them) may go (`due`).
    pub fn routed(&mut self, id: PacketId) {
        self.routing.remove(&id);
        for owed in self.owed.iter_mut().filter(|o| o.id == id) {
            owed.routed = true;
        }
    }

    /// `id`'s first copy could not be routed: the id is forgotten, with every PUBREC owed for
    /// it, so that a resend is routed afresh. Returns the connections that were owed one (they
    /// must be closed, so their clients resend rather than wait).
    pub fn route_failed(&mut self, id: PacketId) -> Vec<C> {
        self.unreleased.remove(&id);
        self.routing.remove(&id);
        let mut owed_to = Vec::new();
        self.owed.retain(|o| {
            if o.id != id {
                return true;
            }
            if !owed_to.contains(&o.conn) {
                owed_to.push(o.conn);
            }
            false
        });
        owed_to
    }

    /// The next PUBREC to send on `current` (the session's connection now, if any): the oldest
    /// owed one, once its route is confirmed. PUBRECs owed to other connections are dropped on
    /// the way (see the module docs). Call until `None`.
    pub fn due(&mut self, current: Option<C>) -> Option<PacketId> {
        while let Some(head) = self.owed.front().copied() {
            if Some(head.conn) != current {
                self.owed.pop_front();
                continue;
            }
            if !head.routed {
                return None;
            }
            self.owed.pop_front();
            return Some(head.id);
        }
        None
    }

    /// PUBREL for `id`: it is released; whether it was known. A PUBREC still owed for it
    /// (a PUBREL ahead of its PUBREC) is still sent.
    pub fn release(&mut self, id: PacketId) -> bool {
        self.unreleased.remove(&id)
    }
}

#[cfg(test)]
#[path = "inbound_tests.rs"]
mod tests;
