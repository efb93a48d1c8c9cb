//! The Session actor: one per client id, the owner of that client's subscriptions.
//!
//! A Session outlives its connections: a Connection attaches to it (through the Registry, which
//! serialises attaches for one client id) and detaches when its socket ends. The Session is the
//! source of truth for the client's subscriptions; the TopicNode shards hold copies for routing.
//! It never stops on its own: when it ends (a clean session's connection closed, or its expiry
//! ran out) it says so to the Registry, which decides, so that an attach already on its way is
//! never lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use slog::{debug, info, o, Logger};
use starling_proto::{
    Packet, Publish, QoS, ReasonCode, SubAck, SubscriptionOptions, TopicFilter, UnsubAck,
};

use crate::msg::{
    Attach, Attached, ClientLink, Deliver, Detach, EndSession, Kick, Outbound, SessionEnded,
    SessionId, SessionSubscribe, SessionUnsubscribe, Subscriber,
};
use crate::registry::Registry;
use crate::topic::Router;

/// One client's session.
#[derive(Debug)]
pub struct Session {
    client_id: Arc<str>,
    id: SessionId,
    registry: Addr<Registry>,
    router: Router,
    scan_interval: Duration,
    log: Logger,
    /// The attached connection, if the client is online.
    link: Option<ClientLink>,
    /// Seconds the session outlives its connection; `None` never expires.
    expiry: Option<u32>,
    /// Filter -> (options, subscription identifier): the source of truth.
    subscriptions: HashMap<TopicFilter, (SubscriptionOptions, Option<u32>)>,
    /// Last attach generation seen (see `Attach::generation`).
    generation: u64,
    /// True once this session has asked the Registry to end it: its state is gone, and an
    /// attach that still arrives starts it afresh.
    ended: bool,
    /// When the last connection ended, for expiry.
    offline_since: Option<Instant>,
    expiry_timer: Option<SpawnHandle>,
}

impl Session {
    /// A new, empty session; the Registry starts it and attaches the first connection.
    pub fn new(
        client_id: Arc<str>,
        id: SessionId,
        registry: Addr<Registry>,
        router: Router,
        scan_interval: Duration,
        log: &Logger,
    ) -> Session {
        let log = log.new(o!("actor" => "session", "client_id" => client_id.to_string()));
        Session {
            client_id,
            id,
            registry,
            router,
            scan_interval,
            log,
            link: None,
            expiry: Some(0),
            subscriptions: HashMap::new(),
            generation: 0,
            ended: false,
            offline_since: None,
            expiry_timer: None,
        }
    }

    /// Drops every subscription (from the shards too).
    fn clear_state(&mut self) {
        for filter in self.subscriptions.keys() {
            self.router.unsubscribe(filter, self.id);
        }
        self.subscriptions.clear();
    }

    /// Ends the session: state dropped now, the Registry told; it stops us with `EndSession`.
    fn end(&mut self, why: &'static str) {
        if self.ended {
            return;
        }
        debug!(self.log, "session ended"; "why" => why);
        self.clear_state();
        self.ended = true;
        self.registry.do_send(SessionEnded {
            client_id: Arc::clone(&self.client_id),
            session_id: self.id,
            generation: self.generation,
        });
    }

    fn send(&self, packet: Packet) {
        if let Some(link) = &self.link {
            link.addr.do_send(Outbound(packet));
        }
    }

    fn is_current(&self, conn_id: u64) -> bool {
        self.link.as_ref().is_some_and(|l| l.conn_id == conn_id)
    }

    fn start_expiry_scan(&mut self, ctx: &mut Context<Self>) {
        let Some(seconds) = self.expiry else { return };
        let expiry = Duration::from_secs(u64::from(seconds));
        let handle = ctx.run_interval(self.scan_interval, move |act, _| {
            if act
                .offline_since
                .is_some_and(|since| since.elapsed() >= expiry)
            {
                act.end("expired");
            }
        });
        self.expiry_timer = Some(handle);
    }
}

impl Actor for Session {
    type Context = Context<Self>;
}

impl Handler<Attach> for Session {
    type Result = MessageResult<Attach>;

