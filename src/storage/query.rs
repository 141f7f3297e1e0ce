//! The read side of the history for the REST APIs: access events (filtered pages with a
//! total, a keyset cursor for long histories, an export that streams, counts for metrics) and
//! camera alarms (a cursor listing; dismissing one or all, which never deletes an event).
//!
//! Plain functions on a connection. From async code: `store.run(move |s| s.with_conn(|c|
//! query::access_page(c, &filter, page, limit)))`. An export runs on its own read-only
//! connection (`Store::open_readonly(store.path())`): it may last as long as the client takes
//! to read it, and must not hold the writer's lock meanwhile (WAL gives it a snapshot).
//!
//! Every statement is fixed text: filters only add constant fragments, their values are bound.

use crate::error::{Error, ErrorKind, Result};
use crate::model::EventKind;
use rusqlite::types::Value;
use rusqlite::{Connection, params, params_from_iter};
use serde::Serialize;

/// Which events are access events: a grant, a denial, or a grant whose door was then not
/// opened (Net2 event type 61, classified `other`; the API's `timeout`). Written exactly as in
/// the partial indexes of migration 7: SQLite uses a partial index only for a query whose
/// WHERE has the index's condition as one of its AND terms.
const ACCESS: &str =
    "(kind IN ('access_granted', 'access_denied') OR (kind = 'other' AND code = 61))";

/// The largest page or batch a query returns; a larger `limit` is taken as this.
pub const MAX_LIMIT: u32 = 1000;

/// The access API's `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Granted,
    Denied,
    /// Granted, but the door was not opened (Net2 type 61).
    Timeout,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Granted => "granted",
            Action::Denied => "denied",
            Action::Timeout => "timeout",
        }
    }

    /// The fragment that selects it among access events (`ACCESS` is always there too, so
    /// `other` means type 61 here — and an index with `kind` answers it without reading
    /// rows). `by_kind: false` keeps SQLite from driving the query by the kind index (the
    /// unary `+`): with a user or a door, theirs is narrower and holds `kind` too.
    fn sql(self, by_kind: bool) -> &'static str {
        match (self, by_kind) {
            (Action::Granted, true) => " AND kind = 'access_granted'",
            (Action::Denied, true) => " AND kind = 'access_denied'",
            (Action::Timeout, true) => " AND kind = 'other'",
            (Action::Granted, false) => " AND +kind = 'access_granted'",
            (Action::Denied, false) => " AND +kind = 'access_denied'",
            (Action::Timeout, false) => " AND +kind = 'other'",
        }
    }

    /// The stored kind of its events.
    fn kind(self) -> &'static str {
        match self {
            Action::Granted => "access_granted",
            Action::Denied => "access_denied",
            Action::Timeout => "other",
        }
    }

    /// The action of a stored access event's kind.
    fn of_kind(kind: &str) -> Action {
        match kind {
            "access_granted" => Action::Granted,
            "access_denied" => Action::Denied,
            _ => Action::Timeout,
        }
    }
}

impl std::str::FromStr for Action {
    type Err = Error;

    fn from_str(s: &str) -> Result<Action> {
        match s {
            "granted" => Ok(Action::Granted),
            "denied" => Ok(Action::Denied),
            "timeout" => Ok(Action::Timeout),
            _ => Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("unknown action {s:?} (granted, denied or timeout)"),
            )),
        }
    }
}

/// Which access events: every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessFilter {
    pub action: Option<Action>,
    pub user_id: Option<i64>,
    pub door_id: Option<i64>,
    /// From this time on (unix ms, inclusive).
    pub start_ms: Option<i64>,
    /// Up to this time (unix ms, inclusive).
    pub end_ms: Option<i64>,
}

impl AccessFilter {
    /// The WHERE clause (constant text) and its values, in order. Which index drives it is
    /// fixed, not left to the planner (which has no statistics): the user's, else the door's,
    /// else the kind's, else the time index; the others' terms are checked along the way.
    fn clause(&self) -> (String, Vec<Value>) {
        let mut sql = String::from(ACCESS);
        let mut values = Vec::new();
        if let Some(a) = self.action {
            sql.push_str(a.sql(self.user_id.is_none() && self.door_id.is_none()));
        }
        if let Some(u) = self.user_id {
            sql.push_str(" AND user_id = ?");
            values.push(Value::Integer(u));
        }
        if let Some(d) = self.door_id {
            sql.push_str(match self.user_id {
                None => " AND door_id = ?",
                Some(_) => " AND +door_id = ?",
            });
            values.push(Value::Integer(d));
        }
        if let Some(t) = self.start_ms {
            sql.push_str(" AND time_ms >= ?");
            values.push(Value::Integer(t));
        }
        if let Some(t) = self.end_ms {
            sql.push_str(" AND time_ms <= ?");
            values.push(Value::Integer(t));
        }
        (sql, values)
    }

    /// How many events match, counted: from the kept totals when only the action is set, else
    /// over the range of the filter's index.
    fn total(&self, conn: &Connection) -> Result<u64> {
        let n: i64 = match self {
            AccessFilter {
                action,
                user_id: None,
                door_id: None,
                start_ms: None,
                end_ms: None,
            } => conn
                .prepare_cached(
                    "SELECT coalesce(sum(n), 0) FROM access_totals WHERE ?1 IS NULL OR kind = ?1",
                )?
                .query_row([action.map(Action::kind)], |r| r.get(0))?,
            _ => {
                let (clause, values) = self.clause();
                conn.prepare_cached(&format!("SELECT count(*) FROM events WHERE {clause}"))?
                    .query_row(params_from_iter(&values), |r| r.get(0))?
            }
        };
        Ok(n.max(0) as u64)
    }
}

/// A position in a newest-first listing: the last row shown. The next page starts after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub time_ms: i64,
    pub seq: i64,
}

impl Cursor {
    /// The cursor as a client sees it: `<time_ms>.<seq>`, opaque to them.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.time_ms, self.seq)
    }

    /// Read back what [`Cursor::encode`] gave; anything else is an `InvalidArgument` error.
    pub fn decode(s: &str) -> Result<Cursor> {
        let bad = || {
            let shown: String = s.chars().take(40).collect();
            Error::new(
                ErrorKind::InvalidArgument,
                format!("invalid cursor {shown:?}"),
            )
        };
        let (t, q) = s.split_once('.').ok_or_else(bad)?;
        let c = Cursor {
            time_ms: t.parse().map_err(|_| bad())?,
            seq: q.parse().map_err(|_| bad())?,
        };
        // One cursor, one spelling: `+7`, `007` or `-0` parse, but were not handed out (nor
        // was a negative seq).
        if c.encode() != s || c.seq < 0 {
            return Err(bad());
        }
        Ok(c)
    }

    /// The keyset condition "older than the cursor" in (time_ms, seq) order; the first term
    /// alone bounds the index range.
    fn push_before(&self, sql: &mut String, values: &mut Vec<Value>) {
        sql.push_str(" AND time_ms <= ? AND (time_ms < ? OR seq < ?)");
        values.extend([
            Value::Integer(self.time_ms),
            Value::Integer(self.time_ms),
            Value::Integer(self.seq),
        ]);
    }
}

