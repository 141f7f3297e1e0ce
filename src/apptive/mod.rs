//! Apptive QR-code access (seed 002, protocols.md §5).
//!
//! Scans arrive from MQTT (`<base>/qr/<reader>/scan`, retained ones refused by the MQTT sink),
//! REST (`POST /api/qr/scan`) and USB readers on this machine ([`usb`]), all as a [`Scan`] on
//! the bus's QR queue. Each scan, in order:
//! 1. the reader's rate (`max_scans_per_minute`): over it → denied without asking Apptive;
//! 2. the vCard ([`vcard`]): ORG = security key, NOTE = member id; anything else → denied;
//! 3. `single_use`: a key that **opened** once is refused for `key_validity` (Apptive's keys
//!    live 15 minutes). Only granted keys are remembered — a key Apptive refused, or that
//!    could not be checked (Apptive down), may be tried again, Apptive decides. The key is
//!    kept as its SHA-256 only, in SQLite (`qr_used_keys`), so a restart does not reopen the
//!    window; a key being checked right now is refused to a second scan too (one photographed
//!    code shown at two readers at once);
//! 4. `POST <url>/access` ([`client`]), fail closed;
//! 5. granted → the door opens through the same path as every other door command: the
//!    [`crate::commands::DoorGate`] (minimum interval, disabled doors), then a momentary
//!    `Open` on the bus's command queue with requester `qr:<reader>`, audited by its source.
//!    A door with `require_code` is opened too: the code guards MQTT / REST commands, a QR
//!    reader's authority is Apptive's answer. The scan waits for the door's source to send
//!    the open to Net2 ([`door_wait`]): only then is it granted ("welcome", `qr_granted`); a
//!    refused, failed or unanswered open is a denial on the display. The code counts as used
//!    all the same (Apptive accepted it; a new one is a tap in the app).
//!
//! Every scan ends in a [`QrResult`] on `<base>/qr/<reader>/result` (not retained; the
//! reader's display and HA's event entity) and a `qr_granted` / `qr_denied` event at the
//! reader's door (stored, published, with a picture from the door's camera). The security key
//! and the token are never in a log line, an event, a result or the database; a scan that is
//! not a vCard is kept in `rejects` as its shape only: each line's name and the length of its
//! value ([`redact`]).

pub mod client;
pub mod usb;
pub mod vcard;

use crate::bus::Bus;
use crate::clock::Clock;
use crate::config::{ApptiveConfig, Config, ConfigRx};
use crate::model::*;
use crate::secret::Secret;
use crate::storage::Store;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The event source name (`events.source`).
pub const SOURCE: &str = "apptive";

/// Local denials, for the display (German, as Apptive's own messages, then English).
pub const MSG_UNREADABLE: &str = "QR Code nicht lesbar. / QR code not readable.";
pub const MSG_USED: &str =
    "QR Code wurde bereits verwendet! Bitte nochmals generieren. / QR code already used.";
pub const MSG_RATE: &str = "Zu viele Versuche, bitte kurz warten. / Too many scans, please wait.";
pub const MSG_UNAVAILABLE: &str =
    "Zutritt zurzeit nicht möglich. / Access is not available right now.";
pub const MSG_DOOR: &str = "Tür kann nicht geöffnet werden. / The door cannot be opened.";

/// A scan from a reader: the code's raw bytes, where it came from, and (REST) who waits for
/// the outcome.
#[derive(Debug)]
pub struct Scan {
    pub reader: String,
    pub data: Vec<u8>,
    /// `mqtt`, `rest`, `usb`.
    pub via: &'static str,
    pub reply: Option<oneshot::Sender<QrResult>>,
}

/// The per-reader rate and the keys being checked now, shared by the scan tasks.
#[derive(Default)]
struct Shared {
    recent: HashMap<String, VecDeque<Instant>>,
    in_flight: HashSet<String>,
    /// (reader, key hash) → when that code opened the door there: a re-read of it is
    /// ignored for [`REREAD`].
    opened: HashMap<(String, String), chrono::DateTime<chrono::Utc>>,
}

