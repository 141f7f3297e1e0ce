//! HTTP side: dispatcher, token endpoint, REST API.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use chrono::{NaiveDateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::signalr;
use super::state::{
    ACCESSLEVELS_JSON, DEPARTMENTS_JSON, DOORS_JSON, Inner, StoredEvent, TOKEN_INVALID_GRANT_JSON,
    TOKEN_MFA_JSON, description_of, offset_str, peripheral_of, priority_of, site_of,
};

const JSON_CT: &str = "application/json; charset=utf-8";
const MAX_BODY: usize = 1 << 20;

pub(crate) type Query = Vec<(String, String)>;

/// Case-insensitive query parameter lookup (ASP.NET binds parameters that way).
pub(crate) fn qget<'a>(q: &'a Query, name: &str) -> Option<&'a str> {
    q.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

pub(crate) fn json(status: StatusCode, body: impl Into<String>) -> Response {
    let mut r = Response::new(Body::from(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_CT));
    r
}

pub(crate) fn message(status: StatusCode, msg: &str) -> Response {
    json(status, serde_json::json!({ "Message": msg }).to_string())
}

fn empty_ok() -> Response {
    Response::new(Body::empty())
}

/// nginx's own error page.
pub(crate) fn nginx_page(status: StatusCode) -> Response {
    let line = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let body = format!(
        "<html>\r\n<head><title>{line}</title></head>\r\n<body>\r\n<center><h1>{line}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    );
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    h.insert(header::SERVER, HeaderValue::from_static("nginx"));
    r
}

fn iis_500() -> Response {
    let body = "<!DOCTYPE html>\r\n<html>\r\n<head><title>Runtime Error</title></head>\r\n<body>\r\n<h1>Server Error in '/' Application.</h1>\r\n<h2><i>Runtime Error</i></h2>\r\n<p>An application error occurred on the server.</p>\r\n</body>\r\n</html>\r\n";
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub(crate) fn unauthorized(inner: &Inner) -> Response {
    inner.lock().stats.unauthorized += 1;
    let mut r = message(
        StatusCode::UNAUTHORIZED,
        "Authorization has been denied for this request.",
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// The one handler: routes by lower-cased path (Net2 routes case-insensitively).
pub(crate) async fn dispatch(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let mut lower = path.to_ascii_lowercase();
    while lower.len() > 1 && lower.ends_with('/') {
        lower.pop();
    }
    let query: Query = url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    tracing::debug!(method = %req.method(), uri = %req.uri(), "net2 sim request");
    let slow = inner.faults.slow_ms.load(Relaxed);
    if slow > 0 {
        tokio::time::sleep(Duration::from_millis(slow)).await;
    }
    if lower == "/signalr" || lower.starts_with("/signalr/") {
        return signalr::handle(inner, req, &lower, &query).await;
    }
    if lower == "/api/v1/authorization/tokens" {
        if req.method() != Method::POST {
            return message(
                StatusCode::METHOD_NOT_ALLOWED,
                "The requested resource does not support http method 'GET'.",
            );
        }
        return token(&inner, req).await;
    }
    if lower.starts_with("/api/") {
        return api(&inner, req, &path, &lower, &query).await;
    }
    nginx_page(StatusCode::NOT_FOUND)
}

// -------------------------------------------------------------------- tokens

fn too_many(inner: &Inner) -> bool {
    let now = Instant::now();
    let mut st = inner.lock();
    st.stats.token_requests += 1;
    if inner.faults.token_429.load(Relaxed) {
        st.stats.token_429 += 1;
        return true;
    }
    while st
        .token_window
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
    {
        st.token_window.pop_front();
    }
    if st.token_window.len() >= inner.cfg.token_rate_limit_per_sec as usize {
        st.stats.token_429 += 1;
        return true;
    }
    st.token_window.push_back(now);
    false
}

fn token_error(body: &str) -> Response {
    let mut r = json(StatusCode::BAD_REQUEST, body);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn token(inner: &Arc<Inner>, req: Request) -> Response {
    if too_many(inner) {
        return nginx_page(StatusCode::TOO_MANY_REQUESTS);
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .unwrap_or_default();
    // OWIN reads only form bodies; anything else looks like a request without grant_type.
    let form: Query = if is_form {
        url::form_urlencoded::parse(&body).into_owned().collect()
    } else {
        Vec::new()
    };
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let grant = field("grant_type").unwrap_or("");
    let cfg = &inner.cfg;
    match grant {
        "password" => {
            inner.lock().stats.password_grants += 1;
            if field("client_id") != Some(cfg.client_id.as_str()) {
                return token_error(r#"{"error":"invalid_client"}"#);
            }
            if field("username") != Some(cfg.username.as_str())
                || field("password") != Some(cfg.password.as_str())
            {
                return token_error(TOKEN_INVALID_GRANT_JSON.trim());
            }
            if cfg.mfa_required {
                return token_error(TOKEN_MFA_JSON.trim());
            }
        }
        "refresh_token" => {
            inner.lock().stats.refresh_grants += 1;
            if field("client_id") != Some(cfg.client_id.as_str()) {
                return token_error(r#"{"error":"invalid_client"}"#);
            }
            let rt = field("refresh_token").unwrap_or("");
            let mut st = inner.lock();
            match st.refresh_tokens.remove(rt) {
                Some(exp) if Instant::now() < exp => {}
                _ => return token_error(TOKEN_INVALID_GRANT_JSON.trim()),
            }
        }
        _ => return token_error(r#"{"error":"unsupported_grant_type"}"#),
    }
    let offline = field("scope")
        .unwrap_or("")
        .split_whitespace()
        .any(|s| s == "offline_access");

    #[derive(Serialize)]
    struct TokenResponse {
        access_token: String,
        token_type: &'static str,
        expires_in: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        refresh_token: Option<String>,
        expiry_datetime: String,
    }
    let mut st = inner.lock();
    let access_token = inner.issue_access_token(&mut st);
    let refresh_token = offline.then(|| inner.issue_refresh_token(&mut st));
    drop(st);
    let exp = Utc::now() + cfg.token_lifetime;
    let resp = TokenResponse {
        access_token,
        token_type: "bearer",
        expires_in: cfg.token_lifetime.as_secs(),
        refresh_token,
        expiry_datetime: format!(
            "{}.{:07}Z",
            exp.format("%Y-%m-%dT%H:%M:%S"),
            exp.timestamp_subsec_nanos() / 100
        ),
    };
    let mut r = json(
        StatusCode::OK,
        serde_json::to_string(&resp).unwrap_or_default(),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

// -------------------------------------------------------------------- API

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Open,
    HoldOpen,
    Close,
    Control,
    Lockdown,
}

enum Route {
    Doors,
    DoorsStatus,
    Users,
    User(String),
    AccessLevels,
    Departments,
    Operators,
    Timezones,
    Version,
    Events,
    Command(Cmd),
}

fn route(lower: &str) -> Option<(Method, Route)> {
    let rest = lower.strip_prefix("/api/v1/")?;
    let get = |r| Some((Method::GET, r));
    let post = |c| Some((Method::POST, Route::Command(c)));
    match rest {
        "doors" => get(Route::Doors),
        "doors/status" => get(Route::DoorsStatus),
        "users" => get(Route::Users),
        "accesslevels" => get(Route::AccessLevels),
        "departments" => get(Route::Departments),
        "operators" => get(Route::Operators),
        "timezones" => get(Route::Timezones),
        "serversettings/version" | "serversettings/versions" => get(Route::Version),
        "events" => get(Route::Events),
        "commands/door/open" => post(Cmd::Open),
        "commands/door/holdopen" => post(Cmd::HoldOpen),
        "commands/door/close" => post(Cmd::Close),
        "commands/door/control" => post(Cmd::Control),
        "commands/controllockdown" => post(Cmd::Lockdown),
        _ => {
            let id = rest.strip_prefix("users/")?;
            (!id.is_empty() && !id.contains('/')).then(|| (Method::GET, Route::User(id.into())))
        }
    }
}

async fn api(inner: &Arc<Inner>, req: Request, path: &str, lower: &str, q: &Query) -> Response {
    let faults = &inner.faults;
    if faults.html_error.load(Relaxed) {
        return nginx_page(StatusCode::BAD_GATEWAY);
    }
    if faults.fail_500.load(Relaxed) {
        return iis_500();
    }
    let Some((method, route)) = route(lower) else {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        return message(
            StatusCode::NOT_FOUND,
            &format!(
                "No HTTP resource was found that matches the request URI 'http://{host}{path}'."
            ),
        );
    };
    if req.method() != method {
        return message(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!(
                "The requested resource does not support http method '{}'.",
                req.method()
            ),
        );
    }
    match route {
        Route::Events => inner.lock().stats.events_requests += 1,
        Route::Users => inner.lock().stats.users_requests += 1,
        _ => {}
    }
    let authorised = bearer(req.headers()).is_some_and(|t| inner.token_valid(t));
    if !authorised {
        return unauthorized(inner);
    }
    let empty = faults.empty_bodies.load(Relaxed);
    let list = |body: String| {
        if empty {
            empty_ok()
        } else {
            json(StatusCode::OK, body)
        }
    };
    match route {
        Route::Doors => list(DOORS_JSON.to_string()),
        Route::DoorsStatus => list(doors_status(inner)),
        Route::Users | Route::User(_) if faults.users_500.load(Relaxed) => iis_500(),
        Route::Users if faults.users_empty.load(Relaxed) => empty_ok(),
        Route::Users => list(serde_json::to_string(&*inner.users()).unwrap_or_default()),
        Route::User(id) => user(inner, &id),
        Route::AccessLevels => list(ACCESSLEVELS_JSON.trim().to_string()),
        Route::Departments => list(DEPARTMENTS_JSON.trim().to_string()),
        Route::Operators => list(operators(inner)),
        Route::Timezones => list(
            r#"[{"id":1,"name":"Altid"},{"id":2,"name":"Arbejdstid"},{"id":3,"name":"Aldrig"}]"#
                .to_string(),
        ),
        Route::Version => json(
            StatusCode::OK,
            r#"{"version":"6.8.21021.1","apiVersion":"1.0"}"#,
        ),
        Route::Events => {
            let late = faults.events_delay_ms.load(Relaxed);
            if late > 0 {
                tokio::time::sleep(Duration::from_millis(late)).await;
            }
            if empty {
                return empty_ok();
            }
            events(inner, q)
        }
        Route::Command(cmd) => {
            let ct = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
                .await
                .unwrap_or_default();
            let resp = command(inner, cmd, path, &ct, body);
            // The ACU acts at once; Net2's answer can come after the door moved (its status
            // frame reaches the client first).
            let late = faults.command_answer_ms.load(Relaxed);
            if late > 0 {
                tokio::time::sleep(Duration::from_millis(late)).await;
            }
            resp
        }
    }
}

fn doors_status(inner: &Inner) -> String {
    #[derive(Serialize)]
    struct Entry<'a> {
        name: &'a str,
        id: u64,
        status: &'a super::DoorStatus,
    }
    let st = inner.lock();
    let entries: Vec<Entry<'_>> = inner
        .fixtures
        .doors
        .iter()
        .filter_map(|d| {
            st.doors.get(&d.id).map(|rt| Entry {
                name: &d.name,
                id: d.id,
                status: &rt.status,
            })
        })
        .collect();
    serde_json::to_string(&entries).unwrap_or_default()
}

fn user(inner: &Inner, id: &str) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return message(StatusCode::BAD_REQUEST, "The request is invalid.");
    };
    match inner.users().iter().find(|u| u.id == id) {
        Some(u) => json(StatusCode::OK, serde_json::to_string(u).unwrap_or_default()),
        None => message(StatusCode::NOT_FOUND, "User not found."),
    }
}

fn operators(inner: &Inner) -> String {
    let name = inner.cfg.username.as_str();
    let (first, last) = name.split_once(' ').unwrap_or((name, ""));
    serde_json::json!([{ "userID": 1, "firstName": first, "surname": last, "displayName": name }])
        .to_string()
}

// -------------------------------------------------------------------- events

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
}

#[derive(Debug, Clone, Copy)]
enum Cond {
    Time(Op, NaiveDateTime),
    Id(Op, i64),
}

fn bad(detail: &str) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        serde_json::json!({ "Message": "The request is invalid.", "MessageDetail": detail })
            .to_string(),
    )
}

/// Parse a server-local timestamp; any zone suffix is an error.
fn parse_local(v: &str) -> Result<NaiveDateTime, String> {
    let v = v.trim();
    let time_part = v.split_once(['T', 't', ' ']).map(|(_, t)| t).unwrap_or("");
    if v.ends_with(['Z', 'z']) || time_part.contains(['+', '-']) {
        return Err(format!(
            "eventTime '{v}' has a zone suffix; the server expects its local time without one"
        ));
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(v, f) {
            return Ok(t);
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN));
    }
    Err(format!("'{v}' is not a valid DateTime"))
}

fn parse_where(w: &str) -> Result<Vec<Cond>, String> {
    let lower = w.to_ascii_lowercase();
    let mut parts = Vec::new();
    let mut start = 0;
    while let Some(pos) = lower[start..].find(" and ") {
        parts.push(&w[start..start + pos]);
        start += pos + 5;
    }
    parts.push(&w[start..]);
    let mut out = Vec::new();
    for part in parts {
        let part = part
            .trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .trim();
        if part.is_empty() {
            return Err("empty condition".into());
        }
        let at = part
            .find(['>', '<', '='])
            .ok_or_else(|| format!("no comparison in '{part}'"))?;
        let field = part[..at].trim();
        let rest = &part[at..];
        let (op, len) = if rest.starts_with(">=") {
            (Op::Ge, 2)
        } else if rest.starts_with("<=") {
            (Op::Le, 2)
        } else if rest.starts_with("==") {
            (Op::Eq, 2)
        } else if rest.starts_with('>') {
            (Op::Gt, 1)
        } else if rest.starts_with('<') {
            (Op::Lt, 1)
        } else {
            (Op::Eq, 1)
        };
        let value = rest[len..].trim();
        if field.eq_ignore_ascii_case("eventTime") {
            let unq = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .or_else(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                .ok_or_else(|| format!("eventTime value {value} must be quoted"))?;
            out.push(Cond::Time(op, parse_local(unq)?));
        } else if field.eq_ignore_ascii_case("id") {
            let n = value
                .trim_matches('\'')
                .parse::<i64>()
                .map_err(|_| format!("'{value}' is not a valid id"))?;
            out.push(Cond::Id(op, n));
        } else {
            return Err(format!("unknown field '{field}'"));
        }
    }
    Ok(out)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RestEvent<'a> {
    event_time: String,
    id: i64,
    device_name: String,
    card_no: i64,
    event_type: i64,
    event_description: std::borrow::Cow<'static, str>,
    event_sub_type: i64,
    event_details: Option<&'a str>,
    linked_event: Option<i64>,
    first_name: Option<String>,
    middle_name: Option<String>,
    surname: Option<String>,
    #[serde(rename = "userID")]
    user_id: i64,
    priority: i64,
    address: u64,
    #[serde(rename = "peripheralID")]
    peripheral_id: i64,
    #[serde(rename = "ioBoardID")]
    io_board_id: Option<i64>,
    #[serde(rename = "doorGroupID")]
    door_group_id: i64,
    device_deleted: bool,
}

fn rest_event<'a>(inner: &'a Inner, e: &'a StoredEvent) -> RestEvent<'a> {
    let [first_name, middle_name, surname] = e
        .user_id
        .and_then(|u| inner.user_names(u))
        .unwrap_or_default();
    let device_name = if e.door == 0 {
        "Net2 Server".to_string()
    } else {
        match inner.fixtures.door_name(e.door) {
            Some(n) => format!("{} - {n}", site_of(e.door)),
            None => format!("{} - ACU {}", site_of(e.door), e.door),
        }
    };
    RestEvent {
        event_time: format!(
            "{}{}",
            e.time.format("%Y-%m-%dT%H:%M:%S%.3f"),
            offset_str(e.offset_minutes)
        ),
        id: e.id,
        device_name,
        card_no: e.card_no,
        event_type: e.event_type,
        event_description: description_of(e.event_type),
        event_sub_type: e.sub_type,
        event_details: e.details.as_deref(),
        linked_event: e.linked,
        first_name,
        middle_name,
        surname,
        user_id: e.user_id.unwrap_or(0),
        priority: priority_of(e.event_type),
        address: e.door,
        peripheral_id: peripheral_of(e.door, e.event_type),
        io_board_id: None,
        door_group_id: 0,
        device_deleted: false,
    }
}

fn events(inner: &Inner, q: &Query) -> Response {
    let conds = match qget(q, "where").map(str::trim).filter(|w| !w.is_empty()) {
        Some(w) => match parse_where(w) {
            Ok(c) => c,
            Err(e) => return bad(&e),
        },
        None => Vec::new(),
    };
    let (by_id, desc) = match qget(q, "orderBy").map(str::trim).filter(|o| !o.is_empty()) {
        None => (false, true),
        Some(o) => {
            let mut it = o.split_whitespace();
            let field = it.next().unwrap_or("");
            let dir = it.next().unwrap_or("asc");
            let by_id = if field.eq_ignore_ascii_case("eventTime") {
                false
            } else if field.eq_ignore_ascii_case("id") {
                true
            } else {
                return bad(&format!("cannot order by '{field}'"));
            };
            let desc = if dir.eq_ignore_ascii_case("desc") {
                true
            } else if dir.eq_ignore_ascii_case("asc") {
                false
            } else {
                return bad(&format!("bad sort direction '{dir}'"));
            };
            (by_id, desc)
        }
    };
    let rows = match qget(q, "rowCount").map(str::trim).filter(|r| !r.is_empty()) {
        None => 1000,
        Some(r) => match r.parse::<i64>() {
            Ok(n) => n.clamp(0, 1000) as usize,
            Err(_) => return bad(&format!("'{r}' is not a valid rowCount")),
        },
    };

    let st = inner.lock();
    let evs = &st.events;
    let (mut lo, mut hi) = (0usize, evs.len());
    for c in &conds {
        if let Cond::Time(op, t) = *c {
            let before = evs.partition_point(|e| e.time < t);
            let upto = evs.partition_point(|e| e.time <= t);
            match op {
                Op::Ge => lo = lo.max(before),
                Op::Gt => lo = lo.max(upto),
                Op::Le => hi = hi.min(upto),
                Op::Lt => hi = hi.min(before),
                Op::Eq => {
                    lo = lo.max(before);
                    hi = hi.min(upto);
                }
            }
        }
    }
    let slice = if lo < hi { &evs[lo..hi] } else { &evs[0..0] };
    let id_ok = |e: &StoredEvent| {
        conds.iter().all(|c| match *c {
            Cond::Id(op, n) => match op {
                Op::Ge => e.id >= n,
                Op::Gt => e.id > n,
                Op::Le => e.id <= n,
                Op::Lt => e.id < n,
                Op::Eq => e.id == n,
            },
            Cond::Time(..) => true,
        })
    };
    let picked: Vec<&StoredEvent> = if by_id {
        let mut v: Vec<&StoredEvent> = slice.iter().filter(|e| id_ok(e)).collect();
        v.sort_by_key(|e| e.id);
        if desc {
            v.reverse();
        }
        v.truncate(rows);
        v
    } else if desc {
        slice.iter().rev().filter(|e| id_ok(e)).take(rows).collect()
    } else {
        slice.iter().filter(|e| id_ok(e)).take(rows).collect()
    };
    let mut items: Vec<String> = picked
        .iter()
        .map(|e| serde_json::to_string(&rest_event(inner, e)).unwrap_or_default())
        .collect();
    if inner.faults.malformed_events.load(Relaxed) {
        let base = st.next_event_id + 1_000_000;
        let wrong = format!(
            r#"{{"eventTime":null,"id":{base},"deviceName":null,"cardNo":"0","eventType":"abc","eventDescription":null,"eventSubType":null,"userID":"x","address":"7242929"}}"#
        );
        let now = inner.local_now();
        let unknown = StoredEvent {
            id: base + 1,
            time: now,
            offset_minutes: inner.offset_now(),
            event_type: 9999,
            sub_type: 0,
            door: 6612642,
            user_id: None,
            token_type: 0,
            card_no: 0,
            details: Some("Ukendt".into()),
            linked: None,
        };
        let unknown = serde_json::to_string(&rest_event(inner, &unknown)).unwrap_or_default();
        let mid = items.len().min(1);
        items.insert(mid, wrong);
        items.push(unknown);
    }
    drop(st);
    if items.is_empty() {
        return empty_ok();
    }
    json(StatusCode::OK, format!("[{}]", items.join(",")))
}

// -------------------------------------------------------------------- commands

fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

fn command(inner: &Arc<Inner>, cmd: Cmd, path: &str, ct: &str, body: Bytes) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    inner.record_command(path, parsed.clone().unwrap_or(Value::Null));
    if !ct.to_ascii_lowercase().contains("json") {
        let shown = if ct.is_empty() {
            "application/octet-stream"
        } else {
            ct
        };
        return message(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!(
                "The request entity's media type '{shown}' is not supported for this resource."
            ),
        );
    }
    let Some(v) = parsed else {
        return message(StatusCode::BAD_REQUEST, "The request is invalid.");
    };
    let name = match cmd {
        Cmd::Open => "OpenDoor",
        Cmd::HoldOpen => "HoldDoorOpen",
        Cmd::Close => "CloseDoor",
        Cmd::Control => "DoorControl",
        Cmd::Lockdown => "ControlLockdown",
    };
    let known = |door: u64| inner.fixtures.door_name(door).is_some();
    match cmd {
        Cmd::Open | Cmd::HoldOpen | Cmd::Close => {
            let Some(door) = get_ci(&v, "doorId").and_then(as_u64) else {
                return bad("doorId is required");
            };
            if !known(door) {
                tracing::warn!(door, "net2 sim: command for unknown door (fire and forget)");
            } else {
                match cmd {
                    Cmd::Open => inner.timed_open(door, inner.cfg.door_open_time),
                    Cmd::HoldOpen => inner.hold_open(door),
                    _ => inner.close(door),
                }
            }
        }
        Cmd::Control => {
            let Some(door) = get_ci(&v, "doorId").and_then(as_u64) else {
                return bad("DoorId is required");
            };
            let Some(rf) = get_ci(&v, "relayFunction").filter(|r| r.is_object()) else {
                return bad("RelayFunction is required");
            };
            let relay = get_ci(rf, "relayId")
                .and_then(Value::as_str)
                .unwrap_or("Relay1");
            let relay2 = if relay.eq_ignore_ascii_case("Relay1") {
                false
            } else if relay.eq_ignore_ascii_case("Relay2") {
                true
            } else {
                return bad(&format!("unknown RelayId '{relay}'"));
            };
            let action = get_ci(rf, "relayAction")
                .and_then(Value::as_str)
                .unwrap_or("");
            let open_ms = get_ci(rf, "relayOpenTime").and_then(as_u64);
            enum A {
                Timed,
                Unlock,
                Lock,
            }
            let a = if action.eq_ignore_ascii_case("TimedOpen") {
                A::Timed
            } else if action.eq_ignore_ascii_case("Unlock") {
                A::Unlock
            } else if action.eq_ignore_ascii_case("Lock") {
                A::Lock
            } else {
                return bad(&format!("unknown RelayAction '{action}'"));
            };
            if !known(door) {
                tracing::warn!(door, "net2 sim: control for unknown door (fire and forget)");
            } else if relay2 {
                // The second relay is not reflected in doorRelayOpen; only the request is logged.
                inner.push_events(&[super::SimEvent::new(580, door)]);
            } else {
                match a {
                    A::Timed => inner.timed_open(
                        door,
                        open_ms
                            .map(Duration::from_millis)
                            .unwrap_or(inner.cfg.door_open_time),
                    ),
                    A::Unlock => inner.hold_open(door),
                    A::Lock => inner.close(door),
                }
            }
        }
        Cmd::Lockdown => {
            if get_ci(&v, "lockdown").and_then(Value::as_bool).is_none() {
                return bad("lockdown (true/false) is required");
            }
        }
    }
    let input: Box<RawValue> = serde_json::from_slice(&body)
        .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null"));
    json(
        StatusCode::OK,
        format!(
            r#"{{"commandName":"{name}","input":{},"output":{{"status":"FireAndForget","errors":null}}}}"#,
            input.get()
        ),
    )
}
