//! MQTT over WebSocket from a real browser: headless Chromium loads a page that uses MQTT.js
//! over `ws://127.0.0.1:PORT`, subscribes, receives a message published by a Rust client and
//! publishes one back.
//!
//! Needs Chromium and MQTT.js, so it is `#[ignore]`d in the plain test run;
//! `tests/browser/run.sh` (called by `.ci/run`) installs both and runs it.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::raw::{publish, Raw};
use common::*;
use starling_proto::{Protocol, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PAGE: &str = include_str!("browser/page.html");

/// Serves the page and MQTT.js over HTTP/1.1 until the test ends.
async fn serve_page(mqttjs: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mqttjs = mqttjs.clone();
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                let n = socket.read(&mut request).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&request[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let (status, kind, body): (&str, &str, Vec<u8>) =
                    if path.starts_with("/mqtt.min.js") {
                        ("200 OK", "application/javascript", mqttjs)
                    } else if path == "/" || path.starts_with("/?") {
                        ("200 OK", "text/html", PAGE.as_bytes().to_vec())
                    } else {
                        ("404 Not Found", "text/plain", b"not found".to_vec())
                    };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
            });
        }
    });
    port
}

/// Kills the browser when the test ends, however it ends.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
#[ignore = "needs Chromium and MQTT.js: run by tests/browser/run.sh (from .ci/run)"]
async fn a_browser_exchanges_messages_over_websocket() {
    let chromium = std::env::var("STARLING_CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
    let mqttjs_path = std::env::var("STARLING_MQTTJS").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/browser/node_modules/mqtt/dist/mqtt.min.js"
        )
        .to_owned()
    });
    let mqttjs =
        std::fs::read(&mqttjs_path).unwrap_or_else(|e| panic!("MQTT.js at {mqttjs_path}: {e}"));

    let broker = TestBroker::default_broker();
    let (mut rust, _) = Raw::connected(broker.addr, Protocol::V5, "rust").await;
    rust.subscribe("browser/#", QoS::AtLeastOnce).await;
    let http = serve_page(mqttjs).await;

    let profile = tempfile::tempdir().expect("profile dir");
    let _browser = Browser(
        Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("http://127.0.0.1:{http}/?port={}", broker.port()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {chromium}: {e}")),
    );

    // Chromium takes a few seconds to start on a small machine.
    let ready = tokio::time::timeout(Duration::from_secs(60), rust.recv_publish_patiently())
        .await
        .expect("the page connected and announced itself");
    assert_eq!(ready.topic.as_str(), "browser/ready");
    rust.puback(&ready).await;

    rust.send_packet(&publish(
        "browser/in",
        QoS::AtLeastOnce,
        Some(7),
        "hello from rust",
    ))
    .await;
    loop {
        let p = tokio::time::timeout(Duration::from_secs(30), rust.recv_publish_patiently())
            .await
            .expect("the page answered");
        if p.packet_id.is_some() {
            rust.puback(&p).await;
        }
        if p.topic.as_str() == "browser/out" {
            assert_eq!(&p.payload[..], b"echo:hello from rust");
            break;
        }
    }
}
