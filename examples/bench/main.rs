//! `bench`: an MQTT load generator that can be pointed at any broker (Starling, Mosquitto, ...).
//!
//! ```sh
//! cargo run --release --example bench -- --url mqtt://127.0.0.1:1883 SCENARIO [options]
//! ```
//!
//! # Scenarios
//!
//! | scenario | what it does | main figure (`rate`) |
//! |---|---|---|
//! | `fan-in` | `--publishers` (4) publish on `bench/<i>/data` to one subscriber of `bench/+/data` | deliveries/s received |
//! | `fan-out` | one publisher on `bench/fanout` to `--subscribers` (1000) subscribers | deliveries/s summed over the subscribers |
//! | `latency` | one publisher at `--rate` (5000) msg/s, QoS 1 by default, to one subscriber | p50 ... max latency in microseconds (HDR histogram) |
//! | `idle` | opens `--count` (10 000) connections that stay idle `--hold` seconds; with `--broker-pid` the broker's VmRSS before and after | bytes per connection |
//! | `connect-rate` | `--concurrency` (32) loops of CONNECT + DISCONNECT (one write), CONNACK, reset | connections/s; with `--broker-pid`, CPU µs per connection of bench and broker |
//! | `retained` | publishes `--count` (10 000) retained messages on distinct topics, then times one `#` subscriber receiving them all (then clears them) | `receive_s` |
//!
//! Common options (before or after the scenario name): `--url mqtt://host:port`,
//! `--protocol 4|5` (MQTT 3.1.1 or 5), `--qos 0|1|2` (default 0; 1 for `latency` and
//! `retained`), `--payload BYTES` (64; at least 26, the stamp's size), `--count N` (messages per
//! publisher; connections for `idle` and `connect-rate`; messages for `retained`),
//! `--duration SECS` (10: the sending phase of every scenario; nothing waits longer than
//! `--warmup + --duration + 3 x --drain`, so the program always stops by itself), `--warmup SECS`
//! (traffic not counted in rates and latencies), `--drain SECS` (5: longest wait for
//! acknowledgements after sending stopped; deliveries are awaited while they keep flowing, up to
//! 3 x `--drain`), `--quiet SECS` (2: a subscriber stops after this long without a message once
//! sending stopped), `--inflight N` (64: QoS 1/2 window per
//! publisher), `--threads N` (1: tokio worker threads, so the bench can be pinned with `taskset`),
//! `--persistent` (clean start 0, so a broker with persistence stores the queued messages),
//! `--broker-pid PID` (adds the broker's CPU seconds and memory), `--source-ips
//! 127.0.0.1,127.0.0.2` (bind client sockets round robin to these addresses, to open more than
//! ~28 000 connections).
//!
//! # Output
//!
//! Exactly one JSON line on stdout: `scenario`, `ok`, the parameters, `elapsed_s`, `rate` and
//! `rate_unit`, counts (`sent`, `acked`, `received`, `expected`, `lost`, `duplicated`,
//! `corrupted`), `latency_us` percentiles where relevant, `rss_before` / `rss_after` /
//! `rss_per_conn` for `idle`, `bench_cpu_s` (the bench's own user + system CPU seconds from
//! `/proc/self/stat`, to check the generator is not the bottleneck) and `broker_cpu_s` with
//! `--broker-pid`. Progress goes to stderr.
//!
//! # Correctness
//!
//! Every payload carries a run id, the publisher id, a sequence number and the send time, then
//! filler bytes derived from them. For QoS 1 and 2, every message the broker acknowledged
//! (PUBACK, PUBCOMP) must reach every subscriber; a lost or corrupted message makes `ok` false
//! and the exit code 1. Duplicates are counted (an error only for QoS 2). QoS 0 losses are
//! reported but allowed. Exit code 2: the run could not be made (e.g. connection refused).
//!
//! # Design
//!
//! A minimal MQTT client on tokio (`client`): one task per connection, PUBLISH packets encoded by
//! hand into one buffer and written in batches, reads into a large buffer parsed in a loop
//! without copying, a window of in-flight packet ids per publisher for QoS 1 and 2 (`flow`).

mod client;
mod flow;
mod payload;
mod procfs;
mod scenarios;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{json, Map, Value};
use starling_proto::Protocol;

use crate::client::{Error, Target};
use crate::flow::Shared;
use crate::scenarios::{Ctx, FlowPlan, Outcome};

