//! Net2 wire types, exactly as the Local API sends them (field names and casing matter).
//! Parsing is tolerant: device input never panics, unknown fields are ignored, and the user
//! list deserializes into a type that has no room for PINs, phone numbers or custom fields.

use serde::Deserialize;

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

/// `GET /api/v1/users` element — names only. The real answer also carries `pin`,
/// `telephone`, `customFields`…: they are not fields here, so they are dropped while parsing
/// and can never reach logs, MQTT, the database or REST.
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
}

impl UserEntry {
    pub fn display_name(&self) -> Option<String> {
        join_name([&self.first_name, &self.middle_name, &self.last_name])
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
