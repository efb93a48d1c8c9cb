//! TopicNode actors: the subscription trie, sharded by the first topic level.
//!
//! A PUBLISH takes one hop from its Connection to the one shard that owns its first topic level;
//! that shard holds every filter that could match it (filters whose first level is that level,
//! and filters starting with a wildcard, which live in every shard). The shard sends one
//! `Deliver` per matching Session, merging overlapping subscriptions of one session into a
//! single delivery at the highest granted QoS ([MQTT-3.3.5-1]).
//!
//! Shared subscriptions (`$share/{group}/{filter}`) are kept under their filter with the group
//! in the key; each message goes to one member per group, round-robin over the members whose
//! client is connected (`SharedOnline`). A member that leaves hands its unacknowledged messages
//! back (`RouteShared`) and they go to another member.
//!
//! A shard that fails is restarted empty and refilled from the Sessions' subscription tables
//! (the source of truth) before it routes again.

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::prelude::*;
use slog::{debug, info, o, Logger};
use starling_proto::trie::Trie;
use starling_proto::{TopicFilter, TopicName};

use actix::dev::{MessageResponse, OneshotSender};
use starling_proto::QoS;

use crate::metrics::{count, Metrics};
use crate::msg::{
    AddSubscription, Deliver, Message, RemoveSubscription, Route, RouteFailed, RouteShared,
    SessionId, SharedOnline, Subscriber, SubscriptionsFor,
};
use crate::registry::SessionTable;
use crate::retain::{Retain, RetainStore};
use crate::store::{encode_message, Completion, EntryRecord, Op, Store};
use crate::supervisor::{inject, InjectFault};

/// Picks the TopicNode shard for a topic or a filter, and knows the RetainStore. Cheap to
/// clone; every Connection and Session holds one.
#[derive(Debug, Clone)]
pub struct Router {
    shards: Arc<[Addr<TopicNode>]>,
    retain: Addr<RetainStore>,
}

impl Router {
    /// A router over started shards (at least one) and the retain store.
    pub fn new(shards: Vec<Addr<TopicNode>>, retain: Addr<RetainStore>) -> Router {
        Router {
            shards: shards.into(),
            retain,
        }
    }

    /// The RetainStore.
    pub fn retain_store(&self) -> &Addr<RetainStore> {
        &self.retain
    }

    /// Publishes a message nobody acknowledges (a will, a `$SYS` update): routed to its shard,
    /// and kept (or cleared) when retained.
    pub fn publish(&self, msg: Arc<Message>) {
        if msg.retain {
            self.retain.do_send(Retain(Arc::clone(&msg)));
        }
        self.shard_for_topic(&msg.topic)
            .do_send(Route { msg, inbound: None });
    }

