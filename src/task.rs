//! Long-lived tasks: named, traced, `run_once` inside a retry loop with capped backoff that
//! checks for shutdown.

use crate::error::{Error, ErrorKind};
use futures_util::FutureExt;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Capped exponential backoff with jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    /// Next delay: doubles up to `max`, with ±20% jitter so many clients don't align.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        let jitter = rand::random_range(0.8..1.2);
        d.mul_f64(jitter).min(self.max)
    }

    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// How `run_once` ended.
pub enum RunEnd {
    /// Worked for a while then ended (peer closed): retry soon, backoff reset.
    Healthy,
    /// Shutdown requested.
    Cancelled,
}

/// Spawn a named task that runs `run_once` until cancelled. Errors are logged under the task's
/// name and retried after a backoff; `Auth` errors wait at least `auth_backoff` (retrying bad
/// credentials quickly locks accounts on some devices).
pub fn supervise<F, Fut>(
    name: impl Into<String>,
    cancel: CancellationToken,
    mut backoff: Backoff,
    auth_backoff: Duration,
    mut run_once: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<RunEnd, Error>> + Send,
{
    let name: String = name.into();
    let span = tracing::info_span!("task", name = %name);
    tokio::spawn(
        async move {
            loop {
                // A panic (a bug meeting odd device input) is logged through the panic hook
                // and retried like an error, instead of silently ending the task for good.
                let once = std::panic::AssertUnwindSafe(run_once()).catch_unwind();
                let res = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = once => r.unwrap_or_else(|_| Err(Error::new(ErrorKind::Internal, format!("task {name} panicked")))),
                };
                let delay = match res {
                    Ok(RunEnd::Cancelled) => return,
                    Ok(RunEnd::Healthy) => {
                        backoff.reset();
                        backoff.initial
                    }
                    Err(e) if e.kind() == ErrorKind::Cancelled => return,
                    Err(e) if e.kind() == ErrorKind::Auth => {
                        tracing::error!(error = %e, retry_in = ?auth_backoff, "authentication failed");
                        auth_backoff.max(backoff.next_delay())
                    }
                    Err(e) => {
                        let d = backoff.next_delay();
                        tracing::warn!(error = %e, retry_in = ?d, "task failed; retrying");
                        d
                    }
                };
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
        .instrument(span),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let ds: Vec<_> = (0..6).map(|_| b.next_delay().as_secs_f64()).collect();
        assert!(ds[0] >= 0.8 && ds[0] <= 1.2);
        assert!(ds[2] >= 3.2 && ds[2] <= 4.8);
        assert!(ds[5] <= 8.0 && ds[5] >= 6.4);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(1200));
    }
}
