//! `POST /points/{id}/open` (operator): a door command, now, once, audited. Not in the seed;
//! the issue's operators open doors. It takes the MQTT command's path: the bus's
//! [`crate::commands::DoorGate`] (configured door, not disabled, `require_code`,
//! `duration_ms`, `min_command_interval` shared with MQTT), then the Net2 source's own checks
//! (first status sync, momentary doors, age). A point whose `status` is not `active`, or a
//! point without a Net2 door, refuses it (409). Every refusal is in the audit table.

use super::points::{PointStatus, net2_info};
use super::{Target, find};
use crate::commands::Refusal;
use crate::config::Role;
use crate::model::{
    Command, CommandKind, CommandStatus, CommandUpdate, DoorAction, DoorId, Message,
};
use crate::web::{Caller, Detail, Web, detail};
use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long the answer waits for the door's source to take or refuse the command (it is
/// sent, or refused, either way; a slow Net2 answer to an earlier command can hold it up).
const TAKEN_WITHIN: Duration = Duration::from_secs(5);

/// `open` (timed), `hold_open` or `close`.
#[derive(Deserialize, Serialize, utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OpenAction {
    #[default]
    Open,
    HoldOpen,
    Close,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OpenDoor {
    /// Default `open`.
    #[serde(default)]
    action: OpenAction,
    /// A timed open's length, 100–3600000 ms; default the door's `open_time_ms`.
    duration_ms: Option<u32>,
    /// The door's `require_code`, when it has one (never logged or echoed); a number is
    /// taken as its digits.
    #[serde(default, deserialize_with = "crate::commands::code")]
    code: Option<String>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct CommandTaken {
    request_id: String,
    /// `accepted` or `sent` (Net2 took it: not proof the door moved; the audit and MQTT
    /// `command/result` follow it to `confirmed` or `timeout`), or `queued` when the source
    /// had not answered within 5 s.
    status: String,
    detail: String,
}

fn request_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "rest-{}-{}",
        chrono::Utc::now().timestamp_millis(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Refused before the bus: audited and answered.
async fn refuse(
    w: &Web,
    caller: &Caller,
    request_id: String,
    kind: CommandKind,
    code: StatusCode,
    reason: String,
) -> Response {
    tracing::warn!(request_id, requester = %caller.requester(), reason, "REST door command rejected");
    w.bus
        .publish(Message::Command(CommandUpdate {
            request_id,
            requester: caller.requester(),
            kind,
            status: CommandStatus::Rejected,
            detail: reason.clone(),
            at: chrono::Utc::now(),
        }))
        .await;
    detail(code, reason)
}

/// Open, hold open or close a Net2 door (operator). 202 once the door's source took it; 409
/// with the reason when refused.
#[utoipa::path(post, path = "/api/access-control/points/{id}/open", tag = "access-control",
    params(("id" = String, Path, description = "point id of a Net2 door (net2-<door id>)")),
    request_body = OpenDoor,
    responses((status = 202, body = CommandTaken), (status = 400, body = Detail),
        (status = 401, body = Detail), (status = 403, body = Detail), (status = 404, body = Detail),
        (status = 409, body = Detail), (status = 415, body = Detail), (status = 422, body = Detail),
        (status = 502, body = Detail)))]
