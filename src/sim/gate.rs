//! A Zequenze GATE API simulator (seed 003) on a loopback port: `GET /api/v1/txlog_portal/`
//! and `GET /api/v1/aaa_accounting/`, with the shapes of the seed's example responses (every
//! field), Bearer authentication and cursor pagination.
//!
//! What the seed shows, and this simulator keeps (the client must cope with each):
//! - Both lists come **newest first** (highest id first); `next` is a **full URL** carrying an
//!   opaque `cursor` (the seed's is base64 of `{"id":100}`, URL-encoded), `previous` likewise
//!   (null on the first page). `limit` defaults to 20 and is clamped to 100 (DRF's
//!   `max_page_size`: asking for more silently gives 100, it is not an error).
//! - txlog `user` is an integer and `mac_addr` an **integer** (the MAC's 48 bits); accounting
//!   `user_id` is a string (`"user_456"`), `username` there is often an e-mail, the client MAC
//!   is `callingstationid` in upper case, `AA:BB:…` or `AA-BB-…` depending on the access point;
//!   `acctstoptime` is null while the session is active.
//! - `datetime` has microseconds and a `Z`; accounting times are whole seconds with `Z`.
//! - 401 `{"detail": …}` without or with a wrong token; 429 with `Retry-After`.
//! - `next` / `previous` carry the cursor and the limit only, not the filters of the request
//!   (`session_status`, `start_date`, `type`): a request without them is answered unfiltered.
//! - The transaction log filters on `start_date` and `end_date` (both inclusive).
//!
//! Hostile switches for the tests: 429 / 5xx bursts ([`GateSim::fail_next`]), a lasting rate
//! limit ([`GateSim::throttle_every`]), entries arriving
//! between page requests ([`GateSim::insert_while_paging`]) with offset cursors that then shift
//! the pages ([`GateSim::offset_cursors`]), the last entry of a page repeated on the next
//! ([`GateSim::duplicate_across_pages`]), a restart that invalidates cursors or loses every
//! record ([`GateSim::restart`]), a clock hours off ([`GateSim::set_clock_offset`]) and
//! malformed entries ([`GateSim::push_raw_entry`]).

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// The token the simulator accepts unless configured otherwise.
pub const SIM_TOKEN: &str = "sim-gate-token-3f9a";

#[derive(Debug, Clone)]
pub struct GateSimConfig {
    pub bind: SocketAddr,
    pub token: String,
}

impl Default for GateSimConfig {
    fn default() -> Self {
        GateSimConfig {
            bind: "127.0.0.1:0".parse().expect("loopback"),
            token: SIM_TOKEN.into(),
        }
    }
}

/// An invented Wi-Fi user (never real people: protocols.md §5).
#[derive(Debug, Clone)]
pub struct SimUser {
    pub id: i64,
    pub username: String,
    pub email: String,
    /// The phone's MAC as GATE's portal log gives it: an integer.
    pub mac: u64,
}

impl SimUser {
    pub fn new(id: i64, username: &str, mac: u64) -> SimUser {
        SimUser {
            id,
            username: username.into(),
            email: format!("{username}@example.org"),
            mac,
        }
    }
}

/// An access point and its location.
#[derive(Debug, Clone)]
pub struct SimAp {
    pub id: i64,
    pub name: String,
    pub mac: String,
    pub location: i64,
    pub location_name: String,
    /// This AP's RADIUS reports `callingstationid` as `AA-BB-…` (else `AA:BB:…`).
    pub dashes: bool,
}

/// The default site: two locations, three access points.
pub fn default_aps() -> Vec<SimAp> {
    let ap = |id, name: &str, mac: &str, location, location_name: &str, dashes| SimAp {
        id,
        name: name.into(),
        mac: mac.into(),
        location,
        location_name: location_name.into(),
        dashes,
    };
    vec![
        ap(
            42,
            "AP-Floor3-West",
            "00:1A:2B:3C:4D:5E",
            15,
            "Headquarters Building A",
            false,
        ),
        ap(
            43,
            "AP-Floor2-East",
            "00:1A:2B:3C:4D:5F",
            15,
            "Headquarters Building A",
            true,
        ),
        ap(44, "AP-Dock", "00:1A:2B:3C:4D:60", 16, "Warehouse", false),
    ]
}