    /// Publishes a message and resolves once its shard has routed it to every matching
    /// session and, with persistence, the store has it for every persistent one (and as the
    /// retained message, when retained): what PUBACK and PUBREC wait for. Both requests are
    /// queued before this returns, so publishes keep their order.
    pub fn publish_confirmed(
        &self,
        msg: Arc<Message>,
        inbound: Option<(Arc<str>, starling_proto::PacketId)>,
    ) -> impl std::future::Future<Output = Result<bool, RouteFailed>> + 'static {
        let retained = msg
            .retain
            .then(|| self.retain.send(Retain(Arc::clone(&msg))));
        let routed = self
            .shard_for_topic(&msg.topic)
            .send(Route { msg, inbound });
        async move {
            if let Some(retained) = retained {
                retained.await.map_err(|_| RouteFailed)??;
            }
            routed.await.map_err(|_| RouteFailed)?
        }
    }

    fn index_of_level(&self, level: &str) -> usize {
        let mut hasher = DefaultHasher::new();
        level.hash(&mut hasher);
        (hasher.finish() % self.shards.len() as u64) as usize
    }

    /// The shard that routes messages published to `topic`.
    pub fn shard_for_topic(&self, topic: &TopicName) -> &Addr<TopicNode> {
        let first = topic.as_str().split('/').next().unwrap_or("");
        &self.shards[self.index_of_level(first)]
    }

    /// Shard `index`, if there is one.
    pub fn shard(&self, index: usize) -> Option<&Addr<TopicNode>> {
        self.shards.get(index)
    }

    /// Whether shard `index` holds subscriptions to `filter`.
    pub fn filter_in_shard(&self, filter: &TopicFilter, index: usize) -> bool {
        let first = filter.matching_filter().split('/').next().unwrap_or("");
        first == "+" || first == "#" || self.index_of_level(first) == index
    }

    /// The shards a subscription to `filter` must be added to: one, or all of them when the
    /// filter starts with a wildcard.
    pub fn shards_for_filter<'a>(
        &'a self,
        filter: &TopicFilter,
    ) -> Box<dyn Iterator<Item = &'a Addr<TopicNode>> + 'a> {
        let first = filter.matching_filter().split('/').next().unwrap_or("");
        if first == "+" || first == "#" {
            Box::new(self.shards.iter())
        } else {
            Box::new(std::iter::once(&self.shards[self.index_of_level(first)]))
        }
    }

    /// Adds a subscription to every shard that needs it.
    pub fn subscribe(&self, filter: &TopicFilter, session_id: SessionId, subscriber: &Subscriber) {
        for shard in self.shards_for_filter(filter) {
            shard.do_send(AddSubscription {
                filter: filter.clone(),
                session_id,
                subscriber: subscriber.clone(),
            });
        }
    }

    /// Tells the shards holding a shared subscription whether its member is connected.
    pub fn shared_online(&self, filter: &TopicFilter, session_id: SessionId, online: bool) {
        for shard in self.shards_for_filter(filter) {
            shard.do_send(SharedOnline {
                filter: filter.clone(),
                session_id,
                online,
            });
        }
    }

    /// Hands a message back to its shared subscription for another member.
    pub fn route_shared(
        &self,
        msg: Arc<Message>,
        group: Arc<str>,
        exclude: SessionId,
        stored: Option<u64>,
    ) {
        self.shard_for_topic(&msg.topic).do_send(RouteShared {
            msg,
            group,
            exclude,
            stored,
        });
    }

    /// Removes a subscription from every shard that has it.
    pub fn unsubscribe(&self, filter: &TopicFilter, session_id: SessionId) {
        for shard in self.shards_for_filter(filter) {
            shard.do_send(RemoveSubscription {
                filter: filter.clone(),
                session_id,
            });
        }
    }
}

/// The key of a subscription in a shard: the session, and for a shared subscription its
/// `$share/{group}/{filter}` (one session may hold the same filter shared and not).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubKey {
    session: SessionId,
    group: Option<Arc<str>>,
}

impl SubKey {
    fn new(filter: &TopicFilter, session: SessionId) -> SubKey {
        SubKey {
            session,
            group: filter.shared_group().map(|_| Arc::from(filter.as_str())),
        }
    }
}

/// A route's answer: now, or once the store has committed the message for the persistent
/// sessions it matched.
#[derive(Debug)]
pub enum RouteOutcome {
    /// Nothing to wait for.
    Now(bool),
    /// Answer when the store completes.
    Durable(bool, Completion),
}

impl<A: Actor, M: actix::Message<Result = Result<bool, RouteFailed>>> MessageResponse<A, M>
    for RouteOutcome
{
    fn handle(self, _: &mut A::Context, tx: Option<OneshotSender<M::Result>>) {
        match self {
            RouteOutcome::Now(matched) => {
                if let Some(tx) = tx {
                    let _ = tx.send(Ok(matched));
                }
            }
            RouteOutcome::Durable(matched, done) => {
                actix_rt::spawn(async move {
                    let result = match done.await {
                        Ok(Ok(())) => Ok(matched),
                        _ => Err(RouteFailed),
                    };
                    if let Some(tx) = tx {
                        let _ = tx.send(result);
                    }
                });
            }
        }
    }
}

