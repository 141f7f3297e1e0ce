//! The topic tree: exactly one function builds each topic. Documented in the README table.

use crate::model::DoorId;

#[derive(Debug, Clone)]
pub struct Topics {
    pub base: String,
    pub prefix: String,
}

impl Topics {
    /// `online` / `offline`, retained; `offline` is also the last will.
    pub fn bridge_state(&self) -> String {
        format!("{}/bridge/state", self.base)
    }
    /// Version, uptime, sources and config summary, retained JSON.
    pub fn bridge_info(&self) -> String {
        format!("{}/bridge/info", self.base)
    }
    /// `online` / `offline`, retained: the Net2 server is reachable.
    pub fn source_availability(&self, source: &str) -> String {
        format!("{}/{source}/availability", self.base)
    }
    /// Source health JSON, retained.
    pub fn source_state(&self, source: &str) -> String {
        format!("{}/{source}/state", self.base)
    }
    /// Events without a door (backup, server-level), not retained.
    pub fn source_event(&self, source: &str) -> String {
        format!("{}/{source}/event", self.base)
    }
    /// Every event topic (`…/net2/event`, `…/door/<id>/event`, `…/camera/<id>/event`).
    pub fn event_filters(&self) -> Vec<String> {
        vec![
            format!("{}/+/event", self.base),
            format!("{}/+/+/event", self.base),
        ]
    }
    /// Replay command: publish the stored events from a `seq` on again.
    pub fn replay_set(&self) -> String {
        format!("{}/bridge/replay/set", self.base)
    }
    /// Lockdown command (`ON` / `OFF`).
    pub fn lockdown_set(&self) -> String {
        format!("{}/net2/lockdown/set", self.base)
    }
    /// A hardware access point's state JSON, retained.
    pub fn hardware_state(&self, point: &str) -> String {
        format!("{}/hardware/{point}/state", self.base)
    }
    /// `online` / `offline`, retained: the hardware point's heartbeats are recent.
    pub fn hardware_availability(&self, point: &str) -> String {
        format!("{}/hardware/{point}/availability", self.base)
    }
    /// The emergency mode (seed 001 emergency operations), retained JSON:
    /// `{"mode":"lockdown","expires_at":…,…}`.
    pub fn emergency(&self) -> String {
        format!("{}/emergency", self.base)
    }
    /// A QR reader's scans (raw text of the code), a command topic: retained ones are refused.
    pub fn qr_scan_filter(&self) -> String {
        format!("{}/qr/+/scan", self.base)
    }
    /// The reader id of a `…/qr/<reader>/scan` topic.
    pub fn parse_qr_scan(&self, topic: &str) -> Option<String> {
        let rest = topic.strip_prefix(&format!("{}/qr/", self.base))?;
        let reader = rest.strip_suffix("/scan")?;
        (!reader.is_empty() && !reader.contains('/')).then(|| reader.to_string())
    }
    /// A QR scan's outcome for the reader's display (and HA's event entity), not retained.
    pub fn qr_result(&self, reader: &str) -> String {
        format!("{}/qr/{reader}/result", self.base)
    }
    /// Wi-Fi presence of one GATE user (`<key>`: the RADIUS user name, lower case, with
    /// everything but letters and digits as `_`), retained JSON
    /// `{"connected":true,"sessions":1,"access_points":[…],"locations":[…],"since":…}`.
    pub fn wifi_user(&self, key: &str) -> String {
        format!("{}/wifi/user/{key}/state", self.base)
    }
    /// Devices on the Wi-Fi at one GATE location, retained JSON `{"devices":n,"users":n,…}`.
    pub fn wifi_location(&self, key: &str) -> String {
        format!("{}/wifi/location/{key}/state", self.base)
    }
    /// Devices on one GATE access point, retained JSON `{"devices":n,"users":n,…}`.
    pub fn wifi_access_point(&self, key: &str) -> String {
        format!("{}/wifi/ap/{key}/state", self.base)
    }
    /// Wi-Fi portal events (logins, logouts, timeouts), not retained.
    pub fn wifi_event(&self) -> String {
        format!("{}/wifi/event", self.base)
    }
    /// Door state JSON, retained.
    pub fn door_state(&self, door: DoorId) -> String {
        format!("{}/door/{door}/state", self.base)
    }
    /// Door events, not retained.
    pub fn door_event(&self, door: DoorId) -> String {
        format!("{}/door/{door}/event", self.base)
    }
    /// Door commands.
    pub fn door_set(&self, door: DoorId) -> String {
        format!("{}/door/{door}/set", self.base)
    }
    pub fn door_set_filter(&self) -> String {
        format!("{}/door/+/set", self.base)
    }
    /// Last access of a user, retained.
    pub fn presence(&self, user: i64) -> String {
        format!("{}/user/{user}/presence", self.base)
    }
    /// A person's presence, retained `home` / `not_home` (the payloads Home Assistant's
    /// `device_tracker` expects; `not_home` too while there is no evidence yet).
    pub fn person_state(&self, person: &str) -> String {
        format!("{}/person/{person}/state", self.base)
    }
    /// A person's evidence (since, last door and direction, Wi-Fi sessions, QR), retained JSON.
    pub fn person_attributes(&self, person: &str) -> String {
        format!("{}/person/{person}/attributes", self.base)
    }
    /// Who is on a site: `{"count":…,"people":[names],"ids":[…]}`, retained.
    pub fn site_people(&self, site: &str) -> String {
        format!("{}/site/{site}/people", self.base)
    }
    /// A camera alarm state, retained `ON` / `OFF`:
    /// `<base>/camera/<device>/<ch1|io2|device>/alarm/<event type>[/<target>]`. Alarm states
    /// have their own level, so `…/ch1/alarm/+` takes every alarm of a channel and nothing
    /// else (`…/ch1/snapshot` carries JPEGs).
    pub fn camera_alarm(
        &self,
        device: &str,
        channel: Option<u32>,
        io_port: Option<u32>,
        event_type: &str,
        target: Option<&str>,
    ) -> String {
        let place = match (channel, io_port) {
            (Some(c), _) => format!("ch{c}"),
            (None, Some(i)) => format!("io{i}"),
            (None, None) => "device".to_string(),
        };
        match target {
            Some(t) => format!(
                "{}/camera/{device}/{place}/alarm/{event_type}/{t}",
                self.base
            ),
            None => format!("{}/camera/{device}/{place}/alarm/{event_type}", self.base),
        }
    }
    /// What the device says about itself, retained JSON.
    /// Every topic of a camera starts with this.
    pub fn camera_prefix(&self, device: &str) -> String {
        format!("{}/camera/{device}/", self.base)
    }
    pub fn camera_info(&self, device: &str) -> String {
        format!("{}/camera/{device}/info", self.base)
    }
    /// Command progress, not retained.
    pub fn command_result(&self) -> String {
        format!("{}/command/result", self.base)
    }
    /// Home Assistant's (and openHAB's) birth / last will.
    pub fn ha_status(&self) -> String {
        format!("{}/status", self.prefix)
    }
    /// Per-component discovery config.
    pub fn discovery(&self, component: &str, node: &str, object: &str) -> String {
        format!("{}/{component}/{node}/{object}/config", self.prefix)
    }
    /// Device-based discovery config.
    pub fn discovery_device(&self, device: &str) -> String {
        format!("{}/device/{device}/config", self.prefix)
    }

