//! The durable store: what survives a restart or a crash.
//!
//! It keeps persistent sessions (client id, expiry, will), their subscriptions, the QoS 1/2
//! messages queued or in flight to them (each message stored once, referenced by every session
//! holding it), inbound QoS 2 packet ids awaiting PUBREL, and retained messages. It is a redb
//! file, `{dir}/starling.redb`, behind this small interface; nothing else in the broker knows
//! redb.
//!
//! Actors never touch the file. They send operations (`Op`) to one writer thread, which drains
//! whatever has queued up, applies it in one transaction and commits once (group commit: many
//! publishers share one fsync), then completes the operations that asked for completion. An
//! acknowledgement that must be durable (PUBACK, PUBREC, SUBACK) waits for that completion.
//! `sync` decides when a commit reaches the disk:
//! - `always`: every commit is fsynced before it completes (the default: nothing acknowledged
//!   is lost to a crash, even of the machine);
//! - `batch`: commits complete at once, and an fsync follows at least every `sync_interval`;
//!   a crash loses at most that much;
//! - `never`: no fsync on the way to an acknowledgement; a checkpoint every 30 s and at
//!   shutdown (the store needs one now and then to reuse space).
//!
//! Split: `records` (the byte formats), `writer` (the thread, the tables, recovery).

mod records;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use bytes::Bytes;
use slog::Logger;
use starling_proto::{PacketId, SubscriptionOptions, TopicFilter};
use tokio::sync::{oneshot, watch};

use crate::msg::{Message, Will};
pub use records::{
    encode_message, instant_to_unix_ms, now_unix_ms, unix_ms_to_instant, Corrupt, EntryRecord,
    SessionRecord, LEGACY_SESSION_GRACE_SECS,
};

/// When commits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// fsync every commit before completing it.
    Always,
    /// Complete at once; fsync at least every `sync_interval`.
    Batch,
    /// No fsync on the acknowledgement path; checkpoints now and then and at shutdown.
    Never,
}

/// The `[persistence]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistenceConfig {
    /// The directory of `starling.redb` (created if missing).
    pub dir: PathBuf,
    /// When commits reach the disk.
    pub sync: SyncMode,
    /// With `Batch`, the longest time between fsyncs.
    pub sync_interval: Duration,
}

/// What can go wrong with the store. Every variant names the file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The file (or its directory) cannot be opened, read or written.
    #[error("store {path}: {detail}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        detail: String,
    },
    /// A record in the file does not parse.
    #[error("store {path}: {detail} (the file is corrupt; move it away to start empty)")]
    Corrupt {
        /// The file.
        path: String,
        /// Which record.
        detail: String,
    },
    /// The writer thread is gone (the broker is stopping).
    #[error("store {path}: closed")]
    Closed {
        /// The file.
        path: String,
    },
}

/// Completion of an operation: `Ok` once committed as `sync` says.
pub type Completion = oneshot::Receiver<Result<(), StoreError>>;

/// One change to the store, applied in the order sent.
#[derive(Debug)]
pub enum Op {
    /// Makes the commit it is in fail (tests: `[supervisor] fault_injection`).
    FailCommit,
    /// Creates or replaces a session's own record.
    PutSession {
        /// Client id.
        client: Arc<str>,
        /// Its state.
        record: Bytes,
    },
    /// Removes a session and everything it holds.
    DeleteSession {
        /// Client id.
        client: Arc<str>,
    },
    /// Creates or replaces a subscription.
    PutSubscription {
        /// Client id.
        client: Arc<str>,
        /// The filter as subscribed (with any `$share/` prefix).
        filter: String,
        /// Options and identifier.
        record: Bytes,
    },
    /// Removes a subscription.
    DeleteSubscription {
        /// Client id.
        client: Arc<str>,
        /// The filter.
        filter: String,
    },
    /// A routed message: stored once, queued for each persistent session that matched, and
    /// (QoS 2 from a persistent session) the publisher's packet id, all in one transaction.
    Route {
        /// Message id.
        msg_id: u64,
        /// `encode_message`.
        message: Bytes,
        /// Client id and `EntryRecord` for each session.
        entries: Vec<(Arc<str>, Bytes)>,
        /// The publisher's inbound QoS 2 packet id, recorded with the message so that a resend
        /// after a crash is recognised and not routed twice.
        inbound: Option<(Arc<str>, u16)>,
    },
    /// Queues a stored (or re-stored) message for one session.
    AddEntry {
        /// Client id.
        client: Arc<str>,
        /// Message id.
        msg_id: u64,
        /// The message, stored again if no session holds it any more.
        message: Bytes,
        /// `EntryRecord`.
        entry: Bytes,
    },
    /// Records where a queued message stands (in flight, released); ignored if it is gone.
    UpdateEntry {
        /// Client id.
        client: Arc<str>,
        /// Message id.
        msg_id: u64,
        /// `EntryRecord`.
        entry: Bytes,
    },
    /// A session is done with a message (acknowledged, dropped, handed over).
    DeleteEntry {
        /// Client id.
        client: Arc<str>,
        /// Message id.
        msg_id: u64,
    },
    /// A PUBREL released an inbound QoS 2 packet id.
    DeleteInbound {
        /// Client id.
        client: Arc<str>,
        /// Packet id.
        packet_id: u16,
    },
    /// Sets a topic's retained message.
    SetRetained {
        /// Topic.
        topic: Arc<str>,
        /// `encode_message`.
        message: Bytes,
    },
    /// Clears a topic's retained message.
    ClearRetained {
        /// Topic.
        topic: Arc<str>,
    },
    /// Reads one session back (after everything sent before it), for a Session restart.
    LoadSession {
        /// Client id.
        client: Arc<str>,
        /// The answer.
        reply: oneshot::Sender<Result<Option<StoredSession>, StoreError>>,
    },
    /// Reads every retained message back, for a RetainStore restart.
    LoadRetained {
        /// The answer.
        reply: oneshot::Sender<Result<Vec<Message>, StoreError>>,
    },
}

