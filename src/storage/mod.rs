//! SQLite history: events (raw payload kept), per-source cursors, last door state, presence and
//! the command audit. One connection in WAL mode; writes arrive in batches from the store sink.

mod audit;
pub mod migrations;
mod pictures;
mod points;
pub mod query;
pub mod report;
pub use audit::{AuditNote, AuditRow};
pub use pictures::PictureRow;
pub use points::{HardwareRow, Heartbeat, PointEdit, PointKind, PointRow, Registration};

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::model::{CommandUpdate, DoorState, Event, Presence};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// New events also go into `mqtt_outbox`, in the same transaction (the MQTT sink is on).
    outbox: Arc<std::sync::atomic::AtomicBool>,
    /// Woken after every committed batch that queued outbox rows.
    committed: Arc<tokio::sync::Notify>,
    /// Those rows, handed to the MQTT sink without a database read (the live path).
    fresh: Arc<Mutex<Fresh>>,
    /// The newest stored event's `seq` (live readers: the SSE stream).
    newest: Arc<tokio::sync::watch::Sender<i64>>,
    /// Stored events by (source, kind) since start (Prometheus).
    counts: Arc<Mutex<StoredCounts>>,
    /// Read-only connections for readers (the REST API), so they neither wait for the writer
    /// nor hold it up (WAL). At most [`READERS`] at once.
    readers: Arc<Mutex<Vec<Connection>>>,
    readers_free: Arc<tokio::sync::Semaphore>,
}

/// Events stored since start, by source then kind (kinds are static names: a stored event
/// allocates nothing here once its source has been seen).
type StoredCounts =
    std::collections::BTreeMap<String, std::collections::BTreeMap<&'static str, u64>>;

/// Concurrent read-only connections of the REST API (each with its own page cache).
const READERS: usize = 2;

/// Page caches (KiB; SQLite's default is 2000 per connection, and a cache stays full once a
/// burst of events or a long history query has filled it). The writer appends: the pages it
/// revisits are the ends of the events table and its indexes. Readers page through recent
/// events. Issue 18: the whole daemon should fit in 15 MB.
const WRITER_CACHE_KIB: i64 = 1024;
const READER_CACHE_KIB: i64 = 512;

/// Committed outbox rows not yet taken; bounded (then the reader falls back to the database).
#[derive(Default)]
struct Fresh {
    rows: std::collections::VecDeque<OutboxEvent>,
    overflowed: bool,
}

const FRESH_MAX: usize = 1000;

impl Fresh {
    fn push(&mut self, rows: Vec<OutboxEvent>) {
        if self.overflowed || self.rows.len() + rows.len() > FRESH_MAX {
            self.rows.clear();
            self.overflowed = true;
        } else {
            self.rows.extend(rows);
        }
    }
}

impl OutboxEvent {
    /// The row as `outbox_after` would read it back.
    fn of(seq: i64, e: &Event) -> OutboxEvent {
        OutboxEvent {
            seq,
            id: e.id.clone(),
            source: e.source.clone(),
            time: e.time.to_rfc3339(),
            kind: e.kind.name().to_string(),
            code: e.code,
            door_id: e.door.as_ref().map(|d| d.id as i64),
            door_name: e.door.as_ref().and_then(|d| d.name.clone()),
            user_id: e.user.as_ref().map(|u| u.id),
            user_name: e.user.as_ref().and_then(|u| u.name.clone()),
            description: e.description.clone(),
            detail: serde_json::to_string(&e.kind).unwrap_or_default(),
            via: via_name(e.via),
        }
    }
}

fn via_name(v: crate::model::Via) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// An event waiting in the MQTT outbox, as stored.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub seq: i64,
    pub id: String,
    pub source: String,
    pub time: String,
    pub kind: String,
    pub code: Option<i64>,
    pub door_id: Option<i64>,
    pub door_name: Option<String>,
    pub user_id: Option<i64>,
    pub user_name: Option<String>,
    pub description: Option<String>,
    /// JSON of the event kind (`{"type":"access_granted","token":"pin"}`).
    pub detail: String,
    pub via: String,
}

/// One write in a batch.
#[derive(Debug, Clone)]
pub enum Write {
    Event(Box<Event>),
    Cursor {
        source: String,
        position: String,
    },
    /// Record the device id of a live event's REST copy on the live event's row.
    Paired {
        event_id: String,
        source_id: i64,
    },
    DoorState(DoorState),
    Presence(Presence),
    Audit(CommandUpdate),
    Reject {
        source: String,
        context: String,
        error: String,
        raw: String,
    },
}

