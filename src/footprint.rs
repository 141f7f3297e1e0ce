//! Memory the daemon has no need to keep mapped (issue 18: a Raspberry Pi appliance).
//!
//! Start-up runs a lot of code once and never again: the command line, the config loader and
//! its validation, the database migrations, the OpenAPI document, the TLS roots, every
//! source's first connection. Its pages stay mapped after start-up and count in the daemon's
//! RSS as file-backed memory (measured: 9.4 MB of the 11.8 MB packaged binary, most of the
//! 20 MB idle RSS) until the kernel runs short of memory and reclaims them.
//!
//! Once start-up is over, the daemon asks the kernel to reclaim its own executable's pages at
//! once (`MADV_PAGEOUT`, Linux 5.4 and later). These are clean pages of a file: nothing is
//! written anywhere, and nothing anonymous (heap, stacks) is touched. Code that runs again
//! faults back in from the page cache (a minor fault, no disk read while the page cache holds
//! it); what never runs again stops counting. Libraries are left alone: their pages are
//! shared with other processes.

use std::io;
use std::os::unix::fs::MetadataExt;

/// Ask the kernel to page out this process's executable (its read-only mappings: code and
/// constants). Returns the bytes advised; an error when the kernel refuses (older than 5.4:
/// nothing changes then).
pub fn page_out_executable() -> io::Result<usize> {
    let exe = std::fs::metadata("/proc/self/exe")?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut advised = 0;
    for m in maps.lines().filter_map(Mapping::parse) {
        // The executable's own file (by inode: its path reads "… (deleted)" after an upgrade
        // replaced it), and only mappings nobody writes to.
        if m.inode != exe.ino() || m.dev != exe.dev() || m.writable {
            continue;
        }
        // SAFETY: the range is a whole mapping of this process, read from /proc/self/maps;
        // MADV_PAGEOUT only drops clean pages from the page tables (they fault back in when
        // used) and never changes their contents.
        let r = unsafe { libc::madvise(m.start as *mut libc::c_void, m.len, libc::MADV_PAGEOUT) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        advised += m.len;
    }
    Ok(advised)
}

#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: usize,
    len: usize,
    writable: bool,
    dev: u64,
    inode: u64,
}

impl Mapping {
    /// `start-end perms offset major:minor inode path` (proc(5)).
    fn parse(line: &str) -> Option<Mapping> {
        let mut f = line.split_whitespace();
        let (start, end) = f.next()?.split_once('-')?;
        let perms = f.next()?;
        let _offset = f.next()?;
        let (major, minor) = f.next()?.split_once(':')?;
        let inode = f.next()?.parse().ok()?;
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        let major = u32::from_str_radix(major, 16).ok()?;
        let minor = u32::from_str_radix(minor, 16).ok()?;
        Some(Mapping {
            start,
            len: end.checked_sub(start)?,
            writable: perms.contains('w'),
            dev: libc::makedev(major, minor),
            inode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rss_file_kib() -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("RssFile:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    #[test]
    fn maps_lines_parse() {
        let m = Mapping::parse(
            "55d0c8a00000-55d0c8b2a000 r-xp 00054000 fe:01 1837712                    /usr/bin/gatehouse (deleted)",
        )
        .unwrap();
        assert_eq!(
            m,
            Mapping {
                start: 0x55d0c8a00000,
                len: 0x12a000,
                writable: false,
                dev: libc::makedev(0xfe, 1),
                inode: 1837712
            }
        );
        let anon = Mapping::parse("7f2c1c000000-7f2c1c021000 rw-p 00000000 00:00 0 ").unwrap();
        assert!(anon.writable && anon.inode == 0);
        assert_eq!(Mapping::parse("garbage"), None);
    }

    #[test]
    fn the_executables_pages_leave_the_rss() {
        // This test binary is the executable here: touch a good part of it first.
        let before = rss_file_kib();
        let advised = page_out_executable().expect("MADV_PAGEOUT (Linux ≥ 5.4)");
        let after = rss_file_kib();
        assert!(advised > 1 << 20, "{advised} bytes advised");
        assert!(
            after + 1024 < before,
            "RssFile {before} kB → {after} kB: nothing was paged out"
        );
    }
}
