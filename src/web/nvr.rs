//! Seed 004's device and alarm routes, served from what gatehouse knows — the configured
//! Hikvision devices (`sources.hikvision`), the device info and reachability their sources keep
//! in [`crate::directory::Cameras`], the stored camera alarms — and, for recording days and a
//! login test, from the device itself (live ISAPI requests, never a cached or made-up answer).
//!
//! Ids, as seed 004 has integers where gatehouse has names:
//! - a device's `id` is its 1-based position in `sources.hikvision` (stable while the config
//!   is); `config_id` is its configured id. A `{device}` path segment takes either: the
//!   configured id first, else the position.
//! - a channel's `id` is `device id × 1000 + channel number` (device 2's channel 3 is 2003):
//!   the one number `…/channels/{channel_id}/record_days_full` needs.
//! - an alarm's `id` is its event's `seq`.
//!
//! Nothing here can carry a password: the response types have no field for one, the
//! login test's password is a [`Secret`] used for one `Authorization` header only.

use super::{Caller, Detail, Web, detail};
use crate::config::{HikvisionConfig, Role};
use crate::directory::CameraEntry;
use crate::secret::Secret;
use crate::storage::query::{self, AlarmFilter, Cursor};
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The brand gatehouse speaks (the only one `test-connection` accepts).
const BRAND: &str = "hikvision";
/// Channel ids are `device id × CHANNEL_BASE + channel number`.
const CHANNEL_BASE: i64 = 1000;
/// Alarms a page by default.
const DEFAULT_ALARMS: u32 = 50;
/// How long a recording-days search may take on the device.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------------------ shapes

/// A configured device (seed 004's `Device`, without its password).
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(super) struct Device {
    /// 1-based position in `sources.hikvision`.
    id: i64,
    /// The configured id (`sources.hikvision[].id`), as topics and the live routes name it.
    config_id: String,
    /// The configured name, else the name the device reports.
    name: Option<String>,
    /// Host of the configured `url` (of `rtsp_url` for a camera without ISAPI).
    ip_nvr: Option<String>,
    /// `host[:port]` of the configured `url` (its web interface); null without ISAPI.
    ip_web: Option<String>,
    /// The configured username.
    username: String,
    brand: String,
    /// Reachable now: its alert stream (an RTSP-only camera: RTSP) is up, as published as its
    /// availability.
    is_checked: bool,
}

/// A channel of a device (from the device info its source fetched).
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(super) struct Channel {
    /// `device id × 1000 + channel_no`.
    id: i64,
    device_id: i64,
    config_id: String,
    channel_no: u32,
    name: Option<String>,
    /// False while the channel reports video loss, or when `ignore_channels` lists it.
    is_active: bool,
}

/// An HDD or SD card (seed 004's storage shape; sizes in MB as the device reports them).
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(super) struct Disk {
    hdd_id: u32,
    hdd_name: Option<String>,
    /// `ok`, `error`, `unformatted`, `idle`… as the device says (lower case).
    status: String,
    hdd_type: Option<String>,
    capacity: Option<u64>,
    free_space: Option<u64>,
    property: Option<String>,
}

/// `GET /api/device/{device}/infor`: seed 004's system info, with the device type and disks.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(super) struct SystemInfo {
    device_id: i64,
    config_id: String,
    device_name: Option<String>,
    model: Option<String>,
    serial_number: Option<String>,
    firmware_version: Option<String>,
    mac_address: Option<String>,
    /// `IPCamera`, `IPDome`, `NVR`, `DVR`…
    device_type: Option<String>,
    disks: Vec<Disk>,
    /// When gatehouse fetched it (the source refreshes it every 10 minutes).
    fetched_at: Option<String>,
}

