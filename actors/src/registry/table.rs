//! The session table: client id -> Session, shared by every worker thread.
//!
//! A CONNECT finds or starts its session here, on the connection's own thread, under the lock
//! of the table shard that holds its client id. Nothing is sent to another thread on the way:
//! a new session starts on the connection's worker, and its `Attach` is enqueued in its mailbox
//! before the lock is let go, so attaches for one client id keep the order in which the
//! CONNECTs took the lock. A session that ends asks to leave under the same lock
//! (`remove_if_current`), and is refused when an attach was enqueued after the one it last
//! handled: a reconnect racing an expiry is never lost.
//!
//! The lock is held for a hash map operation, an actor spawn and a mailbox push; 64 shards
//! keep two workers from meeting on it.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use actix::ArbiterHandle;
use slog::debug;

use crate::msg::{Attach, AttachReply, Inbox, OpenSession, SessionId};
use crate::session::{Session, SessionShared};
use crate::supervisor::Supervision;

/// Shards of the table: a power of two, well above the number of workers.
const SHARDS: usize = 64;

#[derive(Debug)]
struct Entry {
    id: SessionId,
    /// The session's address (inside its shared inbox).
    session: Arc<Inbox>,
    /// Attaches enqueued to this session so far.
    generation: u64,
}

type Shard = HashMap<Arc<str>, Entry>;

/// Every live session, by client id.
pub struct SessionTable {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    next_id: AtomicU64,
}

impl std::fmt::Debug for SessionTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTable")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl Default for SessionTable {
    fn default() -> Self {
        SessionTable::new()
    }
}

impl SessionTable {
    /// An empty table.
    pub fn new() -> SessionTable {
        SessionTable {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            next_id: AtomicU64::new(1),
        }
    }

    /// The shard of `client_id`, locked. A panic while it was held (inside an actor's
    /// constructor) leaves the map itself whole, so a poisoned lock is taken as it is.
    fn lock(&self, client_id: &str) -> MutexGuard<'_, Shard> {
        let index = (self.hasher.hash_one(client_id) as usize) & (SHARDS - 1);
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh session id.
    pub fn next_id(&self) -> SessionId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Finds the session of `open.client_id`, or starts one on the current worker, and
    /// enqueues its `Attach`. The answer is the session's reply, still to come.
    pub fn open(&self, shared: &Arc<SessionShared>, open: OpenSession) -> AttachReply {
        let mut shard = self.lock(&open.client_id);
        let entry = match shard.get_mut(&open.client_id) {
            // An entry whose actor is gone (it stopped without leaving, e.g. a restart it
            // declined) is replaced.
            Some(entry) if entry.session.addr.connected() => entry,
            _ => {
                let (id, inbox) = self.start_session(shared, &open.client_id, None, |inbox, id| {
                    Session::new(inbox, id, Arc::clone(shared))
                });
                debug!(shared.log, "session created";
                    "client_id" => &*open.client_id, "session" => id);
                shard
                    .entry(Arc::clone(&open.client_id))
                    .insert_entry(Entry {
                        id,
                        session: inbox,
                        generation: 0,
                    })
                    .into_mut()
            }
        };
        entry.generation += 1;
        // Enqueued now (`do_send` ignores the mailbox's capacity), while the lock orders this
        // attach after any earlier one.
        let (reply, answer) = tokio::sync::oneshot::channel();
        entry.session.addr.do_send(Attach {
            link: open.link,
            params: open.params,
            generation: entry.generation,
            reply,
        });
        answer
    }

    /// Starts a session for `client_id` (on `worker`, or the current one) under a fresh id:
    /// `build` makes it, here, from its inbox and id. The caller registers it in the table.
    pub fn start_session(
        &self,
        shared: &SessionShared,
        client_id: &Arc<str>,
        worker: Option<&ArbiterHandle>,
        build: impl FnOnce(Arc<Inbox>, SessionId) -> Session,
    ) -> (SessionId, Arc<Inbox>) {
        let id = self.next_id();
        let (addr, mailbox) = Supervision::mailbox();
        let inbox = Arc::new(Inbox::new(addr, Arc::clone(client_id)));
        let session = build(Arc::clone(&inbox), id);
        shared.supervision.start_with(
            mailbox,
            worker,
            "session",
            Arc::clone(client_id),
            move |_| session,
        );
        (id, inbox)
    }

