//! Seed 001's emergency operations (`/api/access-control/emergency/…`) and audit
//! (`/api/access-control/audit`).
//!
//! Emergency steps are [`crate::emergency`]'s; this is their HTTP face: admin only, the seed's
//! bodies and answer (`mode`, `initiated_by`, `initiated_at`, `reason`, `timeout_minutes`,
//! `expires_at`) plus the property, the doors an unlock holds open and how each door command
//! of the step went. The audit lists every command's progress and every note (emergency
//! steps, external entries) in the seed's shape, newest first.

use super::{Caller, Detail, Web, detail};
use crate::config::Role;
use crate::emergency::{DoorOutcome, Mode, Outcome, Refusal, Request};
use crate::model::EmergencyState;
use crate::storage::{AuditNote, AuditRow};
use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Pagination;

// ------------------------------------------------------------------------------ emergency

/// Lockdown or unlock.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EmergencyBody {
    /// The property (site) it is for.
    property_id: String,
    /// Why (required: it goes into the audit).
    reason: String,
    /// Restore by itself after this many minutes (1 to 1440); without it, until restored.
    #[serde(default)]
    timeout_minutes: Option<u32>,
}

/// Back to normal.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RestoreBody {
    property_id: String,
    reason: String,
}

/// The emergency mode (the seed's answer), with the property and doors.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(super) struct EmergencyAnswer {
    mode: Mode,
    property_id: Option<String>,
    /// Who asked (an API account; `gatehouse` for a restore at expiry).
    initiated_by: Option<String>,
    initiated_at: Option<DateTime<Utc>>,
    reason: Option<String>,
    timeout_minutes: Option<u32>,
    /// When it restores by itself; `null`: until restored.
    expires_at: Option<DateTime<Utc>>,
    /// Doors an active unlock holds open (restore closes exactly these).
    doors_held_open: Vec<u64>,
    /// How each door command of this step went (unlock, restore of an unlock).
    doors: Vec<DoorOutcome>,
}

/// A step Net2 did not carry out: why, and each door command's result.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(super) struct EmergencyFailed {
    detail: String,
    doors: Vec<DoorOutcome>,
}

fn answer(s: EmergencyState, doors: Vec<DoorOutcome>) -> EmergencyAnswer {
    EmergencyAnswer {
        mode: s.mode,
        property_id: s.property_id,
        initiated_by: s.initiated_by,
        initiated_at: s.initiated_at,
        reason: s.reason,
        timeout_minutes: s.timeout_minutes,
        expires_at: s.expires_at,
        doors_held_open: s.held_open,
        doors,
    }
}

fn outcome(r: Result<Outcome, Refusal>) -> Response {
    match r {
        Ok(o) => axum::Json(answer(o.state, o.doors)).into_response(),
        Err(Refusal::Conflict(d)) => detail(StatusCode::CONFLICT, d),
        Err(Refusal::Unavailable(d)) => detail(StatusCode::SERVICE_UNAVAILABLE, d),
        Err(Refusal::Failed { detail, doors }) => (
            StatusCode::BAD_GATEWAY,
            axum::Json(EmergencyFailed { detail, doors }),
        )
            .into_response(),
    }
}

async fn begin(w: Web, caller: Caller, mode: Mode, b: EmergencyBody) -> Response {
    if let Err(r) = caller.need(Role::Admin) {
        return r;
    }
    let req = Request {
        property_id: b.property_id,
        reason: b.reason,
        timeout_minutes: b.timeout_minutes,
    };
    if let Err(why) = crate::emergency::validate(&req, true) {
        return detail(StatusCode::UNPROCESSABLE_ENTITY, why);
    }
    if !w.config().has_site(&req.property_id) {
        return detail(
            StatusCode::NOT_FOUND,
            format!(
                "no property {:?} (see `sites` in the config)",
                req.property_id
            ),
        );
    }
    outcome(w.emergency.begin(mode, req, &caller.name).await)
}

/// The current emergency mode (`normal` with the last restore, if any).
#[utoipa::path(get, path = "/api/access-control/emergency", tag = "emergency",
    responses((status = 200, body = EmergencyAnswer), (status = 401, body = Detail)))]
pub(super) async fn emergency_get(State(w): State<Web>) -> Response {
    axum::Json(answer(w.emergency.current(), Vec::new())).into_response()
}

