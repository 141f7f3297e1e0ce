//! `GET / POST /points`, `PUT / DELETE /points/{id}`, `GET /points/health` (seed 001).
//!
//! A point is a Net2 door (`net2-<door id>`, from the directory: its name is the config's or
//! Net2's unless gatehouse's own `name` overrides it), a point made here (`point-<n>`) or a
//! registered hardware device (`hw-<n>`). `status` is gatehouse's own: `active` unless set
//! (a door whose config `mode` is `disabled` shows `disabled`); a point that is not `active`
//! refuses door commands.

use super::{ListQuery, Page, Pagination, Target, check_site, find, internal, iso, net2_id};
use crate::clock::Clock;
use crate::config::{Config, DoorMode, Role};
use crate::directory::DirectoryDoor;
use crate::model::HardwarePoint;
use crate::storage::{PointEdit, PointKind, PointRow, Store};
use crate::web::{Caller, Detail, Web, detail};
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// `active | maintenance | disabled`.
#[derive(Serialize, Deserialize, utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PointStatus {
    Active,
    Maintenance,
    Disabled,
}

impl PointStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PointStatus::Active => "active",
            PointStatus::Maintenance => "maintenance",
            PointStatus::Disabled => "disabled",
        }
    }

    fn parse(s: &str) -> Option<PointStatus> {
        Some(match s {
            "active" => PointStatus::Active,
            "maintenance" => PointStatus::Maintenance,
            "disabled" => PointStatus::Disabled,
            _ => return None,
        })
    }
}

/// One access point, as the seed shows it.
#[derive(Serialize, Deserialize, utoipa::ToSchema, Debug, Clone, PartialEq)]
pub(crate) struct AccessPoint {
    /// `net2-<door id>`, `point-<n>` or `hw-<n>`.
    pub id: String,
    pub name: String,
    /// gatehouse's own; else the site's name.
    pub location: Option<String>,
    /// `door` unless set.
    #[serde(rename = "type")]
    pub kind: String,
    pub status: PointStatus,
    /// Known to be reachable now: a Net2 door's ACU answers, a hardware device's last
    /// heartbeat is within `web.hardware_offline_after`. `false` when unknown.
    #[serde(rename = "isOnline")]
    pub is_online: bool,
    /// When its status (online, door state, `status`) last changed; null when unknown.
    #[serde(rename = "lastStatusChange")]
    #[schema(format = DateTime)]
    pub last_status_change: Option<String>,
}

/// `online | offline | unknown`.
#[derive(Serialize, Deserialize, utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Connection {
    Online,
    Offline,
    Unknown,
}

/// One point's health (seed 001 `points/health`).
#[derive(Serialize, Deserialize, utoipa::ToSchema, Debug, Clone, PartialEq)]
pub(crate) struct PointHealth {
    pub point_id: String,
    pub name: String,
    /// A hardware device's last heartbeat; a Net2 door's last status poll that listed it.
    #[schema(format = DateTime)]
    pub last_heartbeat: Option<String>,
    pub connection_status: Connection,
    #[serde(rename = "isOnline")]
    pub is_online: bool,
    /// A hardware device's id; a Net2 door's ACU address.
    pub device_id: Option<String>,
    pub firmware_version: Option<String>,
    /// Percent. A hardware device's last report; Net2 reports flags, not levels: 20 while
    /// "battery low" (722), 5 while "battery critical" (723), else null.
    pub battery_level: Option<u8>,
}

/// Everything known about a point, for the list, the health map and commands.
pub(crate) struct Info {
    pub point: AccessPoint,
    pub health: PointHealth,
    pub site: String,
}

fn latest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    a.max(b)
}

