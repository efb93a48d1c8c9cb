//! Observability: packet TRACE logging on the `protocol` logger (payload cut at 256
//! characters, nothing below TRACE, never a password), metrics records that match the traffic,
//! `$SYS` topics, and the daemon's SIGHUP reload of log levels.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::raw::{connect_with, publish, Raw};
use common::*;
use serde_json::Value;
use starling_proto::{Disconnect, Packet, Protocol, QoS, ReasonCode};

fn json_logging(levels: &str) -> String {
    format!("[logging]\nformat = \"json\"\nlevel = \"info\"\n[logging.levels]\n{levels}\n[metrics]\nlog_interval = 0\nsys_interval = 0\n")
}

fn is_packet(r: &Value, dir: &str, kind: &str) -> bool {
    r["dir"] == dir && r["type"] == kind
}

/// The seed's Debug Logging: with the `protocol` logger at TRACE every packet in and out is
/// logged with its fields; the payload is shown as UTF-8 cut at 256 characters.
#[tokio::test]
async fn packets_are_logged_at_trace_with_payloads_cut_at_256_characters() {
    let broker = TestBroker::start_captured("", &json_logging("protocol = \"trace\""));
    let logs = broker.logs.clone().expect("captured");
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V5, "sub").await;
    sub.subscribe("log/#", QoS::AtMostOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V5, "pub").await;
    let payload = "x".repeat(300);
    publisher
        .send_packet(&publish("log/it", QoS::AtMostOnce, None, payload.clone()))
        .await;
    sub.recv_publish().await;

    let shown = format!("payload=\"{}...\"", "x".repeat(256));
    for dir in ["in", "out"] {
        let record = logs
            .wait_for(&format!("PUBLISH {dir}"), |r| is_packet(r, dir, "PUBLISH"))
            .await;
        let fields = record["packet"].as_str().expect("fields");
        assert!(fields.contains("topic=log/it"), "{fields}");
        assert!(fields.contains("payload_len=300"), "{fields}");
        assert!(fields.contains(&shown), "cut at 256 characters: {fields}");
        assert!(!fields.contains(&"x".repeat(257)), "{fields}");
        assert_eq!(record["level"], "TRCE");
    }
    logs.wait_for("SUBSCRIBE in", |r| is_packet(r, "in", "SUBSCRIBE"))
        .await;
    logs.wait_for("CONNACK out", |r| is_packet(r, "out", "CONNACK"))
        .await;
}

/// The seed's Debug Logging: "turning on TRACE logging for
/// `org.apache.activemq.artemis.core.protocol.mqtt`" logs packets in and out; in Starling that
/// name is an alias of the `protocol` logger.
#[tokio::test]
async fn artemis_mqtt_logger_at_trace_logs_every_packet() {
    let broker = TestBroker::start_captured(
        "",
        &json_logging("org.apache.activemq.artemis.core.protocol.mqtt = \"TRACE\""),
    );
    let logs = broker.logs.clone().expect("captured");
    let (mut raw, _) = Raw::connected(broker.addr, Protocol::V311, "artemis-user").await;
    raw.send_packet(&publish("debug/me", QoS::AtMostOnce, None, "hello"))
        .await;
    let record = logs
        .wait_for("PUBLISH in", |r| is_packet(r, "in", "PUBLISH"))
        .await;
    assert!(
        record["packet"]
            .as_str()
            .is_some_and(|f| f.contains("topic=debug/me")),
        "{record}"
    );
    logs.wait_for("CONNACK out", |r| is_packet(r, "out", "CONNACK"))
        .await;
}

/// Payloads are never logged below TRACE.
#[tokio::test]
async fn no_payload_is_logged_below_trace() {
    let broker = TestBroker::start_captured(
        "",
        &json_logging("protocol = \"debug\"\nconnection = \"debug\"\nsession = \"debug\""),
    );
    let logs = broker.logs.clone().expect("captured");
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V311, "sub").await;
    sub.subscribe("quiet", QoS::AtMostOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "pub").await;
    publisher
        .send_packet(&publish(
            "quiet",
            QoS::AtMostOnce,
            None,
            "classified-payload",
        ))
        .await;
    sub.recv_publish().await;
    drop(publisher);
    logs.wait_for("a debug record", |r| r["level"] == "DEBG")
        .await;
    assert!(
        !logs.text().contains("classified-payload"),
        "{}",
        logs.text()
    );
}

