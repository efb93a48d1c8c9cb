//! The scenarios: each sets up its connections, runs them, and returns its figures as a JSON
//! object (the caller adds the common fields).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, Instant};

use crate::client::{Conn, Error, Result, Target};
use crate::flow::{self, Phase, PubResult, PubSpec, Shared, SubResult, SubSpec, Topic};
use crate::procfs;

/// Connections opened at the same time while setting up.
const SETUP_CONCURRENCY: usize = 200;
/// Time allowed for setting up the connections of a scenario.
pub(crate) const SETUP_TIME: Duration = Duration::from_secs(30);

/// Everything a scenario needs from the command line.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    /// Where to connect.
    pub(crate) target: Target,
    /// Settings shared by every connection.
    pub(crate) shared: Arc<Shared>,
    /// `--count`, if given.
    pub(crate) count: Option<u64>,
    /// Warm-up before measuring.
    pub(crate) warmup: Duration,
    /// Length of the measurement (sending) phase.
    pub(crate) duration: Duration,
    /// Longest wait for acknowledgements and deliveries once sending stopped.
    pub(crate) drain: Duration,
    /// In the drain phase, a subscriber stops after this long without a message.
    pub(crate) quiet: Duration,
    /// The broker's process id, for memory and CPU figures.
    pub(crate) broker_pid: Option<u32>,
}

/// A scenario's figures and verdict.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Figures to print.
    pub(crate) fields: Map<String, Value>,
    /// False when messages were lost or corrupted, or something failed.
    pub(crate) ok: bool,
}

/// Client id of connection `role` number `i` of this run.
fn client_id(ctx: &Ctx, role: &str, i: usize) -> String {
    format!("sb{:08x}-{role}{i}", ctx.shared.run)
}

/// Connects `n` clients (at most `SETUP_CONCURRENCY` at a time); subscribes each to `filter`
/// when given. Fails on the first error.
async fn connect_many(ctx: &Ctx, role: &str, n: usize, filter: Option<&str>) -> Result<Vec<Conn>> {
    let deadline = Instant::now() + SETUP_TIME;
    let limit = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let mut set = JoinSet::new();
    for i in 0..n {
        let (ctx, limit, id) = (ctx.clone(), limit.clone(), client_id(ctx, role, i));
        let filter = filter.map(str::to_owned);
        set.spawn(async move {
            let _permit = limit.acquire().await;
            let mut conn = Conn::connect(&ctx.target, i, &id, 0, deadline).await?;
            if let Some(f) = filter {
                flow::subscribe(&mut conn, &f, ctx.shared.qos, deadline).await?;
            }
            Ok::<_, Error>((i, conn))
        });
    }
    let mut conns: Vec<Option<Conn>> = (0..n).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        let (i, conn) = joined.map_err(|e| Error(format!("a setup task failed: {e}")))??;
        conns[i] = Some(conn);
    }
    Ok(conns.into_iter().flatten().collect())
}

/// What a publish/subscribe scenario runs.
#[derive(Debug)]
pub(crate) struct FlowPlan {
    /// The filter every subscriber subscribes to.
    pub(crate) filter: String,
    /// Number of subscribers.
    pub(crate) subscribers: usize,
    /// One topic per publisher.
    pub(crate) topics: Vec<String>,
    /// Offered rate per publisher (msg/s); `None`: unbounded.
    pub(crate) rate: Option<f64>,
    /// Record latencies.
    pub(crate) latency: bool,
}

