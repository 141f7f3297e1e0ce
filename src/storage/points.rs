//! Access points of the REST API (seed 001): gatehouse's own metadata over the Net2 doors,
//! points that exist only in gatehouse, and registered hardware devices with their last
//! heartbeat. Every query binds its values.

use super::Store;
use crate::error::Result;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{OptionalExtension, params};

/// What a point is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointKind {
    /// A Net2 door (`net2-<door id>`): the row only overrides what Net2 and the config say.
    Net2,
    /// Made with `POST /points` (`point-<n>`).
    Gatehouse,
    /// A hardware device that registered itself (`hw-<n>`).
    Hardware,
}

impl PointKind {
    fn as_str(self) -> &'static str {
        match self {
            PointKind::Net2 => "net2",
            PointKind::Gatehouse => "gatehouse",
            PointKind::Hardware => "hardware",
        }
    }

    fn parse(s: &str) -> PointKind {
        match s {
            "net2" => PointKind::Net2,
            "hardware" => PointKind::Hardware,
            _ => PointKind::Gatehouse,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            PointKind::Net2 => "net2-",
            PointKind::Gatehouse => "point-",
            PointKind::Hardware => "hw-",
        }
    }
}

/// A stored point. `None` fields of a Net2 door's row are not overridden.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PointRow {
    pub id: String,
    pub kind: Option<PointKind>,
    pub name: Option<String>,
    pub location: Option<String>,
    pub kind_type: Option<String>,
    pub status: Option<String>,
    pub site: Option<String>,
    /// When `status` last changed.
    pub status_changed: Option<DateTime<Utc>>,
    pub created: Option<DateTime<Utc>>,
    pub hw: Option<HardwareRow>,
}

/// What a hardware device reported (register and heartbeats). MAC and IP addresses are kept
/// for the operator; none of it is secret.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HardwareRow {
    pub device_id: String,
    pub device_type: Option<String>,
    pub firmware: Option<String>,
    pub vendor: Option<String>,
    pub mac_address: Option<String>,
    pub ip_address: Option<String>,
    pub capabilities: Vec<String>,
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// The heartbeat (or registration) that found it offline, or new.
    pub online_since: Option<DateTime<Utc>>,
    pub battery_level: Option<u8>,
    pub sensor_status: Option<String>,
}

/// The fields an edit sets (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct PointEdit {
    pub name: Option<String>,
    pub location: Option<String>,
    pub kind_type: Option<String>,
    pub status: Option<String>,
    pub site: Option<String>,
}

/// A registration (seed 001 `points/register`).
#[derive(Debug, Clone, Default)]
pub struct Registration {
    pub device_id: String,
    pub device_type: Option<String>,
    pub firmware: Option<String>,
    pub vendor: Option<String>,
    pub mac_address: Option<String>,
    pub ip_address: Option<String>,
    pub location: Option<String>,
    pub capabilities: Vec<String>,
    /// The site of a new point.
    pub site: String,
}

/// A heartbeat (seed 001 `points/{id}/heartbeat`).
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub firmware: Option<String>,
    pub battery_level: Option<u8>,
    pub sensor_status: Option<String>,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_ts(s: Option<String>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&s?).ok().map(|t| t.to_utc())
}

