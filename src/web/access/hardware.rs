//! Hardware devices (seed 001 "Hardware Device Integration"): `POST /points/register` and
//! `POST /points/{id}/heartbeat`, authenticated by `X-API-Key` (`web.hardware_key`, else
//! `HARDWARE_INGEST_KEY`), not by a token: these two routes sit outside the token layer.
//!
//! [`monitor`] publishes every hardware point on the bus ([`Message::Hardware`]) at start,
//! after each change, and when one goes offline by itself (no heartbeat for
//! `web.hardware_offline_after`): the MQTT sink shows it as availability, state and Home
//! Assistant entities.

use super::points::hardware_state;
use super::{internal, iso};
use crate::model::{HardwarePoint, Message};
use crate::storage::{Heartbeat, PointKind, Registration};
use crate::web::{Detail, Web, detail};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `Err(401)` unless the request carries the configured `X-API-Key`.
#[allow(clippy::result_large_err)]
pub(crate) fn check_key(w: &Web, headers: &HeaderMap) -> Result<(), Response> {
    let cfg = w.config();
    let Some(want) = cfg.web.as_ref().and_then(|c| c.hardware_key.as_ref()) else {
        return Err(detail(
            StatusCode::UNAUTHORIZED,
            "hardware ingest is not configured (set web.hardware_key or HARDWARE_INGEST_KEY)",
        ));
    };
    match headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        Some(got) if crate::commands::same_secret(got, want.expose()) => Ok(()),
        Some(_) => Err(detail(StatusCode::UNAUTHORIZED, "wrong X-API-Key")),
        None => Err(detail(
            StatusCode::UNAUTHORIZED,
            "Authentication required: X-API-Key header missing",
        )),
    }
}

/// A device announcing itself.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Register {
    /// The device's own id, 1–64 characters.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    device_id: String,
    /// `door` when absent.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    device_type: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    firmware_version: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    hardware_vendor: Option<String>,
    /// `00:11:22:33:44:55`.
    #[schema(pattern = r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$")]
    mac_address: Option<String>,
    /// An IPv4 or IPv6 address.
    #[schema(max_length = 45)]
    ip_address: Option<String>,
    /// Also the name of a new point.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    location: Option<String>,
    /// Up to 32, each 1–32 characters.
    #[serde(default)]
    #[schema(max_items = 32)]
    capabilities: Vec<String>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Registered {
    id: String,
    name: String,
    device_id: String,
    status: super::points::PointStatus,
    #[serde(rename = "isOnline")]
    is_online: bool,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct RegisterAnswer {
    data: Registered,
    message: String,
    success: bool,
}

fn text_ok(s: &str, max: usize) -> bool {
    !s.trim().is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control)
}

fn mac_ok(s: &str) -> bool {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[allow(clippy::result_large_err)]
fn check_register(r: &Register) -> Result<(), Response> {
    let bad = |m: &str| Err(detail(StatusCode::UNPROCESSABLE_ENTITY, m));
    if !text_ok(&r.device_id, 64) {
        return bad("device_id must be 1 to 64 characters, without control characters");
    }
    for (name, v) in [
        ("device_type", &r.device_type),
        ("firmware_version", &r.firmware_version),
        ("hardware_vendor", &r.hardware_vendor),
        ("location", &r.location),
    ] {
        if let Some(v) = v
            && !text_ok(v, 128)
        {
            return bad(&format!(
                "{name} must be 1 to 128 characters, without control characters"
            ));
        }
    }
    if let Some(m) = &r.mac_address
        && !mac_ok(m)
    {
        return bad("mac_address must be six hex pairs, e.g. 00:11:22:33:44:55");
    }
    if let Some(ip) = &r.ip_address
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        return bad("ip_address must be an IPv4 or IPv6 address");
    }
    if r.capabilities.len() > 32 || r.capabilities.iter().any(|c| !text_ok(c, 32)) {
        return bad("capabilities: at most 32, each 1 to 32 characters");
    }
    Ok(())
}