/// Runs publishers and subscribers as planned and reports rates, losses and latencies.
pub(crate) async fn pubsub(ctx: &Ctx, plan: FlowPlan) -> Result<Outcome> {
    let subs = connect_many(ctx, "s", plan.subscribers, Some(&plan.filter)).await?;
    let pubs = connect_many(ctx, "p", plan.topics.len(), None).await?;
    eprintln!(
        "bench: {} subscriber(s) on {}, {} publisher(s) connected",
        subs.len(),
        plan.filter,
        pubs.len()
    );
    let cpu0 = procfs::cpu_seconds(None);
    let broker_cpu0 = ctx.broker_pid.and_then(|p| procfs::cpu_seconds(Some(p)));
    let start = Instant::now();
    let measure_from = start + ctx.warmup;
    let send_until = measure_from + ctx.duration;
    let hard = send_until + ctx.drain * 3;
    let (phase_tx, phase_rx) = watch::channel(Phase::Sending);
    let mut sub_set = JoinSet::new();
    for (i, conn) in subs.into_iter().enumerate() {
        let spec = SubSpec {
            id: i as u32,
            measure_from,
            latency: plan.latency,
            quiet: ctx.quiet,
            hard_deadline: hard + Duration::from_secs(1),
        };
        sub_set.spawn(flow::subscriber(
            conn,
            spec,
            ctx.shared.clone(),
            phase_rx.clone(),
        ));
    }
    let mut pub_set = JoinSet::new();
    for (i, (conn, topic)) in pubs.into_iter().zip(&plan.topics).enumerate() {
        let spec = PubSpec {
            id: i as u32,
            topic: Topic::Fixed(topic.clone()),
            retain: false,
            count: ctx.count,
            rate: plan.rate,
            start,
            send_until,
            drain: ctx.drain,
        };
        pub_set.spawn(flow::publisher(conn, spec, ctx.shared.clone()));
    }
    let progress = spawn_progress(ctx.shared.progress.clone(), "received");
    let mut pub_results = Vec::new();
    while let Some(r) = pub_set.join_next().await {
        pub_results.push(r.map_err(|e| Error(format!("a publisher task failed: {e}")))?);
    }
    let sent_end = Instant::now();
    let sent: u64 = pub_results.iter().map(|p| p.sent).sum();
    // Deliveries may lag far behind (a broker with a backlog): keep receiving while they
    // flow, until all arrived, `quiet` passes without any, or the hard limit.
    let _ = phase_tx.send(Phase::Drain {
        expected: sent,
        until: hard,
    });
    let mut sub_results = Vec::new();
    while let Some(r) = sub_set.join_next().await {
        sub_results.push(r.map_err(|e| Error(format!("a subscriber task failed: {e}")))?);
    }
    progress.abort();
    let mut out = analyze(ctx.shared.qos, &pub_results, &sub_results);
    let last_rx = sub_results.iter().filter_map(|s| s.last_rx).max();
    let measured: u64 = sub_results.iter().map(|s| s.measured).sum();
    let window = last_rx
        .map(|t| t.saturating_duration_since(measure_from).as_secs_f64())
        .unwrap_or(0.0);
    let f = &mut out.fields;
    f.insert("publishers".into(), json!(pub_results.len()));
    f.insert("subscribers".into(), json!(sub_results.len()));
    f.insert("measured".into(), json!(measured));
    f.insert("rate".into(), json!(round(ratio(measured as f64, window))));
    f.insert("rate_unit".into(), json!("deliveries/s"));
    f.insert(
        "offered_rate".into(),
        json!(round(ratio(sent as f64, (sent_end - start).as_secs_f64()))),
    );
    f.insert("measure_window_s".into(), json!(round(window)));
    if plan.latency {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
            .map_err(|e| Error(format!("histogram: {e}")))?;
        for s in &sub_results {
            if let Some(h) = &s.hist {
                let _ = hist.add(h);
            }
        }
        f.insert("latency_us".into(), percentiles(&hist));
    }
    cpu_fields(f, ctx, cpu0, broker_cpu0);
    Ok(out)
}

