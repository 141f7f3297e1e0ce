//! Classic ASP.NET SignalR 2 (not ASP.NET Core SignalR): the small subset Net2's
//! `eventHubLocal` uses. Pure frame decoding and URL building; the socket lives in `live.rs`.
//!
//! Frames seen (fixtures/net2/signalr/frames.jsonl): init `{"C":…,"S":1,"M":[]}`, keep-alive
//! `{}`, results `{"I":"1"}` / `{"R":…,"I":"1"}` / `{"E":"…","I":"1"}`, messages
//! `{"C":…,"M":[{"H":…,"M":…,"A":[…]}]}`.

use serde_json::Value;

pub const HUB: &str = "eventHubLocal";
pub const PROTOCOL: &str = "1.5";

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `S:1`: the transport is up.
    Init,
    KeepAlive,
    /// Result of our invocation `I`.
    Result {
        id: String,
        error: Option<String>,
    },
    Messages(Vec<HubMessage>),
}

/// One hub invocation from the server. `method` is lower-cased (SignalR names are
/// case-insensitive: `EventHubLocal` and `eventHubLocal` both occur).
#[derive(Debug, Clone, PartialEq)]
pub struct HubMessage {
    pub hub: String,
    pub method: String,
    pub args: Vec<Value>,
}

impl HubMessage {
    /// The payload objects, whichever argument shape the server used: `"A":[{…}]`,
    /// `"A":[[{…},{…}]]`, or a mix.
    pub fn items(&self) -> Vec<&Value> {
        let mut out = Vec::new();
        for a in &self.args {
            match a {
                Value::Array(inner) => out.extend(inner.iter()),
                other => out.push(other),
            }
        }
        out
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("unexpected frame shape")]
    Shape,
}

pub fn decode(text: &str) -> Result<Frame, DecodeError> {
    let v: Value = serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
    let Value::Object(o) = v else {
        return Err(DecodeError::Shape);
    };
    if o.is_empty() {
        return Ok(Frame::KeepAlive);
    }
    if let Some(id) = o.get("I") {
        let id = match id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let error = o.get("E").and_then(|e| e.as_str()).map(str::to_owned);
        return Ok(Frame::Result { id, error });
    }
    if o.get("S").and_then(Value::as_i64) == Some(1) {
        return Ok(Frame::Init);
    }
    if let Some(Value::Array(ms)) = o.get("M") {
        let mut out = Vec::new();
        for m in ms {
            let hub = m.get("H").and_then(Value::as_str).unwrap_or_default();
            let method = m.get("M").and_then(Value::as_str).unwrap_or_default();
            let args = match m.get("A") {
                Some(Value::Array(a)) => a.clone(),
                Some(other) => vec![other.clone()],
                None => Vec::new(),
            };
            out.push(HubMessage {
                hub: hub.to_ascii_lowercase(),
                method: method.to_ascii_lowercase(),
                args,
            });
        }
        return Ok(Frame::Messages(out));
    }
    // Groups token / long-poll hints (`G`, `T`, `L`) and an unknown `C`-only frame: liveness.
    if o.contains_key("C") || o.contains_key("G") || o.contains_key("T") {
        return Ok(Frame::KeepAlive);
    }
    Err(DecodeError::Shape)
}

/// A client → server invocation.
pub fn invoke(method: &str, args: Vec<Value>, id: u64) -> String {
    serde_json::json!({"H": HUB, "M": method, "A": args, "I": id}).to_string()
}

pub fn connection_data() -> String {
    format!(r#"[{{"name":"{HUB}"}}]"#)
}

/// `/signalr/<what>` URL with the standard query.
pub fn url(
    base: &url::Url,
    what: &str,
    connection_token: Option<&str>,
    access_token: &str,
) -> url::Url {
    let mut u = base.clone();
    u.set_path(&format!(
        "{}/signalr/{what}",
        base.path().trim_end_matches('/')
    ));
    {
        let mut q = u.query_pairs_mut();
        q.clear();
        if what != "negotiate" {
            q.append_pair("transport", "webSockets");
        }
        q.append_pair("clientProtocol", PROTOCOL);
        if let Some(t) = connection_token {
            q.append_pair("connectionToken", t);
        }
        q.append_pair("connectionData", &connection_data());
        q.append_pair("token", access_token);
    }
    if what == "connect" {
        let scheme = if u.scheme() == "https" { "wss" } else { "ws" };
        let _ = u.set_scheme(scheme);
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAMES: &str = include_str!("../../../tests/fixtures/net2/signalr/frames.jsonl");

    #[test]
    fn decodes_every_fixture_frame() {
        let frames: Vec<Frame> = FRAMES.lines().map(|l| decode(l).unwrap()).collect();
        assert_eq!(frames[0], Frame::Init);
        assert_eq!(frames[1], Frame::KeepAlive);
        assert_eq!(
            frames[2],
            Frame::Result {
                id: "1".into(),
                error: None
            }
        );
        // Both argument shapes give the same items.
        let Frame::Messages(a) = &frames[3] else {
            panic!()
        };
        assert_eq!(a[0].method, "liveevents");
        assert_eq!(a[0].hub, "eventhublocal");
        assert_eq!(a[0].items().len(), 1);
        assert_eq!(a[0].items()[0]["userId"], 12);
        let Frame::Messages(b) = &frames[4] else {
            panic!()
        };
        assert_eq!(b[0].items().len(), 1);
        assert_eq!(b[0].items()[0]["eventType"], 580);
        let Frame::Messages(c) = &frames[5] else {
            panic!()
        };
        assert_eq!(c[0].method, "doorstatusevents");
        let Frame::Messages(batch) = &frames[7] else {
            panic!()
        };
        assert_eq!(batch[0].items().len(), 2);
        let Frame::Result { error: Some(e), .. } = &frames[8] else {
            panic!()
        };
        assert!(e.contains("subscribeToDoorEvents"));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(matches!(decode("<html>"), Err(DecodeError::Json(_))));
        assert_eq!(decode("[1,2]"), Err(DecodeError::Shape));
        assert_eq!(decode(r#"{"x":1}"#), Err(DecodeError::Shape));
        let Frame::Messages(m) =
            decode(r#"{"C":"x","M":[{"H":"h","M":"liveEvents","A":{"a":1}}]}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(m[0].items().len(), 1);
    }

    #[test]
    fn builds_urls() {
        let base = url::Url::parse("https://net2:8443").unwrap();
        let u = url(&base, "connect", Some("a+b/c="), "tok");
        assert_eq!(u.scheme(), "wss");
        assert_eq!(u.path(), "/signalr/connect");
        let q: Vec<_> = u.query_pairs().collect();
        assert!(
            q.iter()
                .any(|(k, v)| k == "connectionToken" && v == "a+b/c=")
        );
        assert!(u.as_str().contains("connectionToken=a%2Bb%2Fc%3D"));
        assert!(
            q.iter()
                .any(|(k, v)| k == "connectionData" && v == r#"[{"name":"eventHubLocal"}]"#)
        );
        let n = url(&base, "negotiate", None, "tok");
        assert!(!n.as_str().contains("transport"));
        assert_eq!(
            invoke("subscribeToLiveEvents", vec![], 1),
            r#"{"A":[],"H":"eventHubLocal","I":1,"M":"subscribeToLiveEvents"}"#
        );
    }
}
