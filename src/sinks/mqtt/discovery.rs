//! Home Assistant MQTT discovery (openHAB's MQTT binding reads the same configs).
//!
//! One serde struct per component with a flattened common base; [`configs`] lists every entity
//! for the current doors and users, and [`render`] turns them into (topic, payload) pairs for
//! per-component discovery (default) or device-based discovery (`cmps`). Facts from a real
//! HA 2024.1 (protocols.md §4): unknown keys inside `device` reject the entity (so no
//! `serial_number`), `default_entity_id` is ignored there while `object_id` works (send both),
//! `event` entities need `event_types` and ignore retained messages.

use super::topics::Topics;
use crate::model::{DoorId, DoorState, Presence};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Who this gatehouse is in Home Assistant: every unique_id, entity id (`object_id` /
/// `default_entity_id`), device identifier and the discovery node id start with its prefix, so
/// two gatehouses on one broker (many sites, Mosquitto bridges) never share one. HA keeps the
/// first entity of a unique_id and logs the second as "already exists - ignoring"; two
/// daemons on one discovery topic overwrite each other, and each one's start-up clear of its
/// stale configs would delete the other's entities (with the user's names and areas).
/// The instance `gatehouse` (the default base topic) is the prefix `gatehouse`: the ids every
/// install had before many sites, kept byte for byte; any other instance `x` is
/// `gatehouse_x`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    instance: String,
    prefix: String,
}

impl Identity {
    /// From `mqtt.instance` (or the one derived from the base topic).
    pub fn new(instance: &str) -> Identity {
        let prefix = if instance == crate::config::DEFAULT_INSTANCE {
            instance.to_string()
        } else {
            format!("gatehouse_{instance}")
        };
        Identity {
            instance: instance.to_string(),
            prefix,
        }
    }

    /// The instance it was made from (`gatehouse`, `site_b`).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// A site-wide device's name (the Net2 server, People, GATE): as given for the default
    /// instance, else followed by the instance, so two sites on one Home Assistant do not
    /// show two devices of the same name (and entity ids suffixed `_2`).
    pub fn device_name(&self, name: &str) -> String {
        if self.instance == crate::config::DEFAULT_INSTANCE {
            name.to_string()
        } else {
            format!("{name} ({})", self.instance)
        }
    }

    /// The discovery node id (`homeassistant/<component>/<node>/<object>/config`).
    pub fn node(&self) -> &str {
        &self.prefix
    }

    /// A unique_id, object_id or device identifier: `<prefix>_<key>`.
    pub fn id(&self, key: &str) -> String {
        format!("{}_{key}", self.prefix)
    }

    /// The Net2 server device (what the doors are `via`).
    fn server(&self) -> String {
        self.id("net2")
    }
}

impl Default for Identity {
    fn default() -> Identity {
        Identity::new(crate::config::DEFAULT_INSTANCE)
    }
}

/// Event types the door `event` entity announces.
pub const DOOR_EVENT_TYPES: &[&str] = &[
    "access_granted",
    "access_denied",
    "door_opened",
    "door_closed",
    "door_relocked",
    "door_held_open",
    "door_forced",
    "tamper",
    "tamper_restored",
    "door_bell",
    "open_requested",
    "acu_offline",
    "acu_online",
    "battery_low",
    "battery_critical",
    "mains_failed",
    "mains_restored",
    "other",
    "unparsed",
    "qr_granted",
    "qr_denied",
];

/// Event types of a QR reader's `event` entity.
pub const QR_EVENT_TYPES: &[&str] = &["qr_granted", "qr_denied"];

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Device {
    pub identifiers: Vec<String>,
    pub name: String,
    pub manufacturer: String,
    pub model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via_device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sw_version: Option<String>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Origin {
    pub name: &'static str,
    pub sw_version: &'static str,
}

/// `support_url` is left out until the project has a public home (an unknown key in `o`
/// drops the message in HA 2024.1, so only the keys every release knows).
pub(crate) const ORIGIN: Origin = Origin {
    name: "gatehouse",
    sw_version: env!("CARGO_PKG_VERSION"),
};

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Availability {
    pub topic: String,
}

/// Keys every component shares.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Base {
    pub name: Option<String>,
    pub unique_id: String,
    /// Deprecated in HA 2025.10 but the only one HA 2024.1 reads; sent with `default_entity_id`.
    pub object_id: String,
    pub default_entity_id: String,
    pub availability: Vec<Availability>,
    pub availability_mode: &'static str,
    pub device: Device,
    #[serde(rename = "o")]
    pub origin: Origin,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_category: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icon: Option<&'static str>,
    /// `Some(false)`: created disabled (rare or noisy; one click in Home Assistant enables it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled_by_default: Option<bool>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct BinarySensor {
    #[serde(flatten)]
    pub base: Base,
    pub state_topic: String,
    pub value_template: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_class: Option<&'static str>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Sensor {
    #[serde(flatten)]
    pub base: Base,
    pub state_topic: String,
    pub value_template: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_attributes_topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_attributes_template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_of_measurement: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_class: Option<&'static str>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Lock {
    #[serde(flatten)]
    pub base: Base,
    pub command_topic: String,
    pub state_topic: String,
    pub value_template: String,
    pub payload_lock: &'static str,
    pub payload_unlock: &'static str,
    pub payload_open: &'static str,
    pub state_locked: &'static str,
    pub state_unlocked: &'static str,
    pub optimistic: bool,
    pub retain: bool,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Button {
    #[serde(flatten)]
    pub base: Base,
    pub command_topic: String,
    pub payload_press: &'static str,
    pub retain: bool,
}

/// HA `camera`: the raw JPEG bytes on `topic` (openHAB reads the same as an Image).
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct CameraEntity {
    #[serde(flatten)]
    pub base: Base,
    pub topic: String,
    pub json_attributes_topic: String,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct EventEntity {
    #[serde(flatten)]
    pub base: Base,
    pub state_topic: String,
    pub event_types: Vec<String>,
}

/// HA `device_tracker` (MQTT, `source_type: router`): what a `person` in Home Assistant
/// attaches. HA 2024.1 knows every key here.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct DeviceTracker {
    #[serde(flatten)]
    pub base: Base,
    pub state_topic: String,
    pub payload_home: &'static str,
    pub payload_not_home: &'static str,
    pub source_type: &'static str,
    pub json_attributes_topic: String,
}

/// One entity: its HA component and its config.
#[derive(Clone, Debug, PartialEq)]
pub struct Entity {
    pub component: &'static str,
    pub object_id: String,
    /// Device id this entity belongs to (groups device-based discovery).
    pub device_id: String,
    pub config: Value,
}

/// What discovery is built from.
pub struct Context<'a> {
    pub topics: &'a Topics,
    pub identity: &'a Identity,
    /// Configured doors with their display names (none without Net2).
    pub doors: BTreeMap<DoorId, String>,
    /// Doors Net2 reports without a door contact (no contact entity).
    pub no_contact: std::collections::BTreeSet<DoorId>,
    /// Doors watched by a camera (`doors.<id>.camera`): door → camera id.
    pub door_cameras: BTreeMap<DoorId, String>,
    pub presence: Vec<&'a Presence>,
    /// Configured cameras, with what each device said about itself once known.
    pub cameras: Vec<CameraCtx>,
    /// `sources.net2` is configured (else no Net2 server device, no door).
    pub net2: bool,
    /// Alarm keys seen so far (entities appear with the first alarm of each kind).
    pub alarms: Vec<&'a crate::model::CameraAlarm>,
    /// Registered hardware access points (REST `points/register`).
    pub hardware: Vec<&'a crate::model::HardwarePoint>,
    /// Configured people (`people:`): (id, display name).
    pub people: Vec<(String, String)>,
    /// Sites with at least one configured person: (id, display name).
    pub people_sites: Vec<(String, String)>,
    /// Configured Apptive QR readers (`apptive.readers`).
    pub qr_readers: Vec<QrReaderCtx>,
}

