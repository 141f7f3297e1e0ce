//! Which of our own events a consumer really received: a second, subscribe-only connection
//! that takes gatehouse's event topics (QoS 1, a session the broker keeps for 5 minutes) and
//! records each event's `seq`.
//!
//! Why: a broker acknowledges a QoS 1 publish once it has queued the message for its
//! subscribers, not once they have it. A broker that is killed (SIGKILL, power loss) loses
//! what it had queued; one that is stopped (SIGTERM) saves it for the sessions it keeps and
//! delivers it after the restart. Neither says which on the wire (both just close the
//! connection; Mosquitto 2.0 sends no DISCONNECT). The watcher tells: after a clean restart
//! its session is still there and it receives what was queued for it; after a kill its
//! session is gone. So after a lost connection gatehouse sends again only what the watcher
//! did not receive — and, when the broker lost its sessions, everything it acknowledged in
//! the last second (a consumer slower than the watcher may not have had it).

use super::client::{self, Ev, Protocol};
use crate::task::Backoff;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Event sequence numbers remembered (a few minutes of a busy site).
const KEEP: usize = 20_000;
/// How long the broker keeps the watcher's session after a disconnect.
pub const SESSION: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Inner {
    seen: HashSet<i64>,
    order: VecDeque<i64>,
}

/// What the watcher has received.
#[derive(Default)]
pub struct EchoLog {
    inner: Mutex<Inner>,
    /// How many of the watcher's connections have ended (it has taken everything they
    /// delivered).
    ended: std::sync::atomic::AtomicU64,
    /// Changes when a connection ends or its subscription is in place.
    changed: tokio::sync::Notify,
    /// Subscribed now.
    watching: std::sync::atomic::AtomicBool,
    /// The broker still had the watcher's session at its last connect.
    kept: std::sync::atomic::AtomicBool,
}

impl EchoLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, seq: i64) {
        let mut i = self.lock();
        if i.seen.insert(seq) {
            i.order.push_back(seq);
            while i.order.len() > KEEP {
                if let Some(old) = i.order.pop_front() {
                    i.seen.remove(&old);
                }
            }
        }
    }

    pub fn seen(&self, seq: i64) -> bool {
        self.lock().seen.contains(&seq)
    }

    /// Connections ended so far.
    pub fn ended(&self) -> u64 {
        self.ended.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Wait (at most `limit`) until more than `before` connections have ended: when the
    /// broker went away, the watcher has then read all it was sent. A watcher that lags behind
    /// a busy daemon would otherwise be asked too early.
    pub async fn wait_ended(&self, before: u64, limit: Duration) {
        self.wait(limit, || self.ended() > before).await
    }

    /// Wait (at most `limit`) until the watcher is subscribed: events published before that
    /// could not be seen by it, and would be sent again after a lost connection.
    pub async fn wait_watching(&self, limit: Duration) {
        self.wait(limit, || {
            self.watching.load(std::sync::atomic::Ordering::SeqCst)
        })
        .await
    }

    async fn wait(&self, limit: Duration, done: impl Fn() -> bool) {
        let _ = tokio::time::timeout(limit, async {
            loop {
                let notified = self.changed.notified();
                if done() {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }

    /// Whether the broker still had the watcher's session at its last connect (it was
    /// stopped cleanly, or only the connection broke).
    pub fn session_kept(&self) -> bool {
        self.kept.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn set_watching(&self, on: bool) {
        self.watching.store(on, std::sync::atomic::Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    fn end(&self) {
        self.ended.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.set_watching(false);
    }
}

/// `seq` of an event payload (`{"id":"…","seq":4711,…}`), without parsing the rest: the
/// watcher takes every event, so this is on the hot path of a backlog drain.
fn seq_of(payload: &[u8]) -> Option<i64> {
    const KEY: &[u8] = b"\"seq\":";
    let at = payload.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = payload[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&payload[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// Run the watcher until `cancel`: connect, subscribe to `filters`, record, reconnect.
pub async fn run(
    options: client::Options,
    mut protocol: Protocol,
    auto: bool,
    filters: Vec<String>,
    log: Arc<EchoLog>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let (c, mut el) = client::connect(protocol, &options);
        let mut connected = false;
        let err = loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => {
                    c.disconnect();
                    let _ = tokio::time::timeout(Duration::from_secs(1), el.poll()).await;
                    return;
                }
                ev = el.poll() => ev,
            };
            match ev {
                Ok(Ev::ConnAck { session_present }) => {
                    connected = true;
                    backoff.reset();
                    log.kept
                        .store(session_present, std::sync::atomic::Ordering::SeqCst);
                    // Subscribed again either way (cheap, and the broker may have a session
                    // without our subscriptions).
                    if let Err(e) = c.subscribe(Vec::new(), filters.clone()) {
                        break e;
                    }
                }
                Ok(Ev::SubAck) => log.set_watching(true),
                Ok(Ev::Publish { payload, .. }) => {
                    if let Some(s) = seq_of(&payload) {
                        log.record(s);
                    }
                }
                Ok(_) => {}
                Err(e) => break e.message,
            }
        };
        log.end();
        if !connected && auto {
            // A 3.1.1-only broker refuses or drops an MQTT 5 CONNECT: try the other version.
            protocol = match protocol {
                Protocol::V5 => Protocol::V311,
                Protocol::V311 => Protocol::V5,
            };
        }
        let d = backoff.next_delay();
        tracing::debug!(error = %err, retry_in = ?d, "MQTT delivery watcher disconnected");
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(d) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_from_an_event_payload_and_bounded_memory() {
        assert_eq!(
            seq_of(br#"{"id":"net2:1","seq":42,"event_type":"door_opened"}"#),
            Some(42)
        );
        assert_eq!(seq_of(b"ON"), None);
        assert_eq!(seq_of(br#"{"seq":"x"}"#), None);
        let l = EchoLog::default();
        for s in 0..(KEEP as i64 + 10) {
            l.record(s);
        }
        assert!(!l.seen(0) && l.seen(KEEP as i64 + 9));
    }
}