/// A Net2 door as a point. `net2_online`: the Net2 server is reachable (else its doors'
/// connection is unknown).
pub(crate) fn net2_info(
    cfg: &Config,
    door: &DirectoryDoor,
    row: Option<&PointRow>,
    net2_online: bool,
    status_polled: Option<DateTime<Utc>>,
) -> Info {
    let site = row
        .and_then(|r| r.site.clone())
        .unwrap_or_else(|| cfg.door_site(door.id));
    let status = row
        .and_then(|r| r.status.as_deref())
        .and_then(PointStatus::parse)
        .unwrap_or(
            if cfg.doors.get(&door.id).map(|d| d.mode) == Some(DoorMode::Disabled) {
                PointStatus::Disabled
            } else {
                PointStatus::Active
            },
        );
    let name = row
        .and_then(|r| r.name.clone())
        .or_else(|| door.name.clone())
        .unwrap_or_else(|| format!("door {}", door.id));
    let connection = match door.online {
        _ if !net2_online => Connection::Unknown,
        Some(true) => Connection::Online,
        Some(false) => Connection::Offline,
        None => Connection::Unknown,
    };
    let id = net2_id(door.id);
    let battery = if door.battery_critical {
        Some(5)
    } else if door.battery_low {
        Some(20)
    } else {
        None
    };
    let is_online = connection == Connection::Online;
    Info {
        point: AccessPoint {
            id: id.clone(),
            name: name.clone(),
            location: row
                .and_then(|r| r.location.clone())
                .or_else(|| site_name(cfg, &site)),
            kind: row
                .and_then(|r| r.kind_type.clone())
                .unwrap_or_else(|| "door".into()),
            status,
            is_online,
            last_status_change: latest(door.last_change, row.and_then(|r| r.status_changed))
                .map(iso),
        },
        health: PointHealth {
            point_id: id,
            name,
            last_heartbeat: door
                .in_last_poll
                .then_some(status_polled)
                .flatten()
                .map(iso),
            connection_status: connection,
            is_online,
            device_id: Some(door.id.to_string()),
            firmware_version: None,
            battery_level: battery,
        },
        site,
    }
}

fn site_name(cfg: &Config, site: &str) -> Option<String> {
    cfg.sites()
        .into_iter()
        .find(|s| s.id == site)
        .map(|s| s.name.unwrap_or(s.id))
}

/// Heartbeats this process received, by point id, on the monotonic clock.
///
/// A Raspberry Pi has no real-time clock: NTP may step the wall clock by hours or days while
/// the daemon runs. Judged by wall time, a step forward would take every access point offline
/// until its next heartbeat, and a step back would keep a dead one online for as long as the
/// step. A heartbeat received here is judged by how long ago it came; only one stored before
/// a restart is judged by its wall time.
#[derive(Clone, Default)]
pub(crate) struct Beats(Arc<Mutex<HashMap<String, Instant>>>);

impl Beats {
    pub(crate) fn record(&self, id: &str, at: Instant) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), at);
    }

    fn age(&self, id: &str, now: Instant) -> Option<std::time::Duration> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(id).map(|t| now.saturating_duration_since(*t))
    }
}

/// The moment a hardware point's connection is judged at.
#[derive(Clone, Copy)]
pub(crate) struct At<'a> {
    pub(crate) wall: DateTime<Utc>,
    pub(crate) mono: Instant,
    /// None: only stored heartbeats (before the web server runs).
    pub(crate) beats: Option<&'a Beats>,
}

impl<'a> At<'a> {
    pub(crate) fn now(clock: &dyn Clock, beats: Option<&'a Beats>) -> At<'a> {
        At {
            wall: clock.now(),
            mono: clock.mono(),
            beats,
        }
    }

    /// How long ago point `id`'s last heartbeat (stored as `last`) came.
    pub(crate) fn age(&self, id: &str, last: Option<DateTime<Utc>>) -> Option<chrono::Duration> {
        match self.beats.and_then(|b| b.age(id, self.mono)) {
            Some(a) => chrono::Duration::from_std(a).ok(),
            None => last.map(|t| self.wall.signed_duration_since(t)),
        }
    }
}

/// Whether a hardware device's last heartbeat is recent enough.
pub(crate) fn hw_online(id: &str, last: Option<DateTime<Utc>>, cfg: &Config, at: &At) -> bool {
    at.age(id, last).is_some_and(|a| a < offline_after(cfg))
}

pub(crate) fn offline_after(cfg: &Config) -> chrono::Duration {
    let d = cfg
        .web
        .as_ref()
        .map(|w| w.hardware_offline_after.get())
        .unwrap_or(std::time::Duration::from_secs(900));
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::minutes(15))
}

