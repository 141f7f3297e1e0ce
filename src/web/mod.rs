//! The local HTTP server. It runs whenever `web:` is configured, with or without cameras:
//! - the camera routes ([`media`]): live HLS following the user's NVR API contract (seed 004),
//!   snapshots, saved pictures, door events' pictures and a small player page;
//! - accounts ([`session`]): `POST /api/auth/login`, `POST /api/auth/change-password`;
//! - the access-control API of seed 001 ([`access`]): points, their health, hardware devices
//!   (`X-API-Key`), users, door commands;
//! - seed 001's emergency operations and audit ([`ops`]), metrics and reports ([`report`])
//!   under `/api/access-control`;
//! - seed 004's devices, channels, device info, recording days and camera alarms ([`nvr`]);
//! - the OpenAPI description of all of it at `/api/openapi.json`, generated from the handlers.
//!
//! Every route but `/healthz`, the player page, its script, the login and the OpenAPI
//! document needs a token ([`auth`]): no open camera feeds on the LAN by default. A token
//! carries a role (`viewer` reads, `operator` also opens doors, takes snapshots and starts
//! streams, `admin` also runs emergency operations and edits points): 401 without or with a
//! bad token, 403 for a role that may not.
//! Every error answers `{"detail": …}` JSON, axum's own included (`json_errors`).

mod access;
pub mod accounts;
pub mod auth;
mod events;
/// Entry points for the fuzz targets (`fuzz/`): not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
mod media;
mod nvr;
mod ops;
mod prom;
mod qr;
mod report;
mod session;
mod stream;

use crate::bus::Bus;
use crate::config::{Config, Role};
use crate::media::service::Media;
use crate::storage::Store;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The hardware points as MQTT shows them, from the database: the MQTT sink starts with them,
/// so a restart does not clear their Home Assistant entities (and a user's names, areas and
/// settings with them) before the web server reports them again. None without `web:`:
/// nothing receives their heartbeats then, and their entities go.
pub(crate) fn hardware_points(cfg: &Config, store: &Store) -> Vec<crate::model::HardwarePoint> {
    if cfg.web.is_none() {
        return Vec::new();
    }
    let at = access::points::At::now(&crate::clock::SystemClock, None);
    store
        .points()
        .unwrap_or_default()
        .iter()
        .filter_map(|r| access::points::hardware_state(cfg, r, &at))
        .collect()
}

/// The largest request body accepted.
const MAX_BODY: usize = 1 << 20;

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct Web {
    pub(crate) media: Option<Media>,
    pub(crate) store: Store,
    /// Door commands, hardware points, health.
    pub(crate) bus: Bus,
    pub(crate) config: watch::Receiver<Arc<Config>>,
    pub(crate) signer: auth::UrlSigner,
    pub(crate) accounts: accounts::Accounts,
    pub(crate) limits: limits::Limiter,
    pub(crate) http_stats: prom::HttpStats,
    /// Cancelled at shutdown: long answers (event streams) end so the server can stop.
    pub(crate) cancel: CancellationToken,
    /// Net2 doors and users (names only), and the cameras' device info and reachability.
    pub(crate) directory: crate::directory::Directory,
    /// Told when a hardware point changed (register, heartbeat, edit, delete).
    pub(crate) hardware: Arc<tokio::sync::Notify>,
    /// Hardware heartbeats received, on the monotonic clock.
    pub(crate) beats: access::points::Beats,
    pub(crate) emergency: crate::emergency::Emergency,
    /// Wall and monotonic time (a test steps the wall clock).
    pub(crate) clock: Arc<dyn crate::clock::Clock>,
}

impl Web {
    /// Now, for judging hardware points' connections.
    pub(crate) fn at(&self) -> access::points::At<'_> {
        access::points::At::now(self.clock.as_ref(), Some(&self.beats))
    }

    /// `web.rate_limits` now (reloaded live).
    pub(crate) fn rate_limits(&self) -> crate::config::RateLimits {
        self.config
            .borrow()
            .web
            .as_ref()
            .map(|w| w.rate_limits)
            .unwrap_or_default()
    }

    /// The running config (hot reloads included).
    pub(crate) fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }
}

