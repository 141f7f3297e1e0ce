//! Apptive access API simulator (seed 002): `GET /qr/?token=…&member=…` and `POST /access`.
//!
//! A hand-written HTTP/1.1 server (one request per connection, `Connection: close`) so it can
//! misbehave the way a real server on the internet does: answer slowly, answer 500, send a
//! body that is not JSON, `access_granted` as a JSON boolean or `"TRUE"`, leave the field
//! out, cut the body short of its `Content-Length`, or reset the connection.
//!
//! How it behaves where the seed is silent (decisions, documented here and in the README):
//! - Each `GET /qr/` stores a new key for the member with its time ("Bei jedem Aufruf werden
//!   `securitykey` und `securitytimestamp` gespeichert"): one key per member, so the previous
//!   key stops being valid ("QR Code ist ungültig!").
//! - A key stays valid for 15 minutes from its QR call, however often it is used: the seed
//!   says nothing about single use, so gatehouse's own `single_use` is what stops a replay.
//! - A wrong token answers HTTP 401 with a JSON object (`access_granted: "false"`; the seed
//!   says the API always answers JSON), an unknown `door_id` or member and a wrong key answer
//!   "QR Code ist ungültig!". Checks run security first (a bad key learns nothing about the
//!   member's subscription), then the 15 minutes, then the subscription.
//! - Times come from an injectable [`Clock`] (tests move it past 15 minutes).

use crate::clock::{Clock, SystemClock};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The seed's four messages, word for word.
pub const MSG_WELCOME: &str = "Viel Spass und herzlich willkommen!";
pub const MSG_NO_SUBSCRIPTION: &str = "Kein gültiges Abo!";
pub const MSG_INVALID: &str = "QR Code ist ungültig!";
pub const MSG_TOO_OLD: &str = "QR Code ist älter als 15min! Bitte nochmals generieren.";

const VALIDITY: chrono::Duration = chrono::Duration::minutes(15);

#[derive(Debug, Clone)]
pub struct SimMember {
    pub id: String,
    pub firstname: String,
    pub lastname: String,
    pub email: String,
    pub subscription: bool,
}

/// How `POST /access` answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    /// Wait this long, then answer normally.
    Slow(Duration),
    /// This HTTP status with an HTML body.
    Status(u16),
    /// 200 with a body that is not JSON.
    NotJson,
    /// `"access_granted": true` (a JSON boolean) on what would be granted.
    BoolTrue,
    /// `"access_granted": "TRUE"` on what would be granted.
    UpperTrue,
    /// The answer without `access_granted` (everything else as granted).
    NoField,
    /// A granted answer cut off half way (fewer bytes than its `Content-Length`).
    CutShort,
    /// Reset the connection (RST) after reading the request.
    Reset,
}

#[derive(Clone)]
pub struct ApptiveSimConfig {
    pub bind: SocketAddr,
    pub token: String,
    pub doors: Vec<String>,
    pub members: Vec<SimMember>,
    pub clock: Arc<dyn Clock>,
}

impl Default for ApptiveSimConfig {
    fn default() -> Self {
        ApptiveSimConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: "sim-apptive-token".into(),
            doors: vec!["door_123".into(), "door_456".into()],
            members: vec![
                SimMember {
                    id: "303".into(),
                    firstname: "Erika".into(),
                    lastname: "Muster".into(),
                    email: "erika@example.org".into(),
                    subscription: true,
                },
                SimMember {
                    id: "404".into(),
                    firstname: "Max".into(),
                    lastname: "Beispiel".into(),
                    email: "max@example.org".into(),
                    subscription: false,
                },
            ],
            clock: Arc::new(SystemClock),
        }
    }
}

struct State {
    cfg: ApptiveSimConfig,
    mode: Mode,
    /// member → (key, issued).
    keys: HashMap<String, (String, DateTime<Utc>)>,
    access_requests: u64,
}

pub struct ApptiveSim {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ApptiveSim {
    pub async fn start(cfg: ApptiveSimConfig) -> std::io::Result<ApptiveSim> {
        let listener = TcpListener::bind(cfg.bind).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            cfg,
            mode: Mode::Normal,
            keys: HashMap::new(),
            access_requests: 0,
        }));
        let cancel = CancellationToken::new();
        let (st, c) = (state.clone(), cancel.clone());
        let task = tokio::spawn(async move {
            loop {
                let (sock, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    _ = c.cancelled() => return,
                };
                let st = st.clone();
                let c = c.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = serve(sock, st) => {}
                        _ = c.cancelled() => {}
                    }
                });
            }
        });
        tracing::info!(%addr, "apptive simulator listening");
        Ok(ApptiveSim {
            addr,
            state,
            cancel,
            task,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token(&self) -> String {
        self.lock().cfg.token.clone()
    }

    pub fn set_mode(&self, m: Mode) {
        self.lock().mode = m;
    }

    /// `POST /access` requests received (whatever they were answered).
    pub fn access_requests(&self) -> u64 {
        self.lock().access_requests
    }

    /// What `GET /qr/` answers for a member (a new key, stored with the time): the vCard.
    pub fn qr(&self, member: &str) -> Option<String> {
        issue(&mut self.lock(), member)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

fn issue(st: &mut State, member: &str) -> Option<String> {
    let m = st.cfg.members.iter().find(|m| m.id == member)?.clone();
    let key = uuid4();
    let now = st.cfg.clock.now();
    st.keys.insert(m.id.clone(), (key.clone(), now));
    // Apptive's shape: N, ORG (key), EMAIL, NOTE (member id); CRLF, UTF-8.
    Some(format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nN:{};{}\r\nORG:{key}\r\nEMAIL:{}\r\nNOTE:{}\r\nEND:VCARD\r\n",
        m.lastname, m.firstname, m.email, m.id
    ))
}

fn uuid4() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

struct Request {
    method: String,
    target: String,
    body: Vec<u8>,
}

async fn read_request(sock: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let len: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len.min(1024 * 1024) {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        target,
        body,
    })
}

async fn respond(sock: &mut TcpStream, status: u16, ctype: &str, body: &[u8]) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Status",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = sock.write_all(head.as_bytes()).await;
    let _ = sock.write_all(body).await;
    let _ = sock.shutdown().await;
}

