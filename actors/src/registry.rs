//! The Registry actor: client id -> Session, and the one place that decides a session's life.
//!
//! Every CONNECT passes through here, so attaches for one client id are serialised: the Registry
//! hands each `Attach` to the Session in the order the CONNECTs arrived, and the Session's
//! mailbox keeps that order. Sessions ask to end (`SessionEnded`); the Registry removes them only
//! when no attach is on its way to them, so a reconnect racing an expiry is never lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use slog::{debug, info, o, Logger};
use starling_proto::TopicFilter;

use crate::config::SessionConfig;
use crate::metrics::Metrics;
use crate::msg::{
    Attach, CollectSubscriptions, EndSession, FlushSessions, GetSessionInfo, Inbox, OpenSession,
    QuerySession, SessionEnded, SessionId, SessionInfo, Subscriber, SubscriptionsFor,
};
use crate::security::SecurityManager;
use crate::session::{Session, SessionShared};
use crate::store::{Store, StoredSession};
use crate::supervisor::{inject, InjectFault, Supervision};
use crate::topic::Router;

#[derive(Debug)]
struct Entry {
    id: SessionId,
    /// The session's address (inside its shared inbox).
    session: Arc<Inbox>,
    /// Attaches sent to this session so far.
    generation: u64,
}

/// The client id registry.
#[derive(Debug)]
pub struct Registry {
    sessions: HashMap<Arc<str>, Entry>,
    next_session_id: SessionId,
    /// What every session it starts is given.
    shared: Arc<SessionShared>,
    supervision: Supervision,
    log: Logger,
}

/// What the Registry is started with.
#[derive(Debug)]
pub struct RegistryParts {
    /// The shards and retain store.
    pub router: Router,
    /// Authorization.
    pub security: Arc<dyn SecurityManager>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Session limits.
    pub config: SessionConfig,
    /// How often offline sessions check their expiry.
    pub scan_interval: Duration,
    /// The durable store, when persistence is on.
    pub store: Option<Store>,
    /// Starts sessions supervised.
    pub supervision: Supervision,
}

impl Registry {
    /// Starts the registry on the first worker (where most connections and sessions live, so
    /// a CONNECT usually needs no thread switch), with the sessions `recovered` from the
    /// store (spread over `workers`). Their subscriptions are registered with the shards on
    /// this thread before this returns, so nothing published afterwards misses them.
    pub fn start(
        parts: RegistryParts,
        recovered: Vec<StoredSession>,
        workers: &[ArbiterHandle],
        log: &Logger,
    ) -> Addr<Registry> {
        let log = log.new(o!("actor" => "registry"));
        let (addr, mailbox) = Supervision::mailbox();
        let mut registry = Registry {
            sessions: HashMap::new(),
            next_session_id: 1,
            shared: Arc::new(SessionShared {
                registry: addr.clone(),
                router: parts.router,
                security: parts.security,
                metrics: parts.metrics,
                config: parts.config,
                scan_interval: parts.scan_interval,
                store: parts.store,
                log: log.clone(),
            }),
            supervision: parts.supervision.clone(),
            log,
        };
        for (i, stored) in recovered.into_iter().enumerate() {
            registry.start_recovered(stored, workers.get(i % workers.len().max(1)));
        }
        parts
            .supervision
            .start_with(mailbox, workers.first(), "registry", "".into(), move |_| {
                registry
            });
        addr
    }

    /// Starts a Session rebuilt from the store and registers its subscriptions.
    fn start_recovered(&mut self, stored: StoredSession, worker: Option<&ArbiterHandle>) {
        let id = self.next_session_id;
        self.next_session_id += 1;
        let client_id = Arc::clone(&stored.client_id);
        let (addr, mailbox) = Supervision::mailbox();
        let inbox = Arc::new(Inbox::new(addr, Arc::clone(&client_id)));
        let session = Session::recovered(stored, Arc::clone(&inbox), id, Arc::clone(&self.shared));
        let subscriptions = session.subscription_list();
        self.supervision.start_with(
            mailbox,
            worker,
            "session",
            Arc::clone(&client_id),
            move |_| session,
        );
        for (filter, options, subscription_id) in subscriptions {
            let subscriber = Subscriber {
                inbox: Arc::clone(&inbox),
                options,
                subscription_id,
                online: false,
            };
            self.shared.router.subscribe(&filter, id, &subscriber);
        }
        debug!(self.log, "session recovered"; "client_id" => &*client_id, "session" => id);
        // Generation 1: the next attach finds a session that existed (session present).
        self.sessions.insert(
            client_id,
            Entry {
                id,
                session: inbox,
                generation: 1,
            },
        );
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Connections `send` OpenSession and wait for the answer; a burst of CONNECTs queues
        // here rather than parking each sender.
        ctx.set_mailbox_capacity(4096);
    }
}

