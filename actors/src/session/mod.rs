//! The Session actor: one per client id, outliving its connections until it expires.
//!
//! It owns what the specification calls the session state: subscriptions (the source of truth;
//! the TopicNode shards hold copies for routing), QoS 1/2 messages in flight to the client and
//! the queue behind them (`proto::session::Outbound`), inbound QoS 2 packet ids awaiting PUBREL
//! and the PUBRECs owed for them (`proto::inbound::InboundQos2`), and the will. A Connection attaches to it (through the session table, which orders attaches
//! for one client id) and detaches when its socket ends.
//!
//! When it ends (a clean session's connection closed, or its expiry ran out) it leaves the
//! session table and stops, unless an attach is already on its way to it: the table decides,
//! under its lock, so that such an attach is never lost. Split by responsibility:
//! - this file: attach, detach, takeover, expiry, the will;
//! - `delivery`: messages to the client, acknowledgements, flow control, inbound QoS 2;
//! - `subscriptions`: SUBSCRIBE / UNSUBSCRIBE and retained messages at subscribe time;
//! - `persist`: what a persistent session writes to the store, and its rebuilding from it;
//! - `takeover`: the will of a taken-over connection, until that connection reports.

mod delivery;
mod persist;
mod subscriptions;
mod takeover;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use slog::{debug, info, o, Logger};
use starling_proto::inbound::InboundQos2;
use starling_proto::lifecycle;
use starling_proto::session::{DropCounts, Outbound};
use starling_proto::{ReasonCode, SubscriptionOptions, TopicFilter};

use crate::config::SessionConfig;
use crate::metrics::{count, gauge, Metrics};
use crate::msg::{
    Attach, Attached, ClientLink, ConnId, Detach, GetSessionInfo, Inbox, Kick, Routed, SessionId,
    SessionInfo, Will,
};
use crate::rare::Rare;
use crate::registry::SessionTable;
use crate::security::{Principal, SecurityManager};
use crate::supervisor::Supervision;
use crate::topic::Router;

/// A session's contribution to the metrics, as last reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Reported {
    // Gauges as i32: this struct is inline in every session.
    online: i32,
    offline: i32,
    subscriptions: i32,
    inflight: i32,
    queued: i32,
    drops: DropCounts,
    too_large: u64,
}

/// What every Session shares: where to send things, its limits and its logger. The Registry
/// makes one, and each session (and each connection, to open sessions) holds a pointer to it.
#[derive(Debug)]
pub struct SessionShared {
    /// Client id -> Session: sessions are opened and leave here.
    pub table: Arc<SessionTable>,
    /// Starts sessions supervised.
    pub supervision: Supervision,
    /// The shards and retain store.
    pub router: Router,
    /// Authorization of subscriptions, retained messages and wills.
    pub security: Arc<dyn SecurityManager>,
    /// Counters (each session counts in its worker's slot).
    pub metrics: Arc<Metrics>,
    /// Limits.
    pub config: SessionConfig,
    /// How often an offline session checks its expiry.
    pub scan_interval: Duration,
    /// The durable store, when persistence is on.
    pub store: Option<crate::store::Store>,
    /// The parent logger.
    pub log: Logger,
}