struct Session {
    radacctid: i64,
    user: SimUser,
    ap: SimAp,
    start: DateTime<Utc>,
    update: DateTime<Utc>,
    stop: Option<DateTime<Utc>>,
    octets: u64,
    terminate: Option<&'static str>,
}

#[derive(Default)]
struct Failures {
    /// Statuses the next requests get, in order.
    queue: std::collections::VecDeque<u16>,
    retry_after: u64,
}

/// Request counters for assertions.
#[derive(Debug, Clone, Default)]
pub struct GateStats {
    pub txlog_requests: u64,
    pub accounting_requests: u64,
    pub unauthorized: u64,
    pub failures_served: u64,
    pub bad_requests: u64,
    /// Requests with the right token.
    pub auth_ok: u64,
    /// Every request: when it came, its endpoint and the status it got.
    pub log: Vec<(std::time::Instant, &'static str, u16)>,
    /// Every request's endpoint and query parameters, in order.
    pub queries: Vec<(&'static str, Vec<(String, String)>)>,
}

struct Inner {
    token: String,
    addr: SocketAddr,
    /// Transaction log, ascending by id.
    txlog: Vec<Value>,
    next_txid: i64,
    sessions: Vec<Session>,
    next_radacctid: i64,
    clock_offset: chrono::Duration,
    failures: Failures,
    /// Entries added before answering each page request that carries a cursor.
    insert_while_paging: usize,
    insert_user: Option<SimUser>,
    offset_cursors: bool,
    duplicate_across_pages: bool,
    /// Every this-many-th transaction-log request gets a 429 (0: never).
    throttle_every: u64,
    /// Accounting requests with a cursor (page 2 on) get this status, this many times.
    fail_later_pages: (usize, u16),
    /// Malformed accounting records listed with the active sessions.
    raw_sessions: Vec<Value>,
    /// Bumped by a restart: older cursors are refused.
    epoch: u64,
    stats: GateStats,
}

pub struct GateSim {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    cancel: CancellationToken,
}

fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for ch in s.bytes().filter(|b| *b != b'=') {
        let v = match ch {
            b'A'..=b'Z' => ch - b'A',
            b'a'..=b'z' => ch - b'a' + 26,
            b'0'..=b'9' => ch - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32;
        bits = bits << 6 | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    Some(out)
}

fn pct(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn fmt_micros(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn fmt_secs(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `start_date` as the seed documents it: `2000-01-01`, `2000-01-01 00:01:00`,
/// `2000-01-01 00:01:00+00:00` or ISO with `T` / `Z`.
fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%:z") {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S") {
        return Some(t.and_utc());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

fn detail(status: StatusCode, msg: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "detail": msg }).to_string(),
    )
        .into_response()
}

/// The MAC of a user as `AA:BB:…` / `AA-BB-…`.
fn mac_text(mac: u64, dashes: bool) -> String {
    let b = mac.to_be_bytes();
    let sep = if dashes { "-" } else { ":" };
    b[2..]
        .iter()
        .map(|x| format!("{x:02X}"))
        .collect::<Vec<_>>()
        .join(sep)
}

impl Inner {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.clock_offset
    }

    fn txlog_entry(&mut self, kind: &str, user: &SimUser, ap: &SimAp) -> i64 {
        let id = self.next_txid;
        self.next_txid += 1;
        let (status, message, action) = match kind {
            "ui" => ("h200", "User login successful", "li"),
            "ai" => ("h200", "Automatic login successful", "li"),
            "aa" => ("h200", "Automatic authentication", "au"),
            "uo" => ("h200", "User logout", "lo"),
            "st" => ("h200", "Session timeout", "to"),
            "si" => ("h200", "Idle timeout", "to"),
            "di" => ("h200", "Disconnected by administrator", "dc"),
            "ur" => ("h201", "User registration completed", "rg"),
            _ => ("h200", "User update", "up"),
        };
        let sess = format!("sess_{:012x}", id * 7919);
        self.txlog.push(json!({
            "id": id,
            "datetime": fmt_micros(self.now()),
            "type": kind,
            "organization": 1,
            "source": "u",
            "status": status,
            "message": message,
            "service": 101,
            "service_name": "Corporate WiFi Portal",
            "authservice": 201,
            "authservice_name": "LDAP Authentication",
            "user": user.id,
            "username": user.username,
            "email": user.email,
            "external_id": format!("emp_{}", user.id),
            "new_user": kind == "ur",
            "session_id": sess,
            "external_session": null,
            "payment_transaction_log": null,
            "site": "portal.example.org",
            "page": 10,
            "page_url": "https://portal.example.org/login",
            "action": action,
            "location": ap.location,
            "location_name": ap.location_name,
            "access_point": ap.id,
            "access_point_name": ap.name,
            "ssid": "Corporate_WiFi",
            "user_agent": 301,
            "remote_ip_addr": 167_772_160 + id,
            "captured_ip_addr": 167_772_160 + id,
            "mac_addr": user.mac,
            "http_referer": 501
        }));
        id
    }

    fn session_json(&self, s: &Session) -> Value {
        json!({
            "radacctid": s.radacctid,
            "acctsessionid": format!("sess_{:08x}", s.radacctid * 104_729),
            "acctuniqueid": format!("unique_{:08x}", s.radacctid * 15_485_863),
            // RADIUS usernames are often the e-mail address (the portal log has both).
            "username": if s.user.id % 2 == 1 { s.user.email.clone() } else { s.user.username.clone() },
            "groupname": "employees",
            "realm": "example.org",
            "nasipaddress": "192.168.1.10",
            "nasportid": "wifi0",
            "nasporttype": "Wireless-802.11",
            "acctstarttime": fmt_secs(s.start),
            "acctupdatetime": fmt_secs(s.update),
            "acctstoptime": s.stop.map(fmt_secs),
            "acctinterval": 600,
            "acctsessiontime": (s.stop.unwrap_or(s.update) - s.start).num_seconds(),
            "acctauthentic": "RADIUS",
            "connectinfo_start": "CONNECT 54Mbps 802.11n",
            "connectinfo_stop": s.stop.map(|_| "CONNECT 54Mbps 802.11n"),
            "acctinputoctets": s.octets / 3,
            "acctoutputoctets": s.octets,
            "calledstationid": s.ap.mac,
            "callingstationid": mac_text(s.user.mac, s.ap.dashes),
            "acctterminatecause": s.terminate,
            "servicetype": "Framed-User",
            "framedprotocol": "PPP",
            "framedipaddress": format!("10.0.1.{}", 10 + s.radacctid % 200),
            "organization_id": "org_789",
            "user_id": format!("user_{}", s.user.id),
            "user_transaction_id": format!("txn_{}", s.radacctid),
            "client_id": "client_123",
            "client_short_name": "HQ-Office",
            "location_id": format!("loc_{}", s.ap.location),
            "access_point_id": format!("ap_{}", s.ap.id),
            "access_point_name": s.ap.name,
            "location_name": s.ap.location_name,
            "nasidentifier": format!("ap-{}", s.ap.id),
            "klass": "premium",
            "access_point_mac_addr": s.ap.mac,
            "ssid": "CorpWiFi-Secure"
        })
    }
}

type Shared = Arc<Mutex<Inner>>;

fn query(raw: Option<String>) -> Vec<(String, String)> {
    raw.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    })
    .unwrap_or_default()
}

