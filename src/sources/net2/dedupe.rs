//! The event cursor and deduplication state machine (pure).
//!
//! The same Net2 event can arrive three ways: live over SignalR (no id), in a REST page
//! (with `id`), and again in the next REST page (the `where eventTime>=cursor` query is
//! inclusive). Each is published once, and nothing distinct is ever dropped:
//! - two events with different Net2 ids are never duplicates; a REST event whose id was seen
//!   is (the overlap of two pages);
//! - a live copy and a REST copy are the same event when their fingerprints (type, user,
//!   door) match and their server-local times are within a second (live times have no
//!   fraction). Each copy pairs with at most one copy of the other kind, the nearest in time
//!   that is still unpaired (the same second first, over a whole REST page), so a burst —
//!   one card badged five times in a second, a door opening twice — stays a burst, whichever
//!   way its copies arrive and whichever copies were lost.
//! - A REST event waits for its live copy only while one can still come: SignalR pushes
//!   in order, in real time, and never replays, so a REST event from before the second of the
//!   last live event received had its live copy already, or never will. Without
//!   this, a REST event fetched after a SignalR outage waited for a copy that never came and
//!   swallowed the next live event of the same user at the same door.
//! - When a REST copy pairs with a live one, the live event's id and the REST id are reported
//!   ([`Admit::Paired`]) so the store records the Net2 id on the live row: after a restart the
//!   REST copy is known by id, and the stored history maps one to one onto Net2's.

use chrono::NaiveDateTime;
use std::collections::{HashSet, VecDeque};

/// How long unmatched copies are remembered. The REST safety poll runs every few minutes
/// while live is up, so a live event's REST copy arrives well within this.
const KEEP: chrono::Duration = chrono::Duration::hours(6);
const MAX_ENTRIES: usize = 50_000;
/// Live times have no fraction and REST times do; the two copies of one event are at most
/// this far apart.
const WINDOW: chrono::Duration = chrono::Duration::seconds(1);

/// An unpaired copy. A burst leaves tens of thousands of these for minutes (until the REST
/// poll pairs them), allocated among the burst's short-lived allocations: one small string
/// each kept most of the burst's heap pages resident for as long (issue 18). So a copy is
/// plain numbers; text only for a shape this source never produces.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    what: What,
    local: NaiveDateTime,
}

/// A fingerprint without its time part: `code|user|door`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum What {
    Ids(i64, i64, u64),
    Text(Box<str>),
}

impl What {
    fn of(s: &str) -> What {
        let mut parts = s.split('|');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(c), Some(u), Some(d), None) => match (exact(c), exact(u), exact(d)) {
                (Some(c), Some(u), Some(d)) => What::Ids(c, u, d),
                _ => What::Text(s.into()),
            },
            _ => What::Text(s.into()),
        }
    }
}

impl std::fmt::Display for What {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            What::Ids(c, u, d) => write!(f, "{c}|{u}|{d}"),
            What::Text(t) => f.write_str(t),
        }
    }
}

/// `s` as a number, only when the number prints back as `s` (no sign, no leading zero): two
/// texts are then the same exactly when their numbers are.
fn exact<T: std::str::FromStr + std::fmt::Display>(s: &str) -> Option<T> {
    let n: T = s.parse().ok()?;
    use std::fmt::Write;
    struct Same<'a>(&'a str, bool);
    impl Write for Same<'_> {
        fn write_str(&mut self, part: &str) -> std::fmt::Result {
            match self.0.strip_prefix(part) {
                Some(rest) => self.0 = rest,
                None => self.1 = false,
            }
            Ok(())
        }
    }
    let mut same = Same(s, true);
    write!(same, "{n}").ok()?;
    (same.1 && same.0.is_empty()).then_some(n)
}

/// The stored id of an unpaired live copy: the source's own
/// `net2:fp:<fingerprint>@<received ms>.<seq>` (`classify::unique_id`) kept as its two
/// numbers, rebuilt when it pairs; any other id (seeded from the database) as text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LiveId {
    Received { ms: i64, seq: u64 },
    Text(Box<str>),
}

impl LiveId {
    fn of(k: &Key, fingerprint: &str, id: &str) -> LiveId {
        let received = id
            .strip_prefix(super::classify::SOURCE)
            .and_then(|r| r.strip_prefix(":fp:"))
            .and_then(|r| r.strip_prefix(fingerprint))
            .and_then(|r| r.strip_prefix('@'))
            .and_then(|r| r.split_once('.'))
            .and_then(|(ms, seq)| Some((exact(ms)?, exact(seq)?)));
        match received {
            // Kept as numbers only if they give back this very id.
            Some((ms, seq)) if LiveId::Received { ms, seq }.text(k) == id => {
                LiveId::Received { ms, seq }
            }
            _ => LiveId::Text(id.into()),
        }
    }