/// Counts of what a batch changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchResult {
    pub inserted: usize,
    pub duplicates: usize,
    /// Rows added to the MQTT outbox.
    pub queued: usize,
}

#[derive(Debug, Default)]
pub struct RecentKeys {
    /// Device ids stored (REST events, and live events whose REST copy was seen).
    pub ids: HashSet<i64>,
    /// Live events still waiting for their REST copy: `(fingerprint, event id)`.
    pub live: Vec<(String, String)>,
}

/// A stored event as read back (for `gatehouse events`).
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: i64,
    pub id: String,
    pub time: String,
    pub kind: String,
    pub door_id: Option<i64>,
    pub door_name: Option<String>,
    pub user_name: Option<String>,
    pub description: Option<String>,
    pub via: String,
}

/// SQLite checkpoints the WAL into the database after a commit that leaves it this many
/// pages long (4 KiB each; SQLite's default, stated).
pub const WAL_CHECKPOINT_PAGES: i64 = 1000;
/// The -wal file is truncated back to this many bytes when a checkpoint lets it restart.
pub const WAL_SIZE_LIMIT: i64 = 4 * 1024 * 1024;

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).ctx(ErrorKind::Storage, || {
                format!("unable to create {}", dir.display())
            })?;
        }
        let mut conn = Connection::open(path).ctx(ErrorKind::Storage, || {
            format!("unable to open database {}", path.display())
        })?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // SD-card wear (a Pi's card is the database's disk). A commit appends every page it
        // changed to the -wal file; a checkpoint copies them into the database once each. A
        // page changed by 100 commits between two checkpoints is written 100 times to the WAL
        // and once to the database, so fewer, larger checkpoints write less: SQLite's own
        // one every WAL_CHECKPOINT_PAGES is kept, not a checkpoint per quiet moment. But the
        // -wal file keeps its largest size (a 2,000-event backfill batch makes it tens of
        // MB) unless journal_size_limit truncates it when the WAL restarts: then it is
        // bounded, and what a power cut can leave to replay is too.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::migrate(&mut conn, None).ctx(ErrorKind::Storage, || {
            format!("unable to migrate database {}", path.display())
        })?;
        let newest = last_seq(&conn)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_owned(),
            outbox: Default::default(),
            committed: Default::default(),
            fresh: Default::default(),
            newest: Arc::new(tokio::sync::watch::channel(newest).0),
            counts: Default::default(),
            readers: Default::default(),
            readers_free: Arc::new(tokio::sync::Semaphore::new(READERS)),
        })
    }

    /// Read-only access for another process (`gatehouse events --follow`).
    pub fn open_readonly(path: &Path) -> Result<Connection> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ctx(ErrorKind::Storage, || {
                format!("unable to open database {}", path.display())
            })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(conn)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut c = self
            .conn
            .lock()
            .map_err(|_| Error::new(ErrorKind::Storage, "database lock poisoned"))?;
        Ok(f(&mut c)?)
    }

    /// The newest stored event's `seq`, and changes of it.
    pub fn newest_seq(&self) -> tokio::sync::watch::Receiver<i64> {
        self.newest.subscribe()
    }

    /// Events stored since start, by (source, kind).
    pub fn stored_counts(&self) -> Vec<((String, String), u64)> {
        self.counts
            .lock()
            .map(|m| {
                m.iter()
                    .flat_map(|(source, kinds)| {
                        kinds
                            .iter()
                            .map(|(kind, n)| ((source.clone(), kind.to_string()), *n))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Run a read on a read-only connection off the async threads (the REST API): it sees
    /// every committed batch and waits for no writer.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let _permit = self
            .readers_free
            .acquire()
            .await
            .map_err(|_| Error::new(ErrorKind::Internal, "database closed"))?;
        let s = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = s.readers.lock().ok().and_then(|mut v| v.pop());
            let conn = match conn {
                Some(c) => c,
                None => {
                    let c = Store::open_readonly(&s.path)?;
                    c.pragma_update(None, "query_only", true)?;
                    c.pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
                    c
                }
            };
            let r = f(&conn);
            if let Ok(mut v) = s.readers.lock() {
                v.push(conn);
            }
            r
        })
        .await
        .map_err(|e| Error::with_source(ErrorKind::Internal, "database task failed", e))?
    }

    /// Run `f` on the connection: the functions of [`query`]. From async code, inside
    /// [`Store::run`]; it holds the writer's lock, so nothing long (an export has a read-only
    /// connection of its own, [`Store::open_readonly`]).
    pub fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let c = self
            .conn
            .lock()
            .map_err(|_| Error::new(ErrorKind::Storage, "database lock poisoned"))?;
        f(&c)
    }

    /// Run blocking database work off the async threads.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let s = self.clone();
        tokio::task::spawn_blocking(move || f(&s))
            .await
            .map_err(|e| Error::with_source(ErrorKind::Internal, "database task failed", e))?
    }

    /// Apply a batch in one transaction.
    pub fn write_batch(&self, batch: &[Write]) -> Result<BatchResult> {
        let mut fresh = Vec::new();
        let mut newest = None;
        let mut counted: Vec<(&str, &'static str)> = Vec::new();
        self.with(|c| {
            let tx = c.transaction()?;
            let mut res = BatchResult::default();
            {
                let mut ins = tx.prepare_cached(
                    "INSERT OR IGNORE INTO events (id, source, source_id, fingerprint, time, time_ms, received, via, kind, code, door_id, door_name, user_id, user_name, description, detail, raw)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
                )?;
                for w in batch {
                    match w {
                        Write::Event(e) => {
                            let n = ins.execute(params![
                                e.id,
                                e.source,
                                e.source_id,
                                e.fingerprint,
                                e.time.to_rfc3339(),
                                e.time.timestamp_millis(),
                                e.received.to_rfc3339(),
                                via_name(e.via),
                                e.kind.name(),
                                e.code,
                                e.door.as_ref().map(|d| d.id as i64),
                                e.door.as_ref().and_then(|d| d.name.clone()),
                                e.user.as_ref().map(|u| u.id),
                                e.user.as_ref().and_then(|u| u.name.clone()),
                                e.description,
                                serde_json::to_string(&e.kind).unwrap_or_default(),
                                e.raw,
                            ])?;
                            if n == 1 {
                                res.inserted += 1;
                                newest = Some(tx.last_insert_rowid());
                                counted.push((&e.source, e.kind.name()));
                                let seq = tx.last_insert_rowid();
                                // A camera alarm that started: listed by the alarms API until
                                // a user dismisses it.
                                if let crate::model::EventKind::CameraAlert { active: true, event_type, channel, .. } = &e.kind {
                                    tx.prepare_cached(
                                        "INSERT INTO alarms (seq, source, time_ms, event_type, channel) VALUES (?1, ?2, ?3, ?4, ?5)",
                                    )?
                                    .execute(params![seq, e.source, e.time.timestamp_millis(), event_type, channel])?;
                                }
                                if self.outbox.load(std::sync::atomic::Ordering::Relaxed) {
                                    tx.execute("INSERT INTO mqtt_outbox (event_seq) VALUES (?1)", [seq])?;
                                    res.queued += 1;
                                    fresh.push(OutboxEvent::of(seq, e));
                                }
                            } else {
                                res.duplicates += 1;
                            }
                        }
                        Write::Cursor { source, position } => {
                            tx.execute(
                                "INSERT INTO cursors (source, position, updated) VALUES (?1, ?2, ?3)
                                 ON CONFLICT(source) DO UPDATE SET position = excluded.position, updated = excluded.updated
                                 WHERE cursors.position IS NOT excluded.position",
                                params![source, position, chrono::Utc::now().to_rfc3339()],
                            )?;
                        }
                        Write::Paired { event_id, source_id } => {
                            tx.execute(
                                "UPDATE OR IGNORE events SET source_id = ?2 WHERE id = ?1 AND source_id IS NULL",
                                params![event_id, source_id],
                            )?;
                        }
                        Write::DoorState(d) => {
                            tx.execute(
                                "INSERT INTO door_state (door_id, state, updated) VALUES (?1, ?2, ?3)
                                 ON CONFLICT(door_id) DO UPDATE SET state = excluded.state, updated = excluded.updated
                                 WHERE door_state.state IS NOT excluded.state",
                                params![d.id as i64, serde_json::to_string(d).unwrap_or_default(), chrono::Utc::now().to_rfc3339()],
                            )?;
                        }
                        Write::Presence(p) => {
                            tx.execute(
                                "INSERT INTO presence (user_id, state, updated) VALUES (?1, ?2, ?3)
                                 ON CONFLICT(user_id) DO UPDATE SET state = excluded.state, updated = excluded.updated
                                 WHERE presence.state IS NOT excluded.state",
                                params![p.user.id, serde_json::to_string(p).unwrap_or_default(), chrono::Utc::now().to_rfc3339()],
                            )?;
                        }
                        Write::Audit(a) => {
                            tx.execute(
                                "INSERT INTO audit (request_id, requester, command, status, detail, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                                params![
                                    a.request_id,
                                    a.requester,
                                    serde_json::to_string(&a.kind).unwrap_or_default(),
                                    serde_json::to_value(a.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                                    a.detail,
                                    a.at.to_rfc3339()
                                ],
                            )?;
                        }
                        Write::Reject { source, context, error, raw } => {
                            tx.execute(
                                "INSERT INTO rejects (source, context, error, raw, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                                params![source, context, error, raw, chrono::Utc::now().to_rfc3339()],
                            )?;
                        }
                    }
                }
            }
            tx.commit()?;
            Ok(res)
        })
        .inspect(|r| {
            if let Some(seq) = newest {
                self.newest.send_if_modified(|v| {
                    let newer = seq > *v;
                    *v = (*v).max(seq);
                    newer
                });
                if let Ok(mut m) = self.counts.lock() {
                    for (source, kind) in &counted {
                        let by_kind = match m.get_mut(*source) {
                            Some(k) => k,
                            None => m.entry(source.to_string()).or_default(),
                        };
                        *by_kind.entry(kind).or_default() += 1;
                    }
                }
            }
            if r.queued > 0 {
                if let Ok(mut q) = self.fresh.lock() {
                    q.push(fresh);
                }
                self.committed.notify_one();
            }
        })
    }

    /// Outbox rows committed since the last call, newer than `after`, without a query; `None`
    /// when rows were dropped (nobody took them for a while) and the caller must read the
    /// database.
    pub fn take_fresh(&self, after: i64) -> Option<Vec<OutboxEvent>> {
        let mut q = self.fresh.lock().ok()?;
        if std::mem::take(&mut q.overflowed) {
            q.rows = Default::default();
            return None;
        }
        // Taken whole: a burst's buffer goes with the rows instead of staying allocated.
        let rows = std::mem::take(&mut q.rows);
        drop(q);
        Some(rows.into_iter().filter(|r| r.seq > after).collect())
    }

    /// Queue new events for MQTT from now on (set before any source starts).
    pub fn enable_outbox(&self) {
        self.outbox
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Wakes when a batch added outbox rows.
    pub fn committed(&self) -> Arc<tokio::sync::Notify> {
        self.committed.clone()
    }

    /// Outbox events after `seq`, oldest first: not yet acknowledged by the broker.
    pub fn outbox_after(&self, seq: i64, limit: usize) -> Result<Vec<OutboxEvent>> {
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "{OUTBOX_SELECT} FROM mqtt_outbox o JOIN events e ON e.seq = o.event_seq
                 WHERE o.event_seq > ?1 AND o.acked_at IS NULL ORDER BY o.event_seq LIMIT ?2"
            ))?;
            let rows = st.query_map(params![seq, limit as i64], outbox_row)?;
            rows.collect()
        })
    }

    /// Stored events from `seq` on, oldest first, as the MQTT sink publishes them (a replay
    /// a consumer asked for).
    pub fn events_from(&self, seq: i64, limit: usize) -> Result<Vec<OutboxEvent>> {
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "{OUTBOX_SELECT} FROM events e WHERE e.seq >= ?1 ORDER BY e.seq LIMIT ?2"
            ))?;
            let rows = st.query_map(params![seq, limit as i64], outbox_row)?;
            rows.collect()
        })
    }

    /// These stored events (those that still exist), oldest first.
    pub fn events_by_seq(&self, seqs: &[i64]) -> Result<Vec<OutboxEvent>> {
        self.with(|c| {
            let mut st =
                c.prepare_cached(&format!("{OUTBOX_SELECT} FROM events e WHERE e.seq = ?1"))?;
            let mut out = Vec::new();
            for s in seqs {
                out.extend(
                    st.query_map([s], outbox_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()?,
                );
            }
            out.sort_by_key(|e| e.seq);
            Ok(out)
        })
    }

    /// The broker acknowledged these: they leave the outbox.
    pub fn outbox_done(&self, seqs: &[i64]) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached("DELETE FROM mqtt_outbox WHERE event_seq = ?1")?;
                for s in seqs {
                    st.execute([s])?;
                }
            }
            tx.commit()
        })
    }

    /// The newest event waiting in the outbox (0 when it is empty).
    pub fn outbox_max(&self) -> Result<i64> {
        self.with(|c| {
            c.query_row(
                "SELECT coalesce(max(event_seq), 0) FROM mqtt_outbox WHERE acked_at IS NULL",
                [],
                |r| r.get(0),
            )
        })
    }

    /// Events the broker has not acknowledged yet.
    pub fn outbox_len(&self) -> Result<i64> {
        self.with(|c| {
            c.query_row(
                "SELECT count(*) FROM mqtt_outbox WHERE acked_at IS NULL",
                [],
                |r| r.get(0),
            )
        })
    }

    /// Discovery config topics published earlier, with their payloads.
    pub fn discovery_published(&self) -> Result<Vec<(String, String)>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT topic, payload FROM mqtt_discovery ORDER BY topic")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    /// Record a published config (`Some`) or a cleared one (`None`).
    pub fn discovery_record(&self, changes: &[(String, Option<String>)]) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            for (topic, payload) in changes {
                match payload {
                    Some(p) => tx.execute(
                        "INSERT INTO mqtt_discovery (topic, payload) VALUES (?1, ?2) ON CONFLICT(topic) DO UPDATE SET payload = excluded.payload",
                        params![topic, p],
                    )?,
                    None => tx.execute("DELETE FROM mqtt_discovery WHERE topic = ?1", [topic])?,
                };
            }
            tx.commit()
        })
    }

    pub fn presence_all(&self) -> Result<Vec<Presence>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT state FROM presence ORDER BY user_id")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows
                .filter_map(|r| r.ok())
                .filter_map(|s| serde_json::from_str(&s).ok())
                .collect())
        })
    }

    /// Remember an Apptive security key (its SHA-256) as used until `expires`, unless it is
    /// already (and still) remembered: `false` then (a replay). Expired rows are pruned here.
    pub fn qr_key_use(
        &self,
        key_sha256: &str,
        reader: &str,
        now: chrono::DateTime<chrono::Utc>,
        expires: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "DELETE FROM qr_used_keys WHERE expires_ms <= ?1",
                [now.timestamp_millis()],
            )?;
            let n = tx.execute(
                "INSERT INTO qr_used_keys (key_sha256, reader, used_at, expires_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(key_sha256) DO NOTHING",
                params![key_sha256, reader, now.to_rfc3339(), expires.timestamp_millis()],
            )?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    /// Whether an Apptive security key (its SHA-256) is remembered as used at `now`.
    pub fn qr_key_used(
        &self,
        key_sha256: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool> {
        self.with(|c| {
            c.query_row(
                "SELECT 1 FROM qr_used_keys WHERE key_sha256 = ?1 AND expires_ms > ?2",
                params![key_sha256, now.timestamp_millis()],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
        })
    }

    /// A value kept across restarts (`state` table), by key.
    pub fn state_get(&self, key: &str) -> Result<Option<String>> {
        self.with(|c| {
            c.query_row("SELECT value FROM state WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
        })
    }

    /// Keep `value` under `key` across restarts; `None` forgets it.
    pub fn state_set(&self, key: &str, value: Option<&str>) -> Result<()> {
        self.with(|c| {
            match value {
                Some(v) => c.execute(
                    "INSERT INTO state (key, value, updated) VALUES (?1, ?2, ?3)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated = excluded.updated
                     WHERE state.value IS NOT excluded.value",
                    params![key, v, chrono::Utc::now().to_rfc3339()],
                )?,
                None => c.execute("DELETE FROM state WHERE key = ?1", [key])?,
            };
            Ok(())
        })
    }

    pub fn cursor(&self, source: &str) -> Result<Option<String>> {
        self.with(|c| {
            c.query_row(
                "SELECT position FROM cursors WHERE source = ?1",
                [source],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// Device ids stored at or after `since_ms`, and the live events of that time still
    /// waiting for their REST copy: seeds deduplication after a restart.
    pub fn recent_keys(&self, source: &str, since_ms: i64) -> Result<RecentKeys> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT source_id, fingerprint, id, via FROM events WHERE source = ?1 AND time_ms >= ?2",
            )?;
            let mut k = RecentKeys::default();
            let rows = st.query_map(params![source, since_ms], |r| {
                Ok((
                    r.get::<_, Option<i64>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?;
            for row in rows {
                match row? {
                    (Some(id), ..) => {
                        k.ids.insert(id);
                    }
                    (None, fp, id, via) if via == "live" => k.live.push((fp, id)),
                    _ => {}
                }
            }
            Ok(k)
        })
    }

    pub fn door_states(&self) -> Result<Vec<DoorState>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT state FROM door_state ORDER BY door_id")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows
                .filter_map(|r| r.ok())
                .filter_map(|s| serde_json::from_str(&s).ok())
                .collect())
        })
    }

    pub fn count_events(&self) -> Result<i64> {
        self.with(|c| c.query_row("SELECT count(*) FROM events", [], |r| r.get(0)))
    }

    /// Delete events older than `before_ms`, in chunks so readers are not blocked for long.
    pub fn prune(&self, before_ms: i64) -> Result<usize> {
        let mut total = 0;
        loop {
            let n = self.with(|c| {
                c.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE time_ms < ?1 LIMIT 5000)",
                    [before_ms],
                )
            })?;
            total += n;
            if n < 5000 {
                self.with(|c| {
                    c.execute("DELETE FROM alarms WHERE time_ms < ?1", [before_ms])?;
                    c.execute(
                        "DELETE FROM rejects WHERE at < ?1",
                        [before_rfc3339(before_ms)],
                    )
                })?;
                return Ok(total);
            }
        }
    }
}