    /// Camera commands: `<base>/camera/<id>/snapshot/set` (channel 1, or the payload's) and
    /// `<base>/camera/<id>/ch<N>/snapshot/set`; the same with `stream/set`.
    pub fn camera_set_filters(&self) -> Vec<String> {
        let b = &self.base;
        vec![
            format!("{b}/camera/+/snapshot/set"),
            format!("{b}/camera/+/+/snapshot/set"),
            format!("{b}/camera/+/stream/set"),
            format!("{b}/camera/+/+/stream/set"),
        ]
    }

    /// `(camera, channel from the topic, is_stream)` of a camera command topic.
    pub fn parse_camera_set(&self, topic: &str) -> Option<(String, Option<u32>, bool)> {
        let rest = topic.strip_prefix(&self.base)?.strip_prefix("/camera/")?;
        let (rest, stream) = if let Some(r) = rest.strip_suffix("/snapshot/set") {
            (r, false)
        } else {
            (rest.strip_suffix("/stream/set")?, true)
        };
        match rest.split_once('/') {
            None => Some((rest.to_string(), None, stream)),
            Some((cam, ch)) => {
                let n = ch.strip_prefix("ch")?.parse().ok()?;
                Some((cam.to_string(), Some(n), stream))
            }
        }
    }

    /// The latest picture of a channel: raw JPEG bytes (HA `camera`, openHAB Image).
    pub fn camera_snapshot(&self, camera: &str, channel: u32) -> String {
        format!("{}/camera/{camera}/ch{channel}/snapshot", self.base)
    }

    /// JSON about the latest picture (id, time, source, URL).
    pub fn camera_snapshot_meta(&self, camera: &str, channel: u32) -> String {
        format!("{}/camera/{camera}/ch{channel}/snapshot/meta", self.base)
    }

    /// Live stream state, retained: `{"state":"ON","hls_url":…,"player_url":…}`.
    pub fn camera_stream(&self, camera: &str, channel: u32) -> String {
        format!("{}/camera/{camera}/ch{channel}/stream", self.base)
    }

    /// The door id of a `…/door/<id>/set` topic.
    pub fn parse_door_set(&self, topic: &str) -> Option<Result<DoorId, String>> {
        let rest = topic.strip_prefix(&self.base)?.strip_prefix("/door/")?;
        let id = rest.strip_suffix("/set")?;
        Some(id.parse().map_err(|_| id.to_string()))
    }
}