async fn serve(mut sock: TcpStream, st: Arc<Mutex<State>>) {
    let Some(req) = read_request(&mut sock).await else {
        return;
    };
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let q: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    match (req.method.as_str(), path) {
        ("GET", "/qr/" | "/qr") => {
            let vcard = {
                let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
                if q.get("token") != Some(&s.cfg.token) {
                    None
                } else {
                    // The seed's test endpoint takes the token only (its example user);
                    // `member` picks one, default the first.
                    let m = q
                        .get("member")
                        .cloned()
                        .or_else(|| s.cfg.members.first().map(|m| m.id.clone()))
                        .unwrap_or_default();
                    Some(issue(&mut s, &m))
                }
            };
            match vcard {
                None => respond(&mut sock, 401, "text/plain", b"invalid token").await,
                Some(None) => respond(&mut sock, 404, "text/plain", b"unknown member").await,
                Some(Some(v)) => {
                    respond(&mut sock, 200, "text/vcard; charset=utf-8", v.as_bytes()).await
                }
            }
        }
        ("POST", "/access") => access(sock, st, &req.body).await,
        _ => respond(&mut sock, 404, "text/plain", b"not found").await,
    }
}

async fn access(mut sock: TcpStream, st: Arc<Mutex<State>>, body: &[u8]) {
    let (mode, answer) = {
        let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
        s.access_requests += 1;
        (s.mode.clone(), decide(&s, body))
    };
    match mode {
        Mode::Reset => {
            // SO_LINGER 0: close sends RST instead of FIN.
            let _ = sock.set_zero_linger();
            drop(sock);
            return;
        }
        Mode::Slow(d) => tokio::time::sleep(d).await,
        Mode::Status(code) => {
            let b = format!("<html><body><h1>{code}</h1></body></html>");
            return respond(&mut sock, code, "text/html", b.as_bytes()).await;
        }
        Mode::NotJson => {
            return respond(
                &mut sock,
                200,
                "application/json",
                b"<html>502 Bad Gateway</html>",
            )
            .await;
        }
        _ => {}
    }
    let (status, mut v) = answer;
    let granted = v["access_granted"] == "true";
    match mode {
        Mode::BoolTrue if granted => v["access_granted"] = serde_json::Value::Bool(true),
        Mode::UpperTrue if granted => v["access_granted"] = "TRUE".into(),
        Mode::NoField => {
            if let Some(o) = v.as_object_mut() {
                o.remove("access_granted");
            }
        }
        _ => {}
    }
    let body = v.to_string();
    if mode == Mode::CutShort {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = sock.write_all(head.as_bytes()).await;
        let _ = sock.write_all(&body.as_bytes()[..body.len() / 2]).await;
        let _ = sock.shutdown().await;
        return;
    }
    respond(&mut sock, status, "application/json", body.as_bytes()).await;
}

/// The documented answer for a request (status, JSON).
fn decide(s: &State, body: &[u8]) -> (u16, serde_json::Value) {
    let denied = |m: &str| serde_json::json!({"access_granted": "false", "message": m});
    let Ok(req) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (400, denied("Ungültige Anfrage"));
    };
    let field = |k: &str| req.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    if field("token") != s.cfg.token {
        return (401, denied("Ungültiger Token"));
    }
    if !s.cfg.doors.iter().any(|d| d == field("door_id")) {
        return (200, denied(MSG_INVALID));
    }
    let Some(m) = s.cfg.members.iter().find(|m| m.id == field("id")) else {
        return (200, denied(MSG_INVALID));
    };
    let member = |granted: bool, msg: &str| {
        serde_json::json!({
            "id": m.id,
            "firstname": m.firstname,
            "lastname": m.lastname,
            "email": m.email,
            // A 1×1 PNG: the member's picture, which gatehouse drops unless keep_picture.
            "picture": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mP8/x8AAwMCAO+ip1sAAAAASUVORK5CYII=",
            "access_granted": if granted { "true" } else { "false" },
            "message": msg,
        })
    };
    match s.keys.get(&m.id) {
        Some((k, _)) if k == field("securitykey") => {}
        _ => return (200, member(false, MSG_INVALID)),
    }
    let issued = s.keys[&m.id].1;
    if s.cfg.clock.now() - issued > VALIDITY {
        return (200, member(false, MSG_TOO_OLD));
    }
    if !m.subscription {
        return (200, member(false, MSG_NO_SUBSCRIPTION));
    }
    (200, member(true, MSG_WELCOME))
}