    fn handle(&mut self, msg: Attach, ctx: &mut Self::Context) -> Self::Result {
        self.generation = msg.generation;
        if let Some(old) = self.link.take() {
            if old.conn_id != msg.link.conn_id {
                info!(self.log, "session taken over"; "old_conn" => old.conn_id, "new_conn" => msg.link.conn_id);
                old.addr.do_send(Kick(ReasonCode::SESSION_TAKEN_OVER));
            }
        }
        if let Some(timer) = self.expiry_timer.take() {
            ctx.cancel_future(timer);
        }
        // A session is present when it existed before this CONNECT and the client did not ask
        // for a clean start ([MQTT-3.2.2-2], [MQTT-3.2.2-3]).
        let existed = msg.generation > 1 && !self.ended;
        if msg.clean_start || self.ended {
            self.clear_state();
        }
        self.ended = false;
        self.offline_since = None;
        self.expiry = msg.expiry;
        self.link = Some(msg.link);
        MessageResult(Attached {
            session: ctx.address(),
            session_id: self.id,
            session_present: existed && !msg.clean_start,
        })
    }
}

impl Handler<Detach> for Session {
    type Result = ();

    fn handle(&mut self, msg: Detach, ctx: &mut Self::Context) {
        if !self.is_current(msg.conn_id) {
            return;
        }
        self.link = None;
        if self.expiry == Some(0) {
            self.end("connection closed");
        } else {
            self.offline_since = Some(Instant::now());
            self.start_expiry_scan(ctx);
        }
    }
}

impl Handler<EndSession> for Session {
    type Result = ();

    fn handle(&mut self, _: EndSession, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<SessionSubscribe> for Session {
    type Result = ();

    fn handle(&mut self, msg: SessionSubscribe, ctx: &mut Self::Context) {
        if !self.is_current(msg.conn_id) {
            return;
        }
        let packet = msg.packet;
        let subscription_id = packet
            .properties
            .as_ref()
            .and_then(|p| p.subscription_identifiers.first().copied());
        let mut reasons = Vec::with_capacity(packet.filters.len());
        for (filter, mut options) in packet.filters {
            if filter.shared_group().is_some() {
                reasons.push(ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED);
                continue;
            }
            // Deliveries are QoS 0 until outbound QoS 1/2 lands: grant what is delivered.
            options.qos = QoS::AtMostOnce;
            let subscriber = Subscriber {
                session: ctx.address(),
                options,
                subscription_id,
            };
            self.router.subscribe(&filter, self.id, &subscriber);
            self.subscriptions
                .insert(filter, (options, subscription_id));
            reasons.push(ReasonCode::GRANTED_QOS_0);
        }
        self.send(Packet::SubAck(SubAck {
            packet_id: packet.packet_id,
            properties: None,
            reasons,
        }));
    }
}

impl Handler<SessionUnsubscribe> for Session {
    type Result = ();

    fn handle(&mut self, msg: SessionUnsubscribe, _: &mut Self::Context) {
        if !self.is_current(msg.conn_id) {
            return;
        }
        let packet = msg.packet;
        let reasons = packet
            .filters
            .iter()
            .map(|filter| {
                if self.subscriptions.remove(filter).is_some() {
                    self.router.unsubscribe(filter, self.id);
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::NO_SUBSCRIPTION_EXISTED
                }
            })
            .collect();
        self.send(Packet::UnsubAck(UnsubAck {
            packet_id: packet.packet_id,
            properties: None,
            reasons,
        }));
    }
}

impl Handler<Deliver> for Session {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _: &mut Self::Context) {
        let Some(link) = &self.link else {
            return;
        };
        let properties = if link.protocol.is_v5()
            && (msg.msg.properties.is_some() || !msg.subscription_ids.is_empty())
        {
            let mut props = msg.msg.properties.as_deref().cloned().unwrap_or_default();
            props.subscription_identifiers = msg.subscription_ids;
            Some(Box::new(props))
        } else {
            None
        };
        link.addr.do_send(Outbound(Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: msg.retain,
            topic: msg.msg.topic.clone(),
            packet_id: None,
            properties,
            payload: msg.msg.payload.clone(),
        })));
    }
}
