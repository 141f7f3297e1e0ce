//! Classic ASP.NET SignalR 2 endpoint (`/signalr`, hub `eventHubLocal`).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::rest::{Query, bearer, json, nginx_page, qget, unauthorized};
use super::state::{Inner, Outgoing, SocketEntry, b64, random_bytes, random_uuid};

const HUB: &str = "eventHubLocal";

fn text(status: StatusCode, body: &str) -> Response {
    (status, body.to_string()).into_response()
}

/// The access token of a SignalR request: `token=` query parameter or bearer header.
fn authorised(inner: &Inner, req: &Request, q: &Query) -> Option<String> {
    let candidates = [
        qget(q, "access_token"),
        qget(q, "token"),
        bearer(req.headers()),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|t| inner.token_valid(t))
        .map(str::to_string)
}

/// `connectionData` must name only hubs this server has.
fn check_hubs(q: &Query) -> Result<(), Box<Response>> {
    let Some(cd) = qget(q, "connectionData") else {
        return Ok(());
    };
    let hubs: Vec<Value> = serde_json::from_str(cd).map_err(|_| {
        Box::new(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Invalid connection data.",
        ))
    })?;
    for h in hubs {
        let name = h.get("name").and_then(Value::as_str).unwrap_or("");
        if !name.eq_ignore_ascii_case(HUB) {
            return Err(Box::new(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("System.InvalidOperationException: '{name}' Hub could not be resolved."),
            )));
        }
    }
    Ok(())
}

pub(crate) async fn handle(inner: Arc<Inner>, req: Request, lower: &str, q: &Query) -> Response {
    let action = lower.strip_prefix("/signalr").unwrap_or("");
    match action {
        "/negotiate" => negotiate(&inner, &req, q),
        "/connect" | "/reconnect" => connect(inner, req, q).await,
        "/start" => start(&inner, &req, q),
        "/ping" => json(StatusCode::OK, r#"{"Response":"pong"}"#),
        "/abort" if req.method() == Method::POST => (StatusCode::OK, "").into_response(),
        "/abort" => text(StatusCode::BAD_REQUEST, "Bad Request"),
        "/hubs" | "/hubs/" => text(StatusCode::OK, "/* generated hub proxy omitted */"),
        _ => nginx_page(StatusCode::NOT_FOUND),
    }
}

fn negotiate(inner: &Inner, req: &Request, q: &Query) -> Response {
    inner.lock().stats.negotiates += 1;
    if !inner.faults.live_enabled.load(Relaxed) {
        return nginx_page(StatusCode::SERVICE_UNAVAILABLE);
    }
    if authorised(inner, req, q).is_none() {
        return unauthorized(inner);
    }
    if let Err(r) = check_hubs(q) {
        return *r;
    }
    let connection_id = random_uuid();
    // Real tokens are DPAPI blobs in standard base64: they contain '+', '/' and '='.
    let blob: [u8; 46] = random_bytes();
    let connection_token = format!("AQAAANCMnd8BFdERjHoAwE/Cl+sBAAAA{}", b64(&blob, false));
    inner
        .lock()
        .connections
        .insert(connection_token.clone(), connection_id.clone());

    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Negotiate {
        url: &'static str,
        connection_token: String,
        connection_id: String,
        keep_alive_timeout: f64,
        disconnect_timeout: f64,
        connection_timeout: f64,
        try_web_sockets: bool,
        protocol_version: &'static str,
        transport_connect_timeout: f64,
        long_poll_delay: f64,
    }
    let n = Negotiate {
        url: "/signalr",
        connection_token,
        connection_id,
        keep_alive_timeout: 20.0,
        disconnect_timeout: 30.0,
        connection_timeout: 110.0,
        try_web_sockets: true,
        protocol_version: "1.5",
        transport_connect_timeout: 5.0,
        long_poll_delay: 0.0,
    };
    json(
        StatusCode::OK,
        serde_json::to_string(&n).unwrap_or_default(),
    )
}

fn known_connection(inner: &Inner, q: &Query) -> Result<(), Box<Response>> {
    let Some(ct) = qget(q, "connectionToken") else {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "The connection id is in the incorrect format.",
        )));
    };
    if inner.lock().connections.contains_key(ct) {
        Ok(())
    } else {
        Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "The connection id is in the incorrect format.",
        )))
    }
}

