//! Seed 001's events under `/api/access-control/events`: the access history (grants,
//! denials, "door not opened" timeouts) with filters, pages or a cursor; a streamed export;
//! hardware devices' cached events (`sync`, idempotent); mobile agents' events (`agent`,
//! idempotent by key, awaiting review) and their review.
//!
//! Synced and agent events are stored like every other event (same table, same MQTT outbox,
//! same SSE stream), with ids that make a repeat a no-op: `sync:<point>:<time ms>:<user>:
//! <action>:<n>` (n = the how-many-th identical entry of the batch) and
//! `agent:<idempotency_key>`.

// Helpers answer `Err(response)`: the 4xx a handler returns as is.
#![allow(clippy::result_large_err)]

use super::{Caller, Detail, Pagination, Web, detail, error_response};
use crate::config::Role;
use crate::model::{DoorRef, Event, EventKind, TokenType, UserRef, Via};
use crate::storage::query::{self, AccessFilter, AccessRow, Action, Cursor};
use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A Net2 door's access point id.
pub(crate) fn point_id(door: i64) -> String {
    format!("net2-{door}")
}

/// The Net2 door of an access point id (`net2-<id>`, or the bare id).
pub(crate) fn door_of_point(id: &str) -> Option<i64> {
    id.strip_prefix("net2-").unwrap_or(id).parse().ok()
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct EventsQuery {
    /// Only this site's doors (`sites` in the config).
    property_id: Option<String>,
    /// `granted`, `denied` or `timeout`.
    action: Option<String>,
    /// A Net2 user id.
    #[serde(rename = "userId")]
    #[param(rename = "userId")]
    user_id: Option<String>,
    /// An access point id (`net2-<door id>`).
    #[serde(rename = "accessPointId")]
    #[param(rename = "accessPointId")]
    access_point_id: Option<String>,
    /// ISO 8601 date (`2026-01-26`, from the start of that day here) or date-time.
    #[serde(rename = "startDate")]
    #[param(rename = "startDate")]
    start_date: Option<String>,
    /// ISO 8601 date (to the end of that day here) or date-time.
    #[serde(rename = "endDate")]
    #[param(rename = "endDate")]
    end_date: Option<String>,
    /// From 1.
    page: Option<u32>,
    /// 1 to 1000; default 50.
    limit: Option<u32>,
    /// Cursor pages for long histories: empty for the first page, then `next_cursor`.
    cursor: Option<String>,
    /// A token for clients that cannot send headers.
    #[allow(dead_code)]
    token: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ExportQuery {
    /// `csv` (default) or `json`.
    format: Option<String>,
    property_id: Option<String>,
    action: Option<String>,
    #[serde(rename = "userId")]
    #[param(rename = "userId")]
    user_id: Option<String>,
    #[serde(rename = "accessPointId")]
    #[param(rename = "accessPointId")]
    access_point_id: Option<String>,
    #[serde(rename = "startDate")]
    #[param(rename = "startDate")]
    start_date: Option<String>,
    #[serde(rename = "endDate")]
    #[param(rename = "endDate")]
    end_date: Option<String>,
    #[allow(dead_code)]
    token: Option<String>,
}

/// One access event (seed 001).
#[derive(Serialize, Deserialize, ToSchema)]
pub(super) struct AccessEvent {
    id: String,
    #[serde(rename = "userId")]
    user_id: Option<String>,
    #[serde(rename = "userName")]
    user_name: Option<String>,
    #[serde(rename = "accessPointId")]
    access_point_id: Option<String>,
    #[serde(rename = "accessPointName")]
    access_point_name: Option<String>,
    /// `granted`, `denied` or `timeout`.
    action: String,
    /// RFC 3339, UTC.
    timestamp: String,
    location: Option<String>,
    /// `card`, `pin`, `card_and_pin`, `mobile`, … (null when unknown).
    #[serde(rename = "accessMethod")]
    access_method: Option<String>,
    /// `net2`, `hardware` or `mobile_agent`.
    source: String,
    /// `pending`, `approved` or `rejected` for events that need a review (mobile agents);
    /// null for the others.
    review_status: Option<String>,
    /// Monotonic over all events (the MQTT and SSE `seq`).
    seq: i64,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(super) struct CursorPage {
    limit: u32,
    /// Pass as `cursor` for the next page; null at the end.
    next_cursor: Option<String>,
    has_more: bool,
}

/// A page of events: `pagination` (page / limit) or, with `cursor`, `cursor`.
#[derive(Serialize, Deserialize, ToSchema)]
pub(super) struct EventsPage {
    data: Vec<AccessEvent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pagination: Option<Pagination>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cursor: Option<CursorPage>,
}

fn bad(msg: impl Into<String>) -> Response {
    detail(StatusCode::BAD_REQUEST, msg)
}

/// A date or date-time bound; date-only means the start (or end) of that local day.
pub(super) fn parse_bound(name: &str, v: &str, end: bool) -> Result<i64, Response> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f") {
        return local_ms(t).ok_or_else(|| bad(format!("{name} {v:?} does not exist here")));
    }
    let d = NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| {
        bad(format!(
            "{name} {v:?} is not an ISO 8601 date (2026-01-26) or date-time (2026-01-26T10:30:00Z)"
        ))
    })?;
    let t = if end {
        d.and_hms_milli_opt(23, 59, 59, 999)
    } else {
        d.and_hms_opt(0, 0, 0)
    };
    t.and_then(local_ms)
        .ok_or_else(|| bad(format!("{name} {v:?} does not exist here")))
}