impl Handler<OpenSession> for Registry {
    type Result = MessageResult<OpenSession>;

    fn handle(&mut self, msg: OpenSession, _: &mut Self::Context) -> Self::Result {
        let entry = match self.sessions.get_mut(&msg.client_id) {
            Some(entry) if entry.session.addr.connected() => entry,
            _ => {
                let id = self.next_session_id;
                self.next_session_id += 1;
                let shared = Arc::clone(&self.shared);
                let (addr, mailbox) = Supervision::mailbox();
                let inbox = Arc::new(Inbox::new(addr, Arc::clone(&msg.client_id)));
                let session = Arc::clone(&inbox);
                self.supervision.start_with(
                    mailbox,
                    Some(&msg.arbiter),
                    "session",
                    Arc::clone(&msg.client_id),
                    move |_| Session::new(session, id, shared),
                );
                debug!(self.log, "session created"; "client_id" => &*msg.client_id, "session" => id);
                self.sessions
                    .entry(Arc::clone(&msg.client_id))
                    .insert_entry(Entry {
                        id,
                        session: inbox,
                        generation: 0,
                    })
                    .into_mut()
            }
        };
        entry.generation += 1;
        // `send` enqueues now, in the order CONNECTs reached the registry.
        MessageResult(entry.session.addr.send(Attach {
            link: msg.link,
            params: msg.params,
            generation: entry.generation,
        }))
    }
}

impl actix::Supervised for Registry {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // The table is kept (sessions outlive a registry failure); entries whose session is
        // gone are dropped, so the next CONNECT for them starts afresh.
        let before = self.sessions.len();
        self.sessions
            .retain(|_, entry| entry.session.addr.connected());
        info!(self.log, "registry restarted";
            "sessions" => self.sessions.len(), "dropped" => before - self.sessions.len());
    }
}

impl Handler<InjectFault> for Registry {
    type Result = ();

    fn handle(&mut self, fault: InjectFault, ctx: &mut Self::Context) {
        inject(fault, ctx);
    }
}

/// Anyone -> Registry: make a session fail (tests; see `[supervisor] fault_injection`).
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct InjectSessionFault {
    /// The session's client id.
    pub client_id: String,
    /// How it fails.
    pub fault: InjectFault,
}

impl Handler<InjectSessionFault> for Registry {
    type Result = bool;

    fn handle(&mut self, msg: InjectSessionFault, _: &mut Self::Context) -> bool {
        match self.sessions.get(msg.client_id.as_str()) {
            Some(entry) => {
                entry.session.do_send(msg.fault);
                true
            }
            None => false,
        }
    }
}

impl Handler<CollectSubscriptions> for Registry {
    type Result = ResponseFuture<Vec<(TopicFilter, SessionId, Subscriber)>>;

    fn handle(&mut self, msg: CollectSubscriptions, _: &mut Self::Context) -> Self::Result {
        let pending: Vec<_> = self
            .sessions
            .values()
            .map(|entry| {
                entry
                    .session
                    .addr
                    .send(SubscriptionsFor { shard: msg.shard })
            })
            .collect();
        Box::pin(async move {
            futures_util::future::join_all(pending)
                .await
                .into_iter()
                .filter_map(Result::ok)
                .flatten()
                .collect()
        })
    }
}

impl Handler<SessionEnded> for Registry {
    type Result = ();

    fn handle(&mut self, msg: SessionEnded, _: &mut Self::Context) {
        let Some(entry) = self.sessions.get(&msg.client_id) else {
            return;
        };
        // A newer attach is on its way to that session: it lives on, afresh.
        if entry.id != msg.session_id || entry.generation != msg.generation {
            return;
        }
        if let Some(entry) = self.sessions.remove(&msg.client_id) {
            entry.session.do_send(EndSession);
        }
    }
}

impl Handler<QuerySession> for Registry {
    type Result = ResponseFuture<Option<SessionInfo>>;

    fn handle(&mut self, msg: QuerySession, _: &mut Self::Context) -> Self::Result {
        let addr = self
            .sessions
            .get(msg.client_id.as_str())
            .map(|entry| entry.session.addr.clone());
        Box::pin(async move {
            match addr {
                Some(addr) => addr.send(GetSessionInfo).await.ok(),
                None => None,
            }
        })
    }
}

impl Handler<FlushSessions> for Registry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: FlushSessions, _: &mut Self::Context) -> Self::Result {
        let pending: Vec<_> = self
            .sessions
            .values()
            .map(|entry| entry.session.addr.send(GetSessionInfo))
            .collect();
        Box::pin(async move {
            futures_util::future::join_all(pending).await;
        })
    }
}
