//! Process signals: SIGTERM and SIGINT start a graceful shutdown.

/// Resolves when the process is asked to stop (SIGTERM or SIGINT); returns the signal's name.
/// Must be polled inside a tokio runtime.
pub async fn signalled() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers there is nothing to wait for but Ctrl-C.
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