/// Register a hardware device, or update the point it registered before (by `device_id`).
/// Its registration counts as a heartbeat.
#[utoipa::path(post, path = "/api/access-control/points/register", tag = "hardware",
    security(("api_key" = [])),
    request_body = Register,
    responses((status = 200, body = RegisterAnswer), (status = 400, body = Detail),
        (status = 401, body = Detail), (status = 415, body = Detail), (status = 422, body = Detail)))]
pub(in crate::web) async fn register(
    State(w): State<Web>,
    headers: HeaderMap,
    axum::Json(r): axum::Json<Register>,
) -> Response {
    if let Err(res) = check_key(&w, &headers) {
        return res;
    }
    if let Err(res) = check_register(&r) {
        return res;
    }
    let cfg = w.config();
    let reg = Registration {
        device_id: r.device_id.trim().to_string(),
        device_type: r.device_type,
        firmware: r.firmware_version,
        vendor: r.hardware_vendor,
        mac_address: r.mac_address,
        ip_address: r.ip_address,
        location: r.location,
        capabilities: r.capabilities,
        site: cfg.first_site(),
    };
    let at = w.at();
    let now = at.wall;
    let online_after = now - super::points::offline_after(&cfg);
    let (row, created) = match w
        .store
        .run(move |s| s.hardware_register(&reg, online_after, now))
        .await
    {
        Ok(x) => x,
        Err(e) => return internal(&e),
    };
    tracing::info!(point = %row.id, device = %row.hw.as_ref().map(|h| h.device_id.as_str()).unwrap_or(""), created, "hardware device registered");
    w.beats.record(&row.id, at.mono);
    w.hardware.notify_one();
    let info = super::points::stored_info(&cfg, &row, &w.at());
    axum::Json(RegisterAnswer {
        data: Registered {
            id: row.id.clone(),
            name: info.point.name,
            device_id: row.hw.map(|h| h.device_id).unwrap_or_default(),
            status: info.point.status,
            is_online: info.point.is_online,
        },
        message: if created {
            "Device registered successfully"
        } else {
            "Device registration updated"
        }
        .into(),
        success: true,
    })
    .into_response()
}

/// A device's periodic sign of life.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeartbeatBody {
    /// When given, must be the device that registered this point.
    device_id: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    firmware_version: Option<String>,
    /// 0–100.
    #[schema(minimum = 0, maximum = 100)]
    battery_level: Option<i64>,
    /// What the device's sensor says (`closed`), up to 32 characters.
    #[schema(
        min_length = 1,
        max_length = 32,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    sensor_status: Option<String>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct HeartbeatData {
    #[schema(format = DateTime)]
    last_heartbeat: String,
    #[serde(rename = "isOnline")]
    is_online: bool,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct HeartbeatAnswer {
    ok: bool,
    point_id: String,
    data: HeartbeatData,
}

/// Record a heartbeat: last_heartbeat, firmware, battery level, sensor status.
#[utoipa::path(post, path = "/api/access-control/points/{id}/heartbeat", tag = "hardware",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "the point id register answered")),
    request_body = HeartbeatBody,
    responses((status = 200, body = HeartbeatAnswer), (status = 400, body = Detail),
        (status = 401, body = Detail), (status = 404, body = Detail), (status = 409, body = Detail),
        (status = 415, body = Detail), (status = 422, body = Detail)))]
