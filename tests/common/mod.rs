//! Test harness: a real Starling broker on 127.0.0.1 port 0, in-process, and clients for it.
//!
//! `TestBroker::start(params, extra)` layers a settings file over the built-in defaults with one
//! acceptor named `test` (its URL parameters given) plus any extra TOML. Set `STARLING_TEST_LOG`
//! (e.g. `trace`) to see the broker's logs while debugging a test.
#![allow(dead_code, unreachable_pub)]

pub mod daemon;
pub mod pki;
pub mod raw;
pub mod ws;

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use slog::{o, Logger};
use starling::settings::Settings;
use starling::Server;

/// Every wait in the tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(5);

/// A running broker, stopped when dropped.
pub struct TestBroker {
    pub server: Option<Server>,
    pub addr: SocketAddr,
    /// The broker's log records, when started with `start_captured`.
    pub logs: Option<LogCapture>,
    logging: Option<starling::logging::Logging>,
    settings_files: Vec<tempfile::NamedTempFile>,
    /// The broker's `[persistence] dir` (a fresh directory unless the test's TOML sets one).
    pub data_dir: tempfile::TempDir,
}

/// Log output captured in memory (JSON lines when `[logging] format = "json"`).
#[derive(Clone, Default)]
pub struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Everything logged so far, as text.
    pub fn text(&self) -> String {
        self.0
            .lock()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default()
    }

    /// The JSON records logged so far.
    pub fn records(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (within `WAIT`) for a record satisfying `pred`.
    pub async fn wait_for(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(found) = self.records().into_iter().find(|r| pred(r)) {
                return found;
            }
            if std::time::Instant::now() > deadline {
                panic!("no log record: {what}\n{}", self.text());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl TestBroker {
    /// A broker with the default acceptor parameters.
    pub fn default_broker() -> TestBroker {
        TestBroker::start("", "")
    }

    /// A broker whose `test` acceptor has `params` (e.g. `;receiveMaximum=2`) appended to its
    /// URL, with `extra` TOML layered too.
    pub fn start(params: &str, extra: &str) -> TestBroker {
        TestBroker::start_with(params, extra, None)
    }

    /// Like `start`, with the broker's logs captured in memory (its `[logging]` settings,
    /// which `extra` may set, apply).
    pub fn start_captured(params: &str, extra: &str) -> TestBroker {
        TestBroker::start_full(params, extra, None, true)
    }

    /// Like `start`, with a custom security manager.
    pub fn start_with(
        params: &str,
        extra: &str,
        manager: Option<std::sync::Arc<dyn starling_actors::security::SecurityManager>>,
    ) -> TestBroker {
        TestBroker::start_full(params, extra, manager, false)
    }

    fn start_full(
        params: &str,
        extra: &str,
        manager: Option<std::sync::Arc<dyn starling_actors::security::SecurityManager>>,
        capture: bool,
    ) -> TestBroker {
        // `extra` may open its own sections; [core] keys in it come first, so it goes first.
        // A test that sets its own scan interval keeps it.
        let scan = if extra.contains("mqtt_session_scan_interval") {
            ""
        } else {
            "mqtt_session_scan_interval = 200\n"
        };
        let toml = format!(
            "[core]\nworkers = 2\n{scan}{extra}\n\n\
             [[acceptors]]\nname = \"test\"\nurl = \"tcp://127.0.0.1:0?protocols=MQTT{params}\"\n"
        );
        // Every broker gets its own store directory, in a layer under the test's own TOML.
        let data_dir = tempfile::tempdir().expect("temp data dir");
        let base = settings_file(&format!(
            "[persistence]\ndir = {:?}\n",
            data_dir.path().display().to_string()
        ));
        let file = settings_file(&toml);
        let settings_files = vec![base, file];
        let settings = load_settings(&settings_files)
            .unwrap_or_else(|e| panic!("test settings invalid: {e}\n{toml}"));
        let (log, logs, guard) = if capture {
            let capture = LogCapture::default();
            let logging =
                starling::logging::build_with_writer(&settings.logging, Box::new(capture.clone()));
            (logging.log.clone(), Some(capture), Some(logging))
        } else {
            (test_logger(), None, None)
        };
        let server = match manager {
            Some(manager) => starling::start_with_security(settings, log, manager),
            None => starling::start(settings, log),
        }
        .expect("broker starts");
        let addr = server.local_addr("test").expect("test acceptor bound");
        TestBroker {
            server: Some(server),
            addr,
            logs,
            logging: guard,
            settings_files,
            data_dir,
        }
    }

    /// Stops the broker gracefully and starts it again on the same settings and store (on a
    /// new port).
    /// A broker started with `start_captured` keeps logging to the same capture.
    pub fn restart(&mut self) {
        self.stop();
        let settings = load_settings(&self.settings_files).expect("settings still valid");
        let log = match &self.logging {
            Some(logging) => logging.log.clone(),
            None => test_logger(),
        };
        let server = starling::start(settings, log).expect("broker restarts");
        self.addr = server.local_addr("test").expect("test acceptor bound");
        self.server = Some(server);
    }

    /// A snapshot of a session, or `None` when the broker has no session for `client_id`.
    pub async fn session_info(&self, client_id: &str) -> Option<starling_actors::msg::SessionInfo> {
        let server = self.server.as_ref().expect("broker running");
        server.broker().session_info(client_id).await
    }

    /// Waits (within `WAIT`) until the broker holds `client_id`'s session with no connection
    /// attached (`true`), or no session for it at all (`false`): the broker has seen the
    /// client go.
    pub async fn wait_offline(&self, client_id: &str) -> bool {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            match self.session_info(client_id).await {
                None => return false,
                Some(info) if !info.online => return true,
                Some(_) if std::time::Instant::now() > deadline => {
                    panic!("{client_id}'s connection is still attached")
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops the broker gracefully (blocking until its threads are gone).
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A temporary `.toml` settings file holding `toml`.
pub fn settings_file(toml: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp settings file");
    file.write_all(toml.as_bytes()).expect("write settings");
    file
}

fn load_settings(
    files: &[tempfile::NamedTempFile],
) -> Result<Settings, starling::settings::SettingsError> {
    let paths: Vec<_> = files.iter().map(|f| f.path().to_path_buf()).collect();
    Settings::load_with_env(&paths, None)
}

pub fn test_logger() -> Logger {
    match std::env::var("STARLING_TEST_LOG") {
        Ok(level) => {
            let toml = format!("[logging]\nlevel = \"{level}\"\n");
            let mut file = tempfile::NamedTempFile::new().expect("temp file");
            file.write_all(toml.as_bytes()).expect("write");
            let settings =
                Settings::load_with_env(&[file.path().to_path_buf()], None).expect("log settings");
            let logging = starling::logging::build(&settings.logging).expect("logger");
            // Leaked on purpose: the guard must outlive every broker thread of the test.
            let log = logging.log.clone();
            std::mem::forget(logging);
            log
        }
        Err(_) => Logger::root(slog::Discard, o!()),
    }
}

/// rumqttc v4 (MQTT 3.1.1) client options for the broker.
pub fn v4_options(broker: &TestBroker, client_id: &str) -> rumqttc::MqttOptions {
    let mut options = rumqttc::MqttOptions::new(client_id, "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(30));
    options
}

/// rumqttc v5 client options for the broker.
pub fn v5_options(broker: &TestBroker, client_id: &str) -> rumqttc::v5::MqttOptions {
    let mut options = rumqttc::v5::MqttOptions::new(client_id, "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(30));
    options
}

/// Polls a v4 event loop until `pick` returns Some, within `WAIT`.
pub async fn v4_until<T>(
    eventloop: &mut rumqttc::EventLoop,
    mut pick: impl FnMut(&rumqttc::Event) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = eventloop.poll().await.expect("v4 connection error");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    })
    .await
    .expect("timed out waiting for a v4 event")
}

/// Polls a v5 event loop until `pick` returns Some, within `WAIT`.
pub async fn v5_until<T>(
    eventloop: &mut rumqttc::v5::EventLoop,
    mut pick: impl FnMut(&rumqttc::v5::Event) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = eventloop.poll().await.expect("v5 connection error");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    })
    .await
    .expect("timed out waiting for a v5 event")
}

/// Drives a v4 event loop in the background (so its client can publish) until the test ends.
pub fn v4_drive(mut eventloop: rumqttc::EventLoop) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} })
}

/// Drives a v5 event loop in the background until the test ends.
pub fn v5_drive(mut eventloop: rumqttc::v5::EventLoop) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} })
}