/// A configured QR reader for discovery.
pub struct QrReaderCtx {
    pub id: String,
    pub name: Option<String>,
    pub door: DoorId,
}

/// A configured camera for discovery.
pub struct CameraCtx {
    pub id: String,
    /// `name` from its config.
    pub name: Option<String>,
    /// A Hikvision device (ISAPI), not a plain RTSP camera.
    pub isapi: bool,
    pub info: Option<crate::model::CameraInfo>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct AlarmSensor {
    #[serde(flatten)]
    pub base: Base,
    pub state_topic: String,
    pub payload_on: &'static str,
    pub payload_off: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_class: Option<&'static str>,
    /// Safety net only: gatehouse clears alarms itself (hold-off); HA turns a stuck ON off
    /// after an hour if gatehouse went away without its last will firing.
    pub off_delay: u32,
}

fn entity<T: Serialize>(
    component: &'static str,
    object_id: String,
    device_id: &str,
    c: &T,
) -> Entity {
    Entity {
        component,
        object_id,
        device_id: device_id.to_string(),
        config: serde_json::to_value(c).expect("discovery structs serialize"),
    }
}

fn tri(field: &str) -> String {
    format!(
        "{{% if value_json.{field} is none %}}None{{% elif value_json.{field} %}}ON{{% else %}}OFF{{% endif %}}"
    )
}

/// Every entity for the current doors and users.
pub fn configs(ctx: &Context) -> Vec<Entity> {
    let t = ctx.topics;
    let ident = ctx.identity;
    let server_id = ident.server();
    let server = Device {
        identifiers: vec![server_id.clone()],
        name: ident.device_name("Net2 server"),
        manufacturer: "Paxton".into(),
        model: "Net2 (via gatehouse)".into(),
        via_device: None,
        sw_version: Some(env!("CARGO_PKG_VERSION").into()),
    };
    let bridge_only = vec![Availability {
        topic: t.bridge_state(),
    }];
    let with_source = vec![
        Availability {
            topic: t.bridge_state(),
        },
        Availability {
            topic: t.source_availability("net2"),
        },
    ];
    let base = |object_id: &str,
                name: Option<&str>,
                device: &Device,
                avail: &Vec<Availability>,
                cat: Option<&'static str>| Base {
        name: name.map(str::to_owned),
        unique_id: ident.id(object_id),
        object_id: ident.id(object_id),
        default_entity_id: String::new(),
        availability: avail.clone(),
        availability_mode: "all",
        device: device.clone(),
        origin: ORIGIN,
        entity_category: cat,
        icon: None,
        enabled_by_default: None,
    };
    let with_domain = |mut b: Base, domain: &str| {
        b.default_entity_id = format!("{domain}.{}", b.object_id);
        b
    };
    let mut out = Vec::new();
    // The Net2 server device only when Net2 is configured (no ghost device for a camera-only
    // setup).
    if ctx.net2 {
        out.push(entity(
            "binary_sensor",
            "net2_connectivity".into(),
            &server_id,
            &BinarySensor {
                base: with_domain(
                    base(
                        "net2_connectivity",
                        Some("Connection"),
                        &server,
                        &bridge_only,
                        Some("diagnostic"),
                    ),
                    "binary_sensor",
                ),
                state_topic: t.source_state("net2"),
                value_template: "{{ 'ON' if value_json.online else 'OFF' }}".into(),
                device_class: Some("connectivity"),
            },
        ));
        // Lockdown runs Net2's pre-configured lockdown rules: two buttons on the server device.
        for (key, label, payload) in [
            ("lockdown_on", "Lockdown on", "ON"),
            ("lockdown_off", "Lockdown off", "OFF"),
        ] {
            let oid = format!("net2_{key}");
            out.push(entity(
                "button",
                oid.clone(),
                &server_id,
                &Button {
                    base: Base {
                        icon: Some("mdi:shield-lock"),
                        ..with_domain(
                            base(&oid, Some(label), &server, &with_source, None),
                            "button",
                        )
                    },
                    command_topic: t.lockdown_set(),
                    payload_press: payload,
                    retain: false,
                },
            ));
        }
    }
    // The emergency mode (REST emergency operations): `normal`, `lockdown` or `unlock`, with
    // who, why and until when as attributes.
    if ctx.net2 {
        let oid = "net2_emergency".to_string();
        out.push(entity(
            "sensor",
            oid.clone(),
            &server_id,
            &Sensor {
                base: Base {
                    icon: Some("mdi:alarm-light"),
                    ..with_domain(
                        base(&oid, Some("Emergency mode"), &server, &bridge_only, None),
                        "sensor",
                    )
                },
                state_topic: t.emergency(),
                value_template: "{{ value_json.mode }}".into(),
                json_attributes_topic: Some(t.emergency()),
                json_attributes_template: None,
                unit_of_measurement: None,
                device_class: None,
            },
        ));
    }
    for (id, name) in &ctx.doors {
        let dev_id = ident.id(&format!("net2_door_{id}"));
        let dev = Device {
            identifiers: vec![dev_id.clone()],
            name: name.clone(),
            manufacturer: "Paxton".into(),
            model: "Net2 door".into(),
            via_device: Some(server_id.clone()),
            sw_version: None,
        };
        let state = t.door_state(*id);
        let bs = |key: &str,
                  label: Option<&str>,
                  field: &str,
                  class: Option<&'static str>,
                  cat: Option<&'static str>| {
            let oid = format!("door_{id}_{key}");
            entity(
                "binary_sensor",
                oid.clone(),
                &dev_id,
                &BinarySensor {
                    base: with_domain(base(&oid, label, &dev, &with_source, cat), "binary_sensor"),
                    state_topic: state.clone(),
                    value_template: tri(field),
                    device_class: class,
                },
            )
        };
        // The door model: the door's contact (`name: null`: it takes the door's own name; on =
        // open; only when the door has one), and one `lock` entity for the relay (state and
        // commands) — no second "lock" binary sensor beside it.
        if !ctx.no_contact.contains(id) {
            out.push(bs("contact", None, "open", Some("door"), None));
        }
        out.push(bs(
            "held_open",
            Some("Held open"),
            "held_open",
            Some("problem"),
            None,
        ));
        out.push(bs(
            "forced",
            Some("Forced"),
            "forced",
            Some("problem"),
            None,
        ));
        out.push(bs("tamper", Some("Tamper"), "tamper", Some("tamper"), None));
        out.push(bs(
            "acu",
            Some("ACU"),
            "acu_online",
            Some("connectivity"),
            Some("diagnostic"),
        ));
        out.push(bs(
            "battery",
            Some("Battery"),
            "battery_low",
            Some("battery"),
            Some("diagnostic"),
        ));
        out.push(bs(
            "mains",
            Some("Mains"),
            "mains_failed",
            Some("problem"),
            Some("diagnostic"),
        ));
        let oid = format!("door_{id}_lock");
        out.push(entity(
            "lock",
            oid.clone(),
            &dev_id,
            &Lock {
                base: with_domain(base(&oid, Some("Lock"), &dev, &with_source, None), "lock"),
                command_topic: t.door_set(*id),
                state_topic: state.clone(),
                value_template: "{% if value_json.unlocked %}UNLOCKED{% else %}LOCKED{% endif %}"
                    .into(),
                payload_lock: "LOCK",
                payload_unlock: "UNLOCK",
                payload_open: "OPEN",
                state_locked: "LOCKED",
                state_unlocked: "UNLOCKED",
                optimistic: false,
                retain: false,
            },
        ));
        let oid = format!("door_{id}_open");
        out.push(entity(
            "button",
            oid.clone(),
            &dev_id,
            &Button {
                base: with_domain(base(&oid, Some("Open"), &dev, &with_source, None), "button"),
                command_topic: t.door_set(*id),
                payload_press: "OPEN",
                retain: false,
            },
        ));
        let oid = format!("door_{id}_events");
        out.push(entity(
            "event",
            oid.clone(),
            &dev_id,
            &EventEntity {
                base: with_domain(
                    base(&oid, Some("Events"), &dev, &with_source, None),
                    "event",
                ),
                state_topic: t.door_event(*id),
                event_types: DOOR_EVENT_TYPES.iter().map(|s| s.to_string()).collect(),
            },
        ));
        let oid = format!("door_{id}_last_user");
        out.push(entity(
            "sensor",
            oid.clone(),
            &dev_id,
            &Sensor {
                base: with_domain(
                    base(&oid, Some("Last user"), &dev, &with_source, None),
                    "sensor",
                ),
                state_topic: state.clone(),
                value_template: "{{ value_json.last_user.name if value_json.last_user else '' }}"
                    .into(),
                json_attributes_topic: None,
                json_attributes_template: None,
                unit_of_measurement: None,
                device_class: None,
            },
        ));
        // The camera that watches the door: its `device/channel`, with what the camera said
        // about itself (model, serial, firmware) as attributes.
        if let Some(cam) = ctx.door_cameras.get(id) {
            let oid = format!("door_{id}_camera");
            out.push(entity(
                "sensor",
                oid.clone(),
                &dev_id,
                &Sensor {
                    base: Base {
                        icon: Some("mdi:cctv"),
                        ..with_domain(
                            base(&oid, Some("Camera"), &dev, &with_source, Some("diagnostic")),
                            "sensor",
                        )
                    },
                    state_topic: state.clone(),
                    value_template: "{{ value_json.camera.device ~ '/' ~ value_json.camera.channel if value_json.camera else '' }}".into(),
                    json_attributes_topic: Some(t.camera_info(cam)),
                    json_attributes_template: None,
                    unit_of_measurement: None,
                    device_class: None,
                },
            ));
        }
    }
    // Cameras and NVRs: a device each (connectivity, disks, device-level alarms and inputs,
    // the alarm event entity); the channels of a multi-channel device (an NVR) are devices of
    // their own, named as the device names them, via the NVR. A single camera's channel lives
    // on the camera, which takes the channel's name.
    for cam in &ctx.cameras {
        let (id, info) = (&cam.id, cam.info.as_ref());
        let dev_id = ident.id(&format!("camera_{id}"));
        let mut identifiers = vec![dev_id.clone()];
        identifiers.extend(info.and_then(|i| i.serial.clone()));
        let channels: Vec<(u32, Option<String>)> = match info {
            Some(i) if !i.channels.is_empty() => {
                i.channels.iter().map(|c| (c.id, c.name.clone())).collect()
            }
            _ => vec![(1, None)],
        };
        let multi = channels.len() > 1
            || info
                .and_then(|i| i.device_type.as_deref())
                .is_some_and(|t| t.eq_ignore_ascii_case("NVR") || t.eq_ignore_ascii_case("DVR"));
        let model = info
            .and_then(|i| i.model.clone())
            .unwrap_or_else(|| if cam.isapi { "camera" } else { "RTSP camera" }.into());
        let maker = if cam.isapi { "Hikvision" } else { "RTSP" };
        let device_name = cam
            .name
            .clone()
            .or_else(|| (!multi).then(|| channels[0].1.clone()).flatten())
            .or_else(|| info.and_then(|i| i.name.clone()))
            .unwrap_or_else(|| id.clone());
        let dev = Device {
            identifiers,
            name: device_name,
            manufacturer: maker.into(),
            model: model.clone(),
            via_device: None,
            sw_version: info.and_then(|i| i.firmware.clone()),
        };
        let channel_dev = |ch: u32| -> (String, Device) {
            if !multi {
                return (dev_id.clone(), dev.clone());
            }
            let cid = format!("{dev_id}_ch{ch}");
            let name = channels
                .iter()
                .find(|(c, _)| *c == ch)
                .and_then(|(_, n)| n.clone())
                .unwrap_or_else(|| format!("Channel {ch}"));
            (
                cid.clone(),
                Device {
                    identifiers: vec![cid],
                    name,
                    manufacturer: maker.into(),
                    model: format!("{model} channel {ch}"),
                    via_device: Some(dev_id.clone()),
                    sw_version: None,
                },
            )
        };
        let source = format!("camera/{id}");
        let avail = vec![Availability {
            topic: t.bridge_state(),
        }];
        let oid = format!("camera_{id}_connectivity");
        out.push(entity(
            "binary_sensor",
            oid.clone(),
            &dev_id,
            &BinarySensor {
                base: with_domain(
                    base(&oid, Some("Connection"), &dev, &avail, Some("diagnostic")),
                    "binary_sensor",
                ),
                state_topic: t.source_state(&source),
                value_template: "{{ 'ON' if value_json.online else 'OFF' }}".into(),
                device_class: Some("connectivity"),
            },
        ));
        let with_cam = vec![
            Availability {
                topic: t.bridge_state(),
            },
            Availability {
                topic: t.source_availability(&source),
            },
        ];
        // Disks: a problem sensor and free space each (from the info document).
        for d in info.iter().flat_map(|i| i.disks.iter()) {
            let sel = format!(
                "(value_json.disks | selectattr('id', 'eq', {}) | list)",
                d.id
            );
            let oid = format!("camera_{id}_disk{}", d.id);
            out.push(entity(
                "binary_sensor",
                oid.clone(),
                &dev_id,
                &BinarySensor {
                    base: with_domain(base(&oid, Some(&format!("Disk {}", d.id)), &dev, &with_cam, Some("diagnostic")), "binary_sensor"),
                    state_topic: t.camera_info(id),
                    value_template: format!("{{% set d = {sel} %}}{{{{ 'ON' if d and d[0].status != 'ok' else 'OFF' }}}}"),
                    device_class: Some("problem"),
                },
            ));
            let oid = format!("camera_{id}_disk{}_free", d.id);
            out.push(entity(
                "sensor",
                oid.clone(),
                &dev_id,
                &Sensor {
                    base: with_domain(
                        base(
                            &oid,
                            Some(&format!("Disk {} free", d.id)),
                            &dev,
                            &with_cam,
                            Some("diagnostic"),
                        ),
                        "sensor",
                    ),
                    state_topic: t.camera_info(id),
                    value_template: format!(
                        "{{% set d = {sel} %}}{{{{ d[0].free_mb if d else None }}}}"
                    ),
                    json_attributes_topic: None,
                    json_attributes_template: None,
                    unit_of_measurement: Some("MB"),
                    device_class: Some("data_size"),
                },
            ));
        }
        // Per channel: the latest picture (named as its device), and a button that takes one.
        for (ch, _) in &channels {
            let (cdev_id, cdev) = channel_dev(*ch);
            let oid = format!("camera_{id}_ch{ch}");
            out.push(entity(
                "camera",
                oid.clone(),
                &cdev_id,
                &CameraEntity {
                    base: with_domain(base(&oid, None, &cdev, &avail, None), "camera"),
                    topic: t.camera_snapshot(id, *ch),
                    json_attributes_topic: t.camera_snapshot_meta(id, *ch),
                },
            ));
            let oid = format!("camera_{id}_ch{ch}_take_snapshot");
            out.push(entity(
                "button",
                oid.clone(),
                &cdev_id,
                &Button {
                    base: with_domain(
                        base(&oid, Some("Take snapshot"), &cdev, &avail, None),
                        "button",
                    ),
                    command_topic: format!("{}/set", t.camera_snapshot(id, *ch)),
                    payload_press: "PRESS",
                    retain: false,
                },
            ));
        }
        // An event entity for the camera's alarms (with channel and detection target in the
        // payload), over the kinds known for it.
        let mut kinds: Vec<String> = ctx
            .alarms
            .iter()
            .filter(|a| &a.device == id)
            .map(|a| a.event_type.clone())
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        if !kinds.is_empty() {
            let oid = format!("camera_{id}_events");
            out.push(entity(
                "event",
                oid.clone(),
                &dev_id,
                &EventEntity {
                    base: with_domain(base(&oid, Some("Alarms"), &dev, &with_cam, None), "event"),
                    state_topic: t.source_event(&source),
                    event_types: kinds,
                },
            ));
        }
        for a in ctx.alarms.iter().filter(|a| &a.device == id) {
            let place = match (a.channel, a.io_port) {
                (Some(c), _) => format!("ch{c}"),
                (None, Some(i)) => format!("io{i}"),
                (None, None) => "device".into(),
            };
            let target = a
                .target
                .as_deref()
                .map(|t| format!("_{t}"))
                .unwrap_or_default();
            let oid = format!("camera_{id}_{place}_{}{target}", a.event_type);
            let (adev_id, adev) = match a.channel {
                Some(c) => channel_dev(c),
                None => (dev_id.clone(), dev.clone()),
            };
            let kind = crate::sources::hikvision::kinds::kind(&a.event_type);
            let label = crate::sources::hikvision::kinds::alarm_name(
                &a.event_type,
                a.io_port,
                a.target.as_deref(),
            );
            out.push(entity(
                "binary_sensor",
                oid.clone(),
                &adev_id,
                &AlarmSensor {
                    base: Base {
                        enabled_by_default: (!kind.enabled).then_some(false),
                        ..with_domain(
                            base(&oid, Some(&label), &adev, &with_cam, None),
                            "binary_sensor",
                        )
                    },
                    state_topic: t.camera_alarm(
                        id,
                        a.channel,
                        a.io_port,
                        &a.event_type,
                        a.target.as_deref(),
                    ),
                    payload_on: "ON",
                    payload_off: "OFF",
                    device_class: kind.class,
                    off_delay: 3600,
                },
            ));
        }
    }
    // Presence: one sensor per user (state: the door of their last access; attributes: site,
    // time), on the Net2 server device.
    for p in &ctx.presence {
        let oid = format!("user_{}_presence", p.user.id);
        let label = format!(
            "{} last access",
            p.user
                .name
                .clone()
                .unwrap_or_else(|| format!("User {}", p.user.id))
        );
        out.push(entity(
            "sensor",
            oid.clone(),
            &server_id,
            &Sensor {
                base: Base {
                    icon: Some("mdi:account-key"),
                    ..with_domain(base(&oid, Some(&label), &server, &with_source, None), "sensor")
                },
                state_topic: t.presence(p.user.id),
                value_template: "{{ value_json.door.name }}".into(),
                json_attributes_topic: Some(t.presence(p.user.id)),
                json_attributes_template: Some("{{ {'site': value_json.site, 'time': value_json.time, 'door_id': value_json.door.id, 'user_id': value_json.user.id} | tojson }}".into()),
                unit_of_measurement: None,
                device_class: None,
            },
        ));
    }
    // QR readers: an `event` entity each (qr_granted / qr_denied, with member, name and
    // Apptive's message as attributes) on its door's device ("Front door QR"), or on a device
    // of its own when the door is not announced (no Net2).
    for r in &ctx.qr_readers {
        let key = r.id.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        let (dev_id, dev) = match ctx.doors.get(&r.door) {
            Some(door_name) => {
                let dev_id = ident.id(&format!("net2_door_{}", r.door));
                let dev = Device {
                    identifiers: vec![dev_id.clone()],
                    name: door_name.clone(),
                    manufacturer: "Paxton".into(),
                    model: "Net2 door".into(),
                    via_device: Some(server_id.clone()),
                    sw_version: None,
                };
                (dev_id, dev)
            }
            None => {
                let dev_id = ident.id(&format!("qr_{key}"));
                let dev = Device {
                    identifiers: vec![dev_id.clone()],
                    name: r
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("QR reader {}", r.id)),
                    manufacturer: "apptive".into(),
                    model: "QR reader (via gatehouse)".into(),
                    via_device: None,
                    sw_version: None,
                };
                (dev_id, dev)
            }
        };
        // On the door's device: "QR" (or the reader's name) beside the door's name; on its
        // own device the entity takes the device's name.
        let label = if ctx.doors.contains_key(&r.door) {
            Some(r.name.clone().unwrap_or_else(|| "QR".to_string()))
        } else {
            None
        };
        let oid = format!("qr_{key}");
        out.push(entity(
            "event",
            oid.clone(),
            &dev_id,
            &EventEntity {
                base: Base {
                    icon: Some("mdi:qrcode-scan"),
                    ..with_domain(
                        base(&oid, label.as_deref(), &dev, &bridge_only, None),
                        "event",
                    )
                },
                state_topic: t.qr_result(&r.id),
                event_types: QR_EVENT_TYPES.iter().map(|s| s.to_string()).collect(),
            },
        ));
    }
    // Hardware access points: a device each with its connectivity (shown while the device is
    // silent: only the bridge's availability), battery and sensor state (unavailable while
    // the device is offline).
    for hw in &ctx.hardware {
        let key = hw.id.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        let dev_id = ident.id(&format!("hardware_{key}"));
        let dev = Device {
            identifiers: vec![dev_id.clone()],
            name: hw.name.clone(),
            manufacturer: hw
                .vendor
                .clone()
                .unwrap_or_else(|| "Hardware device".into()),
            model: format!("Access point {} (via gatehouse)", hw.device_id),
            via_device: None,
            sw_version: hw.firmware_version.clone(),
        };
        let state = t.hardware_state(&hw.id);
        let with_hw = vec![
            Availability {
                topic: t.bridge_state(),
            },
            Availability {
                topic: t.hardware_availability(&hw.id),
            },
        ];
        let oid = format!("hardware_{key}_connectivity");
        out.push(entity(
            "binary_sensor",
            oid.clone(),
            &dev_id,
            &BinarySensor {
                base: with_domain(
                    base(
                        &oid,
                        Some("Connection"),
                        &dev,
                        &bridge_only,
                        Some("diagnostic"),
                    ),
                    "binary_sensor",
                ),
                state_topic: state.clone(),
                value_template: "{{ 'ON' if value_json.online else 'OFF' }}".into(),
                device_class: Some("connectivity"),
            },
        ));
        let oid = format!("hardware_{key}_battery");
        out.push(entity(
            "sensor",
            oid.clone(),
            &dev_id,
            &Sensor {
                base: with_domain(
                    base(&oid, Some("Battery"), &dev, &with_hw, Some("diagnostic")),
                    "sensor",
                ),
                state_topic: state.clone(),
                value_template: "{{ value_json.battery_level if value_json.battery_level is not none else 'None' }}".into(),
                json_attributes_topic: None,
                json_attributes_template: None,
                unit_of_measurement: Some("%"),
                device_class: Some("battery"),
            },
        ));
        let oid = format!("hardware_{key}_sensor_status");
        out.push(entity(
            "sensor",
            oid.clone(),
            &dev_id,
            &Sensor {
                base: Base {
                    icon: Some("mdi:door"),
                    ..with_domain(base(&oid, Some("Sensor"), &dev, &with_hw, None), "sensor")
                },
                state_topic: state,
                value_template: "{{ value_json.sensor_status if value_json.sensor_status is not none else 'None' }}".into(),
                json_attributes_topic: None,
                json_attributes_template: None,
                unit_of_measurement: None,
                device_class: None,
            },
        ));
    }
    // People: a device per person with its device_tracker (HA shows the device's name, and a
    // `person` attaches the tracker); a "People" device with a count per site.
    for (id, name) in &ctx.people {
        let dev_id = ident.id(&format!("person_{id}"));
        let dev = Device {
            identifiers: vec![dev_id.clone()],
            name: name.clone(),
            manufacturer: "gatehouse".into(),
            model: "Presence: badges, Wi-Fi, QR".into(),
            via_device: None,
            sw_version: None,
        };
        let oid = format!("person_{id}");
        out.push(entity(
            "device_tracker",
            oid.clone(),
            &dev_id,
            &DeviceTracker {
                base: Base {
                    icon: Some("mdi:account"),
                    ..with_domain(base(&oid, None, &dev, &bridge_only, None), "device_tracker")
                },
                state_topic: t.person_state(id),
                payload_home: "home",
                payload_not_home: "not_home",
                source_type: "router",
                json_attributes_topic: t.person_attributes(id),
            },
        ));
    }
    if !ctx.people_sites.is_empty() {
        let people_id = ident.id("people");
        let dev = Device {
            identifiers: vec![people_id.clone()],
            name: ident.device_name("People"),
            manufacturer: "gatehouse".into(),
            model: "Presence (via gatehouse)".into(),
            via_device: None,
            sw_version: Some(env!("CARGO_PKG_VERSION").into()),
        };
        for (id, name) in &ctx.people_sites {
            let oid = format!("site_{id}_people");
            out.push(entity(
                "sensor",
                oid.clone(),
                &people_id,
                &Sensor {
                    base: Base {
                        icon: Some("mdi:account-group"),
                        ..with_domain(
                            base(
                                &oid,
                                Some(&format!("{name} on site")),
                                &dev,
                                &bridge_only,
                                None,
                            ),
                            "sensor",
                        )
                    },
                    state_topic: t.site_people(id),
                    value_template: "{{ value_json.count }}".into(),
                    json_attributes_topic: Some(t.site_people(id)),
                    json_attributes_template: Some(
                        "{{ {'people': value_json.people, 'ids': value_json.ids} | tojson }}"
                            .into(),
                    ),
                    unit_of_measurement: Some("people"),
                    device_class: None,
                },
            ));
        }
    }
    out
}