/// A point made here or a hardware device.
pub(crate) fn stored_info(cfg: &Config, r: &PointRow, at: &At) -> Info {
    let site = r.site.clone().unwrap_or_else(|| cfg.first_site());
    let status = r
        .status
        .as_deref()
        .and_then(PointStatus::parse)
        .unwrap_or(PointStatus::Active);
    let name = r.name.clone().unwrap_or_else(|| r.id.clone());
    let (connection, hw_change) = match &r.hw {
        Some(h) => {
            let online = hw_online(&r.id, h.last_heartbeat, cfg, at);
            let change = if online {
                h.online_since
            } else {
                h.last_heartbeat.map(|t| t + offline_after(cfg))
            };
            (
                if online {
                    Connection::Online
                } else {
                    Connection::Offline
                },
                change,
            )
        }
        None => (Connection::Unknown, None),
    };
    let is_online = connection == Connection::Online;
    Info {
        point: AccessPoint {
            id: r.id.clone(),
            name: name.clone(),
            location: r.location.clone().or_else(|| site_name(cfg, &site)),
            kind: r.kind_type.clone().unwrap_or_else(|| "door".into()),
            status,
            is_online,
            last_status_change: latest(latest(r.status_changed, hw_change), r.created).map(iso),
        },
        health: PointHealth {
            point_id: r.id.clone(),
            name,
            last_heartbeat: r.hw.as_ref().and_then(|h| h.last_heartbeat).map(iso),
            connection_status: connection,
            is_online,
            device_id: r.hw.as_ref().map(|h| h.device_id.clone()),
            firmware_version: r.hw.as_ref().and_then(|h| h.firmware.clone()),
            battery_level: r.hw.as_ref().and_then(|h| h.battery_level),
        },
        site,
    }
}

/// What MQTT shows of a hardware point.
pub(crate) fn hardware_state(cfg: &Config, r: &PointRow, at: &At) -> Option<HardwarePoint> {
    let h = r.hw.as_ref()?;
    Some(HardwarePoint {
        id: r.id.clone(),
        name: r.name.clone().unwrap_or_else(|| r.id.clone()),
        device_id: h.device_id.clone(),
        online: hw_online(&r.id, h.last_heartbeat, cfg, at),
        last_heartbeat: h.last_heartbeat,
        firmware_version: h.firmware.clone(),
        vendor: h.vendor.clone(),
        battery_level: h.battery_level,
        sensor_status: h.sensor_status.clone(),
        removed: false,
    })
}

/// Every point: the Net2 doors (by door id), then the others (by creation).
pub(crate) async fn all(w: &Web) -> Result<Vec<Info>, Response> {
    let rows = match w.store.read(Store::points_on).await {
        Ok(r) => r,
        Err(e) => return Err(internal(&e)),
    };
    let cfg = w.config();
    let snap = w.directory.snapshot();
    let net2_online = w.bus.health("net2").is_none_or(|h| h.online);
    let at = w.at();
    let by_id: BTreeMap<&str, &PointRow> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut out: Vec<Info> = snap
        .doors
        .iter()
        .map(|d| {
            let id = net2_id(d.id);
            net2_info(
                &cfg,
                d,
                by_id.get(id.as_str()).copied(),
                net2_online,
                snap.status_polled,
            )
        })
        .collect();
    out.extend(
        rows.iter()
            .filter(|r| r.kind != Some(PointKind::Net2))
            .map(|r| stored_info(&cfg, r, &at)),
    );
    Ok(out)
}

/// `{"data": [...], "pagination": {...}}`.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct PointList {
    data: Vec<AccessPoint>,
    pagination: Pagination,
}

/// The seed's envelope around one point.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct PointAnswer {
    data: AccessPoint,
    message: String,
    success: bool,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct DeletedId {
    id: String,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Deleted {
    data: DeletedId,
    message: String,
    success: bool,
}

/// `{"data": {<point id>: health}}`.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct HealthMap {
    data: BTreeMap<String, PointHealth>,
}

/// List the access points: Net2 doors, points made here, hardware devices.
#[utoipa::path(get, path = "/api/access-control/points", tag = "access-control",
    params(ListQuery),
    responses((status = 200, body = PointList), (status = 400, body = Detail),
        (status = 401, body = Detail), (status = 404, description = "unknown property_id", body = Detail)))]
