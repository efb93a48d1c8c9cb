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

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::prelude::*;
use slog::{debug, o, Logger};
use starling_proto::trie::Trie;
use starling_proto::{TopicFilter, TopicName};

use crate::metrics::{count, Metrics};
use crate::msg::{
    AddSubscription, Deliver, Inbox, Message, RemoveSubscription, Route, RouteShared, SessionId,
    SharedOnline, Subscriber,
};
use crate::retain::{Retain, RetainStore};
use crate::session::Session;

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

    /// Publishes a message: routed to its shard, and stored (or cleared) when retained.
    pub fn publish(&self, msg: Arc<Message>) {
        if msg.retain {
            self.retain.do_send(Retain(Arc::clone(&msg)));
        }
        self.route(Route(msg));
    }

    /// Publishes a message and resolves once its shard has routed it to every matching
    /// session: what a QoS 1 PUBACK waits for.
    pub fn publish_confirmed(&self, msg: Arc<Message>) -> actix::dev::Request<TopicNode, Route> {
        if msg.retain {
            self.retain.do_send(Retain(Arc::clone(&msg)));
        }
        let shard = self.shard_for_topic(&msg.topic);
        shard.send(Route(msg))
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

    /// Routes a message to its shard.
    fn route(&self, route: Route) {
        self.shard_for_topic(&route.0.topic).do_send(route);
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
    pub fn route_shared(&self, msg: Arc<Message>, group: Arc<str>, exclude: SessionId) {
        self.shard_for_topic(&msg.topic).do_send(RouteShared {
            msg,
            group,
            exclude,
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

/// Sends a delivery unless the session already has `limit` unhandled in its mailbox; then it
/// is dropped and counted, like a full session queue would.
fn deliver(
    inbox: &Inbox,
    session: &Addr<Session>,
    deliver: Deliver,
    limit: usize,
    metrics: &Metrics,
) {
    if inbox.pending.load(Ordering::Relaxed) >= limit {
        inbox.dropped.fetch_add(1, Ordering::Relaxed);
        count(&metrics.local().dropped_queue_full, 1);
        return;
    }
    inbox.pending.fetch_add(1, Ordering::Relaxed);
    session.do_send(deliver);
}

/// One shard of the subscription trie.
#[derive(Debug)]
pub struct TopicNode {
    trie: Trie<SubKey, Subscriber>,
    /// Reused between routes: the merged delivery per matching session.
    pending: HashMap<SessionId, (Subscriber, Deliver)>,
    /// Most unhandled deliveries in one session's mailbox.
    mailbox_limit: usize,
    metrics: Arc<Metrics>,
    /// Reused between routes: members of each matching shared subscription.
    groups: HashMap<Arc<str>, Vec<(SessionId, Subscriber)>>,
    /// Round-robin position per shared subscription.
    next_member: HashMap<Arc<str>, usize>,
    log: Logger,
}

impl TopicNode {
    /// A new, empty shard; a session with `mailbox_limit` unhandled deliveries gets no more.
    pub fn new(
        shard: usize,
        mailbox_limit: usize,
        metrics: Arc<Metrics>,
        log: &Logger,
    ) -> TopicNode {
        TopicNode {
            trie: Trie::new(),
            pending: HashMap::new(),
            mailbox_limit: mailbox_limit.max(1),
            metrics,
            groups: HashMap::new(),
            next_member: HashMap::new(),
            log: log.new(o!("actor" => "topic_node", "shard" => shard)),
        }
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
                };
                deliver(
                    &sub.inbox,
                    &sub.session,
                    d,
                    self.mailbox_limit,
                    &self.metrics,
                );
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
    type Result = bool;

    fn handle(&mut self, Route(msg): Route, _: &mut Self::Context) -> bool {
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
                    };
                    e.insert((sub.clone(), deliver));
                }
            }
        });
        let matched = !pending.is_empty() || !self.groups.is_empty();
        for (_, (sub, d)) in pending.drain() {
            deliver(
                &sub.inbox,
                &sub.session,
                d,
                self.mailbox_limit,
                &self.metrics,
            );
        }
        if !self.groups.is_empty() {
            self.deliver_shared(&msg, None);
        }
        matched
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
    }
}
