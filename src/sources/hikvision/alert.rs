//! `EventNotificationAlert` parsing, XML or JSON. Pure.
//!
//! Real devices vary (protocols.md §2): namespaces (`hikvision.com/ver10|ver20`, `isapi.org`,
//! `std-cgi.com`, `urn:psialliance-org`, none) — elements are matched by local name;
//! `protocol` or `protocolType`; `channelID` and/or `dynChannelID`, possibly empty;
//! `inputIOPortID` / `dynInputIOPortID` for IO events; empty `activePostCount`; malformed
//! `dateTime` offsets (`-8:00`) or no seconds; leading whitespace before `<?xml`; unescaped
//! `&` (repaired only when parsing fails); unknown event types kept as raw strings.

use chrono::{DateTime, FixedOffset, NaiveDateTime};
use quick_xml::events::Event as XmlEvent;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Active,
    Inactive,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub id: Option<String>,
    /// `human`, `vehicle`… when the device classifies the target.
    pub target: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Normalised event type: lower-case, `-<n>` suffix stripped (`facedetection-1`).
    pub event_type: String,
    /// As sent.
    pub raw_type: String,
    pub state: State,
    /// `channelID`, else `dynChannelID`; `None` (device level) when empty or 0.
    pub channel: Option<u32>,
    pub io_port: Option<u32>,
    /// The device's time, when it parses (use receive time for state).
    pub date_time: Option<DateTime<FixedOffset>>,
    /// `dateTime` as sent (it may not parse).
    pub date_time_raw: Option<String>,
    pub active_post_count: Option<u32>,
    pub description: Option<String>,
    pub channel_name: Option<String>,
    pub mac: Option<String>,
    pub ip: Option<String>,
    pub serial: Option<String>,
    pub regions: Vec<Region>,
    /// A backlog flushed after a reconnect (`isDataRetransmission`).
    pub retransmission: bool,
}

impl Alert {
    /// Heartbeats in every shape seen: `videoloss` + `inactive` + `activePostCount` 0 (the
    /// documented one), `heartBeat`, and `other` with description "Heartbeat" (doorbells).
    pub fn is_heartbeat(&self) -> bool {
        (self.event_type == "videoloss"
            && self.state == State::Inactive
            && self.active_post_count.unwrap_or(0) == 0)
            || self.event_type == "heartbeat"
            || (self.event_type == "other"
                && self
                    .description
                    .as_deref()
                    .is_some_and(|d| d.to_ascii_lowercase().contains("heartbeat")))
    }

    /// The device's time for people: ISO-8601 when it parses, else as sent.
    pub fn device_time(&self) -> Option<String> {
        self.date_time
            .map(|t| t.to_rfc3339())
            .or_else(|| self.date_time_raw.clone())
    }

    /// Detection targets named in the regions (deduplicated).
    pub fn targets(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .regions
            .iter()
            .filter_map(|r| r.target.clone())
            .collect();
        t.sort();
        t.dedup();
        t
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    #[error("not an EventNotificationAlert: {0}")]
    Shape(String),
    #[error("malformed XML: {0}")]
    Xml(String),
    #[error("malformed JSON: {0}")]
    Json(String),
}

pub fn normalise_type(t: &str) -> String {
    let t = t.trim().to_ascii_lowercase();
    match t.rsplit_once('-') {
        Some((head, n))
            if !head.is_empty() && n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() =>
        {
            head.to_string()
        }
        _ => t,
    }
}

fn number(s: Option<&String>) -> Option<u32> {
    s.map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
}

/// Tolerant ISO-8601: `2019-02-20T15:22:34-8:00` (one-digit hour), no seconds, `Z`.
pub fn parse_time(s: &str) -> Option<DateTime<FixedOffset>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t);
    }
    // Split off the offset: the last '+' / '-' after the 'T', or a trailing 'Z'.
    let tpos = s.find('T')?;
    let (local, off) = if let Some(l) = s.strip_suffix('Z') {
        (l, "+00:00".to_string())
    } else {
        let i = s[tpos..].rfind(['+', '-']).map(|i| i + tpos)?;
        let (l, o) = s.split_at(i);
        let sign = &o[..1];
        let (h, m) = o[1..].split_once(':').unwrap_or((&o[1..], "00"));
        (
            l,
            format!(
                "{sign}{:02}:{:02}",
                h.parse::<u32>().ok()?,
                m.parse::<u32>().ok()?
            ),
        )
    };
    let naive = NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M"))
        .ok()?;
    let off: FixedOffset = off.parse().ok()?;
    naive.and_local_timezone(off).single()
}

/// Parse one part body (XML or JSON).
pub fn parse(body: &[u8]) -> Result<Alert, AlertError> {
    let text = String::from_utf8_lossy(body);
    let t = text.trim_start();
    if t.starts_with('{') {
        return parse_json(t);
    }
    match parse_xml(t) {
        Ok(a) => Ok(a),
        // Some firmware writes bare '&' in descriptions: repair and try once more.
        Err(AlertError::Xml(_)) if t.contains('&') => parse_xml(&repair_ampersands(t)),
        Err(e) => Err(e),
    }
}

