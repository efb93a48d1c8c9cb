//! TopicNode actors: the subscription trie, sharded by the first topic level.
//!
//! A PUBLISH takes one hop from its Connection to the one shard that owns its first topic level;
//! that shard holds every filter that could match it (filters whose first level is that level,
//! and filters starting with a wildcard, which live in every shard). The shard sends one
//! `Deliver` per matching Session, merging overlapping subscriptions of one session into a
//! single delivery at the highest granted QoS ([MQTT-3.3.5-1]).

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use actix::prelude::*;
use slog::{debug, o, Logger};
use starling_proto::trie::Trie;
use starling_proto::{TopicFilter, TopicName};

use crate::msg::{
    AddSubscription, Deliver, Message, RemoveSubscription, Route, SessionId, Subscriber,
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

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
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
    pub fn route(&self, route: Route) {
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

/// One shard of the subscription trie.
#[derive(Debug)]
pub struct TopicNode {
    trie: Trie<SessionId, Subscriber>,
    /// Reused between routes: the merged delivery per matching session.
    pending: HashMap<SessionId, (Addr<Session>, Deliver)>,
    log: Logger,
}

impl TopicNode {
    /// A new, empty shard.
    pub fn new(shard: usize, log: &Logger) -> TopicNode {
        TopicNode {
            trie: Trie::new(),
            pending: HashMap::new(),
            log: log.new(o!("actor" => "topic_node", "shard" => shard)),
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
        self.trie
            .insert(msg.filter.matching_filter(), msg.session_id, msg.subscriber);
    }
}

impl Handler<RemoveSubscription> for TopicNode {
    type Result = ();

    fn handle(&mut self, msg: RemoveSubscription, _: &mut Self::Context) {
        self.trie
            .remove(msg.filter.matching_filter(), &msg.session_id);
    }
}

impl Handler<Route> for TopicNode {
    type Result = ();

    fn handle(&mut self, Route(msg): Route, _: &mut Self::Context) {
        let pending = &mut self.pending;
        self.trie
            .for_each_match(msg.topic.as_str(), |session_id, sub| {
                if sub.options.no_local && msg.origin == Some(*session_id) {
                    return;
                }
                let qos = msg.qos.min(sub.options.qos);
                // [MQTT-3.3.1-12]/[MQTT-3.3.1-13]: a live message keeps RETAIN only when the
                // subscription asked for Retain As Published.
                let retain = msg.retain && sub.options.retain_as_published;
                match pending.entry(*session_id) {
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
                        };
                        e.insert((sub.session.clone(), deliver));
                    }
                }
            });
        for (_, (session, deliver)) in pending.drain() {
            session.do_send(deliver);
        }
    }
}