fn local_ms(t: chrono::NaiveDateTime) -> Option<i64> {
    use chrono::TimeZone;
    chrono::Local
        .from_local_datetime(&t)
        .earliest()
        .map(|t| t.timestamp_millis())
}

/// What the filter parameters select; `Err` answers 400 / 404.
async fn filter(
    w: &Web,
    action: Option<&str>,
    user: Option<&str>,
    point: Option<&str>,
    start: Option<&str>,
    end: Option<&str>,
    property: Option<&str>,
) -> Result<AccessFilter, Response> {
    let mut f = AccessFilter::default();
    if let Some(a) = action {
        f.action = Some(a.parse::<Action>().map_err(|e| bad(e.to_string()))?);
    }
    if let Some(u) = user {
        f.user_id = Some(u.parse().map_err(|_| {
            bad(format!(
                "userId {u:?} is not a user id (a number, see …/users)"
            ))
        })?);
    }
    if let Some(p) = point {
        f.door_id = Some(
            door_of_point(p)
                .ok_or_else(|| detail(StatusCode::NOT_FOUND, format!("no access point {p:?}")))?,
        );
    }
    if let Some(s) = start {
        f.start_ms = Some(parse_bound("startDate", s, false)?);
    }
    if let Some(e) = end {
        f.end_ms = Some(parse_bound("endDate", e, true)?);
    }
    if let (Some(s), Some(e)) = (f.start_ms, f.end_ms)
        && s > e
    {
        return Err(bad("startDate is after endDate"));
    }
    if let Some(p) = property {
        f.door_ids = Some(site_doors(w, p).await?);
    }
    Ok(f)
}

/// The Net2 doors of a property (a site): a door's site is the one an admin gave its point
/// (`PUT …/points/{id}`), else `doors.<id>.site`, else the first site. 404 for an unknown one.
async fn site_doors(w: &Web, property: &str) -> Result<Vec<i64>, Response> {
    let cfg = w.config();
    if !cfg.has_site(property) {
        return Err(detail(
            StatusCode::NOT_FOUND,
            format!("no property {property:?} (see `sites` in the config)"),
        ));
    }
    let overrides = w
        .store
        .read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, site FROM access_points WHERE kind = 'net2' AND site IS NOT NULL",
            )?;
            let rows =
                st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            Ok(rows
                .filter_map(|r| r.ok())
                .filter_map(|(id, site)| Some((door_of_point(&id)?, site)))
                .collect::<std::collections::HashMap<i64, String>>())
        })
        .await
        .map_err(|e| error_response(&e))?;
    let mut doors: Vec<i64> = w
        .directory
        .doors()
        .iter()
        .map(|d| d.id as i64)
        .chain(cfg.doors.keys().map(|d| *d as i64))
        .collect();
    doors.sort_unstable();
    doors.dedup();
    doors.retain(|d| match overrides.get(d) {
        Some(site) => site == property,
        None => cfg.door_site(*d as u64) == property,
    });
    Ok(doors)
}

