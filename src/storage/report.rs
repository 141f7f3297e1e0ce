//! Counts of access events for metrics and reports (`/api/access-control/metrics`,
//! `/reports/export`). Time ranges are half-open `[from_ms, to_ms)` on `events.time_ms`, read
//! through the `events_time` index; every value is bound.

use super::Store;
use crate::error::Result;
use rusqlite::params;

/// Which events are access events: a grant, a denial, or a grant whose door was then not
/// opened (Net2 type 61, stored as `other`: the events API's `timeout`). The same text as the
/// events API's, so the numbers agree and its partial indexes serve these queries too.
pub const ACCESS: &str =
    "(kind IN ('access_granted', 'access_denied') OR (kind = 'other' AND code = 61))";

/// Access events by action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub granted: u64,
    pub denied: u64,
    /// Granted, but the door was not opened (Net2 type 61).
    pub timeout: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.granted + self.denied + self.timeout
    }

    fn add(&mut self, kind: &str, n: i64) {
        let n = n.max(0) as u64;
        match kind {
            "access_granted" => self.granted += n,
            "access_denied" => self.denied += n,
            _ => self.timeout += n,
        }
    }
}

/// Access events of one door in a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoorCounts {
    pub door_id: Option<i64>,
    /// The name the newest of its events carried.
    pub door_name: Option<String>,
    pub counts: Counts,
}

fn counts_in(c: &rusqlite::Connection, from_ms: i64, to_ms: i64) -> rusqlite::Result<Counts> {
    let mut st = c.prepare_cached(&format!(
        "SELECT kind, count(*) FROM events WHERE {ACCESS} AND time_ms >= ?1 AND time_ms < ?2 GROUP BY kind"
    ))?;
    let mut out = Counts::default();
    let rows = st.query_map(params![from_ms, to_ms], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (k, n) = row?;
        out.add(&k, n);
    }
    Ok(out)
}

impl Store {
    /// Access events in `[from_ms, to_ms)`.
    pub fn access_counts(&self, from_ms: i64, to_ms: i64) -> Result<Counts> {
        self.with(|c| counts_in(c, from_ms, to_ms))
    }

    /// Access events of each of these periods (days of a report), in one go.
    pub fn access_counts_each(&self, periods: &[(i64, i64)]) -> Result<Vec<Counts>> {
        self.with(|c| periods.iter().map(|(a, b)| counts_in(c, *a, *b)).collect())
    }

    /// Access events in `[from_ms, to_ms)` by door, by door id.
    pub fn access_by_door(&self, from_ms: i64, to_ms: i64) -> Result<Vec<DoorCounts>> {
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT door_id, kind, count(*), max(time_ms) FROM events
                 WHERE {ACCESS} AND time_ms >= ?1 AND time_ms < ?2 GROUP BY door_id, kind ORDER BY door_id"
            ))?;
            let mut out: Vec<DoorCounts> = Vec::new();
            let rows = st.query_map(params![from_ms, to_ms], |r| {
                Ok((
                    r.get::<_, Option<i64>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (door, kind, n) = row?;
                match out.last_mut().filter(|d| d.door_id == door) {
                    Some(d) => d.counts.add(&kind, n),
                    None => {
                        let mut counts = Counts::default();
                        counts.add(&kind, n);
                        out.push(DoorCounts {
                            door_id: door,
                            door_name: None,
                            counts,
                        });
                    }
                }
            }
            let mut name = c.prepare_cached(
                "SELECT door_name FROM events WHERE door_id = ?1 AND door_name IS NOT NULL
                 AND time_ms >= ?2 AND time_ms < ?3 ORDER BY time_ms DESC LIMIT 1",
            )?;
            for d in out.iter_mut().filter(|d| d.door_id.is_some()) {
                d.door_name = name
                    .query_map(params![d.door_id, from_ms, to_ms], |r| r.get(0))?
                    .next()
                    .transpose()?;
            }
            Ok(out)
        })
    }

    /// Doors forced and held open in `[from_ms, to_ms)` (events, derived ones included).
    pub fn door_alarms(&self, from_ms: i64, to_ms: i64) -> Result<(u64, u64)> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT kind, count(*) FROM events WHERE kind IN ('door_forced', 'door_held_open')
                 AND time_ms >= ?1 AND time_ms < ?2 GROUP BY kind",
            )?;
            let (mut forced, mut held) = (0u64, 0u64);
            let rows = st.query_map(params![from_ms, to_ms], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            for row in rows {
                match row? {
                    (k, n) if k == "door_forced" => forced += n.max(0) as u64,
                    (_, n) => held += n.max(0) as u64,
                }
            }
            Ok((forced, held))
        })
    }

    /// Users (Net2 ids) with an access event from `from_ms` on.
    pub fn access_users(&self, from_ms: i64) -> Result<Vec<i64>> {
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT DISTINCT user_id FROM events WHERE {ACCESS} AND time_ms >= ?1 AND user_id IS NOT NULL"
            ))?;
            st.query_map([from_ms], |r| r.get(0))?.collect()
        })
    }
}
