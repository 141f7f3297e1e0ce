//! Time behind a trait: wall time (what the user reads, what is persisted) and monotonic time
//! (how long something took), so logic that waits for a moment can be driven by a test, and so
//! a test can step the wall clock the way NTP does on a Raspberry Pi.
//!
//! A Pi has no real-time clock. At boot the wall clock is whatever fake-hwclock restored (the
//! last shutdown), or systemd's build time, or 1970; when NTP syncs it is *stepped*, often by
//! hours or days, forwards and sometimes backwards, and gatehouse may be running by then (it
//! starts after network-online, not after time-sync). So:
//!
//! - durations and deadlines inside the process are measured on [`Clock::mono`], which is
//!   never stepped;
//! - a decision that has to be taken on the wall clock (retention by an event's timestamp, a
//!   persisted expiry) is taken only while [`WallWatch`] trusts it: not earlier than the
//!   binary's build time, and not within a settling period after a step.

use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

pub trait Clock: Send + Sync + 'static {
    /// Wall time: may be stepped at any moment (NTP).
    fn now(&self) -> DateTime<Utc>;
    /// Monotonic time: never stepped. tokio's, so a paused test runtime drives it.
    fn mono(&self) -> Instant {
        Instant::now()
    }
    /// How often a task that watches this clock for a moment should look at it, given what it
    /// would use with the system clock: a test clock that is moved by hand shortens it.
    fn poll(&self, every: Duration) -> Duration {
        every
    }
    /// Whether an NTP client has set the wall clock ([`kernel_synced`]); `None`: unknown.
    fn synced(&self) -> Option<bool> {
        kernel_synced()
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system clock moved by offsets a test sets: "an hour later" without the hour
/// ([`OffsetClock::advance`]: wall and monotonic time both move), or NTP stepping the wall
/// clock ([`OffsetClock::jump`]: only wall time moves).
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_ms: AtomicI64,
    mono_offset_ms: AtomicI64,
    /// [`Clock::poll`] for tasks watching it (0: theirs).
    poll_ms: AtomicI64,
    /// [`Clock::synced`]: 0 yes (the default), 1 no, 2 unknown.
    unsynced: std::sync::atomic::AtomicU8,
}

impl OffsetClock {
    pub fn new() -> OffsetClock {
        OffsetClock::default()
    }

    /// Tasks that watch this clock look at it at least every `d` (a test moves it by hand and
    /// wants a daily job to notice within moments).
    pub fn poll_every(&self, d: Duration) {
        self.poll_ms.store(d.as_millis() as i64, Ordering::Relaxed);
    }

