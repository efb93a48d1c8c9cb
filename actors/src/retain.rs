//! The RetainStore actor: the last retained message of every topic.
//!
//! A retained PUBLISH sets its topic's message; one with an empty payload clears it
//! ([MQTT-3.3.1-10]). A new subscription asks for the messages its filters match. Messages
//! expire by their MQTT 5 Message Expiry Interval, or else after the configured retained expiry
//! delay (the Artemis `expiry-delay` for retained messages); expired ones are never delivered
//! and are purged on every scan. Messages are kept in a `TopicTree`, so a wildcard filter
//! visits only the branches it can match, not every retained topic.
//!
//! With persistence, every change is also sent to the store (except `$SYS` topics, which the
//! broker republishes anyway), and the store's retained messages are what the RetainStore
//! starts with. A retained message published with QoS 1/2 is durable before it is
//! acknowledged: `Retain` answers once the store has committed it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use slog::{debug, error, info, o, Logger};
use starling_proto::topic_tree::TopicTree;
use starling_proto::TopicFilter;

use crate::msg::{Message, RouteFailed};
use crate::store::{encode_message, Op, Store};
use crate::supervisor::{inject, InjectFault};

/// Sets or clears the retained message of a topic; answers once that is durable (QoS 1/2).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), RouteFailed>")]
pub struct Retain(pub Arc<Message>);

/// Asks for the retained messages matching each filter.
#[derive(Debug, Message)]
#[rtype(result = "Vec<(usize, Arc<Message>)>")]
pub struct MatchRetained {
    /// The filters; answers carry the index of the filter they matched.
    pub filters: Vec<TopicFilter>,
}

/// Asks how many retained messages are stored (tests, metrics).
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct RetainedCount;

#[derive(Debug)]
struct Retained {
    msg: Arc<Message>,
    expires_at: Option<Instant>,
}

/// The retained message store.
#[derive(Debug)]
pub struct RetainStore {
    /// By topic, so that a wildcard SUBSCRIBE visits only the branches it can match.
    messages: TopicTree<Retained>,
    /// Expiry for retained messages that carry none; `None` keeps them until replaced.
    default_expiry: Option<Duration>,
    scan_interval: Duration,
    store: Option<Store>,
    log: Logger,
}

impl RetainStore {
    /// A store holding `recovered` (read back from the durable store at start-up).
    pub fn new(
        default_expiry: Option<Duration>,
        scan_interval: Duration,
        store: Option<Store>,
        recovered: Vec<Message>,
        log: &Logger,
    ) -> Self {
        let mut retain = RetainStore {
            messages: TopicTree::new(),
            default_expiry,
            scan_interval,
            store,
            log: log.new(o!("actor" => "retain_store")),
        };
        retain.load(recovered);
        retain
    }

    /// Replaces what is held with `messages` (their expiry is already absolute).
    fn load(&mut self, messages: Vec<Message>) {
        let mut tree = TopicTree::new();
        for msg in messages {
            let topic = msg.topic.clone();
            let expires_at = msg.expires_at;
            let msg = Arc::new(msg);
            tree.insert(topic.as_str(), Retained { msg, expires_at });
        }
        self.messages = tree;
    }
}

impl Actor for RetainStore {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.scan_interval, |act, _| {
            let now = Instant::now();
            let before = act.messages.len();
            act.messages
                .retain(|r| r.expires_at.is_none_or(|at| at > now));
            let purged = before - act.messages.len();
            if purged > 0 {
                debug!(act.log, "expired retained messages purged"; "count" => purged);
            }
        });
    }
}

impl actix::Supervised for RetainStore {
    fn restarting(&mut self, ctx: &mut Context<Self>) {
        // With a store, reload from it (after everything sent to it before); without one, the
        // map is all there is, and it is kept.
        let Some(store) = self.store.clone() else {
            info!(self.log, "retain store restarted; messages kept in memory");
            return;
        };
        let load = async move { store.load_retained().await };
        ctx.wait(load.into_actor(self).map(|answer, act, _| match answer {
            Ok(messages) => {
                act.load(messages);
                info!(act.log, "retain store reloaded"; "messages" => act.messages.len());
            }
            Err(e) => error!(act.log, "retain store not reloaded; keeping memory"; "error" => %e),
        }));
    }
}

impl Handler<InjectFault> for RetainStore {
    type Result = ();

    fn handle(&mut self, fault: InjectFault, ctx: &mut Self::Context) {
        inject(fault, ctx);
    }
}

impl Handler<Retain> for RetainStore {
    type Result = ResponseFuture<Result<(), RouteFailed>>;

    fn handle(&mut self, Retain(msg): Retain, _: &mut Self::Context) -> Self::Result {
        let topic: Arc<str> = msg.topic.as_str().into();
        // Only a QoS 1/2 retained message (or a clear) waits for the store before PUBACK.
        let durable = msg.qos != starling_proto::QoS::AtMostOnce;
        let op = if msg.payload.is_empty() {
            self.messages.remove(&topic);
            Op::ClearRetained { topic }
        } else {
            let expires_at = msg
                .expires_at
                .or_else(|| self.default_expiry.map(|d| Instant::now() + d));
            // Stored with the expiry it has here, so a restart does not extend it.
            let message = match &self.store {
                None => None,
                Some(_) if expires_at == msg.expires_at => Some(encode_message(&msg)),
                Some(_) => Some(encode_message(&Message {
                    expires_at,
                    ..(*msg).clone()
                })),
            };
            self.messages.insert(&topic, Retained { msg, expires_at });
            let Some(message) = message else {
                return Box::pin(async { Ok(()) });
            };
            if !durable {
                if let Some(store) = self.store.as_ref().filter(|_| !topic.starts_with('$')) {
                    store.send(Op::SetRetained { topic, message });
                }
                return Box::pin(async { Ok(()) });
            }
            Op::SetRetained { topic, message }
        };
        let Some(store) = &self.store else {
            return Box::pin(async { Ok(()) });
        };
        let done = store.send_confirmed(op);
        Box::pin(async move {
            match done.await {
                Ok(Ok(())) => Ok(()),
                _ => Err(RouteFailed),
            }
        })
    }
}

impl Handler<MatchRetained> for RetainStore {
    type Result = MessageResult<MatchRetained>;

    fn handle(&mut self, msg: MatchRetained, _: &mut Self::Context) -> Self::Result {
        let now = Instant::now();
        let live = |r: &Retained| r.expires_at.is_none_or(|at| at > now);
        let mut found = Vec::new();
        for (i, filter) in msg.filters.iter().enumerate() {
            // A filter without wildcards walks straight down to its one topic.
            self.messages.for_each_match(filter.matching_filter(), |r| {
                if live(r) {
                    found.push((i, Arc::clone(&r.msg)));
                }
            });
        }
        MessageResult(found)
    }
}

impl Handler<RetainedCount> for RetainStore {
    type Result = usize;

    fn handle(&mut self, _: RetainedCount, _: &mut Self::Context) -> usize {
        self.messages.len()
    }
}
