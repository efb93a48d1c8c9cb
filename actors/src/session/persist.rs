//! What a persistent session writes to the store, and how a session is rebuilt from it.
//!
//! A session is durable while persistence is on and its expiry is not 0 (it outlives its
//! connection). Then its own record (expiry, offline time, user name, will) follows every
//! attach and detach, its subscriptions are stored before SUBACK, and every QoS 1/2 message
//! it holds has an entry: the shard stores it before the publisher is acknowledged; the
//! session records when it goes in flight and when PUBREC came, and removes it when it is
//! acknowledged, dropped or handed to another member of a shared subscription. Operations go
//! to the store's writer in the order the session sends them, after the shard's.
//!
//! A session that fails is rebuilt here too (`Supervised::restarting`): from the store if it
//! is durable, else it ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use starling_proto::session::{Delivery, InflightState};
use starling_proto::PacketId;

use actix::prelude::*;
use slog::{error, info};
use starling_proto::ReasonCode;

use super::{Session, SessionShared};
use crate::msg::{Inbox, Kick, Routed, SessionId, Subscriber, SubscriptionsFor, TakeDeliveries};
use crate::security::Principal;
use crate::store::{
    encode_message, instant_to_unix_ms, session_record, unix_ms_to_instant, EntryRecord, Op,
    StoredSession,
};
use crate::supervisor::{inject, InjectFault};

/// The store entry of a delivery, at `inflight`.
pub(super) fn entry_record(
    delivery: &Delivery<Routed>,
    inflight: Option<(PacketId, InflightState)>,
) -> EntryRecord {
    EntryRecord {
        qos: delivery.qos,
        retain: delivery.retain,
        subscription_ids: delivery.subscription_ids.clone(),
        shared: delivery.msg.shared.clone(),
        inflight,
    }
}

impl Session {
    /// Persistence is on and the session outlives its connection.
    pub(super) fn is_durable(&self) -> bool {
        self.inbox.durable.load(Ordering::Relaxed)
    }

    pub(super) fn store_send(&self, op: Op) {
        if let Some(store) = &self.shared.store {
            store.send(op);
        }
    }

    /// After an attach: a session whose state was cleared, or that no longer outlives its
    /// connection, loses what it stored; a durable one (re)writes its record.
    pub(super) fn attach_store(&mut self, cleared: bool) {
        if self.shared.store.is_none() {
            return;
        }
        let durable = self.expiry != Some(0);
        if self.persisted && (cleared || !durable) {
            self.forget_stored();
        }
        self.inbox.durable.store(durable, Ordering::Relaxed);
        self.out.set_keep_dropped(durable);
        if durable {
            self.persist_session();
        }
    }

    /// Writes the session's own record.
    pub(super) fn persist_session(&mut self) {
        let Some(store) = &self.shared.store else {
            return;
        };
        let offline_since = self
            .link
            .is_none()
            .then(|| instant_to_unix_ms(Some(self.offline_since.unwrap_or_else(Instant::now))));
        let record = session_record(
            self.expiry,
            offline_since,
            self.principal.username.clone(),
            self.will.as_deref(),
        );
        store.send(Op::PutSession {
            client: Arc::clone(&self.inbox.client_id),
            record,
        });
        self.persisted = true;
    }

    /// Removes everything the session stored; it is no longer durable.
    pub(super) fn forget_stored(&mut self) {
        if std::mem::take(&mut self.persisted) {
            self.store_send(Op::DeleteSession {
                client: Arc::clone(&self.inbox.client_id),
            });
        }
        self.inbox.durable.store(false, Ordering::Relaxed);
        self.out.set_keep_dropped(false);
    }

    /// The session is done with a stored message.
    pub(super) fn release_stored(&self, routed: &Routed) {
        if let Some(msg_id) = routed.stored {
            self.store_send(Op::DeleteEntry {
                client: Arc::clone(&self.inbox.client_id),
                msg_id,
            });
        }
    }

    /// Removes the messages the queue dropped from the store.
    pub(super) fn release_dropped(&mut self) {
        for routed in self.out.take_dropped() {
            self.release_stored(&routed);
        }
    }

    /// Records where a stored delivery now stands.
    pub(super) fn store_progress(
        &self,
        delivery: &Delivery<Routed>,
        inflight: Option<(PacketId, InflightState)>,
    ) {
        if let Some(msg_id) = delivery.msg.stored {
            self.store_send(Op::UpdateEntry {
                client: Arc::clone(&self.inbox.client_id),
                msg_id,
                entry: entry_record(delivery, inflight).encode(),
            });
        }
    }

    /// Stores a delivery the session made itself (a retained message at subscribe time).
    pub(super) fn store_own_delivery(&self, delivery: &mut Delivery<Routed>) {
        let Some(store) = &self.shared.store else {
            return;
        };
        if delivery.qos == starling_proto::QoS::AtMostOnce || !self.is_durable() {
            return;
        }
        let msg_id = store.next_msg_id();
        store.send(Op::AddEntry {
            client: Arc::clone(&self.inbox.client_id),
            msg_id,
            message: encode_message(&delivery.msg.msg),
            entry: entry_record(delivery, None).encode(),
        });
        delivery.msg.stored = Some(msg_id);
    }