const COLS: &str = "id, kind, name, location, type, status, site, status_changed, created, \
    device_id, device_type, firmware, vendor, mac_address, ip_address, capabilities, \
    last_heartbeat, online_since, battery_level, sensor_status";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PointRow> {
    let kind = PointKind::parse(&r.get::<_, String>(1)?);
    let device_id: Option<String> = r.get(9)?;
    let hw = match device_id {
        Some(device_id) => Some(HardwareRow {
            device_id,
            device_type: r.get(10)?,
            firmware: r.get(11)?,
            vendor: r.get(12)?,
            mac_address: r.get(13)?,
            ip_address: r.get(14)?,
            capabilities: r
                .get::<_, Option<String>>(15)?
                .and_then(|c| serde_json::from_str(&c).ok())
                .unwrap_or_default(),
            last_heartbeat: parse_ts(r.get(16)?),
            online_since: parse_ts(r.get(17)?),
            battery_level: r
                .get::<_, Option<i64>>(18)?
                .and_then(|b| u8::try_from(b).ok()),
            sensor_status: r.get(19)?,
        }),
        None => None,
    };
    Ok(PointRow {
        id: r.get(0)?,
        kind: Some(kind),
        name: r.get(2)?,
        location: r.get(3)?,
        kind_type: r.get(4)?,
        status: r.get(5)?,
        site: r.get(6)?,
        status_changed: parse_ts(r.get(7)?),
        created: parse_ts(r.get(8)?),
        hw,
    })
}

/// Insert a point with a numbered id (`<prefix><n>`); its id.
fn insert_numbered(
    tx: &rusqlite::Transaction<'_>,
    kind: PointKind,
    e: &PointEdit,
    now: DateTime<Utc>,
) -> rusqlite::Result<String> {
    let placeholder = format!("new-{}", rand::random::<u64>());
    tx.execute(
        "INSERT INTO access_points (id, kind, name, location, type, status, site, status_changed, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
        params![
            placeholder,
            kind.as_str(),
            e.name,
            e.location,
            e.kind_type,
            e.status,
            e.site,
            ts(now)
        ],
    )?;
    let n = tx.last_insert_rowid();
    let id = format!("{}{n}", kind.prefix());
    tx.execute(
        "UPDATE access_points SET id = ?1 WHERE n = ?2",
        params![id, n],
    )?;
    Ok(id)
}

fn get(c: &rusqlite::Connection, id: &str) -> rusqlite::Result<Option<PointRow>> {
    c.query_row(
        &format!("SELECT {COLS} FROM access_points WHERE id = ?1"),
        [id],
        row,
    )
    .optional()
}

impl Store {
    /// Every stored point, by number (creation order).
    pub fn points(&self) -> Result<Vec<PointRow>> {
        self.with(|c| {
            let mut st =
                c.prepare_cached(&format!("SELECT {COLS} FROM access_points ORDER BY n"))?;
            st.query_map([], row)?.collect()
        })
    }

    /// [`Store::points`] on a reader's connection ([`Store::read`]): the REST API's lists
    /// wait for no writer (a prune, a burst of events).
    pub fn points_on(c: &rusqlite::Connection) -> Result<Vec<PointRow>> {
        let mut st = c.prepare_cached(&format!("SELECT {COLS} FROM access_points ORDER BY n"))?;
        Ok(st.query_map([], row)?.collect::<rusqlite::Result<_>>()?)
    }

    pub fn point(&self, id: &str) -> Result<Option<PointRow>> {
        self.with(|c| get(c, id))
    }

    /// A gatehouse-only point; the stored row.
    pub fn point_create(&self, e: &PointEdit, now: DateTime<Utc>) -> Result<PointRow> {
        self.with(|c| {
            let tx = c.transaction()?;
            let id = insert_numbered(&tx, PointKind::Gatehouse, e, now)?;
            let r = get(&tx, &id)?;
            tx.commit()?;
            r.ok_or(rusqlite::Error::QueryReturnedNoRows)
        })
    }

