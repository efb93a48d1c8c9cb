//! Actor metrics: per-worker counters, reported through the logs and `$SYS` topics.
//!
//! Each worker arbiter has its own slot of atomic counters; the connections, sessions and
//! shards living on that worker update only that slot (`Metrics::local`), so updates are
//! uncontended. The reporter on the System arbiter reads every slot every `log_interval` and
//! logs one structured record per worker and one broker total on the `metrics` logger, with
//! stable keys (documented in the README). The same totals are published as retained `$SYS`
//! messages every `sys_interval` (Mosquitto's topic names).

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use slog::{info, o, Logger};
use starling_proto::{QoS, TopicName};

use crate::msg::Message;
use crate::retain::RetainedCount;
use crate::topic::Router;

/// Counters of one worker. Gauges are signed so that a decrement racing an increment on
/// another thread never wraps.
#[derive(Debug, Default)]
pub struct Counters {
    /// Open network connections (gauge).
    pub connections: AtomicI64,
    /// Sessions with a connection attached (gauge).
    pub sessions_online: AtomicI64,
    /// Sessions kept for a disconnected client (gauge).
    pub sessions_offline: AtomicI64,
    /// Subscriptions held by sessions (gauge).
    pub subscriptions: AtomicI64,
    /// QoS 1/2 messages sent to clients and not yet acknowledged (gauge).
    pub inflight: AtomicI64,
    /// Messages waiting in session queues (gauge).
    pub queued: AtomicI64,
    /// PUBLISH packets received from clients.
    pub messages_in: AtomicU64,
    /// PUBLISH packets sent to clients.
    pub messages_out: AtomicU64,
    /// Bytes read from clients.
    pub bytes_in: AtomicU64,
    /// Bytes written to clients.
    pub bytes_out: AtomicU64,
    /// Deliveries dropped because a session's queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Deliveries dropped because they expired before they could be sent.
    pub dropped_expired: AtomicU64,
    /// QoS 0 deliveries dropped for offline clients.
    pub dropped_offline_qos0: AtomicU64,
    /// Deliveries dropped for exceeding the client's Maximum Packet Size.
    pub dropped_too_large: AtomicU64,
    /// Failed actors restarted by the supervisor.
    pub restarts: AtomicU64,
    /// Microseconds the worker kept polling instead of sleeping (`busy_poll`), work done
    /// meanwhile included.
    pub busy_poll_us: AtomicU64,
}

/// A snapshot of counters, as logged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// See `Counters`.
    pub connections: i64,
    /// See `Counters`.
    pub sessions_online: i64,
    /// See `Counters`.
    pub sessions_offline: i64,
    /// See `Counters`.
    pub subscriptions: i64,
    /// See `Counters`.
    pub inflight: i64,
    /// See `Counters`.
    pub queued: i64,
    /// See `Counters`.
    pub messages_in: u64,
    /// See `Counters`.
    pub messages_out: u64,
    /// See `Counters`.
    pub bytes_in: u64,
    /// See `Counters`.
    pub bytes_out: u64,
    /// See `Counters`.
    pub dropped_queue_full: u64,
    /// See `Counters`.
    pub dropped_expired: u64,
    /// See `Counters`.
    pub dropped_offline_qos0: u64,
    /// See `Counters`.
    pub dropped_too_large: u64,
    /// See `Counters`.
    pub restarts: u64,
    /// See `Counters`.
    pub busy_poll_us: u64,
}

impl Counters {
    fn snapshot(&self) -> Snapshot {
        let g = |a: &AtomicI64| a.load(Ordering::Relaxed);
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            connections: g(&self.connections),
            sessions_online: g(&self.sessions_online),
            sessions_offline: g(&self.sessions_offline),
            subscriptions: g(&self.subscriptions),
            inflight: g(&self.inflight),
            queued: g(&self.queued),
            messages_in: c(&self.messages_in),
            messages_out: c(&self.messages_out),
            bytes_in: c(&self.bytes_in),
            bytes_out: c(&self.bytes_out),
            dropped_queue_full: c(&self.dropped_queue_full),
            dropped_expired: c(&self.dropped_expired),
            dropped_offline_qos0: c(&self.dropped_offline_qos0),
            dropped_too_large: c(&self.dropped_too_large),
            restarts: c(&self.restarts),
            busy_poll_us: c(&self.busy_poll_us),
        }
    }
}

