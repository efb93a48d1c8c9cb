//! The Connection actor: one per socket, on a worker arbiter.
//!
//! It owns the transport and everything that is per network connection rather than per session:
//! decoding and encoding, the CONNECT handshake, keep alive, inbound topic aliases and inbound
//! QoS 2 packet ids. It talks to its Session for subscriptions and to the TopicNode shards for
//! publishes. Split by responsibility:
//! - `io`: the future that reads, decodes, hands packets over and flushes writes;
//! - `connect`: the CONNECT handshake up to CONNACK;
//! - `inbound`: the packets of a connected client;
//! - `aliases`: MQTT 5 topic aliases, both ways;
//! - `clock`: one timer wheel per worker thread (CONNECT timeout, keep alive, shutdown).

mod aliases;
mod clock;
mod connect;
mod inbound;
mod io;

pub use aliases::AliasPolicy;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::BytesMut;
use slog::{debug, o, Logger};
use starling_proto::{
    encode, encoded_len, Disconnect, Limits, Packet, PacketId, Properties, Protocol, ReasonCode,
    TopicName,
};

use crate::broker::{BrokerContext, Transport, TransportInfo};
use crate::config::MqttConfig;
use crate::metrics::{count, gauge};
use crate::msg::{outbound_weight, Detach, Flushed, Kick, Outbound, OutboundBatch, SessionId};
use crate::rare::Rare;
use crate::security::Principal;

/// Most publishes one connection may have in routing at once (see `routes_pending`).
const ROUTE_WINDOW: u32 = 64;

/// How long a closing connection may take to flush its last bytes.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How long a taken-over connection still reads, for a DISCONNECT sent before the client
/// reconnected. Sent first does not mean readable first: on loopback the old socket's bytes
/// were seen to become readable after the new socket's CONNECT had been attached.
const TAKEOVER_GRACE: Duration = Duration::from_millis(100);

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Socket open, no CONNECT yet.
    AwaitingConnect,
    /// CONNECT received with an Authentication Method; AUTH packets are exchanged.
    Authenticating,
    /// CONNECT received, waiting for the session's answer; reading is paused.
    Connecting,
    /// CONNACK sent.
    Connected,
    /// Taken over by a new connection (`Kick` with Session Taken Over): for `TAKEOVER_GRACE`
    /// it reads only to find a DISCONNECT, then closes. Its `Detach` tells the session whether
    /// the client had disconnected, and so whether its will goes out.
    TakenOver,
    /// Flushing the last bytes, then closing. Nothing more is read.
    Closing,
}

/// An enhanced authentication exchange under way.
#[derive(Debug)]
struct AuthInProgress {
    conversation: Box<dyn crate::security::AuthConversation>,
    /// The CONNECT waiting for the outcome; `None` during re-authentication.
    connect: Option<Box<starling_proto::Connect>>,
}

/// A client's TLS identity and MQTT 5 enhanced authentication (most clients have neither).
#[derive(Default)]
struct Authentication {
    /// The subject common name of the client's TLS certificate.
    certificate_identity: Option<String>,
    /// The Authentication Method of CONNECT (MQTT 5), which re-authentication must reuse.
    method: Option<String>,
    /// The identity that method proved at CONNECT, which re-authentication must prove again:
    /// what the connection may do was decided for it.
    identity: Option<String>,
    /// An authentication exchange under way.
    exchange: Option<AuthInProgress>,
}

/// The client's session, once attached.
#[derive(Debug)]
struct Attachment {
    session: Arc<crate::msg::Inbox>,
    session_id: SessionId,
}