    /// Replaces this session's state with `stored` (a Session rebuilt from the store), the
    /// client offline.
    pub(super) fn restore(&mut self, stored: StoredSession) {
        let StoredSession {
            record,
            subscriptions,
            entries,
            inbound_qos2,
            ..
        } = stored;
        self.expiry = record.expiry;
        self.offline_since = Some(
            record
                .offline_since
                .and_then(unix_ms_to_instant)
                .unwrap_or_else(Instant::now),
        );
        self.principal = Arc::new(Principal {
            username: record.username,
            client_id: self.inbox.client_id.to_string(),
        });
        self.will = record.will.map(Box::new);
        self.subscriptions = subscriptions
            .into_iter()
            .map(|(filter, options, id)| (filter, (options, id)))
            .collect();
        self.out.clear();
        self.restored.clear();
        for e in entries {
            let delivery = Delivery {
                qos: e.entry.qos,
                retain: e.entry.retain,
                subscription_ids: e.entry.subscription_ids.clone(),
                expires_at: e.msg.expires_at,
                size: e.msg.payload.len(),
                msg: Routed {
                    msg: e.msg,
                    shared: e.entry.shared.clone(),
                    stored: Some(e.msg_id),
                },
            };
            if e.entry.inflight.is_none() {
                self.restored.get_or_default().insert(e.msg_id);
            }
            self.out.restore(delivery, e.entry.inflight);
        }
        self.inbound.clear();
        for id in inbound_qos2 {
            self.inbound.get_or_default().restore(id);
        }
        let inflight: Vec<u64> = self
            .out
            .inflight_entries()
            .filter_map(|(d, _, _)| d.msg.stored)
            .collect();
        if !inflight.is_empty() {
            self.restored.get_or_default().extend(inflight);
        }
        self.persisted = true;
        self.inbox.durable.store(true, Ordering::Relaxed);
        self.out.set_keep_dropped(true);
    }

    /// A session rebuilt from the store at start-up, its client offline. The caller registers
    /// its subscriptions with the shards (`resubscribe`) before anything is routed.
    pub fn recovered(
        stored: StoredSession,
        inbox: Arc<Inbox>,
        id: SessionId,
        shared: Arc<SessionShared>,
    ) -> Session {
        let mut session = Session::new(inbox, id, shared);
        session.restore(stored);
        session.recovered = true;
        // Nothing of it can be in flight in an inbox at start-up.
        session.restored.clear();
        session.generation = 1;
        session
    }
}

impl actix::Supervised for Session {
    /// A failed session: its client is disconnected (it reconnects), and its state is rebuilt
    /// from the store; a session that stored nothing (clean, or persistence off) cannot be
    /// rebuilt and ends, as if its connection had been lost.
    fn restarting(&mut self, ctx: &mut Context<Self>) {
        // The failure may have come while deliveries were being taken from the inbox, whose
        // one wake-up was then spent: another one is harmless, a missing one would leave the
        // inbox untaken for good.
        self.inbox.do_send(TakeDeliveries);
        if let Some(link) = self.link.take() {
            link.addr.do_send(Kick(ReasonCode::UNSPECIFIED_ERROR));
        }
        // Timers and spawned work died with the old context.
        self.will_timer = None;
        self.expiry_timer = None;
        self.rearm_taken_over(ctx);
        self.in_transit = 0;
        // (The PUBRECs owed to that connection go with it: `InboundQos2::due` drops them.)
        for filter in self.subscriptions.keys() {
            self.shared.router.unsubscribe(filter, self.id);
        }
        let store = self.shared.store.clone().filter(|_| self.persisted);
        let Some(store) = store else {
            self.subscriptions.clear();
            // The connection was lost: its will goes out now.
            self.publish_will();
            self.end("failed, nothing stored to rebuild it from", ctx);
            self.report();
            return;
        };
        let client = Arc::clone(&self.inbox.client_id);
        let load = async move { store.load_session(client).await };
        // Deliveries wait in the inbox (their wake-up in the mailbox) until the state is back.
        ctx.wait(load.into_actor(self).map(|answer, act, ctx| {
            match answer {
                Ok(Some(stored)) => {
                    act.restore(stored);
                    act.resubscribe();
                    info!(act.log(), "session rebuilt from the store";
                        "subscriptions" => act.subscriptions.len(),
                        "queued" => act.out.queued(), "inflight" => act.out.inflight());
                    act.start_expiry_scan(ctx);
                    act.trigger_will(ctx);
                }
                other => {
                    if let Err(e) = other {
                        error!(act.log(), "session not rebuilt"; "error" => %e);
                    }
                    act.subscriptions.clear();
                    act.end("failed, not in the store", ctx);
                }
            }
            act.report();
        }));
    }
}

impl Session {
    /// Registers every subscription with the shards (again, after a rebuild; or for a session
    /// recovered at start-up, before it runs).
    pub fn resubscribe(&self) {
        for (filter, (options, subscription_id)) in &self.subscriptions {
            let subscriber = Subscriber {
                inbox: Arc::clone(&self.inbox),
                options: *options,
                subscription_id: *subscription_id,
                online: self.link.is_some(),
            };
            self.shared.router.subscribe(filter, self.id, &subscriber);
        }
    }
}

impl Handler<SubscriptionsFor> for Session {
    type Result = MessageResult<SubscriptionsFor>;

    fn handle(&mut self, msg: SubscriptionsFor, _: &mut Self::Context) -> Self::Result {
        let online = self.link.is_some();
        let found = self
            .subscriptions
            .iter()
            .filter(|(filter, _)| self.shared.router.filter_in_shard(filter, msg.shard))
            .map(|(filter, (options, subscription_id))| {
                let subscriber = Subscriber {
                    inbox: Arc::clone(&self.inbox),
                    options: *options,
                    subscription_id: *subscription_id,
                    online,
                };
                (filter.clone(), self.id, subscriber)
            })
            .collect();
        MessageResult(found)
    }
}

impl Handler<InjectFault> for Session {
    type Result = ();

    fn handle(&mut self, fault: InjectFault, ctx: &mut Self::Context) {
        inject(fault, ctx);
    }
}
