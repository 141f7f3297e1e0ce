//! A live HLS playlist as a player reloading it sees it, checked against RFC 8216: §6.2.1
//! (`#EXT-X-TARGETDURATION` never changes; every `#EXTINF`, rounded, is at most it) and
//! §6.2.2 (a segment leaves only while the rest last three target durations).

/// What the playlists of one stream said, reload after reload.
#[derive(Debug, Default)]
pub struct Seen {
    pub targets: Vec<u64>,
    /// (sequence, duration) of every segment ever listed.
    pub segments: std::collections::BTreeMap<u64, f64>,
    /// Shortest playlist (in seconds) seen after a segment had left it.
    pub shortest_after_eviction: Option<f64>,
}

fn value<'a>(m: &'a str, tag: &str) -> Option<&'a str> {
    m.lines().find_map(|l| l.strip_prefix(tag))
}

impl Seen {
    pub fn read(&mut self, m: &str) {
        self.targets
            .push(value(m, "#EXT-X-TARGETDURATION:").unwrap().parse().unwrap());
        let first: u64 = value(m, "#EXT-X-MEDIA-SEQUENCE:").unwrap().parse().unwrap();
        let durations: Vec<f64> = m
            .lines()
            .filter_map(|l| l.strip_prefix("#EXTINF:"))
            .map(|d| d.trim_end_matches(',').parse().unwrap())
            .collect();
        for (i, d) in durations.iter().enumerate() {
            self.segments.insert(first + i as u64, *d);
        }
        if first > 0 {
            let total: f64 = durations.iter().sum();
            let s = self.shortest_after_eviction.get_or_insert(total);
            *s = s.min(total);
        }
    }

    /// The target duration, after checking the rules above against every playlist read.
    pub fn target(&self) -> u64 {
        let t = self.targets[0];
        assert!(
            self.targets.iter().all(|x| *x == t),
            "EXT-X-TARGETDURATION changed over the playlist's life: {:?}",
            dedup(&self.targets)
        );
        for (seq, d) in &self.segments {
            assert!(
                d.round() as u64 <= t,
                "segment {seq} lasts {d} s, over the target duration {t}: {:?}",
                self.segments
            );
        }
        if let Some(s) = self.shortest_after_eviction {
            assert!(
                s >= 3.0 * t as f64 - 1e-6,
                "a segment left while the playlist lasted {s} s < 3 × {t} s"
            );
        }
        t
    }
}

fn dedup(v: &[u64]) -> Vec<u64> {
    let mut out = v.to_vec();
    out.dedup();
    out
}
