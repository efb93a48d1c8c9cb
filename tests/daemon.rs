//! The `starling` binary as a daemon: listening lines in the log, a port already in use (also
//! by another broker), graceful shutdown on SIGTERM.

mod common;

use std::process::Command;

use common::daemon::{spawn_daemon, wait_exit};
use common::raw::Raw;
use starling_proto::{Protocol, ReasonCode};

/// Settings with one acceptor at `url`, and the store directory they name.
fn settings_file(url: &str) -> (tempfile::NamedTempFile, tempfile::TempDir) {
    let data = tempfile::tempdir().expect("data dir");
    let toml = format!(
        "[logging]\nformat = \"json\"\n\n[persistence]\ndir = {:?}\n\n\
         [[acceptors]]\nname = \"main\"\nurl = \"{url}\"\n",
        data.path().display().to_string()
    );
    (common::settings_file(&toml), data)
}

/// SIGTERM: stop accepting, DISCONNECT 0x8B to MQTT 5 clients, exit 0.
#[tokio::test]
async fn sigterm_disconnects_clients_and_exits_zero() {
    let (settings, _data) = settings_file("tcp://127.0.0.1:0?protocols=MQTT");
    let (mut child, addr) = spawn_daemon(settings.path());
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
    let (settings, _data) = settings_file(&format!("tcp://127.0.0.1:{port}?protocols=MQTT"));
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

/// Each worker listens on its own `SO_REUSEPORT` socket, yet a second broker on a port a
/// running broker holds is refused like any port in use, not let in to share its clients.
#[test]
fn a_second_broker_on_a_busy_port_is_refused() {
    let (settings, _data) = settings_file("tcp://127.0.0.1:0?protocols=MQTT");
    let (mut first, addr) = spawn_daemon(settings.path());
    let (again, _again_data) = settings_file(&format!("tcp://{addr}?protocols=MQTT"));
    let mut second = Command::new(env!("CARGO_BIN_EXE_starling"))
        .arg("-c")
        .arg(again.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run starling");
    // `wait_exit` kills it and fails the test if it runs on.
    let status = wait_exit(&mut second);
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(status.code(), Some(1), "{status:?}");
    let mut stderr = String::new();
    if let Some(mut pipe) = second.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    assert!(stderr.contains(&addr.to_string()), "{stderr}");
}