/// Emergency lockdown: Net2's lockdown (admin).
#[utoipa::path(post, path = "/api/access-control/emergency/lockdown", tag = "emergency",
    request_body = EmergencyBody,
    responses((status = 200, body = EmergencyAnswer), (status = 400, body = Detail),
        (status = 401, body = Detail), (status = 403, body = Detail),
        (status = 404, description = "unknown property_id", body = Detail),
        (status = 409, description = "another emergency mode is active", body = Detail),
        (status = 415, body = Detail), (status = 422, body = Detail),
        (status = 502, description = "Net2 did not take the command", body = EmergencyFailed),
        (status = 503, description = "no Net2 source", body = Detail)))]
pub(super) async fn emergency_lockdown(
    State(w): State<Web>,
    Extension(caller): Extension<Caller>,
    axum::Json(b): axum::Json<EmergencyBody>,
) -> Response {
    begin(w, caller, Mode::Lockdown, b).await
}

/// Emergency unlock: hold open every door whose config mode is `normal` (admin).
#[utoipa::path(post, path = "/api/access-control/emergency/unlock", tag = "emergency",
    request_body = EmergencyBody,
    responses((status = 200, body = EmergencyAnswer), (status = 400, body = Detail),
        (status = 401, body = Detail), (status = 403, body = Detail),
        (status = 404, description = "unknown property_id", body = Detail),
        (status = 409, description = "another emergency mode is active, or no normal door", body = Detail),
        (status = 415, body = Detail), (status = 422, body = Detail),
        (status = 502, description = "Net2 held no door open", body = EmergencyFailed),
        (status = 503, description = "no Net2 source", body = Detail)))]
pub(super) async fn emergency_unlock(
    State(w): State<Web>,
    Extension(caller): Extension<Caller>,
    axum::Json(b): axum::Json<EmergencyBody>,
) -> Response {
    begin(w, caller, Mode::Unlock, b).await
}

/// Restore normal mode: lockdown off, or close the doors unlock held open (admin).
#[utoipa::path(post, path = "/api/access-control/emergency/restore", tag = "emergency",
    request_body = RestoreBody,
    responses((status = 200, body = EmergencyAnswer), (status = 400, body = Detail),
        (status = 401, body = Detail), (status = 403, body = Detail),
        (status = 404, description = "unknown property_id", body = Detail),
        (status = 409, description = "no emergency mode is active (or another property's)", body = Detail),
        (status = 415, body = Detail), (status = 422, body = Detail),
        (status = 502, description = "Net2 did not take every command", body = EmergencyFailed)))]
pub(super) async fn emergency_restore(
    State(w): State<Web>,
    Extension(caller): Extension<Caller>,
    axum::Json(b): axum::Json<RestoreBody>,
) -> Response {
    if let Err(r) = caller.need(Role::Admin) {
        return r;
    }
    let req = Request {
        property_id: b.property_id,
        reason: b.reason,
        timeout_minutes: None,
    };
    if let Err(why) = crate::emergency::validate(&req, false) {
        return detail(StatusCode::UNPROCESSABLE_ENTITY, why);
    }
    if !w.config().has_site(&req.property_id) {
        return detail(
            StatusCode::NOT_FOUND,
            format!(
                "no property {:?} (see `sites` in the config)",
                req.property_id
            ),
        );
    }
    outcome(w.emergency.restore(req, &caller.name).await)
}

// ---------------------------------------------------------------------------------- audit