const OUTBOX_SELECT: &str = "SELECT e.seq, e.id, e.time, e.kind, e.code, e.door_id, e.door_name, e.user_id, e.user_name, e.description, e.detail, e.via, e.source";

fn outbox_row(r: &rusqlite::Row) -> rusqlite::Result<OutboxEvent> {
    Ok(OutboxEvent {
        seq: r.get(0)?,
        id: r.get(1)?,
        time: r.get(2)?,
        kind: r.get(3)?,
        code: r.get(4)?,
        door_id: r.get(5)?,
        door_name: r.get(6)?,
        user_id: r.get(7)?,
        user_name: r.get(8)?,
        description: r.get(9)?,
        detail: r.get(10)?,
        via: r.get(11)?,
        source: r.get(12)?,
    })
}

fn before_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339()
}

/// Events after `seq`, oldest first (for `gatehouse events`).
pub fn events_after(conn: &Connection, seq: i64, limit: i64) -> Result<Vec<StoredEvent>> {
    let mut st = conn.prepare_cached(
        "SELECT seq, id, time, kind, door_id, door_name, user_name, description, via FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = st.query_map(params![seq, limit], |r| {
        Ok(StoredEvent {
            seq: r.get(0)?,
            id: r.get(1)?,
            time: r.get(2)?,
            kind: r.get(3)?,
            door_id: r.get(4)?,
            door_name: r.get(5)?,
            user_name: r.get(6)?,
            description: r.get(7)?,
            via: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Stored events after `seq`, oldest first, as MQTT publishes them (the SSE stream).
pub fn events_since(conn: &Connection, seq: i64, limit: usize) -> Result<Vec<OutboxEvent>> {
    let mut st = conn.prepare_cached(&format!(
        "{OUTBOX_SELECT} FROM events e WHERE e.seq > ?1 ORDER BY e.seq LIMIT ?2"
    ))?;
    let rows = st.query_map(params![seq, limit as i64], outbox_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The highest event sequence number (for `--follow` without history).
pub fn last_seq(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(c: &Connection) -> Vec<(String, String)> {
        let mut st = c
            .prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    #[test]
    fn upgraded_database_equals_fresh_one() {
        let dir = tempfile::tempdir().unwrap();
        for step in 0..migrations::MIGRATIONS.len() {
            let p = dir.path().join(format!("up{step}.db"));
            let mut c = Connection::open(&p).unwrap();
            migrations::migrate(&mut c, Some(step)).unwrap();
            drop(c);
            let up = Store::open(&p).unwrap();
            let fresh = Store::open(&dir.path().join(format!("fresh{step}.db"))).unwrap();
            let a = up.with(|c| Ok(schema(c))).unwrap();
            let b = fresh.with(|c| Ok(schema(c))).unwrap();
            assert_eq!(
                a, b,
                "upgrade from version {step} differs from a fresh database"
            );
            let v: i64 = up
                .with(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
                .unwrap();
            assert_eq!(v as usize, migrations::MIGRATIONS.len());
        }
    }

    fn event(id: &str, source_id: Option<i64>, time: &str) -> Write {
        Write::Event(Box::new(Event {
            id: id.into(),
            source: "net2".into(),
            source_id,
            fingerprint: format!("{time}|20|1|1"),
            time: chrono::DateTime::parse_from_rfc3339(time).unwrap(),
            received: chrono::Utc::now(),
            via: crate::model::Via::Rest,
            door: None,
            user: None,
            kind: crate::model::EventKind::DoorOpened,
            code: Some(46),
            description: None,
            raw: "{}".into(),
        }))
    }

    #[test]
    fn batches_dedupe_by_source_id_and_prune_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("e.db")).unwrap();
        let r = s
            .write_batch(&[
                event("net2:1", Some(1), "2020-01-01T00:00:00+01:00"),
                event("net2:2", Some(2), "2026-01-01T00:00:00+01:00"),
                event("net2:2", Some(2), "2026-01-01T00:00:00+01:00"),
                Write::Cursor {
                    source: "net2".into(),
                    position: "2026-01-01T00:00:00+01:00".into(),
                },
            ])
            .unwrap();
        assert_eq!(
            r,
            BatchResult {
                inserted: 2,
                duplicates: 1,
                queued: 0
            }
        );
        assert_eq!(
            s.cursor("net2").unwrap().as_deref(),
            Some("2026-01-01T00:00:00+01:00")
        );
        let cutoff = chrono::DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z").unwrap();
        assert_eq!(s.prune(cutoff.timestamp_millis()).unwrap(), 1);
        assert_eq!(s.count_events().unwrap(), 1);
        let k = s.recent_keys("net2", 0).unwrap();
        assert!(k.ids.contains(&2) && !k.ids.contains(&1));
    }

    #[test]
    fn a_paired_live_event_is_known_by_its_rest_id_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("p.db")).unwrap();
        let live = |id: &str| {
            let Write::Event(mut e) = event(id, None, "2026-01-01T00:00:00+01:00") else {
                unreachable!()
            };
            e.via = crate::model::Via::Live;
            Write::Event(e)
        };
        s.write_batch(&[
            live("net2:fp:a"),
            live("net2:fp:b"),
            Write::Paired {
                event_id: "net2:fp:a".into(),
                source_id: 77,
            },
        ])
        .unwrap();
        let k = s.recent_keys("net2", 0).unwrap();
        assert_eq!(k.ids.into_iter().collect::<Vec<_>>(), vec![77]);
        assert_eq!(k.live.len(), 1, "only b still waits for its REST copy");
        assert_eq!(k.live[0].1, "net2:fp:b");
    }

    #[test]
    fn refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("new.db");
        let c = Connection::open(&p).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let e = Store::open(&p).err().unwrap();
        assert!(e.to_string().contains("newer"), "{e}");
    }
}

#[cfg(test)]
mod outbox_tests {
    use super::*;

    #[test]
    fn outbox_rows_leave_when_acked_and_events_can_be_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("o.db")).unwrap();
        s.enable_outbox();
        let ev = |id: &str| {
            Write::Event(Box::new(Event {
                id: id.into(),
                source: "net2".into(),
                source_id: None,
                fingerprint: id.into(),
                time: chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00+01:00").unwrap(),
                received: chrono::Utc::now(),
                via: crate::model::Via::Live,
                door: None,
                user: None,
                kind: crate::model::EventKind::DoorOpened,
                code: None,
                description: None,
                raw: "{}".into(),
            }))
        };
        let r = s
            .write_batch(&[ev("a"), ev("b"), ev("a"), ev("c")])
            .unwrap();
        assert_eq!(r.queued, 3);
        let rows = s.outbox_after(0, 10).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(s.outbox_max().unwrap(), rows[2].seq);
        s.outbox_done(&[rows[0].seq]).unwrap();
        assert_eq!(s.outbox_len().unwrap(), 2);
        assert_eq!(s.outbox_after(0, 10).unwrap()[0].id, "b");
        // Acknowledged events are still there to be sent again.
        let again = s.events_by_seq(&[rows[2].seq, rows[0].seq]).unwrap();
        assert_eq!(
            again.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["a", "c"]
        );
        let from = s.events_from(rows[1].seq, 10).unwrap();
        assert_eq!(from.len(), 2);
        assert_eq!(from[0].seq, rows[1].seq);
    }
}
