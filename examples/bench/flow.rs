//! Publisher and subscriber tasks: one tokio task per connection, batched writes, reads into a
//! large buffer parsed in a loop, a window of in-flight packet ids for QoS 1 and 2.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use hdrhistogram::Histogram;
use starling_proto::Packet;
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

use crate::client::{self, put_ack, put_publish_header, Conn, Error, Frame, Result};
use crate::payload::{self, Bad, SeqSet, Stamp};

/// Bytes of PUBLISH encoded before one socket write.
const WRITE_BATCH: usize = 64 * 1024;
/// Marks a packet id slot as free.
const FREE: u64 = u64::MAX;
/// Marks a QoS 2 slot whose PUBREC came (PUBREL sent, waiting for PUBCOMP).
const RELEASED: u64 = 1 << 63;

/// Settings shared by every connection of a run.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    /// This run's id, carried in every payload.
    pub(crate) run: u32,
    /// QoS of publications and subscriptions.
    pub(crate) qos: u8,
    /// Payload size in bytes.
    pub(crate) payload: usize,
    /// In-flight window per publisher (QoS 1 and 2).
    pub(crate) inflight: usize,
    /// Messages received by all subscribers so far, for progress output.
    pub(crate) progress: Arc<AtomicU64>,
}

/// The topic(s) a publisher uses.
#[derive(Debug, Clone)]
pub(crate) enum Topic {
    /// One topic for every message.
    Fixed(String),
    /// `prefix` followed by the sequence number: one topic per message.
    PerMessage(String),
}

/// What one publisher does.
#[derive(Debug, Clone)]
pub(crate) struct PubSpec {
    /// Publisher index, carried in the payload.
    pub(crate) id: u32,
    /// Where it publishes.
    pub(crate) topic: Topic,
    /// RETAIN flag.
    pub(crate) retain: bool,
    /// Messages to send; `None`: until `send_until`.
    pub(crate) count: Option<u64>,
    /// Offered rate in messages per second; `None`: as fast as the broker takes them.
    pub(crate) rate: Option<f64>,
    /// When sending starts (the origin of the pacing).
    pub(crate) start: Instant,
    /// When sending stops at the latest.
    pub(crate) send_until: Instant,
    /// How long to wait for outstanding acknowledgements after the last send.
    pub(crate) drain: Duration,
}

/// What one publisher did.
#[derive(Debug)]
pub(crate) struct PubResult {
    /// Publisher index.
    pub(crate) id: u32,
    /// Messages written (sequence numbers 0..sent).
    pub(crate) sent: u64,
    /// Sequence numbers the broker acknowledged (PUBACK, or PUBCOMP for QoS 2).
    pub(crate) acked: SeqSet,
    /// Acknowledgements with a failure reason code.
    pub(crate) rejected: u64,
    /// Messages still unacknowledged at the end.
    pub(crate) unacked: u64,
    /// What went wrong, if anything.
    pub(crate) error: Option<Error>,
}

/// Drain state broadcast to subscribers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Phase {
    /// Publishers are still sending.
    Sending,
    /// Publishers are done: stop after `expected` distinct messages, after `quiet` without
    /// traffic, or at `until`.
    Drain {
        /// Distinct messages this subscriber can get at most.
        expected: u64,
        /// Give up waiting at this instant.
        until: Instant,
    },
}

/// What one subscriber does.
#[derive(Debug, Clone)]
pub(crate) struct SubSpec {
    /// Subscriber index.
    pub(crate) id: u32,
    /// Messages received from this instant on count for the rate and latency.
    pub(crate) measure_from: Instant,
    /// Record latencies (send time to receive time) into a histogram.
    pub(crate) latency: bool,
    /// In the drain phase, stop after this long without a message.
    pub(crate) quiet: Duration,
    /// Never wait beyond this instant.
    pub(crate) hard_deadline: Instant,
}

/// What one subscriber received.
#[derive(Debug)]
pub(crate) struct SubResult {
    /// Subscriber index.
    pub(crate) id: u32,
    /// Sequence numbers received, per publisher index.
    pub(crate) seen: Vec<SeqSet>,
    /// Distinct messages received.
    pub(crate) unique: u64,
    /// Messages received more than once.
    pub(crate) dups: u64,
    /// Payloads of this run with wrong bytes or size.
    pub(crate) corrupt: u64,
    /// Payloads that are not this run's (ignored).
    pub(crate) foreign: u64,
    /// Messages received at or after `measure_from`.
    pub(crate) measured: u64,
    /// When the last message arrived.
    pub(crate) last_rx: Option<Instant>,
    /// Latencies in microseconds, when asked for.
    pub(crate) hist: Option<Histogram<u64>>,
    /// What went wrong, if anything.
    pub(crate) error: Option<Error>,
}