fn start(inner: &Inner, req: &Request, q: &Query) -> Response {
    if authorised(inner, req, q).is_none() {
        return unauthorized(inner);
    }
    if let Err(r) = known_connection(inner, q) {
        return *r;
    }
    if qget(q, "transport") != Some("webSockets") {
        return text(
            StatusCode::BAD_REQUEST,
            "Protocol error: Unknown transport.",
        );
    }
    json(StatusCode::OK, r#"{"Response":"started"}"#)
}

async fn connect(inner: Arc<Inner>, req: Request, q: &Query) -> Response {
    if !inner.faults.live_enabled.load(Relaxed) {
        return nginx_page(StatusCode::SERVICE_UNAVAILABLE);
    }
    if qget(q, "transport") != Some("webSockets") {
        return text(
            StatusCode::BAD_REQUEST,
            "Protocol error: Unknown transport.",
        );
    }
    let Some(token) = authorised(&inner, &req, q) else {
        return unauthorized(&inner);
    };
    if let Err(r) = known_connection(&inner, q) {
        return *r;
    }
    if let Err(r) = check_hubs(q) {
        return *r;
    }
    let (mut parts, _body) = req.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(_) => return text(StatusCode::BAD_REQUEST, "Not a valid web socket request."),
    };
    let expiry = inner.token_expiry(&token);
    ws.on_upgrade(move |socket| run_socket(inner, socket, expiry))
}

/// Builds server → client frames, varying the argument shape as the real hub does.
struct Framer {
    prefix: String,
    cursor: u64,
}

impl Framer {
    fn frame(&mut self, method: &str, items: &[&str]) -> String {
        self.cursor += 1;
        let k = self.cursor - 1;
        let hub = if (k / 2).is_multiple_of(2) {
            "EventHubLocal"
        } else {
            "eventHubLocal"
        };
        let joined = items.join(",");
        let args = if items.len() > 1 || k.is_multiple_of(2) {
            format!("[[{joined}]]")
        } else {
            format!("[{joined}]")
        };
        format!(
            r#"{{"C":"{}-A,{}|B,0|C,1|D,0","M":[{{"H":"{hub}","M":"{method}","A":{args}}}]}}"#,
            self.prefix, self.cursor
        )
    }

    fn frames(&mut self, batch: Vec<Outgoing>) -> Vec<String> {
        let mut out = Vec::new();
        let mut live: Vec<Box<serde_json::value::RawValue>> = Vec::new();
        let flush = |live: &mut Vec<Box<serde_json::value::RawValue>>,
                     me: &mut Framer,
                     out: &mut Vec<String>| {
            if !live.is_empty() {
                let items: Vec<&str> = live.iter().map(|r| r.get()).collect();
                out.push(me.frame("liveEvents", &items));
                live.clear();
            }
        };
        for m in batch {
            match m {
                Outgoing::Live(evs) => live.extend(evs),
                Outgoing::DoorStatus(v) => {
                    flush(&mut live, self, &mut out);
                    out.push(self.frame("doorStatusEvents", &[v.get()]));
                }
                Outgoing::DoorEvent(v) => {
                    flush(&mut live, self, &mut out);
                    out.push(self.frame("doorEvents", &[v.get()]));
                }
            }
        }
        flush(&mut live, self, &mut out);
        out
    }
}

