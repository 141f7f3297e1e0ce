//! The Net2 server's UTC offset, and the live items that wait for it (pure).
//!
//! REST event times carry the server's offset (`"2026-01-05T06:00:01.017+01:00"`, seen);
//! SignalR `liveEvents` times do not (`"2026-01-05T06:00:01"`, the Net2 PC's wall clock). The
//! server's zone need not be this machine's (a Copenhagen server, gatehouse on a Raspberry Pi
//! left at UTC: read in the machine's zone, every live event was an hour late), and none of
//! the endpoints known to answer (protocols.md §1) names it: `/serverSettings/version` is
//! versions only, `/timezones` are access schedules, the token answer's `expiry_datetime` is
//! UTC, and a user's `activateDate` has the offset of that date, not of today. So the offset
//! is learned from REST event times, the newest one seen, and this machine's zone is never
//! used to read a live time.
//!
//! A live event is used at once only when the offset is known and agrees with the event's own
//! time: its wall time minus the moment it arrived, to the quarter hour. SignalR pushes in real
//! time, so that is the server's offset unless its clock is off by minutes, an ACU buffered
//! the event, or DST has just changed. Otherwise the event waits — with everything that came
//! after it on the socket, in arrival order, so a door's status frame never overtakes the
//! event before it — for the next REST answer, which should hold the event's own copy with
//! its offset (guess: Net2 logs an event before it pushes it, as the simulator does). Nothing
//! is dropped: an event whose copy is missing from an answer asked after it arrived gets the
//! newest offset REST has shown (or, when REST has never shown one, the estimate from its own
//! time, logged), and anything held for [`HOLD_LIMIT`] (REST not answering) is released the
//! same way.

use crate::model::{DoorId, Event};
use crate::sources::net2::types::StatusFlags;
use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use std::collections::VecDeque;
use tokio::time::Instant;

/// Live items wait at most this long for a REST answer.
pub const HOLD_LIMIT: chrono::Duration = chrono::Duration::seconds(30);
/// More than this many held items (a REST outage during a burst) release the oldest.
const MAX_HELD: usize = 10_000;
/// Offsets that exist run from -12:00 to +14:00; a live time further than this from its
/// arrival says nothing about the zone.
const MAX_OFFSET_S: i64 = 14 * 3600;
/// Zone offsets are whole quarter hours (+05:45 is the oddest in use).
const QUARTER_HOUR_S: i64 = 15 * 60;

/// One thing the SignalR socket delivered, in the order it came.
#[derive(Debug, Clone)]
pub enum Live {
    /// A `liveEvents` element. `naive`: its `eventTime` is a server-local wall time without
    /// an offset, still to be placed in the server's zone (an event without a readable time
    /// is dated on arrival, and one with an offset is placed already).
    Event { ev: Box<Event>, naive: bool },
    /// A `doorStatusEvents` element.
    Flags(DoorId, StatusFlags),
    /// A `doorEvents` element (`locked`).
    Locked(DoorId, bool),
}

#[derive(Debug)]
struct Held {
    item: Live,
    at: Instant,
    received: DateTime<Utc>,
}

#[derive(Debug)]
pub struct ServerZone {
    /// The offset of the newest REST event seen (by instant), and that instant.
    known: Option<(FixedOffset, DateTime<Utc>)>,
    /// An offset live times imply that REST showed to go with `known` (a server clock some
    /// minutes off rounds to a neighbouring quarter hour).
    agreed: Option<FixedOffset>,
    /// The offset the latest live time implied: the server's offset now, by its own clock.
    hint: Option<FixedOffset>,
    held: VecDeque<Held>,
}

/// The offset a live event's wall time implies, given when it arrived: the difference to the
/// quarter hour. `None` when no zone is that far off.
pub fn implied(local: NaiveDateTime, received: DateTime<Utc>) -> Option<FixedOffset> {
    let s = (local - received.naive_utc()).num_seconds();
    if s.abs() > MAX_OFFSET_S + QUARTER_HOUR_S / 2 {
        return None;
    }
    let q = (s as f64 / QUARTER_HOUR_S as f64).round() as i64 * QUARTER_HOUR_S;
    FixedOffset::east_opt(q.clamp(-MAX_OFFSET_S, MAX_OFFSET_S) as i32)
}

/// `ev`'s wall time placed in `offset`.
fn place(ev: &mut Event, offset: FixedOffset) {
    let local = ev.time.naive_local();
    ev.time = offset
        .from_local_datetime(&local)
        .single()
        .unwrap_or(ev.time);
}