/// (topic, payload) pairs in the configured mode.
pub fn render(
    topics: &Topics,
    identity: &Identity,
    entities: &[Entity],
    device_mode: bool,
) -> Vec<(String, String)> {
    if !device_mode {
        return entities
            .iter()
            .map(|e| {
                (
                    topics.discovery(e.component, identity.node(), &e.object_id),
                    e.config.to_string(),
                )
            })
            .collect();
    }
    let mut devices: BTreeMap<&str, (Value, serde_json::Map<String, Value>)> = BTreeMap::new();
    for e in entities {
        let mut cfg = e.config.clone();
        let dev = cfg
            .as_object_mut()
            .and_then(|o| o.remove("device"))
            .unwrap_or(Value::Null);
        if let Some(o) = cfg.as_object_mut() {
            o.remove("o");
            o.insert("p".into(), Value::String(e.component.into()));
        }
        let entry = devices
            .entry(&e.device_id)
            .or_insert_with(|| (dev, Default::default()));
        entry.1.insert(e.object_id.clone(), cfg);
    }
    devices
        .into_iter()
        .map(|(id, (dev, cmps))| {
            let payload = serde_json::json!({"dev": dev, "o": ORIGIN, "cmps": cmps});
            (topics.discovery_device(id), payload.to_string())
        })
        .collect()
}