/// One shard of the subscription trie.
#[derive(Debug)]
pub struct TopicNode {
    trie: Trie<SubKey, Subscriber>,
    /// Reused between routes: the merged delivery per matching session.
    pending: HashMap<SessionId, (Subscriber, Deliver)>,
    /// Most deliveries waiting in one session's inbox.
    mailbox_limit: usize,
    metrics: Arc<Metrics>,
    /// Reused between routes: members of each matching shared subscription.
    groups: HashMap<Arc<str>, Vec<(SessionId, Subscriber)>>,
    /// Round-robin position per shared subscription.
    next_member: HashMap<Arc<str>, usize>,
    /// Reused between routes: the deliveries of the message being routed.
    outgoing: Vec<(Subscriber, Deliver)>,
    /// Where deliveries to persistent sessions are stored.
    store: Option<Store>,
    /// This shard's number.
    index: usize,
    /// Every session, asked for its subscriptions when this shard is rebuilt after a failure.
    sessions: Arc<SessionTable>,
    log: Logger,
}

/// What a shard is started with.
#[derive(Debug, Clone)]
pub struct ShardParts {
    /// Most deliveries waiting in one session's inbox.
    pub mailbox_limit: usize,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The durable store, when persistence is on.
    pub store: Option<Store>,
    /// Every session (filled by the Registry).
    pub sessions: Arc<SessionTable>,
}

impl TopicNode {
    /// A new, empty shard number `index`.
    pub fn new(index: usize, parts: ShardParts, log: &Logger) -> TopicNode {
        TopicNode {
            trie: Trie::new(),
            pending: HashMap::new(),
            mailbox_limit: parts.mailbox_limit.max(1),
            metrics: parts.metrics,
            groups: HashMap::new(),
            next_member: HashMap::new(),
            outgoing: Vec::new(),
            store: parts.store,
            index,
            sessions: parts.sessions,
            log: log.new(o!("actor" => "topic_node", "shard" => index)),
        }
    }

    /// Refills the trie from the Sessions' subscription tables (after a restart). Routes wait
    /// until it is done (`ctx.wait`), so no message is routed through a half-built trie.
    fn rebuild(&mut self, ctx: &mut Context<Self>) {
        let shard = self.index;
        let asked: Vec<_> = self
            .sessions
            .sessions()
            .iter()
            .map(|session| session.addr.send(SubscriptionsFor { shard }))
            .collect();
        let answers = futures_util::future::join_all(asked);
        ctx.wait(answers.into_actor(self).map(|answers, act, _| {
            // A session that cannot answer has stopped: its subscriptions went with it.
            let mut count = 0;
            for (filter, session_id, subscriber) in answers.into_iter().flatten().flatten() {
                let key = SubKey::new(&filter, session_id);
                act.trie.insert(filter.matching_filter(), key, subscriber);
                count += 1;
            }
            info!(act.log, "topic shard rebuilt"; "subscriptions" => count);
        }));
    }