/// One client connection.
pub struct Connection {
    id: u64,
    broker: Arc<BrokerContext>,
    config: Arc<MqttConfig>,
    log: Logger,
    io: Pin<Box<dyn Transport>>,
    /// Bytes read and not yet decoded; released while empty so idle connections stay small.
    inbuf: BytesMut,
    /// Bytes encoded and not yet written; its length is the connection's outbound backlog.
    outbuf: BytesMut,
    /// Wakes the io future after something outside it queued bytes or changed state.
    io_waker: Option<Waker>,
    state: State,
    limits: Limits,
    /// Effective keep alive in seconds (0: off).
    keep_alive: u16,
    last_read: Instant,
    attachment: Option<Attachment>,
    client_id: Option<Arc<str>>,
    /// The client's address (for the security manager and failed-login tracking).
    peer: SocketAddr,
    /// Who the security manager says the client is; set at CONNACK.
    principal: Option<Arc<Principal>>,
    /// TLS identity and enhanced authentication, for the clients that use them.
    auth: Rare<Authentication>,
    /// MQTT 5 inbound topic aliases.
    aliases: Rare<HashMap<u16, TopicName>>,
    /// MQTT 5 outbound topic aliases (none until CONNECT announces a maximum).
    outbound_aliases: Rare<aliases::OutboundAliases>,
    /// Inbound QoS 1 publishes being routed, in arrival order, with their PUBACK reason and
    /// whether routing is done: PUBACKs go out in this order once the head is routed
    /// ([MQTT-4.6.0-2]).
    inbound_qos1: VecDeque<(PacketId, ReasonCode, bool)>,
    /// Publishes handed to a shard whose route is not yet confirmed: past `ROUTE_WINDOW` the
    /// connection stops reading, so a fast publisher is slowed by TCP instead of growing the
    /// shards' mailboxes.
    routes_pending: u32,
    /// Publishes whose route this actor holds until the shard confirms it (QoS 0 and 1): a
    /// closing connection waits for them, since a route that met a full shard mailbox is only
    /// sent when polled. (QoS 2 ones are the session's once handed over.)
    routes_held: u32,
    /// The client's Maximum Packet Size (MQTT 5 CONNECT; 0 is refused by the codec): a Reason
    /// String that would make a CONNACK or DISCONNECT larger is left out. Beside `routes_held`,
    /// it fits in what was padding.
    client_max_packet_size: Option<NonZeroU32>,
    /// Inbound QoS 2 ids handed to the session and not yet completed (PUBCOMP sent).
    inbound_qos2: Rare<HashSet<PacketId>>,
    /// Session expiry the client asked for at CONNECT (MQTT 5), to check DISCONNECT changes.
    connect_session_expiry: Option<u32>,
    /// Packets from the session that arrived before CONNACK was written; sent right after it.
    pending: Vec<Packet>,
    /// The client said goodbye properly (or the broker is shutting down): no will.
    clean_disconnect: bool,
    /// A SUBSCRIBE or UNSUBSCRIBE is with the session: nothing more is read until its SUBACK
    /// or UNSUBACK comes back, by which time the shards have the change, so the packets the
    /// client sent after it take effect after it (a PUBLISH sees the new subscription).
    subscribe_pending: bool,
    /// A new Session Expiry Interval from the client's DISCONNECT.
    disconnect_expiry: Option<u32>,
    /// Bytes written to the socket since the connection opened.
    written_total: u64,
    /// Deliveries in the write buffer: (stream offset where each ends, its weight), so the
    /// session can be told when they have left (`Flushed`).
    unflushed: VecDeque<(u64, usize)>,
    /// This connection's place on its worker's clock (CONNECT timeout, keep alive, shutdown).
    clock: Option<clock::Membership>,
    /// The deadline the clock will next tell us about; an earlier one replaces it.
    timer_due: Option<Instant>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("state", &self.state)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Starts a Connection actor for `io` on the current arbiter.
    pub(crate) fn start_for(
        broker: Arc<BrokerContext>,
        io: Box<dyn Transport>,
        peer: SocketAddr,
        config: Arc<MqttConfig>,
        transport: TransportInfo,
    ) -> Addr<Connection> {
        let id = broker.next_conn_id();
        let log = broker.log.new(o!(
            "conn" => id,
            "peer" => peer,
            "transport" => transport.kind,
            "cert_identity" => transport.client_identity.clone(),
        ));
        let mut auth = Rare::default();
        if let Some(identity) = &transport.client_identity {
            let auth: &mut Authentication = auth.get_or_default();
            auth.certificate_identity = Some(identity.clone());
        }
        let limits = Limits {
            protocol: Protocol::V311,
            // `maximumPacketSize=-1` (None): nothing is announced and the codec sets no limit,
            // on every transport; what the transport carries still bounds it on its own (a
            // WebSocket message over its limit ends the connection). A number: the smaller of
            // it and the transport's limit, announced in CONNACK and enforced (0x95).
            max_packet_size: config.maximum_packet_size.map(|ours| {
                transport
                    .max_packet_size
                    .map_or(ours, |carried| ours.min(carried))
            }),
        };
        Connection {
            id,
            broker,
            config,
            log,
            io: Pin::from(io),
            inbuf: BytesMut::new(),
            outbuf: BytesMut::new(),
            io_waker: None,
            state: State::AwaitingConnect,
            limits,
            keep_alive: 0,
            last_read: Instant::now(),
            attachment: None,
            client_id: None,
            peer,
            principal: None,
            auth,
            aliases: Rare::default(),
            outbound_aliases: Rare::default(),
            inbound_qos1: VecDeque::new(),
            routes_pending: 0,
            routes_held: 0,
            inbound_qos2: Rare::default(),
            connect_session_expiry: None,
            client_max_packet_size: None,
            pending: Vec::new(),
            clean_disconnect: false,
            subscribe_pending: false,
            disconnect_expiry: None,
            written_total: 0,
            unflushed: VecDeque::new(),
            clock: None,
            timer_due: None,
        }
        .start()
    }

