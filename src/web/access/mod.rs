//! The access-control API of the user's "Access Control API v2.9" (seed 001), under
//! `/api/access-control`, served from what gatehouse knows:
//! - [`points`]: access points — the Net2 doors of the [`crate::directory::Directory`], points
//!   made in gatehouse, and registered hardware devices — their metadata (`status`, `name`,
//!   `location`, `type`: a table of gatehouse's own; a Net2 door's name in Net2 stays as is)
//!   and their health;
//! - [`hardware`]: `points/register` and `points/{id}/heartbeat` for hardware devices
//!   (`X-API-Key`), and the task that turns a silent device offline (MQTT availability and
//!   Home Assistant discovery through [`crate::model::Message::Hardware`]);
//! - [`users`]: the Net2 users, names only; writes answer 405 (users are managed in Net2);
//! - [`doors`]: `points/{id}/open`, door commands through the same checks as MQTT's.
//!
//! Lists are `{"data": [...], "pagination": {"page","limit","total","totalPages"}}`; every
//! error `{"detail": …}`. `property_id` is a site (`sites` in the config); an unknown one is
//! 404 (a typo should not read as "no doors").

pub(super) mod doors;
pub(super) mod hardware;
pub(super) mod points;
pub(super) mod users;

pub(super) use super::Pagination;
use super::{Web, detail};
use crate::directory::DirectoryDoor;
use crate::model::DoorId;
use crate::storage::{PointKind, PointRow};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;

/// The seed's time format: `2026-01-26T10:30:00Z`.
pub(super) fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `page` / `limit` and the site.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// A site id (`sites[].id`); all sites when absent. Unknown → 404.
    property_id: Option<String>,
    /// 1-based page (default 1).
    #[param(minimum = 1, maximum = 1000000)]
    page: Option<u32>,
    /// Items per page, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// A validated page request.
pub(super) struct Page {
    page: u32,
    limit: u32,
}

impl Page {
    #[allow(clippy::result_large_err)]
    pub(in crate::web) fn of(q: &ListQuery) -> Result<Page, Response> {
        let page = q.page.unwrap_or(1);
        let limit = q.limit.unwrap_or(100);
        if !(1..=1_000_000).contains(&page) {
            return Err(detail(
                StatusCode::BAD_REQUEST,
                "page must be between 1 and 1000000",
            ));
        }
        if !(1..=1000).contains(&limit) {
            return Err(detail(
                StatusCode::BAD_REQUEST,
                "limit must be between 1 and 1000",
            ));
        }
        Ok(Page { page, limit })
    }

    /// This page of `items`, and the pagination object.
    fn cut<T>(&self, items: Vec<T>) -> (Vec<T>, Pagination) {
        let total = items.len() as u64;
        let limit = u64::from(self.limit);
        let skip = (u64::from(self.page) - 1).saturating_mul(limit);
        let data = items
            .into_iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .take(self.limit as usize)
            .collect();
        (
            data,
            Pagination::new(self.page.into(), self.limit.into(), total),
        )
    }
}

/// `Err(404)` for a `property_id` that names no site.
#[allow(clippy::result_large_err)]
pub(super) fn check_site(w: &Web, property_id: Option<&str>) -> Result<(), Response> {
    match property_id {
        Some(p) if !w.config().has_site(p) => {
            let known: Vec<String> = w.config().sites().into_iter().map(|s| s.id).collect();
            Err(detail(
                StatusCode::NOT_FOUND,
                format!("unknown property_id {p:?} (sites: {})", known.join(", ")),
            ))
        }
        _ => Ok(()),
    }
}

/// A point's id for a Net2 door.
pub(super) fn net2_id(door: DoorId) -> String {
    format!("net2-{door}")
}

/// What an id names.
pub(super) enum Target {
    /// A Net2 door of the directory, with gatehouse's overrides when it has any.
    Net2(DirectoryDoor, Option<PointRow>),
    /// A point made in gatehouse or a hardware device.
    Stored(PointRow),
}

/// Find a point; `Err(404)` when nothing has this id.
pub(super) async fn find(w: &Web, id: &str) -> Result<Target, Response> {
    let store = w.store.clone();
    let key = id.to_string();
    let row = match store.run(move |s| s.point(&key)).await {
        Ok(r) => r,
        Err(e) => return Err(internal(&e)),
    };
    if let Some(door) = id
        .strip_prefix("net2-")
        .and_then(|d| d.parse::<DoorId>().ok())
        .and_then(|d| w.directory.door(d))
    {
        return Ok(Target::Net2(door, row));
    }
    match row {
        Some(r) if r.kind != Some(PointKind::Net2) => Ok(Target::Stored(r)),
        _ => Err(detail(
            StatusCode::NOT_FOUND,
            format!("no access point {id:?}"),
        )),
    }
}

/// A store failure: logged, answered 500 without internals.
pub(super) fn internal(e: &crate::error::Error) -> Response {
    tracing::error!(error = %e, "access-control API: database error");
    detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
}
