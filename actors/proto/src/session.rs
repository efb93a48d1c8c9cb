//! The outbound half of a session: packet ids, the in-flight window, the bounded queue.
//!
//! Sans-IO and generic over the message type `M` (the broker uses `Arc<Message>`): the Session
//! actor pushes deliveries in, asks what to send next, and feeds acknowledgements back. Time is
//! passed in, so expiry is tested without a clock.
//!
//! Invariants:
//! - at most `window` QoS 1/2 messages are in flight (sent, not completely acknowledged);
//! - in-flight messages keep the order they were sent in, and are replayed in that order on
//!   reconnect (PUBLISH with DUP=1, or PUBREL once PUBREC was received) [MQTT-4.4.0-1];
//! - a replay resends no more PUBLISH packets than the new connection's window allows
//!   [MQTT-3.3.4-9]: the rest stay in flight, marked for resending, and go out (before anything
//!   queued) as acknowledgements free the window;
//! - a packet id is never reused while in flight;
//! - the queue never holds more than `max_messages` messages nor (when set) `max_bytes` bytes:
//!   past that, deliveries are dropped per the policy, and counted.

use std::collections::VecDeque;
use std::num::NonZeroU16;
use std::time::Instant;

use crate::packet::{PacketId, QoS};

/// Messages `push_unbounded` may queue whatever the queue bound (at least twice the bound).
pub const RETAINED_ALLOWANCE: usize = 10_000;

/// What to do when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DropPolicy {
    /// Drop the oldest queued message to make room: subscribers see the freshest data.
    #[default]
    DropOldest,
    /// Drop the message that does not fit.
    DropNewest,
}

/// Limits of one session's outbound state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most messages waiting (not yet in flight).
    pub max_messages: usize,
    /// Most payload bytes waiting; 0 means no byte limit.
    pub max_bytes: usize,
    /// Which message goes when full.
    pub policy: DropPolicy,
    /// Queue QoS 0 messages while the client is offline (otherwise they are dropped).
    pub queue_qos0_offline: bool,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_messages: 1000,
            max_bytes: 0,
            policy: DropPolicy::DropOldest,
            queue_qos0_offline: false,
        }
    }
}

/// One message for this session, as the router delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery<M> {
    /// The shared message.
    pub msg: M,
    /// Delivery QoS.
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers to send (MQTT 5).
    pub subscription_ids: Vec<u32>,
    /// When the message expires (MQTT 5 Message Expiry Interval); `None` never.
    pub expires_at: Option<Instant>,
    /// Payload size, for the byte bound of the queue.
    pub size: usize,
}

/// Where an in-flight message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflightState {
    /// QoS 1, waiting for PUBACK.
    AwaitingPubAck,
    /// QoS 2, waiting for PUBREC.
    AwaitingPubRec,
    /// QoS 2, PUBREC received and PUBREL sent, waiting for PUBCOMP.
    AwaitingPubComp,
}

#[derive(Debug, Clone)]
struct Inflight<M> {
    id: PacketId,
    state: InflightState,
    delivery: Delivery<M>,
    /// Not yet resent on this connection: a replay left it for when the window has room.
    resend: bool,
}

/// A packet the session should send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Send<M> {
    /// A PUBLISH; `packet_id` is `Some` for QoS 1/2, `dup` on replays.
    Publish {
        /// The delivery.
        delivery: Delivery<M>,
        /// Its packet id (QoS 1/2).
        packet_id: Option<PacketId>,
        /// DUP flag.
        dup: bool,
    },
    /// A PUBREL for a QoS 2 message whose PUBREC came.
    PubRel(PacketId),
}

/// Why an acknowledgement was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// No in-flight message has this id (MQTT 5: 0x92).
    #[error("packet identifier not found")]
    NotFound,
    /// The message with this id is not waiting for this kind of acknowledgement.
    #[error("unexpected acknowledgement for the packet identifier's state")]
    WrongState,
}

/// Counters of what the queue dropped, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DropCounts {
    /// Dropped because the queue was full.
    pub queue_full: u64,
    /// Dropped because they expired before they could be sent.
    pub expired: u64,
    /// QoS 0 messages dropped while the client was offline.
    pub offline_qos0: u64,
}

