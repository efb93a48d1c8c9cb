//! A session's traffic with its client: deliveries out (through the in-flight window, the
//! bounded queue and the connection's write budget), acknowledgements back, and inbound QoS 2.
//!
//! Flow control has two bounds. The in-flight window (the client's Receive Maximum, capped by
//! `max_inflight_messages`) bounds unacknowledged QoS 1/2 messages. The write budget
//! (`max_in_transit`) bounds delivery bytes handed to the Connection and not yet written to the
//! socket; the Connection reports writes with `Flushed`. What does not fit waits in the bounded
//! queue, so a client that stops reading costs at most its queue, never the broker's memory.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use slog::{debug, warn};
use starling_proto::inbound::Arrival;
use starling_proto::session::{AckError, Delivery, InflightState, Send};
use starling_proto::{encoded_len, Packet, Protocol, PubResponse, Publish, ReasonCode};

use super::Session;
use crate::msg::{
    outbound_weight, ClientAck, Deliver, Flushed, InboundPubRel, InboundQos2, Kick, Message,
    Outbound, OutboundBatch, Routed, TakeDeliveries,
};

/// How often (at most) drop counters are logged.
const DROP_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

impl Session {
    /// Sends queued messages while the window and the write budget allow.
    pub(super) fn pump(&mut self) {
        let Some(link) = &self.link else {
            self.report();
            return;
        };
        let protocol = link.protocol;
        let now = Instant::now();
        // Everything this pump sends goes to the connection as one message; a single packet
        // needs no vector.
        let mut first = None;
        let mut batch = Vec::new();
        while self.in_transit < self.shared.config.max_in_transit {
            let Some(send) = self.out.next_send(now) else {
                break;
            };
            // Checked again as it goes out: it may have been queued while the client was
            // offline, or before it reconnected with a smaller Maximum Packet Size.
            let Some(send) = self.unless_too_large(send, protocol, now) else {
                continue;
            };
            if let Send::Publish {
                delivery,
                packet_id: Some(id),
                ..
            } = &send
            {
                let state = if delivery.qos == starling_proto::QoS::ExactlyOnce {
                    InflightState::AwaitingPubRec
                } else {
                    InflightState::AwaitingPubAck
                };
                self.store_progress(delivery, Some((*id, state)));
            }
            let packet = self.to_packet(send, protocol, now);
            self.in_transit += outbound_weight(&packet);
            match first.take() {
                None if batch.is_empty() => first = Some(packet),
                Some(earlier) => batch.extend([earlier, packet]),
                None => batch.push(packet),
            }
        }
        if let Some(link) = &self.link {
            if let Some(packet) = first {
                link.addr.do_send(Outbound(packet));
            } else if !batch.is_empty() {
                link.addr.do_send(OutboundBatch(batch));
            }
        }
        self.release_dropped();
        self.report();
    }

    /// In-flight messages to resend after a reconnect, as packets, counted as in transit.
    pub(super) fn replay(&mut self, protocol: Protocol) -> Vec<Packet> {
        let now = Instant::now();
        let mut packets = Vec::new();
        for send in self.out.replay() {
            if let Some(send) = self.unless_too_large(send, protocol, now) {
                packets.push(self.to_packet(send, protocol, now));
            }
        }
        self.in_transit += packets.iter().map(outbound_weight).sum::<usize>();
        packets
    }

    fn to_packet(&self, send: Send<Routed>, protocol: Protocol, now: Instant) -> Packet {
        match send {
            Send::PubRel(id) => Packet::PubRel(PubResponse::success(id)),
            Send::Publish {
                delivery,
                packet_id,
                dup,
            } => Packet::Publish(publish_packet(&delivery, packet_id, dup, protocol, now)),
        }
    }

    fn note_drop(&mut self) {
        let now = Instant::now();
        if self
            .drops_logged_at
            .is_none_or(|at| now.duration_since(at) >= DROP_LOG_INTERVAL)
        {
            self.drops_logged_at = Some(now);
            let drops = self.out.drops();
            warn!(self.log(), "dropping messages for a slow or offline client";
                "queue_full" => drops.queue_full,
                "offline_qos0" => drops.offline_qos0,
                "expired" => drops.expired,
                "too_large" => self.dropped_too_large,
                "queued" => self.out.queued());
        }
    }

    /// Queues a delivery for the client and sends what may go now. Retained messages sent at
    /// subscribe time skip the queue bound: their payloads are shared with the RetainStore, so
    /// queueing them costs a pointer each, and a subscriber must get all of them.
    pub(super) fn deliver(&mut self, delivery: Delivery<Routed>, bounded: bool) {
        self.enqueue(delivery, bounded);
        self.pump();
    }