impl AccessEvent {
    fn of(row: &AccessRow, review: Option<String>) -> AccessEvent {
        let source = if row.source.starts_with("agent:") {
            "mobile_agent"
        } else if row.source.starts_with("sync:") {
            "hardware"
        } else {
            row.source.as_str()
        };
        let timestamp = DateTime::parse_from_rfc3339(&row.time)
            .map(|t| {
                t.with_timezone(&Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            })
            .unwrap_or_else(|_| row.time.clone());
        AccessEvent {
            id: row.id.clone(),
            user_id: row.user_id.map(|u| u.to_string()),
            user_name: row.user_name.clone(),
            access_point_id: row.door_id.map(point_id),
            access_point_name: row.door_name.clone(),
            action: row.action.as_str().into(),
            timestamp,
            location: None,
            access_method: row.token.clone(),
            source: source.into(),
            review_status: review,
            seq: row.seq,
        }
    }
}

/// Review states of these events (those that have one).
fn reviews(
    conn: &rusqlite::Connection,
    ids: &[&str],
) -> crate::error::Result<std::collections::HashMap<String, String>> {
    let mut st = conn.prepare_cached("SELECT status FROM event_reviews WHERE event_id = ?1")?;
    let mut out = std::collections::HashMap::new();
    for id in ids {
        if let Some(s) = st
            .query_row([id], |r| r.get::<_, String>(0))
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?
        {
            out.insert(id.to_string(), s);
        }
    }
    Ok(out)
}

/// Access events, newest first.
#[utoipa::path(get, path = "/api/access-control/events", tag = "access-control",
    params(EventsQuery),
    responses((status = 200, body = EventsPage), (status = 404, body = Detail)))]
pub(super) async fn list(
    State(w): State<Web>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<EventsQuery>,
) -> Response {
    if let Err(r) = caller.need(Role::Viewer) {
        return r;
    }
    let f = match filter(
        &w,
        q.action.as_deref(),
        q.user_id.as_deref(),
        q.access_point_id.as_deref(),
        q.start_date.as_deref(),
        q.end_date.as_deref(),
        q.property_id.as_deref(),
    )
    .await
    {
        Ok(f) => f,
        Err(r) => return r,
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=query::MAX_LIMIT).contains(&limit) {
        return bad(format!("limit must be 1 to {}", query::MAX_LIMIT));
    }
    let page = q.page.unwrap_or(1);
    if page == 0 {
        return bad("page starts at 1");
    }
    let cursor = match q.cursor.as_deref() {
        None => None,
        Some("") => Some(None),
        Some(c) => match Cursor::decode(c) {
            Ok(c) => Some(Some(c)),
            Err(e) => return bad(e.to_string()),
        },
    };
    if cursor.is_some() && q.page.is_some() {
        return bad("give page or cursor, not both");
    }
    let res = w
        .store
        .read(move |c| {
            let (rows, total) = match cursor {
                Some(cur) => (query::access_after(c, &f, cur, limit + 1)?, None),
                None => {
                    let (rows, total) = query::access_page(c, &f, page, limit)?;
                    (rows, Some(total))
                }
            };
            let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
            let rv = reviews(c, &ids)?;
            Ok((rows, total, rv))
        })
        .await;
    let (mut rows, total, mut rv) = match res {
        Ok(x) => x,
        Err(e) => return error_response(&e),
    };
    let body = match total {
        Some(total) => EventsPage {
            data: rows
                .iter()
                .map(|r| AccessEvent::of(r, rv.remove(&r.id)))
                .collect(),
            pagination: Some(Pagination::new(page.into(), limit.into(), total)),
            cursor: None,
        },
        None => {
            let has_more = rows.len() > limit as usize;
            rows.truncate(limit as usize);
            EventsPage {
                cursor: Some(CursorPage {
                    limit,
                    next_cursor: has_more
                        .then(|| rows.last().map(|r| r.cursor().encode()))
                        .flatten(),
                    has_more,
                }),
                data: rows
                    .iter()
                    .map(|r| AccessEvent::of(r, rv.remove(&r.id)))
                    .collect(),
                pagination: None,
            }
        }
    };
    axum::Json(body).into_response()
}

