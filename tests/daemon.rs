//! The `starling` binary as a daemon: listening lines in the log, a port already in use,
//! graceful shutdown on SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::raw::Raw;
use starling_proto::{Protocol, ReasonCode};

fn settings_file(url: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    write!(
        f,
        "[logging]\nformat = \"json\"\n\n[[acceptors]]\nname = \"main\"\nurl = \"{url}\"\n"
    )
    .expect("write");
    f
}

/// Starts the daemon and returns it with the address it logged as listening.
fn spawn_daemon(settings: &tempfile::NamedTempFile) -> (Child, std::net::SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_starling"))
        .arg("-c")
        .arg(settings.path())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn starling");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("\"msg\":\"listening\"") {
                let addr = line
                    .split("\"address\":\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .and_then(|a| a.parse().ok());
                if let Some(addr) = addr {
                    let _ = tx.send(addr);
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the daemon logs its listening address");
    (child, addr)
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM: stop accepting, DISCONNECT 0x8B to MQTT 5 clients, exit 0.
#[tokio::test]
async fn sigterm_disconnects_clients_and_exits_zero() {
    let settings = settings_file("tcp://127.0.0.1:0?protocols=MQTT");
    let (mut child, addr) = spawn_daemon(&settings);
    let (mut client, _) = Raw::connected(addr, Protocol::V5, "watcher").await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    client
        .expect_disconnect(ReasonCode::SERVER_SHUTTING_DOWN)
        .await;
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child))
        .await
        .expect("join");
    assert_eq!(status.code(), Some(0));
}

/// A port already in use is a clear error naming the acceptor and address, and exit code 1.
#[test]
fn a_port_in_use_is_a_clear_error_and_exit_code_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let settings = settings_file(&format!("tcp://127.0.0.1:{port}?protocols=MQTT"));
    let out = Command::new(env!("CARGO_BIN_EXE_starling"))
        .arg("-c")
        .arg(settings.path())
        .output()
        .expect("run starling");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"main\"") && stderr.contains(&format!("127.0.0.1:{port}")),
        "{stderr}"
    );
}