    /// Queues a delivery (or drops it, as the queue's policy says), without sending anything
    /// yet. The client's Maximum Packet Size is checked as it goes out (`unless_too_large`).
    fn enqueue(&mut self, delivery: Delivery<Routed>, bounded: bool) {
        let online = self.link.is_some();
        let stored = delivery.msg.stored.map(|_| delivery.msg.clone());
        let queued = if bounded {
            self.out.push(delivery, online)
        } else {
            self.out.push_unbounded(delivery)
        };
        if !queued {
            if let Some(routed) = stored {
                self.release_stored(&routed);
            }
            self.note_drop();
        }
    }

    /// `send`, unless it is a PUBLISH larger than the client's Maximum Packet Size: that one is
    /// discarded as if it had been sent ([MQTT-3.1.2-25]), and a QoS 1/2 one leaves the
    /// in-flight window as if acknowledged.
    fn unless_too_large(
        &mut self,
        send: Send<Routed>,
        protocol: Protocol,
        now: Instant,
    ) -> Option<Send<Routed>> {
        let Send::Publish {
            delivery,
            packet_id,
            ..
        } = &send
        else {
            return Some(send);
        };
        if !too_large_for(delivery, protocol, self.max_packet_size, now) {
            return Some(send);
        }
        match packet_id {
            Some(id) => {
                if let Ok(discarded) = self.out.discard(*id) {
                    self.release_stored(&discarded.msg);
                }
            }
            None => self.release_stored(&delivery.msg),
        }
        self.dropped_too_large += 1;
        self.note_drop();
        None
    }
}

/// Whether the PUBLISH for `delivery` would exceed the client's Maximum Packet Size `max`
/// ([MQTT-3.1.2-25]). An upper bound is tried first (fixed header, topic, packet id, payload,
/// and on MQTT 5 the message's properties plus the expiry interval and subscription
/// identifiers added for this subscriber); the exact size is computed only near the limit.
fn too_large_for(
    delivery: &Delivery<Routed>,
    protocol: Protocol,
    max: Option<u32>,
    now: Instant,
) -> bool {
    let Some(max) = max else {
        return false;
    };
    let max = max as usize;
    let msg = &delivery.msg;
    let mut bound = 5 + 2 + msg.topic.as_str().len() + 2 + msg.payload.len();
    if protocol.is_v5() {
        let own = msg
            .properties
            .as_deref()
            .map_or(Ok(0), starling_proto::properties_len);
        let Ok(own) = own else {
            return true;
        };
        // Up to 4 more bytes of length prefix, 5 for the expiry, 5 per identifier.
        bound += 4 + own + 5 + 5 * delivery.subscription_ids.len();
    }
    if bound <= max {
        return false;
    }
    let packet_id =
        (delivery.qos != starling_proto::QoS::AtMostOnce).then_some(starling_proto::PacketId::MIN);
    let probe = publish_packet(delivery, packet_id, false, protocol, now);
    encoded_len(&Packet::Publish(probe), protocol).map_or(true, |len| len > max)
}

/// The PUBLISH for a delivery: the message's properties with the remaining expiry interval and
/// this subscriber's subscription identifiers (MQTT 5 only).
fn publish_packet(
    delivery: &Delivery<Routed>,
    packet_id: Option<starling_proto::PacketId>,
    dup: bool,
    protocol: Protocol,
    now: Instant,
) -> Publish {
    let msg = &delivery.msg;
    let properties = if protocol.is_v5()
        && (msg.properties.is_some()
            || !delivery.subscription_ids.is_empty()
            || msg.expires_at.is_some())
    {
        let mut props = msg.properties.as_deref().cloned().unwrap_or_default();
        props.subscription_identifiers = delivery.subscription_ids.clone();
        if let Some(at) = msg.expires_at {
            // [MQTT-3.3.2-6]: the interval sent is what remains.
            let left = at.saturating_duration_since(now);
            props.message_expiry_interval = Some(left.as_secs_f64().ceil() as u32);
        }
        Some(Box::new(props))
    } else {
        None
    };
    Publish {
        dup,
        qos: delivery.qos,
        retain: delivery.retain,
        topic: msg.topic.clone(),
        packet_id,
        properties,
        payload: msg.payload.clone(),
    }
}

/// Most deliveries taken from the inbox in one go; then the session lets the rest of its
/// mailbox (and the worker's other actors) have a turn.
const TAKE_BUDGET: usize = 256;

impl Handler<TakeDeliveries> for Session {
    type Result = ();