/// Command line of the bench.
#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "MQTT broker load generator (see the module docs)"
)]
struct Cli {
    /// Broker URL, `mqtt://host:port`.
    #[arg(long, global = true, default_value = "mqtt://127.0.0.1:1883")]
    url: String,
    /// MQTT protocol level: 4 (3.1.1) or 5.
    #[arg(long, global = true, default_value_t = 4)]
    protocol: u8,
    /// QoS of publications and subscriptions (default 0; 1 for latency and retained).
    #[arg(long, global = true)]
    qos: Option<u8>,
    /// Payload size in bytes (at least 26).
    #[arg(long, global = true, default_value_t = 64)]
    payload: usize,
    /// Messages per publisher / connections / retained messages, depending on the scenario.
    #[arg(long, global = true)]
    count: Option<u64>,
    /// Seconds of sending (a hard bound: the program always stops by itself).
    #[arg(long, global = true, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of traffic before measuring starts.
    #[arg(long, global = true, default_value_t = 0.0)]
    warmup: f64,
    /// Seconds to wait for acknowledgements and deliveries after sending stopped.
    #[arg(long, global = true, default_value_t = 5.0)]
    drain: f64,
    /// After sending stopped, a subscriber gives up after this many seconds without a message.
    #[arg(long, global = true, default_value_t = 2.0)]
    quiet: f64,
    /// QoS 1/2 messages in flight per publisher.
    #[arg(long, global = true, default_value_t = 64)]
    inflight: usize,
    /// Tokio worker threads.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    /// The broker's process id: adds its CPU time and memory to the results.
    #[arg(long, global = true)]
    broker_pid: Option<u32>,
    /// Local addresses to bind client sockets to, round robin (e.g. 127.0.0.1,127.0.0.2).
    #[arg(long, global = true, value_delimiter = ',')]
    source_ips: Vec<IpAddr>,
    /// Persistent sessions (clean start 0): what a broker with persistence stores.
    #[arg(long, global = true)]
    persistent: bool,
    /// The scenario to run.
    #[command(subcommand)]
    scenario: Scenario,
}

/// The scenarios and their own options.
#[derive(Debug, Clone, Subcommand)]
enum Scenario {
    /// P publishers -> 1 subscriber on `bench/+/data`.
    FanIn {
        /// Number of publishers.
        #[arg(long, default_value_t = 4)]
        publishers: usize,
    },
    /// 1 publisher -> S subscribers on one topic.
    FanOut {
        /// Number of subscribers.
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Offered rate of the publisher in msg/s (default: as fast as possible).
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Fixed offered rate, latency percentiles.
    Latency {
        /// Offered rate in msg/s.
        #[arg(long, default_value_t = 5000.0)]
        rate: f64,
    },
    /// N idle connections; broker memory per connection with --broker-pid.
    Idle {
        /// Seconds to hold the connections open.
        #[arg(long, default_value_t = 5.0)]
        hold: f64,
        /// Keep alive in CONNECT (0: off); pings are sent at half of it.
        #[arg(long, default_value_t = 0)]
        keep_alive: u16,
        /// Connections being opened at the same time.
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
    },
    /// Connect / disconnect as fast as possible.
    ConnectRate {
        /// Concurrent connect loops.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// R retained messages, then one `#` subscriber.
    Retained,
}

impl Scenario {
    /// The scenario's name as typed.
    fn name(&self) -> &'static str {
        match self {
            Scenario::FanIn { .. } => "fan-in",
            Scenario::FanOut { .. } => "fan-out",
            Scenario::Latency { .. } => "latency",
            Scenario::Idle { .. } => "idle",
            Scenario::ConnectRate { .. } => "connect-rate",
            Scenario::Retained => "retained",
        }
    }
}

/// Resolves `mqtt://host:port` (or `host:port`).
fn parse_url(url: &str) -> Result<SocketAddr, Error> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .unwrap_or(url);
    if rest.contains("://") {
        return Err(Error(format!(
            "unsupported URL {url}: only mqtt://host:port"
        )));
    }
    let rest = rest.trim_end_matches('/');
    let with_port = if rest
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        rest.to_owned()
    } else {
        format!("{rest}:1883")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| Error(format!("cannot resolve {url}: {e}")))?
        .next()
        .ok_or_else(|| Error(format!("{url} resolves to no address")))
}

/// Seconds from the command line as a `Duration`.
fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Runs the chosen scenario.
async fn run(cli: &Cli, ctx: Ctx) -> Result<Outcome, Error> {
    match &cli.scenario {
        Scenario::FanIn { publishers } => {
            let plan = FlowPlan {
                filter: "bench/+/data".into(),
                subscribers: 1,
                topics: (0..*publishers)
                    .map(|i| format!("bench/{i}/data"))
                    .collect(),
                rate: None,
                latency: false,
            };
            scenarios::pubsub(&ctx, plan).await
        }
        Scenario::FanOut { subscribers, rate } => {
            let plan = FlowPlan {
                filter: "bench/fanout".into(),
                subscribers: *subscribers,
                topics: vec!["bench/fanout".into()],
                rate: *rate,
                latency: false,
            };
            scenarios::pubsub(&ctx, plan).await
        }
        Scenario::Latency { rate } => {
            let plan = FlowPlan {
                filter: "bench/latency".into(),
                subscribers: 1,
                topics: vec!["bench/latency".into()],
                rate: Some(*rate),
                latency: true,
            };
            scenarios::pubsub(&ctx, plan).await
        }
        Scenario::Idle {
            hold,
            keep_alive,
            concurrency,
        } => scenarios::idle(&ctx, secs(*hold), *keep_alive, *concurrency).await,
        Scenario::ConnectRate { concurrency } => scenarios::connect_rate(&ctx, *concurrency).await,
        Scenario::Retained => scenarios::retained(&ctx).await,
    }
}

