//! What a Connection does with each packet it reads, and with packets it cannot read.

use std::sync::Arc;

use actix::prelude::*;
use slog::debug;
use starling_proto::{DecodeError, Packet, Protocol, PubResponse, Publish, QoS, ReasonCode};

use super::{Connection, State};
use crate::msg::{Message, Route, SessionSubscribe, SessionUnsubscribe};

impl Connection {
    /// Dispatches one decoded packet.
    pub(super) fn on_packet(&mut self, packet: Packet, ctx: &mut Context<Self>) {
        if self.state == State::AwaitingConnect {
            match packet {
                Packet::Connect(connect) => self.on_connect(&connect, ctx),
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
            Packet::PubRel(rel) => {
                // [MQTT-4.3.3-11]: release the packet id; PUBCOMP whether or not it was known
                // (3.x), with "not found" on MQTT 5.
                let known = self.inbound_qos2.remove(&rel.packet_id);
                let mut comp = PubResponse::success(rel.packet_id);
                if !known && self.protocol().is_v5() {
                    comp.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
                }
                self.send(&Packet::PubComp(comp));
            }
            Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => {
                // Acknowledgements of outbound QoS 1/2, which this broker does not send yet.
            }
            Packet::Subscribe(packet) => attachment.session.do_send(SessionSubscribe {
                conn_id: self.id,
                packet,
            }),
            Packet::Unsubscribe(packet) => attachment.session.do_send(SessionUnsubscribe {
                conn_id: self.id,
                packet,
            }),
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
                self.close(None, ctx);
            }
            Packet::Connect(_) => {
                // [MQTT-3.1.0-2]: a second CONNECT is a protocol violation.
                self.close(Some(ReasonCode::PROTOCOL_ERROR), ctx);
            }
            Packet::Auth(_) => {
                // No authentication exchange was started, so AUTH is out of place.
                self.close(Some(ReasonCode::PROTOCOL_ERROR), ctx);
            }
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                // Packets only a server sends.
                self.close(Some(ReasonCode::PROTOCOL_ERROR), ctx);
            }
        }
    }

    fn on_publish(&mut self, mut publish: Publish, ctx: &mut Context<Self>) {
        if let Err(reason) = self.resolve_alias(&mut publish) {
            self.close(Some(reason), ctx);
            return;
        }
        if publish.retain && self.protocol().is_v5() {
            // CONNACK announced Retain Available = 0 ([MQTT-3.2.2-14]).
            self.close(Some(ReasonCode::RETAIN_NOT_SUPPORTED), ctx);
            return;
        }
        let packet_id = publish.packet_id;
        let qos = publish.qos;
        if qos == QoS::ExactlyOnce {
            let Some(id) = packet_id else { return };
            if !self.inbound_qos2.contains(&id) {
                // Flow control: the broker's Receive Maximum bounds unreleased QoS 2 publishes
                // ([MQTT-3.3.4-9]).
                let max = self.config.receive_maximum.unwrap_or(u16::MAX);
                if self.inbound_qos2.len() >= usize::from(max) {
                    self.close(Some(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED), ctx);
                    return;
                }
                self.inbound_qos2.insert(id);
                self.route(publish);
            }
            // A duplicate (DUP or not) of an unreleased id is acknowledged, not routed again
            // ([MQTT-4.3.3-10]).
            self.send(&Packet::PubRec(PubResponse::success(id)));
            return;
        }
        self.route(publish);
        if let Some(id) = packet_id {
            self.send(&Packet::PubAck(PubResponse::success(id)));
        }
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
            match self.aliases.get(&alias) {
                Some(topic) => publish.topic = topic.clone(),
                None => return Err(ReasonCode::PROTOCOL_ERROR),
            }
        } else {
            self.aliases.insert(alias, publish.topic.clone());
        }
        Ok(())
    }

    fn route(&mut self, publish: Publish) {
        let properties = publish.properties.filter(|p| !p.is_empty());
        let msg = Message {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            origin: self.attachment.as_ref().map(|a| a.session_id),
        };
        self.broker.router.route(Route(Arc::new(msg)));
    }

    /// A packet that cannot be decoded: answer per protocol and state, then close.
    pub(super) fn on_decode_error(&mut self, error: DecodeError, ctx: &mut Context<Self>) {
        let reason = error.reason_code();
        debug!(self.log, "bad packet"; "error" => %error, "reason" => %reason);
        match self.state {
            State::AwaitingConnect => {
                if let DecodeError::UnsupportedProtocolVersion { .. } = error {
                    // [MQTT-3.1.2-2]: return code 1 in the 3.1.1 shape, which every version
                    // can read.
                    self.limits.protocol = Protocol::V311;
                    self.refuse(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION, ctx);
                } else if error.connect_protocol() == Some(Protocol::V5) {
                    self.limits.protocol = Protocol::V5;
                    self.refuse(reason, ctx);
                } else {
                    self.close(None, ctx);
                }
            }
            _ => self.close(Some(reason), ctx),
        }
    }
}
