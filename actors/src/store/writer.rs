//! The store's writer thread and its tables: opening and recovery, then group commits.
//!
//! Tables (keys -> values):
//! - `sessions`: client id -> `SessionRecord`
//! - `subscriptions`: (client id, filter) -> options and identifier
//! - `entries`: (client id, message id) -> `EntryRecord` (a message held for a session)
//! - `messages`: message id -> `encode_message` (stored once, however many sessions hold it)
//! - `inbound_qos2`: (client id, packet id) -> ()
//! - `retained`: topic -> `encode_message`
//!
//! How many entries reference each message is counted in memory (rebuilt at open); a message
//! row goes when its last entry does.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, Durability, ReadableTable, TableDefinition, WriteTransaction};
use slog::{crit, info, o, warn, Logger};
use starling_proto::{PacketId, TopicFilter};

use super::records::{decode_message, decode_subscription, now_unix_ms, Corrupt};
use super::{
    Done, EntryRecord, Op, PersistenceConfig, Recovered, Request, SessionRecord, StoreError,
    StoredEntry, StoredSession, SyncMode,
};
use crate::msg::Message;

const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const SUBSCRIPTIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("subscriptions");
const ENTRIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("entries");
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
const INBOUND: TableDefinition<(&str, u16), ()> = TableDefinition::new("inbound_qos2");
const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");

/// Most operations applied in one transaction.
const MAX_BATCH: usize = 8192;
/// With `sync = "never"`, the longest time between durable checkpoints.
const NEVER_CHECKPOINT: Duration = Duration::from_secs(30);

type Refcounts = HashMap<u64, u32>;

fn io(path: &std::path::Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

fn corrupt(path: &std::path::Path, e: Corrupt) -> StoreError {
    StoreError::Corrupt {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// Opens the file, purges what expired, and reads everything back.
#[allow(clippy::type_complexity)]
pub(super) fn open(
    config: &PersistenceConfig,
    log: &Logger,
) -> Result<(Database, PathBuf, Recovered, Refcounts, u64), StoreError> {
    std::fs::create_dir_all(&config.dir).map_err(|e| io(&config.dir, e))?;
    let path = config.dir.join("starling.redb");
    let started = Instant::now();
    let db = Database::builder()
        .set_repair_callback(|_| {})
        .create(&path)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => io(
                &path,
                "already open (is another Starling using this directory?)",
            ),
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
                StoreError::Corrupt {
                    path: path.display().to_string(),
                    detail,
                }
            }
            other => io(&path, other),
        })?;
    let mut txn = db.begin_write().map_err(|e| io(&path, e))?;
    txn.set_quick_repair(true);
    let (recovered, refcounts, next_id) = recover(&txn).map_err(|e| match e {
        RecoverError::Corrupt(c) => corrupt(&path, c),
        RecoverError::Db(e) => io(&path, e),
    })?;
    txn.commit().map_err(|e| io(&path, e))?;
    info!(log, "store opened";
        "file" => %path.display(),
        "sessions" => recovered.sessions.len(),
        "messages" => refcounts.len(),
        "retained" => recovered.retained.len(),
        "expired_wills" => recovered.expired_wills.len(),
        "ms" => started.elapsed().as_millis() as u64);
    Ok((db, path, recovered, refcounts, next_id))
}

enum RecoverError {
    Corrupt(Corrupt),
    Db(redb::Error),
}

impl<E: Into<redb::Error>> From<E> for RecoverError {
    fn from(e: E) -> RecoverError {
        RecoverError::Db(e.into())
    }
}

fn parse<T>(r: Result<T, Corrupt>) -> Result<T, RecoverError> {
    r.map_err(RecoverError::Corrupt)
}