/// The offset of `ev`'s own REST copy in `page`: same type, user and door, the nearest time
/// within a second (live times have no fraction).
fn copy_offset(page: &[(String, DateTime<FixedOffset>)], ev: &Event) -> Option<FixedOffset> {
    let what = ev.fingerprint.split_once('|')?.1;
    let local = ev.time.naive_local();
    page.iter()
        .filter(|(fp, _)| fp.split_once('|').is_some_and(|(_, w)| w == what))
        .map(|(_, t)| ((t.naive_local() - local).abs(), *t.offset()))
        .filter(|(d, _)| *d <= chrono::Duration::seconds(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, o)| o)
}

impl ServerZone {
    /// `cursor`: the newest REST event time of an earlier run (its offset is the last one
    /// known; a DST change since then shows as a disagreeing live time and is checked).
    pub fn new(cursor: Option<DateTime<FixedOffset>>) -> ServerZone {
        ServerZone {
            known: cursor.map(|c| (*c.offset(), c.with_timezone(&Utc))),
            agreed: None,
            hint: None,
            held: VecDeque::new(),
        }
    }

    /// The server's offset as REST last showed it.
    pub fn offset(&self) -> Option<FixedOffset> {
        self.known.map(|(o, _)| o)
    }

    /// The server's offset now, as well as it can be told, for the server-local `where`
    /// window of a REST query: what the latest live time implied (REST's offset when the two
    /// agree), else `machine` (this machine's offset now: right when both share a zone, and a
    /// wider window than needed when not).
    pub fn now_offset(&self, machine: FixedOffset) -> FixedOffset {
        match (self.hint, self.offset()) {
            (Some(h), Some(k)) if h == k || Some(h) == self.agreed => k,
            (Some(h), _) => h,
            (None, _) => machine,
        }
    }

    pub fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// A REST event time: the newest one (by instant) tells the server's offset.
    pub fn learn(&mut self, t: DateTime<FixedOffset>) {
        let at = t.with_timezone(&Utc);
        if self.known.is_none_or(|(_, seen)| at >= seen) {
            if self.offset() != Some(*t.offset()) {
                self.agreed = None;
            }
            self.known = Some((*t.offset(), at));
        }
    }

    /// A live item as it arrives (`at`, `received`: now). `Some`: use it now (an event's
    /// time is placed in the server's zone). `None`: it is held; ask REST soon.
    pub fn arrive(&mut self, mut item: Live, at: Instant, received: DateTime<Utc>) -> Option<Live> {
        let mut ready = true;
        if let Live::Event { ev, naive: true } = &mut item {
            let implied = implied(ev.time.naive_local(), received);
            if implied.is_some() {
                self.hint = implied;
            }
            match self.offset() {
                Some(k) if implied == Some(k) || (implied.is_some() && implied == self.agreed) => {
                    place(ev, k)
                }
                _ => ready = false,
            }
        }
        if ready && self.held.is_empty() {
            return Some(item);
        }
        self.held.push_back(Held { item, at, received });
        None
    }

    /// A REST answer was read: `page` holds the fingerprint and time of each event in it (its
    /// times already passed to [`learn`](Self::learn)), `asked` is when the request was sent,
    /// `last` says no further page follows. Returns the held items it settles, in order, with
    /// the instant each arrived: an event whose copy is in the page takes that copy's offset;
    /// on the last page, one that arrived before the request takes the newest offset known.
    pub fn rest_answer(
        &mut self,
        page: &[(String, DateTime<FixedOffset>)],
        asked: DateTime<Utc>,
        last: bool,
    ) -> Vec<(Live, Instant)> {
        let mut out = Vec::new();
        while let Some(front) = self.held.front() {
            let offset = match &front.item {
                Live::Event { ev, naive: true } => match copy_offset(page, ev) {
                    Some(o) => {
                        // The copy is the authority; its live time's disagreement (a clock
                        // some minutes off) is fine from now on.
                        let implied = implied(ev.time.naive_local(), front.received);
                        if Some(o) == self.offset() && implied.is_some() {
                            self.agreed = implied;
                        }
                        Some(o)
                    }
                    None if last && front.received <= asked => Some(self.best(ev, front.received)),
                    None => break,
                },
                _ => None,
            };
            out.push(self.pop(offset));
        }
        out
    }

