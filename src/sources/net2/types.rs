//! Net2 wire types, exactly as the Local API sends them (field names and casing matter).
//! Parsing is tolerant: device input never panics, unknown fields are ignored, and the user
//! list deserializes into a type that has no room for PINs, phone numbers or custom fields.

use crate::directory::DirectoryUser;
use crate::error::{Error, ErrorKind, Result};
use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Deserializer};

/// `POST /api/v1/authorization/tokens` success.
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// The same, refused: `{"error":"invalid_grant","error_description":"…"}`; Net2 v7 MFA adds
/// `challengeToken` (never logged).
#[derive(Debug, Deserialize)]
pub struct TokenError {
    pub error: String,
    #[serde(default)]
    pub error_description: Option<String>,
}

/// `GET /api/v1/doors`: `[{"name":"Garage Port - ACU:7242929","id":7242929}]`.
#[derive(Debug, Deserialize)]
pub struct DoorEntry {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
}

/// Flags of `/doors/status` and of SignalR `doorStatusEvents`. Any may be missing:
/// some doors have no `doorContactClosed` at all.
#[derive(Debug, Deserialize, Default, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusFlags {
    #[serde(default)]
    pub door_contact_closed: Option<bool>,
    /// The relay (unlocked), not proof the door moved.
    #[serde(default)]
    pub door_relay_open: Option<bool>,
    #[serde(default)]
    pub alarm_tripped: Option<bool>,
    #[serde(default)]
    pub tamper_contact_closed: Option<bool>,
    #[serde(default)]
    pub intruder_alarm_armed: Option<bool>,
    #[serde(default)]
    pub psu_contact_closed: Option<bool>,
}

/// `GET /api/v1/doors/status` element.
#[derive(Debug, Deserialize)]
pub struct DoorStatusEntry {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: Option<StatusFlags>,
}

/// SignalR `doorStatusEvents` argument.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveDoorStatus {
    pub door_id: u64,
    #[serde(default)]
    pub status: Option<StatusFlags>,
}

/// SignalR `doorEvents` argument: `{"doorId":7242929,"locked":false}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveDoorEvent {
    pub door_id: u64,
    #[serde(default)]
    pub locked: Option<bool>,
}

/// `GET /api/v1/users` element — names and validity dates only. The real answer also carries
/// `pin`, `telephone`, `customFields`…: they are not fields here, so they are dropped while
/// parsing and can never reach logs, MQTT, the database, the directory or REST.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserEntry {
    pub id: i64,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub middle_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    /// `"2013-11-11T00:00:00+01:00"`; anything unreadable counts as absent.
    #[serde(default, deserialize_with = "lenient_time")]
    pub activate_date: Option<(NaiveDateTime, Option<FixedOffset>)>,
    /// `null` (never expires) or a time like `activateDate`.
    #[serde(default, deserialize_with = "lenient_time")]
    pub expiry_date: Option<(NaiveDateTime, Option<FixedOffset>)>,
}

/// A time of the user list, read as leniently as event times; a wrong type or format is
/// `None`, never an error that would lose the whole list.
fn lenient_time<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<(NaiveDateTime, Option<FixedOffset>)>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(v.as_ref()
        .and_then(|v| v.as_str())
        .and_then(super::classify::parse_time))
}

/// Parse a `/api/v1/users` answer. The error says where the JSON broke, never what it held:
/// the payload carries PINs and phone numbers.
pub fn parse_users(text: &str) -> Result<Vec<UserEntry>> {
    serde_json::from_str(text).map_err(|e| {
        Error::new(
            ErrorKind::Protocol,
            format!(
                "Net2 users answer is not the expected JSON ({} bytes; not logged: it holds PINs): line {} column {}",
                text.len(),
                e.line(),
                e.column()
            ),
        )
    })
}

impl UserEntry {
    pub fn display_name(&self) -> Option<String> {
        join_name([&self.first_name, &self.middle_name, &self.last_name])
    }

    /// Within its activate / expiry dates at `now`; `None` when Net2 gave neither. A time
    /// without an offset is read in the server's zone (`server`).
    pub fn active(&self, now: DateTime<Utc>, server: FixedOffset) -> Option<bool> {
        let at = |(t, off): (NaiveDateTime, Option<FixedOffset>)| {
            off.unwrap_or(server)
                .from_local_datetime(&t)
                .single()
                .map(|t| t.with_timezone(&Utc))
        };
        let from = self.activate_date.and_then(at);
        let until = self.expiry_date.and_then(at);
        if from.is_none() && until.is_none() {
            return None;
        }
        Some(from.is_none_or(|f| f <= now) && until.is_none_or(|u| now < u))
    }

    /// Its directory entry: id, name, active — nothing else.
    pub fn directory_user(&self, now: DateTime<Utc>, server: FixedOffset) -> DirectoryUser {
        DirectoryUser {
            id: self.id,
            name: self.display_name(),
            active: self.active(now, server),
        }
    }
}

