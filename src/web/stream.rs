//! `GET /api/events/stream`: every stored event as Server-Sent Events, in `seq` order, each
//! with `id: <seq>` — the same JSON as the MQTT event payloads. A client that reconnects with
//! `Last-Event-ID` (browsers' EventSource do it by themselves) gets what it missed, from the
//! database, then the live events: nothing lost across a reconnect. `?from_seq=N` starts at
//! N (a consumer that saw a gap); without either, only new events.
//!
//! The stream pulls from the database in pages as the client reads: a slow client slows only
//! itself, and holds at most one page in memory.

use super::{Caller, Detail, Web, detail};
use crate::config::Role;
use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::collections::VecDeque;
use std::time::Duration;

const PAGE: usize = 200;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
    /// Start with the event of this `seq` (overrides `Last-Event-ID`).
    from_seq: Option<i64>,
    /// A token for clients that cannot send headers (EventSource).
    #[allow(dead_code)]
    token: Option<String>,
}

struct Cursor {
    w: Web,
    after: i64,
    pending: VecDeque<crate::storage::OutboxEvent>,
    newest: tokio::sync::watch::Receiver<i64>,
}

/// Events as they are stored.
#[utoipa::path(get, path = "/api/events/stream", tag = "events",
    params(StreamQuery, ("Last-Event-ID" = Option<i64>, Header, description = "the last `seq` received: resume after it")),
    responses((status = 200, description = "`text/event-stream`: `event: event`, `id: <seq>`, `data: <event JSON>`", content_type = "text/event-stream", body = String),
        (status = 400, body = Detail), (status = 401, body = Detail), (status = 403, body = Detail)))]
pub(super) async fn events_stream(
    State(w): State<Web>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Response {
    if let Err(r) = caller.need(Role::Viewer) {
        return r;
    }
    let last_id = match headers.get("last-event-id").map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => match v.trim().parse::<i64>() {
            Ok(n) if n >= 0 => Some(n),
            _ => {
                return detail(
                    StatusCode::BAD_REQUEST,
                    format!("Last-Event-ID {v:?} is not an event seq"),
                );
            }
        },
        Some(Err(_)) => return detail(StatusCode::BAD_REQUEST, "Last-Event-ID is not text"),
    };
    let newest = w.store.newest_seq();
    let after = match (q.from_seq, last_id) {
        (Some(n), _) if n < 1 => {
            return detail(StatusCode::BAD_REQUEST, "from_seq starts at 1");
        }
        (Some(n), _) => n - 1,
        (None, Some(n)) => n,
        (None, None) => *newest.borrow(),
    };
    let cursor = Cursor {
        w,
        after,
        pending: VecDeque::new(),
        newest,
    };
    let events = futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.pending.pop_front() {
                c.after = e.seq;
                let data = crate::sinks::mqtt::payload::event(&e).to_string();
                let ev = Event::default()
                    .event("event")
                    .id(e.seq.to_string())
                    .data(data);
                return Some((Ok::<_, std::convert::Infallible>(ev), c));
            }
            // Mark what we have seen before reading: a batch stored meanwhile wakes us.
            c.newest.borrow_and_update();
            let after = c.after;
            match c
                .w
                .store
                .read(move |conn| crate::storage::events_since(conn, after, PAGE))
                .await
            {
                Ok(rows) if !rows.is_empty() => c.pending.extend(rows),
                Ok(_) => {
                    let cancel = c.w.cancel.clone();
                    tokio::select! {
                        r = c.newest.changed() => if r.is_err() { return None },
                        _ = cancel.cancelled() => return None,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "event stream: database read failed; ending the stream (the client resumes)");
                    return None;
                }
            }
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
