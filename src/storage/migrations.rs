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
    // 7: the REST APIs' reads. Access events (grants, denials, type 61 "door not opened") are
    // a fifth of the history: partial indexes hold only them, so they stay small and writes of
    // other events never touch them. The condition is written exactly as `query::ACCESS`
    // (SQLite uses a partial index only for a query that has it as one of its AND terms). The
    // rowid (`seq`) ends every index entry, so each is ordered by (…, time_ms, seq); the user
    // and door indexes name it to hold `kind` after it, so an action with a user or a door is
    // checked in the index, not in a row per candidate.
    // `access_totals`: access events by kind, kept by triggers in the writing transaction
    // (whatever writes or prunes), so the total of an unfiltered page is one read, not a
    // count of every access event (~10 ms at 200,000 on a fast machine, more on a Pi).
    // `alarms`: the camera alarms (alerts that started) a user has not dismissed — the events
    // stay (MQTT replay and `seq` depend on them); filled by `write_batch`, here from history.
    r#"
    CREATE INDEX events_access_time ON events(time_ms)
        WHERE (kind IN ('access_granted', 'access_denied') OR (kind = 'other' AND code = 61));
    CREATE INDEX events_access_kind ON events(kind, time_ms)
        WHERE (kind IN ('access_granted', 'access_denied') OR (kind = 'other' AND code = 61));
    CREATE INDEX events_access_user ON events(user_id, time_ms, seq, kind)
        WHERE (kind IN ('access_granted', 'access_denied') OR (kind = 'other' AND code = 61));
    CREATE INDEX events_access_door ON events(door_id, time_ms, seq, kind)
        WHERE (kind IN ('access_granted', 'access_denied') OR (kind = 'other' AND code = 61));
    CREATE TABLE access_totals (
        kind TEXT PRIMARY KEY, -- access_granted, access_denied, other (type 61 only)
        n    INTEGER NOT NULL
    );
    INSERT INTO access_totals (kind, n)
        VALUES ('access_granted', 0), ('access_denied', 0), ('other', 0);
    UPDATE access_totals SET n = (
        SELECT count(*) FROM events
        WHERE (kind IN ('access_granted', 'access_denied') OR (kind = 'other' AND code = 61))
          AND events.kind = access_totals.kind);
    CREATE TRIGGER events_access_added AFTER INSERT ON events
        WHEN new.kind IN ('access_granted', 'access_denied') OR (new.kind = 'other' AND new.code = 61)
    BEGIN
        UPDATE access_totals SET n = n + 1 WHERE kind = new.kind;
    END;
    CREATE TRIGGER events_access_removed AFTER DELETE ON events
        WHEN old.kind IN ('access_granted', 'access_denied') OR (old.kind = 'other' AND old.code = 61)
    BEGIN
        UPDATE access_totals SET n = n - 1 WHERE kind = old.kind;
    END;
    -- Events are not reclassified today; should one be, the totals follow.
    CREATE TRIGGER events_access_changed AFTER UPDATE OF kind, code ON events
    BEGIN
        UPDATE access_totals SET n = n - 1
            WHERE kind = old.kind AND (old.kind <> 'other' OR old.code = 61);
        UPDATE access_totals SET n = n + 1
            WHERE kind = new.kind AND (new.kind <> 'other' OR new.code = 61);
    END;
    CREATE TABLE alarms (
        seq          INTEGER PRIMARY KEY, -- events.seq
        source       TEXT NOT NULL,       -- camera/<id>
        time_ms      INTEGER NOT NULL,
        event_type   TEXT NOT NULL,
        channel      INTEGER,
        dismissed_ms INTEGER              -- when a user dismissed it (unix ms)
    );
    CREATE INDEX alarms_time ON alarms(time_ms) WHERE dismissed_ms IS NULL;
    CREATE INDEX alarms_source ON alarms(source, time_ms) WHERE dismissed_ms IS NULL;
    INSERT INTO alarms (seq, source, time_ms, event_type, channel)
        SELECT seq, source, time_ms, coalesce(json_extract(detail, '$.event_type'), ''),
               json_extract(detail, '$.channel')
        FROM events
        WHERE kind = 'camera_alert'
          AND CASE WHEN json_valid(detail) THEN json_extract(detail, '$.active') END = 1;
    "#,
    // Reviews of events that need one (mobile agents' events, seed 001): pending until an
    // operator approves or rejects them, once.
    r#"
    CREATE TABLE event_reviews (
        event_id     TEXT PRIMARY KEY,
        status       TEXT NOT NULL,
        submitted_by TEXT NOT NULL,
        submitted_at TEXT NOT NULL,
        reviewed_by  TEXT,
        reviewed_at  TEXT,
        reason       TEXT
    );
    "#,
    // Access points of the REST API (seed 001): gatehouse's own metadata over the Net2 doors
    // (`net2-<door>`: overrides, NULL = as Net2 / the config says), points that exist only in
    // gatehouse (`point-<n>`) and registered hardware devices (`hw-<n>`, with what they
    // reported). `n` numbers the ids; a hardware device is found by its `device_id`.
    r#"
    CREATE TABLE access_points (
        n               INTEGER PRIMARY KEY AUTOINCREMENT,
        id              TEXT NOT NULL UNIQUE,
        kind            TEXT NOT NULL,
        name            TEXT,
        location        TEXT,
        type            TEXT,
        status          TEXT,
        site            TEXT,
        status_changed  TEXT,
        created         TEXT NOT NULL,
        device_id       TEXT UNIQUE,
        device_type     TEXT,
        firmware        TEXT,
        vendor          TEXT,
        mac_address     TEXT,
        ip_address      TEXT,
        capabilities    TEXT,
        last_heartbeat  TEXT,
        online_since    TEXT,
        battery_level   INTEGER,
        sensor_status   TEXT
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
    // Apptive security keys that opened a door (`apptive.single_use`): only their SHA-256,
    // until they expire (`apptive.key_validity` after the scan). Kept across restarts so a
    // restart does not reopen a replay window.
    r#"
    CREATE TABLE qr_used_keys (
        key_sha256 TEXT PRIMARY KEY,
        reader     TEXT NOT NULL,
        used_at    TEXT NOT NULL,
        expires_ms INTEGER NOT NULL
    );
    CREATE INDEX qr_used_keys_expiry ON qr_used_keys(expires_ms);
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