fn qget<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// Auth, then the hostile switches. `Err` is the answer to give instead.
fn gate_in(inner: &mut Inner, headers: &HeaderMap) -> Option<Response> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth {
        None => {
            inner.stats.unauthorized += 1;
            return Some(detail(
                StatusCode::UNAUTHORIZED,
                "Authentication credentials were not provided.",
            ));
        }
        Some(a) if a != format!("Bearer {}", inner.token) => {
            inner.stats.unauthorized += 1;
            return Some(detail(StatusCode::UNAUTHORIZED, "Invalid token."));
        }
        Some(_) => inner.stats.auth_ok += 1,
    }
    if let Some(code) = inner.failures.queue.pop_front() {
        inner.stats.failures_served += 1;
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if code == 429 {
            let mut r = detail(
                status,
                &format!(
                    "Request was throttled. Expected available in {} seconds.",
                    inner.failures.retry_after
                ),
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(inner.failures.retry_after),
            );
            return Some(r);
        }
        if code == 200 {
            // A body cut off mid-way (a proxy's buffer, a worker killed while writing).
            return Some(
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"next": null, "previous": null, "results": [{"id": 1, "datet"#,
                )
                    .into_response(),
            );
        }
        // A gateway in front of the API answers 5xx with its own HTML.
        return Some(
            (
                status,
                [(header::CONTENT_TYPE, "text/html")],
                format!("<html><body><h1>{code} Bad Gateway</h1></body></html>"),
            )
                .into_response(),
        );
    }
    None
}