/// The outbound state of one session.
#[derive(Debug, Clone)]
pub struct Outbound<M> {
    limits: QueueLimits,
    window: u16,
    queue: VecDeque<Delivery<M>>,
    queued_bytes: usize,
    inflight: VecDeque<Inflight<M>>,
    /// In-flight entries marked `resend` (at most the 65 535 packet ids).
    resends: u16,
    next_id: u16,
    drops: DropCounts,
    /// Whether dropped messages are kept for `take_dropped` (a durable session removes them
    /// from its store).
    keep_dropped: bool,
    dropped: Vec<M>,
}

impl<M: Clone> Outbound<M> {
    /// Empty state with these limits and a window of `window` in-flight messages (>= 1).
    pub fn new(limits: QueueLimits, window: u16) -> Outbound<M> {
        Outbound {
            limits,
            window: window.max(1),
            queue: VecDeque::new(),
            queued_bytes: 0,
            inflight: VecDeque::new(),
            resends: 0,
            next_id: 1,
            drops: DropCounts::default(),
            keep_dropped: false,
            dropped: Vec::new(),
        }
    }

    /// Keep the messages the queue drops (queue full, expired) for `take_dropped`, or not.
    pub fn set_keep_dropped(&mut self, keep: bool) {
        self.keep_dropped = keep;
        if !keep {
            self.dropped = Vec::new();
        }
    }

    /// The messages dropped since the last call (only while `set_keep_dropped(true)`).
    pub fn take_dropped(&mut self) -> Vec<M> {
        std::mem::take(&mut self.dropped)
    }

    fn note_dropped(&mut self, delivery: Delivery<M>) {
        if self.keep_dropped {
            self.dropped.push(delivery.msg);
        }
    }

    /// Puts back a delivery recovered from durable storage: in flight with its packet id and
    /// state, or (`None`) at the back of the queue, whatever the bounds (it was accepted
    /// before). Call in the original order.
    pub fn restore(&mut self, delivery: Delivery<M>, inflight: Option<(PacketId, InflightState)>) {
        match inflight {
            Some((id, state)) => {
                self.next_id = id.get().checked_add(1).unwrap_or(1);
                self.inflight.push_back(Inflight {
                    id,
                    state,
                    delivery,
                    resend: false,
                });
            }
            None => {
                self.queued_bytes += delivery.size;
                self.queue.push_back(delivery);
            }
        }
    }

    /// Every in-flight delivery with its packet id and state, oldest first.
    pub fn inflight_entries(
        &self,
    ) -> impl Iterator<Item = (&Delivery<M>, PacketId, InflightState)> {
        self.inflight.iter().map(|f| (&f.delivery, f.id, f.state))
    }

    /// Sets the in-flight window: min(the client's Receive Maximum, the broker's limit).
    pub fn set_window(&mut self, window: u16) {
        self.window = window.max(1);
    }

    /// Changes the queue limits (existing messages stay until sent or dropped).
    pub fn set_limits(&mut self, limits: QueueLimits) {
        self.limits = limits;
    }

    /// What was dropped so far.
    pub fn drops(&self) -> DropCounts {
        self.drops
    }

    /// Messages waiting to be sent.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Payload bytes waiting to be sent.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// QoS 1/2 messages sent and not completely acknowledged.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Forgets everything (clean start, or the session ended).
    pub fn clear(&mut self) {
        self.queue.clear();
        self.queued_bytes = 0;
        self.inflight.clear();
        self.resends = 0;
    }

    /// Adds a delivery at the back of the queue. `online` tells whether the client is
    /// connected: QoS 0 messages for an offline client are dropped unless configured otherwise.
    /// Returns false when the delivery itself was dropped.
    pub fn push(&mut self, delivery: Delivery<M>, online: bool) -> bool {
        if !online && delivery.qos == QoS::AtMostOnce && !self.limits.queue_qos0_offline {
            self.drops.offline_qos0 += 1;
            return false;
        }
        while self.is_full_for(delivery.size) {
            match self.limits.policy {
                DropPolicy::DropNewest => {
                    self.drops.queue_full += 1;
                    return false;
                }
                DropPolicy::DropOldest => match self.queue.pop_front() {
                    Some(old) => {
                        self.queued_bytes -= old.size;
                        self.drops.queue_full += 1;
                        self.note_dropped(old);
                    }
                    None => {
                        // A single message larger than the byte bound never fits.
                        self.drops.queue_full += 1;
                        return false;
                    }
                },
            }
        }
        self.queued_bytes += delivery.size;
        self.queue.push_back(delivery);
        true
    }