    /// When [`ServerZone::overdue`] next releases something (wall clock): the front item's
    /// hold limit, or the distant past when beyond the size cap (release now). `None`:
    /// nothing is held.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        if self.held.len() > MAX_HELD {
            return Some(DateTime::<Utc>::UNIX_EPOCH);
        }
        self.held.front().map(|f| f.received + HOLD_LIMIT)
    }

    /// Items held longer than [`HOLD_LIMIT`], or beyond the size cap, are released with the
    /// best offset known (REST is not answering), in order.
    pub fn overdue(&mut self, now: DateTime<Utc>) -> Vec<(Live, Instant)> {
        let mut out = Vec::new();
        while let Some(front) = self.held.front() {
            if front.received + HOLD_LIMIT > now && self.held.len() <= MAX_HELD {
                break;
            }
            let offset = match &front.item {
                Live::Event { ev, naive: true } => Some(self.best(ev, front.received)),
                _ => None,
            };
            out.push(self.pop(offset));
        }
        out
    }

    /// Without the event's own REST copy: the offset REST showed last, else the one the
    /// event's own time implies, else its time is read as UTC (logged either way).
    fn best(&self, ev: &Event, received: DateTime<Utc>) -> FixedOffset {
        if let Some(k) = self.offset() {
            return k;
        }
        let guess = implied(ev.time.naive_local(), received);
        tracing::warn!(
            event = %ev.id,
            estimate = ?guess,
            "no REST event has shown the Net2 server's UTC offset yet; a live event's time is placed by an estimate from its arrival"
        );
        guess.unwrap_or(FixedOffset::east_opt(0).expect("zero offset"))
    }

    fn pop(&mut self, offset: Option<FixedOffset>) -> (Live, Instant) {
        let Held { mut item, at, .. } = self.held.pop_front().expect("a held item");
        if let (Live::Event { ev, .. }, Some(o)) = (&mut item, offset) {
            place(ev, o);
        }
        (item, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventKind, Via};

    fn off(h: i32) -> FixedOffset {
        FixedOffset::east_opt(h * 3600).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// A live event as classify makes it: the wall time `local`, in whatever offset.
    fn live(local: &str, user: i64) -> Live {
        let t = NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M:%S").unwrap();
        let ev = Event {
            id: format!("net2:fp:{local}|20|{user}|1"),
            source: "net2".into(),
            source_id: None,
            fingerprint: format!("{local}|20|{user}|1"),
            time: Utc.from_utc_datetime(&t).fixed_offset(),
            received: Utc::now(),
            via: Via::Live,
            door: None,
            user: None,
            kind: EventKind::DoorBell,
            code: Some(20),
            description: None,
            raw: String::new(),
        };
        Live::Event {
            ev: Box::new(ev),
            naive: true,
        }
    }

    fn time(l: &Live) -> String {
        match l {
            Live::Event { ev, .. } => ev.time.to_rfc3339(),
            _ => "flags".into(),
        }
    }

    fn rest(local: &str, user: i64, offset: &str) -> (String, DateTime<FixedOffset>) {
        (
            format!("{local}|20|{user}|1"),
            DateTime::parse_from_rfc3339(&format!("{local}.017{offset}")).unwrap(),
        )
    }

    #[test]
    fn implied_offset_is_the_quarter_hour_between_wall_time_and_arrival() {
        let at = utc("2026-01-05T05:00:00Z");
        let t = |s| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").unwrap();
        assert_eq!(implied(t("2026-01-05T06:00:01"), at), Some(off(1)));
        // A server clock 5 minutes slow, delivery a second late: still +01:00.
        assert_eq!(implied(t("2026-01-05T05:55:00"), at), Some(off(1)));
        assert_eq!(
            implied(t("2026-01-05T10:45:00"), at),
            FixedOffset::east_opt(5 * 3600 + 45 * 60)
        );
        assert_eq!(implied(t("2026-01-04T20:00:00"), at), Some(off(-9)));
        assert_eq!(
            implied(t("2026-01-07T05:00:00"), at),
            None,
            "no zone is 2 days off"
        );
    }

    #[test]
    fn nothing_is_used_before_rest_has_shown_the_offset_and_order_is_kept() {
        let mut z = ServerZone::new(None);
        let now = Instant::now();
        let at = utc("2026-01-05T05:00:01Z");
        // Live, in this order: an event, a door status, another event.
        assert!(z.arrive(live("2026-01-05T06:00:00", 8), now, at).is_none());
        assert!(
            z.arrive(Live::Flags(1, StatusFlags::default()), now, at)
                .is_none()
        );
        assert!(z.arrive(live("2026-01-05T06:00:01", 12), now, at).is_none());
        // The first REST answer is empty and was asked before the events came: nothing is
        // known, nothing released.
        assert!(
            z.rest_answer(&[], utc("2026-01-05T05:00:00Z"), true)
                .is_empty()
        );
        // The next one has the first event's copy.
        let page = [rest("2026-01-05T06:00:00", 8, "+01:00")];
        z.learn(page[0].1);
        let out: Vec<String> = z
            .rest_answer(&page, utc("2026-01-05T05:00:01.5Z"), true)
            .iter()
            .map(|(l, _)| time(l))
            .collect();
        assert_eq!(
            out,
            vec![
                "2026-01-05T06:00:00+01:00",
                "flags",
                "2026-01-05T06:00:01+01:00"
            ]
        );
        assert!(!z.is_holding());
        // From now on live events agreeing with the offset pass at once.
        let l = z
            .arrive(
                live("2026-01-05T06:10:00", 8),
                now,
                utc("2026-01-05T05:10:00Z"),
            )
            .unwrap();
        assert_eq!(time(&l), "2026-01-05T06:10:00+01:00");
    }

    #[test]
    fn a_dst_change_holds_the_first_event_until_its_rest_copy_tells_the_new_offset() {
        let mut z = ServerZone::new(Some(
            DateTime::parse_from_rfc3339("2026-03-29T01:59:00+01:00").unwrap(),
        ));
        let now = Instant::now();
        // 01:00Z: clocks went from 02:00 to 03:00 (+02:00).
        let at = utc("2026-03-29T01:00:05Z");
        assert_eq!(
            z.now_offset(off(0)),
            off(0),
            "no live time yet: the machine's"
        );
        assert!(z.arrive(live("2026-03-29T03:00:05", 8), now, at).is_none());
        assert_eq!(
            z.now_offset(off(0)),
            off(2),
            "the REST window follows the live clock"
        );
        // A REST answer without the copy, asked before the event: it waits.
        assert!(
            z.rest_answer(&[], utc("2026-03-29T01:00:04Z"), true)
                .is_empty()
        );
        let page = [rest("2026-03-29T03:00:05", 8, "+02:00")];
        z.learn(page[0].1);
        let out = z.rest_answer(&page, utc("2026-03-29T01:00:06Z"), true);
        assert_eq!(time(&out[0].0), "2026-03-29T03:00:05+02:00");
        assert_eq!(z.offset(), Some(off(2)));
    }

    #[test]
    fn a_skewed_server_clock_is_agreed_once_by_rest() {
        let mut z = ServerZone::new(Some(
            DateTime::parse_from_rfc3339("2026-01-05T05:00:00+01:00").unwrap(),
        ));
        let now = Instant::now();
        // The Net2 PC is 20 minutes fast: its times imply +01:15.
        assert!(
            z.arrive(
                live("2026-01-05T06:20:00", 8),
                now,
                utc("2026-01-05T05:00:00Z")
            )
            .is_none()
        );
        let page = [rest("2026-01-05T06:20:00", 8, "+01:00")];
        z.learn(page[0].1);
        let out = z.rest_answer(&page, utc("2026-01-05T05:00:01Z"), true);
        assert_eq!(time(&out[0].0), "2026-01-05T06:20:00+01:00");
        let l = z
            .arrive(
                live("2026-01-05T06:30:00", 8),
                now,
                utc("2026-01-05T05:10:00Z"),
            )
            .expect("the same skew passes now");
        assert_eq!(time(&l), "2026-01-05T06:30:00+01:00");
    }

    #[test]
    fn an_event_rest_never_shows_is_released_with_the_known_offset_never_dropped() {
        let mut z = ServerZone::new(Some(
            DateTime::parse_from_rfc3339("2026-01-05T06:00:00+01:00").unwrap(),
        ));
        let now = Instant::now();
        // An ACU back online pushes an event from an hour ago (it implies +00:00).
        let at = utc("2026-01-05T06:00:00Z");
        assert!(z.arrive(live("2026-01-05T06:00:00", 8), now, at).is_none());
        // A later page that is not the last: it may still come.
        assert!(
            z.rest_answer(&[], utc("2026-01-05T06:00:01Z"), false)
                .is_empty()
        );
        let out = z.rest_answer(&[], utc("2026-01-05T06:00:01Z"), true);
        assert_eq!(time(&out[0].0), "2026-01-05T06:00:00+01:00");
    }

    #[test]
    fn without_rest_held_items_go_after_the_hold_limit() {
        let mut z = ServerZone::new(None);
        let now = Instant::now();
        let at = utc("2026-01-05T05:00:00Z");
        assert_eq!(z.next_deadline(), None);
        assert!(z.arrive(live("2026-01-05T06:00:00", 8), now, at).is_none());
        assert_eq!(z.next_deadline(), Some(at + HOLD_LIMIT));
        assert!(z.overdue(at + chrono::Duration::seconds(29)).is_empty());
        let out = z.overdue(at + HOLD_LIMIT);
        assert_eq!(z.next_deadline(), None);
        // Nothing from REST at all: the estimate from its own arrival.
        assert_eq!(time(&out[0].0), "2026-01-05T06:00:00+01:00");
    }
}