/// One page of `items` (ascending by `key`), newest first.
fn page(
    inner: &mut Inner,
    path: &str,
    q: &[(String, String)],
    items: Vec<(i64, Value)>,
) -> Response {
    let limit = qget(q, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(20)
        .clamp(1, 100);
    let mut items = items;
    items.sort_by_key(|(k, _)| *k);
    let mut newest_first: Vec<(i64, Value)> = items.into_iter().rev().collect();
    let cursor = match qget(q, "cursor") {
        None => None,
        Some(c) => {
            let parsed = unb64(c)
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .filter(|v| v.get("s").and_then(Value::as_u64) == Some(inner.epoch));
            match parsed {
                Some(v) => Some(v),
                None => {
                    inner.stats.bad_requests += 1;
                    return detail(StatusCode::NOT_FOUND, "Invalid cursor");
                }
            }
        }
    };
    let (start, repeat) = match &cursor {
        None => (0, false),
        Some(c) => {
            let pos = if let Some(o) = c.get("o").and_then(Value::as_u64) {
                o as usize
            } else {
                let id = c.get("id").and_then(Value::as_i64).unwrap_or(i64::MAX);
                newest_first
                    .iter()
                    .position(|(k, _)| *k < id)
                    .unwrap_or(newest_first.len())
            };
            (pos, inner.duplicate_across_pages)
        }
    };
    let total = newest_first.len();
    let from = if repeat {
        start.saturating_sub(1)
    } else {
        start
    };
    let end = (start + limit).min(total);
    let results: Vec<Value> = newest_first
        .drain(from.min(end)..end)
        .map(|(_, v)| v)
        .collect();
    let more = end < total;
    // Like the seed's examples (`…/txlog_portal/?cursor=eyJpZCI6MTAwfQ%3D%3D&limit=25` after
    // `?type=ui&start_date=2024-01-01&limit=25`), the links carry the cursor and the limit
    // only, not the request's filters: a client that follows them as given gets the unfiltered
    // list from page 2 on (stopped sessions, entries before its `start_date`).
    let url = |c: Value| {
        format!(
            "http://{}/api/v1/{path}/?cursor={}&limit={limit}",
            inner.addr,
            pct(&b64(c.to_string().as_bytes()))
        )
    };
    let last_key = results
        .last()
        .and_then(|v| {
            v.get(if path == "txlog_portal" {
                "id"
            } else {
                "radacctid"
            })
        })
        .and_then(Value::as_i64);
    let next = if more {
        if inner.offset_cursors {
            Some(url(json!({"o": end, "s": inner.epoch})))
        } else {
            last_key.map(|k| url(json!({"id": k, "s": inner.epoch})))
        }
    } else {
        None
    };
    let previous = cursor
        .is_some()
        .then(|| url(json!({"o": start.saturating_sub(limit), "r": 1, "s": inner.epoch})));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"next": next, "previous": previous, "results": results}).to_string(),
    )
        .into_response()
}