/// Counts sent, acknowledged, received, lost, duplicated and corrupted messages.
fn analyze(qos: u8, pubs: &[PubResult], subs: &[SubResult]) -> Outcome {
    let (mut lost, mut expected) = (0u64, 0u64);
    let all_sent: Vec<_> = pubs
        .iter()
        .map(|p| {
            if qos == 0 {
                crate::payload::SeqSet::first(p.sent)
            } else {
                p.acked.clone()
            }
        })
        .collect();
    for s in subs {
        for (p, must) in pubs.iter().zip(&all_sent) {
            expected += must.len();
            let empty = Default::default();
            lost += must.missing_from(s.seen.get(p.id as usize).unwrap_or(&empty));
        }
    }
    let sum = |f: fn(&SubResult) -> u64| subs.iter().map(f).sum::<u64>();
    let (dups, corrupt, foreign) = (sum(|s| s.dups), sum(|s| s.corrupt), sum(|s| s.foreign));
    let errors: Vec<String> = pubs
        .iter()
        .filter_map(|p| p.error.as_ref().map(|e| format!("publisher {}: {e}", p.id)))
        .chain(subs.iter().filter_map(|s| {
            s.error
                .as_ref()
                .map(|e| format!("subscriber {}: {e}", s.id))
        }))
        .collect();
    let rejected: u64 = pubs.iter().map(|p| p.rejected).sum();
    let ok = corrupt == 0 && errors.is_empty() && (qos == 0 || lost == 0) && (qos < 2 || dups == 0);
    let mut fields = Map::new();
    fields.insert(
        "sent".into(),
        json!(pubs.iter().map(|p| p.sent).sum::<u64>()),
    );
    fields.insert(
        "acked".into(),
        json!(pubs.iter().map(|p| p.acked.len()).sum::<u64>()),
    );
    fields.insert(
        "unacked".into(),
        json!(pubs.iter().map(|p| p.unacked).sum::<u64>()),
    );
    fields.insert("rejected".into(), json!(rejected));
    fields.insert("expected".into(), json!(expected));
    fields.insert("received".into(), json!(sum(|s| s.unique)));
    fields.insert("lost".into(), json!(lost));
    fields.insert("duplicated".into(), json!(dups));
    fields.insert("corrupted".into(), json!(corrupt));
    fields.insert("foreign".into(), json!(foreign));
    if !errors.is_empty() {
        eprintln!(
            "bench: {} connection error(s), first: {}",
            errors.len(),
            errors[0]
        );
        fields.insert("error".into(), json!(errors[0]));
        fields.insert("errors".into(), json!(errors.len()));
    }
    Outcome { fields, ok }
}

/// Publishes `--count` (default 10 000) retained messages on distinct topics, then times one
/// `#` subscriber receiving all of them; clears them afterwards.
pub(crate) async fn retained(ctx: &Ctx) -> Result<Outcome> {
    let n = ctx.count.unwrap_or(10_000);
    let prefix = "bench/retained/".to_owned();
    let mut conns = connect_many(ctx, "r", 2, None).await?;
    let (Some(sub), Some(publisher)) = (conns.pop(), conns.pop()) else {
        return Err(Error("setup returned too few connections".into()));
    };
    let cpu0 = procfs::cpu_seconds(None);
    let broker_cpu0 = ctx.broker_pid.and_then(|p| procfs::cpu_seconds(Some(p)));
    let start = Instant::now();
    let spec = PubSpec {
        id: 0,
        topic: Topic::PerMessage(prefix.clone()),
        retain: true,
        count: Some(n),
        rate: None,
        start,
        send_until: start + ctx.duration,
        drain: ctx.drain,
    };
    let published = flow::publisher(publisher, spec, ctx.shared.clone()).await;
    let publish_s = start.elapsed().as_secs_f64();
    eprintln!(
        "bench: {} retained messages published in {publish_s:.2} s",
        published.sent
    );
    sleep(Duration::from_millis(200)).await;
    let mut sub = sub;
    let t_sub = Instant::now();
    let deadline = t_sub + ctx.duration;
    flow::subscribe(&mut sub, "#", ctx.shared.qos, deadline).await?;
    let (_phase_tx, phase_rx) = watch::channel(Phase::Drain {
        expected: n,
        until: deadline,
    });
    let spec = SubSpec {
        id: 0,
        measure_from: t_sub,
        latency: false,
        quiet: ctx.duration,
        hard_deadline: deadline + Duration::from_secs(1),
    };
    let progress = spawn_progress(ctx.shared.progress.clone(), "retained received");
    let received = flow::subscriber(sub, spec, ctx.shared.clone(), phase_rx).await;
    progress.abort();
    let receive_s = received
        .last_rx
        .map(|t| (t - t_sub).as_secs_f64())
        .unwrap_or(f64::NAN);
    let mut out = analyze(
        ctx.shared.qos,
        std::slice::from_ref(&published),
        std::slice::from_ref(&received),
    );
    let complete = received.unique >= n && published.acked.len() >= n.min(published.sent);
    out.ok &= complete && published.sent == n;
    let f = &mut out.fields;
    f.insert("retained".into(), json!(n));
    f.insert("publish_s".into(), json!(round(publish_s)));
    f.insert("receive_s".into(), json!(round(receive_s)));
    f.insert(
        "rate".into(),
        json!(round(ratio(received.unique as f64, receive_s))),
    );
    f.insert("rate_unit".into(), json!("retained msg/s"));
    cpu_fields(f, ctx, cpu0, broker_cpu0);
    if !complete {
        f.entry("error").or_insert(json!(format!(
            "only {} of {n} retained messages arrived",
            received.unique
        )));
    }
    // Clear them so the broker is left as found (QoS 0, empty payloads).
    let clear_deadline = Instant::now() + ctx.drain;
    if let Ok(mut conn) =
        Conn::connect(&ctx.target, 0, &client_id(ctx, "c", 0), 0, clear_deadline).await
    {
        for seq in 0..n {
            let topic = format!("{prefix}{seq}");
            crate::client::put_publish_header(
                &mut conn.wbuf,
                conn.protocol,
                topic.as_bytes(),
                0,
                true,
                0,
                0,
            );
            if conn.wbuf.len() > 64 * 1024 && conn.flush(clear_deadline).await.is_err() {
                break;
            }
        }
        if conn.flush(clear_deadline).await.is_ok() {
            conn.disconnect(clear_deadline).await;
        }
    }
    Ok(out)
}