/// Publishers beyond this index in a payload are treated as corruption.
const MAX_PUBLISHERS: usize = 1 << 16;

/// Runs a publisher on a connected `conn` until its count or time is up and its messages are
/// acknowledged (or the drain time is over), then disconnects.
pub(crate) async fn publisher(mut conn: Conn, spec: PubSpec, shared: Arc<Shared>) -> PubResult {
    let mut state = PubState {
        sent: 0,
        acked: SeqSet::default(),
        rejected: 0,
        inflight: 0,
        slots: if shared.qos > 0 {
            vec![FREE; 65536]
        } else {
            Vec::new()
        },
    };
    let error = publish_loop(&mut conn, &spec, &shared, &mut state)
        .await
        .err();
    if error.is_none() {
        conn.disconnect(Instant::now() + Duration::from_secs(2))
            .await;
    }
    PubResult {
        id: spec.id,
        sent: state.sent,
        acked: state.acked,
        rejected: state.rejected,
        unacked: state.inflight as u64,
        error,
    }
}

/// A publisher's counters and packet id slots.
#[derive(Debug)]
struct PubState {
    sent: u64,
    acked: SeqSet,
    rejected: u64,
    inflight: usize,
    /// Sequence number per packet id (`FREE`, or with `RELEASED` set after PUBREC).
    slots: Vec<u64>,
}

impl PubState {
    /// Handles every complete packet in the read buffer; PUBRELs go to the write buffer.
    fn handle_acks(&mut self, conn: &mut Conn) -> Result<()> {
        let mut pos = 0;
        while let Some((frame, len)) = client::parse(&conn.rbuf[pos..], conn.protocol)? {
            pos += len;
            match frame {
                Frame::Ack {
                    kind,
                    packet_id,
                    reason,
                } => {
                    let slot = usize::from(packet_id);
                    let Some(&seq) = self.slots.get(slot).filter(|&&s| s != FREE) else {
                        return Err(Error(format!(
                            "the broker acknowledged packet id {packet_id}, which is not in flight"
                        )));
                    };
                    match kind {
                        client::PUBACK | client::PUBCOMP => {
                            if reason < 0x80 {
                                self.acked.insert(seq & !RELEASED);
                            } else {
                                self.rejected += 1;
                            }
                            self.slots[slot] = FREE;
                            self.inflight -= 1;
                        }
                        client::PUBREC if reason >= 0x80 => {
                            self.rejected += 1;
                            self.slots[slot] = FREE;
                            self.inflight -= 1;
                        }
                        client::PUBREC => {
                            self.slots[slot] = seq | RELEASED;
                            put_ack(&mut conn.wbuf, client::PUBREL, packet_id);
                        }
                        _ => {
                            return Err(Error(format!(
                                "unexpected acknowledgement type {kind} from the broker"
                            )))
                        }
                    }
                }
                Frame::Other(Packet::PingResp) => {}
                Frame::Other(Packet::Disconnect(d)) => {
                    return Err(Error(format!(
                        "the broker disconnected a publisher: {} (0x{:02x})",
                        d.reason.name(),
                        d.reason.0
                    )))
                }
                other => {
                    return Err(Error(format!(
                        "unexpected packet for a publisher: {other:?}"
                    )))
                }
            }
        }
        conn.rbuf.advance(pos);
        Ok(())
    }
}