async fn txlog(State(s): State<Shared>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let q = query(raw);
    let mut inner = s.lock().unwrap_or_else(|e| e.into_inner());
    inner.stats.txlog_requests += 1;
    inner.stats.queries.push(("txlog_portal", q.clone()));
    let r = txlog_answer(&mut inner, &headers, &q);
    inner.stats.log.push((
        std::time::Instant::now(),
        "txlog_portal",
        r.status().as_u16(),
    ));
    r
}

fn txlog_answer(inner: &mut Inner, headers: &HeaderMap, q: &[(String, String)]) -> Response {
    if let Some(r) = gate_in(inner, headers) {
        return r;
    }
    if inner.throttle_every > 0
        && inner
            .stats
            .txlog_requests
            .is_multiple_of(inner.throttle_every)
    {
        inner.stats.failures_served += 1;
        let mut r = detail(
            StatusCode::TOO_MANY_REQUESTS,
            "Request was throttled. Expected available in 0 seconds.",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(0u64));
        return r;
    }
    if qget(q, "cursor").is_some() && inner.insert_while_paging > 0 {
        // New logins arrive between two page requests of one client.
        let n = inner.insert_while_paging;
        let user = inner
            .insert_user
            .clone()
            .unwrap_or_else(|| SimUser::new(9000, "walk-in", 0x02_00_00_00_90_00));
        let ap = default_aps().remove(0);
        for _ in 0..n {
            inner.txlog_entry("ui", &user, &ap);
        }
    }
    let start = match qget(q, "start_date").map(parse_date) {
        Some(None) => {
            inner.stats.bad_requests += 1;
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "application/json")],
                json!({"start_date": ["Enter a valid date/time."]}).to_string(),
            )
                .into_response();
        }
        Some(t) => t,
        None => None,
    };
    let end = match qget(q, "end_date").map(parse_date) {
        Some(None) => {
            inner.stats.bad_requests += 1;
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "application/json")],
                json!({"end_date": ["Enter a valid date/time."]}).to_string(),
            )
                .into_response();
        }
        Some(t) => t,
        None => None,
    };
    let kind = qget(q, "type").map(str::to_owned);
    let items: Vec<(i64, Value)> = inner
        .txlog
        .iter()
        .filter(|v| {
            let t = v
                .get("datetime")
                .and_then(Value::as_str)
                .and_then(|d| DateTime::parse_from_rfc3339(d).ok());
            // Malformed entries (no usable datetime) are listed regardless, like a server
            // that filters in SQL on a column the serializer then garbles.
            start.is_none_or(|s| t.is_none_or(|t| t >= s))
                && end.is_none_or(|e| t.is_none_or(|t| t <= e))
                && kind
                    .as_deref()
                    .is_none_or(|k| v.get("type").and_then(Value::as_str) == Some(k))
        })
        .map(|v| (v.get("id").and_then(Value::as_i64).unwrap_or(0), v.clone()))
        .collect();
    page(inner, "txlog_portal", q, items)
}

async fn accounting(
    State(s): State<Shared>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = query(raw);
    let mut inner = s.lock().unwrap_or_else(|e| e.into_inner());
    inner.stats.accounting_requests += 1;
    inner.stats.queries.push(("aaa_accounting", q.clone()));
    let r = accounting_answer(&mut inner, &headers, &q);
    inner.stats.log.push((
        std::time::Instant::now(),
        "aaa_accounting",
        r.status().as_u16(),
    ));
    r
}