/// A count as a session's gauge contribution (saturating; no session holds 2^31 of anything).
fn gauge_value(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// One client's session.
#[derive(Debug)]
pub struct Session {
    id: SessionId,
    /// What every session shares (one `Arc`, so an idle session stays small).
    shared: Arc<SessionShared>,
    /// What this session last added to the gauges and counters (see `report`).
    reported: Reported,
    /// Its own address, client id and inbox, shared with the session table, its connection
    /// and its subscriptions' shard entries.
    inbox: Arc<Inbox>,
    /// Who the client is, for authorization (set on every attach).
    principal: Arc<Principal>,
    /// Made on first use: most sessions never log anything.
    log: std::cell::OnceCell<Logger>,
    /// The attached connection, if the client is online.
    link: Option<ClientLink>,
    /// Seconds the session outlives its connection; `None` never expires.
    expiry: Option<u32>,
    /// Filter -> (options, subscription identifier): the source of truth.
    subscriptions: HashMap<TopicFilter, (SubscriptionOptions, Option<u32>)>,
    /// QoS 1/2 in flight to the client and the bounded queue behind them.
    out: Outbound<Routed>,
    /// Delivery weight handed to the connection and not yet reported written.
    in_transit: usize,
    /// The client's Maximum Packet Size (MQTT 5): larger deliveries are dropped for it.
    max_packet_size: Option<u32>,
    /// Inbound QoS 2: packet ids routed (or being routed) and not yet released by PUBREL, and
    /// the PUBRECs owed, each to the connection its PUBLISH came on, in arrival order.
    inbound: Rare<InboundQos2<ConnId>>,
    /// This session has written to the store (so ending it must remove what it wrote).
    persisted: bool,
    /// Rebuilt from the store: on start, it registers nothing (the broker did) but arms its
    /// expiry and will timers.
    recovered: bool,
    /// Ids of queued messages read back from the store after a failure: a delivery of one of
    /// them still in the inbox is a copy of what was restored, and is skipped.
    restored: Rare<HashSet<u64>>,
    /// The broker's Receive Maximum for inbound QoS 2.
    inbound_maximum: u16,
    /// The will of the current (or last) connection (boxed: most clients have none).
    will: Option<Box<Will>>,
    will_timer: Option<SpawnHandle>,
    /// Wills of connections taken over, waiting for them to say how they ended (`takeover`).
    taken_over: Rare<takeover::TakenOver>,
    /// Deliveries dropped because they exceeded the client's Maximum Packet Size.
    dropped_too_large: u64,
    /// When drops were last logged (drops are logged at most every few seconds).
    drops_logged_at: Option<Instant>,
    /// Last attach generation seen (see `Attach::generation`).
    generation: u64,
    /// True once this session has ended: its state is gone, and an attach that still arrives
    /// (the table refused to let it go) starts it afresh.
    ended: bool,
    /// When the last connection ended, for expiry.
    offline_since: Option<Instant>,
    expiry_timer: Option<SpawnHandle>,
}

impl Session {
    /// A new, empty session; the session table starts it and attaches the first connection.
    pub fn new(inbox: Arc<Inbox>, id: SessionId, shared: Arc<SessionShared>) -> Session {
        let client_id = Arc::clone(&inbox.client_id);
        let out = Outbound::new(shared.config.queue, shared.config.max_inflight);
        Session {
            principal: Arc::new(Principal {
                username: None,
                client_id: client_id.to_string(),
            }),
            inbox,
            id,
            shared,
            reported: Reported::default(),
            log: std::cell::OnceCell::new(),
            link: None,
            expiry: Some(0),
            subscriptions: HashMap::new(),
            out,
            in_transit: 0,
            max_packet_size: None,
            inbound: Rare::default(),
            persisted: false,
            recovered: false,
            restored: Rare::default(),
            inbound_maximum: u16::MAX,
            will: None,
            will_timer: None,
            taken_over: Rare::default(),
            dropped_too_large: 0,
            drops_logged_at: None,
            generation: 0,
            ended: false,
            offline_since: None,
            expiry_timer: None,
        }
    }

    /// This session's logger (client id and actor kind as context).
    fn log(&self) -> &Logger {
        self.log.get_or_init(|| {
            self.shared
                .log
                .new(o!("actor" => "session", "client_id" => Arc::clone(&self.inbox.client_id)))
        })
    }

    /// Drops all session state: subscriptions (from the shards too), queue, flight, ids.
    fn clear_state(&mut self) {
        for filter in self.subscriptions.keys() {
            self.shared.router.unsubscribe(filter, self.id);
        }
        self.subscriptions.clear();
        self.out.clear();
        self.inbound.clear();
    }

    /// Ends the session: a pending will goes out now ([MQTT-3.1.2-8]: at the latest when the
    /// session ends), state is dropped, and it leaves the session table and stops, unless an
    /// attach is already on its way to it (it then lives on, afresh).
    fn end(&mut self, why: &'static str, ctx: &mut Context<Self>) {
        if self.ended {
            return;
        }
        debug!(self.log(), "session ended"; "why" => why);
        if self.will_timer.take().is_some() {
            self.publish_will();
        }
        self.will = None;
        if let Some(timer) = self.expiry_timer.take() {
            ctx.cancel_future(timer);
        }
        self.clear_state();
        self.forget_stored();
        self.ended = true;
        if self
            .shared
            .table
            .remove_if_current(&self.inbox.client_id, self.id, self.generation)
        {
            self.stop_after_reports(ctx);
        }
    }

    fn is_current(&self, conn_id: u64) -> bool {
        self.link.as_ref().is_some_and(|l| l.conn_id == conn_id)
    }

    fn start_expiry_scan(&mut self, ctx: &mut Context<Self>) {
        if self.expiry.is_none() {
            return;
        }
        // The scan frees what `lifecycle::session_expired` says is gone; an attach asks the
        // same question itself, so a late scan never resumes an expired session.
        let handle = ctx.run_interval(self.shared.scan_interval, move |act, ctx| {
            if lifecycle::session_expired(act.expiry, act.offline_since, Instant::now()) {
                act.end("expired", ctx);
                act.report();
            }
        });
        self.expiry_timer = Some(handle);
    }

    /// Brings the metrics up to date with this session's state: gauges move by the difference
    /// since the last report, counters by what is new. Called after every handler.
    pub(super) fn report(&mut self) {
        let now = if self.ended {
            Reported {
                drops: self.out.drops(),
                too_large: self.dropped_too_large,
                ..Reported::default()
            }
        } else {
            Reported {
                online: i32::from(self.link.is_some()),
                offline: i32::from(self.link.is_none()),
                subscriptions: gauge_value(self.subscriptions.len()),
                inflight: gauge_value(self.out.inflight()),
                queued: gauge_value(self.out.queued()),
                drops: self.out.drops(),
                too_large: self.dropped_too_large,
            }
        };
        if now == self.reported {
            return;
        }
        let was = self.reported;
        let c = self.shared.metrics.local();
        let delta = |now: i32, was: i32| i64::from(now) - i64::from(was);
        gauge(&c.sessions_online, delta(now.online, was.online));
        gauge(&c.sessions_offline, delta(now.offline, was.offline));
        gauge(
            &c.subscriptions,
            delta(now.subscriptions, was.subscriptions),
        );
        gauge(&c.inflight, delta(now.inflight, was.inflight));
        gauge(&c.queued, delta(now.queued, was.queued));
        count(
            &c.dropped_queue_full,
            now.drops.queue_full.saturating_sub(was.drops.queue_full),
        );
        count(
            &c.dropped_expired,
            now.drops.expired.saturating_sub(was.drops.expired),
        );
        count(
            &c.dropped_offline_qos0,
            now.drops
                .offline_qos0
                .saturating_sub(was.drops.offline_qos0),
        );
        count(
            &c.dropped_too_large,
            now.too_large.saturating_sub(was.too_large),
        );
        self.reported = now;
    }

    /// Tells the shards whether this member of its shared subscriptions is connected.
    fn set_shared_online(&self, online: bool) {
        for filter in self.subscriptions.keys() {
            if filter.shared_group().is_some() {
                self.shared.router.shared_online(filter, self.id, online);
            }
        }
    }

    /// The client left: messages that came through shared subscriptions and are not yet
    /// acknowledged go to another member of their group instead of waiting here.
    fn hand_back_shared(&mut self) {
        for delivery in self.out.take_where(|d| d.msg.shared.is_some()) {
            if let Some(group) = delivery.msg.shared.clone() {
                // Ours goes from the store first; the shard stores it for the new member.
                self.release_stored(&delivery.msg);
                self.shared.router.route_shared(
                    Arc::clone(&delivery.msg.msg),
                    group,
                    self.id,
                    delivery.msg.stored,
                );
            }
        }
    }

    /// Publishes the will now, if there is one and the client may publish to its topic.
    fn publish_will(&mut self) {
        if let Some(will) = self.will.take() {
            let principal = Arc::clone(&self.principal);
            if !self.publish_will_as(*will, &principal) {
                return;
            }
            // Published: it must not be published again after a restart.
            if self.link.is_none() && self.is_durable() {
                self.persist_session();
            }
        }
    }

    /// Publishes `will` for the client `principal` was, if it may publish to the will's topic;
    /// says whether it did.
    fn publish_will_as(&self, will: Will, principal: &Principal) -> bool {
        if !self
            .shared
            .security
            .authorize_publish(principal, &will.msg.topic)
        {
            info!(self.log(), "will not published: not authorized"; "topic" => %will.msg.topic);
            return false;
        }
        debug!(self.log(), "publishing will"; "topic" => %will.msg.topic);
        self.shared
            .router
            .publish(Arc::new(will.publish(Instant::now())));
        true
    }

    /// The connection ended abnormally: the will goes out after its delay, or when the session
    /// ends if that comes first ([MQTT-3.1.2-8], `lifecycle::will_wait`), unless a new
    /// connection comes before ([MQTT-3.1.3-9]). The wait counts from when the client went:
    /// for a session rebuilt after a restart whose client had gone before the broker stopped,
    /// the downtime is part of it; a client still connected when the broker stopped counts as
    /// gone from the restart.
    fn trigger_will(&mut self, ctx: &mut Context<Self>) {
        let Some(will) = &self.will else { return };
        let gone_for = self
            .offline_since
            .map_or(Duration::ZERO, |since| since.elapsed());
        let wait = lifecycle::will_wait(will.delay, self.expiry, gone_for);
        if wait.is_zero() {
            self.publish_will();
            return;
        }
        self.will_timer = Some(ctx.run_later(wait, |act, _| {
            act.will_timer = None;
            act.publish_will();
        }));
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Attach, Detach and the other messages are `do_send`, which ignores the capacity;
        // this keeps a `send` (a query) from parking behind a burst of them.
        ctx.set_mailbox_capacity(1 << 20);
        if std::mem::take(&mut self.recovered) {
            // Its client is gone (the broker stopped): expiry runs, and a will left pending
            // by a crash goes out after its delay, as for any connection lost.
            self.start_expiry_scan(ctx);
            self.trigger_will(ctx);
            self.report();
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // Gone: whatever this session still counted in the gauges comes off.
        self.ended = true;
        self.report();
    }
}

impl Handler<Attach> for Session {
    type Result = ();

    fn handle(&mut self, msg: Attach, ctx: &mut Self::Context) {
        // Whether the session still exists is decided now, not by the last scan: one whose
        // interval ran out while its client was away ended then (its will, if still
        // pending, was due), and this CONNECT starts afresh. Ended before this attach's
        // generation is taken, the table keeps the session for it.
        if self.link.is_none()
            && !self.ended
            && lifecycle::session_expired(self.expiry, self.offline_since, Instant::now())
        {
            self.end("expired", ctx);
        }
        self.generation = self.generation.max(msg.generation);
        let params = msg.params;
        // A will still waiting for its delay is deleted: the client is back, whatever its
        // Clean Start ([MQTT-3.1.3-9], `lifecycle::will_at_reconnect`).
        if let Some(timer) = self.will_timer.take() {
            ctx.cancel_future(timer);
            self.will = None;
        }
        // A session that expires on disconnect ends with the connection it is taken from: its
        // state is never reused ([MQTT-3.1.2-6]).
        let mut discard = false;
        if let Some(old) = self.link.take() {
            if old.conn_id != msg.link.conn_id {
                info!(self.log(), "session taken over";
                    "old_conn" => old.conn_id, "new_conn" => msg.link.conn_id);
                old.addr.do_send(Kick(ReasonCode::SESSION_TAKEN_OVER));
                // Whether it had sent a DISCONNECT only the old connection can tell: its will
                // waits for its word.
                discard = self.expiry == Some(0);
                self.hold_will_of_taken_over(old.conn_id, ctx);
            }
        }
        if let Some(timer) = self.expiry_timer.take() {
            ctx.cancel_future(timer);
        }
        // A session is present when it existed before this CONNECT and the client did not ask
        // for a clean start ([MQTT-3.2.2-2], [MQTT-3.2.2-3]).
        let existed = msg.generation > 1 && !self.ended && !discard;
        let cleared = params.clean_start || self.ended || discard;
        if cleared {
            self.clear_state();
        }
        self.ended = false;
        self.offline_since = None;
        self.restored.clear();
        self.expiry = params.expiry;
        self.will = params.will.map(Box::new);
        self.principal = params.principal;
        self.max_packet_size = params.max_packet_size;
        self.inbound_maximum = params.inbound_maximum;
        self.out
            .set_window(params.window.min(self.shared.config.max_inflight));
        self.in_transit = 0;
        let protocol = msg.link.protocol;
        let conn_id = msg.link.conn_id;
        self.link = Some(msg.link);
        // Written with the link in place, so the record says the client is connected: a crash
        // now must not find it offline since this CONNECT, and expire it early.
        self.attach_store(cleared);
        self.set_shared_online(true);
        let replay = self.replay(protocol);
        // What queued while offline follows the replay (the Connection holds it until CONNACK).
        self.pump();
        self.report();
        let attached = Attached {
            session: Arc::clone(&self.inbox),
            session_id: self.id,
            session_present: existed && !params.clean_start,
            replay,
        };
        if msg.reply.send(attached).is_err() {
            // The connection stopped before its CONNACK: it is gone, without a will (it was
            // never accepted), and what it would have been sent stays in flight here.
            self.detached(conn_id, false, None, ctx);
        }
    }
}

impl Handler<Detach> for Session {
    type Result = ();

    fn handle(&mut self, msg: Detach, ctx: &mut Self::Context) {
        self.detached(msg.conn_id, msg.publish_will, msg.new_expiry, ctx);
    }
}

impl Session {
    /// Connection `conn_id` is gone (see `Detach`).
    fn detached(
        &mut self,
        conn_id: ConnId,
        publish_will: bool,
        new_expiry: Option<u32>,
        ctx: &mut Context<Self>,
    ) {
        if !self.is_current(conn_id) {
            self.taken_over_reported(conn_id, publish_will, ctx);
            return;
        }
        self.link = None;
        self.in_transit = 0;
        self.set_shared_online(false);
        self.hand_back_shared();
        if let Some(expiry) = new_expiry {
            self.expiry = (expiry != u32::MAX).then_some(expiry);
        }
        if publish_will {
            self.trigger_will(ctx);
        } else {
            self.will = None;
        }
        if self.expiry == Some(0) {
            self.end("connection closed", ctx);
        } else {
            self.offline_since = Some(Instant::now());
            self.start_expiry_scan(ctx);
            if self.is_durable() {
                self.persist_session();
            }
        }
        self.report();
    }
}

impl Handler<GetSessionInfo> for Session {
    type Result = MessageResult<GetSessionInfo>;

    fn handle(&mut self, _: GetSessionInfo, _: &mut Self::Context) -> Self::Result {
        MessageResult(SessionInfo {
            online: self.link.is_some(),
            subscriptions: self.subscriptions.len(),
            queued: self.out.queued(),
            inflight: self.out.inflight(),
            drops: self.out.drops(),
            dropped_too_large: self.dropped_too_large,
            dropped_backlog: self
                .inbox
                .dropped
                .load(std::sync::atomic::Ordering::Relaxed),
        })
    }
}