    fn handle(&mut self, _: TakeDeliveries, _: &mut Self::Context) {
        let mut taken = self.inbox.take_deliveries();
        for _ in 0..TAKE_BUDGET {
            let Some(msg) = taken.pop_front() else { break };
            self.accept(msg);
        }
        if self.inbox.put_back(taken) {
            // Through the mailbox, which a restart keeps (a `notify` would die with the
            // context).
            self.inbox.do_send(TakeDeliveries);
        }
        self.pump();
    }
}

impl Session {
    /// Queues one delivery from a shard (the caller pumps).
    fn accept(&mut self, msg: Deliver) {
        if let Some(id) = msg.stored {
            if self.restored.get_mut().is_some_and(|r| r.remove(&id)) {
                return;
            }
        }
        let delivery = Delivery {
            size: msg.msg.payload.len(),
            expires_at: msg.msg.expires_at,
            msg: Routed {
                msg: msg.msg,
                shared: msg.shared,
                stored: msg.stored,
            },
            qos: msg.qos,
            retain: msg.retain,
            subscription_ids: msg.subscription_ids,
        };
        self.enqueue(delivery, true);
    }
}

impl Handler<Flushed> for Session {
    type Result = ();

    fn handle(&mut self, msg: Flushed, _: &mut Self::Context) {
        if self.is_current(msg.conn_id) {
            self.in_transit = self.in_transit.saturating_sub(msg.weight);
            self.pump();
        }
    }
}

impl Handler<ClientAck> for Session {
    type Result = ();

    fn handle(&mut self, msg: ClientAck, _: &mut Self::Context) {
        if !self.is_current(msg.conn_id) {
            return;
        }
        let done = |act: &mut Session, r: Result<Delivery<Routed>, AckError>| {
            r.map(|delivery| act.release_stored(&delivery.msg))
        };
        let result = match &msg.ack {
            Packet::PubAck(ack) => {
                let r = self.out.puback(ack.packet_id);
                done(self, r)
            }
            Packet::PubRec(rec) if rec.reason.is_success() => {
                let id = rec.packet_id;
                let result = self.out.pubrec(id).map(|d| {
                    d.msg
                        .stored
                        .map(|_| (d.clone(), InflightState::AwaitingPubComp))
                });
                let mut rel = PubResponse::success(id);
                if result.as_ref().err() == Some(&AckError::NotFound) {
                    rel.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
                }
                if result.as_ref().err() != Some(&AckError::WrongState) {
                    self.send_control(Packet::PubRel(rel));
                }
                result.map(|progress| {
                    if let Some((delivery, state)) = progress {
                        self.store_progress(&delivery, Some((id, state)));
                    }
                })
            }
            // MQTT 5: a PUBREC with a failure code ends the exchange ([MQTT-4.3.3-4]).
            Packet::PubRec(rec) => {
                let r = self.out.pubrec_failed(rec.packet_id);
                done(self, r)
            }
            Packet::PubComp(comp) => {
                let r = self.out.pubcomp(comp.packet_id);
                done(self, r)
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            debug!(self.log(), "acknowledgement ignored"; "packet" => msg.ack.kind(), "error" => %e);
        }
        self.pump();
    }
}

impl Session {
    pub(super) fn send_control(&self, packet: Packet) {
        if let Some(link) = &self.link {
            link.addr.do_send(Outbound(packet));
        }
    }
}

impl Handler<InboundQos2> for Session {
    type Result = ();

    fn handle(&mut self, msg: InboundQos2, _: &mut Self::Context) {
        if !self.is_current(msg.conn_id) {
            return;
        }
        let Some(id) = msg.publish.packet_id else {
            return;
        };
        let conn_id = msg.conn_id;
        // The rules (route once, one PUBREC per PUBLISH on its own connection, in order, the
        // Receive Maximum) are `InboundQos2`'s.
        match self
            .inbound
            .get_or_default()
            .publish(id, conn_id, self.inbound_maximum)
        {
            Arrival::Duplicate => {
                self.send_due_pubrecs();
                return;
            }
            Arrival::OverReceiveMaximum => {
                // [MQTT-3.3.4-9]: more unreleased QoS 2 publishes than the broker's Receive
                // Maximum is a protocol violation.
                if let Some(link) = &self.link {
                    link.addr
                        .do_send(Kick(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED));
                }
                return;
            }
            Arrival::Route => {}
        }
        let message = Message::from_publish(msg.publish, Some(self.id), Instant::now());
        // A persistent session's packet id is stored with the message, in one transaction.
        let inbound = self
            .is_durable()
            .then(|| (Arc::clone(&self.inbox.client_id), id));
        let routed = self
            .shared
            .router
            .publish_confirmed(Arc::new(message), inbound);
        // Awaited in a task of its own, not in this actor's context: the message is the
        // session's from the moment it was handed over, and is routed even if the session
        // ends (a clean client's DISCONNECT right behind it) before the shard answers. An
        // actix request whose waiter is dropped is never handled.
        let inbox = Arc::clone(&self.inbox);
        actix_rt::spawn(async move {
            let ok = routed.await.is_ok();
            inbox.do_send(Qos2Routed { id, ok });
        });
    }
}

/// Session -> itself: an inbound QoS 2 publish has been routed (`ok`) or could not be.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Qos2Routed {
    id: starling_proto::PacketId,
    ok: bool,
}