    fn text(&self, k: &Key) -> String {
        match self {
            LiveId::Received { ms, seq } => format!(
                "{}:fp:{}|{}@{ms}.{seq}",
                super::classify::SOURCE,
                k.local.format(TIME),
                k.what
            ),
            LiveId::Text(t) => t.to_string(),
        }
    }
}

/// The fingerprint's time part (`classify::fingerprint`).
const TIME: &str = "%Y-%m-%dT%H:%M:%S";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    New,
    /// A REST event whose id was already published.
    DuplicateId,
    /// A live copy of a REST event already published.
    DuplicateCopy,
    /// The REST copy of the live event `event_id`, published already: store `source_id` on it.
    Paired {
        event_id: String,
        source_id: i64,
    },
}

#[derive(Debug, Default)]
pub struct Deduper {
    ids: HashSet<i64>,
    id_order: VecDeque<(NaiveDateTime, i64)>,
    /// Live events not yet matched by a REST copy, with the id each is stored under.
    live: VecDeque<(Key, LiveId)>,
    /// REST events not yet matched by a live copy.
    rest: VecDeque<Key>,
    /// The time of the last live event received (server-local; SignalR pushes in order):
    /// REST events from before this second will get no live copy any more.
    last_live: Option<NaiveDateTime>,
}

fn split(fp: &str) -> Option<Key> {
    let (t, what) = fp.split_once('|')?;
    let local = NaiveDateTime::parse_from_str(t, TIME).ok()?;
    Some(Key {
        what: What::of(what),
        local,
    })
}

/// Shrink a queue that holds a quarter of its room or less (amortised: it halves at most
/// when it has emptied by three quarters).
fn fit<T>(q: &mut VecDeque<T>) {
    if q.capacity() > 4 * q.len() + 64 {
        q.shrink_to(2 * q.len());
    }
}

/// Take the oldest unpaired copy of `k` at most `within` away from it.
fn take_within<T>(
    q: &mut VecDeque<T>,
    k: &Key,
    within: chrono::Duration,
    key: impl Fn(&T) -> &Key,
) -> Option<T> {
    let i = q.iter().position(|e| {
        let e = key(e);
        e.what == k.what && (e.local - k.local).abs() <= within
    })?;
    q.remove(i)
}

impl Deduper {
    /// Seed from the database after a restart: Net2 ids already stored (REST events, and live
    /// events whose REST copy was seen), and live events still waiting for their REST copy
    /// (`(fingerprint, event id)`).
    pub fn seed(
        &mut self,
        ids: impl IntoIterator<Item = i64>,
        live: impl IntoIterator<Item = (String, String)>,
    ) {
        let now = chrono::Utc::now().naive_utc();
        for id in ids {
            if self.ids.insert(id) {
                self.id_order.push_back((now, id));
            }
        }
        self.live.extend(live.into_iter().filter_map(|(f, id)| {
            let k = split(&f)?;
            let id = LiveId::of(&k, &f, &id);
            Some((k, id))
        }));
    }

    /// A REST event (`id` is Net2's; `event_id` the id it would be stored under).
    pub fn admit_rest(&mut self, id: Option<i64>, fingerprint: &str, event_id: &str) -> Admit {
        self.admit_rest_page(&[(id, fingerprint, event_id)])
            .pop()
            .unwrap_or(Admit::New)
    }

    /// A page of REST events, `(id, fingerprint, event id)` each, in the page's order.
    /// Copies are paired over the whole page, the same second first: a REST event whose own
    /// live copy was lost must not take the live copy of the next second's event when that
    /// event's REST copy, later in the page, matches it exactly.
    pub fn admit_rest_page(&mut self, page: &[(Option<i64>, &str, &str)]) -> Vec<Admit> {
        let mut out: Vec<Option<Admit>> = Vec::with_capacity(page.len());
        let mut keys: Vec<Option<Key>> = Vec::with_capacity(page.len());
        for (id, fp, _) in page {
            let key = split(fp);
            match id {
                Some(id) if self.ids.contains(id) => {
                    out.push(Some(Admit::DuplicateId));
                    keys.push(None);
                    continue;
                }
                Some(id) => {
                    let t = key.as_ref().map(|k| k.local).unwrap_or_default();
                    self.ids.insert(*id);
                    self.id_order.push_back((t, *id));
                }
                None => {}
            }
            out.push(key.is_none().then_some(Admit::New));
            keys.push(key);
        }
        for within in [chrono::Duration::zero(), WINDOW] {
            for (i, k) in keys.iter().enumerate() {
                let Some(k) = k.as_ref().filter(|_| out[i].is_none()) else {
                    continue;
                };
                if let Some((key, id)) = take_within(&mut self.live, k, within, |e| &e.0) {
                    out[i] = Some(match page[i].0 {
                        Some(source_id) => Admit::Paired {
                            event_id: id.text(&key),
                            source_id,
                        },
                        None => Admit::DuplicateCopy,
                    });
                }
            }
        }
        for (i, k) in keys.into_iter().enumerate() {
            if let (None, Some(k)) = (&out[i], k) {
                out[i] = Some(Admit::New);
                if self.last_live.is_none_or(|l| k.local >= l) {
                    self.rest.push_back(k);
                }
            }
        }
        self.trim();
        out.into_iter().map(|a| a.unwrap_or(Admit::New)).collect()
    }