/// The body of `publisher`.
async fn publish_loop(
    conn: &mut Conn,
    spec: &PubSpec,
    shared: &Shared,
    st: &mut PubState,
) -> Result<()> {
    let per_msg = shared.payload + 16;
    let batch = (WRITE_BATCH / per_msg).max(1) as u64;
    let window = if shared.qos > 0 {
        shared.inflight.max(1)
    } else {
        usize::MAX
    };
    let mut drain_until: Option<Instant> = None;
    let mut topic_buf = String::new();
    loop {
        while conn.try_fill()? {}
        st.handle_acks(conn)?;
        let now = Instant::now();
        let done = spec.count.is_some_and(|c| st.sent >= c) || now >= spec.send_until;
        let mut n = 0u64;
        // Refill the window in batches (a quarter of it at least) rather than one message per
        // acknowledgement: one write carries many PUBLISH packets.
        let mut room = window.saturating_sub(st.inflight);
        if !done && room > 0 && room < (window / 4).max(1) && st.inflight > 0 {
            // Only a few acknowledgements so far: let more arrive first, so that one write
            // carries many PUBLISH packets (but never wait, which could meet the broker's
            // Nagle delay).
            tokio::task::yield_now().await;
            while conn.try_fill()? {}
            st.handle_acks(conn)?;
            room = window.saturating_sub(st.inflight);
        }
        let refill = room > 0;
        if !done && refill {
            let mut allowed = batch;
            if let Some(c) = spec.count {
                allowed = allowed.min(c - st.sent);
            }
            if let Some(rate) = spec.rate {
                let due = ((now - spec.start).as_secs_f64() * rate) as u64 + 1;
                allowed = allowed.min(due.saturating_sub(st.sent));
            }
            let now_ns = payload::now_ns();
            while n < allowed && st.inflight < window {
                let seq = st.sent;
                let mut packet_id = 0;
                if shared.qos > 0 {
                    packet_id = (seq % 65535) as u16 + 1;
                    let slot = &mut st.slots[usize::from(packet_id)];
                    if *slot != FREE {
                        break;
                    }
                    *slot = seq;
                    st.inflight += 1;
                }
                let topic = match &spec.topic {
                    Topic::Fixed(t) => t.as_str(),
                    Topic::PerMessage(prefix) => {
                        topic_buf.clear();
                        topic_buf.push_str(prefix);
                        topic_buf.push_str(&seq.to_string());
                        topic_buf.as_str()
                    }
                };
                put_publish_header(
                    &mut conn.wbuf,
                    conn.protocol,
                    topic.as_bytes(),
                    shared.qos,
                    spec.retain,
                    packet_id,
                    shared.payload,
                );
                let stamp = Stamp {
                    run: shared.run,
                    publisher: spec.id,
                    seq,
                    sent_ns: now_ns,
                };
                payload::put(&mut conn.wbuf, stamp, shared.payload);
                st.sent += 1;
                n += 1;
            }
        }
        let hard = spec.send_until + spec.drain;
        conn.flush(hard).await?;
        if done {
            let until = *drain_until.get_or_insert_with(|| (now + spec.drain).min(hard));
            if st.inflight == 0 || now >= until {
                return Ok(());
            }
        }
        if n == 0 {
            let wake = if let Some(until) = drain_until {
                until
            } else if let (Some(rate), true) = (spec.rate, refill) {
                let next = spec.start + Duration::from_secs_f64(st.sent as f64 / rate);
                next.min(spec.send_until)
            } else {
                spec.send_until
            };
            if shared.qos == 0 && spec.rate.is_none() && !done {
                continue;
            }
            tokio::select! {
                r = conn.stream.readable() => r?,
                _ = sleep_until(wake) => {}
            }
        }
    }
}

/// Runs a subscriber on a connected and subscribed `conn` until the drain phase ends, then
/// disconnects.
pub(crate) async fn subscriber(
    mut conn: Conn,
    spec: SubSpec,
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
) -> SubResult {
    let mut result = SubResult {
        id: spec.id,
        seen: Vec::new(),
        unique: 0,
        dups: 0,
        corrupt: 0,
        foreign: 0,
        measured: 0,
        last_rx: None,
        hist: spec
            .latency
            .then(|| Histogram::new_with_bounds(1, 600_000_000, 3).ok())
            .flatten(),
        error: None,
    };
    result.error = receive_loop(&mut conn, &spec, &shared, phase, &mut result)
        .await
        .err();
    if result.error.is_none() {
        conn.disconnect(Instant::now() + Duration::from_secs(2))
            .await;
    }
    result
}