    /// Apply an edit to a stored point, or to a Net2 door (`net2-<id>`, created on its first
    /// edit). `status_changed` moves when the status does. `None` when there is no such
    /// stored point (and `id` is not a Net2 door's).
    pub fn point_edit(
        &self,
        id: &str,
        e: &PointEdit,
        now: DateTime<Utc>,
    ) -> Result<Option<PointRow>> {
        self.with(|c| {
            let tx = c.transaction()?;
            let before = get(&tx, id)?;
            if before.is_none() {
                if !id.starts_with(PointKind::Net2.prefix()) {
                    return Ok(None);
                }
                tx.execute(
                    "INSERT INTO access_points (id, kind, created) VALUES (?1, 'net2', ?2)",
                    params![id, ts(now)],
                )?;
            }
            let status_moved = e.status.is_some()
                && before
                    .as_ref()
                    .and_then(|b| b.status.as_deref())
                    .unwrap_or("active")
                    != e.status.as_deref().unwrap_or_default();
            tx.execute(
                "UPDATE access_points SET
                    name = coalesce(?2, name),
                    location = coalesce(?3, location),
                    type = coalesce(?4, type),
                    status = coalesce(?5, status),
                    site = coalesce(?6, site),
                    status_changed = CASE WHEN ?7 THEN ?8 ELSE status_changed END
                 WHERE id = ?1",
                params![
                    id,
                    e.name,
                    e.location,
                    e.kind_type,
                    e.status,
                    e.site,
                    status_moved,
                    ts(now)
                ],
            )?;
            let r = get(&tx, id)?;
            tx.commit()?;
            Ok(r)
        })
    }

    /// Delete a stored point; whether there was one.
    pub fn point_delete(&self, id: &str) -> Result<bool> {
        self.with(|c| Ok(c.execute("DELETE FROM access_points WHERE id = ?1", [id])? > 0))
    }

