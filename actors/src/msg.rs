//! Every message that crosses between actors, in one file: the contract between them.
//!
//! Reading this file top to bottom tells who talks to whom:
//! Connection -> session table (`OpenSession`, a call on the connection's own thread, not a
//! message), session table -> Session (`Attach`), Connection -> Session (`Detach`,
//! `SessionSubscribe`, `SessionUnsubscribe`, `ClientAck`, `InboundQos2`, `InboundPubRel`,
//! `Flushed`), Connection and Session -> TopicNode (`Route`) and RetainStore
//! (`retain::Retain`), Session -> TopicNode (`AddSubscription`, `RemoveSubscription`),
//! TopicNode -> Session (`Deliver`, queued in the session's `Inbox`, which sends it
//! `TakeDeliveries`), Session -> Connection (`Outbound`, `OutboundBatch`, `Kick`), a restarted
//! TopicNode's question to every session (`SubscriptionsFor`), and the Registry's
//! (`GetSessionInfo`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use starling_proto::{
    Packet, PacketId, Properties, Protocol, Publish, QoS, ReasonCode, Subscribe,
    SubscriptionOptions, TopicFilter, TopicName, Unsubscribe,
};

use crate::connection::Connection;
use crate::session::Session;

/// Identifies one Session actor for its whole life (client ids can be reused by new sessions).
pub type SessionId = u64;
/// Identifies one network connection.
pub type ConnId = u64;

/// An application message as the broker routes it: stored once, shared by every subscriber.
#[derive(Debug, Clone)]
pub struct Message {
    /// Topic the message was published to (aliases already resolved).
    pub topic: TopicName,
    /// Payload, shared, never copied per subscriber.
    pub payload: Bytes,
    /// QoS it was published with; each delivery uses min(this, the subscription's).
    pub qos: QoS,
    /// RETAIN flag as published.
    pub retain: bool,
    /// MQTT 5 properties to forward (topic alias and subscription ids stripped).
    pub properties: Option<Box<Properties>>,
    /// The publishing session, for the No Local option; `None` for broker-made messages.
    pub origin: Option<SessionId>,
    /// When it expires (MQTT 5 Message Expiry Interval, counted from its arrival).
    pub expires_at: Option<Instant>,
}

impl Message {
    /// A message from a client's PUBLISH (aliases resolved): the topic alias is dropped from
    /// the properties and the expiry interval turned into a deadline.
    pub fn from_publish(publish: Publish, origin: Option<SessionId>, now: Instant) -> Message {
        let mut properties = publish.properties;
        if let Some(p) = properties.as_deref_mut() {
            p.topic_alias = None;
            p.subscription_identifiers.clear();
        }
        let expires_at = properties
            .as_ref()
            .and_then(|p| p.message_expiry_interval)
            .map(|secs| now + std::time::Duration::from_secs(u64::from(secs)));
        Message {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties: properties.filter(|p| !p.is_empty()),
            origin,
            expires_at,
        }
    }
}

/// A message as a session holds it: the shared message, and the shared subscription it came
/// through (if any), so that it can go to another member of the group when this one leaves.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The message.
    pub msg: Arc<Message>,
    /// `$share/{group}/{filter}` of the shared subscription that chose this session.
    pub shared: Option<Arc<str>>,
    /// Its message id in the store, when it is stored for this session.
    pub stored: Option<u64>,
}

impl std::ops::Deref for Routed {
    type Target = Message;

    fn deref(&self) -> &Message {
        &self.msg
    }
}

/// How much of a connection's write budget a packet uses: what a Session counts when it sends
/// and a Connection reports once the bytes have left. Only deliveries count.
pub fn outbound_weight(packet: &Packet) -> usize {
    match packet {
        Packet::Publish(p) => p.topic.as_str().len() + p.payload.len() + 16,
        _ => 0,
    }
}

/// A will message waiting in a session for its connection to end.
#[derive(Debug, Clone)]
pub struct Will {
    /// The message to publish.
    pub msg: Message,
    /// Will Delay Interval in seconds (MQTT 5; 0 on 3.x).
    pub delay: u32,
}