    /// Let `d` pass: wall and monotonic time move `d` forward (and keep following the system
    /// clock from there).
    pub fn advance(&self, d: Duration) {
        let ms = d.as_millis() as i64;
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
        self.mono_offset_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// What [`Clock::synced`] says (`Some(true)` unless set).
    pub fn set_synced(&self, s: Option<bool>) {
        let v = match s {
            Some(true) => 0,
            Some(false) => 1,
            None => 2,
        };
        self.unsynced.store(v, Ordering::Relaxed);
    }

    /// Step the wall clock by `by` (negative: backwards), as NTP does; no time passes.
    pub fn jump(&self, by: chrono::Duration) {
        self.offset_ms
            .fetch_add(by.num_milliseconds(), Ordering::Relaxed);
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    fn mono(&self) -> Instant {
        let ms = self.mono_offset_ms.load(Ordering::Relaxed);
        Instant::now() + Duration::from_millis(ms.max(0) as u64)
    }

    fn synced(&self) -> Option<bool> {
        match self.unsynced.load(Ordering::Relaxed) {
            0 => Some(true),
            1 => Some(false),
            _ => None,
        }
    }

    fn poll(&self, every: Duration) -> Duration {
        match self.poll_ms.load(Ordering::Relaxed) {
            ms if ms > 0 => every.min(Duration::from_millis(ms as u64)),
            _ => every,
        }
    }
}

/// When this binary was built (`SOURCE_DATE_EPOCH` for a reproducible build): a wall clock
/// earlier than this has not been set yet (fake-hwclock missing, or 1970).
pub fn build_time() -> DateTime<Utc> {
    env!("GATEHOUSE_BUILD_EPOCH")
        .parse::<i64>()
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .unwrap_or_default()
}

/// `Err` (a clear message) when `now` is earlier than the build: the clock is not set, and
/// `what` would be wrong.
pub fn ensure_set(now: DateTime<Utc>, what: &str) -> crate::error::Result<()> {
    let built = build_time();
    if now < built {
        return Err(crate::error::Error::new(
            crate::error::ErrorKind::InvalidArgument,
            format!(
                "the system clock reads {now}, before this build ({built}): it is not set yet (no NTP sync? check `timedatectl`), and {what}"
            ),
        ));
    }
    Ok(())
}

/// Whether the kernel says the wall clock is synchronised (an NTP client — timesyncd,
/// chrony, ntpd — clears `STA_UNSYNC` through adjtimex once it has set it; this is what
/// `timedatectl` shows as "System clock synchronized"). `None` when it cannot be asked.
/// Only for logs: a Pi without network never syncs, and must still prune its history.
pub fn kernel_synced() -> Option<bool> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a zeroed timex with modes = 0 only reads the kernel's state.
        let mut t: libc::timex = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::adjtimex(&mut t) };
        if r < 0 {
            return None;
        }
        Some(r != libc::TIME_ERROR)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// A step of the wall clock seen by [`WallWatch::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// How far the wall clock moved beyond the time that passed (negative: backwards).
    pub by: chrono::Duration,
    /// The wall clock had not been set before the step (earlier than the build time, or the
    /// kernel said it was not synchronised): this step is NTP setting it, and wall times
    /// persisted before a restart are to be read against the new time.
    pub was_unset: bool,
}

/// Watches the wall clock against the monotonic one and says when it was stepped.
///
/// Between two observations, wall time should advance as much as monotonic time. NTP slews
/// small errors (at most 500 ppm), and steps larger ones; anything beyond
/// [`WallWatch::tolerance`] is a step. A suspended machine (not a Pi) looks the same: its
/// monotonic clock stops while wall time goes on, and it is treated the same way.
#[derive(Debug, Clone)]
pub struct WallWatch {
    wall: DateTime<Utc>,
    mono: Instant,
    /// Monotonic time of the last step.
    stepped: Option<Instant>,
    /// [`Clock::synced`] at the last observation.
    synced: Option<bool>,
}

impl WallWatch {
    pub fn new(clock: &dyn Clock) -> WallWatch {
        WallWatch {
            wall: clock.now(),
            mono: clock.mono(),
            stepped: None,
            synced: clock.synced(),
        }
    }

    /// What two observations `elapsed` apart may differ by without it being a step: 10 s plus
    /// 0.1 % (twice the most an NTP client slews).
    pub fn tolerance(elapsed: Duration) -> Duration {
        Duration::from_secs(10) + elapsed / 1000
    }

    /// Compare the clocks since the last observation (then re-base on this one): a step, if
    /// there was one.
    pub fn observe(&mut self, clock: &dyn Clock) -> Option<Step> {
        let (wall, mono) = (clock.now(), clock.mono());
        let elapsed = mono.saturating_duration_since(self.mono);
        let moved = wall - self.wall;
        let by = moved - chrono::Duration::from_std(elapsed).unwrap_or_default();
        let was_unset = self.wall < build_time() || self.synced == Some(false);
        self.wall = wall;
        self.mono = mono;
        self.synced = clock.synced();
        let tol = chrono::Duration::from_std(Self::tolerance(elapsed)).unwrap_or_default();
        (by.abs() > tol).then(|| {
            self.stepped = Some(mono);
            Step { by, was_unset }
        })
    }