/// `GET /api/device/{device}/channel/{ch}/infor`: seed 004's channel info. Gatehouse reads
/// no stream configuration from devices: fields it does not know are null, never guessed.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(super) struct ChannelInfo {
    /// `device id × 1000 + channel number`.
    id: i64,
    device_id: i64,
    channel_no: u32,
    channel_name: Option<String>,
    /// `ip` (an NVR's IP camera) or `local` (the device's own input).
    connected_type: Option<String>,
    /// Whether the channel reports video loss now.
    video_loss: bool,
    motion_detect: Option<bool>,
    resolution_width: Option<u32>,
    resolution_height: Option<u32>,
    video_codec: Option<String>,
    max_frame_rate: Option<u32>,
    fixed_quality: Option<u32>,
    vbr_average_cap: Option<u32>,
    vbr_upper_cap: Option<u32>,
    h265_plus: Option<bool>,
}

/// A stored camera alarm (seed 004's `AlarmMessage`).
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(super) struct Alarm {
    /// The event's `seq`.
    id: i64,
    /// The device's position in `sources.hikvision`; null when it is no longer configured.
    device_id: Option<i64>,
    config_id: String,
    device_ip_web: Option<String>,
    /// The alert type as gatehouse names it (`vmd`, `linedetection`, `videoloss`…).
    event: String,
    /// Null for a device-level alert.
    channel_id_in_device: Option<String>,
    channel_name: Option<String>,
    message: Option<String>,
    /// When gatehouse received it (UTC, milliseconds).
    created_at: String,
}