    fn protocol(&self) -> Protocol {
        self.limits.protocol
    }

    /// The Authentication Method of CONNECT, if it had one.
    fn auth_method(&self) -> Option<&str> {
        self.auth.get().and_then(|a| a.method.as_deref())
    }

    /// Encodes a packet into the write buffer; the io future writes it out.
    fn send(&mut self, packet: &Packet) {
        self.send_weighted(packet, outbound_weight(packet));
    }

    /// Sends a delivery from the session: aliased when the client allows it, and counted with
    /// the weight the session gave it (before the alias shortened it).
    fn send_delivery(&mut self, mut packet: Packet) {
        let weight = outbound_weight(&packet);
        // A new alias adds three bytes, and up to two more where a length prefix grows; the
        // session checked the packet without one against the client's Maximum Packet Size,
        // so a packet that close to it goes unaliased.
        let alias_fits = |packet: &Packet| {
            self.client_max_packet_size.is_none_or(|max| {
                encoded_len(packet, self.protocol()).is_ok_and(|len| len + 5 <= max.get() as usize)
            })
        };
        if self.outbound_aliases.get().is_some() && alias_fits(&packet) {
            if let (Packet::Publish(publish), Some(aliases)) =
                (&mut packet, self.outbound_aliases.get_mut())
            {
                aliases.apply(publish);
            }
        }
        self.send_weighted(&packet, weight);
    }

    fn send_weighted(&mut self, packet: &Packet, weight: usize) {
        crate::protocol::packet_out(&self.log, packet);
        if let Packet::Publish(_) = packet {
            count(&self.broker.metrics.local().messages_out, 1);
        }
        if let Err(e) = encode(packet, self.protocol(), &mut self.outbuf) {
            debug!(self.log, "packet not sent"; "type" => packet.kind(), "error" => %e);
        }
        if weight > 0 {
            let end = self.written_total + self.outbuf.len() as u64;
            self.unflushed.push_back((end, weight));
        }
        self.wake_io();
    }

    /// After a write: tells the session how much of its deliveries left the buffer.
    fn report_flushed(&mut self) {
        let mut weight = 0;
        while let Some(&(end, w)) = self.unflushed.front() {
            if end > self.written_total {
                break;
            }
            weight += w;
            self.unflushed.pop_front();
        }
        if weight > 0 {
            if let Some(attachment) = &self.attachment {
                attachment.session.do_send(Flushed {
                    conn_id: self.id,
                    weight,
                });
            }
        }
    }

    fn wake_io(&self) {
        if let Some(waker) = &self.io_waker {
            waker.wake_by_ref();
        }
    }

    /// Closes the connection: an MQTT 5 client that has its CONNACK is told why first.
    /// Reading stops now; what is buffered is flushed, then the socket is shut.
    fn close(&mut self, reason: Option<ReasonCode>, ctx: &mut Context<Self>) {
        self.close_with(reason, None, ctx);
    }