    /// Registers a session rebuilt from the store (start-up). Generation 1: the next attach
    /// finds a session that existed (session present).
    pub fn insert_recovered(&self, id: SessionId, session: Arc<Inbox>) {
        let client_id = Arc::clone(&session.client_id);
        self.lock(&client_id).insert(
            client_id,
            Entry {
                id,
                session,
                generation: 1,
            },
        );
    }

    /// Session `id` of `client_id` has ended, having seen `generation` attaches: it leaves
    /// the table and may stop (`true`), unless a newer attach is on its way to it (`false`:
    /// it lives on, afresh, when that attach arrives).
    pub fn remove_if_current(&self, client_id: &str, id: SessionId, generation: u64) -> bool {
        let mut shard = self.lock(client_id);
        match shard.get(client_id) {
            Some(entry) if entry.id == id && entry.generation == generation => {
                shard.remove(client_id);
                true
            }
            // Replaced already (its actor had gone): nobody else will attach to this one.
            Some(entry) if entry.id != id => true,
            Some(_) => false,
            None => true,
        }
    }

    /// The session of `client_id`, if there is one.
    pub fn get(&self, client_id: &str) -> Option<Arc<Inbox>> {
        self.lock(client_id)
            .get(client_id)
            .map(|entry| Arc::clone(&entry.session))
    }

    /// Every session (a snapshot).
    pub fn sessions(&self) -> Vec<Arc<Inbox>> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            all.extend(shard.values().map(|entry| Arc::clone(&entry.session)));
        }
        all
    }

    /// Drops the entries whose session actor is gone; returns how many were dropped and how
    /// many remain.
    pub fn drop_dead(&self) -> (usize, usize) {
        let (mut dropped, mut kept) = (0, 0);
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let before = shard.len();
            shard.retain(|_, entry| entry.session.addr.connected());
            dropped += before - shard.len();
            kept += shard.len();
        }
        (dropped, kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbox(client_id: &str) -> (Arc<Inbox>, crate::supervisor::Mailbox<Session>) {
        let (addr, mailbox) = Supervision::mailbox();
        (Arc::new(Inbox::new(addr, client_id.into())), mailbox)
    }

    /// A session that ends after the last attach it saw leaves the table.
    #[test]
    fn a_session_current_with_the_table_leaves_it() {
        let table = SessionTable::new();
        let (session, _mailbox) = inbox("a");
        table.insert_recovered(7, session);
        assert!(table.remove_if_current("a", 7, 1));
        assert!(table.get("a").is_none());
    }

    /// An attach enqueued after the one the session last handled keeps it in the table: it
    /// must live on and take that attach.
    #[test]
    fn a_session_with_an_attach_on_its_way_stays() {
        let table = SessionTable::new();
        let (session, _mailbox) = inbox("a");
        table.insert_recovered(7, session);
        assert!(!table.remove_if_current("a", 7, 0));
        assert!(table.get("a").is_some());
    }

    /// A session no longer in the table (replaced, or gone) may stop; the entry of the one that
    /// replaced it stays.
    #[test]
    fn a_replaced_session_may_stop_and_leaves_its_successor() {
        let table = SessionTable::new();
        assert!(table.remove_if_current("a", 7, 1));
        let (successor, _mailbox) = inbox("a");
        table.insert_recovered(8, successor);
        assert!(table.remove_if_current("a", 7, 1));
        assert!(table.get("a").is_some());
    }

    /// Entries whose actor is gone (its mailbox dropped) are dropped; the others kept.
    #[test]
    fn dead_entries_are_dropped() {
        let table = SessionTable::new();
        let (live, _kept) = inbox("live");
        let (dead, mailbox) = inbox("dead");
        drop(mailbox);
        table.insert_recovered(1, live);
        table.insert_recovered(2, dead);
        assert_eq!(table.drop_dead(), (1, 1));
        assert_eq!(table.sessions().len(), 1);
        assert!(table.get("dead").is_none());
    }
}