fn accounting_answer(inner: &mut Inner, headers: &HeaderMap, q: &[(String, String)]) -> Response {
    if let Some(r) = gate_in(inner, headers) {
        return r;
    }
    if qget(q, "cursor").is_some() && inner.fail_later_pages.0 > 0 {
        inner.fail_later_pages.0 -= 1;
        inner.stats.failures_served += 1;
        let code = inner.fail_later_pages.1;
        return (
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
            [(header::CONTENT_TYPE, "text/html")],
            format!("<html><body><h1>{code}</h1></body></html>"),
        )
            .into_response();
    }
    let status = qget(q, "session_status").unwrap_or("all").to_string();
    if !["all", "active", "inactive"].contains(&status.as_str()) {
        inner.stats.bad_requests += 1;
        return detail(StatusCode::BAD_REQUEST, "Invalid session_status");
    }
    let items: Vec<(i64, Value)> = inner
        .sessions
        .iter()
        .filter(|s| match status.as_str() {
            "active" => s.stop.is_none(),
            "inactive" => s.stop.is_some(),
            _ => true,
        })
        .map(|s| (s.radacctid, inner.session_json(s)))
        .chain(
            inner
                .raw_sessions
                .iter()
                .filter(|_| status != "inactive")
                .map(|v| {
                    (
                        v.get("radacctid").and_then(Value::as_i64).unwrap_or(0),
                        v.clone(),
                    )
                }),
        )
        .collect();
    page(inner, "aaa_accounting", q, items)
}

