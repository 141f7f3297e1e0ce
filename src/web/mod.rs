//! The local HTTP server: live HLS following the user's NVR API contract (seed 004:
//! `GET /api/device/{device}/channel/{ch}/live`, `POST …/stop`, `POST …/heartbeat`, errors as
//! `{"detail": …}`), snapshots, saved pictures, door events' pictures and a small player page.
//! Every route but `/healthz`, the player page and its script needs a token ([`auth`]): no
//! open camera feeds on the LAN by default. Those three hold no data: the page is the same
//! for any camera name, and asks for the stream with the token of its own URL.
//! Every error answers `{"detail": …}` JSON, axum's own included (`json_errors`).

pub mod auth;

use crate::media::live::{hls_path, player_path, player_scope};
use crate::media::service::{Media, Trigger};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// hls.js (Apache-2.0, see `assets/hls.js.LICENSE`), served locally: the page works offline.
const HLS_JS: &str = include_str!("../../assets/hls.min.js");
const PLAYER: &str = include_str!("../../assets/player.html");

#[derive(Clone)]
struct Web {
    media: Media,
    signer: auth::UrlSigner,
}

fn detail(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, axum::Json(json!({ "detail": msg.into() }))).into_response()
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

fn error_response(e: &crate::error::Error) -> Response {
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

async fn require_token(State(w): State<Web>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let token = token_of(&req);
    match w.signer.check(token.as_deref(), &path) {
        Ok(_) => next.run(req).await,
        Err(why) => {
            tracing::info!(path, reason = %why, "web request refused");
            detail(StatusCode::UNAUTHORIZED, why)
        }
    }
}

/// Bind and serve until `cancel`. Returns the bound address (port 0 in tests).
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

/// Serve on `listener` until `cancel`. Returns the bound address.
pub async fn serve(
    media: Media,
    listener: tokio::net::TcpListener,
    cancel: CancellationToken,
) -> crate::error::Result<SocketAddr> {
    let cfg = media.config().web.clone().ok_or_else(|| {
        crate::error::Error::new(crate::error::ErrorKind::Config, "web is not configured")
    })?;
    let signer = auth::UrlSigner::new(&cfg)?;
    if !signer.auth_required() {
        tracing::warn!(bind = %cfg.bind, "web.auth is none: anyone who reaches the server sees the cameras");
    }
    if cfg.public_url.is_none()
        && (cfg.bind.ip().is_loopback() || cfg.bind.ip().is_unspecified())
        && cfg.bind.port() != 0
    {
        tracing::info!(bind = %cfg.bind, "web.public_url is not set: picture and stream URLs in MQTT payloads name {}, which other machines (Home Assistant, phones) cannot open", cfg.base_url());
    }
    let w = Web {
        media: media.clone(),
        signer,
    };
    let protected = Router::new()
        .route("/api/device/{device}/channel/{ch}/live", get(live_start))
        .route("/api/device/{device}/channel/{ch}/stop", post(live_stop))
        .route(
            "/api/device/{device}/channel/{ch}/heartbeat",
            post(live_heartbeat),
        )
        .route("/api/device/{device}/channel/{ch}/snapshot", get(snapshot))
        .route("/api/pictures/{file}", get(picture))
        .route("/api/events/{id}/picture", get(event_picture))
        .route("/hls/{device}/{ch}/{file}", get(hls_file))
        .route_layer(axum::middleware::from_fn_with_state(
            w.clone(),
            require_token,
        ));
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/live/{device}/{ch}", get(player))
        .route("/static/hls.min.js", get(hls_js))
        .merge(protected)
        .with_state(w)
        .layer(axum::middleware::from_fn(json_errors));
    let addr = listener.local_addr().map_err(|e| {
        crate::error::Error::with_source(crate::error::ErrorKind::Internal, "no local address", e)
    })?;
    // Port 0 (tests): the URLs handed out must name the port actually bound.
    if cfg.public_url.is_none()
        && cfg.bind.port() == 0
        && let Some(u) = media.urls()
    {
        u.set_base(&format!("http://{addr}"));
    }
    tracing::info!(%addr, "web server listening");
    tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "web server failed");
        }
    });
    Ok(addr)
}

/// `Some(404 answer)` when the camera is not configured.
fn unknown_camera(w: &Web, device: &str) -> Option<Response> {
    (!w.media.has_camera(device))
        .then(|| detail(StatusCode::NOT_FOUND, format!("no camera {device:?}")))
}

async fn live_start(State(w): State<Web>, Path((device, ch)): Path<(String, u32)>) -> Response {
    if let Some(r) = unknown_camera(&w, &device) {
        return r;
    }
    let live = match w.media.live_start(&device, ch).await {
        Ok(l) => l,
        Err(e) => return error_response(&e),
    };
    // Answer once the playlist can be played (or say why not), as a player fetches it next:
    // connecting, the first keyframe and one GOP (long on "smart codec" cameras).
    let m = w.media.config().media.clone();
    let gop_wait = m.snapshot_timeout.get() + m.hls_segment.get() * 2;
    if !live.ready(gop_wait).await {
        let why = live
            .hub
            .stats()
            .last_error
            .unwrap_or_else(|| "no segment yet".into());
        // Nobody will play it: do not keep reconnecting to the camera for hls_stop_after.
        w.media.live_stop(&device, ch);
        return detail(
            StatusCode::BAD_GATEWAY,
            format!("the stream did not start within {gop_wait:?}: {why}"),
        );
    }
    // One token for both: the player's (its page, this call, heartbeats, playlist, segments).
    let q = w.signer.query_for(&player_scope(&device, ch));
    axum::Json(json!({
        "status": "ok",
        "hls_url": format!("{}{q}", hls_path(&device, ch)),
        "player_url": format!("{}{q}", player_path(&device, ch)),
    }))
    .into_response()
}