/// What the server needs from the running daemon.
pub struct Context {
    pub media: Option<Media>,
    pub store: Store,
    pub bus: Bus,
    pub config: watch::Receiver<Arc<Config>>,
    pub directory: crate::directory::Directory,
    pub emergency: crate::emergency::Emergency,
    pub clock: Arc<dyn crate::clock::Clock>,
}

/// Every error: `{"detail": "…"}` (seed 001 and seed 004).
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Detail {
    pub detail: String,
}

/// The seed's pagination object (seed 001 lists).
#[derive(Serialize, Deserialize, utoipa::ToSchema, Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pagination {
    pub page: u64,
    pub limit: u64,
    pub total: u64,
    #[serde(rename = "totalPages")]
    pub total_pages: u64,
}

impl Pagination {
    /// Page `page` (from 1) of `limit` items, `total` in all.
    pub fn new(page: u64, limit: u64, total: u64) -> Pagination {
        Pagination {
            page,
            limit,
            total,
            total_pages: total.div_ceil(limit.max(1)),
        }
    }

    /// The page that starts at item `offset` (from 0).
    pub fn at_offset(offset: u64, limit: u64, total: u64) -> Pagination {
        Pagination::new(offset / limit.max(1) + 1, limit, total)
    }
}

/// `{"status": "ok"}`.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Status {
    pub status: String,
}

pub(crate) fn detail(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, axum::Json(json!({ "detail": msg.into() }))).into_response()
}

/// A secret in a JSON body (a password, a door code): a string, or a number as its digits.
/// Never serde's type error, which quotes the value ("invalid type: integer `123456`"):
/// axum answers a rejected body with that text and logs it (`axum::rejection`, trace).
pub(crate) mod secret_text {
    use serde::de::{Deserialize, Deserializer, Error};

    pub(crate) fn required<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        crate::secret::json_text(serde_json::Value::deserialize(d)?)
            .ok_or_else(|| D::Error::custom("expected a string (a secret: its value is not shown)"))
    }
}

/// Who is asking, from the request's token (set by [`authenticate`] on every protected route).
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The account or token name (`sub`).
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// `Err(403 answer)` unless the caller's role includes `role`.
    #[allow(clippy::result_large_err)]
    pub(crate) fn need(&self, role: Role) -> Result<(), Response> {
        if self.role >= role {
            Ok(())
        } else {
            Err(detail(
                StatusCode::FORBIDDEN,
                format!(
                    "Insufficient permissions: this needs the {} role ({} is {})",
                    role.as_str(),
                    self.name,
                    self.role.as_str()
                ),
            ))
        }
    }

    /// How commands and audit entries name the caller.
    pub(crate) fn requester(&self) -> String {
        format!("rest:{}", self.name)
    }
}

/// Errors made outside the handlers answer `{"detail": …}` too, with their status and headers
/// (`Allow`) kept: axum's rejections (a channel that is not a number, a bad query string:
/// text/plain), unknown paths (404) and methods (405), both with empty bodies. One layer
/// over every route, so no handler has to remember it.
async fn json_errors(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let res = next.run(req).await;
    let status = res.status();
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    // Only axum's own answers get here (handlers answer JSON): a line of text at most.
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let msg = if !text.is_empty() {
        text
    } else if status == StatusCode::NOT_FOUND {
        format!("no such path: {method} {path}")
    } else if status == StatusCode::METHOD_NOT_ALLOWED {
        format!("{method} is not allowed on {path} (see Allow)")
    } else {
        status.canonical_reason().unwrap_or("error").to_string()
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(json!({ "detail": msg }).to_string()))
}