impl GateSim {
    pub async fn start(cfg: GateSimConfig) -> std::io::Result<GateSim> {
        let listener = tokio::net::TcpListener::bind(cfg.bind).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Mutex::new(Inner {
            token: cfg.token,
            addr,
            txlog: Vec::new(),
            next_txid: 12_001,
            sessions: Vec::new(),
            next_radacctid: 5_001,
            clock_offset: chrono::Duration::zero(),
            failures: Failures::default(),
            insert_while_paging: 0,
            insert_user: None,
            offset_cursors: false,
            throttle_every: 0,
            duplicate_across_pages: false,
            fail_later_pages: (0, 0),
            raw_sessions: Vec::new(),
            epoch: 1,
            stats: GateStats::default(),
        }));
        let app = Router::new()
            .route("/api/v1/txlog_portal/", get(txlog))
            .route("/api/v1/aaa_accounting/", get(accounting))
            .with_state(inner.clone());
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(c.cancelled_owned())
                .await;
        });
        Ok(GateSim {
            addr,
            inner,
            cancel,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `http://127.0.0.1:<port>/api/v1` (what `sources.gate.url` takes).
    pub fn base_url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> GateStats {
        self.lock().stats.clone()
    }

    /// A portal transaction (`ui`, `uo`, `st`, `si`, `di`, `ai`, `aa`, `ur`, …) for `user` at
    /// `ap`; returns its id. Does not touch sessions (see [`GateSim::login`]).
    pub fn portal(&self, kind: &str, user: &SimUser, ap: &SimAp) -> i64 {
        self.lock().txlog_entry(kind, user, ap)
    }

    /// A portal login (`ui`) and the RADIUS session it starts; returns the session's
    /// `radacctid`.
    pub fn login(&self, user: &SimUser, ap: &SimAp) -> i64 {
        let mut i = self.lock();
        i.txlog_entry("ui", user, ap);
        let id = i.next_radacctid;
        i.next_radacctid += 1;
        let now = i.now();
        i.sessions.push(Session {
            radacctid: id,
            user: user.clone(),
            ap: ap.clone(),
            start: now,
            update: now,
            stop: None,
            octets: 0,
            terminate: None,
        });
        id
    }

    /// An interim update of every active session (RADIUS `Interim-Update`).
    pub fn update_sessions(&self) {
        let mut i = self.lock();
        let now = i.now();
        for s in i.sessions.iter_mut().filter(|s| s.stop.is_none()) {
            s.update = now;
            s.octets += 1_048_576;
        }
    }

    /// End a session: `uo` (logout), `st` (session timeout), `si` (idle timeout) or `di`
    /// (disconnect); the portal log gets the entry, the session its stop time.
    pub fn end_session(&self, radacctid: i64, kind: &str) {
        let mut i = self.lock();
        let now = i.now();
        let Some(pos) = i.sessions.iter().position(|s| s.radacctid == radacctid) else {
            return;
        };
        let (user, ap) = (i.sessions[pos].user.clone(), i.sessions[pos].ap.clone());
        let s = &mut i.sessions[pos];
        s.stop = Some(now);
        s.update = now;
        s.terminate = Some(match kind {
            "uo" => "User-Request",
            "st" => "Session-Timeout",
            "si" => "Idle-Timeout",
            _ => "Admin-Reset",
        });
        i.txlog_entry(kind, &user, &ap);
    }

    /// Ids of the active sessions.
    pub fn active_sessions(&self) -> Vec<i64> {
        self.lock()
            .sessions
            .iter()
            .filter(|s| s.stop.is_none())
            .map(|s| s.radacctid)
            .collect()
    }

    /// Ids of the well-formed transaction-log entries of these types (what a client must
    /// deliver exactly once).
    pub fn txlog_ids(&self, kinds: &[&str]) -> Vec<i64> {
        self.lock()
            .txlog
            .iter()
            .filter(|v| {
                v.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| kinds.contains(&t))
                    && v.get("datetime")
                        .and_then(Value::as_str)
                        .is_some_and(|d| DateTime::parse_from_rfc3339(d).is_ok())
            })
            .filter_map(|v| v.get("id").and_then(Value::as_i64))
            .collect()
    }

    /// Any JSON as the next transaction-log entry (malformed on purpose). With `with_id`, it
    /// gets the next id (as a number) unless it has one.
    pub fn push_raw_entry(&self, mut v: Value, with_id: bool) -> i64 {
        let mut i = self.lock();
        let id = i.next_txid;
        i.next_txid += 1;
        if with_id && let Some(o) = v.as_object_mut() {
            o.entry("id").or_insert(json!(id));
        }
        i.txlog.push(v);
        id
    }

    /// The next `n` requests get `status` (429 with `Retry-After: retry_after`, 5xx as a
    /// gateway's HTML page, 200 as a JSON body cut off mid-way).
    pub fn fail_next(&self, n: usize, status: u16, retry_after: u64) {
        let mut i = self.lock();
        i.failures.retry_after = retry_after;
        i.failures.queue.extend(std::iter::repeat_n(status, n));
    }

    /// Accounting pages after the first fail with `status`, `n` times (a list cut short).
    pub fn fail_later_accounting_pages(&self, n: usize, status: u16) {
        self.lock().fail_later_pages = (n, status);
    }

    /// A malformed record in the active-session list (with any `radacctid` it carries).
    pub fn push_raw_session(&self, v: Value) {
        self.lock().raw_sessions.push(v);
    }

    /// Every `k`-th transaction-log request (counting all of them) is refused with 429 and
    /// `Retry-After: 0`, for good (a busy hotspot's rate limit); 0 stops it.
    pub fn throttle_every(&self, k: u64) {
        self.lock().throttle_every = k;
    }

    /// Before answering each page request with a cursor, `n` new logins arrive.
    pub fn insert_while_paging(&self, n: usize) {
        self.lock().insert_while_paging = n;
    }

    /// Cursors carry an offset instead of an id: entries arriving between page requests
    /// shift the pages, and the next page repeats entries already sent.
    pub fn offset_cursors(&self, on: bool) {
        self.lock().offset_cursors = on;
    }

    /// Each page after the first repeats the previous page's last entry.
    pub fn duplicate_across_pages(&self, on: bool) {
        self.lock().duplicate_across_pages = on;
    }

    /// The server's clock is this far off (datetimes of new records).
    pub fn set_clock_offset(&self, d: chrono::Duration) {
        self.lock().clock_offset = d;
    }

    /// Restart: outstanding cursors are refused; with `lose_data`, every record is gone and
    /// ids start again at 1 (a restored backup, a new tenant database).
    pub fn restart(&self, lose_data: bool) {
        let mut i = self.lock();
        i.epoch += 1;
        if lose_data {
            i.txlog.clear();
            i.sessions.clear();
            i.next_txid = 1;
            i.next_radacctid = 1;
        }
    }

    /// Replace the accepted token (the old one then gets 401).
    pub fn set_token(&self, token: &str) {
        self.lock().token = token.into();
    }

    /// Random activity for `gatehouse sim gate` / the demo: logins, logouts and timeouts of
    /// a few invented users every `every`.
    pub fn spawn_generator(
        self: &Arc<Self>,
        every: std::time::Duration,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let sim = self.clone();
        tokio::spawn(async move {
            let users = demo_users();
            let aps = default_aps();
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let active = sim.active_sessions();
                let r: f64 = rand::random();
                if active.len() < 2 || (r < 0.5 && active.len() < users.len()) {
                    let busy: Vec<i64> = {
                        let i = sim.lock();
                        i.sessions
                            .iter()
                            .filter(|s| s.stop.is_none())
                            .map(|s| s.user.id)
                            .collect()
                    };
                    if let Some(u) = users.iter().find(|u| !busy.contains(&u.id)) {
                        let ap = &aps[rand::random_range(0..aps.len())];
                        sim.login(u, ap);
                    }
                } else if let Some(id) = active.first() {
                    let kind = ["uo", "st", "si", "di"][rand::random_range(0..4)];
                    sim.end_session(*id, kind);
                } else {
                    sim.update_sessions();
                }
            }
        })
    }

    pub fn shutdown(&self) {
        self.cancel.cancel();
    }
}