impl Will {
    /// The message as published `now`: its Message Expiry Interval is the lifetime of the
    /// published will (MQTT 5 §3.1.3.2.4: it is sent as the Publication Expiry Interval when
    /// the will is published), so it starts counting now, not at CONNECT.
    pub fn publish(self, now: Instant) -> Message {
        let mut msg = self.msg;
        msg.expires_at = msg
            .properties
            .as_ref()
            .and_then(|p| p.message_expiry_interval)
            .map(|secs| now + std::time::Duration::from_secs(u64::from(secs)));
        msg
    }
}

/// A connection as a Session sees it: where to send packets and how to speak to it.
#[derive(Debug, Clone)]
pub struct ClientLink {
    /// The connection's id, so a Session can ignore news from a connection it no longer has.
    pub conn_id: ConnId,
    /// The Connection actor.
    pub addr: Addr<Connection>,
    /// The protocol the client speaks.
    pub protocol: Protocol,
}

/// What a CONNECT tells the session.
#[derive(Debug, Clone)]
pub struct SessionParams {
    /// Clean Start / Clean Session: discard any existing state first.
    pub clean_start: bool,
    /// Session expiry after disconnect in seconds; `None` never expires.
    pub expiry: Option<u32>,
    /// The will, if any.
    pub will: Option<Will>,
    /// How many QoS 1/2 messages may be in flight to the client: its Receive Maximum (MQTT 5),
    /// capped by the broker's `max_inflight_messages`.
    pub window: u16,
    /// The largest packet the client accepts (MQTT 5 Maximum Packet Size).
    pub max_packet_size: Option<u32>,
    /// The broker's Receive Maximum for this client's QoS 2 publishes.
    pub inbound_maximum: u16,
    /// Who the client is, for authorization of subscriptions, retained messages and wills.
    pub principal: Arc<crate::security::Principal>,
}

/// Connection -> session table (`SessionTable::open`, on the connection's own thread): find or
/// start the session for a client id and attach to it. The answer is the session's own answer
/// to `Attach`, still to come.
#[derive(Debug)]
pub struct OpenSession {
    /// The client id (after any rewrite or assignment).
    pub client_id: Arc<str>,
    /// What the CONNECT asked for.
    pub params: SessionParams,
    /// The connection to attach.
    pub link: ClientLink,
}

/// The session's answer to `Attach`, still to come, as the session table hands it to the
/// connection.
pub type AttachReply = tokio::sync::oneshot::Receiver<Attached>;

/// The answer to `Attach`.
#[derive(Debug, Clone)]
pub struct Attached {
    /// The Session the connection now belongs to.
    pub session: Arc<Inbox>,
    /// Its id, carried by the connection's publishes for No Local.
    pub session_id: SessionId,
    /// CONNACK's Session Present.
    pub session_present: bool,
    /// What to send right after CONNACK: unacknowledged PUBLISH (DUP) and PUBREL, in order.
    pub replay: Vec<Packet>,
}

/// Session table -> Session: a connection takes the session over. Sent with `do_send`, so the
/// session always handles it, in the order the table enqueued it, even when the connection
/// stopped waiting: actix never handles a `send` request whose waiter was dropped, and the
/// session would then never see the attach its table entry counts. The answer goes back on
/// `reply`; a connection that is gone by then is detached again at once.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Attach {
    /// The new connection.
    pub link: ClientLink,
    /// What the CONNECT asked for.
    pub params: SessionParams,
    /// The table's count of attaches to this session, given back when the session ends, so
    /// that a session which decided to end while a new attach was on its way is not removed
    /// under it.
    pub generation: u64,
    /// Where the answer goes.
    pub reply: tokio::sync::oneshot::Sender<Attached>,
}

/// Connection -> Session: the connection is gone.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Detach {
    /// Which connection ended (a session ignores a connection it no longer has).
    pub conn_id: ConnId,
    /// Publish the will: false only after a normal DISCONNECT (MQTT 5: other than 0x04) or a
    /// broker shutdown.
    pub publish_will: bool,
    /// A new Session Expiry Interval from the client's DISCONNECT (MQTT 5).
    pub new_expiry: Option<u32>,
}

/// Connection -> Session: the client acknowledged a delivery (PUBACK, PUBREC or PUBCOMP).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ClientAck {
    /// The connection it came on.
    pub conn_id: ConnId,
    /// The acknowledgement.
    pub ack: Packet,
}