pub(crate) fn error_response(e: &crate::error::Error) -> Response {
    use crate::error::ErrorKind::*;
    let code = match e.kind() {
        InvalidArgument | Config => StatusCode::NOT_FOUND,
        Unavailable | Protocol | Auth => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    detail(code, e.to_string())
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The request's token: `Authorization: Bearer`, else `?token=`.
fn token_of(req: &Request) -> Option<String> {
    if let Some(h) = req.headers().get(header::AUTHORIZATION)
        && let Ok(s) = h.to_str()
        && let Some(t) = s.strip_prefix("Bearer ")
    {
        return Some(t.trim().to_string());
    }
    let q: Query<TokenQuery> = Query::try_from_uri(req.uri()).ok()?;
    q.0.token
}

/// Check the token and put the [`Caller`] in the request. Tokens from `gatehouse token`
/// without a role are an admin's (as before roles existed); signed URLs are limited by their
/// scope and act as an operator inside it (a player's token starts its stream). A login
/// token stands while its account does, with the account's current role.
async fn authenticate(State(w): State<Web>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let token = token_of(&req);
    // A hardware device sends its cached events with its X-API-Key (seed 001), not a token.
    if token.is_none()
        && (path == "/api/access-control/events/sync" || path == "/api/qr/scan")
        && req.headers().contains_key("x-api-key")
    {
        if let Err(r) = access::hardware::check_key(&w, req.headers()) {
            return r;
        }
        req.extensions_mut().insert(Caller {
            name: "hardware".into(),
            role: Role::Operator,
        });
        let key = if path == "/api/qr/scan" {
            "qr-scan"
        } else {
            "sync"
        };
        return within_limit(&w, limits::Class::Hardware, key, req, next).await;
    }
    // Signed URLs all name `gatehouse`: each scope has its own budget (one picture link, one
    // player), not one for every notification together.
    let mut scope_key = None;
    let caller = match w.signer.check(token.as_deref(), &path) {
        Ok(None) => Caller {
            name: "anonymous".into(),
            role: Role::Admin,
        },
        Ok(Some(c)) if c.login => match w.accounts.token_stands(&c.sub, c.pwv.as_deref()) {
            Some(role) => Caller { name: c.sub, role },
            None => {
                tracing::info!(path, user = %c.sub, "web request refused: the account changed");
                return detail(
                    StatusCode::UNAUTHORIZED,
                    "this session ended (account removed or password changed): log in again",
                );
            }
        },
        Ok(Some(c)) => {
            let role = c.role.unwrap_or(if c.scope.is_some() {
                Role::Operator
            } else {
                Role::Admin
            });
            if let Some([first, ..]) = c.scope.as_deref() {
                scope_key = Some(format!("scope:{first}"));
            }
            Caller { name: c.sub, role }
        }
        Err(why) => {
            tracing::info!(path, reason = %why, "web request refused");
            return detail(StatusCode::UNAUTHORIZED, why);
        }
    };
    // HLS playlists and segments are a player's steady stream, not API calls.
    if path.starts_with("/hls/") {
        req.extensions_mut().insert(caller);
        return next.run(req).await;
    }
    let key = scope_key.unwrap_or_else(|| format!("user:{}", caller.name));
    req.extensions_mut().insert(caller);
    within_limit(&w, limits::Class::of_path(&path), &key, req, next).await
}

/// A request's body must arrive within `web.body_read_timeout` of its headers: a client that
/// sends its headers on time and then a body that stops short (or trickles) held its
/// connection and the handler's task for ever. Past the deadline the body read fails and the
/// answer is 408 with `Connection: close`.
async fn body_deadline(State(w): State<Web>, req: Request, next: Next) -> Response {
    use axum::body::HttpBody as _;
    use futures_util::StreamExt as _;
    use std::sync::atomic::{AtomicBool, Ordering};
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let limit = w
        .config()
        .web
        .as_ref()
        .map(|c| c.body_read_timeout.get())
        .unwrap_or(std::time::Duration::from_secs(30));
    let deadline = tokio::time::Instant::now() + limit;
    let late = Arc::new(AtomicBool::new(false));
    let flag = late.clone();
    let (parts, body) = req.into_parts();
    let timed = futures_util::stream::unfold(Some(body.into_data_stream()), move |s| {
        let flag = flag.clone();
        async move {
            let mut s = s?;
            match tokio::time::timeout_at(deadline, s.next()).await {
                Ok(Some(chunk)) => Some((chunk, Some(s))),
                Ok(None) => None,
                Err(_) => {
                    flag.store(true, Ordering::Relaxed);
                    Some((
                        Err(axum::Error::new(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the request body did not arrive in time",
                        ))),
                        None,
                    ))
                }
            }
        }
    });
    let path = parts.uri.path().to_string();
    let res = next
        .run(Request::from_parts(parts, Body::from_stream(timed)))
        .await;
    if !late.load(Ordering::Relaxed) {
        return res;
    }
    tracing::info!(path, timeout = ?limit, "web request refused: its body did not arrive in time (web.body_read_timeout)");
    let mut r = detail(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the request body did not arrive within {limit:?} of its headers (web.body_read_timeout)"
        ),
    );
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Count the request against `key`'s budget of `class` (`web.rate_limits`): past it 429,
/// else the answer with the `X-RateLimit-*` headers.
async fn within_limit(
    w: &Web,
    class: limits::Class,
    key: &str,
    req: Request,
    next: Next,
) -> Response {
    let decision = w.limits.check(class, key, class.limit(&w.rate_limits()));
    if !decision.allowed {
        tracing::info!(path = req.uri().path(), key, "rate limit reached");
        return decision.refusal();
    }
    let mut res = next.run(req).await;
    decision.headers(res.headers_mut());
    res
}

/// Hardware routes: limited per device (the point of a heartbeat's path; a registration by
/// its client address).
async fn limit_hardware(
    State(w): State<Web>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let key = match path
        .strip_prefix("/api/access-control/points/")
        .and_then(|p| p.strip_suffix("/heartbeat"))
    {
        Some(point) => format!("point:{point}"),
        None => format!("addr:{}", peer.ip()),
    };
    within_limit(&w, limits::Class::Hardware, &key, req, next).await
}

/// Public API routes (the login): limited per client address.
async fn limit_by_address(
    State(w): State<Web>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let key = format!("addr:{}", peer.ip());
    within_limit(&w, limits::Class::Standard, &key, req, next).await
}

/// The OpenAPI document's frame; the paths come from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "gatehouse",
        description = "Net2 doors, Hikvision cameras and their history, served locally. Errors are `{\"detail\": …}`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(Detail, Status))
)]
struct ApiDoc;

