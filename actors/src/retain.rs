//! The RetainStore actor: the last retained message of every topic.
//!
//! A retained PUBLISH sets its topic's message; one with an empty payload clears it
//! ([MQTT-3.3.1-10]). A new subscription asks for the messages its filters match. Messages
//! expire by their MQTT 5 Message Expiry Interval, or else after the configured retained expiry
//! delay (the Artemis `expiry-delay` for retained messages); expired ones are never delivered
//! and are purged on every scan.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use slog::{debug, o, Logger};
use starling_proto::TopicFilter;

use crate::msg::Message;

/// Sets or clears the retained message of a topic.
#[derive(Debug, Message)]
#[rtype(result = "()")]
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
    messages: HashMap<Arc<str>, Retained>,
    /// Expiry for retained messages that carry none; `None` keeps them until replaced.
    default_expiry: Option<Duration>,
    scan_interval: Duration,
    log: Logger,
}

impl RetainStore {
    /// An empty store.
    pub fn new(default_expiry: Option<Duration>, scan_interval: Duration, log: &Logger) -> Self {
        RetainStore {
            messages: HashMap::new(),
            default_expiry,
            scan_interval,
            log: log.new(o!("actor" => "retain_store")),
        }
    }
}

impl Actor for RetainStore {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.scan_interval, |act, _| {
            let now = Instant::now();
            let before = act.messages.len();
            act.messages
                .retain(|_, r| r.expires_at.is_none_or(|at| at > now));
            let purged = before - act.messages.len();
            if purged > 0 {
                debug!(act.log, "expired retained messages purged"; "count" => purged);
            }
        });
    }
}

impl Handler<Retain> for RetainStore {
    type Result = ();

    fn handle(&mut self, Retain(msg): Retain, _: &mut Self::Context) {
        let topic: Arc<str> = msg.topic.as_str().into();
        if msg.payload.is_empty() {
            self.messages.remove(&topic);
            return;
        }
        let expires_at = msg
            .expires_at
            .or_else(|| self.default_expiry.map(|d| Instant::now() + d));
        self.messages.insert(topic, Retained { msg, expires_at });
    }
}

impl Handler<MatchRetained> for RetainStore {
    type Result = MessageResult<MatchRetained>;

    fn handle(&mut self, msg: MatchRetained, _: &mut Self::Context) -> Self::Result {
        let now = Instant::now();
        let live = |r: &Retained| r.expires_at.is_none_or(|at| at > now);
        let mut found = Vec::new();
        for (i, filter) in msg.filters.iter().enumerate() {
            if filter.has_wildcards() {
                for r in self.messages.values() {
                    if live(r) && filter.matches(&r.msg.topic) {
                        found.push((i, Arc::clone(&r.msg)));
                    }
                }
            } else if let Some(r) = self.messages.get(filter.matching_filter()) {
                if live(r) {
                    found.push((i, Arc::clone(&r.msg)));
                }
            }
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