pub(in crate::web) async fn heartbeat(
    State(w): State<Web>,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Json(h): axum::Json<HeartbeatBody>,
) -> Response {
    if let Err(res) = check_key(&w, &headers) {
        return res;
    }
    let battery = match h.battery_level {
        Some(b) if !(0..=100).contains(&b) => {
            return detail(
                StatusCode::UNPROCESSABLE_ENTITY,
                "battery_level must be between 0 and 100",
            );
        }
        b => b.and_then(|b| u8::try_from(b).ok()),
    };
    for (name, v, max) in [
        ("firmware_version", &h.firmware_version, 128),
        ("sensor_status", &h.sensor_status, 32),
    ] {
        if let Some(v) = v
            && !text_ok(v, max)
        {
            return detail(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{name} must be 1 to {max} characters, without control characters"),
            );
        }
    }
    let key = id.clone();
    let existing = match w.store.run(move |s| s.point(&key)).await {
        Ok(Some(r)) if r.kind == Some(PointKind::Hardware) => r,
        Ok(_) => {
            return detail(
                StatusCode::NOT_FOUND,
                format!("no hardware point {id:?}: register first"),
            );
        }
        Err(e) => return internal(&e),
    };
    let last = existing.hw.as_ref().and_then(|x| x.last_heartbeat);
    let registered = existing.hw.map(|x| x.device_id).unwrap_or_default();
    if let Some(d) = &h.device_id
        && d.trim() != registered
    {
        return detail(
            StatusCode::CONFLICT,
            format!("point {id} belongs to device {registered:?}, not {d:?}"),
        );
    }
    let cfg = w.config();
    let at = w.at();
    let now = at.wall;
    let was_online = super::points::hw_online(&id, last, &cfg, &at);
    let beat = Heartbeat {
        firmware: h.firmware_version,
        battery_level: battery,
        sensor_status: h.sensor_status,
    };
    let key = id.clone();
    let row = match w
        .store
        .run(move |s| s.hardware_heartbeat(&key, &beat, was_online, now))
        .await
    {
        Ok(Some(r)) => r,
        Ok(None) => return detail(StatusCode::NOT_FOUND, format!("no hardware point {id:?}")),
        Err(e) => return internal(&e),
    };
    w.beats.record(&row.id, at.mono);
    w.hardware.notify_one();
    let online = super::points::hw_online(
        &row.id,
        row.hw.as_ref().and_then(|x| x.last_heartbeat),
        &cfg,
        &w.at(),
    );
    axum::Json(HeartbeatAnswer {
        ok: true,
        point_id: row.id,
        data: HeartbeatData {
            last_heartbeat: iso(now),
            is_online: online,
        },
    })
    .into_response()
}

/// Publish every hardware point at start and at every change (register, heartbeat, edit,
/// delete: the handlers notify `w.hardware`), and turn points offline by themselves when
/// their heartbeats stop. Runs until `cancel`.
pub(in crate::web) async fn monitor(w: Web, cancel: CancellationToken) {
    let mut shown: BTreeMap<String, HardwarePoint> = BTreeMap::new();
    loop {
        let cfg = w.config();
        let rows = match w.store.run(|s| s.points()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "hardware points: unable to read the database");
                Vec::new()
            }
        };
        let mut seen = std::collections::BTreeSet::new();
        // The next moment an online point goes offline without a heartbeat.
        // (On the monotonic clock: a heartbeat's age, see `points::Beats`.)
        let at = w.at();
        let mut next: Option<Duration> = None;
        for r in &rows {
            let Some(p) = hardware_state(&cfg, r, &at) else {
                continue;
            };
            seen.insert(p.id.clone());
            if p.online
                && let Some(left) = at
                    .age(&p.id, p.last_heartbeat)
                    .and_then(|a| (super::points::offline_after(&cfg) - a).to_std().ok())
            {
                next = Some(next.map_or(left, |n| n.min(left)));
            }
            if shown.get(&p.id) != Some(&p) {
                if shown.get(&p.id).is_some_and(|s| s.online && !p.online) {
                    tracing::warn!(point = %p.id, device = %p.device_id, "hardware device offline: no heartbeat");
                }
                shown.insert(p.id.clone(), p.clone());
                w.bus.publish(Message::Hardware(p)).await;
            }
        }
        let gone: Vec<String> = shown
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for id in gone {
            if let Some(mut p) = shown.remove(&id) {
                p.removed = true;
                w.bus.publish(Message::Hardware(p)).await;
            }
        }
        // Wake at the next offline moment (a little after, so the heartbeat is old enough),
        // at a change, or once a minute (a config reload may change offline_after).
        let wait = next
            .map(|n| n + Duration::from_millis(20))
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = w.hardware.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