struct BearerAuth;

/// Answers every API route can give, documented once: 400 for parameters that do not parse,
/// 408 / 413 / 415 / 422 for bodies, 401 / 403 where a token is needed, 429 (rate limits) and 500
/// anywhere.
struct CommonAnswers;

impl utoipa::Modify for CommonAnswers {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let answer = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Detail")))
                        .build(),
                )
                .build()
        };
        for item in api.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                // `security(())` on an operation: public (the login).
                let public = op
                    .security
                    .as_ref()
                    .is_some_and(|s| s.iter().all(|r| r == &Default::default()));
                let r = &mut op.responses.responses;
                let mut add = |code: &str, what: &str| {
                    r.entry(code.to_string())
                        .or_insert_with(|| answer(what).into());
                };
                // Path and query parameters that do not parse (axum's rejections).
                add("400", "Invalid request parameters");
                if op.request_body.is_some() {
                    add(
                        "408",
                        "the body did not arrive in time (web.body_read_timeout)",
                    );
                    add("413", "the body is too large");
                    add("415", "the body is not JSON (Content-Type)");
                    add(
                        "422",
                        "the JSON does not fit: wrong types, unknown or missing fields",
                    );
                }
                if !public {
                    add(
                        "401",
                        "no token, a bad or expired one, or one that does not open this path",
                    );
                    add("403", "the token's role may not do this");
                }
                add("429", "rate limit reached (see Retry-After)");
                add("500", "Internal server error");
            }
        }
    }
}

impl utoipa::Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Header(
                utoipa::openapi::security::ApiKeyValue::new("X-API-Key"),
            )),
        );
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Bind `web.bind` (before the media service starts, so URLs it hands out can name the real
/// port when the config says port 0).
pub async fn bind(cfg: &crate::config::WebConfig) -> crate::error::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(cfg.bind).await.map_err(|e| {
        crate::error::Error::with_source(
            crate::error::ErrorKind::Config,
            format!("unable to listen on {} (web.bind)", cfg.bind),
            e,
        )
    })
}

