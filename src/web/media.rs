//! Camera routes: live HLS following the user's NVR API contract (seed 004:
//! `GET /api/device/{device}/channel/{ch}/live`, `POST …/stop`, `POST …/heartbeat`),
//! snapshots, saved pictures, door events' pictures and a small player page.

use super::{Caller, Web, detail, error_response};
use crate::config::Role;
use crate::media::live::{hls_path, player_path, player_scope};
use crate::media::service::{Media, Trigger};
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

/// hls.js (Apache-2.0, see `assets/hls.js.LICENSE`), served locally: the page works offline.
const HLS_JS: &str = include_str!("../../assets/hls.min.js");
const PLAYER: &str = include_str!("../../assets/player.html");

/// The media service when `device` is a configured camera, else the 404 answer.
#[allow(clippy::result_large_err)]
fn camera<'a>(w: &'a Web, device: &str) -> Result<&'a Media, Response> {
    w.media
        .as_ref()
        .filter(|m| m.has_camera(device))
        .ok_or_else(|| detail(StatusCode::NOT_FOUND, format!("no camera {device:?}")))
}

#[utoipa::path(get, path = "/api/device/{device}/channel/{ch}/live", tag = "live", params(("device" = String, Path, description = "camera id (sources.hikvision[].id)"), ("ch" = u32, Path, description = "channel")),
    responses((status = 200, description = "the stream is playable", body = LiveStarted), (status = 404, body = super::Detail), (status = 502, body = super::Detail)))]
pub(super) async fn live_start(
    State(w): State<Web>,
    Extension(caller): Extension<Caller>,
    Path((device, ch)): Path<(String, u32)>,
) -> Response {
    if let Err(r) = caller.need(Role::Operator) {
        return r;
    }
    let media = match camera(&w, &device) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let live = match media.live_start(&device, ch).await {
        Ok(l) => l,
        Err(e) => return error_response(&e),
    };
    // Answer once the playlist can be played (or say why not), as a player fetches it next:
    // connecting, the first keyframe and one GOP (long on "smart codec" cameras).
    let m = media.config().media.clone();
    let gop_wait = m.snapshot_timeout.get() + m.hls_segment.get() * 2;
    if !live.ready(gop_wait).await {
        let why = live
            .hub
            .stats()
            .last_error
            .unwrap_or_else(|| "no segment yet".into());
        // Nobody will play it: do not keep reconnecting to the camera for hls_stop_after.
        media.live_stop(&device, ch);
        return detail(
            StatusCode::BAD_GATEWAY,
            format!("the stream did not start within {gop_wait:?}: {why}"),
        );
    }
    // One token for both: the player's (its page, this call, heartbeats, playlist, segments).
    let q = w.signer.query_for(&player_scope(&device, ch));
    axum::Json(LiveStarted {
        status: "ok".into(),
        hls_url: format!("{}{q}", hls_path(&device, ch)),
        player_url: format!("{}{q}", player_path(&device, ch)),
    })
    .into_response()
}

#[utoipa::path(post, path = "/api/device/{device}/channel/{ch}/stop", tag = "live", params(("device" = String, Path, description = "camera id (sources.hikvision[].id)"), ("ch" = u32, Path, description = "channel")),
    responses((status = 200, body = super::Status), (status = 404, body = super::Detail)))]
pub(super) async fn live_stop(
    State(w): State<Web>,
    Extension(caller): Extension<Caller>,
    Path((device, ch)): Path<(String, u32)>,
) -> Response {
    if let Err(r) = caller.need(Role::Operator) {
        return r;
    }
    let media = match camera(&w, &device) {
        Ok(m) => m,
        Err(r) => return r,
    };
    media.live_stop(&device, ch);
    axum::Json(json!({"status": "ok"})).into_response()
}

#[utoipa::path(post, path = "/api/device/{device}/channel/{ch}/heartbeat", tag = "live", params(("device" = String, Path, description = "camera id (sources.hikvision[].id)"), ("ch" = u32, Path, description = "channel")),
    responses((status = 200, body = super::Status), (status = 404, body = super::Detail)))]