    /// Like `close`, with a Reason String saying what exactly was wrong (MQTT 5; the code's
    /// name when no detail is given).
    fn close_with(
        &mut self,
        reason: Option<ReasonCode>,
        detail: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        if self.state == State::Closing {
            return;
        }
        if let Some(reason) = reason {
            let told = matches!(self.state, State::Connected | State::TakenOver);
            if told && self.protocol().is_v5() {
                let text = detail.unwrap_or_else(|| reason.name().to_owned());
                let mut disconnect = Packet::Disconnect(Disconnect {
                    reason: reason.for_disconnect(),
                    properties: Some(Box::new(Properties {
                        reason_string: Some(text),
                        ..Properties::default()
                    })),
                });
                self.fit_reason_string(&mut disconnect);
                self.send(&disconnect);
            }
            debug!(self.log, "closing connection"; "reason" => %reason);
        }
        self.state = State::Closing;
        self.wake_io();
        ctx.run_later(CLOSE_GRACE, |_, ctx| ctx.stop());
    }

    /// Leaves the Reason String out of a CONNACK or DISCONNECT that would otherwise exceed the
    /// client's Maximum Packet Size ([MQTT-3.2.2-19], [MQTT-3.14.2-3]).
    fn fit_reason_string(&self, packet: &mut Packet) {
        let Some(max) = self.client_max_packet_size else {
            return;
        };
        if encoded_len(packet, self.protocol()).is_ok_and(|len| len <= max.get() as usize) {
            return;
        }
        if let Packet::ConnAck(starling_proto::ConnAck { properties, .. })
        | Packet::Disconnect(Disconnect { properties, .. }) = packet
        {
            if let Some(p) = properties.as_deref_mut() {
                p.reason_string = None;
            }
            if properties.as_deref().is_some_and(Properties::is_empty) {
                *properties = None;
            }
        }
    }

    /// Tells the session this connection is gone (once): whether to publish the will, and any
    /// new expiry from DISCONNECT.
    fn detach(&mut self) {
        if let Some(attachment) = self.attachment.take() {
            attachment.session.do_send(Detach {
                conn_id: self.id,
                publish_will: !self.clean_disconnect,
                new_expiry: self.disconnect_expiry,
            });
        }
    }

    /// Keep alive starts counting once the client is connected.
    fn start_keep_alive(&mut self) {
        if let Some(limit) = self.keep_alive_limit() {
            self.wake_at(self.last_read + limit);
        }
    }

    /// [MQTT-3.1.2-24]: one and a half times the keep alive without a packet closes.
    fn keep_alive_limit(&self) -> Option<Duration> {
        (self.keep_alive > 0).then(|| Duration::from_millis(u64::from(self.keep_alive) * 1500))
    }

    /// Asks the clock for a `Tick` at `at`, unless an earlier one is already coming (its
    /// handler looks at every deadline again).
    fn wake_at(&mut self, at: Instant) {
        if self.timer_due.is_some_and(|due| due <= at) {
            return;
        }
        if let Some(clock) = &self.clock {
            self.timer_due = Some(at);
            clock.wake_at(at);
        }
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.broker.connections.fetch_add(1, Ordering::Relaxed);
        gauge(&self.broker.metrics.local().connections, 1);
        debug!(self.log, "connection opened");
        ctx.spawn(io::IoDriver);
        match clock::Clock::join(&self.broker, ctx.address().downgrade()) {
            Some(membership) => {
                self.clock = Some(membership);
                self.wake_at(Instant::now() + self.config.connect_timeout);
            }
            None => self.shut_down(ctx),
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.clock = None;
        // Detach first: a shutdown that sees the count reach 0 knows every Detach is queued.
        self.detach();
        self.broker.connections.fetch_sub(1, Ordering::Relaxed);
        gauge(&self.broker.metrics.local().connections, -1);
        debug!(self.log, "connection closed");
    }
}

impl Handler<Outbound> for Connection {
    type Result = ();

    fn handle(&mut self, Outbound(packet): Outbound, _: &mut Self::Context) {
        self.outbound(packet);
    }
}

impl Handler<OutboundBatch> for Connection {
    type Result = ();