fn repair_ampersands(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for (i, c) in s.char_indices() {
        if c == '&' {
            let rest = &s[i + 1..];
            let entity = rest.find(';').is_some_and(|j| {
                let name = &rest[..j];
                j <= 8
                    && !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '#')
            });
            out.push_str(if entity { "&" } else { "&amp;" });
        } else {
            out.push(c);
        }
    }
    out
}

/// An entity or character reference in element text (`&amp;`, `&#233;`), decoded onto
/// `text`: quick-xml 0.42 hands them over apart from the text around them.
pub(super) fn push_ref(text: &mut String, r: &quick_xml::events::BytesRef) {
    match r.resolve_char_ref() {
        Ok(Some(ch)) => text.push(ch),
        _ => text.push_str(match r.as_ref() {
            "amp" => "&",
            "lt" => "<",
            "gt" => ">",
            "quot" => "\"",
            "apos" => "'",
            _ => "",
        }),
    }
}

fn parse_xml(t: &str) -> Result<Alert, AlertError> {
    let mut reader = quick_xml::Reader::from_str(t);
    let mut path: Vec<String> = Vec::new();
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut regions: Vec<Region> = Vec::new();
    let mut root: Option<String> = None;
    // Text of the element being read (text and entity references arrive in pieces).
    let mut text = String::new();
    loop {
        match reader.read_event() {
            Err(e) => return Err(AlertError::Xml(e.to_string())),
            Ok(XmlEvent::Eof) => break,
            Ok(XmlEvent::Start(e)) => {
                let name = e.local_name().as_ref().to_string();
                root.get_or_insert_with(|| name.clone());
                if name.eq_ignore_ascii_case("DetectionRegionEntry") {
                    regions.push(Region {
                        id: None,
                        target: None,
                    });
                }
                path.push(name);
                text.clear();
            }
            Ok(XmlEvent::End(_)) => {
                if let Some(leaf) = path.last() {
                    let v = text.trim().to_string();
                    let in_region = path
                        .iter()
                        .any(|p| p.eq_ignore_ascii_case("DetectionRegionEntry"));
                    if in_region {
                        if let Some(r) = regions.last_mut() {
                            match leaf.as_str() {
                                "regionID" => r.id = Some(v),
                                "detectionTarget" | "targetType" => {
                                    r.target = Some(v.to_ascii_lowercase())
                                }
                                _ => {}
                            }
                        }
                    } else if !v.is_empty() || !fields.contains_key(leaf) {
                        fields.entry(leaf.clone()).or_insert(v);
                    }
                }
                path.pop();
                text.clear();
            }
            Ok(XmlEvent::Empty(e)) => {
                let name = e.local_name().as_ref().to_string();
                root.get_or_insert_with(|| name.clone());
                fields.entry(name).or_default();
            }
            Ok(XmlEvent::Text(t)) => text.push_str(&t.xml10_content()),
            Ok(XmlEvent::GeneralRef(r)) => push_ref(&mut text, &r),
            Ok(_) => {}
        }
    }
    match root.as_deref() {
        Some(r) if r.eq_ignore_ascii_case("EventNotificationAlert") => {}
        other => return Err(AlertError::Shape(format!("root element {other:?}"))),
    }
    build(fields, regions)
}

fn parse_json(t: &str) -> Result<Alert, AlertError> {
    let v: serde_json::Value =
        serde_json::from_str(t).map_err(|e| AlertError::Json(e.to_string()))?;
    // Access-control terminals wrap it: {"EventNotificationAlert": {...}} or send it bare.
    let o = v.get("EventNotificationAlert").unwrap_or(&v);
    let serde_json::Value::Object(map) = o else {
        return Err(AlertError::Shape("JSON alert is not an object".into()));
    };
    let mut fields = HashMap::new();
    for (k, val) in map {
        let s = match val {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => continue,
        };
        fields.insert(k.clone(), s);
    }
    build(fields, Vec::new())
}

