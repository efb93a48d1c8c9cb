//! Artemis acceptor lines against the real broker: the stock lines of `artemis create` start it
//! and serve MQTT, what does not apply to MQTT is warned about once, a missing `protocols`
//! serves MQTT, and a misspelled parameter stops it with a suggestion naming the file.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

/// The query parts of Artemis' stock acceptors (`artemis create`'s broker.xml).
const STOCK_MQTT: &str =
    "tcpSendBufferSize=1048576;tcpReceiveBufferSize=1048576;protocols=MQTT;useEpoll=true";
const STOCK_ARTEMIS: &str = "tcpSendBufferSize=1048576;tcpReceiveBufferSize=1048576;\
    amqpMinLargeMessageSize=102400;protocols=CORE,AMQP,STOMP,HORNETQ,MQTT,OPENWIRE;\
    useEpoll=true;amqpCredits=1000;amqpLowCredits=300;amqpDuplicateDetection=true;\
    supportAdvisory=false;suppressInternalManagementObjects=false";
const STOCK_HORNETQ: &str =
    "anycastPrefix=jms.queue.;multicastPrefix=jms.topic.;protocols=HORNETQ,STOMP,MQTT;useEpoll=true";

fn acceptor(name: &str, query: &str) -> String {
    format!("[[acceptors]]\nname = \"{name}\"\nurl = \"tcp://127.0.0.1:0?{query}\"\n")
}

fn is_ignored_warning(record: &Value, acceptor: &str) -> bool {
    record["level"] == "WARN"
        && record["acceptor"] == acceptor
        && record["msg"]
            .as_str()
            .is_some_and(|m| m.starts_with("acceptor parameters ignored"))
}

/// A v3.1.1 client connects to `addr` and gets its CONNACK.
async fn connects(addr: std::net::SocketAddr, id: &str) {
    let mut options = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(std::time::Duration::from_secs(30));
    let (_client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
    v4_until(&mut eventloop, |e| match e {
        rumqttc::Event::Incoming(rumqttc::Incoming::ConnAck(ack)) => Some(ack.code),
        _ => None,
    })
    .await;
}

/// Issue 19, item 7: Artemis' stock acceptor lines start the broker unchanged and serve MQTT
/// clients. Their Netty transport and other-protocol parameters (`useEpoll`, `amqpCredits`,
/// `supportAdvisory`, `anycastPrefix`, ...) and the other protocols in `protocols` are
/// accepted and logged once, at WARN, per acceptor (not per worker, not per connection).
#[tokio::test]
async fn stock_artemis_acceptor_lines_serve_mqtt_and_are_warned_about_once() {
    let extra = format!(
        "[logging]\nformat = \"json\"\n[metrics]\nlog_interval = 0\n{}{}{}",
        acceptor("mqtt", STOCK_MQTT),
        acceptor("artemis", STOCK_ARTEMIS),
        acceptor("hornetq", STOCK_HORNETQ),
    );
    let broker = TestBroker::start_captured("", &extra);
    let logs = broker.logs.clone().expect("captured");
    let server = broker.server.as_ref().expect("running");
    for name in ["mqtt", "artemis", "hornetq"] {
        let addr = server.local_addr(name).expect("stock acceptor bound");
        connects(addr, &format!("{name}-1")).await;
        connects(addr, &format!("{name}-2")).await;
    }
    // Records arrive in order: once the last client's connection is logged, every warning
    // about the acceptors (logged before they listened) is in.
    logs.wait_for("the last client connected", |r| {
        r["msg"] == "client connected" && r["client_id"] == "hornetq-2"
    })
    .await;
    let records = logs.records();
    let count = |name: &str| {
        records
            .iter()
            .filter(|r| is_ignored_warning(r, name))
            .count()
    };
    assert_eq!(count("mqtt"), 1, "{}", logs.text());
    assert_eq!(count("artemis"), 1, "{}", logs.text());
    assert_eq!(count("hornetq"), 1, "{}", logs.text());
    assert_eq!(count("test"), 0, "nothing ignored on the test acceptor");
    let artemis = records
        .iter()
        .find(|r| is_ignored_warning(r, "artemis"))
        .and_then(|r| r["parameters"].as_str())
        .expect("the artemis warning lists its parameters");
    for name in [
        "amqpMinLargeMessageSize (AMQP)",
        "useEpoll (Netty transport)",
        "amqpCredits (AMQP)",
        "amqpLowCredits (AMQP)",
        "amqpDuplicateDetection (AMQP)",
        "supportAdvisory (OpenWire)",
        "suppressInternalManagementObjects (OpenWire)",
        "protocols CORE,AMQP,STOMP,HORNETQ,OPENWIRE",
    ] {
        assert!(artemis.contains(name), "{name} missing from {artemis}");
    }
    // Applied, so not listed as ignored.
    assert!(!artemis.contains("tcpSendBufferSize"), "{artemis}");
}

/// Artemis serves every protocol it has on an acceptor without `protocols` (its
/// RemotingServiceImpl: "If empty: we get the default list"), so MQTT is served.
#[tokio::test]
async fn an_acceptor_without_protocols_serves_mqtt() {
    let extra = acceptor("bare", "receiveMaximum=10").replace("?receiveMaximum=10", "");
    let broker = TestBroker::start("", &extra);
    let addr = broker
        .server
        .as_ref()
        .expect("running")
        .local_addr("bare")
        .expect("bound");
    connects(addr, "bare").await;
}

/// Issue 19, item 7: a misspelled MQTT parameter still stops the broker, and the error names
/// the acceptor, the file and the parameter, and suggests the right name.
#[test]
fn a_misspelled_parameter_is_a_settings_error_with_a_suggestion() {
    let file = settings_file(&acceptor("edge", "protocols=MQTT;recieveMaximum=10"));
    let out = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["--check-config", "-c"])
        .arg(file.path())
        .output()
        .expect("run starling");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"edge\""), "{stderr}");
    assert!(
        stderr.contains(&file.path().display().to_string()),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("recieveMaximum: unknown acceptor parameter; did you mean `receiveMaximum`?"),
        "{stderr}"
    );
}

/// `--check-config` accepts the stock lines and says what they leave unapplied.
#[test]
fn check_config_accepts_stock_lines_and_lists_what_they_ignore() {
    let file = settings_file(&format!(
        "{}{}",
        acceptor("mqtt", STOCK_MQTT),
        acceptor("artemis", STOCK_ARTEMIS)
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["--check-config", "-c"])
        .arg(file.path())
        .output()
        .expect("run starling");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: acceptor \"artemis\"") && stderr.contains("amqpCredits (AMQP)"),
        "{stderr}"
    );
}