/// A reader re-reads a code that is still held in front of it (a phone's screen stays up
/// after "welcome"): the same code at the same reader this soon after it opened the door is
/// ignored — no Apptive call, no event, no result, not counted in the reader's rate —
/// rather than answered "already used" a second after "welcome" (with a camera picture and a
/// `qr_denied` each time, and the reader's allowance used up).
pub const REREAD: Duration = Duration::from_secs(5);

struct Service {
    store: Store,
    bus: Bus,
    cfg_rx: ConfigRx,
    clock: Arc<dyn Clock>,
    shared: Mutex<Shared>,
    /// The client for the config it was built from (rebuilt when `apptive:` changes).
    client: Mutex<Option<(ApptiveConfig, client::ApptiveClient)>>,
}

/// Start the QR service and the USB readers (when `apptive:` is configured).
pub fn spawn(
    store: Store,
    bus: Bus,
    cfg_rx: ConfigRx,
    mut scans: mpsc::Receiver<Scan>,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let cfg = cfg_rx.borrow().clone();
    let mut tasks = Vec::new();
    if let Some(a) = &cfg.apptive {
        for r in a.readers.iter() {
            if let Some(u) = &r.usb {
                tasks.push(tokio::spawn(usb::run(
                    r.id.clone(),
                    u.clone(),
                    bus.qr_scans(),
                    cancel.clone(),
                )));
            }
        }
        tracing::info!(readers = a.readers.len(), url = %a.url, "apptive QR access ready");
    }
    let svc = Arc::new(Service {
        store,
        bus,
        cfg_rx,
        clock,
        shared: Mutex::default(),
        client: Mutex::new(None),
    });
    tasks.push(tokio::spawn(async move {
        loop {
            let scan = tokio::select! {
                s = scans.recv() => match s { Some(s) => s, None => return },
                _ = cancel.cancelled() => return,
            };
            // Each scan on its own task: a slow Apptive answer at one reader does not hold
            // up the others (the rate and the in-flight keys are shared).
            let svc = svc.clone();
            tokio::spawn(async move { svc.handle(scan).await });
        }
    }));
    tasks
}

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What may be kept of a scan that could not be used (`rejects.raw`): its shape, never its
/// values. A refused scan is exactly the one whose `ORG` line may not be recognisable: a
/// German / Swiss QWERTZ keyboard-wedge reader types `:` as `>` and `-` as `/`
/// (`ORG>6f1c2f5e/8d1a/…`), a reader may drop the separator, fold lines oddly or mix layouts —
/// masking only a well-formed `ORG:` would keep the key, recoverable by reversing the layout.
/// So every line is kept as its property name (only when it is a known vCard name, with an
/// optional group), the first character after the name, and the length of the rest; the
/// values of `BEGIN`, `END` (`VCARD`) and `VERSION` (`2.1`, `3.0`, `4.0`) stay when they are
/// exactly those. Enough to see which lines came, how long, and where the layout went wrong.
pub fn redact(raw: &[u8]) -> String {
    const NAMES: &[&str] = &[
        "BEGIN",
        "END",
        "VERSION",
        "ORG",
        "NOTE",
        "N",
        "FN",
        "TEL",
        "EMAIL",
        "ADR",
        "TITLE",
        "UID",
        "URL",
        "PHOTO",
        "REV",
        "PRODID",
        "CATEGORIES",
        "ROLE",
        "BDAY",
        "NICKNAME",
        "LABEL",
        "KIND",
        "X-ABLABEL",
    ];
    let text = String::from_utf8_lossy(raw);
    let lines = text.split(['\n', '\r']).filter(|l| !l.is_empty()).count();
    let mut out = format!("[{} bytes, {lines} lines; values withheld]\n", raw.len());
    for body in text.split(['\n', '\r']) {
        if body.is_empty() {
            continue;
        }
        if body.starts_with([' ', '\t']) {
            out.push_str(&format!("(folded) <{} chars>\n", body.chars().count() - 1));
            continue;
        }
        // The name: letters, digits, `-` and the group's `.`, up to the first other character.
        let end = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
            .unwrap_or(body.len());
        let (name, rest) = body.split_at(end);
        let prop = name.rsplit('.').next().unwrap_or_default();
        let known = NAMES.iter().any(|n| n.eq_ignore_ascii_case(prop));
        let mut chars = rest.chars();
        let sep = chars.next();
        let value: String = chars.collect();
        let keep_value = sep == Some(':')
            && ((["BEGIN", "END"]
                .iter()
                .any(|n| n.eq_ignore_ascii_case(prop))
                && value.eq_ignore_ascii_case("VCARD"))
                || (prop.eq_ignore_ascii_case("VERSION")
                    && ["2.1", "3.0", "4.0"].contains(&value.as_str())));
        if known {
            out.push_str(name);
        } else {
            // Not a name (a key typed without its separator, a URL, noise): its length only.
            out.push_str(&format!("?<{} chars>", name.chars().count()));
        }
        match sep {
            None => {}
            Some(c) if c.is_ascii_graphic() => out.push(c),
            Some(c) => out.push_str(&format!("U+{:04X}", c as u32)),
        }
        if keep_value {
            out.push_str(&value);
        } else if sep.is_some() {
            out.push_str(&format!("<{} chars>", value.chars().count()));
        }
        out.push('\n');
    }
    out
}

