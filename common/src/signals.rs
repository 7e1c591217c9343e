//! Waiting for the signal to stop (SIGTERM, or Ctrl-C): the master and the
//! engine both stop cleanly on either. Behind the `signals` feature, so the
//! scheduler's crate links no runtime.

/// Returns when SIGTERM or SIGINT arrives.
pub async fn wait_for_stop() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