/// The parameters echoed in the JSON line.
fn params(cli: &Cli, qos: u8, payload: usize) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("scenario".into(), json!(cli.scenario.name()));
    m.insert("url".into(), json!(cli.url));
    m.insert("protocol".into(), json!(cli.protocol));
    m.insert("qos".into(), json!(qos));
    m.insert("payload".into(), json!(payload));
    m.insert("count".into(), json!(cli.count));
    m.insert("duration".into(), json!(cli.duration));
    m.insert("warmup".into(), json!(cli.warmup));
    m.insert("inflight".into(), json!(cli.inflight));
    m.insert("threads".into(), json!(cli.threads));
    let extra = match &cli.scenario {
        Scenario::FanIn { publishers } => json!({ "publishers": publishers }),
        Scenario::FanOut { subscribers, rate } => {
            json!({ "subscribers": subscribers, "offered": rate })
        }
        Scenario::Latency { rate } => json!({ "offered": rate }),
        Scenario::Idle {
            hold,
            keep_alive,
            concurrency,
        } => {
            json!({ "hold": hold, "keep_alive": keep_alive, "concurrency": concurrency })
        }
        Scenario::ConnectRate { concurrency } => json!({ "concurrency": concurrency }),
        Scenario::Retained => json!({}),
    };
    if let Value::Object(extra) = extra {
        m.extend(extra);
    }
    m
}

fn main() {
    let cli = Cli::parse();
    let started = payload::epoch();
    let default_qos = match cli.scenario {
        Scenario::Latency { .. } | Scenario::Retained => 1,
        _ => 0,
    };
    let qos = cli.qos.unwrap_or(default_qos);
    let payload_len = cli.payload.max(payload::HEADER);
    let mut line = params(&cli, qos, payload_len);
    let finish = |mut line: Map<String, Value>, ok: bool, code: i32| -> ! {
        line.insert("ok".into(), json!(ok));
        line.insert(
            "elapsed_s".into(),
            json!(scenarios::round(started.elapsed().as_secs_f64())),
        );
        println!("{}", Value::Object(line));
        std::process::exit(code)
    };
    let fail = |mut line: Map<String, Value>, e: Error| -> ! {
        eprintln!("bench: error: {e}");
        line.insert("error".into(), json!(e.0));
        finish(line, false, 2)
    };
    if qos > 2 {
        fail(line, Error(format!("--qos {qos}: must be 0, 1 or 2")));
    }
    let protocol = match cli.protocol {
        4 => Protocol::V311,
        5 => Protocol::V5,
        p => fail(
            line,
            Error(format!("--protocol {p}: must be 4 (3.1.1) or 5")),
        ),
    };
    let addr = match parse_url(&cli.url) {
        Ok(a) => a,
        Err(e) => fail(line, e),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => fail(line, Error(format!("cannot start the tokio runtime: {e}"))),
    };
    let ctx = Ctx {
        target: Target {
            addr,
            protocol,
            source_ips: cli.source_ips.clone(),
            persistent: cli.persistent,
        },
        shared: Arc::new(Shared {
            run: std::process::id() ^ (payload::now_ns() as u32).rotate_left(16) ^ 0x5b5b_0000,
            qos,
            payload: payload_len,
            inflight: cli.inflight,
            progress: Arc::new(AtomicU64::new(0)),
        }),
        count: cli.count,
        warmup: secs(cli.warmup),
        duration: secs(cli.duration),
        drain: secs(cli.drain),
        quiet: secs(cli.quiet),
        broker_pid: cli.broker_pid,
    };
    let hold = match cli.scenario {
        Scenario::Idle { hold, .. } => secs(hold),
        _ => Duration::ZERO,
    };
    let watchdog = scenarios::SETUP_TIME * 2
        + ctx.warmup
        + ctx.duration * 2
        + ctx.drain * 4
        + hold
        + Duration::from_secs(10);
    let result = runtime.block_on(async { tokio::time::timeout(watchdog, run(&cli, ctx)).await });
    match result {
        Err(_) => fail(
            line,
            Error(format!("watchdog: the run did not end within {watchdog:?}")),
        ),
        Ok(Err(e)) => fail(line, e),
        Ok(Ok(outcome)) => {
            line.extend(outcome.fields);
            if !outcome.ok {
                eprintln!("bench: FAILED: {}", Value::Object(line.clone()));
            }
            let code = if outcome.ok { 0 } else { 1 };
            finish(line, outcome.ok, code)
        }
    }
}