/// One audit entry (the seed's shape).
#[derive(Serialize, Deserialize, utoipa::ToSchema, Debug, PartialEq)]
pub(super) struct AuditEntry {
    /// `audit-<n>`.
    audit_id: String,
    timestamp: String,
    /// `user:<account>` for API callers; `mqtt:<topic>`, `cli`, `gatehouse:expiry` otherwise.
    actor: String,
    /// `door_open`, `door_hold_open`, `door_close`, `lockdown_on`, `lockdown_off`,
    /// `camera_snapshot`, …, `emergency_lockdown`, `emergency_unlock`, `emergency_restore`, or
    /// an external entry's own.
    action: String,
    /// A command's progress (`accepted`, `sent`, `confirmed`, `timeout`, `rejected`,
    /// `failed`), a step's result (`success`, `partial`, `failed`, `refused`), or an external
    /// entry's own.
    status: String,
    target: Option<String>,
    reason: Option<String>,
    /// `rest`, `mqtt`, `cli`, `expiry`, or an external entry's own.
    source: String,
    property_id: Option<String>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(super) struct AuditPage {
    data: Vec<AuditEntry>,
    pagination: Pagination,
}

fn actor_of(requester: &str) -> String {
    match requester.strip_prefix("rest:") {
        Some(name) => format!("user:{name}"),
        None => requester.to_string(),
    }
}

fn source_of(requester: &str) -> String {
    requester
        .split_once(':')
        .map(|(s, _)| s)
        .unwrap_or(requester)
        .to_string()
}

/// A serde enum's name (`hold_open`).
fn name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A command row's action and target, from the stored command.
fn command_action(command: &str) -> (String, Option<String>) {
    use crate::model::CommandKind;
    match serde_json::from_str::<CommandKind>(command) {
        Ok(CommandKind::Door { door, action, .. }) => (
            format!("door_{}", name(&action)),
            Some(format!("door:{door}")),
        ),
        Ok(CommandKind::Lockdown { active }) => (
            if active {
                "lockdown_on"
            } else {
                "lockdown_off"
            }
            .into(),
            Some("net2".into()),
        ),
        Ok(CommandKind::Camera {
            camera,
            channel,
            action,
        }) => (
            format!("camera_{}", name(&action)),
            Some(format!("camera:{camera}/{channel}")),
        ),
        Ok(CommandKind::Replay { from_seq }) => {
            ("replay".into(), Some(format!("events:{from_seq}")))
        }
        Err(_) => ("command".into(), None),
    }
}

fn entry(r: AuditRow) -> AuditEntry {
    let (action, target) = match r.action {
        Some(a) => (a, r.target),
        None => command_action(&r.command),
    };
    AuditEntry {
        audit_id: format!("audit-{}", r.seq),
        timestamp: r.at,
        actor: actor_of(&r.requester),
        action,
        status: r.status,
        target,
        reason: r.reason.or((!r.detail.is_empty()).then_some(r.detail)),
        source: r.source.unwrap_or_else(|| source_of(&r.requester)),
        property_id: r.property_id,
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// Entries of this property (and those of none: commands).
    property_id: Option<String>,
    /// 1 to 1000; default 50.
    limit: Option<i64>,
    /// Entries to skip (newest first); default 0.
    offset: Option<i64>,
}

/// Audit entries, newest first: every door / camera command's progress, emergency steps and
/// external entries (viewer).
#[utoipa::path(get, path = "/api/access-control/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = Detail),
        (status = 401, body = Detail)))]
pub(super) async fn audit_list(State(w): State<Web>, Query(q): Query<AuditQuery>) -> Response {
    let limit = q.limit.unwrap_or(50);
    let offset = q.offset.unwrap_or(0);
    if !(1..=1000).contains(&limit) {
        return detail(StatusCode::BAD_REQUEST, "limit must be between 1 and 1000");
    }
    if !(0..=1_000_000_000).contains(&offset) {
        return detail(
            StatusCode::BAD_REQUEST,
            "offset must be between 0 and 1000000000",
        );
    }
    let property = q.property_id;
    match w
        .store
        .run(move |s| s.audit_page(property.as_deref(), limit, offset))
        .await
    {
        Ok((rows, total)) => axum::Json(AuditPage {
            data: rows.into_iter().map(entry).collect(),
            pagination: Pagination::at_offset(offset as u64, limit as u64, total as u64),
        })
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "unable to read the audit");
            detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
        }
    }
}

/// An external audit entry; its actor is the caller.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditBody {
    property_id: Option<String>,
    /// What was done (1 to 64 characters).
    action: String,
    /// Its result (1 to 64 characters).
    status: String,
    /// Up to 200 characters.
    target: Option<String>,
    /// Up to 1000 characters.
    reason: Option<String>,
    /// Where it comes from (up to 64 characters); default `api`.
    source: Option<String>,
}

fn check(field: &str, v: &str, max: usize, required: bool) -> Result<(), String> {
    if required && v.trim().is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if v.chars().count() > max {
        return Err(format!("{field} is longer than {max} characters"));
    }
    if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(format!("{field} contains control characters"));
    }
    Ok(())
}