async fn live_stop(State(w): State<Web>, Path((device, ch)): Path<(String, u32)>) -> Response {
    if let Some(r) = unknown_camera(&w, &device) {
        return r;
    }
    w.media.live_stop(&device, ch);
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn live_heartbeat(State(w): State<Web>, Path((device, ch)): Path<(String, u32)>) -> Response {
    if let Some(r) = unknown_camera(&w, &device) {
        return r;
    }
    if w.media.live_heartbeat(&device, ch) {
        axum::Json(json!({"status": "ok"})).into_response()
    } else {
        detail(
            StatusCode::NOT_FOUND,
            "the stream is not running: start it with …/live",
        )
    }
}

async fn hls_file(
    State(w): State<Web>,
    Path((device, ch, file)): Path<(String, u32, String)>,
    Query(q): Query<TokenQuery>,
) -> Response {
    let Some(live) = w.media.live(&device, ch) else {
        return detail(StatusCode::NOT_FOUND, "the stream is not running");
    };
    if file == "index.m3u8" {
        live.touch();
        // Segment URIs carry the playlist's own token, so players that cannot send headers
        // (native HLS, VLC) fetch them too.
        let query = q.token.map(|t| format!("?token={t}")).unwrap_or_default();
        return match live.playlist(&query) {
            Some(p) => (
                [
                    (header::CONTENT_TYPE, "application/vnd.apple.mpegurl"),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                p,
            )
                .into_response(),
            None => detail(StatusCode::NOT_FOUND, "no segment yet"),
        };
    }
    match live.file(&file) {
        Some(b) => {
            let ct = if file.ends_with(".mp4") {
                "video/mp4"
            } else {
                "video/iso.segment"
            };
            ([(header::CONTENT_TYPE, ct)], b).into_response()
        }
        None => detail(
            StatusCode::NOT_FOUND,
            format!("{file} is not in the window"),
        ),
    }
}

fn jpeg(b: bytes::Bytes) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=86400"),
            ),
        ],
        b,
    )
        .into_response()
}

#[derive(Deserialize)]
struct SnapshotQuery {
    /// `false`: only answer with the JPEG (a dashboard polling it); not saved, published or
    /// counted against retention.
    #[serde(default = "yes")]
    save: bool,
}

fn yes() -> bool {
    true
}

async fn snapshot(
    State(w): State<Web>,
    Path((device, ch)): Path<(String, u32)>,
    Query(q): Query<SnapshotQuery>,
) -> Response {
    if let Some(r) = unknown_camera(&w, &device) {
        return r;
    }
    let taken = if q.save {
        w.media
            .snapshot(&device, ch, None, Trigger::Rest)
            .await
            .map(|s| s.jpeg.clone())
    } else {
        w.media.snapshot_unsaved(&device, ch).await
    };
    match taken {
        // A fresh picture at the same URL each time: never cached.
        Ok(b) => {
            let mut r = jpeg(b);
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => error_response(&e),
    }
}

async fn read_picture(w: &Web, id: &str) -> Response {
    let store = w.media.store().clone();
    let id2 = id.to_string();
    let row = store.run(move |s| s.picture(&id2)).await;
    match row {
        Ok(Some(r)) => match tokio::fs::read(&r.path).await {
            Ok(b) => jpeg(b.into()),
            Err(e) => detail(
                StatusCode::NOT_FOUND,
                format!("picture {id} is gone from disk: {e}"),
            ),
        },
        Ok(None) => detail(StatusCode::NOT_FOUND, format!("no picture {id}")),
        Err(e) => error_response(&e),
    }
}

async fn picture(State(w): State<Web>, Path(file): Path<String>) -> Response {
    let id = file.strip_suffix(".jpg").unwrap_or(&file);
    read_picture(&w, id).await
}

async fn event_picture(State(w): State<Web>, Path(id): Path<String>) -> Response {
    let store = w.media.store().clone();
    let eid = id.clone();
    if let Ok(Some(r)) = store.run(move |s| s.picture_for_event(&eid)).await {
        return read_picture(&w, &r.id).await;
    }
    let timeout = w.media.config().media.snapshot_timeout.get() + Duration::from_secs(1);
    match w.media.wait_event_picture(&id, timeout).await {
        Some(Ok(pic)) => read_picture(&w, &pic).await,
        Some(Err(e)) => detail(
            StatusCode::BAD_GATEWAY,
            format!("no picture for this event: {e}"),
        ),
        None => detail(StatusCode::NOT_FOUND, "no picture for this event"),
    }
}

async fn player(Path((device, ch)): Path<(String, u32)>) -> Response {
    let page = PLAYER
        .replace("{{device}}", &html_escape(&device))
        .replace("{{channel}}", &ch.to_string());
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        page,
    )
        .into_response()
}

async fn hls_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        HLS_JS,
    )
        .into_response()
}

fn html_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}
