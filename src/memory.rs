//! Giving freed heap back to a small machine (issue 18; figures in BENCHMARKS.md).
//!
//! glibc returns freed memory to the system only from the top of an arena: the pages a burst
//! of events freed in the middle of the heap (queues, REST pages, decodes) stay resident until
//! `malloc_trim` gives the whole free pages among them back (`MADV_DONTNEED`). [`run`] looks
//! once a minute (a read of `/proc/self/status`) and trims while anonymous memory is above the
//! lowest it has been after a trim: after a burst it is, until the trim has given back what it
//! can; an idle daemon stays at its floor and nothing is done.
//!
//! Tried and dropped: unmapping the executable's code pages once start-up is over
//! (`MADV_DONTNEED` on the loaded objects' read-only segments). RssFile fell from 7.2 to 2.6
//! MB, and was back at 6.6 MB ten seconds later with nothing happening: the kernel maps a
//! large folio (or 64 KiB) around every fault, and the idle code paths (timers, sockets,
//! keep-alives) touch pages all over the text.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often [`run`] looks.
const PERIOD: Duration = Duration::from_secs(60);
/// Start-up is over by then (sources connected, discovery published).
const AFTER_START: Duration = Duration::from_secs(90);
/// Anonymous memory this far above its floor is worth a trim.
const TRIM_ABOVE_KIB: u64 = 1024;

/// Resident memory of this process, kB (`/proc/self/status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resident {
    pub anon_kib: u64,
    pub file_kib: u64,
}

impl Resident {
    pub fn now() -> Option<Resident> {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .map(|s| Resident::parse(&s))
    }

    fn parse(status: &str) -> Resident {
        let kib = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Resident {
            anon_kib: kib("RssAnon:"),
            file_kib: kib("RssFile:"),
        }
    }
}

/// Give the heap's free pages back to the system (every arena). Other C libraries: nothing.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Trim the heap once start-up is over, and then every minute while anonymous memory is over
/// its floor (the lowest seen after a trim): a burst's freed pages go back within a minute or
/// two of its end.
pub async fn run(cancel: CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = tokio::time::sleep(AFTER_START) => {}
    }
    let mut floor = None;
    loop {
        if let Some(r) = Resident::now()
            && worth_a_trim(r.anon_kib, floor)
            && let Some(now) = {
                // On this thread: a trim takes a few milliseconds at most, and a blocking
                // thread started for it (and ended 10 s later) is more work than the trim.
                trim_heap();
                Resident::now()
            }
        {
            tracing::debug!(
                anon_kib_before = r.anon_kib,
                anon_kib = now.anon_kib,
                "freed heap given back"
            );
            floor = Some(floor.map_or(now.anon_kib, |f: u64| f.min(now.anon_kib)));
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(PERIOD) => {}
        }
    }
}

/// Trim when none has been made yet, or anonymous memory is [`TRIM_ABOVE_KIB`] over its floor.
fn worth_a_trim(anon_kib: u64, floor: Option<u64>) -> bool {
    floor.is_none_or(|f| anon_kib >= f + TRIM_ABOVE_KIB)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_figures_are_read_in_kib() {
        let s = "Name:\tgatehouse\nVmRSS:\t   19464 kB\nRssAnon:\t    7488 kB\nRssFile:\t   11976 kB\nRssShmem:\t       0 kB\n";
        assert_eq!(
            Resident::parse(s),
            Resident {
                anon_kib: 7488,
                file_kib: 11976
            }
        );
        assert_eq!(Resident::parse("nothing"), Resident::default());
    }

    #[test]
    fn trims_while_over_the_floor_only() {
        assert!(worth_a_trim(6_000, None), "the first after start-up");
        assert!(
            !worth_a_trim(6_500, Some(6_000)),
            "idle: within a MiB of the floor"
        );
        assert!(worth_a_trim(38_000, Some(6_000)), "after a burst");
        assert!(
            worth_a_trim(27_000, Some(6_000)),
            "again, until back at the floor"
        );
    }

    /// A trim gives freed pages in the middle of the heap back (glibc alone keeps them).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_trim_gives_freed_pages_back() {
        // 512 blocks of 60 KiB (under the mmap threshold: from the heap), each followed by a
        // small one that stays: the freed 30 MiB lie between live allocations, where free()
        // leaves them resident.
        let mut kept = Vec::new();
        let mut freed = Vec::new();
        for i in 0..512 {
            freed.push(vec![1u8; 60 * 1024]);
            kept.push(vec![i as u8; 100]);
        }
        drop(freed);
        let before = Resident::now().expect("/proc/self/status");
        trim_heap();
        let after = Resident::now().expect("/proc/self/status");
        assert!(
            after.anon_kib + 16 * 1024 < before.anon_kib,
            "trim gave back less than 16 MiB: {before:?} → {after:?}"
        );
        assert!(kept.iter().enumerate().all(|(i, b)| b[0] == i as u8));
    }
}
