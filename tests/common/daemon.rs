//! The `starling` binary as a child process: start it, learn its address, wait for its exit.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts the daemon and returns it with the address it logged as listening.
pub fn spawn_daemon(settings: &std::path::Path) -> (Child, std::net::SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_starling"))
        .arg("-c")
        .arg(settings)
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

/// Waits (at most 10 s) for the daemon to exit.
pub fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
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