/// Passwords are never logged, at any level.
#[tokio::test]
async fn passwords_are_never_logged() {
    let broker = TestBroker::start_captured("", &json_logging("protocol = \"trace\"\nconnection = \"trace\"\nsession = \"trace\"\nregistry = \"trace\"").replace("level = \"info\"", "level = \"trace\""));
    let logs = broker.logs.clone().expect("captured");
    let connect = connect_with(Protocol::V311, "secretive", |c| {
        c.username = Some("alice".to_owned());
        c.password = Some(Bytes::from_static(b"hunter2-very-secret"));
    });
    let (mut raw, _) = Raw::connect(broker.addr, Protocol::V311, &connect).await;
    raw.send_packet(&Packet::PingReq).await;
    raw.recv().await;
    let record = logs
        .wait_for("CONNECT in", |r| is_packet(r, "in", "CONNECT"))
        .await;
    assert!(record["packet"]
        .as_str()
        .expect("fields")
        .contains("password=<hidden>"));
    assert!(
        !logs.text().contains("hunter2"),
        "the password leaked into the log"
    );
}

/// Metrics records: every `log_interval` one per worker and one broker total, whose counters
/// match the traffic the test made.
#[tokio::test]
async fn metrics_records_match_the_traffic() {
    let extra = json_logging("").replace("log_interval = 0", "log_interval = 1");
    let broker = TestBroker::start_captured("", &extra);
    let logs = broker.logs.clone().expect("captured");
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V311, "sub").await;
    sub.subscribe("m/#", QoS::AtMostOnce).await;
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "pub").await;
    for n in 0..10 {
        publisher
            .send_packet(&publish("m/x", QoS::AtMostOnce, None, format!("{n}")))
            .await;
    }
    for _ in 0..10 {
        sub.recv_publish().await;
    }
    let total = logs
        .wait_for("a broker metrics record after the traffic", |r| {
            r["msg"] == "metrics" && r["scope"] == "broker" && r["messages_out"] == 10
        })
        .await;
    assert_eq!(total["messages_in"], 10);
    assert_eq!(total["connections"], 2);
    assert_eq!(total["sessions_online"], 2);
    assert_eq!(total["subscriptions"], 1);
    assert_eq!(total["retained"], 0);
    assert_eq!(total["dropped_queue_full"], 0);
    assert!(total["bytes_in"].as_u64().expect("bytes_in") > 10 * 5);
    // One record per worker too, and the workers add up to the total.
    let workers: Vec<Value> = logs
        .records()
        .into_iter()
        .filter(|r| r["msg"] == "metrics" && r["scope"] == "worker")
        .collect();
    assert!(workers.len() >= 2, "two workers");
}

/// Connects and disconnects `count` clients one after the other: a burst of accepts and
/// reads that makes a worker busy in the sense of `core.busy_poll`.
async fn connect_burst(broker: &TestBroker, count: usize) {
    for n in 0..count {
        let (mut client, _) = Raw::connected(broker.addr, Protocol::V311, &format!("b{n}")).await;
        client
            .send_packet(&Packet::Disconnect(Disconnect::with_reason(
                ReasonCode::SUCCESS,
            )))
            .await;
    }
}

/// The broker metrics records logged so far.
fn broker_records(logs: &LogCapture) -> Vec<Value> {
    logs.records()
        .into_iter()
        .filter(|r| r["msg"] == "metrics" && r["scope"] == "broker")
        .collect()
}

/// `core.busy_poll`: a worker whose sockets bring work often keeps polling instead of sleeping
/// (`busy_poll_us` grows), and stops within the window once they go quiet (`busy_poll_us` no
/// longer grows while nothing arrives).
#[tokio::test]
async fn a_busy_worker_polls_before_it_sleeps_and_stops_when_quiet() {
    let extra = format!(
        "busy_poll = 1000\n{}",
        json_logging("").replace("log_interval = 0", "log_interval = 1")
    );
    let broker = TestBroker::start_captured("", &extra);
    let logs = broker.logs.clone().expect("captured");
    connect_burst(&broker, 300).await;
    logs.wait_for("a metrics record showing busy polling", |r| {
        r["msg"] == "metrics" && r["scope"] == "broker" && r["busy_poll_us"].as_u64() > Some(0)
    })
    .await;
    // Quiet from here on: after the window the workers sleep, so the figure stops growing.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let seen = broker_records(&logs).len();
    let quiet = broker_records(&logs)[seen - 1]["busy_poll_us"].clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while broker_records(&logs).len() < seen + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no further metrics records"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let later = broker_records(&logs);
    assert_eq!(
        later[seen]["busy_poll_us"], quiet,
        "polling went on while nothing arrived"
    );
    assert_eq!(
        later[seen + 1]["busy_poll_us"],
        quiet,
        "polling went on while nothing arrived"
    );
}