    /// Create or update the hardware point of `r.device_id`; the row and whether it is new.
    /// A new one starts online (its registration is its first heartbeat) and `active`.
    pub fn hardware_register(
        &self,
        r: &Registration,
        online_after: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(PointRow, bool)> {
        let caps = serde_json::to_string(&r.capabilities).unwrap_or_else(|_| "[]".into());
        self.with(|c| {
            let tx = c.transaction()?;
            let existing: Option<String> = tx
                .query_row(
                    "SELECT id FROM access_points WHERE device_id = ?1",
                    [&r.device_id],
                    |x| x.get(0),
                )
                .optional()?;
            let created = existing.is_none();
            let id = match existing {
                Some(id) => id,
                None => insert_numbered(
                    &tx,
                    PointKind::Hardware,
                    &PointEdit {
                        name: Some(r.location.clone().unwrap_or_else(|| r.device_id.clone())),
                        location: r.location.clone(),
                        kind_type: Some(r.device_type.clone().unwrap_or_else(|| "door".into())),
                        status: Some("active".into()),
                        site: Some(r.site.clone()),
                    },
                    now,
                )?,
            };
            tx.execute(
                "UPDATE access_points SET
                    device_id = ?2, device_type = ?3, firmware = coalesce(?4, firmware),
                    vendor = ?5, mac_address = ?6, ip_address = ?7, capabilities = ?8,
                    location = coalesce(?9, location),
                    online_since = CASE WHEN last_heartbeat IS NULL OR last_heartbeat < ?10
                                        THEN ?11 ELSE online_since END,
                    last_heartbeat = ?11
                 WHERE id = ?1",
                params![
                    id,
                    r.device_id,
                    r.device_type,
                    r.firmware,
                    r.vendor,
                    r.mac_address,
                    r.ip_address,
                    caps,
                    r.location,
                    ts(online_after),
                    ts(now)
                ],
            )?;
            let row = get(&tx, &id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
            tx.commit()?;
            Ok((row, created))
        })
    }

    /// Record a heartbeat of hardware point `id`; `None` when there is no such hardware
    /// point. `was_online`: whether it was online until now (the caller judges that on the
    /// monotonic clock); if not, a new online period starts.
    pub fn hardware_heartbeat(
        &self,
        id: &str,
        h: &Heartbeat,
        was_online: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<PointRow>> {
        self.with(|c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE access_points SET
                    firmware = coalesce(?2, firmware),
                    battery_level = coalesce(?3, battery_level),
                    sensor_status = coalesce(?4, sensor_status),
                    online_since = CASE WHEN last_heartbeat IS NULL OR NOT ?5
                                        THEN ?6 ELSE online_since END,
                    last_heartbeat = ?6
                 WHERE id = ?1 AND device_id IS NOT NULL",
                params![
                    id,
                    h.firmware,
                    h.battery_level.map(i64::from),
                    h.sensor_status,
                    was_online,
                    ts(now)
                ],
            )?;
            let r = if n > 0 { get(&tx, id)? } else { None };
            tx.commit()?;
            Ok(r)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn points_are_numbered_edited_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("p.db")).unwrap();
        let now = t("2026-01-26T10:30:00Z");
        let p = s
            .point_create(
                &PointEdit {
                    name: Some("Side Entrance".into()),
                    status: Some("active".into()),
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        assert_eq!(p.id, "point-1");
        assert_eq!(p.kind, Some(PointKind::Gatehouse));
        // A Net2 door's overrides are made on its first edit; only a status change moves
        // status_changed.
        let later = t("2026-01-26T11:00:00Z");
        let e = PointEdit {
            name: Some("Front".into()),
            ..Default::default()
        };
        let d = s.point_edit("net2-7", &e, later).unwrap().unwrap();
        assert_eq!((d.name.as_deref(), d.status_changed), (Some("Front"), None));
        let e = PointEdit {
            status: Some("maintenance".into()),
            ..Default::default()
        };
        let d = s.point_edit("net2-7", &e, later).unwrap().unwrap();
        assert_eq!(d.status_changed, Some(later));
        assert_eq!(d.name.as_deref(), Some("Front"), "kept");
        assert!(s.point_edit("point-99", &e, later).unwrap().is_none());
        assert!(s.point_delete("point-1").unwrap());
        assert!(!s.point_delete("point-1").unwrap());
        // Ids are never reused.
        let p = s.point_create(&PointEdit::default(), now).unwrap();
        assert_eq!(p.id, "point-3");
    }

    #[test]
    fn hardware_registers_once_per_device_and_records_heartbeats() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("h.db")).unwrap();
        let t0 = t("2026-01-26T10:30:00Z");
        let reg = Registration {
            device_id: "AC-DEV-001".into(),
            location: Some("Main Entrance".into()),
            capabilities: vec!["card".into()],
            site: "default".into(),
            ..Default::default()
        };
        let (p, new) = s.hardware_register(&reg, t0, t0).unwrap();
        assert!(new);
        assert_eq!(p.id, "hw-1");
        assert_eq!(p.name.as_deref(), Some("Main Entrance"));
        let hw = p.hw.unwrap();
        assert_eq!((hw.last_heartbeat, hw.online_since), (Some(t0), Some(t0)));
        assert_eq!(hw.capabilities, vec!["card".to_string()]);
        let t1 = t("2026-01-26T10:31:00Z");
        let (p, new) = s.hardware_register(&reg, t0, t1).unwrap();
        assert!(!new);
        assert_eq!(p.id, "hw-1");
        let h = Heartbeat {
            battery_level: Some(85),
            sensor_status: Some("closed".into()),
            ..Default::default()
        };
        let p = s.hardware_heartbeat("hw-1", &h, true, t1).unwrap().unwrap();
        let hw = p.hw.unwrap();
        assert_eq!(hw.battery_level, Some(85));
        assert_eq!(hw.online_since, Some(t0), "still online since registering");
        // After a long silence the next heartbeat starts a new online period.
        let t2 = t("2026-01-26T12:00:00Z");
        let p = s
            .hardware_heartbeat("hw-1", &Heartbeat::default(), false, t2)
            .unwrap()
            .unwrap();
        let hw = p.hw.unwrap();
        assert_eq!(hw.online_since, Some(t2));
        assert_eq!(hw.battery_level, Some(85), "kept when not reported");
        assert!(
            s.hardware_heartbeat("point-1", &h, true, t2)
                .unwrap()
                .is_none()
        );
    }
}
