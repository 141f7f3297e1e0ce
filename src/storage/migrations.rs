//! Ordered schema migrations. Each runs in its own transaction and bumps `user_version`.
//! Never edit a released migration: append a new one.

pub const MIGRATIONS: &[&str] = &[
    // 1: events, cursors, door state.
    r#"
    CREATE TABLE events (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        id          TEXT NOT NULL UNIQUE,
        source      TEXT NOT NULL,
        source_id   INTEGER,
        fingerprint TEXT NOT NULL,
        time        TEXT NOT NULL,
        time_ms     INTEGER NOT NULL,
        received    TEXT NOT NULL,
        via         TEXT NOT NULL,
        kind        TEXT NOT NULL,
        code        INTEGER,
        door_id     INTEGER,
        door_name   TEXT,
        user_id     INTEGER,
        user_name   TEXT,
        description TEXT,
        detail      TEXT NOT NULL,
        raw         TEXT NOT NULL
    );
    CREATE UNIQUE INDEX events_source_id ON events(source, source_id) WHERE source_id IS NOT NULL;
    CREATE INDEX events_fingerprint ON events(source, fingerprint);
    CREATE INDEX events_time ON events(time_ms);
    CREATE TABLE cursors (
        source   TEXT PRIMARY KEY,
        position TEXT NOT NULL,
        updated  TEXT NOT NULL
    );
    CREATE TABLE door_state (
        door_id INTEGER PRIMARY KEY,
        state   TEXT NOT NULL,
        updated TEXT NOT NULL
    );
    "#,
    // 2: command audit and presence.
    r#"
    CREATE TABLE audit (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id TEXT NOT NULL,
        requester  TEXT NOT NULL,
        command    TEXT NOT NULL,
        status     TEXT NOT NULL,
        detail     TEXT NOT NULL,
        at         TEXT NOT NULL
    );
    CREATE INDEX audit_request ON audit(request_id);
    CREATE TABLE presence (
        user_id INTEGER PRIMARY KEY,
        state   TEXT NOT NULL,
        updated TEXT NOT NULL
    );
    "#,
    // 3: device payloads that could not be used, kept raw.
    r#"
    CREATE TABLE rejects (
        seq     INTEGER PRIMARY KEY AUTOINCREMENT,
        source  TEXT NOT NULL,
        context TEXT NOT NULL,
        error   TEXT NOT NULL,
        raw     TEXT NOT NULL,
        at      TEXT NOT NULL
    );
    "#,
    // 4: MQTT delivery: events not yet acknowledged by the broker, and the discovery configs
    // published (so stale ones can be cleared).
    r#"
    CREATE TABLE mqtt_outbox (
        event_seq INTEGER PRIMARY KEY,
        -- When the broker acknowledged it (unix ms). Kept for a short replay window: a broker
        -- killed with SIGKILL loses what it had acknowledged but not yet delivered.
        acked_at  INTEGER
    );
    CREATE INDEX mqtt_outbox_acked ON mqtt_outbox(acked_at);
    CREATE TABLE mqtt_discovery (
        topic   TEXT PRIMARY KEY,
        payload TEXT NOT NULL
    );
    "#,
    // 5: pictures (snapshots) saved on disk; `event_id` links a door event's picture.
    r#"
    CREATE TABLE pictures (
        id         TEXT PRIMARY KEY,
        camera     TEXT NOT NULL,
        channel    INTEGER NOT NULL,
        taken_ms   INTEGER NOT NULL,
        taken      TEXT NOT NULL,
        source     TEXT NOT NULL,
        trigger    TEXT NOT NULL,
        event_id   TEXT,
        path       TEXT NOT NULL,
        bytes      INTEGER NOT NULL
    );
    CREATE INDEX pictures_channel ON pictures(camera, channel, taken_ms);
    CREATE INDEX pictures_event ON pictures(event_id) WHERE event_id IS NOT NULL;
    CREATE INDEX pictures_taken ON pictures(taken_ms);
    "#,
    // 6: small state that must survive a restart (a camera's credential back-off, …), JSON
    // by key.
    r#"
    CREATE TABLE state (
        key     TEXT PRIMARY KEY,
        value   TEXT NOT NULL,
        updated TEXT NOT NULL
    );
    "#,
    // Audit entries that are not a command's progress (emergency steps, entries posted to
    // `POST /api/access-control/audit`): what was done, to what, why, from where, for which
    // property. Command rows leave them NULL (read from `command` / `detail` instead).
    r#"
    ALTER TABLE audit ADD COLUMN action TEXT;
    ALTER TABLE audit ADD COLUMN target TEXT;
    ALTER TABLE audit ADD COLUMN reason TEXT;
    ALTER TABLE audit ADD COLUMN source TEXT;
    ALTER TABLE audit ADD COLUMN property_id TEXT;
    "#,
];

/// Bring `conn` to the newest schema, or to `upto` migrations (tests).
pub fn migrate(conn: &mut rusqlite::Connection, upto: Option<usize>) -> rusqlite::Result<()> {
    let current: usize =
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    let target = upto.unwrap_or(MIGRATIONS.len()).min(MIGRATIONS.len());
    if current > MIGRATIONS.len() {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "database schema version {current} is newer than this gatehouse ({}); refusing to touch it",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().take(target).skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "database migrated");
    }
    Ok(())
}