/// The router and its OpenAPI document.
fn router(w: Web) -> axum::Router {
    let protected = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(media::live_start))
        .routes(routes!(media::live_stop))
        .routes(routes!(media::live_heartbeat))
        .routes(routes!(media::snapshot))
        .routes(routes!(media::picture))
        .routes(routes!(media::event_picture))
        .routes(routes!(session::change_password))
        .routes(routes!(stream::events_stream))
        .routes(routes!(events::list))
        .routes(routes!(events::export))
        .routes(routes!(events::sync))
        .routes(routes!(events::agent))
        .routes(routes!(events::review))
        .routes(routes!(prom::metrics))
        .routes(routes!(access::points::list, access::points::create))
        .routes(routes!(access::points::edit, access::points::delete))
        .routes(routes!(access::points::health))
        .routes(routes!(access::doors::open))
        .routes(routes!(qr::scan))
        .routes(routes!(access::users::list, access::users::create))
        .routes(routes!(
            access::users::one,
            access::users::update,
            access::users::remove
        ))
        .routes(routes!(ops::emergency_get))
        .routes(routes!(ops::emergency_lockdown))
        .routes(routes!(ops::emergency_unlock))
        .routes(routes!(ops::emergency_restore))
        .routes(routes!(ops::audit_list, ops::audit_create))
        .routes(routes!(report::metrics))
        .routes(routes!(report::export))
        .routes(routes!(nvr::devices))
        .routes(routes!(nvr::devices_active))
        .routes(routes!(nvr::channels))
        .routes(routes!(nvr::system_info))
        .routes(routes!(nvr::storage))
        .routes(routes!(nvr::channel_info))
        .routes(routes!(nvr::test_connection))
        .routes(routes!(nvr::record_days_full))
        .routes(routes!(nvr::month_data))
        .routes(routes!(nvr::alarms, nvr::alarms_delete))
        .routes(routes!(nvr::alarm_delete))
        .route("/hls/{device}/{ch}/{file}", get(media::hls_file))
        .route_layer(axum::middleware::from_fn_with_state(
            w.clone(),
            authenticate,
        ));
    let public = OpenApiRouter::new()
        .routes(routes!(session::login))
        .route_layer(axum::middleware::from_fn_with_state(
            w.clone(),
            limit_by_address,
        ));
    // Hardware devices authenticate with X-API-Key (checked by the handlers), not tokens;
    // 1000 requests a minute per device.
    let hardware = OpenApiRouter::new()
        .routes(routes!(access::hardware::register))
        .routes(routes!(access::hardware::heartbeat))
        .route_layer(axum::middleware::from_fn_with_state(
            w.clone(),
            limit_hardware,
        ));
    let (protected, mut api) = OpenApiRouter::new()
        .merge(public)
        .merge(hardware)
        .merge(protected)
        .split_for_parts();
    api.info.version = env!("CARGO_PKG_VERSION").to_string();
    // After the split: the paths come from the routers, not from `ApiDoc`.
    utoipa::Modify::modify(&CommonAnswers, &mut api);
    // Served as it is built, once: the document as a tree of small allocations took ~2 MB of
    // a daemon that idles at ~6 MB of heap (issue 18; heaptrack), its JSON ~10 % of that.
    let api =
        bytes::Bytes::from(serde_json::to_vec(&api).expect("the OpenAPI document serializes"));
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/live/{device}/{ch}", get(media::player))
        .route("/static/hls.min.js", get(media::hls_js))
        .route(
            "/api/openapi.json",
            get(move || {
                let api = api.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        api,
                    )
                }
            }),
        )
        .merge(protected)
        .layer(axum::middleware::from_fn_with_state(
            w.clone(),
            prom::observe,
        ))
        .layer(axum::middleware::from_fn_with_state(
            w.clone(),
            body_deadline,
        ))
        // Request bodies: a sync of 1000 events is ~100 kB; more is refused (413).
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(w)
        .layer(axum::middleware::from_fn(json_errors))
}