/// A page of alarms, newest first. Pass `next_cursor_time` and `next_cursor_id` back as
/// `cursor_time` and `cursor_id` for the next page (null when `has_more` is false).
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(super) struct AlarmPage {
    items: Vec<Alarm>,
    next_cursor_time: Option<String>,
    next_cursor_id: Option<i64>,
    has_more: bool,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(super) struct AlarmsDeleted {
    detail: String,
    deleted_count: u64,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TestConnection {
    /// `host` or `host:port` of the device's web interface.
    ip_web: String,
    username: String,
    /// Used for one login attempt; never logged, stored or echoed.
    #[schema(value_type = String, format = Password)]
    password: Secret,
    /// `hikvision` (the only brand gatehouse speaks).
    brand: String,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(super) struct ConnectionResult {
    ip_reachable: bool,
    auth_ok: bool,
    message: String,
}

/// A day of a channel's recording calendar (`record_days_full`).
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(super) struct RecordDay {
    /// The date as a number, `YYYYMMDD`.
    id: i64,
    channel_id: i64,
    record_date: String,
    has_record: bool,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(super) struct TimeRange {
    start_time: String,
    end_time: String,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(super) struct MonthDay {
    record_date: String,
    has_record: bool,
    /// `time` (continuous) or `event`, as the device says.
    record_type: Option<String>,
    /// Not searched (null): the device's day list says only whether a day has recordings.
    time_ranges: Option<Vec<TimeRange>>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(super) struct MonthChannelRef {
    id: i64,
    channel_no: u32,
    name: Option<String>,
    /// Not known (null): the device is asked one month at a time.
    oldest_record_date: Option<String>,
    latest_record_date: Option<String>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(super) struct MonthChannel {
    channel: MonthChannelRef,
    record_days: Vec<MonthDay>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(super) struct MonthData {
    /// Not known (null): see `oldest_record_date`.
    oldest_record_month: Option<String>,
    channels: Vec<MonthChannel>,
}

// ------------------------------------------------------------------------------ helpers

/// A configured device: its position (from 1), config and what its source knows.
struct Dev {
    id: i64,
    cfg: HikvisionConfig,
    entry: CameraEntry,
}

impl Dev {
    fn channels(&self) -> Vec<(u32, Option<String>)> {
        self.entry
            .info
            .iter()
            .flat_map(|i| i.channels.iter().map(|c| (c.id, c.name.clone())))
            .collect()
    }

    fn channel_name(&self, ch: u32) -> Option<String> {
        self.channels()
            .into_iter()
            .find(|(id, _)| *id == ch)
            .and_then(|(_, n)| n)
    }

    fn channel_id(&self, ch: u32) -> i64 {
        self.id * CHANNEL_BASE + i64::from(ch)
    }

    fn online(&self) -> bool {
        self.entry.online == Some(true)
    }

    fn view(&self) -> Device {
        Device {
            id: self.id,
            config_id: self.cfg.id.clone(),
            name: self
                .cfg
                .name
                .clone()
                .or_else(|| self.entry.info.as_ref().and_then(|i| i.name.clone())),
            ip_nvr: ip_nvr(&self.cfg),
            ip_web: ip_web(&self.cfg),
            username: self.cfg.username.clone(),
            brand: BRAND.into(),
            is_checked: self.online(),
        }
    }

    /// 404 unless the device info lists channel `ch`.
    #[allow(clippy::result_large_err)]
    fn need_channel(&self, ch: u32) -> Result<Option<String>, Response> {
        if self.entry.info.is_none() {
            return Err(no_info(self));
        }
        match self.channels().into_iter().find(|(id, _)| *id == ch) {
            Some((_, name)) => Ok(name),
            None => Err(detail(
                StatusCode::NOT_FOUND,
                format!("Channel not found: {} has no channel {ch}", self.cfg.id),
            )),
        }
    }
}

fn no_info(d: &Dev) -> Response {
    let why = if d.cfg.isapi() {
        "it has not answered /ISAPI/System/deviceInfo yet"
    } else {
        "it has no ISAPI (an RTSP-only camera)"
    };
    detail(
        StatusCode::NOT_FOUND,
        format!("System info not found for {}: {why}", d.cfg.id),
    )
}

/// `host[:port]` of the configured ISAPI URL.
fn ip_web(c: &HikvisionConfig) -> Option<String> {
    if !c.isapi() {
        return None;
    }
    let u = url::Url::parse(&c.url).ok()?;
    let host = u.host_str()?.to_string();
    Some(match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

/// Host of the ISAPI URL, else of the RTSP URL (its user info never leaves here).
fn ip_nvr(c: &HikvisionConfig) -> Option<String> {
    let from = |s: &str| url::Url::parse(s).ok()?.host_str().map(str::to_string);
    if c.isapi() {
        from(&c.url)
    } else {
        from(c.rtsp_url.as_ref()?.expose())
    }
}

fn all_devices(w: &Web) -> Vec<Dev> {
    let cameras = w.directory.cameras().all();
    w.config()
        .sources
        .hikvision
        .iter()
        .enumerate()
        .map(|(i, c)| Dev {
            id: i as i64 + 1,
            entry: cameras.get(&c.id).cloned().unwrap_or_default(),
            cfg: c.clone(),
        })
        .collect()
}

/// The device a `{device}` segment or `device_id` names: its configured id, else its position.
#[allow(clippy::result_large_err)]
fn find(w: &Web, key: &str) -> Result<Dev, Response> {
    let mut all = all_devices(w);
    let at = all.iter().position(|d| d.cfg.id == key).or_else(|| {
        key.parse::<i64>()
            .ok()
            .filter(|n| *n >= 1 && *n <= all.len() as i64)
            .map(|n| n as usize - 1)
    });
    match at {
        Some(i) => Ok(all.swap_remove(i)),
        None => Err(detail(
            StatusCode::NOT_FOUND,
            format!(
                "Device not found: {:?} is neither a configured id nor a position in sources.hikvision",
                key.chars().take(64).collect::<String>()
            ),
        )),
    }
}

fn utc_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn bad_request(msg: impl Into<String>) -> Response {
    detail(StatusCode::BAD_REQUEST, msg)
}

fn store_error(e: &crate::error::Error) -> Response {
    tracing::warn!(error = %e, "alarm query failed");
    detail(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("database error: {e}"),
    )
}

// ------------------------------------------------------------------------------ devices

#[utoipa::path(get, path = "/api/devices", tag = "devices",
    responses((status = 200, description = "the configured Hikvision devices", body = Vec<Device>)))]
pub(super) async fn devices(State(w): State<Web>) -> Response {
    let list: Vec<Device> = all_devices(&w).iter().map(Dev::view).collect();
    axum::Json(list).into_response()
}

#[utoipa::path(get, path = "/api/devices/active", tag = "devices",
    responses((status = 200, description = "the devices reachable now", body = Vec<Device>)))]
pub(super) async fn devices_active(State(w): State<Web>) -> Response {
    let list: Vec<Device> = all_devices(&w)
        .iter()
        .filter(|d| d.online())
        .map(Dev::view)
        .collect();
    axum::Json(list).into_response()
}

#[utoipa::path(get, path = "/api/devices/{device}/channels", tag = "devices",
    params(("device" = String, Path, description = "configured id, or position in sources.hikvision (from 1)", example = "1")),
    responses((status = 200, body = Vec<Channel>), (status = 404, description = "no such device, or its channels are not known yet", body = Detail)))]
pub(super) async fn channels(State(w): State<Web>, Path(device): Path<String>) -> Response {
    let d = match find(&w, &device) {
        Ok(d) => d,
        Err(r) => return r,
    };
    if d.entry.info.is_none() {
        return no_info(&d);
    }
    let list: Vec<Channel> = d
        .channels()
        .into_iter()
        .map(|(no, name)| Channel {
            id: d.channel_id(no),
            device_id: d.id,
            config_id: d.cfg.id.clone(),
            channel_no: no,
            name,
            is_active: !d.entry.video_loss.contains(&no) && !d.cfg.ignore_channels.contains(&no),
        })
        .collect();
    axum::Json(list).into_response()
}

fn disks(d: &Dev) -> Vec<Disk> {
    d.entry
        .info
        .iter()
        .flat_map(|i| i.disks.iter())
        .map(|k| Disk {
            hdd_id: k.id,
            hdd_name: k.name.clone(),
            status: k.status.clone(),
            hdd_type: k.kind.clone(),
            capacity: k.capacity_mb,
            free_space: k.free_mb,
            property: k.property.clone(),
        })
        .collect()
}

#[utoipa::path(get, path = "/api/device/{device}/infor", tag = "devices",
    params(("device" = String, Path, description = "configured id, or position in sources.hikvision (from 1)", example = "1")),
    responses((status = 200, body = SystemInfo), (status = 404, description = "no such device, or no device info yet", body = Detail)))]
pub(super) async fn system_info(State(w): State<Web>, Path(device): Path<String>) -> Response {
    let d = match find(&w, &device) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let Some(i) = &d.entry.info else {
        return no_info(&d);
    };
    axum::Json(SystemInfo {
        device_id: d.id,
        config_id: d.cfg.id.clone(),
        device_name: i.name.clone(),
        model: i.model.clone(),
        serial_number: i.serial.clone(),
        firmware_version: i.firmware.clone(),
        mac_address: i.mac.clone(),
        device_type: i.device_type.clone(),
        disks: disks(&d),
        fetched_at: d.entry.info_fetched.map(|t| utc_ms(t.timestamp_millis())),
    })
    .into_response()
}

#[utoipa::path(get, path = "/api/device/{device}/infor/storage", tag = "devices",
    params(("device" = String, Path, description = "configured id, or position in sources.hikvision (from 1)", example = "1")),
    responses((status = 200, body = Vec<Disk>), (status = 404, description = "no such device, or no device info yet", body = Detail)))]