/// Connection -> Session: a QoS 2 PUBLISH; the session keeps its packet id until PUBREL so a
/// resend (even on a new connection) is not routed twice, and answers PUBREC.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct InboundQos2 {
    /// The connection it came on.
    pub conn_id: ConnId,
    /// The publish (aliases resolved).
    pub publish: Publish,
}

/// Connection -> Session: PUBREL for an inbound QoS 2 id; the session answers PUBCOMP.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct InboundPubRel {
    /// The connection it came on.
    pub conn_id: ConnId,
    /// The packet id released.
    pub packet_id: PacketId,
}

/// Connection -> Session: deliveries of this total `outbound_weight` have left the socket
/// buffer, so the session may send that much more.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Flushed {
    /// The connection.
    pub conn_id: ConnId,
    /// Sum of `outbound_weight` of the packets written.
    pub weight: usize,
}

/// Connection -> Session: a SUBSCRIBE, answered with SUBACK through `Outbound`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SessionSubscribe {
    /// The connection that sent it.
    pub conn_id: ConnId,
    /// The packet.
    pub packet: Subscribe,
}

/// Connection -> Session: an UNSUBSCRIBE, answered with UNSUBACK through `Outbound`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SessionUnsubscribe {
    /// The connection that sent it.
    pub conn_id: ConnId,
    /// The packet.
    pub packet: Unsubscribe,
}

/// Connection (or Session, for QoS 2) -> TopicNode: route a published message to every
/// matching subscriber. The answer comes once the message is with every matching session and,
/// with persistence, durable for every persistent one; it says whether any subscriber matched
/// (MQTT 5 PUBACK 0x10 when none did).
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, RouteFailed>")]
pub struct Route {
    /// The message.
    pub msg: Arc<Message>,
    /// A persistent publisher's QoS 2 packet id, stored in the same transaction as the
    /// message so that a resend after a crash is recognised.
    pub inbound: Option<(Arc<str>, PacketId)>,
}

/// The message may not have reached every subscriber or the store: it must not be
/// acknowledged (the client resends it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the message could not be routed or stored")]
pub struct RouteFailed;

/// A session's inbox, shared with the shard entries of its subscriptions: the deliveries the
/// shards handed it and it has not taken yet, and how many a shard dropped because too many
/// were waiting. It bounds the one edge a session's own queue cannot: what waits before the
/// session runs (at twice the queue bound, at least 1 000, so that normally the queue's drop
/// policy decides).
///
/// It also tells the shards whose session it is and whether that session is persistent
/// (its QoS 1/2 deliveries are stored before the publisher is acknowledged).
///
/// And it is the session's one shared address: the session table, the connection and every
/// shard entry hold this `Arc` rather than `Addr` clones, because each actix `Addr` clone
/// allocates its own sender state (about 100 bytes), which for idle clients was a large share
/// of their memory.
#[derive(Debug)]
pub struct Inbox {
    /// The Session actor.
    pub addr: Addr<Session>,
    /// The session's client id (its key in the store).
    pub client_id: Arc<str>,
    /// The session outlives its connection and persistence is on: deliveries are stored.
    pub durable: AtomicBool,
    /// Deliveries from the shards the session has not taken yet, in arrival order (see
    /// `push_delivery`).
    deliveries: Mutex<VecDeque<Deliver>>,
    /// Their number, for the shards' bound check without taking the lock.
    waiting: AtomicUsize,
    /// Deliveries dropped by a shard because `backlog` was at the bound.
    pub dropped: AtomicU64,
}

