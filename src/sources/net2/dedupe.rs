//! The event cursor and deduplication state machine (pure).
//!
//! The same Net2 event can arrive three ways: live over SignalR (no id), in a REST page
//! (with `id`), and again in the next REST page (the `where eventTime>=cursor` query is
//! inclusive). Each is published once:
//! - REST events are unique by `id`;
//! - a REST event and a live event are the same when their fingerprints (type, user, door)
//!   match and their server-local times are within a second (live times have no fraction);
//!   each copy matches at most one other, so two real swipes in one second stay two events.

use chrono::NaiveDateTime;
use std::collections::{HashSet, VecDeque};

/// How long unmatched copies are remembered. The REST safety poll runs every few minutes
/// while live is up, so a live event's REST copy arrives well within this.
const KEEP: chrono::Duration = chrono::Duration::hours(6);
const MAX_ENTRIES: usize = 50_000;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    /// Fingerprint without the time part: `code|user|door`.
    what: String,
    local: NaiveDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    New,
    /// A REST event whose id was already published.
    DuplicateId,
    /// The other copy (live or REST) of an event already published.
    DuplicateCopy,
}

#[derive(Debug, Default)]
pub struct Deduper {
    ids: HashSet<i64>,
    id_order: VecDeque<(NaiveDateTime, i64)>,
    /// Live events not yet matched by a REST copy.
    live: VecDeque<Key>,
    /// REST events not yet matched by a live copy.
    rest: VecDeque<Key>,
}

fn split(fp: &str) -> Option<Key> {
    let (t, what) = fp.split_once('|')?;
    let local = NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S").ok()?;
    Some(Key {
        what: what.to_string(),
        local,
    })
}

fn take_match(q: &mut VecDeque<Key>, k: &Key) -> bool {
    let pos = q
        .iter()
        .position(|e| e.what == k.what && (e.local - k.local).num_seconds().abs() <= 1);
    pos.map(|p| q.remove(p)).is_some()
}

impl Deduper {
    /// Seed from the database after a restart: REST ids, and the fingerprints of recent live
    /// events (still waiting for their REST copy) and REST events (their live copy may follow).
    pub fn seed(
        &mut self,
        ids: impl IntoIterator<Item = i64>,
        live: impl IntoIterator<Item = String>,
        rest: impl IntoIterator<Item = String>,
    ) {
        let now = chrono::Utc::now().naive_utc();
        for id in ids {
            if self.ids.insert(id) {
                self.id_order.push_back((now, id));
            }
        }
        self.live.extend(live.into_iter().filter_map(|f| split(&f)));
        self.rest.extend(rest.into_iter().filter_map(|f| split(&f)));
    }

    pub fn admit_rest(&mut self, id: Option<i64>, fingerprint: &str) -> Admit {
        if let Some(id) = id {
            if self.ids.contains(&id) {
                return Admit::DuplicateId;
            }
            let t = split(fingerprint).map(|k| k.local).unwrap_or_default();
            self.ids.insert(id);
            self.id_order.push_back((t, id));
        }
        let Some(k) = split(fingerprint) else {
            return Admit::New;
        };
        if take_match(&mut self.live, &k) {
            return Admit::DuplicateCopy;
        }
        self.rest.push_back(k);
        self.trim();
        Admit::New
    }

    pub fn admit_live(&mut self, fingerprint: &str) -> Admit {
        let Some(k) = split(fingerprint) else {
            return Admit::New;
        };
        if take_match(&mut self.rest, &k) {
            return Admit::DuplicateCopy;
        }
        self.live.push_back(k);
        self.trim();
        Admit::New
    }

