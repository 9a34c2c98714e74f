//! SIGTERM and SIGINT become a graceful shutdown; a second one exits at once, for the
//! operator who really means it.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit code of a process stopped by a second signal, as a shell reports SIGINT.
const FORCED_EXIT: i32 = 130;

/// Returns a token cancelled by the first SIGTERM or SIGINT.
pub fn shutdown_token() -> anyhow::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "shutting down gracefully (send it again to exit at once)"
        );
        cancel.cancel();
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        tracing::warn!("second signal: exiting without finishing in-flight work");
        std::process::exit(FORCED_EXIT);
    });
    Ok(token)
}

/// Cancels `token` when stdin reaches end-of-file: the supervisor holding the other end of
/// the pipe has gone, whether it exited cleanly or was killed.
pub fn cancel_on_stdin_eof(token: CancellationToken) {
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut stdin = tokio::io::stdin();
        let mut buffer = [0u8; 64];
        loop {
            match stdin.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        tracing::info!("supervisor gone (stdin closed): shutting down gracefully");
        token.cancel();
    });
}