    /// Whether a decision on the wall clock may be taken now: it is set (not earlier than the
    /// build time) and was not stepped within `settle` (a wrong step is often corrected by the
    /// next NTP poll). Observes first.
    pub fn trusted(&mut self, clock: &dyn Clock, settle: Duration) -> bool {
        self.observe(clock);
        self.wall >= build_time()
            && self
                .stepped
                .is_none_or(|s| self.mono.saturating_duration_since(s) >= settle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_time_is_set_and_recent() {
        let b = build_time();
        assert!(b.timestamp() > 1_700_000_000, "{b}");
        assert!(b <= Utc::now() + chrono::Duration::days(1), "{b}");
    }

    const SETTLE: Duration = Duration::from_secs(600);

    #[test]
    fn time_passing_is_not_a_step() {
        let c = OffsetClock::new();
        let mut w = WallWatch::new(&c);
        c.advance(Duration::from_secs(3 * 86_400));
        assert_eq!(w.observe(&c), None);
        // NTP slewing: a few seconds over an hour is within the tolerance.
        c.advance(Duration::from_secs(3600));
        c.jump(chrono::Duration::seconds(4));
        assert_eq!(w.observe(&c), None);
        assert!(w.trusted(&c, SETTLE));
    }

    #[test]
    fn forward_and_backward_steps_are_seen_and_distrusted_until_settled() {
        let c = OffsetClock::new();
        let mut w = WallWatch::new(&c);
        c.jump(chrono::Duration::days(3));
        let s = w.observe(&c).expect("a step of 3 days");
        assert!((s.by - chrono::Duration::days(3)).abs() < chrono::Duration::seconds(1));
        assert!(!s.was_unset);
        assert!(!w.trusted(&c, SETTLE));
        c.advance(SETTLE / 2);
        assert!(!w.trusted(&c, SETTLE), "still settling");
        c.jump(-chrono::Duration::hours(5));
        let s = w.observe(&c).expect("a step back");
        assert!(s.by < -chrono::Duration::hours(4));
        c.advance(SETTLE - Duration::from_secs(1));
        assert!(!w.trusted(&c, SETTLE), "the settling restarts at each step");
        c.advance(Duration::from_secs(2));
        assert!(w.trusted(&c, SETTLE));
    }

    #[test]
    fn a_clock_before_the_build_time_is_not_trusted_and_its_step_is_marked() {
        let c = OffsetClock::new();
        // systemd without fake-hwclock: 1970.
        c.jump(chrono::DateTime::UNIX_EPOCH - Utc::now());
        let mut w = WallWatch::new(&c);
        c.advance(SETTLE * 2);
        assert!(!w.trusted(&c, SETTLE), "1970 is not set");
        c.jump(Utc::now() - chrono::DateTime::UNIX_EPOCH);
        let s = w.observe(&c).expect("NTP sets the clock");
        assert!(s.was_unset);
        // fake-hwclock: a plausible time, but the kernel says nobody set it yet.
        c.set_synced(Some(false));
        w.observe(&c);
        c.jump(chrono::Duration::days(2));
        c.set_synced(Some(true));
        assert!(w.observe(&c).expect("NTP steps it").was_unset);
        c.jump(chrono::Duration::days(2));
        assert!(!w.observe(&c).expect("a synced clock stepped").was_unset);
        c.advance(SETTLE);
        assert!(w.trusted(&c, SETTLE));
    }

    #[test]
    fn a_clock_before_the_build_is_refused_with_a_clear_error() {
        let e = ensure_set(DateTime::UNIX_EPOCH, "a token would expire wrongly").unwrap_err();
        assert!(e.to_string().contains("not set yet"), "{e}");
        assert!(
            e.to_string().contains("a token would expire wrongly"),
            "{e}"
        );
        assert!(ensure_set(Utc::now(), "").is_ok());
    }

    #[test]
    fn kernel_status_can_be_read() {
        // Whatever it says here, asking must not fail on Linux.
        #[cfg(target_os = "linux")]
        assert!(kernel_synced().is_some());
    }
}