    /// Adds a delivery beyond the queue bounds, up to `RETAINED_ALLOWANCE` (or twice the bound):
    /// for messages whose payload is held elsewhere anyway (retained messages sent at subscribe
    /// time), so that a subscriber gets all of them. Counted in the queue's size like any other.
    pub fn push_unbounded(&mut self, delivery: Delivery<M>) -> bool {
        // Still bounded, far above the queue bound: repeated subscriptions by a client that
        // never reads must not grow the queue without end.
        if self.queue.len()
            >= self
                .limits
                .max_messages
                .saturating_mul(2)
                .max(RETAINED_ALLOWANCE)
        {
            self.drops.queue_full += 1;
            return false;
        }
        self.queued_bytes += delivery.size;
        self.queue.push_back(delivery);
        true
    }

    fn is_full_for(&self, size: usize) -> bool {
        self.queue.len() >= self.limits.max_messages
            || (self.limits.max_bytes > 0 && self.queued_bytes + size > self.limits.max_bytes)
    }

    /// The next queued message that may be sent now, moving QoS 1/2 into flight with a fresh
    /// packet id. `None` when the queue is empty, or its head is QoS 1/2 and the window is full
    /// (QoS 0 behind it waits too, so order per subscription is kept). Expired messages are
    /// dropped on the way.
    pub fn next_send(&mut self, now: Instant) -> Option<Send<M>> {
        if self.resends > 0 {
            // What a replay held back goes first, in order, as the window allows.
            if self.inflight.len() - usize::from(self.resends) >= usize::from(self.window) {
                return None;
            }
            let f = self.inflight.iter_mut().find(|f| f.resend)?;
            f.resend = false;
            self.resends -= 1;
            return Some(Send::Publish {
                delivery: f.delivery.clone(),
                packet_id: Some(f.id),
                dup: true,
            });
        }
        loop {
            let head = self.queue.front()?;
            if head.expires_at.is_some_and(|at| at <= now) {
                if let Some(expired) = self.queue.pop_front() {
                    self.queued_bytes -= expired.size;
                    self.drops.expired += 1;
                    self.note_dropped(expired);
                }
                continue;
            }
            if head.qos != QoS::AtMostOnce && self.inflight.len() >= usize::from(self.window) {
                return None;
            }
            let delivery = self.queue.pop_front()?;
            self.queued_bytes -= delivery.size;
            if delivery.qos == QoS::AtMostOnce {
                return Some(Send::Publish {
                    delivery,
                    packet_id: None,
                    dup: false,
                });
            }
            let id = self.allocate_id();
            let state = if delivery.qos == QoS::AtLeastOnce {
                InflightState::AwaitingPubAck
            } else {
                InflightState::AwaitingPubRec
            };
            self.inflight.push_back(Inflight {
                id,
                state,
                delivery: delivery.clone(),
                resend: false,
            });
            return Some(Send::Publish {
                delivery,
                packet_id: Some(id),
                dup: false,
            });
        }
    }

    fn allocate_id(&mut self) -> PacketId {
        loop {
            let candidate = self.next_id;
            self.next_id = if self.next_id == u16::MAX {
                1
            } else {
                self.next_id + 1
            };
            if let Some(id) = NonZeroU16::new(candidate) {
                if !self.inflight.iter().any(|f| f.id == id) {
                    return id;
                }
            }
        }
    }

    fn position(&self, id: PacketId) -> Option<usize> {
        self.inflight.iter().position(|f| f.id == id)
    }

    /// Removes the in-flight entry at `i`, returning its delivery.
    fn complete(&mut self, i: usize) -> Result<Delivery<M>, AckError> {
        let f = self.inflight.remove(i).ok_or(AckError::NotFound)?;
        if f.resend {
            self.resends -= 1;
        }
        Ok(f.delivery)
    }

    /// PUBACK for a QoS 1 message: it is done; returns it.
    pub fn puback(&mut self, id: PacketId) -> Result<Delivery<M>, AckError> {
        let i = self.position(id).ok_or(AckError::NotFound)?;
        if self.inflight[i].state != InflightState::AwaitingPubAck {
            return Err(AckError::WrongState);
        }
        self.complete(i)
    }