impl Inbox {
    /// The inbox of `client_id`'s session at `addr`, not (yet) durable.
    pub fn new(addr: Addr<Session>, client_id: Arc<str>) -> Inbox {
        Inbox {
            addr,
            client_id,
            durable: AtomicBool::new(false),
            deliveries: Mutex::new(VecDeque::new()),
            waiting: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    fn queue(&self) -> MutexGuard<'_, VecDeque<Deliver>> {
        // Nothing panics while holding it; a poisoned queue is still a whole queue.
        self.deliveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Deliveries waiting for the session to take them.
    pub fn backlog(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Hands the session a delivery. Deliveries do not travel as one actix message each (two
    /// allocations, and a mailbox node to chase per delivery): they wait in this queue, and only
    /// the one that finds it empty sends the session a `TakeDeliveries`, which takes them all.
    /// A session that is gone gets nothing.
    pub fn push_delivery(&self, delivery: Deliver) {
        if !self.addr.connected() {
            return;
        }
        let mut queue = self.queue();
        let wake = queue.is_empty();
        queue.push_back(delivery);
        self.waiting.store(queue.len(), Ordering::Relaxed);
        drop(queue);
        if wake {
            self.addr.do_send(TakeDeliveries);
        }
    }

    /// Everything waiting, in order, in one lock. The inbox starts again with no buffer, so
    /// an idle client keeps none.
    pub fn take_deliveries(&self) -> VecDeque<Deliver> {
        let mut queue = self.queue();
        self.waiting.store(0, Ordering::Relaxed);
        std::mem::take(&mut *queue)
    }

    /// Puts back, ahead of anything that came since, what the session took and did not get to;
    /// `true` when the session must wake itself for it (nothing else will: the queue was not
    /// empty when those that came since were pushed, or nothing came).
    pub fn put_back(&self, mut rest: VecDeque<Deliver>) -> bool {
        if rest.is_empty() {
            return false;
        }
        let mut queue = self.queue();
        let woken = !queue.is_empty();
        rest.append(&mut queue);
        *queue = rest;
        self.waiting.store(queue.len(), Ordering::Relaxed);
        !woken
    }

    /// Sends the session `msg`, without waiting (see `Addr::do_send`).
    pub fn do_send<M>(&self, msg: M)
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        Session: Handler<M>,
    {
        self.addr.do_send(msg);
    }
}

/// One subscription as a TopicNode keeps it.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// The subscribing session: its address and inbox.
    pub inbox: Arc<Inbox>,
    /// Its options for this filter.
    pub options: SubscriptionOptions,
    /// MQTT 5 Subscription Identifier given with this filter.
    pub subscription_id: Option<u32>,
    /// The client is connected: members of a shared subscription get messages only then.
    pub online: bool,
}

/// Session -> TopicNode: a shared subscription member went online or offline.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SharedOnline {
    /// The shared filter (`$share/{group}/{filter}`).
    pub filter: TopicFilter,
    /// The member.
    pub session_id: SessionId,
    /// Connected or not.
    pub online: bool,
}

/// Session -> TopicNode: deliver a message to another member of a shared subscription (its
/// member left before acknowledging it).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RouteShared {
    /// The message.
    pub msg: Arc<Message>,
    /// `$share/{group}/{filter}`.
    pub group: Arc<str>,
    /// The member that gave it back.
    pub exclude: SessionId,
    /// Its id in the store, if it was stored.
    pub stored: Option<u64>,
}

/// Session -> TopicNode: add (or replace) a subscription.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AddSubscription {
    /// The filter.
    pub filter: TopicFilter,
    /// The subscribing session.
    pub session_id: SessionId,
    /// How to reach it and what it asked for.
    pub subscriber: Subscriber,
}

/// TopicNode -> Session: your subscriptions that shard `shard` holds (a restarted shard
/// rebuilds its trie from the answers).
#[derive(Debug, Message)]
#[rtype(result = "Vec<(TopicFilter, SessionId, Subscriber)>")]
pub struct SubscriptionsFor {
    /// The shard's number.
    pub shard: usize,
}

/// Session -> TopicNode: remove a subscription.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RemoveSubscription {
    /// The filter.
    pub filter: TopicFilter,
    /// The subscribing session.
    pub session_id: SessionId,
}

/// TopicNode -> Session, through the session's `Inbox` queue: a message matched this
/// session's subscriptions (once per session, however many of its filters matched).
#[derive(Debug)]
pub struct Deliver {
    /// The shared message.
    pub msg: Arc<Message>,
    /// Delivery QoS: min(message QoS, highest matching subscription QoS).
    pub qos: QoS,
    /// RETAIN flag to send (kept only with Retain As Published).
    pub retain: bool,
    /// Subscription Identifiers of the matching subscriptions.
    pub subscription_ids: Vec<u32>,
    /// The shared subscription that chose this session, if any.
    pub shared: Option<Arc<str>>,
    /// Its id in the store, when the shard stored it for this session.
    pub stored: Option<u64>,
}