fn build(f: HashMap<String, String>, regions: Vec<Region>) -> Result<Alert, AlertError> {
    let get = |k: &str| {
        f.get(k)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let raw_type = get("eventType").ok_or_else(|| AlertError::Shape("no eventType".into()))?;
    let state = match get("eventState").map(|s| s.to_ascii_lowercase()).as_deref() {
        Some("active") => State::Active,
        Some("inactive") => State::Inactive,
        _ => State::Other,
    };
    let channel = number(f.get("channelID"))
        .filter(|c| *c > 0)
        .or_else(|| number(f.get("dynChannelID")).filter(|c| *c > 0));
    let io_port = number(f.get("inputIOPortID"))
        .filter(|c| *c > 0)
        .or_else(|| number(f.get("dynInputIOPortID")).filter(|c| *c > 0));
    Ok(Alert {
        event_type: normalise_type(&raw_type),
        raw_type,
        state,
        channel,
        io_port,
        date_time: get("dateTime").and_then(|s| parse_time(&s)),
        date_time_raw: get("dateTime"),
        active_post_count: number(f.get("activePostCount")),
        description: get("eventDescription"),
        channel_name: get("channelName"),
        mac: get("macAddress"),
        ip: get("ipAddress"),
        serial: get("serialNumber"),
        regions,
        retransmission: get("isDataRetransmission").is_some_and(|v| v.eq_ignore_ascii_case("true")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/hikvision/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn every_real_alert_capture_parses() {
        let dir = format!("{}/tests/fixtures/hikvision", env!("CARGO_MANIFEST_DIR"));
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".jsonl") {
                for line in std::fs::read_to_string(&p).unwrap().lines() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    let a = parse(v["content"].as_str().unwrap().as_bytes())
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert!(!a.event_type.is_empty());
                    n += 1;
                }
            } else if name.ends_with(".xml")
                && !name.contains("triggers")
                && !name.contains("deviceinfo")
                && !name.contains("template")
            {
                let a = parse(&fixture(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(!a.event_type.is_empty(), "{name}");
                n += 1;
            }
        }
        assert!(n > 500, "parsed {n} alerts");
    }

    #[test]
    fn fields_from_real_captures() {
        let a = parse(&fixture("hiksink_cam_linedetection_active.xml")).unwrap();
        assert_eq!(a.event_type, "linedetection");
        assert_eq!(a.state, State::Active);
        assert_eq!(a.channel, Some(1));
        assert_eq!(a.active_post_count, Some(7));
        assert_eq!(
            a.serial.as_deref(),
            Some("DS-2CD2185FWD-I20180101AAWR111111111")
        );
        assert_eq!(a.regions[0].id.as_deref(), Some("1"));
        assert!(!a.is_heartbeat());
        let nvr = parse(&fixture("hiksink_nvr_VMD_active.xml")).unwrap();
        assert_eq!(
            nvr.channel,
            Some(15),
            "dynChannelID when channelID is absent"
        );
        let hb = parse(&fixture("hiksink_cam_videoloss_inactive.xml")).unwrap();
        assert!(hb.is_heartbeat());
        let nvr_loss = parse(&fixture("hiksink_nvr_videoloss_active.xml")).unwrap();
        assert!(
            !nvr_loss.is_heartbeat(),
            "videoloss active on an NVR is a real alarm"
        );
    }

    #[test]
    fn quirks() {
        let x = "\r\n  <?xml version=\"1.0\"?>\n<EventNotificationAlert xmlns=\"http://www.isapi.org/ver20/XMLSchema\">\n<protocolType>HTTP</protocolType><channelID></channelID><dynChannelID>3</dynChannelID>\n<dateTime>2019-02-20T15:22:34-8:00</dateTime><activePostCount></activePostCount><eventType>facedetection-1</eventType><eventState>active</eventState><eventDescription>Tom & Jerry</eventDescription>\n<DetectionRegionList><DetectionRegionEntry><regionID>2</regionID><detectionTarget>Human</detectionTarget></DetectionRegionEntry></DetectionRegionList></EventNotificationAlert>";
        let a = parse(x.as_bytes()).unwrap();
        assert_eq!(a.event_type, "facedetection");
        assert_eq!(a.raw_type, "facedetection-1");
        assert_eq!(a.channel, Some(3));
        assert_eq!(a.active_post_count, None);
        assert_eq!(
            a.description.as_deref(),
            Some("Tom & Jerry"),
            "bare & repaired"
        );
        assert_eq!(
            a.date_time.unwrap().to_rfc3339(),
            "2019-02-20T15:22:34-08:00"
        );
        assert_eq!(a.targets(), vec!["human"]);
        let io = parse(b"<EventNotificationAlert><inputIOPortID>2</inputIOPortID><eventType>IO</eventType><eventState>active</eventState><isDataRetransmission>true</isDataRetransmission></EventNotificationAlert>").unwrap();
        assert_eq!((io.io_port, io.channel), (Some(2), None));
        assert!(io.retransmission);
        let unknown = parse(b"<EventNotificationAlert><eventType>someNewThing</eventType><eventState>active</eventState></EventNotificationAlert>").unwrap();
        assert_eq!(unknown.event_type, "somenewthing", "unknown types kept");
        let json = parse(br#"{"ipAddress":"10.0.0.2","channelID":2,"eventType":"AccessControllerEvent","eventState":"active","dateTime":"2024-01-01T10:00+01:00"}"#).unwrap();
        assert_eq!(json.channel, Some(2));
        assert!(json.date_time.is_some(), "no seconds");
        assert!(parse(b"<ResponseStatus><statusCode>4</statusCode></ResponseStatus>").is_err());
        assert!(
            parse(b"<EventNotificationAlert><eventType>VMD").is_err(),
            "a cut-off part is an error, not a guess"
        );
        assert!(parse(b"\xff\xfe garbage <<<").is_err());
        let hb = parse(b"<EventNotificationAlert><eventType>other</eventType><eventState>active</eventState><eventDescription>Heartbeat</eventDescription></EventNotificationAlert>").unwrap();
        assert!(hb.is_heartbeat());
    }
}