    /// PUBREC for a QoS 2 message: the caller sends PUBREL (also for a repeated PUBREC).
    /// Returns the message, now awaiting PUBCOMP.
    pub fn pubrec(&mut self, id: PacketId) -> Result<&Delivery<M>, AckError> {
        let i = self.position(id).ok_or(AckError::NotFound)?;
        let entry = &mut self.inflight[i];
        match entry.state {
            InflightState::AwaitingPubRec | InflightState::AwaitingPubComp => {
                entry.state = InflightState::AwaitingPubComp;
                if std::mem::take(&mut entry.resend) {
                    // The client had it from the last connection: PUBREL follows, not it.
                    self.resends -= 1;
                }
                Ok(&entry.delivery)
            }
            InflightState::AwaitingPubAck => Err(AckError::WrongState),
        }
    }

    /// PUBREC with a failure reason (MQTT 5): the message is done, no PUBREL follows.
    pub fn pubrec_failed(&mut self, id: PacketId) -> Result<Delivery<M>, AckError> {
        let i = self.position(id).ok_or(AckError::NotFound)?;
        if self.inflight[i].state != InflightState::AwaitingPubRec {
            return Err(AckError::WrongState);
        }
        self.complete(i)
    }

    /// Drops an in-flight message without sending it again, as if it had been acknowledged:
    /// for one that no longer fits the client's Maximum Packet Size ([MQTT-3.1.2-25]).
    pub fn discard(&mut self, id: PacketId) -> Result<Delivery<M>, AckError> {
        let i = self.position(id).ok_or(AckError::NotFound)?;
        self.complete(i)
    }

    /// PUBCOMP for a QoS 2 message: it is done; returns it.
    pub fn pubcomp(&mut self, id: PacketId) -> Result<Delivery<M>, AckError> {
        let i = self.position(id).ok_or(AckError::NotFound)?;
        if self.inflight[i].state != InflightState::AwaitingPubComp {
            return Err(AckError::WrongState);
        }
        self.complete(i)
    }

    /// Removes and returns the deliveries for which `pred` holds: queued ones, and QoS 1 ones in
    /// flight. QoS 2 messages in flight stay: the client may already hold them, and delivering
    /// them elsewhere would deliver them twice ([MQTT-4.8.2-4] has their delivery finished with
    /// this client). For handing a departing client's messages to someone else (shared
    /// subscriptions).
    pub fn take_where(&mut self, mut pred: impl FnMut(&Delivery<M>) -> bool) -> Vec<Delivery<M>> {
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(self.inflight.len());
        for f in self.inflight.drain(..) {
            if f.state == InflightState::AwaitingPubAck && pred(&f.delivery) {
                if f.resend {
                    self.resends -= 1;
                }
                taken.push(f.delivery);
            } else {
                kept.push_back(f);
            }
        }
        self.inflight = kept;
        let mut queue = VecDeque::with_capacity(self.queue.len());
        for d in self.queue.drain(..) {
            if pred(&d) {
                self.queued_bytes -= d.size;
                taken.push(d);
            } else {
                queue.push_back(d);
            }
        }
        self.queue = queue;
        taken
    }

    /// What to resend on a reconnect, in the original order: PUBREL for QoS 2 messages whose
    /// PUBREC came, and PUBLISH with DUP=1 for messages not yet acknowledged
    /// ([MQTT-4.4.0-1]), as many of those as the window (set for the new connection first)
    /// allows: a client may have reconnected with a smaller Receive Maximum ([MQTT-3.3.4-9];
    /// a PUBREL takes no send quota). The PUBLISH packets past it stay in flight, marked, and
    /// `next_send` resends them in order as acknowledgements make room.
    pub fn replay(&mut self) -> Vec<Send<M>> {
        let window = usize::from(self.window);
        let mut out = Vec::with_capacity(self.inflight.len().min(window));
        let (mut publishes, mut held) = (0, 0u16);
        for f in &mut self.inflight {
            f.resend = false;
            match f.state {
                InflightState::AwaitingPubComp => out.push(Send::PubRel(f.id)),
                _ if publishes < window => {
                    publishes += 1;
                    out.push(Send::Publish {
                        delivery: f.delivery.clone(),
                        packet_id: Some(f.id),
                        dup: true,
                    });
                }
                _ => {
                    f.resend = true;
                    held += 1;
                }
            }
        }
        self.resends = held;
        out
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