/// Reads the store back, removing expired sessions, expired messages and orphans.
fn recover(txn: &WriteTransaction) -> Result<(Recovered, Refcounts, u64), RecoverError> {
    let now_ms = now_unix_ms();
    let mut sessions_table = txn.open_table(SESSIONS)?;
    let mut subs_table = txn.open_table(SUBSCRIPTIONS)?;
    let mut entries_table = txn.open_table(ENTRIES)?;
    let mut messages_table = txn.open_table(MESSAGES)?;
    let mut inbound_table = txn.open_table(INBOUND)?;
    let mut retained_table = txn.open_table(RETAINED)?;

    // Sessions, minus the expired ones (a session that was online when the broker stopped
    // counts as offline from now).
    let mut sessions: Vec<StoredSession> = Vec::new();
    let mut expired: Vec<String> = Vec::new();
    let mut expired_wills = Vec::new();
    let mut upgraded: Vec<(String, Bytes)> = Vec::new();
    for row in sessions_table.iter()? {
        let (key, value) = row?;
        let (mut record, version) = parse(SessionRecord::decode_versioned(value.value()))?;
        if record.bound_legacy(version, now_ms) {
            upgraded.push((key.value().to_owned(), record.encode()));
        }
        let gone = match (record.expiry, record.offline_since) {
            (Some(secs), Some(since)) => since.saturating_add(u64::from(secs) * 1000) <= now_ms,
            _ => false,
        };
        if gone {
            if let Some(will) = record.will {
                expired_wills.push((Arc::from(key.value()), record.username, will));
            }
            expired.push(key.value().to_owned());
        } else {
            sessions.push(StoredSession {
                client_id: Arc::from(key.value()),
                record,
                subscriptions: Vec::new(),
                entries: Vec::new(),
                inbound_qos2: Vec::new(),
            });
        }
    }
    for client in &expired {
        sessions_table.remove(client.as_str())?;
    }
    for (client, record) in &upgraded {
        sessions_table.insert(client.as_str(), &record[..])?;
    }
    let index: HashMap<Arc<str>, usize> = sessions
        .iter()
        .enumerate()
        .map(|(i, s)| (Arc::clone(&s.client_id), i))
        .collect();

    let mut stale_subs = Vec::new();
    for row in subs_table.iter()? {
        let (key, value) = row?;
        let (client, filter) = key.value();
        match index.get(client) {
            Some(&i) => {
                let (options, id) = parse(decode_subscription(value.value()))?;
                let filter = parse(TopicFilter::new(filter).map_err(|_| Corrupt {
                    what: "subscription filter",
                }))?;
                sessions[i].subscriptions.push((filter, options, id));
            }
            None => stale_subs.push((client.to_owned(), filter.to_owned())),
        }
    }
    for (client, filter) in &stale_subs {
        subs_table.remove((client.as_str(), filter.as_str()))?;
    }

    let mut stale_inbound = Vec::new();
    for row in inbound_table.iter()? {
        let (key, _) = row?;
        let (client, id) = key.value();
        match (index.get(client), PacketId::new(id)) {
            (Some(&i), Some(id)) => sessions[i].inbound_qos2.push(id),
            _ => stale_inbound.push((client.to_owned(), id)),
        }
    }
    for (client, id) in &stale_inbound {
        inbound_table.remove((client.as_str(), *id))?;
    }

    // Entries in (client, message id) order: each session's messages oldest first.
    let mut cache: HashMap<u64, Option<Arc<Message>>> = HashMap::new();
    let mut refcounts: Refcounts = HashMap::new();
    let mut stale_entries = Vec::new();
    let mut next_id = 1u64;
    for row in entries_table.iter()? {
        let (key, value) = row?;
        let (client, msg_id) = key.value();
        next_id = next_id.max(msg_id + 1);
        let Some(&i) = index.get(client) else {
            stale_entries.push((client.to_owned(), msg_id));
            continue;
        };
        let msg = match cache.get(&msg_id) {
            Some(found) => found.clone(),
            None => {
                let found = match messages_table.get(msg_id)? {
                    Some(bytes) => Some(Arc::new(parse(decode_message(bytes.value()))?)),
                    None => None,
                };
                cache.insert(msg_id, found.clone());
                found
            }
        };
        let live = msg
            .as_ref()
            .filter(|m| m.expires_at.is_none_or(|at| at > Instant::now()));
        let Some(msg) = live else {
            stale_entries.push((client.to_owned(), msg_id));
            continue;
        };
        let entry = parse(EntryRecord::decode(value.value()))?;
        *refcounts.entry(msg_id).or_default() += 1;
        sessions[i].entries.push(StoredEntry {
            msg_id,
            msg: Arc::clone(msg),
            entry,
        });
    }
    for (client, msg_id) in &stale_entries {
        entries_table.remove((client.as_str(), *msg_id))?;
    }
    // Messages no live entry holds.
    let mut orphans = Vec::new();
    for row in messages_table.iter()? {
        let (key, _) = row?;
        let id = key.value();
        next_id = next_id.max(id + 1);
        if !refcounts.contains_key(&id) {
            orphans.push(id);
        }
    }
    for id in &orphans {
        messages_table.remove(*id)?;
    }

    let mut retained = Vec::new();
    let mut expired_retained = Vec::new();
    for row in retained_table.iter()? {
        let (key, value) = row?;
        let msg = parse(decode_message(value.value()))?;
        if msg.expires_at.is_some_and(|at| at <= Instant::now()) {
            expired_retained.push(key.value().to_owned());
        } else {
            retained.push(msg);
        }
    }
    for topic in &expired_retained {
        retained_table.remove(topic.as_str())?;
    }
    let recovered = Recovered {
        sessions,
        retained,
        expired_wills,
    };
    Ok((recovered, refcounts, next_id))
}