pub(super) async fn storage(State(w): State<Web>, Path(device): Path<String>) -> Response {
    let d = match find(&w, &device) {
        Ok(d) => d,
        Err(r) => return r,
    };
    if d.entry.info.is_none() {
        return no_info(&d);
    }
    axum::Json(disks(&d)).into_response()
}

#[utoipa::path(get, path = "/api/device/{device}/channel/{ch}/infor", tag = "devices",
    params(("device" = String, Path, description = "configured id, or position in sources.hikvision (from 1)", example = "1"), ("ch" = u32, Path, description = "channel number on the device", example = 1)),
    responses((status = 200, body = ChannelInfo), (status = 404, description = "no such device or channel, or no device info yet", body = Detail)))]
pub(super) async fn channel_info(
    State(w): State<Web>,
    Path((device, ch)): Path<(String, u32)>,
) -> Response {
    let d = match find(&w, &device) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let name = match d.need_channel(ch) {
        Ok(n) => n,
        Err(r) => return r,
    };
    axum::Json(ChannelInfo {
        id: d.channel_id(ch),
        device_id: d.id,
        channel_no: ch,
        channel_name: name,
        connected_type: d.entry.channel_source.map(str::to_string),
        video_loss: d.entry.video_loss.contains(&ch),
        motion_detect: None,
        resolution_width: None,
        resolution_height: None,
        video_codec: None,
        max_frame_rate: None,
        fixed_quality: None,
        vbr_average_cap: None,
        vbr_upper_cap: None,
        h265_plus: None,
    })
    .into_response()
}

