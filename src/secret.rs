//! A string that never prints itself.

use serde::{Deserialize, Deserializer};
use std::fmt;

/// A secret sent in JSON (a password, a door code): a string, or a number as its digits —
/// Home Assistant's YAML turns `code: 482193` into one. `None` for any other type, so the
/// caller refuses it with a message of its own: serde's would quote the value
/// (``invalid type: integer `482193` ``) into logs, MQTT results and REST answers.
pub(crate) fn json_text(v: serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A secret value (password, token, shared code). `Debug` and `Display` print `***`, and it is
/// not `Serialize`, so it cannot leak into logs, MQTT or the database by accident.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The only way to read the value; grep for it to audit every use.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// `scheme://user:password@host/…` with the user info replaced by `***@`, for messages about
/// a URL the user wrote (a password with an unencoded `/` or `#` is exactly what fails to
/// parse, so the raw text must never be printed).
pub fn redact_url(s: &str) -> String {
    let Some(start) = s.find("://").map(|i| i + 3) else {
        return s.to_string();
    };
    let rest = &s[start..];
    // The user info ends at the last `@` before the path (a password may hold `@` or `/`).
    match rest.rfind('@') {
        Some(at) => format!("{}***@{}", &s[..start], &rest[at + 1..]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_user_info() {
        assert_eq!(
            redact_url("rtsp://admin:S3cr/t@cam:554/Streaming/Channels/101"),
            "rtsp://***@cam:554/Streaming/Channels/101"
        );
        assert_eq!(redact_url("rtsp://cam/x"), "rtsp://cam/x");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?} {:?}", Some(&s)), "*** *** Some(***)");
        assert_eq!(s.expose(), "hunter2");
    }
}