/// Starts the writer thread.
pub(super) fn spawn(
    db: Database,
    rx: mpsc::Receiver<Request>,
    refcounts: Refcounts,
    config: &PersistenceConfig,
    path: Arc<std::path::Path>,
    failed: Arc<tokio::sync::watch::Sender<Option<String>>>,
    log: &Logger,
) -> Result<(), StoreError> {
    let mut writer = Writer {
        failed,
        db: Some(db),
        refcounts,
        sync: config.sync,
        sync_interval: config.sync_interval,
        last_durable: Instant::now(),
        dirty: false,
        path: Arc::clone(&path),
        log: log.new(o!("actor" => "store")),
    };
    std::thread::Builder::new()
        .name("starling-store".to_owned())
        .spawn(move || writer.run(rx))
        .map(|_| ())
        .map_err(|e| io(&path, e))
}

struct Writer {
    /// Where a failed commit is reported (the broker gives up on it).
    failed: Arc<tokio::sync::watch::Sender<Option<String>>>,
    db: Option<Database>,
    refcounts: Refcounts,
    sync: SyncMode,
    sync_interval: Duration,
    /// When the last fsynced commit was.
    last_durable: Instant,
    /// Commits since then that were not fsynced.
    dirty: bool,
    path: Arc<std::path::Path>,
    log: Logger,
}

impl Writer {
    /// How long non-durable commits may wait for an fsync.
    fn checkpoint_every(&self) -> Option<Duration> {
        match self.sync {
            SyncMode::Always => None,
            SyncMode::Batch => Some(self.sync_interval),
            SyncMode::Never => Some(NEVER_CHECKPOINT),
        }
    }

