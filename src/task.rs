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

/// A run that lasted this long was healthy, however it ended: the backoff starts over, so a
/// connection that worked for minutes and then dropped comes back as fast as the first time.
pub const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// A run that ended cleanly is retried at once (NVRs close their alert stream every
/// 15–40 s; events sent while we wait are lost) — unless it ended this soon, which is a peer
/// that hangs up at once and gets the backoff instead.
pub const MIN_CLEAN_RUN: Duration = Duration::from_secs(1);

/// How `run_once` ended.
pub enum RunEnd {
    /// Worked, then ended (peer closed): retried at once, backoff reset.
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
                let started = tokio::time::Instant::now();
                // A panic (a bug meeting odd device input) is logged through the panic hook
                // and retried like an error, instead of silently ending the task for good.
                let once = std::panic::AssertUnwindSafe(run_once()).catch_unwind();
                let res = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = once => r.unwrap_or_else(|_| Err(Error::new(ErrorKind::Internal, format!("task {name} panicked")))),
                };
                let ran = started.elapsed();
                if ran >= HEALTHY_RUN {
                    backoff.reset();
                }
                let delay = match res {
                    Ok(RunEnd::Cancelled) => return,
                    Ok(RunEnd::Healthy) if ran >= MIN_CLEAN_RUN => {
                        backoff.reset();
                        Duration::ZERO
                    }
                    Ok(RunEnd::Healthy) => {
                        let d = backoff.next_delay();
                        tracing::warn!(ran = ?ran, retry_in = ?d, "ended as soon as it started; retrying");
                        d
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
                if delay.is_zero() {
                    continue;
                }
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

    /// Runs `script` (how long each run lasts and how it ends) under `supervise` on a paused
    /// clock; returns when each run started, relative to the first.
    async fn starts(script: Vec<(u64, Result<(), ErrorKind>)>) -> Vec<Duration> {
        use std::sync::{Arc, Mutex};
        let n = script.len();
        let script = Arc::new(Mutex::new(std::collections::VecDeque::from(script)));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let cancel = CancellationToken::new();
        let t0 = tokio::time::Instant::now();
        let (s, c, sc) = (seen.clone(), cancel.clone(), script.clone());
        let task = supervise(
            "test",
            cancel.clone(),
            Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
            Duration::from_secs(1800),
            move || {
                let (s, c, sc) = (s.clone(), c.clone(), sc.clone());
                async move {
                    s.lock().unwrap().push(t0.elapsed());
                    let Some((secs, end)) = sc.lock().unwrap().pop_front() else {
                        c.cancel();
                        return Ok(RunEnd::Cancelled);
                    };
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                    end.map(|_| RunEnd::Healthy)
                        .map_err(|k| Error::new(k, "connection reset"))
                }
            },
        );
        task.await.unwrap();
        let v = seen.lock().unwrap().clone();
        assert_eq!(v.len(), n + 1);
        v
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_after_a_healthy_run_is_retried_as_fast_as_the_first() {
        use ErrorKind::Unavailable as U;
        // Four quick failures grow the backoff to ~8 s; then a run that worked for five
        // minutes drops (a socket reset, not a clean end): the next try comes after ~1 s.
        let s = starts(vec![
            (0, Err(U)),
            (0, Err(U)),
            (0, Err(U)),
            (0, Err(U)),
            (300, Err(U)),
            (0, Err(U)),
        ])
        .await;
        let gaps: Vec<f64> = s.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        assert!(gaps[3] >= 6.4, "the backoff grew: {gaps:?}");
        let after_healthy = gaps[4] - 300.0;
        assert!(
            (0.8..=1.2).contains(&after_healthy),
            "retried after {after_healthy} s: {gaps:?}"
        );
        assert!(gaps[5] <= 2.4, "and grows from there: {gaps:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_clean_end_is_retried_at_once_and_an_instant_hang_up_backs_off() {
        // An NVR closing its stream every 20 s: no gap at all between runs.
        let s = starts(vec![(20, Ok(())), (20, Ok(())), (0, Ok(())), (0, Ok(()))]).await;
        assert_eq!(s[1], Duration::from_secs(20));
        assert_eq!(s[2], Duration::from_secs(40), "reconnected at once");
        // A peer that hangs up at once is not hammered: ~1 s, then ~2 s.
        assert!(s[3] - s[2] >= Duration::from_millis(800), "{s:?}");
        assert!(s[4] - s[3] >= Duration::from_millis(1600), "{s:?}");
    }
}