impl Drop for GateSim {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Invented users for the demo (odd ids log in to RADIUS with their e-mail address).
pub fn demo_users() -> Vec<SimUser> {
    vec![
        SimUser::new(5431, "alex.berg", 0x02_1a_2b_3c_4d_01),
        SimUser::new(5432, "kim.lund", 0x02_1a_2b_3c_4d_02),
        SimUser::new(5433, "sam.holt", 0x02_1a_2b_3c_4d_03),
        SimUser::new(5434, "guest-7", 0x02_1a_2b_3c_4d_04),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_is_base64_json_like_the_seed() {
        // The seed's `cursor=eyJpZCI6MTAwfQ%3D%3D` is base64 of {"id":100}.
        assert_eq!(b64(br#"{"id":100}"#), "eyJpZCI6MTAwfQ==");
        assert_eq!(unb64("eyJpZCI6MTAwfQ==").unwrap(), br#"{"id":100}"#);
        assert_eq!(
            mac_text(0x00_00_aa_bb_cc_dd_ee_ff, true),
            "AA-BB-CC-DD-EE-FF"
        );
    }

    /// Seed 003's example responses (tests/fixtures/gate/) name every field: the simulator
    /// answers with all of them, with the same JSON types where the example has a value.
    #[tokio::test]
    async fn every_field_of_the_seeds_examples() {
        let sim = GateSim::start(GateSimConfig::default()).await.unwrap();
        sim.login(&demo_users()[0], &default_aps()[0]);
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        for (endpoint, fixture) in [
            (
                "txlog_portal/",
                include_str!("../../tests/fixtures/gate/txlog_portal_example.json"),
            ),
            (
                "aaa_accounting/?session_status=active",
                include_str!("../../tests/fixtures/gate/aaa_accounting_example.json"),
            ),
        ] {
            let want: Value = serde_json::from_str(fixture).unwrap();
            let url = format!("{}/{endpoint}", sim.base_url());
            let res = http.get(&url).send().await.unwrap();
            assert_eq!(res.status(), 401, "no token, no data");
            let got: Value = http
                .get(&url)
                .bearer_auth(SIM_TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            for k in ["next", "previous", "results"] {
                assert!(got.get(k).is_some(), "{endpoint}: {k}");
            }
            let (w, g) = (&want["results"][0], &got["results"][0]);
            for (k, v) in w.as_object().unwrap() {
                let gv = g.get(k).unwrap_or_else(|| panic!("{endpoint}: no {k}"));
                let kind = |v: &Value| match v {
                    Value::Null => "null",
                    Value::Bool(_) => "bool",
                    Value::Number(_) => "number",
                    Value::String(_) => "string",
                    _ => "other",
                };
                if !v.is_null() && !gv.is_null() {
                    assert_eq!(
                        kind(v),
                        kind(gv),
                        "{endpoint}: {k} is {gv}, the seed has {v}"
                    );
                }
            }
        }
    }
}
