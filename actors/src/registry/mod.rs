//! The Registry: client id -> Session, and the one place that decides a session's life.
//!
//! The table itself (`table`) is shared by every worker: a CONNECT finds or starts its session
//! there on its own thread, and a session that ends leaves it there, both under the lock of the
//! client id's table shard, which keeps attaches for one client id in order and never loses a
//! reconnect racing an expiry (see `table`).
//!
//! The Registry actor owns the table for everything else: it rebuilds it from the store at
//! start-up, answers questions about sessions (`QuerySession`, `FlushSessions`), and drops the
//! entries of sessions that are gone when it is itself restarted.

mod table;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use slog::{debug, info, o, Logger};

use crate::config::SessionConfig;
use crate::metrics::Metrics;
use crate::msg::{FlushSessions, GetSessionInfo, QuerySession, SessionInfo, Will};
use crate::security::{Principal, SecurityManager};
use crate::session::{Session, SessionShared};
use crate::store::{Store, StoredSession};
use crate::supervisor::{inject, InjectFault, Supervision};
use crate::topic::Router;

pub use table::SessionTable;

/// The client id registry.
#[derive(Debug)]
pub struct Registry {
    /// What every session is given, the session table among it.
    shared: Arc<SessionShared>,
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
    /// The session table to fill and serve (shared with the shards).
    pub table: Arc<SessionTable>,
}

impl Registry {
    /// Starts the registry on the first worker, with the sessions `recovered` from the store
    /// (spread over `workers`). Their subscriptions are registered with the shards on this
    /// thread before this returns, so nothing published afterwards misses them; then the
    /// `expired_wills` of sessions that ended while the broker was down are published. Returns
    /// its address and what connections open sessions with.
    pub fn start(
        parts: RegistryParts,
        recovered: Vec<StoredSession>,
        expired_wills: Vec<(Arc<str>, Option<String>, Will)>,
        workers: &[ArbiterHandle],
        log: &Logger,
    ) -> (Addr<Registry>, Arc<SessionShared>) {
        let log = log.new(o!("actor" => "registry"));
        let (addr, mailbox) = Supervision::mailbox();
        let shared = Arc::new(SessionShared {
            table: parts.table,
            supervision: parts.supervision.clone(),
            router: parts.router,
            security: parts.security,
            metrics: parts.metrics,
            config: parts.config,
            scan_interval: parts.scan_interval,
            store: parts.store,
            log: log.clone(),
        });
        let registry = Registry {
            shared: Arc::clone(&shared),
            log,
        };
        for (i, stored) in recovered.into_iter().enumerate() {
            registry.start_recovered(stored, workers.get(i % workers.len().max(1)));
        }
        for (client_id, username, will) in expired_wills {
            registry.publish_expired_will(&client_id, username, will);
        }
        parts
            .supervision
            .start_with(mailbox, workers.first(), "registry", "".into(), move |_| {
                registry
            });
        (addr, shared)
    }

    /// The will of a session whose expiry ran out while the broker was down: the session
    /// ended then, so the will is due now ([MQTT-3.1.2-8]), authorized as the client it was.
    fn publish_expired_will(&self, client_id: &str, username: Option<String>, will: Will) {
        let principal = Principal {
            username,
            client_id: client_id.to_owned(),
        };
        let topic = will.msg.topic.clone();
        if !self.shared.security.authorize_publish(&principal, &topic) {
            info!(self.log, "will of a session expired while down not published: not authorized";
                "client_id" => client_id, "topic" => %topic);
            return;
        }
        info!(self.log, "publishing the will of a session that expired while the broker was down";
            "client_id" => client_id, "topic" => %topic);
        self.shared
            .router
            .publish(Arc::new(will.publish(std::time::Instant::now())));
    }

    /// Starts a Session rebuilt from the store and registers its subscriptions.
    fn start_recovered(&self, stored: StoredSession, worker: Option<&ArbiterHandle>) {
        let table = &self.shared.table;
        let client_id = Arc::clone(&stored.client_id);
        let (id, inbox) = table.start_session(&self.shared, &client_id, worker, |inbox, id| {
            let session = Session::recovered(stored, inbox, id, Arc::clone(&self.shared));
            // Registered here, on this thread, before anything is published.
            session.resubscribe();
            session
        });
        debug!(self.log, "session recovered"; "client_id" => &*client_id, "session" => id);
        table.insert_recovered(id, inbox);
    }
}

impl Actor for Registry {
    type Context = Context<Self>;
}

impl actix::Supervised for Registry {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // The table is kept (sessions outlive a registry failure); entries whose session is
        // gone are dropped, so the next CONNECT for them starts afresh.
        let (dropped, kept) = self.shared.table.drop_dead();
        info!(self.log, "registry restarted"; "sessions" => kept, "dropped" => dropped);
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
        match self.shared.table.get(&msg.client_id) {
            Some(session) => {
                session.do_send(msg.fault);
                true
            }
            None => false,
        }
    }
}

impl Handler<QuerySession> for Registry {
    type Result = ResponseFuture<Option<SessionInfo>>;

    fn handle(&mut self, msg: QuerySession, _: &mut Self::Context) -> Self::Result {
        let addr = self
            .shared
            .table
            .get(&msg.client_id)
            .map(|session| session.addr.clone());
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
            .shared
            .table
            .sessions()
            .iter()
            .map(|session| session.addr.send(GetSessionInfo))
            .collect();
        Box::pin(async move {
            futures_util::future::join_all(pending).await;
        })
    }
}