impl Handler<Qos2Routed> for Session {
    type Result = ();

    fn handle(&mut self, msg: Qos2Routed, _: &mut Self::Context) {
        self.qos2_routed(msg.id, msg.ok);
    }
}

impl Session {
    /// An inbound QoS 2 publish is routed (and stored): its PUBRECs go out, in arrival order.
    /// If it could not be, the connections that were owed one are closed without it, and
    /// their clients resend it.
    fn qos2_routed(&mut self, id: starling_proto::PacketId, ok: bool) {
        let Some(inbound) = self.inbound.get_mut() else {
            // Cleared meanwhile (a clean start, or the session ended).
            return;
        };
        if ok {
            inbound.routed(id);
            self.send_due_pubrecs();
            return;
        }
        let owed_to = inbound.route_failed(id);
        warn!(
            self.log(),
            "inbound QoS 2 message not routed; disconnecting the client"
        );
        if let Some(link) = self.link.as_ref().filter(|l| owed_to.contains(&l.conn_id)) {
            link.addr.do_send(Kick(ReasonCode::UNSPECIFIED_ERROR));
        }
        self.send_due_pubrecs();
    }

    /// Sends the PUBRECs now due on the current connection (see `InboundQos2::due`).
    fn send_due_pubrecs(&mut self) {
        let current = self.link.as_ref().map(|l| l.conn_id);
        let Some(inbound) = self.inbound.get_mut() else {
            return;
        };
        let mut due = Vec::new();
        while let Some(id) = inbound.due(current) {
            due.push(id);
        }
        if inbound.is_empty() {
            self.inbound.clear();
        }
        for id in due {
            self.send_control(Packet::PubRec(PubResponse::success(id)));
        }
    }
}

impl Handler<InboundPubRel> for Session {
    type Result = ();

    fn handle(&mut self, msg: InboundPubRel, ctx: &mut Self::Context) {
        if !self.is_current(msg.conn_id) {
            return;
        }
        let known = self
            .inbound
            .get_mut()
            .is_some_and(|inbound| inbound.release(msg.packet_id));
        if self.inbound.get().is_some_and(|inbound| inbound.is_empty()) {
            self.inbound.clear();
        }
        let mut comp = PubResponse::success(msg.packet_id);
        let v5 = self.link.as_ref().is_some_and(|l| l.protocol.is_v5());
        if !known && v5 {
            comp.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
        }
        let store = self.shared.store.as_ref().filter(|_| self.is_durable());
        let Some(store) = store else {
            self.send_control(Packet::PubComp(comp));
            return;
        };
        // PUBCOMP frees the packet id for the client to reuse, so the id's release must be
        // durable first: found "awaiting PUBREL" after a crash, a new message under the reused
        // id would be taken for a resend and never routed. Also for an id no longer known
        // here: its release may be the one still on its way to the disk (the client resent
        // PUBREL on a new connection before the first PUBCOMP went out).
        let released = store.send_confirmed(crate::store::Op::DeleteInbound {
            client: Arc::clone(&self.inbox.client_id),
            packet_id: msg.packet_id.get(),
        });
        let conn_id = msg.conn_id;
        ctx.spawn(released.into_actor(self).map(move |result, act, _| {
            if !matches!(result, Ok(Ok(()))) {
                // Not released on disk: the id stays pending here too, and the client, cut
                // off without PUBCOMP, resends PUBREL when it reconnects.
                warn!(act.log(), "inbound QoS 2 id not released in the store; disconnecting";
                    "packet_id" => comp.packet_id.get());
                if known {
                    act.inbound.get_or_default().restore(comp.packet_id);
                }
                if let Some(link) = act.link.as_ref().filter(|l| l.conn_id == conn_id) {
                    link.addr.do_send(Kick(ReasonCode::UNSPECIFIED_ERROR));
                }
                return;
            }
            if act.is_current(conn_id) {
                act.send_control(Packet::PubComp(comp));
            }
        }));
    }
}
