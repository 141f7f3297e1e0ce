//! Giving memory back to a small machine (issue 18; figures in BENCHMARKS.md).
//!
//! Two things stay counted in the daemon's resident set long after the work that needed them:
//!
//! - **Freed heap.** glibc returns freed memory to the system only from the top of an arena:
//!   the pages a burst of events freed in the middle of the heap (queues, REST pages, decodes)
//!   stay resident until `malloc_trim` gives the whole free pages among them back
//!   (`MADV_DONTNEED`).
//! - **Code that ran once.** Start-up (config, migrations, TLS set-up, discovery, the OpenAPI
//!   document) maps code and read-only data of the executable and its libraries that never
//!   run again, and the kernel maps a whole page-cache folio (or 64 KiB) around every fault.
//!   These are clean pages of files: `MADV_DONTNEED` on our own mapping of them unmaps them
//!   (the page cache keeps them, and the kernel reclaims them first when memory is short);
//!   what runs later maps again. Only segments that are never written are touched: the
//!   `PT_LOAD` segments without `PF_W` of each loaded object (text, read-only data, the ELF
//!   headers), as the loader reports them. The relocated read-only data (RELRO) lies in a
//!   writable segment and holds private copies the file does not have: never touched.
//!
//! [`run`] looks once a minute (a read of `/proc/self/status`) and does either only when the
//! figure it lowers has grown: an idle daemon does nothing.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often [`run`] looks.
const PERIOD: Duration = Duration::from_secs(60);
/// Start-up is over by then (sources connected, discovery published).
const AFTER_START: Duration = Duration::from_secs(90);
/// Anonymous memory this far above its floor is worth a trim.
const TRIM_ABOVE_KIB: u64 = 1024;
/// Mapped file pages grown this much since the last release are worth a release.
const CODE_GROWTH_KIB: u64 = 1024;

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

/// Unmap this process's pages of every loaded object's never-written segments (see the module
/// documentation). Returns how many bytes of address range were released (mapped or not).
pub fn release_code_pages() -> usize {
    #[cfg(target_os = "linux")]
    {
        let mut ranges = Vec::new();
        loaded_readonly_segments(&mut ranges);
        ranges
            .into_iter()
            .filter(|&(start, len)| {
                // SAFETY: each range is whole pages inside a PT_LOAD segment without PF_W that
                // the dynamic loader mapped from an object's file and that stays mapped while
                // the object is loaded (nothing is ever unloaded here): every page of it is
                // either not mapped or a clean page of that file, so dropping our mapping of
                // it loses nothing; the next access maps it again from the page cache.
                unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) == 0 }
            })
            .map(|(_, len)| len)
            .sum()
    }
    #[cfg(not(target_os = "linux"))]
    0
}

/// The page-aligned address ranges of the loaded objects' `PT_LOAD` segments that are not
/// writable, the vDSO's excepted (kernel pages, not a file's).
#[cfg(target_os = "linux")]
fn loaded_readonly_segments(out: &mut Vec<(usize, usize)>) {
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid dl_phdr_info for the duration of the call, and
        // `data` is the Vec passed to dl_iterate_phdr below.
        let (info, out) = unsafe { (&*info, &mut *(data as *mut Vec<(usize, usize)>)) };
        if info.dlpi_phdr.is_null() {
            return 0;
        }
        // SAFETY: getauxval has no preconditions.
        let vdso = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as usize;
        // SAFETY: dlpi_phdr points to dlpi_phnum program headers of a loaded object.
        let phdrs =
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
        let base = info.dlpi_addr as usize;
        for ph in phdrs {
            if ph.p_type != libc::PT_LOAD || ph.p_flags & libc::PF_W != 0 || ph.p_memsz == 0 {
                continue;
            }
            let start = base.wrapping_add(ph.p_vaddr as usize);
            if vdso != 0 && (base == vdso || start == vdso) {
                continue;
            }
            if let Some(r) = whole_pages(start, ph.p_memsz as usize, page_size()) {
                out.push(r);
            }
        }
        0
    }
    // SAFETY: `each` only reads the loader's structures and pushes to `out`; the loader holds
    // its lock during the walk, so no object is being mapped or unmapped meanwhile.
    unsafe {
        libc::dl_iterate_phdr(Some(each), out as *mut Vec<_> as *mut libc::c_void);
    }
}

#[cfg(target_os = "linux")]
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

/// The whole pages inside `[start, start + len)`: a segment's first or last page may be
/// shared with a neighbouring writable segment, and must then be left alone.
fn whole_pages(start: usize, len: usize, page: usize) -> Option<(usize, usize)> {
    let first = start.checked_add(page - 1)? / page * page;
    let end = start.checked_add(len)? / page * page;
    (end > first).then(|| (first, end - first))
}

/// Once start-up is over, then every minute: trim the heap while anonymous memory is over its
/// floor (the lowest seen after a trim: a burst's freed pages go back within a minute or two
/// of its end), and unmap code pages when mapped file pages have grown since the last time.
pub async fn run(cancel: CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = tokio::time::sleep(AFTER_START) => {}
    }
    let mut floor = None;
    let mut after_release = 0;
    loop {
        if let Some(r) = Resident::now() {
            if worth_a_trim(r.anon_kib, floor) {
                // On this thread: a trim takes a few milliseconds at most, and a blocking
                // thread started for it (and ended 10 s later) is more work than the trim.
                trim_heap();
                if let Some(now) = Resident::now() {
                    tracing::debug!(
                        anon_kib_before = r.anon_kib,
                        anon_kib = now.anon_kib,
                        "freed heap given back"
                    );
                    floor = Some(floor.map_or(now.anon_kib, |f: u64| f.min(now.anon_kib)));
                }
            }
            if r.file_kib >= after_release + CODE_GROWTH_KIB {
                release_code_pages();
                if let Some(now) = Resident::now() {
                    tracing::debug!(
                        file_kib_before = r.file_kib,
                        file_kib = now.file_kib,
                        "code pages unmapped"
                    );
                    after_release = now.file_kib;
                }
            }
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
    fn only_whole_pages_inside_a_segment_are_released() {
        let p = 4096;
        assert_eq!(whole_pages(0x10000, 0x3000, p), Some((0x10000, 0x3000)));
        // A segment sharing its first and last pages with neighbours leaves them.
        assert_eq!(whole_pages(0x10010, 0x3000, p), Some((0x11000, 0x2000)));
        assert_eq!(whole_pages(0x10010, 0x800, p), None);
        assert_eq!(whole_pages(usize::MAX - 10, 100, p), None);
    }

    /// The process's own code pages are unmapped (RssFile falls) and everything still runs:
    /// the pages come back from the file as the code runs.
    #[cfg(target_os = "linux")]
    #[test]
    fn released_code_pages_come_back_as_the_code_runs() {
        let before = Resident::now().expect("/proc/self/status");
        let released = release_code_pages();
        let after = Resident::now().expect("/proc/self/status");
        assert!(released > 0, "no read-only segment found");
        assert!(
            after.file_kib < before.file_kib,
            "RssFile did not fall: {before:?} → {after:?}"
        );
        // Code and read-only data still work (JSON, formatting and hashing touch plenty).
        let v: serde_json::Value = serde_json::from_str(r#"{"door": 42, "name": "gate"}"#).unwrap();
        let mut seen = std::collections::HashSet::new();
        seen.insert(format!("{}/{}", v["door"], v["name"].as_str().unwrap()));
        assert!(seen.contains("42/gate"));
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
