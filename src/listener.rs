//! Accepting connections: one accept loop per acceptor, sockets handed to worker arbiters.
//!
//! A tokio socket stays driven by the reactor it was created on, so an accepted socket is
//! turned into a std socket, moved to a worker arbiter (round-robin), and rebuilt there before
//! its Connection actor starts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use slog::{debug, warn, Logger};
use starling_actors::broker::BrokerHandle;
use starling_actors::config::MqttConfig;
use tokio::net::{TcpListener, TcpStream};

/// Round-robin over the worker arbiters.
#[derive(Debug)]
pub struct Workers {
    arbiters: Vec<ArbiterHandle>,
    next: AtomicUsize,
}

impl Workers {
    /// Workers over started arbiters (at least one).
    pub fn new(arbiters: Vec<ArbiterHandle>) -> Workers {
        Workers {
            arbiters,
            next: AtomicUsize::new(0),
        }
    }

    fn pick(&self) -> Option<&ArbiterHandle> {
        if self.arbiters.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        self.arbiters.get(i)
    }
}

/// Accepts connections until the task is aborted.
pub async fn accept_loop(
    listener: TcpListener,
    config: Arc<MqttConfig>,
    workers: Arc<Workers>,
    broker: BrokerHandle,
    log: Logger,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(log, "accept failed"; "error" => %e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Small packets must leave at once ([MQTT] latency; Nagle adds ~40 ms).
        let _ = stream.set_nodelay(true);
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                debug!(log, "socket hand-over failed"; "error" => %e);
                continue;
            }
        };
        let Some(worker) = workers.pick() else { return };
        let broker = broker.clone();
        let config = Arc::clone(&config);
        let log = log.clone();
        worker.spawn(async move {
            match TcpStream::from_std(std_stream) {
                Ok(stream) => broker.accept(Box::new(stream), peer, config),
                Err(e) => debug!(log, "socket adoption failed"; "error" => %e),
            }
        });
    }
}