/// Serve on `listener` until `cancel`. Returns the bound address.
pub async fn serve(
    ctx: Context,
    listener: tokio::net::TcpListener,
    cancel: CancellationToken,
) -> crate::error::Result<SocketAddr> {
    let config = ctx.config.borrow().clone();
    let cfg = config.web.clone().ok_or_else(|| {
        crate::error::Error::new(crate::error::ErrorKind::Config, "web is not configured")
    })?;
    // The media service's signer when there is one: its base URL is fixed below for both.
    let signer = match ctx.media.as_ref().and_then(|m| m.urls()) {
        Some(s) => s.clone(),
        None => auth::UrlSigner::new(&cfg)?,
    };
    if !signer.auth_required() {
        tracing::warn!(bind = %cfg.bind, "web.auth is none: anyone who reaches the server sees the cameras and the doors");
    }
    if cfg.public_url.is_none()
        && (cfg.bind.ip().is_loopback() || cfg.bind.ip().is_unspecified())
        && cfg.bind.port() != 0
    {
        tracing::info!(bind = %cfg.bind, "web.public_url is not set: picture and stream URLs in MQTT payloads name {}, which other machines (Home Assistant, phones) cannot open", cfg.base_url());
    }
    let accounts = accounts::Accounts::load(ctx.config.clone(), ctx.store.clone()).await;
    let w = Web {
        media: ctx.media,
        store: ctx.store,
        bus: ctx.bus,
        config: ctx.config,
        signer: signer.clone(),
        accounts,
        limits: limits::Limiter::default(),
        http_stats: Default::default(),
        cancel: cancel.clone(),
        directory: ctx.directory,
        hardware: Default::default(),
        beats: Default::default(),
        emergency: ctx.emergency,
        clock: ctx.clock,
    };
    tokio::spawn(access::hardware::monitor(w.clone(), cancel.clone()));
    let app = router(w);
    let addr = listener.local_addr().map_err(|e| {
        crate::error::Error::with_source(crate::error::ErrorKind::Internal, "no local address", e)
    })?;
    // Port 0 (tests): the URLs handed out must name the port actually bound.
    if cfg.public_url.is_none() && cfg.bind.port() == 0 {
        signer.set_base(&format!("http://{addr}"));
    }
    tracing::info!(%addr, "web server listening");
    tokio::spawn(accept_loop(
        listener,
        app,
        cfg.header_read_timeout.get(),
        cfg.max_connections as usize,
        cancel,
    ));
    Ok(addr)
}

/// Accept connections until `cancel`, each served over HTTP/1.1 (WebSocket upgrades included)
/// with the client's address for [`axum::extract::ConnectInfo`]. A client has
/// `header_timeout` to send its request line and headers (`web.header_read_timeout`):
/// `axum::serve` sets no timer, so hyper's header timeout never ran and a client that opened
/// a connection and never finished its headers held it, and its task, forever. At most
/// `max_connections` are open at once (`web.max_connections`): past it the next client waits
/// in the listen backlog, so a flood of connections cannot take every file descriptor the
/// process has (Net2, MQTT and the database need theirs). At `cancel` the server stops
/// accepting and each connection ends after its current answer.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    header_timeout: std::time::Duration,
    max_connections: usize,
    cancel: CancellationToken,
) {
    use hyper::service::Service as _;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let mut full = false;
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => {
                full = false;
                p
            }
            Err(_) => {
                if !full {
                    full = true;
                    tracing::warn!(
                        max_connections,
                        "web server: every connection slot is taken (web.max_connections); new clients wait"
                    );
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                }
            }
        };
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                // The client gave up before we got to it.
                Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                ) => continue,
                // Out of file descriptors and the like: wait for some to close.
                Err(e) => {
                    tracing::error!(error = %e, "web server: unable to accept a connection");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        let tower = hyper_util::service::TowerToHyperService::new(app.clone());
        let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            tower.call(req)
        });
        let conn = http
            .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
            .with_upgrades();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            // The slot is free again when the connection ends.
            let _permit = permit;
            let mut conn = std::pin::pin!(conn);
            let r = tokio::select! {
                r = conn.as_mut() => r,
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            match r {
                // Also a kept-alive connection that stays quiet after its answers (browsers,
                // Home Assistant): routine, so not above debug.
                Err(e) if e.is_timeout() => tracing::debug!(
                    %peer,
                    timeout = ?header_timeout,
                    "web client closed: it did not send its request headers in time (web.header_read_timeout)"
                ),
                Err(e) => tracing::debug!(%peer, error = %e, "web connection ended"),
                Ok(()) => {}
            }
        });
    }
}