    /// Sends the deliveries in `outgoing`. A session with `mailbox_limit` waiting deliveries
    /// gets none (dropped and counted, like a full session queue would). QoS 1/2 deliveries to
    /// persistent sessions are stored first, with `inbound`, in one store operation whose
    /// completion is returned. `stored` is the message's id if it has one already.
    fn dispatch(
        &mut self,
        msg: &Arc<Message>,
        inbound: Option<(Arc<str>, starling_proto::PacketId)>,
        stored: Option<u64>,
    ) -> Option<Completion> {
        let limit = self.mailbox_limit;
        let metrics = &self.metrics;
        let store = self.store.as_ref();
        let mut msg_id = stored;
        let mut entries = Vec::new();
        self.outgoing.retain_mut(|(sub, d)| {
            let inbox = &sub.inbox;
            if inbox.backlog() >= limit {
                inbox.dropped.fetch_add(1, Ordering::Relaxed);
                count(&metrics.local().dropped_queue_full, 1);
                return false;
            }
            if let Some(store) = store {
                if d.qos != QoS::AtMostOnce && inbox.durable.load(Ordering::Relaxed) {
                    let id = *msg_id.get_or_insert_with(|| store.next_msg_id());
                    let entry = EntryRecord {
                        qos: d.qos,
                        retain: d.retain,
                        subscription_ids: d.subscription_ids.clone(),
                        shared: d.shared.clone(),
                        inflight: None,
                    };
                    entries.push((Arc::clone(&inbox.client_id), entry.encode()));
                    d.stored = Some(id);
                }
            }
            true
        });
        let completion = match store {
            Some(store) if !entries.is_empty() || inbound.is_some() => {
                let message = if entries.is_empty() {
                    bytes::Bytes::new()
                } else {
                    encode_message(msg)
                };
                Some(store.send_confirmed(Op::Route {
                    msg_id: msg_id.unwrap_or(0),
                    message,
                    entries,
                    inbound: inbound.map(|(client, id)| (client, id.get())),
                }))
            }
            _ => None,
        };
        for (sub, d) in self.outgoing.drain(..) {
            sub.inbox.push_delivery(d);
        }
        completion
    }

    /// Picks the member of a shared subscription that gets the next message: round-robin over
    /// the connected members (not `exclude`); if none is connected, over all of them, so that
    /// a persistent member queues it; if `exclude` is the only member, back to it.
    fn pick_member(
        &mut self,
        group: &Arc<str>,
        members: &[(SessionId, Subscriber)],
        exclude: Option<SessionId>,
    ) -> Option<usize> {
        let candidates: Vec<usize> = (0..members.len())
            .filter(|&i| Some(members[i].0) != exclude)
            .collect();
        let online: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&i| members[i].1.online)
            .collect();
        let everyone: Vec<usize> = (0..members.len()).collect();
        // Nobody else: the message stays with the member that gave it back rather than be lost.
        let pool = if !online.is_empty() {
            &online
        } else if !candidates.is_empty() {
            &candidates
        } else {
            &everyone
        };
        if pool.is_empty() {
            return None;
        }
        let next = self.next_member.entry(Arc::clone(group)).or_insert(0);
        let chosen = pool[*next % pool.len()];
        *next = next.wrapping_add(1);
        Some(chosen)
    }

    /// Picks one member of each matching shared subscription (collected in `groups`) and adds
    /// its delivery to `outgoing`.
    fn deliver_shared(&mut self, msg: &Arc<Message>, exclude: Option<SessionId>) {
        let groups = std::mem::take(&mut self.groups);
        for (group, mut members) in groups {
            // Members in a stable order, so round-robin is fair.
            members.sort_by_key(|(id, _)| *id);
            if let Some(i) = self.pick_member(&group, &members, exclude) {
                let (_, sub) = &members[i];
                let d = Deliver {
                    msg: Arc::clone(msg),
                    qos: msg.qos.min(sub.options.qos),
                    retain: msg.retain && sub.options.retain_as_published,
                    subscription_ids: sub.subscription_id.into_iter().collect(),
                    shared: Some(group),
                    stored: None,
                };
                self.outgoing.push((sub.clone(), d));
            }
        }
    }
}

impl Actor for TopicNode {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Publishers awaiting a route confirmation (`publish_confirmed`) wait only when this
        // many routes are queued; each publisher's window bounds what it adds.
        ctx.set_mailbox_capacity(4096);
        debug!(self.log, "topic shard started");
    }
}

impl actix::Supervised for TopicNode {
    fn restarting(&mut self, ctx: &mut Context<Self>) {
        // The trie may be half-updated: start from nothing and ask the Sessions.
        self.trie = Trie::new();
        self.pending.clear();
        self.groups.clear();
        self.outgoing.clear();
        self.next_member.clear();
        self.rebuild(ctx);
    }
}

impl Handler<InjectFault> for TopicNode {
    type Result = ();

    fn handle(&mut self, fault: InjectFault, ctx: &mut Self::Context) {
        inject(fault, ctx);
    }
}