/// "First Middle Last" from optional parts; `None` when all are empty.
pub fn join_name(parts: [&Option<String>; 3]) -> Option<String> {
    let s = parts
        .iter()
        .filter_map(|p| p.as_deref())
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    (!s.is_empty()).then_some(s)
}

/// Answer to every door command: `{"commandName":…,"output":{"status":"FireAndForget","errors":null}}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandResponse {
    #[serde(default)]
    pub command_name: Option<String>,
    #[serde(default)]
    pub output: Option<CommandOutput>,
}

#[derive(Debug, Deserialize)]
pub struct CommandOutput {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub errors: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::Directory;

    /// A user list as Net2 sends it: PINs, phone numbers, cards, emails and custom fields in
    /// clear text (invented people).
    const USERS: &str = r#"[
      {"id": 8, "firstName": "Mette", "middleName": "Kragh", "lastName": "Holm", "expiryDate": null,
       "activateDate": "2013-11-11T00:00:00+01:00", "pin": "4821", "telephone": "40112233",
       "extension": "5501", "fax": "40112299", "email": "mette@example.invalid",
       "cardNumber": 77001908, "tokens": [{"tokenValue": "77001908", "tokenType": 0}],
       "isAntiPassbackUser": true, "isAlarmUser": true, "isLockdownExempt": false, "hasImage": true,
       "customFields": [{"id": 1, "name": "Bil", "value": "AB 12 345"}],
       "doorAccessPermissionSet": {"accessLevels": [1], "individualPermissions": []}},
      {"id": 12, "firstName": "Jonas", "middleName": null, "lastName": "Bak",
       "expiryDate": "2026-01-01T00:00:00+01:00", "activateDate": "2021-03-01T00:00:00+01:00",
       "pin": "0917", "telephone": "51987654", "customFields": []},
      {"id": 19, "firstName": "Signe", "lastName": "Vestergaard", "activateDate": "2030-08-15T00:00:00",
       "expiryDate": 17, "pin": "7730", "telephone": "+45 22 44 66 88"},
      {"id": 23, "firstName": " ", "lastName": null, "pin": "3141"}
    ]"#;

    const SECRETS: [&str; 11] = [
        "4821",
        "40112233",
        "5501",
        "40112299",
        "mette@example.invalid",
        "77001908",
        "AB 12 345",
        "0917",
        "51987654",
        "7730",
        "3141",
    ];

    fn directory() -> Directory {
        let now = DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let server = FixedOffset::east_opt(3600).unwrap();
        let users = parse_users(USERS).unwrap();
        let d = Directory::new();
        d.set_users(
            users
                .iter()
                .map(|u| u.directory_user(now, server))
                .collect(),
            now,
        );
        d
    }

    #[test]
    fn users_keep_names_and_validity_only() {
        let d = directory();
        let users = d.users();
        let names: Vec<_> = users.iter().map(|u| u.name.as_deref()).collect();
        assert_eq!(
            names,
            [
                Some("Mette Kragh Holm"),
                Some("Jonas Bak"),
                Some("Signe Vestergaard"),
                None
            ]
        );
        let active: Vec<_> = users.iter().map(|u| u.active).collect();
        // Active since 2013; expired in January; not active before 2030 (a time without an
        // offset, and an expiry that is no time at all); no dates at all.
        assert_eq!(active, [Some(true), Some(false), Some(false), None]);
    }

    #[test]
    fn pins_phones_cards_emails_and_custom_fields_never_reach_the_directory() {
        let d = directory();
        let parsed = format!("{:?}", parse_users(USERS).unwrap());
        let debug = format!("{d:?} {:?} {:?}", d.snapshot(), d.users());
        let json = serde_json::to_string(&d).unwrap();
        let json_snapshot = serde_json::to_string(&d.snapshot()).unwrap();
        assert!(json.contains("Mette Kragh Holm"), "{json}");
        assert!(debug.contains("Mette Kragh Holm"), "{debug}");
        for out in [&parsed, &debug, &json, &json_snapshot] {
            for secret in SECRETS {
                assert!(!out.contains(secret), "{secret:?} leaked into {out}");
            }
            for field in [
                "pin",
                "telephone",
                "phone",
                "email",
                "card",
                "custom",
                "fax",
            ] {
                assert!(
                    !out.to_ascii_lowercase().contains(field),
                    "a {field} field in {out}"
                );
            }
        }
    }

    #[test]
    fn a_broken_users_answer_says_where_not_what() {
        let e = parse_users(r#"[{"id": "8x", "pin": "4821", "firstName": "Mette"}"#).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("line 1"), "{msg}");
        assert!(
            !msg.contains("4821") && !msg.contains("8x") && !msg.contains("Mette"),
            "{msg}"
        );
    }
}