pub(super) async fn live_heartbeat(
    State(w): State<Web>,
    Extension(caller): Extension<Caller>,
    Path((device, ch)): Path<(String, u32)>,
) -> Response {
    if let Err(r) = caller.need(Role::Operator) {
        return r;
    }
    let media = match camera(&w, &device) {
        Ok(m) => m,
        Err(r) => return r,
    };
    if media.live_heartbeat(&device, ch) {
        axum::Json(json!({"status": "ok"})).into_response()
    } else {
        detail(
            StatusCode::NOT_FOUND,
            "the stream is not running: start it with …/live",
        )
    }
}

/// Playlist and segments (a player's token opens them; no OpenAPI entry: HLS, not JSON).
pub(super) async fn hls_file(
    State(w): State<Web>,
    Path((device, ch, file)): Path<(String, u32, String)>,
    Query(q): Query<TokenQuery>,
) -> Response {
    let Some(live) = w.media.as_ref().and_then(|m| m.live(&device, ch)) else {
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

/// `GET …/live`: where to play it (seed 004, plus the player page).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct LiveStarted {
    status: String,
    hls_url: String,
    player_url: String,
}

#[derive(Deserialize)]
pub(super) struct TokenQuery {
    token: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct SnapshotQuery {
    /// `false`: only answer with the JPEG (a dashboard polling it); not saved, published or
    /// counted against retention.
    #[serde(default = "yes")]
    save: bool,
}

fn yes() -> bool {
    true
}

#[utoipa::path(get, path = "/api/device/{device}/channel/{ch}/snapshot", tag = "live",
    params(("device" = String, Path, description = "camera id"), ("ch" = u32, Path, description = "channel"),
        ("save" = Option<bool>, Query, description = "false: only answer the JPEG (not saved, published or counted)")),
    responses((status = 200, description = "JPEG", content_type = "image/jpeg", body = Vec<u8>),
        (status = 404, body = super::Detail), (status = 502, body = super::Detail)))]
pub(super) async fn snapshot(
    State(w): State<Web>,
    Extension(caller): Extension<Caller>,
    Path((device, ch)): Path<(String, u32)>,
    Query(q): Query<SnapshotQuery>,
) -> Response {
    if let Err(r) = caller.need(Role::Operator) {
        return r;
    }
    let media = match camera(&w, &device) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let taken = if q.save {
        media
            .snapshot(&device, ch, None, Trigger::Rest)
            .await
            .map(|s| s.jpeg.clone())
    } else {
        media.snapshot_unsaved(&device, ch).await
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
    let store = w.store.clone();
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

#[utoipa::path(get, path = "/api/pictures/{file}", tag = "live",
    params(("file" = String, Path, description = "picture id, optionally with .jpg")),
    responses((status = 200, description = "JPEG", content_type = "image/jpeg", body = Vec<u8>), (status = 404, body = super::Detail)))]
pub(super) async fn picture(State(w): State<Web>, Path(file): Path<String>) -> Response {
    let id = file.strip_suffix(".jpg").unwrap_or(&file);
    read_picture(&w, id).await
}

#[utoipa::path(get, path = "/api/events/{id}/picture", tag = "live",
    params(("id" = String, Path, description = "event id")),
    responses((status = 200, description = "JPEG", content_type = "image/jpeg", body = Vec<u8>),
        (status = 404, body = super::Detail), (status = 502, body = super::Detail)))]
pub(super) async fn event_picture(State(w): State<Web>, Path(id): Path<String>) -> Response {
    let store = w.store.clone();
    let eid = id.clone();
    if let Ok(Some(r)) = store.run(move |s| s.picture_for_event(&eid)).await {
        return read_picture(&w, &r.id).await;
    }
    let Some(media) = &w.media else {
        return detail(StatusCode::NOT_FOUND, "no picture for this event");
    };
    let timeout = media.config().media.snapshot_timeout.get() + Duration::from_secs(1);
    match media.wait_event_picture(&id, timeout).await {
        Some(Ok(pic)) => read_picture(&w, &pic).await,
        Some(Err(e)) => detail(
            StatusCode::BAD_GATEWAY,
            format!("no picture for this event: {e}"),
        ),
        None => detail(StatusCode::NOT_FOUND, "no picture for this event"),
    }
}

pub(super) async fn player(Path((device, ch)): Path<(String, u32)>) -> Response {
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

pub(super) async fn hls_js() -> Response {
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