    fn run(&mut self, rx: mpsc::Receiver<Request>) {
        loop {
            let first = match (self.dirty, self.checkpoint_every()) {
                (true, Some(every)) => {
                    let left = every.saturating_sub(self.last_durable.elapsed());
                    match rx.recv_timeout(left) {
                        Ok(r) => r,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            self.commit(Vec::new(), true);
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                _ => match rx.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
            };
            let mut ops = Vec::new();
            let mut close = None;
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match request {
                    Request::Op(op, done) => ops.push((op, done)),
                    Request::Close(done) => {
                        close = Some(done);
                        break;
                    }
                }
                if ops.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            let durable = close.is_some()
                || match self.sync {
                    SyncMode::Always => true,
                    _ => self
                        .checkpoint_every()
                        .is_some_and(|every| self.last_durable.elapsed() >= every),
                };
            self.commit(ops, durable);
            if let Some(done) = close {
                self.db = None;
                info!(self.log, "store closed"; "file" => %self.path.display());
                let _ = done.send(Ok(()));
                return;
            }
        }
        // Every handle is gone without a close: still leave the file consistent and durable.
        self.commit(Vec::new(), true);
    }

    /// Commits `ops` in one transaction and tells each waiting sender how its own operation
    /// went: a failed operation is reported as failed (its PUBACK or SUBACK must not go out),
    /// the others as the commit went.
    fn commit(&mut self, ops: Vec<(Op, Option<Done>)>, durable: bool) {
        let (ops, waiting): (Vec<Op>, Vec<Option<Done>>) = ops.into_iter().unzip();
        let injected = ops.iter().any(|op| matches!(op, Op::FailCommit));
        let outcome = if injected {
            Err(StoreError::Io {
                path: self.path.display().to_string(),
                detail: "injected commit failure".to_owned(),
            })
        } else {
            self.transaction(ops, durable)
        };
        let (result, failed) = match outcome {
            Ok(failed) => (Ok(()), failed),
            Err(e) => (Err(e), Vec::new()),
        };
        match &result {
            Ok(()) if durable => {
                self.last_durable = Instant::now();
                self.dirty = false;
            }
            Ok(()) => self.dirty = true,
            Err(e) => {
                // The file takes no more writes until it is reopened (redb drops its
                // allocator state on a failed commit), and the broker must not go on
                // acknowledging what it can no longer keep: it gives up, and a restart
                // recovers the last good commit. No checkpoint is due any more either.
                self.dirty = false;
                if self.db.take().is_some() {
                    crit!(self.log, "store commit failed; the broker stops"; "error" => %e);
                    self.failed
                        .send_replace(Some(format!("store commit failed: {e}")));
                }
            }
        }
        let mut failed = failed.into_iter().peekable();
        for (i, done) in waiting.into_iter().enumerate() {
            let own = match failed.next_if(|(at, _)| *at == i) {
                Some((_, e)) => Err(e),
                None => result.clone(),
            };
            if let Some(done) = done {
                let _ = done.send(own);
            }
        }
    }

    /// Applies `ops` in one transaction; the operations that failed (by index, in order) come
    /// back with their errors, since one bad operation must not lose the others.
    fn transaction(
        &mut self,
        ops: Vec<Op>,
        durable: bool,
    ) -> Result<Vec<(usize, StoreError)>, StoreError> {
        let path = Arc::clone(&self.path);
        let Some(db) = &self.db else {
            return Err(StoreError::Closed {
                path: path.display().to_string(),
            });
        };
        let mut txn = db.begin_write().map_err(|e| io(&path, e))?;
        txn.set_quick_repair(true);
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability).map_err(|e| io(&path, e))?;
        let mut replies = Vec::new();
        let mut failed = Vec::new();
        {
            let mut tables = Tables::open(&txn).map_err(|e| io(&path, e))?;
            for (i, op) in ops.into_iter().enumerate() {
                if let Err(e) = tables.apply(op, &mut self.refcounts, &mut replies) {
                    warn!(self.log, "store operation failed"; "error" => %e);
                    failed.push((i, io(&path, e)));
                }
            }
        }
        txn.commit().map_err(|e| io(&path, e))?;
        for reply in replies {
            reply.send(&path);
        }
        Ok(failed)
    }
}

/// A read answered after the commit of the transaction that read it.
enum Reply {
    Session(
        tokio::sync::oneshot::Sender<Result<Option<StoredSession>, StoreError>>,
        Result<Option<Box<StoredSession>>, Corrupt>,
    ),
    Retained(
        tokio::sync::oneshot::Sender<Result<Vec<Message>, StoreError>>,
        Result<Vec<Message>, Corrupt>,
    ),
}

impl Reply {
    fn send(self, path: &std::path::Path) {
        match self {
            Reply::Session(tx, r) => {
                let _ = tx.send(r.map(|s| s.map(|s| *s)).map_err(|e| corrupt(path, e)));
            }
            Reply::Retained(tx, r) => {
                let _ = tx.send(r.map_err(|e| corrupt(path, e)));
            }
        }
    }
}

struct Tables<'t> {
    sessions: redb::Table<'t, &'static str, &'static [u8]>,
    subs: redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    entries: redb::Table<'t, (&'static str, u64), &'static [u8]>,
    messages: redb::Table<'t, u64, &'static [u8]>,
    inbound: redb::Table<'t, (&'static str, u16), ()>,
    retained: redb::Table<'t, &'static str, &'static [u8]>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Tables<'t>, redb::Error> {
        Ok(Tables {
            sessions: txn.open_table(SESSIONS)?,
            subs: txn.open_table(SUBSCRIPTIONS)?,
            entries: txn.open_table(ENTRIES)?,
            messages: txn.open_table(MESSAGES)?,
            inbound: txn.open_table(INBOUND)?,
            retained: txn.open_table(RETAINED)?,
        })
    }

    fn add_entry(
        &mut self,
        client: &str,
        msg_id: u64,
        message: &Bytes,
        entry: &Bytes,
        refcounts: &mut Refcounts,
    ) -> Result<(), redb::Error> {
        let existed = self
            .entries
            .insert((client, msg_id), entry.as_ref())?
            .is_some();
        if !existed {
            let count = refcounts.entry(msg_id).or_default();
            if *count == 0 {
                self.messages.insert(msg_id, message.as_ref())?;
            }
            *count += 1;
        }
        Ok(())
    }

    fn delete_entry(
        &mut self,
        client: &str,
        msg_id: u64,
        refcounts: &mut Refcounts,
    ) -> Result<(), redb::Error> {
        if self.entries.remove((client, msg_id))?.is_some() {
            self.release(msg_id, refcounts)?;
        }
        Ok(())
    }

    fn release(&mut self, msg_id: u64, refcounts: &mut Refcounts) -> Result<(), redb::Error> {
        if let Some(count) = refcounts.get_mut(&msg_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                refcounts.remove(&msg_id);
                self.messages.remove(msg_id)?;
            }
        }
        Ok(())
    }

    fn delete_session(
        &mut self,
        client: &str,
        refcounts: &mut Refcounts,
    ) -> Result<(), redb::Error> {
        self.sessions.remove(client)?;
        let mut ids = Vec::new();
        for row in self.entries.range((client, 0u64)..=(client, u64::MAX))? {
            ids.push(row?.0.value().1);
        }
        for id in ids {
            self.delete_entry(client, id, refcounts)?;
        }
        let mut filters = Vec::new();
        for row in self.subs.range((client, "")..)? {
            let (key, _) = row?;
            let (c, filter) = key.value();
            if c != client {
                break;
            }
            filters.push(filter.to_owned());
        }
        for filter in filters {
            self.subs.remove((client, filter.as_str()))?;
        }
        let mut packet_ids = Vec::new();
        for row in self.inbound.range((client, 0u16)..=(client, u16::MAX))? {
            packet_ids.push(row?.0.value().1);
        }
        for id in packet_ids {
            self.inbound.remove((client, id))?;
        }
        Ok(())
    }

    fn load_session(
        &self,
        client: &Arc<str>,
    ) -> Result<Result<Option<Box<StoredSession>>, Corrupt>, redb::Error> {
        let Some(record) = self.sessions.get(&**client)? else {
            return Ok(Ok(None));
        };
        let record = match SessionRecord::decode(record.value()) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let mut session = StoredSession {
            client_id: Arc::clone(client),
            record,
            subscriptions: Vec::new(),
            entries: Vec::new(),
            inbound_qos2: Vec::new(),
        };
        for row in self.subs.range((&**client, "")..)? {
            let (key, value) = row?;
            let (c, filter) = key.value();
            if c != &**client {
                break;
            }
            let parsed = decode_subscription(value.value()).and_then(|(o, id)| {
                TopicFilter::new(filter)
                    .map(|f| (f, o, id))
                    .map_err(|_| Corrupt {
                        what: "subscription filter",
                    })
            });
            match parsed {
                Ok(sub) => session.subscriptions.push(sub),
                Err(e) => return Ok(Err(e)),
            }
        }
        for row in self
            .entries
            .range((&**client, 0u64)..=(&**client, u64::MAX))?
        {
            let (key, value) = row?;
            let msg_id = key.value().1;
            let Some(bytes) = self.messages.get(msg_id)? else {
                continue;
            };
            let parsed = decode_message(bytes.value())
                .and_then(|m| EntryRecord::decode(value.value()).map(|e| (m, e)));
            match parsed {
                Ok((msg, entry)) => session.entries.push(StoredEntry {
                    msg_id,
                    msg: Arc::new(msg),
                    entry,
                }),
                Err(e) => return Ok(Err(e)),
            }
        }
        for row in self
            .inbound
            .range((&**client, 0u16)..=(&**client, u16::MAX))?
        {
            if let Some(id) = PacketId::new(row?.0.value().1) {
                session.inbound_qos2.push(id);
            }
        }
        Ok(Ok(Some(Box::new(session))))
    }

    fn load_retained(&self) -> Result<Result<Vec<Message>, Corrupt>, redb::Error> {
        let mut found = Vec::new();
        for row in self.retained.iter()? {
            let (_, value) = row?;
            match decode_message(value.value()) {
                Ok(msg) => found.push(msg),
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(found))
    }

    fn apply(
        &mut self,
        op: Op,
        refcounts: &mut Refcounts,
        replies: &mut Vec<Reply>,
    ) -> Result<(), redb::Error> {
        match op {
            // Handled by `commit` before any transaction starts.
            Op::FailCommit => {}
            Op::PutSession { client, record } => {
                self.sessions.insert(&*client, record.as_ref())?;
            }
            Op::DeleteSession { client } => self.delete_session(&client, refcounts)?,
            Op::PutSubscription {
                client,
                filter,
                record,
            } => {
                self.subs
                    .insert((&*client, filter.as_str()), record.as_ref())?;
            }
            Op::DeleteSubscription { client, filter } => {
                self.subs.remove((&*client, filter.as_str()))?;
            }
            Op::Route {
                msg_id,
                message,
                entries,
                inbound,
            } => {
                for (client, entry) in &entries {
                    self.add_entry(client, msg_id, &message, entry, refcounts)?;
                }
                if let Some((client, id)) = inbound {
                    self.inbound.insert((&*client, id), ())?;
                }
            }
            Op::AddEntry {
                client,
                msg_id,
                message,
                entry,
            } => self.add_entry(&client, msg_id, &message, &entry, refcounts)?,
            Op::UpdateEntry {
                client,
                msg_id,
                entry,
            } => {
                let key = (&*client, msg_id);
                if self.entries.get(key)?.is_some() {
                    self.entries.insert(key, entry.as_ref())?;
                }
            }
            Op::DeleteEntry { client, msg_id } => self.delete_entry(&client, msg_id, refcounts)?,
            Op::DeleteInbound { client, packet_id } => {
                self.inbound.remove((&*client, packet_id))?;
            }
            Op::SetRetained { topic, message } => {
                self.retained.insert(&*topic, message.as_ref())?;
            }
            Op::ClearRetained { topic } => {
                self.retained.remove(&*topic)?;
            }
            Op::LoadSession { client, reply } => {
                replies.push(Reply::Session(reply, self.load_session(&client)?));
            }
            Op::LoadRetained { reply } => {
                replies.push(Reply::Retained(reply, self.load_retained()?));
            }
        }
        Ok(())
    }
}