/// Store an external audit entry (admin); answered as listed.
#[utoipa::path(post, path = "/api/access-control/audit", tag = "audit",
    request_body = AuditBody,
    responses((status = 201, body = AuditEntry), (status = 400, body = Detail),
        (status = 401, body = Detail), (status = 403, body = Detail),
        (status = 415, body = Detail), (status = 422, body = Detail)))]
pub(super) async fn audit_create(
    State(w): State<Web>,
    Extension(caller): Extension<Caller>,
    axum::Json(b): axum::Json<AuditBody>,
) -> Response {
    if let Err(r) = caller.need(Role::Admin) {
        return r;
    }
    let checks = [
        check("action", &b.action, 64, true),
        check("status", &b.status, 64, true),
        check(
            "property_id",
            b.property_id.as_deref().unwrap_or(""),
            100,
            false,
        ),
        check("target", b.target.as_deref().unwrap_or(""), 200, false),
        check("reason", b.reason.as_deref().unwrap_or(""), 1000, false),
        check("source", b.source.as_deref().unwrap_or(""), 64, false),
    ];
    if let Some(Err(why)) = checks.into_iter().find(Result::is_err) {
        return detail(StatusCode::UNPROCESSABLE_ENTITY, why);
    }
    let note = AuditNote {
        requester: caller.requester(),
        action: b.action.trim().to_string(),
        status: b.status.trim().to_string(),
        target: b.target.filter(|t| !t.is_empty()),
        reason: b.reason.filter(|t| !t.is_empty()),
        source: b
            .source
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "api".into()),
        property_id: b.property_id.filter(|p| !p.is_empty()),
    };
    let at = w.emergency.now();
    let stored = note.clone();
    match w.store.run(move |s| s.audit_note(&stored, at)).await {
        Ok(seq) => {
            tracing::info!(actor = %caller.name, action = %note.action, "external audit entry stored");
            let e = entry(AuditRow {
                seq,
                request_id: String::new(),
                requester: note.requester,
                command: String::new(),
                status: note.status,
                detail: String::new(),
                at: at.to_rfc3339(),
                action: Some(note.action),
                target: note.target,
                reason: note.reason,
                source: Some(note.source),
                property_id: note.property_id,
            });
            (StatusCode::CREATED, axum::Json(e)).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "unable to store an audit entry");
            detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_rows_read_as_the_seed_s_entries() {
        let row = |command: &str, requester: &str| AuditRow {
            seq: 7,
            request_id: "r".into(),
            requester: requester.into(),
            command: command.into(),
            status: "sent".into(),
            detail: "Net2 accepted the command (fire and forget)".into(),
            at: "2026-01-26T10:30:00+00:00".into(),
            action: None,
            target: None,
            reason: None,
            source: None,
            property_id: None,
        };
        let e = entry(row(
            r#"{"command":"door","door":6612642,"action":"hold_open","duration_ms":null}"#,
            "rest:ada",
        ));
        assert_eq!(e.audit_id, "audit-7");
        assert_eq!(e.actor, "user:ada");
        assert_eq!(e.action, "door_hold_open");
        assert_eq!(e.target.as_deref(), Some("door:6612642"));
        assert_eq!(e.source, "rest");
        assert_eq!(
            e.reason.as_deref(),
            Some("Net2 accepted the command (fire and forget)")
        );
        let e = entry(row(
            r#"{"command":"lockdown","active":false}"#,
            "mqtt:gatehouse/net2/lockdown/set",
        ));
        assert_eq!(
            (e.action.as_str(), e.source.as_str()),
            ("lockdown_off", "mqtt")
        );
        let e = entry(row(
            r#"{"command":"camera","camera":"nvr","channel":2,"action":"snapshot"}"#,
            "cli",
        ));
        assert_eq!(e.action, "camera_snapshot");
        assert_eq!(e.target.as_deref(), Some("camera:nvr/2"));
        assert_eq!(e.source, "cli");
    }

    #[test]
    fn pagination_counts_pages() {
        let p = Pagination::at_offset(50, 50, 101);
        assert_eq!((p.page, p.total_pages), (2, 3));
        let p = Pagination::at_offset(0, 50, 0);
        assert_eq!((p.page, p.total_pages), (1, 0));
    }
}