/// Opens `--count` (default 10 000) idle connections, measures the broker's resident memory
/// before and after, holds them `hold`, then closes them.
pub(crate) async fn idle(
    ctx: &Ctx,
    hold: Duration,
    keep_alive: u16,
    concurrency: usize,
) -> Result<Outcome> {
    let n = ctx.count.unwrap_or(10_000) as usize;
    let rss0 = ctx.broker_pid.and_then(procfs::rss_bytes);
    let cpu0 = procfs::cpu_seconds(None);
    let broker_cpu0 = ctx.broker_pid.and_then(|p| procfs::cpu_seconds(Some(p)));
    let start = Instant::now();
    let connect_deadline = start + ctx.duration;
    let (stop_tx, stop_rx) = watch::channel(false);
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let connected = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<Error>>> = Arc::default();
    let mut set = JoinSet::new();
    for i in 0..n {
        let (ctx, limit, id) = (ctx.clone(), limit.clone(), client_id(ctx, "i", i));
        let (connected, failed, dropped) = (connected.clone(), failed.clone(), dropped.clone());
        let (first_error, mut stop) = (first_error.clone(), stop_rx.clone());
        set.spawn(async move {
            let permit = limit.acquire().await;
            let conn = match Conn::connect(&ctx.target, i, &id, keep_alive, connect_deadline).await
            {
                Ok(c) => c,
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut g) = first_error.lock() {
                        g.get_or_insert(e);
                    }
                    return;
                }
            };
            drop(permit);
            connected.fetch_add(1, Ordering::Relaxed);
            if !hold_idle(conn, &mut stop, keep_alive).await {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    // Wait until every connection is up (or failed), within the duration.
    loop {
        let done = connected.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
        if done >= n as u64 || Instant::now() >= connect_deadline {
            break;
        }
        sleep(Duration::from_millis(20)).await;
    }
    let connect_s = start.elapsed().as_secs_f64();
    let up = connected.load(Ordering::Relaxed);
    eprintln!("bench: {up} of {n} connections open after {connect_s:.2} s; holding");
    let settle = Duration::from_secs(1).min(hold);
    sleep(settle).await;
    let rss1 = ctx.broker_pid.and_then(procfs::rss_bytes);
    sleep_until(Instant::now() + hold.saturating_sub(settle)).await;
    let _ = stop_tx.send(true);
    let close_deadline = Instant::now() + ctx.drain;
    while !set.is_empty() {
        match tokio::time::timeout_at(close_deadline, set.join_next()).await {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    set.abort_all();
    let failed = failed.load(Ordering::Relaxed);
    let dropped = dropped.load(Ordering::Relaxed);
    let mut f = Map::new();
    f.insert("connections".into(), json!(n));
    f.insert("connected".into(), json!(up));
    f.insert("failed".into(), json!(failed));
    f.insert("dropped".into(), json!(dropped));
    f.insert("connect_s".into(), json!(round(connect_s)));
    f.insert("rate".into(), json!(round(ratio(up as f64, connect_s))));
    f.insert("rate_unit".into(), json!("conn/s (setup)"));
    f.insert("hold_s".into(), json!(hold.as_secs_f64()));
    f.insert("rss_before".into(), json!(rss0));
    f.insert("rss_after".into(), json!(rss1));
    if let (Some(a), Some(b)) = (rss0, rss1) {
        f.insert(
            "rss_per_conn".into(),
            json!(round(ratio(b as f64 - a as f64, up as f64))),
        );
    }
    if let Some(e) = first_error.lock().ok().and_then(|g| g.clone()) {
        f.insert("error".into(), json!(e.0));
    }
    cpu_fields(&mut f, ctx, cpu0, broker_cpu0);
    Ok(Outcome {
        fields: f,
        ok: failed == 0 && dropped == 0 && up == n as u64,
    })
}

/// Keeps an idle connection open until `stop`; false when the broker closed it first.
async fn hold_idle(conn: Conn, stop: &mut watch::Receiver<bool>, keep_alive: u16) -> bool {
    let ping_every = if keep_alive == 0 {
        Duration::from_secs(3600)
    } else {
        Duration::from_secs(u64::from(keep_alive)) / 2
    };
    let mut next_ping = Instant::now() + ping_every;
    loop {
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            _ = stop.changed() => break,
            r = conn.stream.readable() => {
                if r.is_err() {
                    return false;
                }
                let mut sink = [0u8; 64];
                match conn.stream.try_read(&mut sink) {
                    Ok(0) => return false,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return false,
                }
            }
            _ = sleep_until(next_ping) => {
                next_ping += ping_every;
                if conn.stream.try_write(&[0xC0, 0]).is_err() {
                    return false;
                }
            }
        }
    }
    conn.disconnect(Instant::now() + Duration::from_secs(2))
        .await;
    true
}

/// Opens and closes connections with `concurrency` loops, until `--count` connections or the
/// duration: each writes CONNECT and DISCONNECT at once, reads the CONNACK and resets the
/// socket (`Conn::connect_and_disconnect`).
pub(crate) async fn connect_rate(ctx: &Ctx, concurrency: usize) -> Result<Outcome> {
    let cpu0 = procfs::cpu_seconds(None);
    let broker_cpu0 = ctx.broker_pid.and_then(|p| procfs::cpu_seconds(Some(p)));
    let start = Instant::now();
    let measure_from = start + ctx.warmup;
    let until = measure_from + ctx.duration;
    let tickets = Arc::new(AtomicU64::new(0));
    let abort = Arc::new(AtomicBool::new(false));
    let mut set = JoinSet::new();
    for w in 0..concurrency.max(1) {
        let (ctx, tickets, abort) = (ctx.clone(), tickets.clone(), abort.clone());
        set.spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).ok();
            let (mut ok, mut measured, mut failed, mut first_error) = (0u64, 0u64, 0u64, None);
            loop {
                let now = Instant::now();
                if now >= until || abort.load(Ordering::Relaxed) {
                    break;
                }
                let ticket = tickets.fetch_add(1, Ordering::Relaxed);
                if ctx.count.is_some_and(|c| ticket >= c) {
                    break;
                }
                let id = format!("sb{:08x}-k{ticket}", ctx.shared.run);
                let deadline = now + Duration::from_secs(10).min(until + ctx.drain - now);
                match Conn::connect_and_disconnect(&ctx.target, w + ticket as usize, &id, deadline)
                    .await
                {
                    Ok(()) => {
                        let done = Instant::now();
                        ok += 1;
                        if done >= measure_from {
                            measured += 1;
                            if let Some(h) = &mut hist {
                                h.saturating_record((done - now).as_micros() as u64);
                            }
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        if e.0.contains("refused") {
                            abort.store(true, Ordering::Relaxed);
                        }
                        first_error.get_or_insert(e);
                    }
                }
            }
            (ok, measured, failed, first_error, hist)
        });
    }
    let progress = spawn_progress(tickets.clone(), "connections started");
    let (mut ok, mut measured, mut failed, mut first_error) = (0, 0, 0, None);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
        .map_err(|e| Error(format!("histogram: {e}")))?;
    while let Some(r) = set.join_next().await {
        let (o, m, f, e, h) = r.map_err(|e| Error(format!("a connect task failed: {e}")))?;
        ok += o;
        measured += m;
        failed += f;
        if first_error.is_none() {
            first_error = e;
        }
        if let Some(h) = h {
            let _ = hist.add(&h);
        }
    }
    progress.abort();
    let window = Instant::now()
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    let mut f = Map::new();
    f.insert("concurrency".into(), json!(concurrency));
    f.insert("connected".into(), json!(ok));
    f.insert("failed".into(), json!(failed));
    f.insert("measured".into(), json!(measured));
    f.insert("rate".into(), json!(round(ratio(measured as f64, window))));
    f.insert("rate_unit".into(), json!("conn/s"));
    f.insert("connack_latency_us".into(), percentiles(&hist));
    if let Some(e) = &first_error {
        f.insert("error".into(), json!(e.0));
    }
    cpu_fields(&mut f, ctx, cpu0, broker_cpu0);
    // While the load generator is the limit (on loopback it pays for both halves of every TCP
    // handshake), the rate is the same for any broker that keeps up; what a broker spends per
    // connection is what tells them apart.
    for (cpu, per_conn) in [
        ("bench_cpu_s", "bench_cpu_us_per_conn"),
        ("broker_cpu_s", "broker_cpu_us_per_conn"),
    ] {
        if let Some(seconds) = f.get(cpu).and_then(Value::as_f64) {
            f.insert(
                per_conn.into(),
                json!(round(ratio(seconds * 1e6, ok as f64))),
            );
        }
    }
    Ok(Outcome {
        fields: f,
        ok: failed == 0 && ok > 0,
    })
}

/// Prints `label` and the counter every second on stderr until aborted.
fn spawn_progress(counter: Arc<AtomicU64>, label: &'static str) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut last = counter.load(Ordering::Relaxed);
        loop {
            sleep(Duration::from_secs(1)).await;
            let now = counter.load(Ordering::Relaxed);
            eprintln!(
                "bench: t={:>4.1}s {label} {now} (+{}/s)",
                start.elapsed().as_secs_f64(),
                now - last
            );
            last = now;
        }
    })
}

/// Adds the bench's own CPU time (and the broker's, when its pid is known) since the marks.
fn cpu_fields(f: &mut Map<String, Value>, ctx: &Ctx, cpu0: Option<f64>, broker0: Option<f64>) {
    if let (Some(a), Some(b)) = (cpu0, procfs::cpu_seconds(None)) {
        f.insert("bench_cpu_s".into(), json!(round(b - a)));
    }
    if let (Some(a), Some(b)) = (
        broker0,
        ctx.broker_pid.and_then(|p| procfs::cpu_seconds(Some(p))),
    ) {
        f.insert("broker_cpu_s".into(), json!(round(b - a)));
    }
}

/// p50 ... max of a histogram, in its unit.
fn percentiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!(null);
    }
    json!({
        "count": h.len(),
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "mean": round(h.mean()),
    })
}

/// `a / b`, 0 when `b` is not positive.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 && b.is_finite() {
        a / b
    } else {
        0.0
    }
}

/// Rounds to three decimals for printing.
pub(crate) fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