/// The instance whose per-component configs were published last run (recorded in SQLite):
/// a site keeps the ids it has in Home Assistant until `mqtt.instance` says otherwise.
pub fn recorded_instance<'a>(
    published: impl IntoIterator<Item = &'a str>,
    topics: &Topics,
) -> Option<String> {
    let prefix = format!("{}/", topics.prefix);
    let mut nodes: BTreeMap<&str, usize> = BTreeMap::new();
    for t in published {
        let Some(rest) = t.strip_prefix(&prefix) else {
            continue;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() == 4 && parts[0] != "device" {
            *nodes.entry(parts[1]).or_default() += 1;
        }
    }
    let (node, _) = nodes.into_iter().max_by_key(|(_, n)| *n)?;
    Some(match node.strip_prefix("gatehouse_") {
        Some(i) => i.to_string(),
        None => node.to_string(),
    })
}

/// The retained topics a discovery payload reads (state, attributes, availability, picture),
/// for either mode: what becomes garbage on the broker when its entity goes.
pub fn referenced_topics(payload: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<Value>(payload) else {
        return Vec::new();
    };
    let configs: Vec<&Value> = match v.get("cmps").and_then(Value::as_object) {
        Some(c) => c.values().collect(),
        None => vec![&v],
    };
    let mut out = Vec::new();
    for c in configs {
        for k in ["state_topic", "json_attributes_topic", "topic"] {
            out.extend(c.get(k).and_then(Value::as_str).map(str::to_owned));
        }
        for a in c
            .get("availability")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.extend(a.get("topic").and_then(Value::as_str).map(str::to_owned));
        }
    }
    out
}