// ------------------------------------------------------------------------------ test-connection

/// `host` or `host:port`, nothing else (no scheme, path, user info or query): the one
/// address the test may reach.
fn valid_host(s: &str) -> bool {
    if s.is_empty() || s.len() > 255 || s.contains(['/', '@', '?', '#', '\\']) || s.trim() != s {
        return false;
    }
    url::Url::parse(&format!("http://{s}/")).is_ok_and(|u| {
        u.host_str().is_some()
            && u.path() == "/"
            && u.username().is_empty()
            && u.password().is_none()
    })
}

#[utoipa::path(post, path = "/api/devices/test-connection", tag = "devices",
    request_body = TestConnection,
    responses((status = 200, description = "what one login attempt found (never retried: devices lock an account out after a few bad logins)", body = ConnectionResult),
        (status = 422, description = "not a host[:port], an empty username, or a brand other than hikvision", body = Detail)))]
pub(super) async fn test_connection(
    Extension(caller): Extension<Caller>,
    axum::Json(req): axum::Json<TestConnection>,
) -> Response {
    if let Err(r) = caller.need(Role::Operator) {
        return r;
    }
    if !req.brand.eq_ignore_ascii_case(BRAND) {
        return detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "Unsupported brand {:?}: only hikvision",
                req.brand.chars().take(40).collect::<String>()
            ),
        );
    }
    if !valid_host(&req.ip_web) {
        return detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ip_web must be a host or host:port (no scheme, path or user info)",
        );
    }
    if req.username.is_empty()
        || req.username.len() > 64
        || req.username.contains(['"', '\r', '\n'])
    {
        return detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "username must be 1 to 64 characters, without quotes or line breaks",
        );
    }
    let r =
        crate::sources::hikvision::client::test_login(&req.ip_web, &req.username, &req.password)
            .await;
    tracing::info!(user = %caller.name, host = %req.ip_web, device_user = %req.username, reachable = r.reachable, auth_ok = r.auth_ok, "device login test");
    axum::Json(ConnectionResult {
        ip_reachable: r.reachable,
        auth_ok: r.auth_ok,
        message: r.message,
    })
    .into_response()
}

// ------------------------------------------------------------------------------ recording days

/// `YYYY-MM`.
pub(super) fn parse_month(s: &str) -> Option<NaiveDate> {
    let (y, m) = s.split_once('-')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, 1)
}

/// The device's recording days of channel `ch` in the month of `first` (every day it lists).
async fn month_days(
    w: &Web,
    d: &Dev,
    ch: u32,
    first: NaiveDate,
) -> Result<Vec<crate::sources::hikvision::info::RecordDay>, Response> {
    let client = w
        .media
        .as_ref()
        .and_then(|m| m.isapi(&d.cfg.id))
        .ok_or_else(|| {
            detail(
                StatusCode::NOT_IMPLEMENTED,
                format!(
                    "{} has no ISAPI: it cannot be asked for recordings",
                    d.cfg.id
                ),
            )
        })?;
    let path = format!("/ISAPI/ContentMgmt/record/tracks/{ch}01/dailyDistribution");
    let body = crate::sources::hikvision::info::daily_param(first.year(), first.month());
    let (status, text) = client
        .post_xml(&path, &body, SEARCH_TIMEOUT)
        .await
        .map_err(|e| {
            detail(
                StatusCode::BAD_GATEWAY,
                format!("unable to ask {} for recording days: {e}", d.cfg.id),
            )
        })?;
    if matches!(
        status,
        reqwest::StatusCode::NOT_FOUND
            | reqwest::StatusCode::FORBIDDEN
            | reqwest::StatusCode::NOT_IMPLEMENTED
            | reqwest::StatusCode::METHOD_NOT_ALLOWED
    ) || text.contains("notSupport")
    {
        return Err(detail(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "{} does not search recordings (dailyDistribution answered HTTP {})",
                d.cfg.id,
                status.as_u16()
            ),
        ));
    }
    let days = status
        .is_success()
        .then(|| crate::sources::hikvision::info::daily_distribution(&text))
        .flatten();
    days.ok_or_else(|| {
        detail(
            StatusCode::BAD_GATEWAY,
            format!(
                "{} answered the recording search with HTTP {} and no day list",
                d.cfg.id,
                status.as_u16()
            ),
        )
    })
}

