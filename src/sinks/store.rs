//! The storage sink: bus messages → batched SQLite transactions, and daily retention.

use crate::config::ConfigRx;
use crate::model::Message;
use crate::storage::{Store, Write};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const MAX_BATCH: usize = 2000;
const PRUNE_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Runs until the bus closes or `cancel` fires; on cancel it drains what is queued first, so
/// nothing received is lost at shutdown.
pub async fn run(
    store: Store,
    mut rx: mpsc::Receiver<Message>,
    cfg: ConfigRx,
    cancel: CancellationToken,
) {
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    let mut batch: Vec<Write> = Vec::new();
    loop {
        let first = tokio::select! {
            m = rx.recv() => m,
            _ = prune.tick() => {
                let days = cfg.borrow().storage.retention_days;
                if days > 0 {
                    let before = chrono::Utc::now() - chrono::Duration::days(days as i64);
                    match store.run(move |s| s.prune(before.timestamp_millis())).await {
                        Ok(n) if n > 0 => tracing::info!(deleted = n, days, "pruned old events"),
                        Ok(_) => {}
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