async fn run_socket(inner: Arc<Inner>, socket: WebSocket, expiry: Option<Instant>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let kill = CancellationToken::new();
    let id = {
        let mut st = inner.lock();
        st.stats.ws_connects += 1;
        st.next_socket += 1;
        let id = st.next_socket;
        st.sockets.insert(
            id,
            SocketEntry {
                tx,
                live: false,
                door_status: HashSet::new(),
                door_events: HashSet::new(),
                kill: kill.clone(),
            },
        );
        id
    };
    tracing::debug!(id, "net2 sim: SignalR socket connected");
    let (mut sink, mut stream) = socket.split();
    let mut framer = Framer {
        prefix: format!("d-{:08X}", rand::random::<u32>()),
        cursor: 0,
    };
    let init = format!(
        r#"{{"C":"{}-A,0|B,0|C,1|D,0","S":1,"M":[]}}"#,
        framer.prefix
    );
    let period = inner
        .cfg
        .keepalive_interval
        .max(std::time::Duration::from_millis(1));
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let drop_at = expiry.filter(|_| inner.cfg.drop_ws_on_token_expiry);
    let expired = async move {
        match drop_at {
            Some(t) => tokio::time::sleep_until(t.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expired);

    if sink.send(Message::Text(init.into())).await.is_ok() {
        'outer: loop {
            tokio::select! {
                _ = kill.cancelled() => break,
                _ = inner.shutdown.cancelled() => break,
                _ = &mut expired => {
                    tracing::debug!(id, "net2 sim: token expired, dropping socket");
                    break;
                }
                _ = keepalive.tick() => {
                    if sink.send(Message::Text("{}".into())).await.is_err() {
                        break;
                    }
                }
                m = rx.recv() => {
                    let Some(m) = m else { break };
                    let mut batch = vec![m];
                    while let Ok(m) = rx.try_recv() {
                        batch.push(m);
                    }
                    for f in framer.frames(batch) {
                        if sink.send(Message::Text(f.into())).await.is_err() {
                            break 'outer;
                        }
                    }
                }
                incoming = stream.next() => match incoming {
                    Some(Ok(Message::Text(t))) => {
                        let (reply, subscribed) = invoke(&inner, id, t.as_str());
                        if subscribed {
                            // Whatever was set to happen at this moment happens now: its
                            // liveEvents frame goes out right behind the invocation's answer.
                            let evs = std::mem::take(&mut inner.lock().on_subscribe);
                            if !evs.is_empty() {
                                inner.push_events(&evs);
                            }
                        }
                        if let Some(reply) = reply
                            && sink.send(Message::Text(reply.into())).await.is_err()
                        {
                            break;
                        }
                    }
                    Some(Ok(Message::Close(_))) => {
                        let _ = sink.flush().await;
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                },
            }
        }
    }
    inner.lock().sockets.remove(&id);
    tracing::debug!(id, "net2 sim: SignalR socket closed");
    // Dropping sink and stream closes the TCP connection without a close frame.
}

/// Handle one client → server hub invocation; returns the reply frame, and whether it
/// subscribed this socket to live events.
fn invoke(inner: &Inner, socket: u64, text: &str) -> (Option<String>, bool) {
    let mut live = false;
    let reply = invoke_inner(inner, socket, text, &mut live);
    (reply, live)
}

fn invoke_inner(inner: &Inner, socket: u64, text: &str, live: &mut bool) -> Option<String> {
    let v: Value = serde_json::from_str(text).ok()?;
    let id = match v.get("I") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return None,
    };
    let idj = Value::String(id);
    let hub = v.get("H").and_then(Value::as_str).unwrap_or("");
    let method = v.get("M").and_then(Value::as_str).unwrap_or("");
    let args: Vec<Value> = v
        .get("A")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let error = |msg: String| Some(serde_json::json!({ "E": msg, "I": idj }).to_string());
    if !hub.eq_ignore_ascii_case(HUB) {
        return error(format!("'{hub}' Hub could not be resolved."));
    }
    let invoke_error = || {
        error(format!(
            "There was an error invoking Hub method 'eventhublocal.{method}'."
        ))
    };
    let door_arg = || match args.first() {
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(Value::Number(n)) => n.as_u64(),
        _ => None,
    };
    let mut st = inner.lock();
    let sock = st.sockets.get_mut(&socket)?;
    match method.to_ascii_lowercase().as_str() {
        "subscribetoliveevents" => {
            sock.live = true;
            *live = true;
        }
        "subscribetodoorstatusevents" => match door_arg() {
            Some(d) => {
                sock.door_status.insert(d);
            }
            None => return invoke_error(),
        },
        "subscribetodoorevents" => match door_arg() {
            Some(d) => {
                sock.door_events.insert(d);
            }
            None => return invoke_error(),
        },
        // Known server method name (rollCallEvents); the simulator never sends any.
        "subscribetorollcallevents" => {}
        _ => return invoke_error(),
    }
    st.stats
        .subscriptions
        .push((method.to_string(), args.clone()));
    Some(serde_json::json!({ "I": idj }).to_string())
}