fn date_of(first: NaiveDate, day: u32) -> Option<NaiveDate> {
    first.with_day(day)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct MonthQuery {
    /// `YYYY-MM`; the current month (local time) when left out.
    month: Option<String>,
}

#[utoipa::path(get, path = "/api/devices/channels/{channel_id}/record_days_full", tag = "recordings",
    params(("channel_id" = i64, Path, description = "device id × 1000 + channel number", example = 1001), MonthQuery),
    responses((status = 200, description = "the days of the month the device lists, with whether each has recordings", body = Vec<RecordDay>),
        (status = 404, description = "no such channel", body = Detail),
        (status = 501, description = "the device has no recording search", body = Detail),
        (status = 502, description = "the device did not answer", body = Detail)))]
pub(super) async fn record_days_full(
    State(w): State<Web>,
    Path(channel_id): Path<i64>,
    Query(q): Query<MonthQuery>,
) -> Response {
    let first = match q.month.as_deref() {
        Some(m) => match parse_month(m) {
            Some(f) => f,
            None => return bad_request("month must be YYYY-MM"),
        },
        None => {
            let t = chrono::Local::now().date_naive();
            t.with_day(1).unwrap_or(t)
        }
    };
    let not_found = || {
        detail(
            StatusCode::NOT_FOUND,
            format!(
                "Channel not found: {channel_id} (channel ids are device id × 1000 + channel number)"
            ),
        )
    };
    let (dev, ch) = (channel_id / CHANNEL_BASE, channel_id % CHANNEL_BASE);
    if channel_id <= 0 || ch <= 0 {
        return not_found();
    }
    let Some(d) = all_devices(&w).into_iter().find(|d| d.id == dev) else {
        return not_found();
    };
    let ch = ch as u32;
    if let Err(r) = d.need_channel(ch) {
        return r;
    }
    let days = match month_days(&w, &d, ch, first).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let list: Vec<RecordDay> = days
        .iter()
        .filter_map(|r| {
            let date = date_of(first, r.day_of_month)?;
            Some(RecordDay {
                id: i64::from(date.year()) * 10_000
                    + i64::from(date.month()) * 100
                    + i64::from(date.day()),
                channel_id,
                record_date: date.to_string(),
                has_record: r.record,
            })
        })
        .collect();
    axum::Json(list).into_response()
}

#[utoipa::path(get, path = "/api/devices/{device}/channels/month_data/{date_str}", tag = "recordings",
    params(("device" = String, Path, description = "configured id, or position in sources.hikvision (from 1)", example = "1"), ("date_str" = String, Path, description = "YYYY-MM", example = "2025-01")),
    responses((status = 200, description = "every channel's recording days of the month", body = MonthData),
        (status = 404, description = "no such device, or its channels are not known yet", body = Detail),
        (status = 501, description = "the device has no recording search", body = Detail),
        (status = 502, description = "the device did not answer", body = Detail)))]