impl Snapshot {
    fn add(&mut self, other: &Snapshot) {
        self.connections += other.connections;
        self.sessions_online += other.sessions_online;
        self.sessions_offline += other.sessions_offline;
        self.subscriptions += other.subscriptions;
        self.inflight += other.inflight;
        self.queued += other.queued;
        self.messages_in += other.messages_in;
        self.messages_out += other.messages_out;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.dropped_queue_full += other.dropped_queue_full;
        self.dropped_expired += other.dropped_expired;
        self.dropped_offline_qos0 += other.dropped_offline_qos0;
        self.dropped_too_large += other.dropped_too_large;
        self.restarts += other.restarts;
        self.busy_poll_us += other.busy_poll_us;
    }
}

thread_local! {
    /// The slot of the worker this thread is (set when the worker starts).
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// Every worker's counters. Slot 0 is the System arbiter's (registry, retain store, anything
/// not on a worker); workers are 1..=n.
#[derive(Debug)]
pub struct Metrics {
    slots: Vec<Counters>,
    started: Instant,
}

impl Metrics {
    /// Slots for `workers` workers plus the System arbiter.
    pub fn new(workers: usize) -> Arc<Metrics> {
        Arc::new(Metrics {
            slots: (0..=workers).map(|_| Counters::default()).collect(),
            started: Instant::now(),
        })
    }

    /// Marks the current thread as worker `index` (0-based); call on each worker at start.
    pub fn enter_worker(index: usize) {
        SLOT.with(|slot| slot.set(index + 1));
    }

    /// The counters of the current thread's worker.
    pub fn local(&self) -> &Counters {
        let slot = SLOT.with(Cell::get);
        &self.slots[slot.min(self.slots.len() - 1)]
    }

    /// Every slot's snapshot (index 0: the System arbiter) and the total.
    pub fn snapshot(&self) -> (Vec<Snapshot>, Snapshot) {
        let per: Vec<Snapshot> = self.slots.iter().map(Counters::snapshot).collect();
        let mut total = Snapshot::default();
        for s in &per {
            total.add(s);
        }
        (per, total)
    }

    /// Seconds since the broker started.
    pub fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// Adds `delta` to a gauge.
pub fn gauge(gauge: &AtomicI64, delta: i64) {
    if delta != 0 {
        gauge.fetch_add(delta, Ordering::Relaxed);
    }
}

/// Adds `n` to a counter.
pub fn count(counter: &AtomicU64, n: u64) {
    if n != 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Logs the metrics and publishes `$SYS`, each at its interval (zero disables either).
#[derive(Debug)]
pub struct Reporter {
    metrics: Arc<Metrics>,
    router: Router,
    log_interval: Duration,
    sys_interval: Duration,
    log: Logger,
}

impl Reporter {
    /// A reporter over these metrics.
    pub fn new(
        metrics: Arc<Metrics>,
        router: Router,
        log_interval: Duration,
        sys_interval: Duration,
        log: &Logger,
    ) -> Reporter {
        Reporter {
            metrics,
            router,
            log_interval,
            sys_interval,
            log: log.new(o!()),
        }
    }

    fn log_records(&self, retained: usize) {
        let (per, total) = self.metrics.snapshot();
        for (slot, s) in per.iter().enumerate().skip(1) {
            log_snapshot(&self.log, "worker", Some(slot - 1), s, None);
        }
        log_snapshot(&self.log, "broker", None, &total, Some(retained));
    }

    fn publish_sys(&self, retained: usize) {
        let (_, t) = self.metrics.snapshot();
        let dropped =
            t.dropped_queue_full + t.dropped_expired + t.dropped_offline_qos0 + t.dropped_too_large;
        let figures: [(&str, String); 12] = [
            (
                "$SYS/broker/version",
                format!("starling {}", env!("CARGO_PKG_VERSION")),
            ),
            (
                "$SYS/broker/uptime",
                format!("{} seconds", self.metrics.uptime()),
            ),
            ("$SYS/broker/clients/connected", t.connections.to_string()),
            (
                "$SYS/broker/clients/disconnected",
                t.sessions_offline.to_string(),
            ),
            (
                "$SYS/broker/subscriptions/count",
                t.subscriptions.to_string(),
            ),
            ("$SYS/broker/retained messages/count", retained.to_string()),
            ("$SYS/broker/messages/received", t.messages_in.to_string()),
            ("$SYS/broker/messages/sent", t.messages_out.to_string()),
            ("$SYS/broker/messages/dropped", dropped.to_string()),
            ("$SYS/broker/messages/inflight", t.inflight.to_string()),
            ("$SYS/broker/bytes/received", t.bytes_in.to_string()),
            ("$SYS/broker/bytes/sent", t.bytes_out.to_string()),
        ];
        for (topic, value) in figures {
            let Ok(topic) = TopicName::new(topic) else {
                continue;
            };
            self.router.publish(Arc::new(Message {
                topic,
                payload: Bytes::from(value),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: None,
                origin: None,
                expires_at: None,
            }));
        }
    }
}

fn log_snapshot(
    log: &Logger,
    scope: &str,
    worker: Option<usize>,
    s: &Snapshot,
    retained: Option<usize>,
) {
    info!(log, "metrics";
        "scope" => scope,
        "worker" => worker,
        "connections" => s.connections,
        "sessions_online" => s.sessions_online,
        "sessions_offline" => s.sessions_offline,
        "subscriptions" => s.subscriptions,
        "retained" => retained,
        "messages_in" => s.messages_in,
        "messages_out" => s.messages_out,
        "bytes_in" => s.bytes_in,
        "bytes_out" => s.bytes_out,
        "inflight" => s.inflight,
        "queued" => s.queued,
        "dropped_queue_full" => s.dropped_queue_full,
        "restarts" => s.restarts,
        "dropped_expired" => s.dropped_expired,
        "dropped_offline_qos0" => s.dropped_offline_qos0,
        "dropped_too_large" => s.dropped_too_large,
        "busy_poll_us" => s.busy_poll_us,
    );
}

impl Actor for Reporter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if !self.log_interval.is_zero() {
            ctx.run_interval(self.log_interval, |act, ctx| {
                let count = act.router.retain_store().send(RetainedCount);
                ctx.spawn(
                    count
                        .into_actor(act)
                        .map(|n, act, _| act.log_records(n.unwrap_or(0))),
                );
            });
        }
        if !self.sys_interval.is_zero() {
            ctx.run_interval(self.sys_interval, |act, ctx| {
                let count = act.router.retain_store().send(RetainedCount);
                ctx.spawn(
                    count
                        .into_actor(act)
                        .map(|n, act, _| act.publish_sys(n.unwrap_or(0))),
                );
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_counts_in_its_own_slot_and_the_total_adds_them() {
        let metrics = Metrics::new(2);
        let m = Arc::clone(&metrics);
        std::thread::spawn(move || {
            Metrics::enter_worker(1);
            count(&m.local().messages_in, 5);
            gauge(&m.local().connections, 1);
        })
        .join()
        .expect("thread");
        count(&metrics.local().messages_in, 2); // this thread: the System slot
        let (per, total) = metrics.snapshot();
        assert_eq!(per[2].messages_in, 5);
        assert_eq!(per[0].messages_in, 2);
        assert_eq!(total.messages_in, 7);
        assert_eq!(total.connections, 1);
    }
}