/// Inbox -> Session: deliveries wait in the inbox (`Inbox::push_delivery`); take them.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct TakeDeliveries;

/// Session -> Connection: a packet to write.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Outbound(pub Packet);

/// Session -> Connection: packets to write, in order (what one pump of the session's queue
/// released: one message rather than one per packet).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct OutboundBatch(pub Vec<Packet>);

/// Anyone -> Connection: close the connection, telling a v5 client why.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Kick(pub ReasonCode);

/// Anyone -> Registry -> Session: what a session holds right now (tests, operators).
#[derive(Debug, Message)]
#[rtype(result = "Option<SessionInfo>")]
pub struct QuerySession {
    /// The client id.
    pub client_id: String,
}

/// Anyone -> Registry: resolves once every session has handled what was sent to it before
/// (shutdown uses it so that departures are recorded before the store closes).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FlushSessions;

/// Registry -> Session: report your state.
#[derive(Debug, Message)]
#[rtype(result = "SessionInfo")]
pub struct GetSessionInfo;

/// A snapshot of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// A connection is attached.
    pub online: bool,
    /// Subscriptions held.
    pub subscriptions: usize,
    /// Messages waiting in the queue.
    pub queued: usize,
    /// QoS 1/2 messages in flight.
    pub inflight: usize,
    /// What the queue dropped, by cause.
    pub drops: starling_proto::session::DropCounts,
    /// Deliveries dropped for exceeding the client's Maximum Packet Size.
    pub dropped_too_large: u64,
    /// Deliveries dropped before reaching the session because its inbox was full.
    pub dropped_backlog: u64,
}

#[cfg(test)]
mod inbox_tests {
    use super::*;
    use crate::supervisor::{Mailbox, Supervision};

    fn inbox() -> (Inbox, Mailbox<Session>) {
        let (addr, mailbox) = Supervision::mailbox();
        (Inbox::new(addr, "c".into()), mailbox)
    }

    fn delivery(n: u8) -> Deliver {
        Deliver {
            msg: Arc::new(Message {
                topic: TopicName::new("t").expect("valid topic"),
                payload: Bytes::from(vec![n]),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: None,
                origin: None,
                expires_at: None,
            }),
            qos: QoS::AtMostOnce,
            retain: false,
            subscription_ids: Vec::new(),
            shared: None,
            stored: None,
        }
    }

    fn payloads(queue: &VecDeque<Deliver>) -> Vec<u8> {
        queue.iter().map(|d| d.msg.payload[0]).collect()
    }

    /// What the session did not get to goes back ahead of what came since, and the session
    /// must wake itself only when nothing came since (a push that came since found the queue
    /// empty and sent its own wake-up).
    #[test]
    fn put_back_keeps_the_order_and_says_who_wakes_the_session() {
        let (inbox, _mailbox) = inbox();
        for n in 0..4 {
            inbox.push_delivery(delivery(n));
        }
        assert_eq!(inbox.backlog(), 4);
        let mut taken = inbox.take_deliveries();
        assert_eq!(inbox.backlog(), 0);
        assert_eq!(taken.pop_front().map(|d| d.msg.payload[0]), Some(0));
        assert!(
            inbox.put_back(taken),
            "nothing came since: the session wakes itself"
        );
        assert_eq!(inbox.backlog(), 3);

        let mut taken = inbox.take_deliveries();
        taken.pop_front();
        inbox.push_delivery(delivery(9));
        assert!(
            !inbox.put_back(taken),
            "the push since sent a wake-up already"
        );
        assert_eq!(payloads(&inbox.take_deliveries()), [2, 3, 9]);
        assert!(!inbox.put_back(VecDeque::new()));
    }

    /// A session that is gone gets nothing queued.
    #[test]
    fn a_gone_session_gets_no_deliveries() {
        let (inbox, mailbox) = inbox();
        drop(mailbox);
        inbox.push_delivery(delivery(1));
        assert_eq!(inbox.backlog(), 0);
    }
}