impl Handler<AddSubscription> for TopicNode {
    type Result = ();

    fn handle(&mut self, msg: AddSubscription, _: &mut Self::Context) {
        let key = SubKey::new(&msg.filter, msg.session_id);
        self.trie
            .insert(msg.filter.matching_filter(), key, msg.subscriber);
    }
}

impl Handler<RemoveSubscription> for TopicNode {
    type Result = ();

    fn handle(&mut self, msg: RemoveSubscription, _: &mut Self::Context) {
        let key = SubKey::new(&msg.filter, msg.session_id);
        self.trie.remove(msg.filter.matching_filter(), &key);
        // A group's round-robin position restarts when its membership changes, so positions of
        // groups that are gone do not pile up.
        if let Some(group) = &key.group {
            self.next_member.remove(group);
        }
    }
}

impl Handler<SharedOnline> for TopicNode {
    type Result = ();

    fn handle(&mut self, msg: SharedOnline, _: &mut Self::Context) {
        let key = SubKey::new(&msg.filter, msg.session_id);
        let filter = msg.filter.matching_filter();
        if let Some(mut sub) = self.trie.remove(filter, &key) {
            sub.online = msg.online;
            self.trie.insert(filter, key, sub);
        }
    }
}

impl Handler<Route> for TopicNode {
    type Result = RouteOutcome;

    fn handle(&mut self, Route { msg, inbound }: Route, _: &mut Self::Context) -> RouteOutcome {
        let pending = &mut self.pending;
        let groups = &mut self.groups;
        self.trie.for_each_match(msg.topic.as_str(), |key, sub| {
            if let Some(group) = &key.group {
                // [MQTT-4.8.2]: one member of each shared subscription gets the message.
                groups
                    .entry(Arc::clone(group))
                    .or_default()
                    .push((key.session, sub.clone()));
                return;
            }
            let session_id = key.session;
            if sub.options.no_local && msg.origin == Some(session_id) {
                return;
            }
            let qos = msg.qos.min(sub.options.qos);
            // [MQTT-3.3.1-12]/[MQTT-3.3.1-13]: a live message keeps RETAIN only when the
            // subscription asked for Retain As Published.
            let retain = msg.retain && sub.options.retain_as_published;
            match pending.entry(session_id) {
                Entry::Occupied(mut e) => {
                    let (_, d) = e.get_mut();
                    d.qos = d.qos.max(qos);
                    d.retain |= retain;
                    d.subscription_ids.extend(sub.subscription_id);
                }
                Entry::Vacant(e) => {
                    let deliver = Deliver {
                        msg: Arc::clone(&msg),
                        qos,
                        retain,
                        subscription_ids: sub.subscription_id.into_iter().collect(),
                        shared: None,
                        stored: None,
                    };
                    e.insert((sub.clone(), deliver));
                }
            }
        });
        let matched = !pending.is_empty() || !self.groups.is_empty();
        self.outgoing.extend(pending.drain().map(|(_, v)| v));
        if !self.groups.is_empty() {
            self.deliver_shared(&msg, None);
        }
        match self.dispatch(&msg, inbound, None) {
            Some(done) => RouteOutcome::Durable(matched, done),
            None => RouteOutcome::Now(matched),
        }
    }
}

impl Handler<RouteShared> for TopicNode {
    type Result = ();

    fn handle(&mut self, msg: RouteShared, _: &mut Self::Context) {
        let groups = &mut self.groups;
        self.trie
            .for_each_match(msg.msg.topic.as_str(), |key, sub| {
                if key.group.as_ref() == Some(&msg.group) {
                    groups
                        .entry(Arc::clone(&msg.group))
                        .or_default()
                        .push((key.session, sub.clone()));
                }
            });
        self.deliver_shared(&msg.msg, Some(msg.exclude));
        // Nobody acknowledges a hand-back: the store completes on its own.
        let _ = self.dispatch(&msg.msg, None, msg.stored);
    }
}
