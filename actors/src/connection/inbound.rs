//! What a Connection does with each packet it reads, and with packets it cannot read.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use slog::{debug, info, warn};
use starling_proto::{
    Auth, DecodeError, Packet, PacketId, Protocol, PubResponse, Publish, QoS, ReasonCode,
};

use super::{Connection, State};
use crate::metrics::count;
use crate::msg::{
    ClientAck, InboundPubRel, InboundQos2, Message, SessionSubscribe, SessionUnsubscribe,
};

impl Connection {
    /// Dispatches one decoded packet.
    pub(super) fn on_packet(&mut self, packet: Packet, ctx: &mut Context<Self>) {
        if self.state == State::Authenticating {
            match packet {
                Packet::Auth(auth) if auth.reason == ReasonCode::CONTINUE_AUTHENTICATION => {
                    self.on_auth_packet(&auth, ctx)
                }
                Packet::Disconnect(_) => self.close(None, ctx),
                // MQTT 5 §4.12: during authentication only AUTH (or DISCONNECT) may come.
                _ => self.refuse(ReasonCode::PROTOCOL_ERROR, ctx),
            }
            return;
        }
        if self.state == State::TakenOver {
            // The session belongs to the new connection. A DISCONNECT says whether our will goes
            // out ([MQTT-3.14.4-3]). What the client published before it reconnected is still
            // routed: QoS 0 would be lost otherwise, and QoS 1 gets no PUBACK here, so the
            // client may send it again (at least once). QoS 2 is the session's, and the client
            // resends it there.
            match packet {
                Packet::Disconnect(disconnect) => {
                    debug!(self.log, "client had disconnected"; "reason" => %disconnect.reason);
                    self.clean_disconnect = disconnect.reason == ReasonCode::NORMAL_DISCONNECTION;
                    self.detach();
                    self.close(None, ctx);
                }
                Packet::Publish(publish) if publish.qos != QoS::ExactlyOnce => {
                    self.on_publish(publish, ctx);
                }
                _ => {}
            }
            return;
        }
        if self.state == State::AwaitingConnect {
            match packet {
                Packet::Connect(connect) => self.on_connect(connect, ctx),
                // [MQTT-3.1.0-1]: the first packet must be CONNECT.
                other => {
                    debug!(self.log, "first packet is not CONNECT"; "type" => other.kind());
                    self.close(None, ctx);
                }
            }
            return;
        }
        let Some(attachment) = &self.attachment else {
            return;
        };
        match packet {
            Packet::Publish(publish) => self.on_publish(publish, ctx),
            // The session owns inbound QoS 2 ids: it answers PUBCOMP.
            Packet::PubRel(rel) => attachment.session.do_send(InboundPubRel {
                conn_id: self.id,
                packet_id: rel.packet_id,
            }),
            ack @ (Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_)) => {
                attachment.session.do_send(ClientAck {
                    conn_id: self.id,
                    ack,
                })
            }
            // The session records the change and tells the shards; reading pauses until it
            // answers (see `subscribe_pending`).
            Packet::Subscribe(packet) => {
                attachment.session.do_send(SessionSubscribe {
                    conn_id: self.id,
                    packet,
                });
                self.subscribe_pending = true;
            }
            Packet::Unsubscribe(packet) => {
                attachment.session.do_send(SessionUnsubscribe {
                    conn_id: self.id,
                    packet,
                });
                self.subscribe_pending = true;
            }
            Packet::PingReq => self.send(&Packet::PingResp),
            Packet::Disconnect(disconnect) => {
                let expiry = disconnect
                    .properties
                    .as_ref()
                    .and_then(|p| p.session_expiry_interval);
                // [MQTT-3.14.2-2]: a session that expired on close cannot be revived by
                // DISCONNECT.
                if self.connect_session_expiry.unwrap_or(0) == 0 && expiry.is_some_and(|e| e > 0) {
                    self.close(Some(ReasonCode::PROTOCOL_ERROR), ctx);
                    return;
                }
                debug!(self.log, "client disconnected"; "reason" => %disconnect.reason);
                // [MQTT-3.14.4-3]: only a normal DISCONNECT (0x00; every 3.x DISCONNECT)
                // discards the will. Any other MQTT 5 reason (0x04 asks for it, 0x80 and up
                // report an error) leaves it to be published ([MQTT-3.1.2-8]).
                self.clean_disconnect = disconnect.reason == ReasonCode::NORMAL_DISCONNECTION;
                self.disconnect_expiry = expiry;
                // Detach now, not after the flush: a quick reconnect must not find this
                // connection still attached and take it over (publishing its will).
                self.detach();
                self.close(None, ctx);
            }
            Packet::Connect(_) => {
                // [MQTT-3.1.0-2]: a second CONNECT is a protocol violation.
                self.close(Some(ReasonCode::PROTOCOL_ERROR), ctx);
            }
            Packet::Auth(auth) => self.on_auth_packet(&auth, ctx),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                // Packets only a server sends.
                self.close(Some(ReasonCode::PROTOCOL_ERROR), ctx);
            }
        }
    }

    fn on_publish(&mut self, mut publish: Publish, ctx: &mut Context<Self>) {
        count(&self.broker.metrics.local().messages_in, 1);
        if let Err(reason) = self.resolve_alias(&mut publish) {
            self.close(Some(reason), ctx);
            return;
        }
        // Protocol errors first: they close the connection whatever the client may publish
        // ([MQTT-4.13.1-1]); an unauthorized publish is answered and the connection may stay.
        if let Some(props) = publish.properties.as_deref() {
            // [MQTT-3.3.4-6]: a PUBLISH from a client carries no Subscription Identifier.
            if !props.subscription_identifiers.is_empty() {
                let detail = "Subscription Identifier in a PUBLISH from a client".to_owned();
                self.close_with(Some(ReasonCode::PROTOCOL_ERROR), Some(detail), ctx);
                return;
            }
            // [MQTT-3.3.2-4]: Payload Format Indicator 1 promises UTF-8.
            if props.payload_format_indicator == Some(1)
                && std::str::from_utf8(&publish.payload).is_err()
            {
                self.close(Some(ReasonCode::PAYLOAD_FORMAT_INVALID), ctx);
                return;
            }
        }
        let allowed = self
            .principal
            .as_ref()
            .is_some_and(|p| self.broker.security.authorize_publish(p, &publish.topic));
        if !allowed {
            self.refuse_publish(&publish, ctx);
            return;
        }
        let Some(id) = publish.packet_id else {
            self.route_confirmed(publish, None, ctx);
            return;
        };
        // Flow control ([MQTT-3.3.4-9]): QoS 1 publishes not yet acknowledged and QoS 2 ones not
        // yet completed may not exceed the Receive Maximum the broker announced in CONNACK. A
        // 3.x client was told none (its routing window still bounds what it has in flight).
        let new_qos2 = publish.qos == QoS::ExactlyOnce
            && !self.inbound_qos2.get().is_some_and(|ids| ids.contains(&id));
        let quota_needed = publish.qos == QoS::AtLeastOnce || new_qos2;
        let max = usize::from(self.announced_receive_maximum());
        if quota_needed
            && self.inbound_qos1.len() + self.inbound_qos2.get().map_or(0, |ids| ids.len()) >= max
        {
            self.close(Some(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED), ctx);
            return;
        }
        if publish.qos == QoS::ExactlyOnce {
            self.inbound_qos2.get_or_default().insert(id);
            // Counted in the routing window until the session's PUBREC passes back: the session
            // answers every QoS 2 PUBLISH with one PUBREC on the connection it came on, or
            // closes that connection (`proto::inbound`).
            self.routes_pending += 1;
            // The session keeps the id until PUBREL, across reconnects, and answers PUBREC.
            if let Some(attachment) = &self.attachment {
                attachment.session.do_send(InboundQos2 {
                    conn_id: self.id,
                    publish,
                });
            }
            return;
        }
        // QoS 1: PUBACK once the shard has routed it, in arrival order.
        self.inbound_qos1
            .push_back((id, ReasonCode::SUCCESS, false));
        self.route_confirmed(publish, Some(id), ctx);
    }

    /// An AUTH packet: the next step of an exchange under way (0x18), or the start of a
    /// re-authentication (0x19) with the CONNECT's method ([MQTT-4.12.1-1]).
    fn on_auth_packet(&mut self, auth: &Auth, ctx: &mut Context<Self>) {
        let props = auth.properties.as_deref();
        let method = props.and_then(|p| p.authentication_method.as_deref());
        let data = props
            .and_then(|p| p.authentication_data.clone())
            .unwrap_or_default();
        let same_method = method.is_some() && method == self.auth_method();
        let exchange = self.auth.get_mut().and_then(|a| a.exchange.as_mut());
        let step = match (auth.reason, exchange) {
            (ReasonCode::CONTINUE_AUTHENTICATION, Some(exchange)) if same_method => {
                exchange.conversation.step(&data)
            }
            (ReasonCode::RE_AUTHENTICATE, None)
                if same_method && self.state == State::Connected =>
            {
                let found = method.and_then(|m| self.broker.auth_methods.get(m).cloned());
                let Some(found) = found else {
                    self.close(Some(ReasonCode::PROTOCOL_ERROR), ctx);
                    return;
                };
                let (conversation, step) = found.start(&data);
                self.auth.get_or_default().exchange = Some(super::AuthInProgress {
                    conversation,
                    connect: None,
                });
                step
            }
            _ => {
                // AUTH out of place: no exchange, another method, or a reason that does not
                // fit (MQTT 5 §4.12; the method must stay that of CONNECT, [MQTT-4.12.0-5]).
                if self.state == State::Authenticating {
                    self.refuse(ReasonCode::PROTOCOL_ERROR, ctx);
                } else {
                    self.close(Some(ReasonCode::PROTOCOL_ERROR), ctx);
                }
                return;
            }
        };
        self.on_auth_step(step, ctx);
    }

    /// MQTT 5 topic aliases: learn or apply the alias; the error is the DISCONNECT reason.
    fn resolve_alias(&mut self, publish: &mut Publish) -> Result<(), ReasonCode> {
        let alias = publish
            .properties
            .as_mut()
            .and_then(|p| p.topic_alias.take());
        let Some(alias) = alias else {
            return Ok(());
        };
        let max = self.config.topic_alias_maximum.unwrap_or(0);
        // [MQTT-3.3.2-9]: 0 or above the announced maximum is invalid.
        if alias == 0 || alias > max {
            return Err(ReasonCode::TOPIC_ALIAS_INVALID);
        }
        if publish.topic.is_empty() {
            match self.aliases.get().and_then(|aliases| aliases.get(&alias)) {
                Some(topic) => publish.topic = topic.clone(),
                None => return Err(ReasonCode::PROTOCOL_ERROR),
            }
        } else {
            self.aliases
                .get_or_default()
                .insert(alias, publish.topic.clone());
        }
        Ok(())
    }

    /// A PUBLISH the client may not make. MQTT 5 can say so: PUBACK / PUBREC 0x87 (a QoS 0
    /// one, with nothing to carry the code, follows `closeMqttConnectionOnPublishAuthorization
    /// Failure`). MQTT 3.x cannot ([MQTT 3.1.1 §3.3.5]): by default the connection is closed;
    /// with the parameter false the publish is acknowledged as usual and dropped.
    fn refuse_publish(&mut self, publish: &Publish, ctx: &mut Context<Self>) {
        info!(self.log, "publish refused: not authorized"; "topic" => %publish.topic);
        let v5 = self.protocol().is_v5();
        let close = self.config.close_on_publish_auth_failure;
        match (publish.packet_id, v5) {
            (Some(id), true) => {
                let mut ack = PubResponse::success(id);
                ack.reason = ReasonCode::NOT_AUTHORIZED;
                if publish.qos == QoS::AtLeastOnce {
                    self.send(&Packet::PubAck(ack));
                } else {
                    // A PUBREC with a failure code ends the QoS 2 exchange ([MQTT-4.3.3-4]).
                    self.send(&Packet::PubRec(ack));
                }
            }
            _ if close => self.close(Some(ReasonCode::NOT_AUTHORIZED), ctx),
            (Some(id), false) => {
                if publish.qos == QoS::AtLeastOnce {
                    self.send(&Packet::PubAck(PubResponse::success(id)));
                } else {
                    // The session answers the PUBREL (it never saw the id: PUBCOMP all the same).
                    self.inbound_qos2.get_or_default().insert(id);
                    self.send(&Packet::PubRec(PubResponse::success(id)));
                }
            }
            (None, _) => {}
        }
    }

    /// A QoS 1 publish was routed (and stored): acknowledge it. If it could not be, it is not
    /// acknowledged: the connection closes and the client resends it ([MQTT-4.4.0-1]).
    fn qos1_routed(
        &mut self,
        id: PacketId,
        matched: Result<bool, crate::msg::RouteFailed>,
        ctx: &mut Context<Self>,
    ) {
        match matched {
            // MQTT 5: "No matching subscribers" is still a success, and more telling.
            Ok(false) => self.routed(id, ReasonCode::NO_MATCHING_SUBSCRIBERS),
            Ok(true) => self.routed(id, ReasonCode::SUCCESS),
            Err(e) => {
                warn!(self.log, "publish not acknowledged"; "error" => %e);
                self.close(Some(ReasonCode::UNSPECIFIED_ERROR), ctx);
            }
        }
    }

    /// A QoS 1 publish was routed: acknowledge it and any routed ones queued behind it.
    fn routed(&mut self, id: PacketId, reason: ReasonCode) {
        if let Some(entry) = self
            .inbound_qos1
            .iter_mut()
            .find(|(pending, _, done)| *pending == id && !*done)
        {
            entry.1 = reason;
            entry.2 = true;
        }
        while let Some(&(id, reason, true)) = self.inbound_qos1.front() {
            self.inbound_qos1.pop_front();
            if self.state == State::Connected {
                let mut ack = PubResponse::success(id);
                ack.reason = reason;
                self.send(&Packet::PubAck(ack));
            }
        }
    }

    /// Routes a publish; when its shard confirms, a QoS 1 one (`ack`) is acknowledged, and
    /// either way the connection's routing window opens again.
    fn route_confirmed(
        &mut self,
        publish: Publish,
        ack: Option<PacketId>,
        ctx: &mut Context<Self>,
    ) {
        let origin = self.attachment.as_ref().map(|a| a.session_id);
        let msg = Arc::new(Message::from_publish(publish, origin, Instant::now()));
        self.routes_pending += 1;
        self.routes_held += 1;
        self.broker
            .router
            .publish_confirmed(msg, None)
            .into_actor(self)
            .map(move |matched, act, ctx| {
                act.routes_pending = act.routes_pending.saturating_sub(1);
                act.routes_held = act.routes_held.saturating_sub(1);
                act.wake_io();
                if let Some(id) = ack {
                    act.qos1_routed(id, matched, ctx);
                }
            })
            .spawn(ctx);
    }

    /// A packet that cannot be decoded: answer per protocol and state, then close.
    pub(super) fn on_decode_error(&mut self, error: DecodeError, ctx: &mut Context<Self>) {
        let reason = error.reason_code();
        debug!(self.log, "bad packet"; "error" => %error, "reason" => %reason);
        match self.state {
            State::AwaitingConnect => {
                if let DecodeError::UnsupportedProtocolVersion { .. } = error.root() {
                    // [MQTT-3.1.2-2]: return code 1 in the 3.1.1 shape, which every version
                    // can read.
                    self.limits.protocol = Protocol::V311;
                    self.refuse(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION, ctx);
                } else if error.connect_protocol() == Some(Protocol::V5) {
                    self.limits.protocol = Protocol::V5;
                    self.refuse_with(reason, Some(error.to_string()), ctx);
                } else {
                    self.close(None, ctx);
                }
            }
            // [MQTT-3.1.0-2]: a second CONNECT is a Protocol Error, also one that does not
            // decode.
            _ if matches!(error, DecodeError::InConnect { .. })
                || matches!(error.root(), DecodeError::UnsupportedProtocolVersion { .. }) =>
            {
                let detail = format!("a second CONNECT ({error})");
                self.close_with(Some(ReasonCode::PROTOCOL_ERROR), Some(detail), ctx)
            }
            _ => self.close_with(Some(reason), Some(error.to_string()), ctx),
        }
    }
}
