//! The live playlist against RFC 8216, over whole simulated streams: what a player reloading
//! it every second sees. Pure segmenter (no network): frames in, playlists out.
//!
//! §6.2.1: `#EXT-X-TARGETDURATION` never changes over a playlist's life, and every
//! `#EXTINF`, rounded to the nearest second, is at most it. §6.2.2: a segment leaves the
//! playlist only while what stays lasts three target durations. And segments follow the GOP:
//! a camera whose 2 s GOP measures a hair short (a slightly fast clock) gets 2 s segments,
//! as `ffmpeg -hls_time 2` cuts it, not 4 s ones.

mod common;

use common::hls::Seen;
use gatehouse::media::fmp4::avc1_sample_entry;
use gatehouse::media::hls::Segmenter;
use std::time::Duration;

const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x0d, 0xda, 0x05, 0x07, 0xe8, 0x40];
const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

/// A live stream as the daemon makes it (short first segment), fed `seconds` of video at
/// `fps` with a keyframe every `gop` frames, each frame `step` 90 kHz ticks after the last.
fn stream(
    target: f64,
    window: usize,
    gop_hint: Option<Duration>,
    frames: usize,
    gop: usize,
    step: i64,
) -> Seen {
    let mut s = Segmenter::new(Duration::from_secs_f64(target), window)
        .with_short_first()
        .with_gop_hint(gop_hint);
    let entry = avc1_sample_entry(SPS, PPS, 320, 240).unwrap();
    s.set_params(&entry, "avc1.42C00D", 320, 240).unwrap();
    let mut seen = Seen::default();
    // A client that joins mid-GOP: a few frames before the first keyframe.
    let mut pts = 7_000_000i64;
    for i in 0..frames + 3 {
        let is_key = i >= 3 && (i - 3) % gop == 0;
        let data = bytes::Bytes::from(vec![0, 0, 0, 2, 0x41, i as u8]);
        if s.push(data, is_key, pts).is_some() {
            seen.read(&s.playlist("", "").unwrap());
        }
        pts += step;
    }
    seen
}

#[test]
fn target_duration_is_fixed_for_the_life_of_the_playlist() {
    // The check's camera: 25 fps, 2 s GOP, hls_segment 2 s, window 4. The short first
    // segment (0.5 s) must not fix the target at 1 and the one after it not raise it to 4.
    let seen = stream(2.0, 4, None, 25 * 40, 50, 3600);
    assert_eq!(seen.target(), 2, "{seen:?}");
    // After the first two, every segment is one GOP.
    let steady: Vec<f64> = seen.segments.values().skip(2).copied().collect();
    assert!(steady.iter().all(|d| (d - 2.0).abs() < 0.01), "{steady:?}");
}

#[test]
fn a_gop_a_hair_under_the_target_is_one_segment_not_two() {
    // 50 frames at 25 fps on a slightly fast clock: each GOP measures 1.996 s.
    let seen = stream(2.0, 4, None, 25 * 40, 50, 3592);
    let steady: Vec<f64> = seen.segments.values().skip(2).copied().collect();
    assert!(
        steady.iter().all(|d| (d - 1.996).abs() < 0.01),
        "segments should follow the 1.996 s GOP: {steady:?}"
    );
    assert_eq!(seen.target(), 2, "{seen:?}");
}

#[test]
fn a_gop_longer_than_the_target_keeps_the_target_fixed_and_the_window_long_enough() {
    // 4 s GOP, 2 s target, the minimum window: with the GOP known from an earlier session
    // the target allows for it; without, segments are cut at the target (mid-GOP).
    for hint in [Some(Duration::from_secs(4)), None] {
        let seen = stream(2.0, 3, hint, 25 * 60, 100, 3600);
        let t = seen.target();
        assert_eq!(t, if hint.is_some() { 4 } else { 2 }, "{seen:?}");
    }
    // A GOP of 1.5 s with a 2 s target: two GOPs per segment (3 s), the target says so.
    let seen = stream(2.0, 3, Some(Duration::from_millis(1500)), 10 * 60, 15, 9000);
    assert_eq!(seen.target(), 3, "{seen:?}");
}