/// Chunks of an export reach the client through a queue this deep: memory stays constant
/// however long the history (the reader waits for the client).
const EXPORT_QUEUE: usize = 4;
const EXPORT_CHUNK: usize = 64 << 10;

/// Every matching access event, oldest first, streamed as CSV or JSON.
#[utoipa::path(get, path = "/api/access-control/events/export", tag = "access-control",
    params(ExportQuery),
    responses((status = 200, description = "CSV (`text/csv`) or a JSON array of events", content_type = "text/csv", body = String),
        (status = 404, body = Detail)))]
pub(super) async fn export(
    State(w): State<Web>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ExportQuery>,
) -> Response {
    if let Err(r) = caller.need(Role::Viewer) {
        return r;
    }
    let json = match q.format.as_deref().unwrap_or("csv") {
        "csv" => false,
        "json" => true,
        other => return bad(format!("format {other:?}: csv or json")),
    };
    let f = match filter(
        &w,
        q.action.as_deref(),
        q.user_id.as_deref(),
        q.access_point_id.as_deref(),
        q.start_date.as_deref(),
        q.end_date.as_deref(),
        q.property_id.as_deref(),
    )
    .await
    {
        Ok(f) => f,
        Err(r) => return r,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(EXPORT_QUEUE);
    let path = w.store.path().to_owned();
    tokio::task::spawn_blocking(move || {
        // Its own read-only connection: a long export holds no pooled reader.
        let conn = match crate::storage::Store::open_readonly(&path) {
            Ok(c) => c,
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                return;
            }
        };
        let mut buf = String::with_capacity(EXPORT_CHUNK + 1024);
        buf.push_str(if json { "[" } else { query::CSV_HEADER });
        let mut first = true;
        let r = query::access_export(&conn, &f, |row| {
            if json {
                if !first {
                    buf.push(',');
                }
                first = false;
                let ev = AccessEvent::of(row, review_of(&conn, &row.id));
                buf.push_str(&serde_json::to_string(&ev).unwrap_or_default());
            } else {
                query::csv_line(row, &mut buf);
            }
            if buf.len() >= EXPORT_CHUNK {
                let chunk = bytes::Bytes::from(std::mem::take(&mut buf));
                tx.blocking_send(Ok(chunk)).map_err(|_| {
                    crate::error::Error::new(crate::error::ErrorKind::Internal, "client gone")
                })?;
            }
            Ok(())
        });
        match r {
            Ok(n) => {
                if json {
                    buf.push(']');
                }
                let _ = tx.blocking_send(Ok(bytes::Bytes::from(buf)));
                tracing::info!(events = n, "events exported");
            }
            Err(e) => {
                // The client went away, or the database failed: the body ends short (the
                // client sees a broken transfer, never a complete-looking file).
                tracing::info!(error = %e, "event export ended early");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let stream = tokio_stream_from(rx);
    let (ct, name) = if json {
        ("application/json", "events.json")
    } else {
        ("text/csv; charset=utf-8", "events.csv")
    };
    (
        [
            (header::CONTENT_TYPE, ct.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

fn review_of(conn: &rusqlite::Connection, id: &str) -> Option<String> {
    reviews(conn, &[id]).ok()?.remove(id)
}

fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}

// ---- hardware sync ----

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SyncBody {
    access_point_id: String,
    /// At most 1000 a request.
    events: Vec<SyncEvent>,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SyncEvent {
    #[serde(rename = "userId")]
    user_id: Option<String>,
    /// `granted`, `denied` or `timeout`.
    action: String,
    /// RFC 3339.
    timestamp: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(super) struct SyncResult {
    success: bool,
    data: SyncCounts,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(super) struct SyncCounts {
    received: usize,
    stored: usize,
    /// Already stored by an earlier sync (the request is idempotent).
    duplicates: usize,
}

const MAX_SYNC: usize = 1000;

fn user_ref(w: &Web, id: i64) -> UserRef {
    UserRef {
        id,
        name: w.directory.user(id).and_then(|u| u.name),
    }
}

fn door_ref(w: &Web, point: &str) -> Option<DoorRef> {
    let id = door_of_point(point)?;
    let name = w
        .directory
        .door(id as u64)
        .and_then(|d| d.name)
        .or_else(|| {
            w.config()
                .doors
                .get(&(id as u64))
                .and_then(|d| d.name.clone())
        });
    Some(DoorRef {
        id: id as u64,
        name,
    })
}

fn kind_of(action: Action, reason: &str) -> (EventKind, Option<i64>) {
    match action {
        Action::Granted => (
            EventKind::AccessGranted {
                token: TokenType::Unknown,
            },
            None,
        ),
        Action::Denied => (
            EventKind::AccessDenied {
                reason: reason.into(),
            },
            None,
        ),
        // Stored as Net2's "door not opened" (type 61), which the API calls timeout.
        Action::Timeout => (EventKind::Other { code: 61 }, Some(61)),
    }
}

/// Store events a hardware device cached while offline. Idempotent: an entry synced again is
/// counted as a duplicate, not stored twice.
#[utoipa::path(post, path = "/api/access-control/events/sync", tag = "access-control",
    security(("bearer" = []), ("api_key" = [])),
    request_body = SyncBody,
    responses((status = 200, body = SyncResult), (status = 404, body = Detail)))]
pub(super) async fn sync(
    State(w): State<Web>,
    Extension(caller): Extension<Caller>,
    axum::Json(b): axum::Json<SyncBody>,
) -> Response {
    if let Err(r) = caller.need(Role::Operator) {
        return r;
    }
    if b.events.len() > MAX_SYNC {
        return detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("at most {MAX_SYNC} events a request"),
        );
    }
    if b.access_point_id.is_empty()
        || b.access_point_id.len() > 128
        || b.access_point_id.contains(':')
    {
        return detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "access_point_id: 1 to 128 characters, no ':'",
        );
    }
    let now = Utc::now();
    let door = door_ref(&w, &b.access_point_id);
    let mut seen = std::collections::HashMap::<String, u32>::new();
    let mut writes = Vec::with_capacity(b.events.len());
    for (i, e) in b.events.iter().enumerate() {
        let action: Action = match e.action.parse() {
            Ok(a) => a,
            Err(err) => {
                return detail(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("events[{i}].action: {err}"),
                );
            }
        };
        let time: DateTime<FixedOffset> = match DateTime::parse_from_rfc3339(&e.timestamp) {
            Ok(t) => t,
            Err(_) => {
                return detail(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "events[{i}].timestamp {:?} is not RFC 3339 (2026-01-26T10:30:00Z)",
                        e.timestamp
                    ),
                );
            }
        };
        let user = match e.user_id.as_deref() {
            None => None,
            Some(u) => match u.parse::<i64>() {
                Ok(id) => Some(user_ref(&w, id)),
                Err(_) => {
                    return detail(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("events[{i}].userId {u:?} is not a user id (a number)"),
                    );
                }
            },
        };
        let key = format!(
            "{}:{}:{}:{}",
            b.access_point_id,
            time.timestamp_millis(),
            user.as_ref().map(|u| u.id.to_string()).unwrap_or_default(),
            action.as_str()
        );
        let n = seen.entry(key.clone()).or_default();
        *n += 1;
        let id = format!("sync:{key}:{n}");
        let (kind, code) = kind_of(action, "hardware");
        writes.push(crate::storage::Write::Event(Box::new(Event {
            id: id.clone(),
            source: format!("sync:{}", b.access_point_id),
            source_id: None,
            fingerprint: id,
            time,
            received: now,
            via: Via::Rest,
            door: door.clone(),
            user,
            kind,
            code,
            description: Some(format!("synced by {}", caller.name)),
            raw: serde_json::to_string(e).unwrap_or_default(),
        })));
    }
    let received = writes.len();
    match w.store.run(move |s| s.write_batch(&writes)).await {
        Ok(r) => axum::Json(SyncResult {
            success: true,
            data: SyncCounts {
                received,
                stored: r.inserted,
                duplicates: received - r.inserted,
            },
        })
        .into_response(),
        Err(e) => error_response(&e),
    }
}

// ---- mobile agents ----

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AgentBody {
    property_id: Option<String>,
    user_id: Option<String>,
    /// An access point id (`net2-<door id>`) or the agent's own name for it.
    access_point: String,
    access_method: Option<String>,
    event_type: Option<String>,
    /// RFC 3339.
    timestamp: String,
    location: Option<AgentLocation>,
    is_authorized: bool,
    source_agent_id: Option<String>,
    source_device_id: Option<String>,
    #[schema(value_type = Object)]
    source_metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// A repeat with the same key returns the event already stored.
    idempotency_key: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AgentLocation {
    lat: f64,
    lng: f64,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(super) struct AgentAnswer {
    data: AgentEventRef,
    message: String,
    success: bool,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(super) struct AgentEventRef {
    id: String,
    review_status: String,
    timestamp: String,
}

fn field_ok(name: &str, v: &Option<String>, max: usize) -> Result<(), Response> {
    match v {
        Some(s) if s.chars().count() > max => Err(detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{name}: at most {max} characters"),
        )),
        _ => Ok(()),
    }
}

/// A mobile agent's event, stored awaiting review.
#[utoipa::path(post, path = "/api/access-control/events/agent", tag = "access-control",
    request_body = AgentBody,
    responses((status = 200, description = "already stored (same idempotency_key)", body = AgentAnswer),
        (status = 201, body = AgentAnswer)))]
pub(super) async fn agent(
    State(w): State<Web>,
    Extension(caller): Extension<Caller>,
    axum::Json(b): axum::Json<AgentBody>,
) -> Response {
    if let Err(r) = caller.need(Role::Operator) {
        return r;
    }
    for (name, v, max) in [
        ("property_id", &b.property_id, 64),
        ("user_id", &b.user_id, 64),
        ("access_method", &b.access_method, 32),
        ("event_type", &b.event_type, 64),
        ("source_agent_id", &b.source_agent_id, 128),
        ("source_device_id", &b.source_device_id, 128),
        ("idempotency_key", &b.idempotency_key, 128),
        ("description", &b.description, 500),
    ] {
        if let Err(r) = field_ok(name, v, max) {
            return r;
        }
    }
    if b.access_point.is_empty() || b.access_point.chars().count() > 128 {
        return detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "access_point: 1 to 128 characters",
        );
    }
    if let Some(l) = &b.location
        && !((-90.0..=90.0).contains(&l.lat) && (-180.0..=180.0).contains(&l.lng))
    {
        return detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "location: lat -90..90, lng -180..180",
        );
    }
    let Ok(time) = DateTime::parse_from_rfc3339(&b.timestamp) else {
        return detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("timestamp {:?} is not RFC 3339", b.timestamp),
        );
    };
    let user = match b.user_id.as_deref() {
        None => None,
        Some(u) => match u.parse::<i64>() {
            Ok(id) => Some(user_ref(&w, id)),
            Err(_) => {
                return detail(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("user_id {u:?} is not a user id (a number)"),
                );
            }
        },
    };
    let key = match &b.idempotency_key {
        Some(k) if !k.is_empty() => k.clone(),
        _ => format!("{:032x}", rand::random::<u128>()),
    };
    let id = format!("agent:{key}");
    let action = if b.is_authorized {
        Action::Granted
    } else {
        Action::Denied
    };
    let (kind, code) = kind_of(action, "mobile_agent");
    let door = door_ref(&w, &b.access_point)
        .or(Some(DoorRef {
            id: 0,
            name: Some(b.access_point.clone()),
        }))
        .filter(|d| d.id != 0);
    let event = Event {
        id: id.clone(),
        source: format!(
            "agent:{}",
            b.source_agent_id.as_deref().unwrap_or(&caller.name)
        ),
        source_id: None,
        fingerprint: id.clone(),
        time,
        received: Utc::now(),
        via: Via::Rest,
        door,
        user,
        kind,
        code,
        description: b.description.clone(),
        raw: serde_json::to_string(&b).unwrap_or_default(),
    };
    let submitter = caller.name.clone();
    let id2 = id.clone();
    let res = w
        .store
        .run(move |s| {
            let r = s.write_batch(&[crate::storage::Write::Event(Box::new(event))])?;
            if r.inserted == 1 {
                s.with_conn(|c| {
                    c.execute(
                        "INSERT OR IGNORE INTO event_reviews (event_id, status, submitted_by, submitted_at) VALUES (?1, 'pending', ?2, ?3)",
                        rusqlite::params![id2, submitter, Utc::now().to_rfc3339()],
                    )?;
                    Ok(())
                })?;
            }
            let (status, time) = s.with_conn(|c| {
                Ok(c.query_row(
                    "SELECT coalesce(r.status, 'pending'), e.time FROM events e LEFT JOIN event_reviews r ON r.event_id = e.id WHERE e.id = ?1",
                    [&id2],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
                )?)
            })?;
            Ok((r.inserted == 1, status, time))
        })
        .await;
    match res {
        Ok((new, status, time)) => {
            let timestamp = DateTime::parse_from_rfc3339(&time)
                .map(|t| {
                    t.with_timezone(&Utc)
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                })
                .unwrap_or(time);
            let body = AgentAnswer {
                data: AgentEventRef {
                    id,
                    review_status: status,
                    timestamp,
                },
                message: if new {
                    "Agent event submitted for review".into()
                } else {
                    "Agent event already submitted".into()
                },
                success: true,
            };
            let code = if new {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (code, axum::Json(body)).into_response()
        }
        Err(e) => error_response(&e),
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ReviewQuery {
    /// `approve` or `reject`.
    action: String,
    reason: Option<String>,
    #[allow(dead_code)]
    token: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(super) struct ReviewAnswer {
    data: ReviewState,
    message: String,
    success: bool,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(super) struct ReviewState {
    id: String,
    review_status: String,
    reviewed_by: String,
    reviewed_at: String,
}

/// Approve or reject a mobile agent's event (once).
#[utoipa::path(put, path = "/api/access-control/events/{event_id}/review", tag = "access-control",
    params(("event_id" = String, Path, description = "the event id (`agent:…`)"), ReviewQuery),
    responses((status = 200, body = ReviewAnswer), (status = 404, body = Detail), (status = 409, body = Detail)))]
pub(super) async fn review(
    State(w): State<Web>,
    Extension(caller): Extension<Caller>,
    Path(event_id): Path<String>,
    Query(q): Query<ReviewQuery>,
) -> Response {
    if let Err(r) = caller.need(Role::Operator) {
        return r;
    }
    let status = match q.action.as_str() {
        "approve" => "approved",
        "reject" => "rejected",
        other => return bad(format!("action {other:?}: approve or reject")),
    };
    if q.reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return bad("reason: at most 500 characters");
    }
    let at = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let by = caller.name.clone();
    let (id2, at2, by2, reason) = (event_id.clone(), at.clone(), by.clone(), q.reason.clone());
    let res = w
        .store
        .run(move |s| {
            s.with_conn(|c| {
                let n = c.execute(
                    "UPDATE event_reviews SET status = ?2, reviewed_by = ?3, reviewed_at = ?4, reason = ?5 WHERE event_id = ?1 AND status = 'pending'",
                    rusqlite::params![id2, status, by2, at2, reason],
                )?;
                let current: Option<String> = c
                    .query_row(
                        "SELECT status FROM event_reviews WHERE event_id = ?1",
                        [&id2],
                        |r| r.get(0),
                    )
                    .map(Some)
                    .or_else(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => Ok(None),
                        e => Err(e),
                    })?;
                Ok((n, current))
            })
        })
        .await;
    match res {
        Ok((1, _)) => {
            tracing::info!(event = %event_id, status, by = %by, "agent event reviewed");
            axum::Json(ReviewAnswer {
                data: ReviewState {
                    id: event_id,
                    review_status: status.into(),
                    reviewed_by: by,
                    reviewed_at: at,
                },
                message: if status == "approved" {
                    "Event approved".into()
                } else {
                    "Event rejected".into()
                },
                success: true,
            })
            .into_response()
        }
        Ok((_, Some(current))) => detail(
            StatusCode::CONFLICT,
            format!("event {event_id} was already reviewed: {current}"),
        ),
        Ok((_, None)) => detail(
            StatusCode::NOT_FOUND,
            format!("no event {event_id} awaiting review (only mobile agents' events are)"),
        ),
        Err(e) => error_response(&e),
    }
}
