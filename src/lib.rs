//! Starling, an MQTT 3.1 / 3.1.1 / 5.0 broker: the daemon shell.
//!
//! Nothing protocol-specific lives here; this crate knows settings files, sockets, signals and
//! the process. The broker itself is `starling-actors`; the protocol is `starling-proto`.
//!
//! - [`settings`]: the typed settings tree; layers (defaults -> files -> environment), errors
//!   that name the key and the file.
//! - [`acceptor`]: Artemis-style acceptor URLs and their parameters.
//! - [`logging`]: slog drains (term or JSON), per-logger levels.
//! - [`runtime`]: the actix System and worker arbiters; [`start`] returns a [`Server`].
//! - [`listener`]: accept loops that hand sockets to worker arbiters, where the first bytes
//!   tell TCP, TLS and WebSocket apart.
//! - [`tls`]: rustls configuration from the acceptor's keystore parameters; reload.
//! - [`websocket`]: the WebSocket upgrade and a byte stream over binary frames.
//! - [`shutdown`]: SIGTERM / SIGINT stop, SIGHUP reloads.
//!
//! Embedding: `start(settings, log)` runs a broker on its own threads and returns once it
//! listens (tests use port 0 and `Server::local_addr`); `run(settings, log, shutdown)` blocks
//! until `shutdown` resolves, then stops gracefully.

pub mod acceptor;
pub mod listener;
pub mod logging;
pub mod runtime;
pub mod settings;
pub mod shutdown;
pub mod tls;
pub mod websocket;

use std::future::Future;

pub use runtime::{start, start_with_security, Server, StartError};
pub use settings::Settings;

/// Runs the broker until `shutdown` resolves, then stops it gracefully.
pub fn run(
    settings: Settings,
    log: slog::Logger,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let server = start(settings, log)?;
    let waiter = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StartError::Thread(e.to_string()))?;
    waiter.block_on(shutdown);
    server.stop();
    Ok(())
}