/// An access event as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccessRow {
    pub seq: i64,
    /// The event id (`net2:1545681`).
    pub id: String,
    /// As stored: RFC 3339 with the Net2 server's offset.
    pub time: String,
    pub time_ms: i64,
    pub action: Action,
    pub kind: String,
    /// The Net2 event type.
    pub code: Option<i64>,
    pub door_id: Option<i64>,
    pub door_name: Option<String>,
    pub user_id: Option<i64>,
    pub user_name: Option<String>,
    /// How a granted user presented themselves (`card`, `pin`, …).
    pub token: Option<String>,
    /// Why access was denied (`invalid_token`, `not_permitted`, …).
    pub reason: Option<String>,
    /// `live`, `rest` or `derived`.
    pub via: String,
    pub source: String,
    /// Net2's own (localised) description.
    pub description: Option<String>,
}

impl AccessRow {
    /// The cursor that continues a listing after this row.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            time_ms: self.time_ms,
            seq: self.seq,
        }
    }
}

const ACCESS_COLS: &str = "seq, id, time, time_ms, kind, code, door_id, door_name, user_id, user_name, \
     json_extract(detail, '$.token'), json_extract(detail, '$.reason'), via, source, description";

fn access_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AccessRow> {
    let kind: String = r.get(4)?;
    Ok(AccessRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        time: r.get(2)?,
        time_ms: r.get(3)?,
        action: Action::of_kind(&kind),
        kind,
        code: r.get(5)?,
        door_id: r.get(6)?,
        door_name: r.get(7)?,
        user_id: r.get(8)?,
        user_name: r.get(9)?,
        token: r.get(10)?,
        reason: r.get(11)?,
        via: r.get(12)?,
        source: r.get(13)?,
        description: r.get(14)?,
    })
}

/// Page `page` (from 1; 0 is taken as 1) of `limit` access events, newest first, and how many
/// events match in all.
pub fn access_page(
    conn: &Connection,
    filter: &AccessFilter,
    page: u32,
    limit: u32,
) -> Result<(Vec<AccessRow>, u64)> {
    let limit = limit.min(MAX_LIMIT);
    let offset = i64::from(page.max(1) - 1) * i64::from(limit);
    let total = filter.total(conn)?;
    if limit == 0 || offset as u64 >= total {
        return Ok((Vec::new(), total));
    }
    let (clause, mut values) = filter.clause();
    values.extend([Value::Integer(limit.into()), Value::Integer(offset)]);
    let mut st = conn.prepare_cached(&format!(
        "SELECT {ACCESS_COLS} FROM events WHERE {clause} ORDER BY time_ms DESC, seq DESC LIMIT ? OFFSET ?"
    ))?;
    let rows = st
        .query_map(params_from_iter(&values), access_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok((rows, total))
}

/// Up to `limit` access events older than `cursor` (the newest without one), newest first.
/// The next call takes the last row's [`AccessRow::cursor`]; fewer than `limit` rows means
/// the end. Costs the same on page 1 and page 10,000, and shows each event once even while
/// new ones arrive.
pub fn access_after(
    conn: &Connection,
    filter: &AccessFilter,
    cursor: Option<Cursor>,
    limit: u32,
) -> Result<Vec<AccessRow>> {
    let (mut clause, mut values) = filter.clause();
    if let Some(c) = cursor {
        c.push_before(&mut clause, &mut values);
    }
    values.push(Value::Integer(limit.min(MAX_LIMIT).into()));
    let mut st = conn.prepare_cached(&format!(
        "SELECT {ACCESS_COLS} FROM events WHERE {clause} ORDER BY time_ms DESC, seq DESC LIMIT ?"
    ))?;
    let rows = st
        .query_map(params_from_iter(&values), access_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Every matching access event, oldest first, handed to `each` one at a time as it is read
/// (one statement, nothing collected: constant memory however long the history). An error
/// from `each` stops the export and is returned. Returns how many rows were handed over.
pub fn access_export(
    conn: &Connection,
    filter: &AccessFilter,
    mut each: impl FnMut(&AccessRow) -> Result<()>,
) -> Result<u64> {
    let (clause, values) = filter.clause();
    let mut st = conn.prepare(&format!(
        "SELECT {ACCESS_COLS} FROM events WHERE {clause} ORDER BY time_ms, seq"
    ))?;
    let mut rows = st.query(params_from_iter(&values))?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        each(&access_row(r)?)?;
        n += 1;
    }
    Ok(n)
}

/// The first line of a CSV export (CRLF-terminated, as every line).
pub const CSV_HEADER: &str = "seq,id,time,action,kind,code,door_id,door_name,user_id,user_name,token,reason,via,source,description\r\n";

/// Append `row` to `out` as one CSV line (RFC 4180: fields with a comma, quote or line break
/// quoted, quotes doubled; CRLF). A text field that a spreadsheet would run as a formula
/// (starting with `=`, `+`, `-`, `@`, tab or CR) gets a `'` in front: a user or door name is
/// typed by whoever administers Net2, and the export is opened by someone else.
pub fn csv_line(row: &AccessRow, out: &mut String) {
    use std::fmt::Write;
    let _ = write!(out, "{},", row.seq);
    csv_text(out, &row.id);
    out.push(',');
    csv_text(out, &row.time);
    out.push(',');
    out.push_str(row.action.as_str());
    out.push(',');
    csv_text(out, &row.kind);
    out.push(',');
    csv_num(out, row.code);
    csv_num(out, row.door_id);
    csv_text(out, row.door_name.as_deref().unwrap_or(""));
    out.push(',');
    csv_num(out, row.user_id);
    csv_text(out, row.user_name.as_deref().unwrap_or(""));
    out.push(',');
    csv_text(out, row.token.as_deref().unwrap_or(""));
    out.push(',');
    csv_text(out, row.reason.as_deref().unwrap_or(""));
    out.push(',');
    csv_text(out, &row.via);
    out.push(',');
    csv_text(out, &row.source);
    out.push(',');
    csv_text(out, row.description.as_deref().unwrap_or(""));
    out.push_str("\r\n");
}

/// A number and its comma (numbers are ours: never a formula, never quoted).
fn csv_num(out: &mut String, n: Option<i64>) {
    use std::fmt::Write;
    if let Some(n) = n {
        let _ = write!(out, "{n}");
    }
    out.push(',');
}

fn csv_text(out: &mut String, s: &str) {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = s.contains([',', '"', '\r', '\n']);
    if quote {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    if quote {
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// Access events since a time, by action (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AccessCounts {
    pub total: u64,
    pub granted: u64,
    pub denied: u64,
    pub timeout: u64,
}

/// How many access events there were from `since_ms` (unix ms, inclusive) on. Three range
/// counts on the kind index, none of which reads a row.
pub fn access_counts(conn: &Connection, since_ms: i64) -> Result<AccessCounts> {
    let count = |a: Action| -> Result<u64> {
        let n: i64 = conn
            .prepare_cached(&format!(
                "SELECT count(*) FROM events WHERE {ACCESS}{} AND time_ms >= ?",
                a.sql(true)
            ))?
            .query_row([since_ms], |r| r.get(0))?;
        Ok(n as u64)
    };
    let granted = count(Action::Granted)?;
    let denied = count(Action::Denied)?;
    let timeout = count(Action::Timeout)?;
    Ok(AccessCounts {
        total: granted + denied + timeout,
        granted,
        denied,
        timeout,
    })
}

/// The prefix of a camera's events' `source` (`camera/<id>`).
const CAMERA_SOURCE: &str = "camera/";

/// Which camera alarms: every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlarmFilter {
    /// The camera's configured id (`garage`).
    pub device: Option<String>,
    /// The alert type (`vmd`, `linedetection`; compared in lower case, as stored).
    pub event_type: Option<String>,
    pub channel: Option<u32>,
}

/// A camera alarm: a stored alert that started (`active`), not dismissed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlarmRow {
    /// The event's `seq`: the alarm's id (for [`alarm_delete`]).
    pub seq: i64,
    /// The event id.
    pub id: String,
    /// The camera's configured id.
    pub device: String,
    /// When gatehouse received it (RFC 3339, local offset).
    pub time: String,
    pub time_ms: i64,
    pub event_type: String,
    pub channel: Option<u32>,
    pub io_port: Option<u32>,
    pub targets: Vec<String>,
    /// Retransmitted by the camera after a reconnect: it happened while the stream was down.
    pub backlog: bool,
    /// What the camera's clock said (often wrong).
    pub device_time: Option<String>,
    /// `vmd started`.
    pub description: Option<String>,
}

impl AlarmRow {
    /// The cursor that continues a listing after this row.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            time_ms: self.time_ms,
            seq: self.seq,
        }
    }
}