/// `$SYS` topics (Mosquitto's names) carry the same figures, retained, every `sys_interval`.
#[tokio::test]
async fn sys_topics_show_the_figures_changing_with_traffic() {
    let broker = TestBroker::start("", "[metrics]\nsys_interval = 1\nlog_interval = 0");
    let (mut sys, _) = Raw::connected(broker.addr, Protocol::V311, "sys").await;
    sys.subscribe("$SYS/broker/messages/received", QoS::AtMostOnce)
        .await;
    let value = |p: starling_proto::Publish| -> u64 {
        String::from_utf8_lossy(&p.payload)
            .parse()
            .expect("a number")
    };
    let before = value(sys.recv_publish().await);
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "pub").await;
    for _ in 0..5 {
        publisher
            .send_packet(&publish("t", QoS::AtMostOnce, None, "x"))
            .await;
    }
    let mut after = before;
    for _ in 0..5 {
        after = value(sys.recv_publish().await);
        if after >= before + 5 {
            break;
        }
    }
    assert!(after >= before + 5, "{before} -> {after}");
    // `#` does not match $SYS topics; they are retained for late subscribers.
    let (mut late, _) = Raw::connected(broker.addr, Protocol::V311, "late").await;
    late.subscribe("$SYS/broker/uptime", QoS::AtMostOnce).await;
    let uptime = late.recv_publish().await;
    assert!(uptime.retain);
    assert!(String::from_utf8_lossy(&uptime.payload).ends_with(" seconds"));
}

fn daemon_settings(path: &std::path::Path, log: &std::path::Path, levels: &str) {
    let mut f = std::fs::File::create(path).expect("settings");
    write!(
        f,
        "[logging]\nformat = \"json\"\nfile = \"{}\"\n[logging.levels]\n{levels}\n\n\
         [[acceptors]]\nname = \"main\"\nurl = \"tcp://127.0.0.1:0?protocols=MQTT\"\n",
        log.display()
    )
    .expect("write");
}

async fn wait_in_file(path: &std::path::Path, what: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(what)) {
            return line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {what:?} in the log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGHUP re-reads the settings: a `protocol = "trace"` added to the file makes packet lines
/// appear without a restart; a broken file keeps the old settings and the log says why.
#[tokio::test]
async fn sighup_reloads_log_levels_and_survives_a_broken_file() {
    let dir = tempfile::tempdir().expect("dir");
    let settings = dir.path().join("starling.toml");
    let log = dir.path().join("starling.log");
    daemon_settings(&settings, &log, "");
    let mut child = Command::new(env!("CARGO_BIN_EXE_starling"))
        .arg("-c")
        .arg(&settings)
        // The store goes to ./data: the test's own directory.
        .current_dir(dir.path())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id().to_string();
    let listening = wait_in_file(&log, "\"msg\":\"listening\"").await;
    let addr: std::net::SocketAddr = listening
        .split("\"address\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|a| a.parse().ok())
        .expect("address");

    let (mut raw, _) = Raw::connected(addr, Protocol::V5, "pinger").await;
    raw.send_packet(&Packet::PingReq).await;
    raw.recv().await;
    assert!(!std::fs::read_to_string(&log)
        .expect("log")
        .contains("\"type\":\"PINGREQ\""));

    daemon_settings(&settings, &log, "protocol = \"trace\"");
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill")
        .success());
    wait_in_file(&log, "reloaded on SIGHUP").await;
    raw.send_packet(&Packet::PingReq).await;
    raw.recv().await;
    wait_in_file(&log, "\"type\":\"PINGREQ\"").await;

    std::fs::write(&settings, "[logging\nbroken").expect("write");
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill")
        .success());
    let line = wait_in_file(&log, "reload failed, keeping the previous settings").await;
    assert!(line.contains("starling.toml"), "names the file: {line}");
    raw.send_packet(&Packet::PingReq).await;
    assert_eq!(raw.recv().await, Some(Packet::PingResp), "still serving");

    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
}
