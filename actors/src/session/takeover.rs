//! The will of a connection its session was taken from, held until that connection reports.
//!
//! When a CONNECT arrives for a client id whose session is attached, the old connection is
//! closed with Session Taken Over and, if it ended without a normal DISCONNECT, its will is
//! published if it has no delay; a delayed one is deleted, since the client is back before its
//! delay ran out ([MQTT-3.1.4-3], [MQTT-3.1.3-9]). Whether it ended with a DISCONNECT only the
//! old connection knows: a client that says goodbye and reconnects at once can have its
//! DISCONNECT still unread on the old socket when the new CONNECT is attached (sent first is not
//! readable first, even on loopback). So the session does not decide at takeover. It keeps the
//! old will here; the old connection reads for a short grace, and its `Detach` says whether the
//! will goes out. A session that ends meanwhile stays alive (unregistered) until every such
//! report is in. Should a report never come (the connection's actor died before it was
//! attached), the will goes out after `REPORT_GRACE`.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use starling_proto::lifecycle::{self, WillAtReconnect};

use super::Session;
use crate::msg::{ConnId, Will};
use crate::security::Principal;

/// How long a taken-over connection has to report how it ended. It closes within its
/// takeover grace plus its close grace (2 s); this only matters if it never reports at all.
const REPORT_GRACE: Duration = Duration::from_secs(5);

/// Wills of taken-over connections waiting for their reports.
#[derive(Debug, Default)]
pub(super) struct TakenOver {
    pending: Vec<PendingWill>,
    /// The session ended (and left the table) while reports were outstanding.
    stop_when_done: bool,
}

/// A taken-over connection's will, waiting for that connection's report.
#[derive(Debug)]
struct PendingWill {
    conn_id: ConnId,
    will: Box<Will>,
    /// Who the client was on that connection (the will is authorized as theirs).
    principal: Arc<Principal>,
    timer: SpawnHandle,
}

impl Session {
    /// The current connection `conn_id` is being taken over: a will with a delay is deleted,
    /// since the new connection came before the delay ran out, and one without waits for the
    /// old connection's report (`lifecycle::will_at_reconnect`, [MQTT-3.1.3-9]).
    pub(super) fn hold_will_of_taken_over(&mut self, conn_id: ConnId, ctx: &mut Context<Self>) {
        let Some(will) = self.will.take() else { return };
        if lifecycle::will_at_reconnect(will.delay) == WillAtReconnect::Discard {
            return;
        }
        let timer = ctx.run_later(REPORT_GRACE, move |act, ctx| {
            act.taken_over_reported(conn_id, true, ctx);
        });
        self.taken_over.get_or_default().pending.push(PendingWill {
            conn_id,
            will,
            principal: Arc::clone(&self.principal),
            timer,
        });
    }

    /// After a restart: the held wills' fallback timers died with the old context (and their
    /// handles would name the new context's futures), so each gets a new one.
    pub(super) fn rearm_taken_over(&mut self, ctx: &mut Context<Self>) {
        let Some(taken_over) = self.taken_over.get_mut() else {
            return;
        };
        for held in &mut taken_over.pending {
            let conn_id = held.conn_id;
            held.timer = ctx.run_later(REPORT_GRACE, move |act, ctx| {
                act.taken_over_reported(conn_id, true, ctx);
            });
        }
    }

    /// Connection `conn_id`, no longer this session's, reported how it ended: if it was taken
    /// over, its will is published unless it ended with a normal DISCONNECT. Reports from any
    /// other connection are old news.
    pub(super) fn taken_over_reported(
        &mut self,
        conn_id: ConnId,
        publish_will: bool,
        ctx: &mut Context<Self>,
    ) {
        let Some(taken_over) = self.taken_over.get_mut() else {
            return;
        };
        let Some(at) = taken_over.pending.iter().position(|p| p.conn_id == conn_id) else {
            return;
        };
        let held = taken_over.pending.swap_remove(at);
        let done = taken_over.pending.is_empty();
        let stop = done && taken_over.stop_when_done;
        if done {
            self.taken_over.clear();
        }
        ctx.cancel_future(held.timer);
        // The store is not touched: the will was never this session's to persist.
        if publish_will {
            self.publish_will_as(*held.will, &held.principal);
        }
        if stop {
            ctx.stop();
        }
    }

    /// The session has ended and left the table: it stops now, unless taken-over connections
    /// still owe a report (then when the last one is in).
    pub(super) fn stop_after_reports(&mut self, ctx: &mut Context<Self>) {
        match self.taken_over.get_mut() {
            Some(taken_over) => taken_over.stop_when_done = true,
            None => ctx.stop(),
        }
    }
}