    /// Forget entries older than `KEEP` before the newest one, and cap the size.
    fn trim(&mut self) {
        let newest = self
            .live
            .back()
            .map(|k| k.local)
            .max(self.rest.back().map(|k| k.local))
            .unwrap_or_default();
        let horizon = newest - KEEP;
        for q in [&mut self.live, &mut self.rest] {
            while q.front().is_some_and(|k| k.local < horizon) || q.len() > MAX_ENTRIES {
                q.pop_front();
            }
        }
        while self.id_order.len() > MAX_ENTRIES
            || self.id_order.front().is_some_and(|(t, _)| *t < horizon)
        {
            if let Some((_, id)) = self.id_order.pop_front() {
                self.ids.remove(&id);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len() + self.live.len() + self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_ids_are_unique() {
        let mut d = Deduper::default();
        assert_eq!(
            d.admit_rest(Some(1), "2026-01-05T06:00:01|26|8|7"),
            Admit::New
        );
        assert_eq!(
            d.admit_rest(Some(1), "2026-01-05T06:00:01|26|8|7"),
            Admit::DuplicateId
        );
        assert_eq!(
            d.admit_rest(Some(2), "2026-01-05T06:00:02|46|0|7"),
            Admit::New
        );
    }

    #[test]
    fn live_then_rest_is_one_event() {
        let mut d = Deduper::default();
        assert_eq!(d.admit_live("2026-01-05T06:00:01|26|8|7"), Admit::New);
        assert_eq!(
            d.admit_rest(Some(1), "2026-01-05T06:00:01|26|8|7"),
            Admit::DuplicateCopy
        );
        // The next inclusive page repeats it: by id now.
        assert_eq!(
            d.admit_rest(Some(1), "2026-01-05T06:00:01|26|8|7"),
            Admit::DuplicateId
        );
    }

    #[test]
    fn rest_then_live_is_one_event_within_a_second() {
        let mut d = Deduper::default();
        assert_eq!(
            d.admit_rest(Some(1), "2026-01-05T06:00:01|26|8|7"),
            Admit::New
        );
        assert_eq!(
            d.admit_live("2026-01-05T06:00:02|26|8|7"),
            Admit::DuplicateCopy
        );
        // A different door is a different event.
        assert_eq!(d.admit_live("2026-01-05T06:00:01|26|8|9"), Admit::New);
    }

    #[test]
    fn two_real_swipes_in_one_second_stay_two() {
        let mut d = Deduper::default();
        assert_eq!(d.admit_live("2026-01-05T06:00:01|20|8|7"), Admit::New);
        assert_eq!(d.admit_live("2026-01-05T06:00:01|20|8|7"), Admit::New);
        assert_eq!(
            d.admit_rest(Some(1), "2026-01-05T06:00:01|20|8|7"),
            Admit::DuplicateCopy
        );
        assert_eq!(
            d.admit_rest(Some(2), "2026-01-05T06:00:01|20|8|7"),
            Admit::DuplicateCopy
        );
        assert_eq!(
            d.admit_rest(Some(3), "2026-01-05T06:00:01|20|8|7"),
            Admit::New
        );
    }

    #[test]
    fn seeded_from_database_after_restart() {
        let mut d = Deduper::default();
        d.seed([1], ["2026-01-05T06:00:05|46|0|7".to_string()], []);
        assert_eq!(
            d.admit_rest(Some(1), "2026-01-05T06:00:01|26|8|7"),
            Admit::DuplicateId
        );
        assert_eq!(
            d.admit_rest(Some(9), "2026-01-05T06:00:05|46|0|7"),
            Admit::DuplicateCopy
        );
    }

    #[test]
    fn memory_is_bounded() {
        let mut d = Deduper::default();
        let base =
            NaiveDateTime::parse_from_str("2026-01-05T00:00:00", "%Y-%m-%dT%H:%M:%S").unwrap();
        for i in 0..(MAX_ENTRIES as i64 + 10_000) {
            let t = base + chrono::Duration::seconds(i);
            d.admit_rest(
                Some(i),
                &format!("{}|20|1|1", t.format("%Y-%m-%dT%H:%M:%S")),
            );
        }
        assert!(d.len() <= 2 * MAX_ENTRIES, "{}", d.len());
    }
}