    fn handle(&mut self, OutboundBatch(packets): OutboundBatch, _: &mut Self::Context) {
        for packet in packets {
            self.outbound(packet);
        }
    }
}

impl Connection {
    /// A packet from the session: written (or held until CONNACK has gone out).
    fn outbound(&mut self, packet: Packet) {
        // The end of an inbound QoS 2 exchange frees its Receive Maximum quota
        // ([MQTT-3.3.4-8]: PUBCOMP, or PUBREC with a failure code).
        match &packet {
            Packet::PubComp(r) => self.forget_inbound_qos2(r.packet_id),
            Packet::PubRec(r) => {
                // The session handled a QoS 2 publish: the routing window opens again.
                if self.routes_pending > 0 {
                    self.routes_pending -= 1;
                    self.wake_io();
                }
                if !r.reason.is_success() {
                    self.forget_inbound_qos2(r.packet_id);
                }
            }
            Packet::SubAck(_) | Packet::UnsubAck(_) => {
                // The subscription change is in the shards' mailboxes ahead of anything read
                // from now on.
                self.subscribe_pending = false;
                self.wake_io();
            }
            _ => {}
        }
        match self.state {
            State::Connected => self.send_delivery(packet),
            // Deliveries may come before the session's answer to Attach: keep the order.
            State::Connecting => self.pending.push(packet),
            State::AwaitingConnect | State::Authenticating | State::TakenOver | State::Closing => {}
        }
    }
}

impl Connection {
    /// An inbound QoS 2 exchange is over; the id set goes once it is empty.
    fn forget_inbound_qos2(&mut self, id: PacketId) {
        if let Some(ids) = self.inbound_qos2.get_mut() {
            ids.remove(&id);
            if ids.is_empty() {
                self.inbound_qos2.clear();
            }
        }
    }

    /// The broker goes away; the session's will is not the client's failure.
    fn shut_down(&mut self, ctx: &mut Context<Self>) {
        // A taken-over connection's client was already lost (or had said goodbye): its will
        // stays as decided.
        if self.state != State::TakenOver {
            self.clean_disconnect = true;
        }
        self.close(Some(ReasonCode::SERVER_SHUTTING_DOWN), ctx);
    }
}

impl Handler<clock::Tick> for Connection {
    type Result = ();

    fn handle(&mut self, clock::Tick(due): clock::Tick, ctx: &mut Self::Context) {
        // Only the current deadline counts; one replaced by an earlier deadline is stale.
        if self.timer_due != Some(due) {
            return;
        }
        self.timer_due = None;
        match self.state {
            // The only deadline before CONNECT is the CONNECT timeout.
            State::AwaitingConnect | State::Authenticating => {
                debug!(self.log, "no CONNECT in time");
                self.close(None, ctx);
            }
            State::Connected => {
                let Some(limit) = self.keep_alive_limit() else {
                    return;
                };
                if self.last_read.elapsed() >= limit {
                    debug!(self.log, "keep alive timeout"; "keep_alive" => self.keep_alive);
                    self.close(Some(ReasonCode::KEEP_ALIVE_TIMEOUT), ctx);
                } else {
                    self.wake_at(self.last_read + limit);
                }
            }
            // Keep alive starts at CONNACK; a closing connection has its own grace timer.
            State::Connecting | State::TakenOver | State::Closing => {}
        }
    }
}

impl Handler<clock::ShutDown> for Connection {
    type Result = ();

    fn handle(&mut self, _: clock::ShutDown, ctx: &mut Self::Context) {
        self.shut_down(ctx);
    }
}

impl Handler<Kick> for Connection {
    type Result = ();

    fn handle(&mut self, Kick(reason): Kick, ctx: &mut Self::Context) {
        if reason == ReasonCode::SESSION_TAKEN_OVER && self.state == State::Connected {
            self.state = State::TakenOver;
            self.wake_io();
            ctx.run_later(TAKEOVER_GRACE, |act, ctx| {
                if act.state == State::TakenOver {
                    act.close(Some(ReasonCode::SESSION_TAKEN_OVER), ctx);
                }
            });
            return;
        }
        self.close(Some(reason), ctx);
    }
}