/// What a scan came to, before it is published.
struct Outcome {
    granted: bool,
    message: String,
    reason: Option<String>,
    member: Option<String>,
    name: Option<String>,
    /// The member's picture (base64) from Apptive's answer, only with `keep_picture`.
    picture: Option<String>,
}

impl Outcome {
    fn denied(message: &str, reason: impl Into<String>, member: Option<String>) -> Outcome {
        Outcome {
            granted: false,
            message: message.to_string(),
            reason: Some(reason.into()),
            member,
            name: None,
            picture: None,
        }
    }
}

impl Service {
    fn config(&self) -> Arc<Config> {
        self.cfg_rx.borrow().clone()
    }

    fn client(&self, a: &ApptiveConfig) -> Result<client::ApptiveClient, String> {
        let mut c = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cfg, cl)) = c.as_ref()
            && cfg == a
        {
            return Ok(cl.clone());
        }
        let cl = client::ApptiveClient::new(a).map_err(|e| e.to_string())?;
        *c = Some((a.clone(), cl.clone()));
        Ok(cl)
    }

    async fn handle(&self, scan: Scan) {
        let cfg = self.config();
        let Some(a) = cfg.apptive.clone() else {
            tracing::warn!(reader = %scan.reader, "QR scan ignored: apptive is no longer configured");
            return;
        };
        let Some(reader) = a.readers.iter().find(|r| r.id == scan.reader).cloned() else {
            tracing::warn!(reader = %scan.reader, via = scan.via, "QR scan from an unknown reader ignored (not in apptive.readers)");
            if let Some(tx) = scan.reply {
                let _ = tx.send(QrResult {
                    reader: scan.reader.clone(),
                    event_type: "qr_denied".into(),
                    granted: false,
                    message: MSG_UNAVAILABLE.into(),
                    reason: Some(format!("unknown reader {:?}", scan.reader)),
                    member: None,
                    name: None,
                    door: 0,
                    time: self.clock.now(),
                });
            }
            return;
        };
        // A physical reader re-reading the code that just opened its door (REST scans are
        // an operator's explicit request and always answered).
        if scan.reply.is_none()
            && let Ok(code) = vcard::parse(&scan.data)
        {
            let now = self.clock.now();
            let key = (reader.id.clone(), sha256_hex(code.key.expose()));
            let mut sh = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            sh.opened.retain(|_, at| {
                now.signed_duration_since(*at)
                    .to_std()
                    .is_ok_and(|d| d < REREAD)
            });
            if sh.opened.contains_key(&key) {
                tracing::debug!(reader = %reader.id, via = scan.via, member = %code.member, "QR re-read of the code that just opened this door ignored");
                return;
            }
        }
        let out = self.decide(&a, &reader, &cfg, &scan).await;
        let now = self.clock.now();
        let result = QrResult {
            reader: reader.id.clone(),
            event_type: if out.granted {
                "qr_granted"
            } else {
                "qr_denied"
            }
            .into(),
            granted: out.granted,
            message: out.message.clone(),
            reason: out.reason.clone(),
            member: out.member.clone(),
            name: out.name.clone(),
            door: reader.door,
            time: now,
        };
        if out.granted {
            tracing::info!(reader = %reader.id, via = scan.via, member = ?out.member, name = ?out.name, door = reader.door, "QR access granted");
        } else {
            tracing::info!(reader = %reader.id, via = scan.via, member = ?out.member, reason = ?out.reason, "QR access denied");
        }
        let door_name = cfg
            .doors
            .get(&reader.door)
            .and_then(|d| d.name.clone())
            .or_else(|| {
                Some(
                    reader
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("Door {}", reader.door)),
                )
            });
        let n = EVENT_N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!(
            "{SOURCE}:{}:{}-{n}",
            reader.id,
            now.timestamp_nanos_opt().unwrap_or_default()
        );
        let kind = if out.granted {
            EventKind::QrGranted {
                reader: reader.id.clone(),
                member: out.member.clone().unwrap_or_default(),
                name: out.name.clone(),
                message: Some(out.message.clone()),
            }
        } else {
            EventKind::QrDenied {
                reader: reader.id.clone(),
                member: out.member.clone(),
                name: out.name.clone(),
                reason: out.reason.clone().unwrap_or_default(),
                message: Some(out.message.clone()),
            }
        };
        // What is kept of the scan: never its text (the key). The member's picture only with
        // `keep_picture` (in the stored row; not published: MQTT payloads leave `raw` out).
        let mut raw = serde_json::json!({
            "reader": reader.id,
            "via": scan.via,
            "bytes": scan.data.len(),
            "member": out.member,
        });
        if let Some(p) = &out.picture {
            raw["member_picture"] = p.clone().into();
        }
        let raw = raw.to_string();
        let event = Event {
            id: id.clone(),
            source: SOURCE.into(),
            source_id: None,
            fingerprint: id,
            time: now.fixed_offset(),
            received: now,
            via: Via::Live,
            door: Some(DoorRef {
                id: reader.door,
                name: door_name,
            }),
            user: None,
            kind,
            code: None,
            description: Some(out.message.clone()),
            raw,
        };
        self.bus.publish(Message::Event(Box::new(event))).await;
        self.bus.publish(Message::QrResult(result.clone())).await;
        if let Some(tx) = scan.reply {
            let _ = tx.send(result);
        }
    }

    async fn decide(
        &self,
        a: &ApptiveConfig,
        reader: &crate::config::QrReaderConfig,
        cfg: &Config,
        scan: &Scan,
    ) -> Outcome {
        // 1. The reader's rate.
        {
            let mut sh = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let q = sh.recent.entry(reader.id.clone()).or_default();
            while q
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(60))
            {
                q.pop_front();
            }
            if q.len() >= reader.max_scans_per_minute as usize {
                return Outcome::denied(
                    MSG_RATE,
                    format!(
                        "rate limit: more than {} scans a minute at this reader (max_scans_per_minute)",
                        reader.max_scans_per_minute
                    ),
                    None,
                );
            }
            q.push_back(now);
        }
        // 2. The code.
        let code = match vcard::parse(&scan.data) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(reader = %reader.id, via = scan.via, bytes = scan.data.len(), error = %e, "QR scan refused");
                self.bus
                    .publish(Message::Reject {
                        source: SOURCE.into(),
                        context: format!("qr scan at reader {} ({})", reader.id, scan.via),
                        error: e.to_string(),
                        raw: redact(&scan.data),
                    })
                    .await;
                return Outcome::denied(MSG_UNREADABLE, e.to_string(), None);
            }
        };
        let member = Some(code.member.clone());
        let hash = sha256_hex(code.key.expose());
        // 3. Single use.
        if a.single_use {
            let now = self.clock.now();
            let h = hash.clone();
            let used = self.store.run(move |s| s.qr_key_used(&h, now)).await;
            match used {
                Ok(false) => {}
                Ok(true) => {
                    return Outcome::denied(
                        MSG_USED,
                        "this code already opened a door (single_use): generate a new one",
                        member,
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "unable to read used QR keys: denied");
                    return Outcome::denied(
                        MSG_UNAVAILABLE,
                        format!("unable to check the key against used ones: {e}"),
                        member,
                    );
                }
            }
        }
        let _flight = match InFlight::enter(&self.shared, &hash) {
            Some(g) => g,
            None => {
                return Outcome::denied(
                    MSG_USED,
                    "the same code is being checked at this moment (shown twice?)",
                    member,
                );
            }
        };
        // 4. Apptive.
        let client = match self.client(a) {
            Ok(c) => c,
            Err(e) => return Outcome::denied(MSG_UNAVAILABLE, e, member),
        };
        let v = client.check(&reader.door_id, &code.member, &code.key).await;
        if !v.granted {
            let message = v
                .message
                .clone()
                .unwrap_or_else(|| MSG_UNAVAILABLE.to_string());
            return Outcome {
                granted: false,
                message,
                reason: v.reason,
                member,
                name: v.name,
                picture: v.picture,
            };
        }
        // Remembered before the door opens: a crash after the open cannot reopen it.
        if a.single_use {
            let now = self.clock.now();
            let until = now
                + chrono::Duration::from_std(a.key_validity.get())
                    .unwrap_or(chrono::Duration::minutes(15));
            let (h, r) = (hash.clone(), reader.id.clone());
            match self
                .store
                .run(move |s| s.qr_key_use(&h, &r, now, until))
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    return Outcome {
                        name: v.name,
                        ..Outcome::denied(
                            MSG_USED,
                            "this code already opened a door (single_use): generate a new one",
                            member,
                        )
                    };
                }
                Err(e) => {
                    tracing::error!(error = %e, "unable to remember a used QR key: denied");
                    return Outcome {
                        name: v.name,
                        ..Outcome::denied(
                            MSG_UNAVAILABLE,
                            format!("unable to remember the key (single_use): {e}"),
                            member,
                        )
                    };
                }
            }
        }
        // 5. The door, through the checks every requester shares.
        match self.open_door(reader, cfg).await {
            Ok(()) => {
                let mut sh = self.shared.lock().unwrap_or_else(|p| p.into_inner());
                sh.opened
                    .insert((reader.id.clone(), hash.clone()), self.clock.now());
                Outcome {
                    granted: true,
                    message: v
                        .message
                        .unwrap_or_else(|| "Willkommen! / Welcome!".to_string()),
                    reason: None,
                    member,
                    name: v.name,
                    picture: v.picture,
                }
            }
            Err(why) => Outcome {
                name: v.name,
                ..Outcome::denied(
                    MSG_DOOR,
                    format!("apptive granted, the door refused: {why}"),
                    member,
                )
            },
        }
    }

    async fn open_door(
        &self,
        reader: &crate::config::QrReaderConfig,
        cfg: &Config,
    ) -> Result<(), String> {
        let kind = CommandKind::Door {
            door: reader.door,
            action: DoorAction::Open,
            duration_ms: None,
        };
        let n = EVENT_N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request_id = format!("qr-{}-{n}", chrono::Utc::now().timestamp_millis());
        let requester = format!("qr:{}", reader.id);
        let code: Option<Secret> = cfg
            .doors
            .get(&reader.door)
            .and_then(|d| d.require_code.clone());
        if let Err((_, why)) = self.bus.door_gate().check(
            reader.door,
            None,
            code.as_ref().map(Secret::expose),
            &cfg.doors,
            Instant::now(),
        ) {
            self.bus
                .publish(Message::Command(CommandUpdate {
                    request_id,
                    requester,
                    kind,
                    status: CommandStatus::Rejected,
                    detail: why.clone(),
                    at: chrono::Utc::now(),
                }))
                .await;
            return Err(why);
        }
        tracing::info!(request_id = %request_id, requester = %requester, door = reader.door, "QR door command");
        // Listen before sending, so the source's word on it cannot be missed.
        let mut watch = self.bus.watch();
        let cmd = Command {
            request_id: request_id.clone(),
            requester,
            kind,
            received: chrono::Utc::now(),
            received_at: tokio::time::Instant::now(),
        };
        self.bus
            .commands()
            .send(cmd)
            .await
            .map_err(|_| "no source takes door commands".to_string())?;
        // The display must not say "welcome" before Net2 has taken the open: Net2 handles
        // commands one at a time, getting a token can back off (429), and a Net2 PC that is
        // off typically times out rather than refusing — "accepted" only means the source
        // picked the command up. Wait for its real outcome: "sent" (Net2 took it, fire and
        // forget) or "confirmed" open the door; "rejected", "failed" (no token, too old to
        // send, an error or a timeout of the POST) and "timeout" do not. The source refuses a
        // command older than `COMMAND_MAX_AGE` before sending it and bounds the POST by
        // `request_timeout`, so its word comes within [`door_wait`]; none by then is a denial
        // (nothing can have been sent late).
        let wait = door_wait(cfg);
        let word = tokio::time::timeout(wait, async {
            loop {
                match watch.recv().await {
                    Ok(Message::Command(u))
                        if u.request_id == request_id && u.status != CommandStatus::Accepted =>
                    {
                        return Some(u);
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return None,
                }
            }
        })
        .await;
        match word {
            Ok(Some(u)) if matches!(u.status, CommandStatus::Sent | CommandStatus::Confirmed) => {
                Ok(())
            }
            Ok(Some(u)) => Err(format!(
                "{}: {}",
                serde_json::to_value(u.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                u.detail
            )),
            Ok(None) => Err("the bus closed (shutting down); the door did not open".into()),
            Err(_) => Err(format!(
                "no word from the door's source within {}s; the door did not open",
                wait.as_secs()
            )),
        }
    }
}

/// How long a granted scan waits for the door's source to send (or refuse) the open: Net2
/// refuses a command older than [`COMMAND_MAX_AGE`](crate::sources::net2::doors::COMMAND_MAX_AGE)
/// (queued behind others, waiting for a token) and bounds the POST by its `request_timeout`;
/// a little more for the bus.
pub fn door_wait(cfg: &Config) -> Duration {
    let request = cfg
        .sources
        .net2
        .as_ref()
        .map(|n| n.request_timeout.get())
        .unwrap_or_default();
    crate::sources::net2::doors::COMMAND_MAX_AGE + request + Duration::from_secs(2)
}

static EVENT_N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A key being checked; removed from the set when dropped.
struct InFlight<'a> {
    shared: &'a Mutex<Shared>,
    hash: String,
}

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Mutex<Shared>, hash: &str) -> Option<InFlight<'a>> {
        let mut sh = shared.lock().unwrap_or_else(|p| p.into_inner());
        sh.in_flight.insert(hash.to_string()).then(|| InFlight {
            shared,
            hash: hash.to_string(),
        })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut sh = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        sh.in_flight.remove(&self.hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_keeps_no_value() {
        let key = "6f1c2f5e-8d1a-4c0b-9e2f-1a2b3c4d5e6f";
        let qwertz = key.replace('-', "/");
        let cases = [
            format!(
                "BEGIN:VCARD\r\nVERSION:3.0\r\nitem1.org;CHARSET=UTF-8:{key}\r\n -continued\r\nNOTE:303\r\nEND:VCARD\r\n"
            ),
            // A QWERTZ keyboard wedge: `:` typed as `>`, `-` as `/`.
            format!("BEGIN>VCARD\nVERSION>3.0\nORG>{qwertz}\nNOTE>\nEND>VCARD\n"),
            // The separator dropped, the key on a line of its own, the key as the whole scan.
            format!("BEGIN:VCARD\nORG{key}\n{key}\nEND:VCARD\n"),
            key.to_string(),
            format!("ORG\t{key}"),
            format!("ORG\u{00a0}{key}"),
            format!("BEGIN:{key}\nVERSION:{key}\nEND:{key}"),
        ];
        for raw in cases {
            let r = redact(raw.as_bytes());
            for part in key.split('-') {
                assert!(!r.contains(part), "{part} kept from {raw:?}: {r}");
            }
            assert!(!r.contains("continued") && !r.contains("303"), "{r}");
        }
        let r = redact(
            format!("BEGIN>VCARD\nVERSION>3.0\nORG>{qwertz}\nNOTE>\nEND>VCARD\n").as_bytes(),
        );
        assert!(r.contains("ORG><36 chars>"), "{r}");
        let r = redact(
            format!("BEGIN:VCARD\r\nVERSION:3.0\r\nORG:{key}\r\nNOTE:\r\nEND:VCARD\r\n").as_bytes(),
        );
        assert!(
            r.contains("BEGIN:VCARD\nVERSION:3.0\nORG:<36 chars>\nNOTE:<0 chars>\nEND:VCARD"),
            "{r}"
        );
    }
}