    /// A live event (`event_id`: the id it is stored under).
    pub fn admit_live(&mut self, fingerprint: &str, event_id: &str) -> Admit {
        let Some(k) = split(fingerprint) else {
            return Admit::New;
        };
        self.last_live = Some(k.local);
        // The same second first, else within the window.
        if [chrono::Duration::zero(), WINDOW]
            .into_iter()
            .any(|within| take_within(&mut self.rest, &k, within, |e| e).is_some())
        {
            return Admit::DuplicateCopy;
        }
        let id = LiveId::of(&k, fingerprint, event_id);
        self.live.push_back((k, id));
        self.trim();
        Admit::New
    }

    /// Forget entries older than `KEEP` before the newest one, and cap the size; REST events
    /// that can no longer get a live copy leave their queue.
    fn trim(&mut self) {
        let newest = self
            .live
            .back()
            .map(|(k, _)| k.local)
            .max(self.rest.back().map(|k| k.local))
            .unwrap_or_default();
        let horizon = newest - KEEP;
        let rest_horizon = match self.last_live {
            Some(l) => l.max(horizon),
            None => horizon,
        };
        while self.rest.front().is_some_and(|k| k.local < rest_horizon)
            || self.rest.len() > MAX_ENTRIES
        {
            self.rest.pop_front();
        }
        while self.live.front().is_some_and(|(k, _)| k.local < horizon)
            || self.live.len() > MAX_ENTRIES
        {
            self.live.pop_front();
        }
        while self.id_order.len() > MAX_ENTRIES
            || self.id_order.front().is_some_and(|(t, _)| *t < horizon)
        {
            if let Some((_, id)) = self.id_order.pop_front() {
                self.ids.remove(&id);
            }
        }
        // A burst grows these to thousands of entries for a while (until the REST poll
        // pairs the live copies); give the room back when they empty again (issue 18: memory
        // after 100,000 events).
        fit(&mut self.live);
        fit(&mut self.rest);
        fit(&mut self.id_order);
        if self.ids.capacity() > 4 * self.ids.len() + 64 {
            self.ids.shrink_to(2 * self.ids.len());
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

    fn fp(sec: u32, what: &str) -> String {
        format!("2026-01-05T06:00:{sec:02}|{what}")
    }

    /// Admit a live copy under a fresh event id.
    fn live(d: &mut Deduper, sec: u32, what: &str) -> Admit {
        let id = format!("live-{sec}-{what}-{}", d.len());
        d.admit_live(&fp(sec, what), &id)
    }

    fn rest(d: &mut Deduper, id: i64, sec: u32, what: &str) -> Admit {
        d.admit_rest(Some(id), &fp(sec, what), &format!("net2:{id}"))
    }

    fn is_paired(a: &Admit) -> bool {
        matches!(a, Admit::Paired { .. })
    }

    #[test]
    fn rest_ids_are_unique_and_distinct_ids_are_never_duplicates() {
        let mut d = Deduper::default();
        assert_eq!(rest(&mut d, 1, 1, "26|8|7"), Admit::New);
        assert_eq!(rest(&mut d, 1, 1, "26|8|7"), Admit::DuplicateId);
        // Same second, type, user and door, another id: another event.
        assert_eq!(rest(&mut d, 2, 1, "26|8|7"), Admit::New);
        assert_eq!(rest(&mut d, 3, 1, "26|8|7"), Admit::New);
    }

    #[test]
    fn live_then_rest_is_one_event_and_the_rest_id_is_recorded_on_the_live_row() {
        let mut d = Deduper::default();
        assert_eq!(d.admit_live(&fp(1, "26|8|7"), "net2:fp:a"), Admit::New);
        assert_eq!(
            rest(&mut d, 1, 1, "26|8|7"),
            Admit::Paired {
                event_id: "net2:fp:a".into(),
                source_id: 1
            }
        );
        // The next inclusive page repeats it: by id now.
        assert_eq!(rest(&mut d, 1, 1, "26|8|7"), Admit::DuplicateId);
    }

    #[test]
    fn rest_then_live_is_one_event_within_a_second() {
        let mut d = Deduper::default();
        assert_eq!(rest(&mut d, 1, 1, "26|8|7"), Admit::New);
        assert_eq!(live(&mut d, 2, "26|8|7"), Admit::DuplicateCopy);
        // A different door is a different event.
        assert_eq!(live(&mut d, 1, "26|8|9"), Admit::New);
    }

    #[test]
    fn a_burst_in_one_second_stays_a_burst_whichever_way_it_arrives() {
        // Five badges of one card at one door in one second.
        let mut d = Deduper::default();
        for _ in 0..5 {
            assert_eq!(live(&mut d, 1, "20|8|7"), Admit::New);
        }
        for id in 1..=5 {
            assert!(is_paired(&rest(&mut d, id, 1, "20|8|7")));
        }
        assert_eq!(rest(&mut d, 6, 1, "20|8|7"), Admit::New, "a sixth is new");
        // REST first, then live.
        let mut d = Deduper::default();
        for id in 1..=5 {
            assert_eq!(rest(&mut d, id, 1, "20|8|7"), Admit::New);
        }
        for _ in 0..5 {
            assert_eq!(live(&mut d, 1, "20|8|7"), Admit::DuplicateCopy);
        }
        assert_eq!(live(&mut d, 1, "20|8|7"), Admit::New);
    }

    #[test]
    fn copies_pair_with_the_nearest_unpaired_copy() {
        // Several candidates in the window: the same second wins, whichever is older.
        let mut d = Deduper::default();
        assert_eq!(d.admit_live(&fp(20, "20|8|7"), "at-20"), Admit::New);
        assert_eq!(d.admit_live(&fp(21, "20|8|7"), "at-21"), Admit::New);
        assert_eq!(
            rest(&mut d, 21, 21, "20|8|7"),
            Admit::Paired {
                event_id: "at-21".into(),
                source_id: 21
            }
        );
        // With none in the same second, the neighbour second is taken.
        assert_eq!(
            rest(&mut d, 19, 19, "20|8|7"),
            Admit::Paired {
                event_id: "at-20".into(),
                source_id: 19
            }
        );
    }

    #[test]
    fn a_page_pairs_the_same_second_first() {
        // One card at one door at :00.5, :00.7, :00.9, :01.1, :01.3; the live copy of :00.9
        // was lost. Its REST copy must not take :01.1's live copy.
        let mut d = Deduper::default();
        for sec in [0, 0, 1, 1] {
            assert_eq!(live(&mut d, sec, "20|8|7"), Admit::New);
        }
        let page: Vec<(Option<i64>, String, String)> = [0, 0, 0, 1, 1]
            .iter()
            .enumerate()
            .map(|(i, sec)| (Some(i as i64), fp(*sec, "20|8|7"), format!("net2:{i}")))
            .collect();
        let page: Vec<_> = page
            .iter()
            .map(|(id, f, e)| (*id, f.as_str(), e.as_str()))
            .collect();
        let got = d.admit_rest_page(&page);
        assert!(is_paired(&got[0]) && is_paired(&got[1]));
        assert_eq!(got[2], Admit::New, "its live copy was lost: {got:?}");
        assert!(is_paired(&got[3]) && is_paired(&got[4]));
    }

    #[test]
    fn rest_events_from_an_outage_do_not_swallow_later_live_events() {
        let mut d = Deduper::default();
        assert_eq!(live(&mut d, 1, "20|8|7"), Admit::New);
        assert!(is_paired(&rest(&mut d, 1, 1, "20|8|7")));
        // SignalR is down from :02 to :30: events :29 and :30 come by REST only (fetched
        // after the reconnect, when live events are flowing again).
        assert_eq!(live(&mut d, 31, "46|0|9"), Admit::New);
        assert_eq!(rest(&mut d, 2, 29, "20|8|7"), Admit::New);
        assert_eq!(rest(&mut d, 3, 30, "20|8|7"), Admit::New);
        // The same user badges again at :31: a new event, not a copy of :30.
        assert_eq!(live(&mut d, 31, "20|8|7"), Admit::New);
        assert!(is_paired(&rest(&mut d, 4, 31, "20|8|7")));
    }

    #[test]
    fn seeded_from_database_after_restart() {
        let mut d = Deduper::default();
        d.seed([1], [(fp(5, "46|0|7"), "net2:fp:x".to_string())]);
        assert_eq!(rest(&mut d, 1, 1, "26|8|7"), Admit::DuplicateId);
        assert_eq!(
            rest(&mut d, 9, 5, "46|0|7"),
            Admit::Paired {
                event_id: "net2:fp:x".into(),
                source_id: 9
            }
        );
    }

    #[test]
    fn a_paired_burst_gives_its_room_back() {
        let mut d = Deduper::default();
        let base =
            NaiveDateTime::parse_from_str("2026-01-05T00:00:00", "%Y-%m-%dT%H:%M:%S").unwrap();
        let fps: Vec<String> = (0..20_000)
            .map(|i| {
                let t = base + chrono::Duration::seconds(i / 50);
                format!("{}|20|{i}|1", t.format("%Y-%m-%dT%H:%M:%S"))
            })
            .collect();
        for (i, f) in fps.iter().enumerate() {
            assert_eq!(d.admit_live(f, &format!("live-{i}")), Admit::New);
        }
        let grown = d.live.capacity();
        assert!(grown >= 20_000);
        // The REST poll brings the copies, a page at a time: every live copy pairs.
        for (n, page) in fps.chunks(500).enumerate() {
            let page: Vec<(Option<i64>, &str, String)> = page
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    (
                        Some((n * 500 + i) as i64),
                        f.as_str(),
                        format!("net2:{n}-{i}"),
                    )
                })
                .collect();
            let page: Vec<_> = page.iter().map(|(a, b, c)| (*a, *b, c.as_str())).collect();
            assert!(
                d.admit_rest_page(&page)
                    .iter()
                    .all(|a| matches!(a, Admit::Paired { .. }))
            );
        }
        assert!(d.live.is_empty());
        assert!(
            d.live.capacity() <= 64,
            "{} of {grown} kept",
            d.live.capacity()
        );
    }