fn alarm_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlarmRow> {
    let source: String = r.get(2)?;
    let detail: String = r.get(6)?;
    let mut row = AlarmRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        device: source
            .strip_prefix(CAMERA_SOURCE)
            .unwrap_or(&source)
            .to_string(),
        time: r.get(3)?,
        time_ms: r.get(4)?,
        event_type: r.get(7)?,
        channel: r.get(8)?,
        io_port: None,
        targets: Vec::new(),
        backlog: false,
        device_time: None,
        description: r.get(5)?,
    };
    if let Ok(EventKind::CameraAlert {
        io_port,
        targets,
        backlog,
        device_time,
        ..
    }) = serde_json::from_str(&detail)
    {
        row.io_port = io_port;
        row.targets = targets;
        row.backlog = backlog;
        row.device_time = device_time;
    }
    Ok(row)
}

/// Up to `limit` alarms older than `cursor` (the newest without one), newest first, and
/// whether there are more after them (continue from the last row's [`AlarmRow::cursor`]).
pub fn alarms_page(
    conn: &Connection,
    filter: &AlarmFilter,
    cursor: Option<Cursor>,
    limit: u32,
) -> Result<(Vec<AlarmRow>, bool)> {
    let limit = limit.min(MAX_LIMIT);
    let (sql, values) = alarms_sql(filter, cursor, limit);
    let mut st = conn.prepare_cached(&sql)?;
    let mut rows = st
        .query_map(params_from_iter(&values), alarm_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    Ok((rows, more))
}

/// The listing's statement (constant text) and its values: one row more than `limit`, to
/// tell whether there are more.
fn alarms_sql(filter: &AlarmFilter, cursor: Option<Cursor>, limit: u32) -> (String, Vec<Value>) {
    let mut clause = String::from("a.dismissed_ms IS NULL");
    let mut values = Vec::new();
    if let Some(d) = &filter.device {
        clause.push_str(" AND a.source = ?");
        values.push(Value::Text(format!("{CAMERA_SOURCE}{d}")));
    }
    if let Some(t) = &filter.event_type {
        clause.push_str(" AND a.event_type = ?");
        values.push(Value::Text(t.to_ascii_lowercase()));
    }
    if let Some(c) = filter.channel {
        clause.push_str(" AND a.channel = ?");
        values.push(Value::Integer(c.into()));
    }
    if let Some(c) = cursor {
        clause.push_str(" AND a.time_ms <= ? AND (a.time_ms < ? OR a.seq < ?)");
        values.extend([
            Value::Integer(c.time_ms),
            Value::Integer(c.time_ms),
            Value::Integer(c.seq),
        ]);
    }
    values.push(Value::Integer(i64::from(limit) + 1));
    let sql = format!(
        "SELECT e.seq, e.id, e.source, e.time, e.time_ms, e.description, e.detail, a.event_type, a.channel
         FROM alarms a JOIN events e ON e.seq = a.seq
         WHERE {clause} ORDER BY a.time_ms DESC, a.seq DESC LIMIT ?"
    );
    (sql, values)
}

/// Dismiss one alarm: it leaves the listing, its event stays. `false` when there is no such
/// alarm or it was dismissed already.
pub fn alarm_delete(conn: &Connection, seq: i64) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE alarms SET dismissed_ms = ?2 WHERE seq = ?1 AND dismissed_ms IS NULL",
        )?
        .execute(params![seq, chrono::Utc::now().timestamp_millis()])?;
    Ok(n == 1)
}

