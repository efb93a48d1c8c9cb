//! SUBSCRIBE and UNSUBSCRIBE: the session records the filter (its source of truth), tells the
//! TopicNode shards, answers SUBACK / UNSUBACK, then sends the retained messages the new
//! subscriptions match.
//!
//! SUBACK goes to the Connection through the same mailbox as deliveries, so it always arrives
//! before any message the new subscription matched. While the RetainStore answers, the session
//! waits (`ctx.wait`): live deliveries wait in its inbox (their `TakeDeliveries` in its
//! mailbox) and follow the retained ones, so a subscriber never sees a retained message after
//! a newer live one on the same subscription.
//!
//! A persistent session's new subscriptions are durable before SUBACK: the session waits for
//! the store the same way (deliveries queue behind the wait).

use std::sync::Arc;

use actix::prelude::*;
use slog::{info, warn};
use starling_proto::session::Delivery;
use starling_proto::{Packet, QoS, ReasonCode, RetainHandling, SubAck, TopicFilter, UnsubAck};

use super::Session;
use crate::msg::{Routed, SessionSubscribe, SessionUnsubscribe, Subscriber};
use crate::retain::MatchRetained;
use crate::store::{subscription_record, Op};

/// A filter whose retained messages are sent after SUBACK.
struct RetainedRequest {
    filter: TopicFilter,
    qos: QoS,
    subscription_id: Option<u32>,
}

fn granted(qos: QoS) -> ReasonCode {
    match qos {
        QoS::AtMostOnce => ReasonCode::GRANTED_QOS_0,
        QoS::AtLeastOnce => ReasonCode::GRANTED_QOS_1,
        QoS::ExactlyOnce => ReasonCode::GRANTED_QOS_2,
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
        let mut retained = Vec::new();
        let mut stored = None;
        for (filter, options) in packet.filters {
            // [MQTT-3.9.3]: a refused filter gets its own failure code; the others are granted.
            if !self
                .shared
                .security
                .authorize_subscribe(&self.principal, &filter)
            {
                info!(self.log(), "subscription refused: not authorized"; "filter" => %filter);
                reasons.push(ReasonCode::NOT_AUTHORIZED);
                continue;
            }
            let subscriber = Subscriber {
                inbox: Arc::clone(&self.inbox),
                options,
                subscription_id,
                online: true,
            };
            // [MQTT-3.8.4-3]: a subscription to an existing filter replaces it.
            self.shared.router.subscribe(&filter, self.id, &subscriber);
            let existed = self
                .subscriptions
                .insert(filter.clone(), (options, subscription_id))
                .is_some();
            reasons.push(granted(options.qos));
            if let (Some(store), true) = (&self.shared.store, self.is_durable()) {
                stored = Some(store.send_confirmed(Op::PutSubscription {
                    client: Arc::clone(&self.inbox.client_id),
                    filter: filter.as_str().to_owned(),
                    record: subscription_record(options, subscription_id),
                }));
            }
            // MQTT 5 §4.8.2: retained messages are not sent when a shared subscription is made.
            let send_retained = filter.shared_group().is_none()
                && match options.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendIfNew => !existed,
                    RetainHandling::DoNotSend => false,
                };
            if send_retained {
                retained.push(RetainedRequest {
                    filter,
                    qos: options.qos,
                    subscription_id,
                });
            }
        }
        let suback = SubAck {
            packet_id: packet.packet_id,
            properties: None,
            reasons,
        };
        self.report();
        let Some(stored) = stored else {
            self.send_control(Packet::SubAck(suback));
            if !retained.is_empty() {
                self.send_retained(retained, ctx);
            }
            return;
        };
        // The last write's completion covers the earlier ones (commits are in order).
        ctx.wait(stored.into_actor(self).map(move |result, act, ctx| {
            let mut suback = suback;
            if !matches!(result, Ok(Ok(()))) {
                warn!(
                    act.log(),
                    "subscriptions not stored; SUBACK reports failure"
                );
                for reason in &mut suback.reasons {
                    if reason.is_success() {
                        *reason = ReasonCode::UNSPECIFIED_ERROR;
                    }
                }
            }
            act.send_control(Packet::SubAck(suback));
            if !retained.is_empty() {
                act.send_retained(retained, ctx);
            }
        }));
    }
}

impl Session {
    fn send_retained(&mut self, requests: Vec<RetainedRequest>, ctx: &mut Context<Self>) {
        let filters = requests.iter().map(|r| r.filter.clone()).collect();
        let query = self
            .shared
            .router
            .retain_store()
            .send(MatchRetained { filters });
        ctx.wait(query.into_actor(self).map(move |answer, act, _| {
            let found = match answer {
                Ok(found) => found,
                Err(e) => {
                    warn!(act.log(), "retained messages unavailable"; "error" => %e);
                    return;
                }
            };
            for (index, msg) in found {
                let Some(request) = requests.get(index) else {
                    continue;
                };
                // Retained messages go only to those who may read their topic.
                if !act
                    .shared
                    .security
                    .authorize_receive(&act.principal, &msg.topic)
                {
                    continue;
                }
                // [MQTT-3.3.1-8]: retained messages sent for a new subscription keep RETAIN=1.
                let mut delivery = Delivery {
                    qos: msg.qos.min(request.qos),
                    retain: true,
                    subscription_ids: request.subscription_id.into_iter().collect(),
                    expires_at: msg.expires_at,
                    size: msg.payload.len(),
                    msg: Routed {
                        msg: Arc::clone(&msg),
                        shared: None,
                        stored: None,
                    },
                };
                act.store_own_delivery(&mut delivery);
                act.deliver(delivery, false);
            }
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
                    self.shared.router.unsubscribe(filter, self.id);
                    if self.is_durable() {
                        self.store_send(Op::DeleteSubscription {
                            client: Arc::clone(&self.inbox.client_id),
                            filter: filter.as_str().to_owned(),
                        });
                    }
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::NO_SUBSCRIPTION_EXISTED
                }
            })
            .collect();
        self.send_control(Packet::UnsubAck(UnsubAck {
            packet_id: packet.packet_id,
            properties: None,
            reasons,
        }));
        self.report();
    }
}