type Done = oneshot::Sender<Result<(), StoreError>>;

enum Request {
    /// Apply, then complete (if asked) after the commit.
    Op(Op, Option<Done>),
    /// Commit durably, close the file, then complete.
    Close(Done),
}

/// A session as stored: what a Session actor is rebuilt from.
#[derive(Debug, Clone)]
pub struct StoredSession {
    /// Client id.
    pub client_id: Arc<str>,
    /// Its expiry, when it went offline, its user name and its will.
    pub record: SessionRecord,
    /// Filter -> options and identifier.
    pub subscriptions: Vec<(TopicFilter, SubscriptionOptions, Option<u32>)>,
    /// Messages held for it, oldest first.
    pub entries: Vec<StoredEntry>,
    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub inbound_qos2: Vec<PacketId>,
}

/// One message held for a session.
#[derive(Debug, Clone)]
pub struct StoredEntry {
    /// Message id.
    pub msg_id: u64,
    /// The message (shared by every session that holds it).
    pub msg: Arc<Message>,
    /// How it is delivered and where it stands.
    pub entry: EntryRecord,
}

/// Everything found in the store at start-up (expired sessions and messages already removed).
#[derive(Debug, Default)]
pub struct Recovered {
    /// Persistent sessions.
    pub sessions: Vec<StoredSession>,
    /// The wills of sessions whose expiry ran out while the broker was down, with the client
    /// id and user name they are authorized as: the session ended, so its will is due
    /// ([MQTT-3.1.2-8]). The sessions themselves are removed.
    pub expired_wills: Vec<(Arc<str>, Option<String>, Will)>,
    /// Retained messages.
    pub retained: Vec<Message>,
}

/// A handle on the store: cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct Store {
    tx: mpsc::SyncSender<Request>,
    next_msg_id: Arc<AtomicU64>,
    path: Arc<Path>,
}

/// Operations that may wait in the writer's channel; past this, senders wait (backpressure).
const CHANNEL_BOUND: usize = 1 << 16;

impl Store {
    /// Opens (or creates) the store, removes what expired while the broker was down, reads
    /// everything back, and starts the writer thread. A commit that fails (a full disk, an
    /// I/O error) leaves the file unwritable until it is reopened, so the writer then says why
    /// on `failed` and the broker gives up (the daemon exits with code 3, and its restart
    /// recovers the last good commit); nothing uncommitted was acknowledged.
    pub fn open(
        config: &PersistenceConfig,
        failed: Arc<watch::Sender<Option<String>>>,
        log: &Logger,
    ) -> Result<(Store, Recovered), StoreError> {
        let (db, path, recovered, refcounts, next_msg_id) = writer::open(config, log)?;
        let (tx, rx) = mpsc::sync_channel(CHANNEL_BOUND);
        let path: Arc<Path> = path.into();
        writer::spawn(db, rx, refcounts, config, Arc::clone(&path), failed, log)?;
        Ok((
            Store {
                tx,
                next_msg_id: Arc::new(AtomicU64::new(next_msg_id)),
                path,
            },
            recovered,
        ))
    }

    /// A fresh message id (ids grow, so a session's messages are read back in order).
    pub fn next_msg_id(&self) -> u64 {
        self.next_msg_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends an operation; nobody waits for it.
    pub fn send(&self, op: Op) {
        let _ = self.tx.send(Request::Op(op, None));
    }

    /// Sends an operation and returns its completion.
    pub fn send_confirmed(&self, op: Op) -> Completion {
        let (done, rx) = oneshot::channel();
        if let Err(mpsc::SendError(Request::Op(_, Some(done)))) =
            self.tx.send(Request::Op(op, Some(done)))
        {
            let _ = done.send(Err(self.closed()));
        }
        rx
    }

    /// Reads one session back, after everything sent before.
    pub async fn load_session(
        &self,
        client: Arc<str>,
    ) -> Result<Option<StoredSession>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::LoadSession { client, reply });
        rx.await.map_err(|_| self.closed())?
    }

    /// Reads every retained message back, after everything sent before.
    pub async fn load_retained(&self) -> Result<Vec<Message>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::LoadRetained { reply });
        rx.await.map_err(|_| self.closed())?
    }

    /// Commits what is pending durably, closes the file and stops the writer. Operations sent
    /// afterwards fail with `Closed`.
    pub async fn close(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Request::Close(done)).is_ok() {
            let _ = rx.await;
        }
    }

    fn closed(&self) -> StoreError {
        StoreError::Closed {
            path: self.path.display().to_string(),
        }
    }
}

/// A session's record from its parts.
pub fn session_record(
    expiry: Option<u32>,
    offline_since: Option<u64>,
    username: Option<String>,
    will: Option<&Will>,
) -> Bytes {
    SessionRecord {
        expiry,
        offline_since,
        username,
        will: will.cloned(),
    }
    .encode()
}

/// A subscription's record.
pub fn subscription_record(options: SubscriptionOptions, id: Option<u32>) -> Bytes {
    records::encode_subscription(options, id)
}