/// Dismiss every alarm (of one camera, with `device`); returns how many were dismissed.
pub fn alarm_delete_all(conn: &Connection, device: Option<&str>) -> Result<u64> {
    let now = chrono::Utc::now().timestamp_millis();
    let n = match device {
        Some(d) => conn
            .prepare_cached(
                "UPDATE alarms SET dismissed_ms = ?1 WHERE dismissed_ms IS NULL AND source = ?2",
            )?
            .execute(params![now, format!("{CAMERA_SOURCE}{d}")])?,
        None => conn
            .prepare_cached("UPDATE alarms SET dismissed_ms = ?1 WHERE dismissed_ms IS NULL")?
            .execute([now])?,
    };
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DoorRef, Event, TokenType, UserRef, Via};
    use crate::storage::{Store, Write};

    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn at(ms: i64) -> chrono::DateTime<chrono::FixedOffset> {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap())
    }

    /// A Net2 event as the source builds it.
    fn net2(
        id: &str,
        ms: i64,
        kind: EventKind,
        code: i64,
        user: Option<i64>,
        door: Option<u64>,
    ) -> Write {
        Write::Event(Box::new(Event {
            id: id.into(),
            source: "net2".into(),
            source_id: None,
            fingerprint: id.into(),
            time: at(ms),
            received: chrono::Utc::now(),
            via: Via::Rest,
            door: door.map(|d| DoorRef {
                id: d,
                name: Some(format!("Door {d}")),
            }),
            user: user.map(|u| UserRef {
                id: u,
                name: Some(format!("User {u}")),
            }),
            kind,
            code: Some(code),
            description: Some("desc".into()),
            raw: "{}".into(),
        }))
    }

    fn camera(id: &str, device: &str, ms: i64, event_type: &str, active: bool) -> Write {
        Write::Event(Box::new(Event {
            id: id.into(),
            source: format!("camera/{device}"),
            source_id: None,
            fingerprint: id.into(),
            time: at(ms),
            received: chrono::Utc::now(),
            via: Via::Live,
            door: None,
            user: None,
            kind: EventKind::CameraAlert {
                event_type: event_type.into(),
                active,
                channel: Some(1),
                io_port: None,
                targets: vec!["human".into()],
                backlog: false,
                device_time: Some("2026-01-01T00:00:00+08:00".into()),
            },
            code: None,
            description: Some(format!("{event_type} started")),
            raw: "<EventNotificationAlert/>".into(),
        }))
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("q.db")).unwrap();
        (dir, s)
    }

    /// What the model says one stored event is, to compute the expected answers apart from SQL.
    #[derive(Clone, Copy)]
    struct Model {
        seq: i64,
        ms: i64,
        action: Option<Action>,
        user: Option<i64>,
        door: Option<i64>,
    }

    impl Model {
        fn matches(&self, f: &AccessFilter) -> bool {
            self.action.is_some()
                && f.action.is_none_or(|a| Some(a) == self.action)
                && f.user_id.is_none_or(|u| Some(u) == self.user)
                && f.door_id.is_none_or(|d| Some(d) == self.door)
                && f.start_ms.is_none_or(|t| self.ms >= t)
                && f.end_ms.is_none_or(|t| self.ms <= t)
        }
    }

    /// A mixed history: every kind that is an access event and the near misses that are not
    /// (type 62, door events with a user and door, camera alerts), several per second, written
    /// out of time order (as a backfill does), so `seq` order is not time order.
    fn history(s: &Store) -> Vec<Model> {
        let mut writes = Vec::new();
        let mut shape = Vec::new();
        for i in 0..400i64 {
            // Times go back and forth: i*7 mod 97 seconds, three events per second on average.
            let ms = T0 + ((i * 7) % 97) * 1000 + (i % 3) * 10;
            let user = Some(i % 5);
            let door = Some((i % 4) as u64);
            let (w, action) = match i % 7 {
                0 | 1 => (
                    net2(
                        &format!("g{i}"),
                        ms,
                        EventKind::AccessGranted {
                            token: TokenType::Card,
                        },
                        20,
                        user,
                        door,
                    ),
                    Some(Action::Granted),
                ),
                2 => (
                    net2(
                        &format!("d{i}"),
                        ms,
                        EventKind::AccessDenied {
                            reason: "invalid_token".into(),
                        },
                        23,
                        user,
                        door,
                    ),
                    Some(Action::Denied),
                ),
                3 => (
                    net2(
                        &format!("t{i}"),
                        ms,
                        EventKind::Other { code: 61 },
                        61,
                        user,
                        door,
                    ),
                    Some(Action::Timeout),
                ),
                4 => (
                    net2(
                        &format!("o{i}"),
                        ms,
                        EventKind::Other { code: 62 },
                        62,
                        user,
                        door,
                    ),
                    None,
                ),
                5 => (
                    net2(&format!("p{i}"), ms, EventKind::DoorOpened, 28, user, door),
                    None,
                ),
                _ => (
                    camera(&format!("c{i}"), "garage", ms, "vmd", i % 2 == 0),
                    None,
                ),
            };
            writes.push(w);
            let is_net2 = i % 7 != 6;
            shape.push((
                ms,
                action,
                user.filter(|_| is_net2),
                door.filter(|_| is_net2).map(|d| d as i64),
            ));
        }
        s.write_batch(&writes).unwrap();
        // Seqs are handed out in write order from 1.
        shape
            .into_iter()
            .enumerate()
            .map(|(k, (ms, action, user, door))| Model {
                seq: k as i64 + 1,
                ms,
                action,
                user,
                door,
            })
            .collect()
    }

    fn newest_first(model: &[Model], f: &AccessFilter) -> Vec<i64> {
        let mut m: Vec<&Model> = model.iter().filter(|m| m.matches(f)).collect();
        m.sort_by_key(|m| std::cmp::Reverse((m.ms, m.seq)));
        m.iter().map(|m| m.seq).collect()
    }

    fn filters() -> Vec<AccessFilter> {
        let mut v = vec![AccessFilter::default()];
        for a in [Action::Granted, Action::Denied, Action::Timeout] {
            v.push(AccessFilter {
                action: Some(a),
                ..Default::default()
            });
        }
        v.push(AccessFilter {
            user_id: Some(3),
            ..Default::default()
        });
        v.push(AccessFilter {
            door_id: Some(2),
            ..Default::default()
        });
        v.push(AccessFilter {
            user_id: Some(99),
            ..Default::default()
        });
        v.push(AccessFilter {
            start_ms: Some(T0 + 20_000),
            end_ms: Some(T0 + 40_010),
            ..Default::default()
        });
        v.push(AccessFilter {
            action: Some(Action::Denied),
            user_id: Some(1),
            door_id: Some(1),
            start_ms: Some(T0 + 5_000),
            end_ms: None,
        });
        v.push(AccessFilter {
            door_id: Some(0),
            end_ms: Some(T0 + 50_000),
            ..Default::default()
        });
        v
    }

    #[test]
    fn each_filter_selects_exactly_its_access_events() {
        let (_d, s) = store();
        let model = history(&s);
        for f in filters() {
            let want = newest_first(&model, &f);
            let (rows, total) = s.with_conn(|c| access_page(c, &f, 1, MAX_LIMIT)).unwrap();
            assert_eq!(total, want.len() as u64, "{f:?}");
            assert_eq!(
                rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
                want,
                "{f:?}"
            );
            for r in &rows {
                assert_eq!(r.action, model[r.seq as usize - 1].action.unwrap());
                assert_eq!(
                    r.user_name.as_deref(),
                    Some(format!("User {}", r.user_id.unwrap()).as_str())
                );
                assert!(r.time.ends_with("+01:00"), "stored text: {}", r.time);
            }
            let mut exported = Vec::new();
            let n = s
                .with_conn(|c| {
                    access_export(c, &f, |r| {
                        exported.push(r.seq);
                        Ok(())
                    })
                })
                .unwrap();
            assert_eq!(n, want.len() as u64);
            exported.reverse();
            assert_eq!(
                exported, want,
                "export of {f:?} is the same rows, oldest first"
            );
        }
        let (rows, _) = s
            .with_conn(|c| access_page(c, &AccessFilter::default(), 1, 50))
            .unwrap();
        let g = rows.iter().find(|r| r.action == Action::Granted).unwrap();
        assert_eq!(
            (g.token.as_deref(), g.reason.as_deref(), g.code),
            (Some("card"), None, Some(20))
        );
        let d = rows.iter().find(|r| r.action == Action::Denied).unwrap();
        assert_eq!(
            (d.token.as_deref(), d.reason.as_deref()),
            (None, Some("invalid_token"))
        );
        let t = rows.iter().find(|r| r.action == Action::Timeout).unwrap();
        assert_eq!((t.kind.as_str(), t.code), ("other", Some(61)));
    }

    #[test]
    fn pages_cover_the_matches_once_with_the_total_on_each() {
        let (_d, s) = store();
        let model = history(&s);
        let f = AccessFilter {
            door_id: Some(2),
            ..Default::default()
        };
        let want = newest_first(&model, &f);
        assert!(
            want.len() > 30 && !want.len().is_multiple_of(10),
            "{}",
            want.len()
        );
        let mut got = Vec::new();
        for page in 1.. {
            let (rows, total) = s.with_conn(|c| access_page(c, &f, page, 10)).unwrap();
            assert_eq!(total, want.len() as u64);
            let full = (page as usize) * 10 <= want.len();
            let expected = if full {
                10
            } else {
                want.len().saturating_sub((page as usize - 1) * 10)
            };
            assert_eq!(rows.len(), expected, "page {page}");
            if rows.is_empty() {
                break;
            }
            got.extend(rows.iter().map(|r| r.seq));
        }
        assert_eq!(got, want);
        let first = s.with_conn(|c| access_page(c, &f, 1, 10)).unwrap();
        assert_eq!(
            s.with_conn(|c| access_page(c, &f, 0, 10)).unwrap(),
            first,
            "page 0 is page 1"
        );
        let (rows, total) = s.with_conn(|c| access_page(c, &f, 1, 0)).unwrap();
        assert_eq!((rows.len(), total), (0, want.len() as u64));
        let (rows, _) = s.with_conn(|c| access_page(c, &f, 1, u32::MAX)).unwrap();
        assert_eq!(
            rows.len(),
            want.len(),
            "a huge limit is capped, not an error"
        );
        let (rows, total) = s
            .with_conn(|c| access_page(c, &f, u32::MAX, MAX_LIMIT))
            .unwrap();
        assert_eq!((rows.len(), total), (0, want.len() as u64));
    }

    #[test]
    fn a_cursor_walk_yields_every_row_once_through_a_burst_in_one_millisecond() {
        let (_d, s) = store();
        let model = history(&s);
        // 250 more grants in the same millisecond, written in three batches around others.
        let burst = T0 + 50_000;
        let mut model = model;
        for chunk in 0..3 {
            let mut w = Vec::new();
            for k in 0..84 {
                let i = chunk * 84 + k;
                if i >= 250 {
                    break;
                }
                w.push(net2(
                    &format!("b{i}"),
                    burst,
                    EventKind::AccessGranted {
                        token: TokenType::Pin,
                    },
                    26,
                    Some(7),
                    Some(9),
                ));
                model.push(Model {
                    seq: model.len() as i64 + 1,
                    ms: burst,
                    action: Some(Action::Granted),
                    user: Some(7),
                    door: Some(9),
                });
            }
            w.push(net2(
                &format!("x{chunk}"),
                burst,
                EventKind::DoorOpened,
                28,
                None,
                Some(9),
            ));
            model.push(Model {
                seq: model.len() as i64 + 1,
                ms: burst,
                action: None,
                user: None,
                door: Some(9),
            });
            s.write_batch(&w).unwrap();
        }
        for f in filters().into_iter().chain([AccessFilter {
            door_id: Some(9),
            ..Default::default()
        }]) {
            for limit in [1, 7, 50] {
                let want = newest_first(&model, &f);
                let mut got = Vec::new();
                let mut cursor = None;
                let mut added = false;
                loop {
                    let rows = s.with_conn(|c| access_after(c, &f, cursor, limit)).unwrap();
                    got.extend(rows.iter().map(|r| r.seq));
                    if rows.len() < limit as usize {
                        break;
                    }
                    // Through its text form, as a client hands it back.
                    cursor = Some(Cursor::decode(&rows.last().unwrap().cursor().encode()).unwrap());
                    if got.len() >= 30 && !added {
                        added = true;
                        // New events arriving meanwhile are newer than any: not in this walk.
                        let n = model.len();
                        let newest = T0 + 1_000_000 + n as i64;
                        s.write_batch(&[net2(
                            &format!("new{n}-{limit}"),
                            newest,
                            EventKind::AccessGranted {
                                token: TokenType::Card,
                            },
                            20,
                            Some(7),
                            Some(9),
                        )])
                        .unwrap();
                        model.push(Model {
                            seq: n as i64 + 1,
                            ms: newest,
                            action: Some(Action::Granted),
                            user: Some(7),
                            door: Some(9),
                        });
                    }
                }
                let unique: std::collections::HashSet<_> = got.iter().collect();
                assert_eq!(
                    unique.len(),
                    got.len(),
                    "no row twice ({f:?}, limit {limit})"
                );
                assert_eq!(got, want, "{f:?}, limit {limit}");
            }
        }
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_an_error() {
        for c in [
            Cursor {
                time_ms: T0,
                seq: 1,
            },
            Cursor { time_ms: 0, seq: 0 },
            Cursor {
                time_ms: -5,
                seq: i64::MAX,
            },
        ] {
            assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        }
        for bad in [
            "",
            ".",
            "1.",
            ".1",
            "12",
            "a.b",
            "1.2.3",
            "+1.2",
            "1.+2",
            "1.-2",
            "--1.2",
            " 1.2",
            "1.2 ",
            "1_000.2",
            "0x10.2",
            "99999999999999999999.1",
            "1.99999999999999999999",
            "１.2",
            "1,2",
            "null",
            "1.2\0",
            "007.2",
            "-0.2",
            "1.02",
        ] {
            let e = Cursor::decode(bad).expect_err(bad);
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad:?}");
        }
        let long = "x".repeat(10_000);
        assert!(
            Cursor::decode(&long).unwrap_err().to_string().len() < 100,
            "the message does not echo it all"
        );
    }

    fn row(user_name: &str, door_name: &str, description: &str) -> AccessRow {
        AccessRow {
            seq: 12,
            id: "net2:1545681".into(),
            time: "2026-01-05T06:00:01.017+01:00".into(),
            time_ms: T0,
            action: Action::Granted,
            kind: "access_granted".into(),
            code: Some(26),
            door_id: Some(7242929),
            door_name: Some(door_name.into()),
            user_id: Some(8),
            user_name: Some(user_name.into()),
            token: Some("pin".into()),
            reason: None,
            via: "rest".into(),
            source: "net2".into(),
            description: Some(description.into()),
        }
    }

    #[test]
    fn csv_lines_quote_per_rfc_4180_and_defuse_formulas() {
        let mut out = String::from(CSV_HEADER);
        csv_line(
            &row("Mette Kragh Holm", "Garage Port", "Adgang godkendt"),
            &mut out,
        );
        csv_line(
            &row("=HYPERLINK(\"http://x\",\"y\")", "@SUM(A1)", "+1"),
            &mut out,
        );
        csv_line(&row("-2+3", "Door, \"main\"", "line1\r\nline2"), &mut out);
        csv_line(&row("\tx", "a-b", ""), &mut out);
        let lines: Vec<&str> = out.split_inclusive("\r\n").collect();
        assert_eq!(lines[0].matches(',').count(), 14);
        assert_eq!(
            lines[1],
            "12,net2:1545681,2026-01-05T06:00:01.017+01:00,granted,access_granted,26,7242929,Garage Port,8,Mette Kragh Holm,pin,,rest,net2,Adgang godkendt\r\n"
        );
        assert_eq!(
            lines[2],
            "12,net2:1545681,2026-01-05T06:00:01.017+01:00,granted,access_granted,26,7242929,'@SUM(A1),8,\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",pin,,rest,net2,'+1\r\n"
        );
        // The quoted line break is inside a field, so this record spans two "lines".
        assert_eq!(
            format!("{}{}", lines[3], lines[4]),
            "12,net2:1545681,2026-01-05T06:00:01.017+01:00,granted,access_granted,26,7242929,\"Door, \"\"main\"\"\",8,'-2+3,pin,,rest,net2,\"line1\r\nline2\"\r\n"
        );
        assert_eq!(
            lines[5],
            "12,net2:1545681,2026-01-05T06:00:01.017+01:00,granted,access_granted,26,7242929,a-b,8,'\tx,pin,,rest,net2,\r\n"
        );
    }

    /// Kept totals (what an unfiltered or action-only page reports) against a count.
    fn assert_totals_are_counts(s: &Store) {
        for action in [
            None,
            Some(Action::Granted),
            Some(Action::Denied),
            Some(Action::Timeout),
        ] {
            let f = AccessFilter {
                action,
                ..Default::default()
            };
            let (clause, values) = f.clause();
            let counted: i64 = s
                .with_conn(|c| {
                    Ok(c.query_row(
                        &format!("SELECT count(*) FROM events WHERE {clause}"),
                        params_from_iter(&values),
                        |r| r.get(0),
                    )?)
                })
                .unwrap();
            let (_, total) = s.with_conn(|c| access_page(c, &f, 1, 1)).unwrap();
            assert_eq!(total, counted as u64, "{action:?}");
        }
    }

    #[test]
    fn kept_totals_follow_writes_duplicates_prunes_and_reclassification() {
        let (_d, s) = store();
        history(&s);
        assert_totals_are_counts(&s);
        let r = s
            .write_batch(&[
                net2(
                    "g0",
                    T0,
                    EventKind::AccessGranted {
                        token: TokenType::Card,
                    },
                    20,
                    Some(1),
                    Some(1),
                ),
                net2(
                    "t3",
                    T0,
                    EventKind::Other { code: 61 },
                    61,
                    Some(1),
                    Some(1),
                ),
                net2(
                    "new",
                    T0,
                    EventKind::Other { code: 61 },
                    61,
                    Some(1),
                    Some(1),
                ),
            ])
            .unwrap();
        assert_eq!((r.inserted, r.duplicates), (1, 2));
        assert_totals_are_counts(&s);
        assert!(s.prune(T0 + 30_000).unwrap() > 50);
        assert_totals_are_counts(&s);
        s.with_conn(|c| {
            c.execute("UPDATE events SET kind = 'access_denied' WHERE kind = 'door_opened'", [])?;
            c.execute("UPDATE events SET code = 62 WHERE seq IN (SELECT seq FROM events WHERE code = 61 LIMIT 5)", [])?;
            c.execute("UPDATE events SET code = 61 WHERE seq IN (SELECT seq FROM events WHERE code = 62 LIMIT 3)", [])?;
            Ok(())
        })
        .unwrap();
        assert_totals_are_counts(&s);
    }

    #[test]
    fn an_export_stops_at_the_first_error_of_its_consumer() {
        let (_d, s) = store();
        history(&s);
        let mut seen = 0;
        let e = s
            .with_conn(|c| {
                access_export(c, &AccessFilter::default(), |_| {
                    seen += 1;
                    if seen == 3 {
                        Err(Error::new(ErrorKind::Unavailable, "client went away"))
                    } else {
                        Ok(())
                    }
                })
            })
            .unwrap_err();
        assert_eq!((seen, e.kind()), (3, ErrorKind::Unavailable));
    }

    #[test]
    fn counts_by_action_since_a_time() {
        let (_d, s) = store();
        let model = history(&s);
        let since = T0 + 30_000;
        let n = |a: Action| {
            model
                .iter()
                .filter(|m| m.action == Some(a) && m.ms >= since)
                .count() as u64
        };
        let c = s.with_conn(|c| access_counts(c, since)).unwrap();
        assert_eq!(
            c,
            AccessCounts {
                total: n(Action::Granted) + n(Action::Denied) + n(Action::Timeout),
                granted: n(Action::Granted),
                denied: n(Action::Denied),
                timeout: n(Action::Timeout),
            }
        );
        assert!(c.granted > 0 && c.denied > 0 && c.timeout > 0);
    }

    /// The plan of every query shape: driven by one of migration 7's indexes (never a scan of
    /// `events`, never a sort).
    #[test]
    fn every_query_shape_uses_its_index() {
        let (_d, s) = store();
        history(&s);
        let plan = |sql: &str, values: &[Value]| -> String {
            s.with_conn(|c| {
                let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let rows = st.query_map(params_from_iter(values), |r| r.get::<_, String>(3))?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?.join(" | "))
            })
            .unwrap()
        };
        let cases = [
            (AccessFilter::default(), "events_access_time"),
            (
                AccessFilter {
                    action: Some(Action::Denied),
                    ..Default::default()
                },
                "events_access_kind",
            ),
            (
                AccessFilter {
                    action: Some(Action::Timeout),
                    ..Default::default()
                },
                "events_access_kind",
            ),
            (
                AccessFilter {
                    user_id: Some(1),
                    ..Default::default()
                },
                "events_access_user",
            ),
            (
                AccessFilter {
                    door_id: Some(1),
                    start_ms: Some(T0),
                    end_ms: Some(T0 + 1),
                    ..Default::default()
                },
                "events_access_door",
            ),
            (
                AccessFilter {
                    start_ms: Some(T0),
                    end_ms: Some(T0 + 1),
                    ..Default::default()
                },
                "events_access_time",
            ),
            (
                AccessFilter {
                    action: Some(Action::Granted),
                    start_ms: Some(T0),
                    ..Default::default()
                },
                "events_access_kind (kind=? AND time_ms>?)",
            ),
            // With a user or a door, theirs drives it and the action is checked in it.
            (
                AccessFilter {
                    action: Some(Action::Granted),
                    user_id: Some(1),
                    start_ms: Some(T0),
                    end_ms: Some(T0 + 1),
                    ..Default::default()
                },
                "events_access_user (user_id=? AND time_ms>? AND time_ms<?)",
            ),
            (
                AccessFilter {
                    action: Some(Action::Timeout),
                    door_id: Some(1),
                    ..Default::default()
                },
                "events_access_door (door_id=?)",
            ),
            (
                AccessFilter {
                    user_id: Some(1),
                    door_id: Some(1),
                    ..Default::default()
                },
                "events_access_user (user_id=?)",
            ),
        ];
        for (f, index) in cases {
            let (clause, mut values) = f.clause();
            let count = plan(
                &format!("SELECT count(*) FROM events WHERE {clause}"),
                &values,
            );
            // Without a filter any of them will do: each holds every access event.
            let counted_by = if f == AccessFilter::default() {
                "INDEX events_access_"
            } else {
                index
            };
            assert!(count.contains(counted_by), "count {f:?}: {count}");
            values.push(Value::Integer(10));
            let page = plan(
                &format!(
                    "SELECT {ACCESS_COLS} FROM events WHERE {clause} ORDER BY time_ms DESC, seq DESC LIMIT ?"
                ),
                &values,
            );
            assert!(
                page.contains(index) && !page.contains("TEMP B-TREE"),
                "page {f:?}: {page}"
            );
            let (mut clause, mut values) = f.clause();
            Cursor {
                time_ms: T0,
                seq: 5,
            }
            .push_before(&mut clause, &mut values);
            let after = plan(
                &format!(
                    "SELECT {ACCESS_COLS} FROM events WHERE {clause} ORDER BY time_ms DESC, seq DESC LIMIT 10"
                ),
                &values,
            );
            // The cursor adds its own bound on time_ms: the index is what matters.
            let index_name = index.split(' ').next().unwrap();
            assert!(
                after.contains(index_name) && !after.contains("TEMP B-TREE"),
                "after {f:?}: {after}"
            );
            let (clause, values) = f.clause();
            let export = plan(
                &format!("SELECT {ACCESS_COLS} FROM events WHERE {clause} ORDER BY time_ms, seq"),
                &values,
            );
            assert!(
                export.contains(index) && !export.contains("TEMP B-TREE"),
                "export {f:?}: {export}"
            );
        }
        for a in [Action::Granted, Action::Denied, Action::Timeout] {
            let p = plan(
                &format!(
                    "SELECT count(*) FROM events WHERE {ACCESS}{} AND time_ms >= ?",
                    a.sql(true)
                ),
                &[Value::Integer(T0)],
            );
            assert!(
                p.contains("INDEX events_access_kind (kind=? AND time_ms>?)"),
                "{p}"
            );
        }
        for (device, index) in [(None, "alarms_time"), (Some("garage"), "alarms_source")] {
            let f = AlarmFilter {
                device: device.map(Into::into),
                event_type: Some("vmd".into()),
                channel: Some(1),
            };
            let p = s
                .with_conn(|c| {
                    let (sql, values) = alarms_sql(
                        &f,
                        Some(Cursor {
                            time_ms: T0,
                            seq: 9,
                        }),
                        10,
                    );
                    let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                    let rows =
                        st.query_map(params_from_iter(&values), |r| r.get::<_, String>(3))?;
                    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?.join(" | "))
                })
                .unwrap();
            assert!(
                p.contains(index)
                    && !p.contains("TEMP B-TREE")
                    && p.contains("INTEGER PRIMARY KEY"),
                "{p}"
            );
        }
    }

    fn alarm_seqs(s: &Store, f: &AlarmFilter) -> Vec<i64> {
        s.with_conn(|c| alarms_page(c, f, None, MAX_LIMIT))
            .unwrap()
            .0
            .iter()
            .map(|a| a.seq)
            .collect()
    }

    #[test]
    fn alarms_list_started_alerts_newest_first_a_page_at_a_time() {
        let (_d, s) = store();
        let mut w = Vec::new();
        for i in 0..30 {
            let device = if i % 3 == 0 { "porch" } else { "garage" };
            let kind = if i % 2 == 0 { "VMD" } else { "linedetection" };
            // Several in one millisecond.
            w.push(camera(
                &format!("on{i}"),
                device,
                T0 + (i / 4) * 1000,
                &kind.to_ascii_lowercase(),
                true,
            ));
            w.push(camera(
                &format!("off{i}"),
                device,
                T0 + (i / 4) * 1000 + 500,
                &kind.to_ascii_lowercase(),
                false,
            ));
        }
        w.push(net2(
            "g",
            T0,
            EventKind::AccessGranted {
                token: TokenType::Card,
            },
            20,
            Some(1),
            Some(1),
        ));
        s.write_batch(&w).unwrap();
        // Seqs: "on<i>" is 2i + 1.
        let on = |i: i64| 2 * i + 1;
        let mut all: Vec<i64> = (0..30).collect();
        all.sort_by_key(|i| std::cmp::Reverse((T0 + (i / 4) * 1000, on(*i))));
        assert_eq!(
            alarm_seqs(&s, &AlarmFilter::default()),
            all.iter().map(|i| on(*i)).collect::<Vec<_>>()
        );

        let (rows, more) = s
            .with_conn(|c| alarms_page(c, &AlarmFilter::default(), None, 1))
            .unwrap();
        let a = &rows[0];
        assert!(more);
        assert_eq!(
            (a.device.as_str(), a.event_type.as_str(), a.channel),
            ("garage", "linedetection", Some(1))
        );
        assert_eq!(
            (a.targets.clone(), a.backlog, a.description.as_deref()),
            (
                vec!["human".to_string()],
                false,
                Some("linedetection started")
            )
        );
        assert_eq!(a.device_time.as_deref(), Some("2026-01-01T00:00:00+08:00"));

        let f = AlarmFilter {
            device: Some("garage".into()),
            event_type: Some("VMD".into()),
            channel: Some(1),
        };
        let want: Vec<i64> = all
            .iter()
            .filter(|i| *i % 3 != 0 && *i % 2 == 0)
            .map(|i| on(*i))
            .collect();
        let mut got = Vec::new();
        let mut cursor = None;
        loop {
            let (rows, more) = s.with_conn(|c| alarms_page(c, &f, cursor, 3)).unwrap();
            got.extend(rows.iter().map(|r| r.seq));
            cursor = rows.last().map(|r| r.cursor());
            if !more {
                break;
            }
        }
        assert_eq!(got, want);
        assert!(
            alarm_seqs(
                &s,
                &AlarmFilter {
                    channel: Some(2),
                    ..Default::default()
                }
            )
            .is_empty()
        );
        assert!(
            alarm_seqs(
                &s,
                &AlarmFilter {
                    device: Some("gar".into()),
                    ..Default::default()
                }
            )
            .is_empty()
        );
    }

    #[test]
    fn dismissed_alarms_leave_the_listing_but_their_events_stay() {
        let (_d, s) = store();
        s.write_batch(&[
            camera("a", "garage", T0, "vmd", true),
            camera("a-off", "garage", T0 + 1, "vmd", false),
            camera("b", "garage", T0 + 2, "vmd", true),
            camera("c", "porch", T0 + 3, "vmd", true),
            camera("d", "porch", T0 + 4, "tamper", true),
            net2(
                "g",
                T0,
                EventKind::AccessGranted {
                    token: TokenType::Card,
                },
                20,
                Some(1),
                Some(1),
            ),
        ])
        .unwrap();
        let events = s.count_events().unwrap();
        assert_eq!(alarm_seqs(&s, &AlarmFilter::default()), [5, 4, 3, 1]);
        assert!(s.with_conn(|c| alarm_delete(c, 3)).unwrap());
        assert!(
            !s.with_conn(|c| alarm_delete(c, 3)).unwrap(),
            "already dismissed"
        );
        assert!(
            !s.with_conn(|c| alarm_delete(c, 2)).unwrap(),
            "an alert that ended is no alarm"
        );
        assert!(
            !s.with_conn(|c| alarm_delete(c, 6)).unwrap(),
            "an access event is no alarm"
        );
        assert!(!s.with_conn(|c| alarm_delete(c, 99)).unwrap());
        assert_eq!(alarm_seqs(&s, &AlarmFilter::default()), [5, 4, 1]);
        assert_eq!(
            s.with_conn(|c| alarm_delete_all(c, Some("porch"))).unwrap(),
            2
        );
        assert_eq!(alarm_seqs(&s, &AlarmFilter::default()), [1]);
        assert_eq!(s.with_conn(|c| alarm_delete_all(c, None)).unwrap(), 1);
        assert_eq!(s.with_conn(|c| alarm_delete_all(c, None)).unwrap(), 0);
        assert!(alarm_seqs(&s, &AlarmFilter::default()).is_empty());
        assert_eq!(s.count_events().unwrap(), events, "no event deleted");
        assert_eq!(s.events_by_seq(&[1, 3, 4, 5]).unwrap().len(), 4);
        // New alarms are listed again.
        s.write_batch(&[camera("e", "porch", T0 + 5, "vmd", true)])
            .unwrap();
        assert_eq!(alarm_seqs(&s, &AlarmFilter::default()), [7]);
        // Pruning history takes its alarms with it.
        assert_eq!(s.prune(T0 + 5).unwrap(), 6);
        assert_eq!(
            s.with_conn(|c| Ok(
                c.query_row("SELECT count(*) FROM alarms", [], |r| r.get::<_, i64>(0))?
            ))
            .unwrap(),
            1
        );
    }

    #[test]
    fn an_upgrade_lists_the_alarms_and_counts_the_access_events_already_stored() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("old.db");
        let mut c = Connection::open(&p).unwrap();
        crate::storage::migrations::migrate(&mut c, Some(6)).unwrap();
        let insert = |id: &str, source: &str, kind: &str, detail: &str| {
            c.execute(
                "INSERT INTO events (id, source, fingerprint, time, time_ms, received, via, kind, detail, raw)
                 VALUES (?1, ?2, ?1, '2026-01-01T01:00:00+01:00', ?3, '', 'live', ?4, ?5, '')",
                params![id, source, T0, kind, detail],
            )
            .unwrap();
        };
        insert(
            "on",
            "camera/garage",
            "camera_alert",
            r#"{"type":"camera_alert","event_type":"vmd","active":true,"channel":2,"io_port":null,"targets":[],"backlog":false}"#,
        );
        insert(
            "off",
            "camera/garage",
            "camera_alert",
            r#"{"type":"camera_alert","event_type":"vmd","active":false,"channel":2,"io_port":null,"targets":[],"backlog":false}"#,
        );
        insert("bad", "camera/garage", "camera_alert", "not json");
        insert("door", "net2", "door_opened", r#"{"type":"door_opened"}"#);
        for (id, kind, code) in [
            ("g1", "access_granted", 20),
            ("g2", "access_granted", 26),
            ("d", "access_denied", 23),
            ("t", "other", 61),
            ("o", "other", 62),
        ] {
            c.execute(
                "INSERT INTO events (id, source, fingerprint, time, time_ms, received, via, kind, code, detail, raw)
                 VALUES (?1, 'net2', ?1, '2026-01-01T01:00:00+01:00', ?2, '', 'rest', ?3, ?4, '{}', '')",
                params![id, T0, kind, code],
            )
            .unwrap();
        }
        drop(c);
        let s = Store::open(&p).unwrap();
        assert_totals_are_counts(&s);
        let (_, total) = s
            .with_conn(|c| access_page(c, &AccessFilter::default(), 1, 1))
            .unwrap();
        assert_eq!(total, 4);
        let (rows, more) = s
            .with_conn(|c| alarms_page(c, &AlarmFilter::default(), None, 10))
            .unwrap();
        assert!(!more);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (
                rows[0].id.as_str(),
                rows[0].channel,
                rows[0].event_type.as_str()
            ),
            ("on", Some(2), "vmd")
        );
    }
}