pub(super) async fn month_data(
    State(w): State<Web>,
    Path((device, date_str)): Path<(String, String)>,
) -> Response {
    let Some(first) = parse_month(&date_str) else {
        return bad_request("date_str must be YYYY-MM");
    };
    let d = match find(&w, &device) {
        Ok(d) => d,
        Err(r) => return r,
    };
    if d.entry.info.is_none() {
        return no_info(&d);
    }
    let mut channels = Vec::new();
    for (no, name) in d.channels() {
        let days = match month_days(&w, &d, no, first).await {
            Ok(x) => x,
            Err(r) => return r,
        };
        channels.push(MonthChannel {
            channel: MonthChannelRef {
                id: d.channel_id(no),
                channel_no: no,
                name,
                oldest_record_date: None,
                latest_record_date: None,
            },
            record_days: days
                .iter()
                .filter_map(|r| {
                    Some(MonthDay {
                        record_date: date_of(first, r.day_of_month)?.to_string(),
                        has_record: r.record,
                        record_type: r.record_type.clone(),
                        time_ranges: None,
                    })
                })
                .collect(),
        });
    }
    axum::Json(MonthData {
        oldest_record_month: None,
        channels,
    })
    .into_response()
}

// ------------------------------------------------------------------------------ alarms

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AlarmQuery {
    /// `created_at` of the last alarm seen (`next_cursor_time`); with `cursor_id`.
    cursor_time: Option<String>,
    /// `id` of the last alarm seen (`next_cursor_id`); with `cursor_time`.
    cursor_id: Option<i64>,
    /// Only this device's (configured id or position).
    device_id: Option<String>,
    /// Only this alert type (`vmd`, `linedetection`…).
    event: Option<String>,
    /// Only this channel.
    channel_id_in_device: Option<String>,
    /// 1 to 1000; 50 when left out.
    limit: Option<u32>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DeviceQuery {
    /// Only this device's alarms (configured id or position).
    device_id: Option<String>,
}

/// Who an alarm's device is, by configured id.
fn alarm_view(row: query::AlarmRow, devices: &[Dev]) -> Alarm {
    let d = devices.iter().find(|d| d.cfg.id == row.device);
    Alarm {
        id: row.seq,
        device_id: d.map(|d| d.id),
        device_ip_web: d.and_then(|d| ip_web(&d.cfg)),
        event: row.event_type,
        channel_id_in_device: row.channel.map(|c| c.to_string()),
        channel_name: d.zip(row.channel).and_then(|(d, c)| d.channel_name(c)),
        message: row.description,
        created_at: utc_ms(row.time_ms),
        config_id: row.device,
    }
}

#[utoipa::path(get, path = "/api/user/alarm", tag = "alarms",
    params(AlarmQuery),
    responses((status = 200, description = "stored camera alarms not dismissed, newest first", body = AlarmPage),
        (status = 404, description = "no such device", body = Detail)))]
pub(super) async fn alarms(State(w): State<Web>, Query(q): Query<AlarmQuery>) -> Response {
    let limit = q.limit.unwrap_or(DEFAULT_ALARMS);
    if !(1..=query::MAX_LIMIT).contains(&limit) {
        return bad_request(format!("limit must be 1 to {}", query::MAX_LIMIT));
    }
    let cursor = match (&q.cursor_time, q.cursor_id) {
        (None, None) => None,
        (Some(t), Some(id)) => {
            let Ok(t) = chrono::DateTime::parse_from_rfc3339(t) else {
                return bad_request(
                    "cursor_time must be an ISO 8601 date and time with offset (next_cursor_time)",
                );
            };
            if id < 0 {
                return bad_request("cursor_id must not be negative");
            }
            Some(Cursor {
                time_ms: t.timestamp_millis(),
                seq: id,
            })
        }
        _ => return bad_request("cursor_time and cursor_id go together"),
    };
    let mut filter = AlarmFilter::default();
    if let Some(dev) = &q.device_id {
        match find(&w, dev) {
            Ok(d) => filter.device = Some(d.cfg.id),
            Err(r) => return r,
        }
    }
    filter.event_type = q.event.clone();
    if let Some(c) = &q.channel_id_in_device {
        match c.parse::<u32>() {
            Ok(c) => filter.channel = Some(c),
            Err(_) => return bad_request("channel_id_in_device must be a channel number"),
        }
    }
    let res = w
        .store
        .read(move |c| query::alarms_page(c, &filter, cursor, limit))
        .await;
    let (rows, more) = match res {
        Ok(x) => x,
        Err(e) => return store_error(&e),
    };
    let devices = all_devices(&w);
    let last = rows.last().map(|r| r.cursor());
    let items: Vec<Alarm> = rows.into_iter().map(|r| alarm_view(r, &devices)).collect();
    axum::Json(AlarmPage {
        items,
        next_cursor_time: last.filter(|_| more).map(|c| utc_ms(c.time_ms)),
        next_cursor_id: last.filter(|_| more).map(|c| c.seq),
        has_more: more,
    })
    .into_response()
}

