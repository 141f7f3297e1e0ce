//! The storage sink: bus messages → batched SQLite transactions, and daily retention.

use crate::clock::{Clock, WallWatch};
use crate::config::ConfigRx;
use crate::model::Message;
use crate::storage::{Store, Write};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const MAX_BATCH: usize = 2000;
/// Retention runs this often (monotonic time), and at start-up.
const PRUNE_EVERY: Duration = Duration::from_secs(24 * 3600);
/// How often the wall clock is looked at (a step is logged when seen; a postponed prune runs).
const PRUNE_CHECK: Duration = Duration::from_secs(60);
/// After a step of the wall clock, retention waits this long (monotonic) before it trusts the
/// new time: a wrong step (a bad NTP source, a GPS without fix) is usually corrected by the
/// next poll, and pruning by it would delete history for good.
pub const PRUNE_SETTLE: Duration = Duration::from_secs(15 * 60);

/// When to prune: once a day on the monotonic clock, and only while the wall clock — which
/// decides what is old — is trusted ([`WallWatch::trusted`]).
#[derive(Debug)]
pub struct PruneTimer {
    watch: WallWatch,
    last: Option<Instant>,
    postponed: bool,
}

impl PruneTimer {
    pub fn new(clock: &dyn Clock) -> PruneTimer {
        PruneTimer {
            watch: WallWatch::new(clock),
            last: None,
            postponed: false,
        }
    }

    /// `Some(now)` when a prune is due now, by the wall time `now`.
    pub fn due(&mut self, clock: &dyn Clock) -> Option<DateTime<Utc>> {
        if let Some(step) = self.watch.observe(clock) {
            tracing::warn!(
                by_s = step.by.num_seconds(),
                now = %clock.now(),
                "the wall clock was stepped (NTP?): history retention waits {} min for it to settle",
                PRUNE_SETTLE.as_secs() / 60
            );
        }
        let mono = clock.mono();
        if self
            .last
            .is_some_and(|l| mono.saturating_duration_since(l) < PRUNE_EVERY)
        {
            return None;
        }
        if !self.watch.trusted(clock, PRUNE_SETTLE) {
            if !self.postponed {
                tracing::warn!(now = %clock.now(), build = %crate::clock::build_time(), "the wall clock is not set yet or was just stepped: history retention postponed");
            }
            self.postponed = true;
            return None;
        }
        self.postponed = false;
        self.last = Some(mono);
        Some(clock.now())
    }
}

/// Runs until the bus closes or `cancel` fires; on cancel it drains what is queued first, so
/// nothing received is lost at shutdown.
pub async fn run(
    store: Store,
    mut rx: mpsc::Receiver<Message>,
    cfg: ConfigRx,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
) {
    let mut timer = PruneTimer::new(&*clock);
    let mut batch: Vec<Write> = Vec::new();
    let check = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(check);
    loop {
        let first = tokio::select! {
            m = rx.recv() => m,
            _ = &mut check => {
                check.as_mut().reset(Instant::now() + clock.poll(PRUNE_CHECK));
                let Some(now) = timer.due(&*clock) else { continue };
                let days = cfg.borrow().storage.retention_days;
                if days > 0 {
                    let before = now - chrono::Duration::days(days as i64);
                    match store.run(move |s| s.prune(before.timestamp_millis())).await {
                        // Once a day, even when nothing went: the log shows retention runs.
                        Ok(n) => tracing::info!(deleted = n, days, %before, "pruned old events"),
                        Err(e) => tracing::error!(error = %e, "unable to prune old events"),
                    }
                }
                continue;
            }
            _ = cancel.cancelled() => {
                rx.close();
                rx.recv().await
            }
        };
        let Some(first) = first else { break };
        batch.extend(to_write(first));
        // Natural batching: take everything already queued (a backfill arrives in bursts and
        // commits in large transactions), but never wait — a live event is stored, and so
        // reaches MQTT, at once.
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.extend(to_write(m)),
                Err(_) => break,
            }
        }
        flush(&store, &mut batch).await;
    }
    flush(&store, &mut batch).await;
}

async fn flush(store: &Store, batch: &mut Vec<Write>) {
    if batch.is_empty() {
        return;
    }
    let b = std::mem::take(batch);
    let n = b.len();
    // Never drop a batch: a cursor written later would move past the lost events for good.
    // Retry with backoff; the bounded bus queue holds the sources back meanwhile.
    let b = std::sync::Arc::new(b);
    let mut delay = Duration::from_millis(200);
    loop {
        let bb = b.clone();
        match store.run(move |s| s.write_batch(&bb)).await {
            Ok(r) => {
                tracing::debug!(
                    writes = n,
                    inserted = r.inserted,
                    duplicates = r.duplicates,
                    "batch written"
                );
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, writes = n, retry_in = ?delay, "database write failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn to_write(m: Message) -> Option<Write> {
    Some(match m {
        Message::Event(e) => Write::Event(e),
        Message::DoorState(d) => Write::DoorState(d),
        Message::Presence(p) => Write::Presence(p),
        Message::Command(c) => Write::Audit(c),
        Message::Cursor { source, position } => Write::Cursor { source, position },
        Message::Paired {
            event_id,
            source_id,
        } => Write::Paired {
            event_id,
            source_id,
        },
        Message::Reject {
            source,
            context,
            error,
            raw,
        } => Write::Reject {
            source,
            context,
            error,
            raw,
        },
        Message::Health(_)
        | Message::CameraAlarm(_)
        | Message::CameraInfo(_)
        | Message::Snapshot(_)
        | Message::Stream(_)
        | Message::Hardware(_)
        | Message::WifiSessions { .. }
        | Message::Person(_)
        | Message::QrResult(_) => return None,
        // Kept by the emergency service itself (`state` table), audited there.
        Message::Emergency(_) => return None,
    })
}