/// Door display names for discovery: config name, else Net2's, else the id.
pub fn door_names(
    doors: &BTreeMap<DoorId, crate::config::DoorConfig>,
    states: &BTreeMap<DoorId, DoorState>,
) -> BTreeMap<DoorId, String> {
    doors
        .iter()
        .map(|(id, c)| {
            let name = c
                .name
                .clone()
                .or_else(|| states.get(id).and_then(|s| s.name.clone()))
                .unwrap_or_else(|| format!("Door {id}"));
            (*id, name)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DoorRef, UserRef};

    fn topics() -> Topics {
        Topics {
            base: "gatehouse".into(),
            prefix: "homeassistant".into(),
        }
    }

    fn presence() -> Presence {
        Presence {
            user: UserRef {
                id: 8,
                name: Some("Mette Kragh Holm".into()),
            },
            door: DoorRef {
                id: 7242929,
                name: Some("Garage Port".into()),
            },
            site: Some("Kirkegade50".into()),
            time: chrono::DateTime::parse_from_rfc3339("2026-01-05T06:00:01+01:00").unwrap(),
        }
    }

    fn nvr() -> crate::model::CameraInfo {
        crate::model::CameraInfo {
            device: "nvr".into(),
            name: Some("NVR".into()),
            model: Some("DS-7608NI-K2".into()),
            serial: Some("DS-7608NI-K220190101CCWR000000001".into()),
            device_type: Some("NVR".into()),
            channels: vec![
                crate::model::CameraChannel {
                    id: 1,
                    name: Some("Front yard".into()),
                },
                crate::model::CameraChannel {
                    id: 2,
                    name: Some("Gate & Drive".into()),
                },
            ],
            ..Default::default()
        }
    }

    fn alarm(
        device: &str,
        channel: Option<u32>,
        ty: &str,
        target: Option<&str>,
    ) -> crate::model::CameraAlarm {
        crate::model::CameraAlarm {
            device: device.into(),
            channel,
            io_port: None,
            event_type: ty.into(),
            target: target.map(str::to_owned),
            on: false,
            at: chrono::DateTime::parse_from_rfc3339("2026-01-05T06:00:01Z")
                .unwrap()
                .into(),
        }
    }

    fn sample_with(net2: bool) -> Vec<Entity> {
        sample_at(&topics(), &Identity::default(), net2)
    }

    /// The sample under another base topic and identity (another site on the same broker).
    fn sample_at(t: &Topics, identity: &Identity, net2: bool) -> Vec<Entity> {
        let p = presence();
        let alarms = [
            alarm("garage", Some(1), "vmd", None),
            alarm("nvr", Some(1), "linedetection", None),
            alarm("nvr", Some(1), "linedetection", Some("human")),
            alarm("nvr", Some(2), "attendedbaggage", None),
            alarm("nvr", None, "diskerror", None),
        ];
        let garage = crate::model::CameraInfo {
            device: "garage".into(),
            name: Some("PTZ".into()),
            channels: vec![crate::model::CameraChannel {
                id: 1,
                name: Some("Garage".into()),
            }],
            ..Default::default()
        };
        let ctx = Context {
            topics: t,
            identity,
            doors: if net2 {
                [
                    (7242929, "Garage Port".to_string()),
                    (6203980, "Fordør Terndrupvej".to_string()),
                ]
                .into()
            } else {
                BTreeMap::new()
            },
            no_contact: [6203980].into(),
            door_cameras: [(7242929, "garage".to_string())].into(),
            presence: if net2 { vec![&p] } else { Vec::new() },
            cameras: vec![
                CameraCtx {
                    id: "garage".into(),
                    name: None,
                    isapi: true,
                    info: Some(garage),
                },
                CameraCtx {
                    id: "nvr".into(),
                    name: None,
                    isapi: true,
                    info: Some(nvr()),
                },
            ],
            alarms: alarms.iter().collect(),
            net2,
            hardware: Vec::new(),
            people: vec![("anna".into(), "Anna Berg".into())],
            people_sites: vec![("default".into(), "Default".into())],
            qr_readers: vec![
                QrReaderCtx {
                    id: "garage-qr".into(),
                    name: None,
                    door: 7242929,
                },
                QrReaderCtx {
                    id: "lobby".into(),
                    name: Some("Lobby QR".into()),
                    door: 1,
                },
            ],
        };
        configs(&ctx)
    }

    fn sample() -> Vec<Entity> {
        sample_with(true)
    }

    fn by_id(v: &[Entity], oid: &str) -> Value {
        v.iter()
            .find(|e| e.object_id == oid)
            .unwrap_or_else(|| panic!("no {oid}"))
            .config
            .clone()
    }

    #[test]
    fn names_a_person_would_keep_and_noisy_kinds_disabled() {
        let v = sample();
        // An NVR channel is a device named as the NVR names it, via the NVR.
        let motion = by_id(&v, "camera_nvr_ch1_linedetection");
        assert_eq!(motion["name"], "Line crossing");
        assert_eq!(motion["device"]["name"], "Front yard");
        assert_eq!(motion["device"]["via_device"], "gatehouse_camera_nvr");
        assert!(motion.get("enabled_by_default").is_none(), "{motion}");
        assert_eq!(
            by_id(&v, "camera_nvr_ch1_linedetection_human")["name"],
            "Line crossing (human)"
        );
        let bag = by_id(&v, "camera_nvr_ch2_attendedbaggage");
        assert_eq!(bag["name"], "Object removed");
        assert_eq!(bag["device"]["name"], "Gate & Drive");
        assert_eq!(bag["enabled_by_default"], false);
        // Device-level alarms on the NVR itself.
        let disk = by_id(&v, "camera_nvr_device_diskerror");
        assert_eq!(
            (disk["name"].as_str(), disk["device"]["name"].as_str()),
            (Some("Disk error"), Some("NVR"))
        );
        // A single camera takes its channel's name; its picture entity takes the device's.
        let cam = by_id(&v, "camera_garage_ch1_vmd");
        assert_eq!(
            (cam["name"].as_str(), cam["device"]["name"].as_str()),
            (Some("Motion"), Some("Garage"))
        );
        assert!(by_id(&v, "camera_garage_ch1")["name"].is_null());
        // One door model: the contact and one lock entity; no contact entity without one.
        assert!(v.iter().all(|e| !e.object_id.ends_with("_unlocked")));
        assert_eq!(by_id(&v, "door_7242929_lock")["name"], "Lock");
        assert!(by_id(&v, "door_7242929_contact")["name"].is_null());
        assert!(v.iter().all(|e| e.object_id != "door_6203980_contact"));
    }

    /// The ids a config carries: unique_id, object_id, default_entity_id and the device
    /// identifiers gatehouse makes (a camera's serial is the hardware's, the same anywhere).
    fn ids(e: &Entity) -> Vec<String> {
        let c = &e.config;
        let mut out: Vec<String> = ["unique_id", "object_id", "default_entity_id"]
            .iter()
            .map(|k| c[k].as_str().unwrap().to_string())
            .collect();
        out.extend(
            c["device"]["identifiers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .filter(|i| i.starts_with("gatehouse")),
        );
        out.extend(c["device"]["via_device"].as_str().map(str::to_owned));
        out.push(e.device_id.clone());
        out
    }

    #[test]
    fn the_default_instance_keeps_todays_ids() {
        let v = sample();
        let lock = by_id(&v, "door_7242929_lock");
        assert_eq!(lock["unique_id"], "gatehouse_door_7242929_lock");
        assert_eq!(lock["object_id"], "gatehouse_door_7242929_lock");
        assert_eq!(
            lock["default_entity_id"],
            "lock.gatehouse_door_7242929_lock"
        );
        assert_eq!(
            lock["device"]["identifiers"][0],
            "gatehouse_net2_door_7242929"
        );
        assert_eq!(lock["device"]["via_device"], "gatehouse_net2");
        let topics = render(&topics(), &Identity::default(), &v, false);
        assert!(
            topics
                .iter()
                .any(|(t, _)| t == "homeassistant/lock/gatehouse/door_7242929_lock/config")
        );
    }

    #[test]
    fn another_site_shares_no_id_or_topic() {
        let a = sample();
        let tb = Topics {
            base: "site-b/gatehouse".into(),
            prefix: "homeassistant".into(),
        };
        let idb = Identity::new("site_b");
        let b = sample_at(&tb, &idb, true);
        assert_eq!(a.len(), b.len(), "the same entities");
        let of = |v: &[Entity]| -> std::collections::BTreeSet<String> {
            v.iter().flat_map(ids).collect()
        };
        let (ia, ib) = (of(&a), of(&b));
        let shared: Vec<_> = ia.intersection(&ib).collect();
        assert!(shared.is_empty(), "ids of both sites: {shared:?}");
        assert!(ib.iter().all(|i| i.contains("gatehouse_site_b_")), "{ib:?}");
        let lock = by_id(&b, "door_7242929_lock");
        assert_eq!(lock["unique_id"], "gatehouse_site_b_door_7242929_lock");
        assert_eq!(
            lock["default_entity_id"],
            "lock.gatehouse_site_b_door_7242929_lock"
        );
        assert_eq!(lock["command_topic"], "site-b/gatehouse/door/7242929/set");
        assert_eq!(lock["device"]["via_device"], "gatehouse_site_b_net2");
        // Discovery topics in both modes: nothing in common either.
        for device_mode in [false, true] {
            let ta: std::collections::BTreeSet<String> =
                render(&topics(), &Identity::default(), &a, device_mode)
                    .into_iter()
                    .map(|(t, _)| t)
                    .collect();
            let rb = render(&tb, &idb, &b, device_mode);
            assert_eq!(ta.len(), rb.len());
            for (t, p) in &rb {
                assert!(!ta.contains(t), "{t} is site A's too");
                assert!(t.contains("/gatehouse_site_b"), "{t}");
                // Every topic it reads or commands is under its own base topic.
                for r in referenced_topics(p) {
                    assert!(r.starts_with("site-b/gatehouse/"), "{t} reads {r}");
                }
            }
        }
    }

    #[test]
    fn the_recorded_instance_is_the_one_last_published() {
        let t = topics();
        let a = ["homeassistant/lock/gatehouse/door_1_lock/config"];
        assert_eq!(recorded_instance(a, &t).as_deref(), Some("gatehouse"));
        let b = [
            "homeassistant/lock/gatehouse_site_b/door_1_lock/config",
            "homeassistant/button/gatehouse_site_b/door_1_open/config",
            "homeassistant/lock/gatehouse/door_1_lock/config",
        ];
        assert_eq!(recorded_instance(b, &t).as_deref(), Some("site_b"));
        assert_eq!(recorded_instance([], &t), None);
        // Device-based configs do not say (their ids have no separator of the instance).
        let dev = ["homeassistant/device/gatehouse_net2/config"];
        assert_eq!(recorded_instance(dev, &t), None);
        let other = ["elsewhere/lock/gatehouse/door_1_lock/config"];
        assert_eq!(recorded_instance(other, &t), None);
        assert_eq!(
            Identity::new("site_b").instance(),
            Identity::new("site_b")
                .node()
                .strip_prefix("gatehouse_")
                .unwrap()
        );
    }

    #[test]
    fn nothing_of_net2_without_net2() {
        let v = sample_with(false);
        assert!(!v.is_empty());
        for e in &v {
            assert!(
                e.device_id != Identity::default().server(),
                "{}",
                e.object_id
            );
            assert!(!e.config.to_string().contains("net2"), "{}", e.object_id);
        }
    }

    #[test]
    fn topics_a_removed_entity_leaves_behind() {
        let v = sample();
        let used = referenced_topics(&by_id(&v, "camera_nvr_ch1_linedetection").to_string());
        assert!(used.contains(&"gatehouse/camera/nvr/ch1/alarm/linedetection".to_string()));
        assert!(used.contains(&"gatehouse/camera/nvr/availability".to_string()));
        let dev = render(&topics(), &Identity::default(), &v, true);
        assert!(dev.iter().any(|(_, p)| {
            referenced_topics(p).contains(&"gatehouse/door/7242929/state".to_string())
        }));
    }

    /// Compare with a committed snapshot; `UPDATE_SNAPSHOTS=1` rewrites it.
    fn snapshot(name: &str, got: &BTreeMap<String, Value>) {
        let path = format!("{}/tests/snapshots/{name}.json", env!("CARGO_MANIFEST_DIR"));
        let text = serde_json::to_string_pretty(got).unwrap() + "\n";
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            want == text,
            "discovery snapshot {name} changed; review and run with UPDATE_SNAPSHOTS=1\n{text}"
        );
    }

    #[test]
    fn per_component_snapshot() {
        let got: BTreeMap<String, Value> =
            render(&topics(), &Identity::default(), &sample(), false)
                .into_iter()
                .map(|(t, p)| (t, serde_json::from_str(&p).unwrap()))
                .collect();
        snapshot("discovery_per_component", &got);
    }

    #[test]
    fn device_based_snapshot() {
        let got: BTreeMap<String, Value> = render(&topics(), &Identity::default(), &sample(), true)
            .into_iter()
            .map(|(t, p)| (t, serde_json::from_str(&p).unwrap()))
            .collect();
        assert_eq!(
            got.len(),
            10,
            "one config per device: two doors, the Net2 server, the camera, the NVR and its two channels, a person, People, a QR reader at a door Net2 does not announce"
        );
        for v in got.values() {
            assert!(
                v["cmps"]
                    .as_object()
                    .unwrap()
                    .values()
                    .all(|c| c["p"].is_string())
            );
        }
        snapshot("discovery_device", &got);
    }

    #[test]
    fn every_component_is_what_ha_2024_1_and_openhab_accept() {
        let known_device = [
            "identifiers",
            "name",
            "manufacturer",
            "model",
            "via_device",
            "sw_version",
        ];
        let mut components = std::collections::BTreeSet::new();
        for e in sample() {
            components.insert(e.component);
            let c = &e.config;
            for k in [
                "unique_id",
                "object_id",
                "default_entity_id",
                "availability",
                "device",
                "o",
            ] {
                assert!(c.get(k).is_some(), "{} lacks {k}", e.object_id);
            }
            assert!(
                c["default_entity_id"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{}.", e.component))
            );
            for k in c["device"].as_object().unwrap().keys() {
                assert!(
                    known_device.contains(&k.as_str()),
                    "unknown device key {k} rejects the entity in HA 2024.1"
                );
            }
            let o: Vec<_> = c["o"].as_object().unwrap().keys().cloned().collect();
            assert_eq!(o, vec!["name", "sw_version"]);
            if e.component == "event" {
                assert!(!c["event_types"].as_array().unwrap().is_empty());
            }
            if e.component == "lock" || e.component == "button" {
                assert_eq!(c["retain"], false, "commands are never retained");
            }
        }
        // openHAB's MQTT binding maps all of these (protocols.md §4).
        assert_eq!(
            components.into_iter().collect::<Vec<_>>(),
            vec![
                "binary_sensor",
                "button",
                "camera",
                "device_tracker",
                "event",
                "lock",
                "sensor"
            ]
        );
    }
}