    /// An unpaired live copy is plain numbers (no allocation each: issue 18), and pairs
    /// under exactly the id it was admitted with, whatever its shape.
    #[test]
    fn unpaired_copies_hold_numbers_and_give_back_their_exact_ids() {
        let mut d = Deduper::default();
        let f = fp(7, "20|8|7");
        let own = format!("net2:fp:{f}@1767592807123.42");
        let odd = [
            format!("net2:fp:{f}@01767592807123.42"), // a leading zero
            format!("net2:fp:{f}@1767592807123"),     // no sequence
            "net2:fp:x".to_string(),
            format!("other:fp:{f}@1.2"),
        ];
        assert_eq!(d.admit_live(&f, &own), Admit::New);
        for id in &odd {
            assert_eq!(d.admit_live(&f, id), Admit::New);
        }
        assert_eq!(
            d.live.front().map(|(k, id)| (&k.what, id)),
            Some((
                &What::Ids(20, 8, 7),
                &LiveId::Received {
                    ms: 1767592807123,
                    seq: 42
                }
            ))
        );
        let mut paired = Vec::new();
        for n in 0..5 {
            match rest(&mut d, n, 7, "20|8|7") {
                Admit::Paired { event_id, .. } => paired.push(event_id),
                other => panic!("{other:?}"),
            }
        }
        let mut want = vec![own];
        want.extend(odd);
        assert_eq!(paired, want);
        // Text that is not the numbers it parses to stays distinct from them.
        assert_eq!(What::of("026|8|7"), What::Text("026|8|7".into()));
        assert_ne!(What::of("026|8|7"), What::of("26|8|7"));
        assert_eq!(
            What::of("-3|0|18446744073709551615").to_string(),
            "-3|0|18446744073709551615"
        );
        assert_eq!(What::of("20|8|-7"), What::Text("20|8|-7".into()));
    }

    #[test]
    fn memory_is_bounded() {
        let mut d = Deduper::default();
        let base =
            NaiveDateTime::parse_from_str("2026-01-05T00:00:00", "%Y-%m-%dT%H:%M:%S").unwrap();
        for i in 0..(MAX_ENTRIES as i64 + 10_000) {
            let t = base + chrono::Duration::seconds(i);
            let f = format!("{}|20|1|1", t.format("%Y-%m-%dT%H:%M:%S"));
            d.admit_rest(Some(i), &f, "x");
            if i % 2 == 0 {
                d.admit_live(&f, "y");
            }
        }
        assert!(d.len() <= 3 * MAX_ENTRIES, "{}", d.len());
    }
}