/// The body of `subscriber`.
async fn receive_loop(
    conn: &mut Conn,
    spec: &SubSpec,
    shared: &Shared,
    mut phase: watch::Receiver<Phase>,
    r: &mut SubResult,
) -> Result<()> {
    let measure_from_ns = (spec.measure_from.into_std() - payload::epoch()).as_nanos() as u64;
    let mut last_activity = Instant::now();
    let mut phase_open = true;
    loop {
        let now = Instant::now();
        let now_ns = payload::now_ns();
        let measuring = now >= spec.measure_from;
        let mut pos = 0;
        let mut got = 0u64;
        while let Some((frame, len)) = client::parse(&conn.rbuf[pos..], conn.protocol)? {
            pos += len;
            match frame {
                Frame::Publish {
                    qos,
                    packet_id,
                    payload,
                } => {
                    match qos {
                        1 => put_ack(&mut conn.wbuf, client::PUBACK, packet_id),
                        2 => put_ack(&mut conn.wbuf, client::PUBREC, packet_id),
                        _ => {}
                    }
                    match payload::read(payload, shared.run, shared.payload) {
                        Ok(stamp) => {
                            let p = stamp.publisher as usize;
                            if p >= MAX_PUBLISHERS {
                                r.corrupt += 1;
                                continue;
                            }
                            if p >= r.seen.len() {
                                r.seen.resize_with(p + 1, SeqSet::default);
                            }
                            if r.seen[p].insert(stamp.seq) {
                                r.unique += 1;
                            } else {
                                r.dups += 1;
                            }
                            got += 1;
                            if measuring {
                                r.measured += 1;
                            }
                            if let Some(h) = &mut r.hist {
                                if stamp.sent_ns >= measure_from_ns {
                                    let us = now_ns.saturating_sub(stamp.sent_ns) / 1000;
                                    h.saturating_record(us.max(1));
                                }
                            }
                        }
                        Err(Bad::Foreign) => r.foreign += 1,
                        Err(Bad::Corrupt) => r.corrupt += 1,
                    }
                }
                Frame::Ack {
                    kind: client::PUBREL,
                    packet_id,
                    ..
                } => put_ack(&mut conn.wbuf, client::PUBCOMP, packet_id),
                Frame::Other(Packet::PingResp) => {}
                Frame::Other(Packet::Disconnect(d)) => {
                    return Err(Error(format!(
                        "the broker disconnected a subscriber: {} (0x{:02x})",
                        d.reason.name(),
                        d.reason.0
                    )))
                }
                other => {
                    return Err(Error(format!(
                        "unexpected packet for a subscriber: {other:?}"
                    )))
                }
            }
        }
        conn.rbuf.advance(pos);
        if got > 0 {
            r.last_rx = Some(now);
            last_activity = now;
            shared.progress.fetch_add(got, Ordering::Relaxed);
        }
        conn.flush(spec.hard_deadline).await?;
        let current = *phase.borrow();
        let wake = match current {
            Phase::Sending => spec.hard_deadline,
            Phase::Drain { expected, until } => {
                if r.unique >= expected || now >= until || now >= last_activity + spec.quiet {
                    return Ok(());
                }
                until.min(last_activity + spec.quiet)
            }
        };
        if now >= spec.hard_deadline {
            return Err(Error("a subscriber ran into the hard time limit".into()));
        }
        conn.reserve();
        tokio::select! {
            read = tokio::io::AsyncReadExt::read_buf(&mut conn.stream, &mut conn.rbuf) => match read {
                Ok(0) => return Err(Error("the broker closed a subscriber's connection".into())),
                Ok(_) => {}
                Err(e) => return Err(Error(format!("reading from the broker: {e}"))),
            },
            changed = phase.changed(), if phase_open => {
                if changed.is_err() {
                    phase_open = false;
                }
                last_activity = Instant::now();
            }
            _ = sleep_until(wake) => {}
        }
    }
}

/// Connects and subscribes one subscriber; stops at the SUBACK and leaves whatever follows in
/// the read buffer.
pub(crate) async fn subscribe(
    conn: &mut Conn,
    filter: &str,
    qos: u8,
    deadline: Instant,
) -> Result<()> {
    conn.put_subscribe(filter, qos)?;
    conn.flush(deadline).await?;
    loop {
        match client::parse(&conn.rbuf, conn.protocol)? {
            Some((Frame::Other(Packet::SubAck(ack)), len)) => {
                conn.rbuf.advance(len);
                return match ack.reasons.first() {
                    Some(code) if code.0 < 0x80 => Ok(()),
                    other => Err(Error(format!(
                        "the broker refused the subscription to {filter}: {other:?}"
                    ))),
                };
            }
            Some((other, _)) => return Err(Error(format!("expected SUBACK, got {other:?}"))),
            None => conn.fill(deadline).await?,
        }
    }
}