pub(in crate::web) async fn list(State(w): State<Web>, Query(q): Query<ListQuery>) -> Response {
    let page = match Page::of(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if let Err(r) = check_site(&w, q.property_id.as_deref()) {
        return r;
    }
    let infos = match all(&w).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let items: Vec<AccessPoint> = infos
        .into_iter()
        .filter(|i| q.property_id.as_deref().is_none_or(|p| p == i.site))
        .map(|i| i.point)
        .collect();
    let (data, pagination) = page.cut(items);
    axum::Json(PointList { data, pagination }).into_response()
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SiteQuery {
    /// A site id (`sites[].id`); all sites when absent. Unknown → 404.
    property_id: Option<String>,
}

/// Health of every access point, keyed by point id.
#[utoipa::path(get, path = "/api/access-control/points/health", tag = "access-control",
    params(SiteQuery),
    responses((status = 200, body = HealthMap), (status = 401, body = Detail),
        (status = 404, description = "unknown property_id", body = Detail)))]
pub(in crate::web) async fn health(State(w): State<Web>, Query(q): Query<SiteQuery>) -> Response {
    if let Err(r) = check_site(&w, q.property_id.as_deref()) {
        return r;
    }
    let infos = match all(&w).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let data = infos
        .into_iter()
        .filter(|i| q.property_id.as_deref().is_none_or(|p| p == i.site))
        .map(|i| (i.point.id.clone(), i.health))
        .collect();
    axum::Json(HealthMap { data }).into_response()
}

/// A new point (gatehouse's own, no Net2 door).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewPoint {
    /// 1–128 characters.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
    /// Up to 256 characters.
    #[schema(max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    location: Option<String>,
    /// 1–32 characters; default `door`.
    #[serde(rename = "type")]
    #[schema(
        min_length = 1,
        max_length = 32,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    kind: Option<String>,
    /// Default `active`.
    status: Option<PointStatus>,
    /// The site; default the first.
    property_id: Option<String>,
}

/// Changes to a point; at least one field.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PointChange {
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: Option<String>,
    #[schema(max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    location: Option<String>,
    #[serde(rename = "type")]
    #[schema(
        min_length = 1,
        max_length = 32,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    kind: Option<String>,
    status: Option<PointStatus>,
    property_id: Option<String>,
}

/// Check lengths and the site; the edit.
#[allow(clippy::result_large_err)]
fn edit_of(
    w: &Web,
    name: Option<String>,
    location: Option<String>,
    kind: Option<String>,
    status: Option<PointStatus>,
    site: Option<String>,
) -> Result<PointEdit, Response> {
    let bad = |m: &str| Err(detail(StatusCode::UNPROCESSABLE_ENTITY, m));
    let name = name.map(|n| n.trim().to_string());
    if let Some(n) = &name
        && (n.is_empty() || n.chars().count() > 128 || n.chars().any(char::is_control))
    {
        return bad("name must be 1 to 128 characters, without control characters");
    }
    let location = location.map(|l| l.trim().to_string());
    if let Some(l) = &location
        && (l.chars().count() > 256 || l.chars().any(char::is_control))
    {
        return bad("location must be at most 256 characters, without control characters");
    }
    let kind = kind.map(|k| k.trim().to_string());
    if let Some(k) = &kind
        && (k.is_empty() || k.chars().count() > 32 || k.chars().any(char::is_control))
    {
        return bad("type must be 1 to 32 characters, without control characters");
    }
    if let Some(s) = &site
        && !w.config().has_site(s)
    {
        return Err(detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("unknown property_id {s:?}"),
        ));
    }
    Ok(PointEdit {
        name,
        location,
        kind_type: kind,
        status: status.map(|s| s.as_str().to_string()),
        site,
    })
}

/// Create a point that exists only in gatehouse (admin).
#[utoipa::path(post, path = "/api/access-control/points", tag = "access-control",
    request_body = NewPoint,
    responses((status = 201, body = PointAnswer), (status = 400, body = Detail),
        (status = 401, body = Detail), (status = 403, body = Detail),
        (status = 415, body = Detail), (status = 422, body = Detail)))]