pub(in crate::web) async fn open(
    State(w): State<Web>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    axum::Json(b): axum::Json<OpenDoor>,
) -> Response {
    if let Err(r) = caller.need(Role::Operator) {
        return r;
    }
    let (door, row): (DoorId, _) = match find(&w, &id).await {
        Ok(Target::Net2(d, row)) => (d.id, Some((d, row))),
        Ok(Target::Stored(r)) => {
            let what = if r.hw.is_some() {
                "a hardware device"
            } else {
                "a point made in gatehouse"
            };
            return detail(
                StatusCode::CONFLICT,
                format!("{id} is {what}, not a Net2 door: gatehouse has no door to open there"),
            );
        }
        Err(r) => return r,
    };
    let action = match b.action {
        OpenAction::Open => DoorAction::Open,
        OpenAction::HoldOpen => DoorAction::HoldOpen,
        OpenAction::Close => DoorAction::Close,
    };
    let kind = CommandKind::Door {
        door,
        action,
        duration_ms: b.duration_ms,
    };
    let rid = request_id();
    let cfg = w.config();
    if let Some((d, row)) = row {
        let info = net2_info(&cfg, &d, row.as_ref(), true, None);
        if info.point.status != PointStatus::Active {
            let why = format!(
                "{id} is {} (status): door commands are refused until it is active",
                info.point.status.as_str()
            );
            return refuse(&w, &caller, rid, kind, StatusCode::CONFLICT, why).await;
        }
    }
    if let Err((r, why)) = w.bus.door_gate().check(
        door,
        b.duration_ms,
        b.code.as_deref(),
        &cfg.doors,
        tokio::time::Instant::now(),
    ) {
        let code = match r {
            Refusal::Conflict => StatusCode::CONFLICT,
            Refusal::Code => StatusCode::FORBIDDEN,
            Refusal::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        };
        return refuse(&w, &caller, rid, kind, code, why).await;
    }
    // Listen before sending, so the source's first word on it cannot be missed.
    let mut watch = w.bus.watch();
    let cmd = Command {
        request_id: rid.clone(),
        requester: caller.requester(),
        kind,
        received: chrono::Utc::now(),
        received_at: tokio::time::Instant::now(),
    };
    tracing::info!(request_id = %rid, requester = %cmd.requester, door, ?action, "REST door command");
    if w.bus.commands().send(cmd).await.is_err() {
        return detail(StatusCode::BAD_GATEWAY, "no source takes door commands");
    }
    let first = tokio::time::timeout(TAKEN_WITHIN, async {
        loop {
            match watch.recv().await {
                Ok(Message::Command(u)) if u.request_id == rid => return Some(u),
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return None,
            }
        }
    })
    .await;
    match first {
        Ok(Some(u)) if u.status == CommandStatus::Rejected => {
            detail(StatusCode::CONFLICT, format!("{} ({rid})", u.detail))
        }
        Ok(Some(u)) if u.status == CommandStatus::Failed => {
            detail(StatusCode::BAD_GATEWAY, format!("{} ({rid})", u.detail))
        }
        Ok(Some(u)) => (
            StatusCode::ACCEPTED,
            axum::Json(CommandTaken {
                request_id: rid,
                status: format!("{:?}", u.status).to_lowercase(),
                detail: u.detail,
            }),
        )
            .into_response(),
        _ => (
            StatusCode::ACCEPTED,
            axum::Json(CommandTaken {
                request_id: rid,
                status: "queued".into(),
                detail:
                    "queued for the door's source; follow it in the audit or on MQTT command/result"
                        .into(),
            }),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::OpenDoor;

    /// A code of the wrong type is refused without quoting it (serde's message would), as
    /// the refusal goes back to the caller and to the log.
    #[test]
    fn a_code_of_the_wrong_type_is_not_echoed() {
        for body in [
            r#"{"action":"open","code":["482193"]}"#,
            r#"{"action":"open","code":{"pin":"482193"}}"#,
            r#"{"code":["482193"]}"#,
        ] {
            let Err(e) = axum::Json::<OpenDoor>::from_bytes(body.as_bytes()) else {
                panic!("{body} accepted");
            };
            let text = e.body_text();
            assert!(!text.contains("482193"), "{body}: {text}");
            assert!(text.contains("code must be a string"), "{body}: {text}");
        }
        assert!(axum::Json::<OpenDoor>::from_bytes(br#"{"code":"482193"}"#).is_ok());
        // A number is its digits (Home Assistant's YAML makes `code: 482193` one).
        assert!(axum::Json::<OpenDoor>::from_bytes(br#"{"code":482193}"#).is_ok());
        assert!(axum::Json::<OpenDoor>::from_bytes(br#"{"code":null}"#).is_ok());
    }
}
