//! The REST API's request decoding, for the fuzz targets in `fuzz/` (issue 19): the same
//! extractors the handlers use (`Query` on the request URI, `Json` on the body) into the
//! handlers' own request types, and the parsing the handlers then do on their fields. Not an
//! API: nothing outside the fuzz targets calls it.

use axum::Json;
use axum::extract::Query;
use axum::http::Uri;
use serde::de::DeserializeOwned;

/// How many query types [`query`] chooses from.
pub const QUERIES: u8 = 15;
/// How many body types [`body`] chooses from.
pub const BODIES: u8 = 15;

fn q<T: DeserializeOwned>(uri: &Uri) -> bool {
    Query::<T>::try_from_uri(uri).is_ok()
}

fn j<T: DeserializeOwned>(b: &[u8]) -> Result<(), String> {
    Json::<T>::from_bytes(b)
        .map(|_| ())
        .map_err(|e| e.body_text())
}

/// Decode `query` (what follows `?` in a request) as query type number `which`, the way the
/// handler's `Query` extractor does. `None` when no request could carry it (not a valid URI:
/// hyper refuses it before any handler). `Some(decoded)` otherwise.
pub fn query(which: u8, query: &str) -> Option<bool> {
    let uri: Uri = format!("/api?{query}").parse().ok()?;
    Some(match which % QUERIES {
        0 => Query::<super::access::ListQuery>::try_from_uri(&uri)
            .is_ok_and(|Query(l)| super::access::Page::of(&l).is_ok()),
        1 => q::<super::access::points::SiteQuery>(&uri),
        2 => q::<super::events::EventsQuery>(&uri),
        3 => q::<super::events::ExportQuery>(&uri),
        4 => q::<super::events::ReviewQuery>(&uri),
        5 => q::<super::ops::AuditQuery>(&uri),
        6 => q::<super::nvr::MonthQuery>(&uri),
        7 => q::<super::nvr::AlarmQuery>(&uri),
        8 => q::<super::nvr::DeviceQuery>(&uri),
        9 => q::<super::report::MetricsQuery>(&uri),
        10 => q::<super::report::ExportQuery>(&uri),
        11 => q::<super::media::TokenQuery>(&uri),
        12 => q::<super::media::SnapshotQuery>(&uri),
        13 => q::<super::stream::StreamQuery>(&uri),
        _ => q::<super::TokenQuery>(&uri),
    })
}

/// Decode `body` as JSON body type number `which`, the way the handler's `Json` extractor
/// does (after its content-type check). `Err` holds the rejection's text, as the caller gets
/// it. Number 5 is a door open (`POST …/doors/{id}/open`, with its `code`).
pub fn body(which: u8, body: &[u8]) -> Result<(), String> {
    match which % BODIES {
        0 => j::<super::ops::EmergencyBody>(body),
        1 => j::<super::ops::RestoreBody>(body),
        2 => j::<super::ops::AuditBody>(body),
        3 => j::<super::access::hardware::Register>(body),
        4 => j::<super::access::hardware::HeartbeatBody>(body),
        5 => j::<super::access::doors::OpenDoor>(body),
        6 => j::<super::access::points::NewPoint>(body),
        7 => j::<super::access::points::PointChange>(body),
        8 => j::<super::nvr::TestConnection>(body),
        9 => j::<super::events::SyncBody>(body),
        10 => j::<super::events::AgentBody>(body),
        11 => j::<super::qr::QrScan>(body),
        12 => j::<super::session::Login>(body),
        13 => j::<super::session::ChangePassword>(body),
        _ => j::<serde_json::Value>(body),
    }
}

/// The handlers' parsing of one query value: the event filters' date bounds
/// (`startDate` / `endDate`), the report's, the NVR's month, the event list's cursor.
/// Panics if a cursor that decodes does not encode back to itself.
pub fn value(v: &str) {
    let _ = super::events::parse_bound("startDate", v, false);
    let _ = super::events::parse_bound("endDate", v, true);
    let _ = super::report::parse_when(v, false);
    let _ = super::report::parse_when(v, true);
    if let Some(d) = super::nvr::parse_month(v) {
        assert_eq!(chrono::Datelike::day(&d), 1, "a month starts on day 1");
    }
    if let Ok(c) = crate::storage::query::Cursor::decode(v) {
        let again = crate::storage::query::Cursor::decode(&c.encode()).expect("re-decode");
        assert_eq!(again, c, "cursor round trip");
    }
}