#[utoipa::path(delete, path = "/api/user/alarm/{alarm_id}", tag = "alarms",
    params(("alarm_id" = i64, Path, description = "the alarm's id")),
    responses((status = 200, description = "dismissed (its event stays in the history)", body = Detail),
        (status = 404, description = "no such alarm, or dismissed already", body = Detail)))]
pub(super) async fn alarm_delete(
    State(w): State<Web>,
    Extension(caller): Extension<Caller>,
    Path(alarm_id): Path<i64>,
) -> Response {
    if let Err(r) = caller.need(Role::Admin) {
        return r;
    }
    match w
        .store
        .run(move |s| s.with_conn(|c| query::alarm_delete(c, alarm_id)))
        .await
    {
        Ok(true) => {
            tracing::info!(user = %caller.name, alarm_id, "alarm dismissed");
            axum::Json(serde_json::json!({"detail": "Alarm deleted successfully"})).into_response()
        }
        Ok(false) => detail(
            StatusCode::NOT_FOUND,
            format!("Alarm not found: {alarm_id} (or dismissed already)"),
        ),
        Err(e) => store_error(&e),
    }
}

#[utoipa::path(delete, path = "/api/user/alarm", tag = "alarms",
    params(DeviceQuery),
    responses((status = 200, description = "every alarm (of the device) dismissed; the events stay", body = AlarmsDeleted),
        (status = 404, description = "no such device", body = Detail)))]
pub(super) async fn alarms_delete(
    State(w): State<Web>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<DeviceQuery>,
) -> Response {
    if let Err(r) = caller.need(Role::Admin) {
        return r;
    }
    let device = match &q.device_id {
        Some(dev) => match find(&w, dev) {
            Ok(d) => Some(d.cfg.id),
            Err(r) => return r,
        },
        None => None,
    };
    let dev = device.clone();
    match w
        .store
        .run(move |s| s.with_conn(|c| query::alarm_delete_all(c, dev.as_deref())))
        .await
    {
        Ok(n) => {
            tracing::info!(user = %caller.name, device = ?device, count = n, "alarms dismissed");
            axum::Json(AlarmsDeleted {
                detail: "All alarms deleted".into(),
                deleted_count: n,
            })
            .into_response()
        }
        Err(e) => store_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_months_and_addresses() {
        for ok in ["192.168.1.64", "127.0.0.1:8080", "nvr.local", "[::1]:80"] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in [
            "", "http://x", "x/ISAPI", "u:p@x", "x?y", " x", "x#", "x:99999",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
        assert_eq!(parse_month("2025-01"), NaiveDate::from_ymd_opt(2025, 1, 1));
        for bad in ["2025-13", "2025-1", "25-01", "2025-01-01", "abcd-ef"] {
            assert_eq!(parse_month(bad), None, "{bad}");
        }
        let cam = HikvisionConfig {
            id: "gate".into(),
            url: "http://10.0.0.5:8080/".into(),
            ..Default::default()
        };
        assert_eq!(ip_web(&cam).as_deref(), Some("10.0.0.5:8080"));
        assert_eq!(ip_nvr(&cam).as_deref(), Some("10.0.0.5"));
        let rtsp = HikvisionConfig {
            id: "door".into(),
            rtsp_url: Some(Secret::new(
                "rtsp://admin:s3cret@10.0.0.6:554/Streaming/Channels/101",
            )),
            ..Default::default()
        };
        assert_eq!(ip_web(&rtsp), None);
        assert_eq!(ip_nvr(&rtsp).as_deref(), Some("10.0.0.6"));
        assert_eq!(utc_ms(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
    }
}
