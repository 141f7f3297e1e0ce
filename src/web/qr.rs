//! `POST /api/qr/scan` (operator, or a hardware device's `X-API-Key`): a QR reader that
//! talks HTTP hands gatehouse the raw text of a code and waits for the outcome — Apptive's
//! answer and whether the door opened (see [`crate::apptive`]). A denial is an answer
//! (200, `granted: false`), not an error.

use crate::apptive::Scan;
use crate::config::Role;
use crate::web::{Caller, Detail, Web, detail};
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A scan.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QrScan {
    /// The reader's id (`apptive.readers[].id`).
    reader: String,
    /// The code's raw text (a vCard: ORG = security key, NOTE = member id).
    data: String,
}

/// The outcome, as the reader's display shows it (the same as MQTT `qr/<reader>/result`).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct QrScanAnswer {
    granted: bool,
    /// Apptive's message, or gatehouse's (German / English) for a local denial.
    message: String,
    /// Why it was denied; null when granted.
    reason: Option<String>,
    /// Apptive member id (the code's NOTE), when the code could be read.
    member: Option<String>,
    /// The member's name from Apptive's answer.
    name: Option<String>,
}

/// Check a QR code at a reader and open its door when Apptive grants it (operator, or
/// `X-API-Key`). 404 when QR access is not configured or the reader is unknown.
#[utoipa::path(post, path = "/api/qr/scan", tag = "qr",
    request_body = QrScan,
    responses((status = 200, body = QrScanAnswer), (status = 400, body = Detail),
        (status = 401, body = Detail), (status = 403, body = Detail), (status = 404, body = Detail),
        (status = 415, body = Detail), (status = 422, body = Detail), (status = 503, body = Detail)))]
pub(in crate::web) async fn scan(
    State(w): State<Web>,
    Extension(caller): Extension<Caller>,
    axum::Json(b): axum::Json<QrScan>,
) -> Response {
    if let Err(r) = caller.need(Role::Operator) {
        return r;
    }
    let cfg = w.config();
    let Some(a) = cfg.apptive.as_ref() else {
        return detail(
            StatusCode::NOT_FOUND,
            "QR access is not configured (no apptive: section)",
        );
    };
    if !a.readers.iter().any(|r| r.id == b.reader) {
        return detail(
            StatusCode::NOT_FOUND,
            format!("no QR reader {:?} in apptive.readers", b.reader),
        );
    }
    // Apptive's timeout, the door command's outcome, and the database.
    let wait = a.timeout.get() + crate::apptive::door_wait(&cfg) + Duration::from_secs(3);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let scan = Scan {
        reader: b.reader,
        data: b.data.into_bytes(),
        via: "rest",
        reply: Some(tx),
    };
    if w.bus.qr_scans().send(scan).await.is_err() {
        return detail(
            StatusCode::SERVICE_UNAVAILABLE,
            "QR access is not running (apptive: was added after start: restart gatehouse)",
        );
    }
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(r)) => (
            StatusCode::OK,
            axum::Json(QrScanAnswer {
                granted: r.granted,
                message: r.message,
                reason: r.reason,
                member: r.member,
                name: r.name,
            }),
        )
            .into_response(),
        _ => detail(
            StatusCode::SERVICE_UNAVAILABLE,
            "the QR service did not answer in time",
        ),
    }
}