pub(in crate::web) async fn create(
    State(w): State<Web>,
    Extension(caller): Extension<Caller>,
    axum::Json(p): axum::Json<NewPoint>,
) -> Response {
    if let Err(r) = caller.need(Role::Admin) {
        return r;
    }
    let mut e = match edit_of(
        &w,
        Some(p.name),
        p.location,
        p.kind,
        p.status,
        p.property_id,
    ) {
        Ok(e) => e,
        Err(r) => return r,
    };
    e.status.get_or_insert_with(|| "active".into());
    e.kind_type.get_or_insert_with(|| "door".into());
    e.site.get_or_insert_with(|| w.config().first_site());
    let row = match w.store.run(move |s| s.point_create(&e, Utc::now())).await {
        Ok(r) => r,
        Err(e) => return internal(&e),
    };
    tracing::info!(point = %row.id, user = %caller.name, "access point created");
    let info = stored_info(&w.config(), &row, &w.at());
    (
        StatusCode::CREATED,
        axum::Json(PointAnswer {
            data: info.point,
            message: "Access point created".into(),
            success: true,
        }),
    )
        .into_response()
}

/// Edit a point's name, location, type, status or site (admin). A Net2 door keeps its name
/// in Net2; gatehouse shows the one set here.
#[utoipa::path(put, path = "/api/access-control/points/{id}", tag = "access-control",
    params(("id" = String, Path, description = "point id")),
    request_body = PointChange,
    responses((status = 200, body = PointAnswer), (status = 400, body = Detail),
        (status = 401, body = Detail), (status = 403, body = Detail), (status = 404, body = Detail),
        (status = 415, body = Detail), (status = 422, body = Detail)))]
pub(in crate::web) async fn edit(
    State(w): State<Web>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    axum::Json(p): axum::Json<PointChange>,
) -> Response {
    if let Err(r) = caller.need(Role::Admin) {
        return r;
    }
    if p.name.is_none()
        && p.location.is_none()
        && p.kind.is_none()
        && p.status.is_none()
        && p.property_id.is_none()
    {
        return detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "nothing to change: give name, location, type, status or property_id",
        );
    }
    let e = match edit_of(&w, p.name, p.location, p.kind, p.status, p.property_id) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let target = match find(&w, &id).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let key = id.clone();
    let row = match w
        .store
        .run(move |s| s.point_edit(&key, &e, Utc::now()))
        .await
    {
        Ok(Some(r)) => r,
        Ok(None) => return detail(StatusCode::NOT_FOUND, format!("no access point {id:?}")),
        Err(e) => return internal(&e),
    };
    tracing::info!(point = %id, user = %caller.name, "access point edited");
    let cfg = w.config();
    let info = match target {
        Target::Net2(door, _) => {
            let net2_online = w.bus.health("net2").is_none_or(|h| h.online);
            net2_info(
                &cfg,
                &door,
                Some(&row),
                net2_online,
                w.directory.snapshot().status_polled,
            )
        }
        Target::Stored(_) => {
            if row.hw.is_some() {
                w.hardware.notify_one();
            }
            stored_info(&cfg, &row, &w.at())
        }
    };
    axum::Json(PointAnswer {
        data: info.point,
        message: "Access point updated".into(),
        success: true,
    })
    .into_response()
}

/// Delete a point made here or a hardware device (admin). A Net2 door cannot be deleted
/// (409): it exists in Net2; set its status to `disabled` instead.
#[utoipa::path(delete, path = "/api/access-control/points/{id}", tag = "access-control",
    params(("id" = String, Path, description = "point id")),
    responses((status = 200, body = Deleted), (status = 401, body = Detail),
        (status = 403, body = Detail), (status = 404, body = Detail), (status = 409, body = Detail)))]
pub(in crate::web) async fn delete(
    State(w): State<Web>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = caller.need(Role::Admin) {
        return r;
    }
    let row = match find(&w, &id).await {
        Ok(Target::Net2(door, _)) => {
            return detail(
                StatusCode::CONFLICT,
                format!(
                    "{id} is Net2 door {} and exists in Net2: gatehouse cannot delete it; set its status to disabled instead",
                    door.id
                ),
            );
        }
        Ok(Target::Stored(r)) => r,
        Err(r) => return r,
    };
    let key = id.clone();
    match w.store.run(move |s| s.point_delete(&key)).await {
        Ok(true) => {}
        Ok(false) => return detail(StatusCode::NOT_FOUND, format!("no access point {id:?}")),
        Err(e) => return internal(&e),
    }
    tracing::info!(point = %id, user = %caller.name, "access point deleted");
    if row.hw.is_some() {
        w.hardware.notify_one();
    }
    axum::Json(Deleted {
        data: DeletedId { id },
        message: "Access point deleted".into(),
        success: true,
    })
    .into_response()
}
