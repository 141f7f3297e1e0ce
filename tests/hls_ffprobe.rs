//! HLS output checked by a real player stack: H.264 encoded with openh264, remuxed by
//! `media::hls::Segmenter`, written to a directory, then read back by `ffprobe` (stream
//! parameters, exact frame count) and decoded by `ffmpeg` (no errors at all).
//!
//! Needs ffmpeg installed (`scripts/test.sh` on Debian); without it these tests fail.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use gatehouse::media::fmp4::{annexb_to_avcc, avc1_codec_string, avc1_sample_entry};
use gatehouse::media::hls::Segmenter;
use openh264::OpenH264API;
use openh264::encoder::{Encoder, EncoderConfig, FrameRate, FrameType};
use openh264::formats::YUVBuffer;

const FPS: i64 = 10;
const STEP_90K: i64 = 90_000 / FPS;

/// One encoded frame as retina's `FrameFormat::MP4` would give it.
struct Frame {
    avcc: Vec<u8>,
    is_key: bool,
}

/// A clip: sample entry and codec string, then the frames.
struct Clip {
    sample_entry: Vec<u8>,
    codec: String,
    width: u32,
    height: u32,
    frames: Vec<Frame>,
}

/// Encodes `count` frames of a moving test pattern, an IDR every `gop` frames (forced: the
/// encoder's own periodic and scene-change IDRs are off, so the GOP is exact).
fn encode(width: usize, height: usize, count: usize, gop: usize) -> Clip {
    let config = EncoderConfig::new()
        .skip_frames(false)
        .max_frame_rate(FrameRate::from_hz(FPS as f32))
        .scene_change_detect(false)
        .num_threads(1);
    let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config).unwrap();
    let (mut sps, mut pps) = (None, None);
    let mut frames = Vec::new();
    for n in 0..count {
        // Diagonal stripes moving right, and a bright square moving down.
        let mut yuv = vec![128u8; width * height * 3 / 2];
        for y in 0..height {
            for x in 0..width {
                let mut v = ((x + y + 6 * n) % 64) as u8 * 3;
                if (x / 16) == 2 && ((y + 4 * n) / 16) % (height / 16) == 1 {
                    v = 235;
                }
                yuv[y * width + x] = v;
            }
        }
        if n % gop == 0 {
            encoder.force_intra_frame();
        }
        let bitstream = encoder
            .encode(&YUVBuffer::from_vec(yuv, width, height))
            .unwrap();
        let frame_type = bitstream.frame_type();
        let f = annexb_to_avcc(&bitstream.to_vec());
        assert_eq!(f.is_idr, n % gop == 0, "frame {n}: {frame_type:?}");
        assert!(
            !f.data.is_empty(),
            "frame {n} encoded to nothing ({frame_type:?})"
        );
        assert_ne!(frame_type, FrameType::Skip);
        sps = sps.or(f.sps);
        pps = pps.or(f.pps);
        frames.push(Frame {
            avcc: f.data,
            is_key: f.is_idr,
        });
    }
    let (sps, pps) = (sps.expect("no SPS"), pps.expect("no PPS"));
    Clip {
        sample_entry: avc1_sample_entry(&sps, &pps, width as u16, height as u16).unwrap(),
        codec: avc1_codec_string(&sps).unwrap(),
        width: width as u32,
        height: height as u32,
        frames,
    }
}

/// Feeds a clip's frames with 90 kHz timestamps from `*pts`.
fn feed(seg: &mut Segmenter, clip: &Clip, pts: &mut i64) {
    seg.set_params(&clip.sample_entry, &clip.codec, clip.width, clip.height)
        .unwrap();
    for f in &clip.frames {
        seg.push(Bytes::from(f.avcc.clone()), f.is_key, *pts);
        *pts += STEP_90K;
    }
}

/// Writes the playlist and every file it names (fetched with `get`, as the web layer would).
fn write_hls(seg: &Segmenter, dir: &Path) -> String {
    let playlist = seg.playlist("", "").expect("no playlist");
    // The stream has ended. Without ENDLIST, ffmpeg treats the playlist as live: it starts 3
    // segments from the end and keeps reloading it (up to m3u8_hold_counters = 1000 times).
    let ended = format!("{playlist}#EXT-X-ENDLIST\n");
    std::fs::write(dir.join("index.m3u8"), ended).unwrap();
    for line in playlist.lines() {
        let name = match line.strip_prefix("#EXT-X-MAP:URI=\"") {
            Some(rest) => rest.trim_end_matches('"'),
            None if !line.starts_with('#') => line,
            None => continue,
        };
        let data = seg
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not served"));
        std::fs::write(dir.join(name), &data).unwrap();
    }
    playlist
}

/// Runs a tool from the ffmpeg package; fails the test (never skips) when it is missing.
fn run(tool: &str, args: &[&str]) -> (String, String) {
    let out = match Command::new(tool).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{tool} not found: these tests need ffmpeg; run scripts/test.sh \
             (or apt-get install ffmpeg)"
        ),
        Err(e) => panic!("unable to run {tool}: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{tool} {args:?} failed: {stderr}");
    (stdout, stderr)
}

/// ffprobe's video streams (JSON) after counting frames, and ffmpeg's full decode; asserts
/// that neither printed anything on stderr.
fn probe_and_decode(dir: &Path) -> Vec<serde_json::Value> {
    let index = dir.join("index.m3u8");
    let index = index.to_str().unwrap();
    let (json, stderr) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-count_frames",
            "-show_streams",
            "-of",
            "json",
            index,
        ],
    );
    assert_eq!(stderr, "", "ffprobe complained");
    let (_, stderr) = run("ffmpeg", &["-v", "error", "-i", index, "-f", "null", "-"]);
    assert_eq!(stderr, "", "ffmpeg complained while decoding");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["streams"].as_array().cloned().unwrap_or_default()
}

/// (width, height, pts seconds) of every decoded frame.
fn decoded_frames(dir: &Path) -> Vec<(u64, u64, f64)> {
    let index = dir.join("index.m3u8");
    let (json, stderr) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "frame=width,height,pts_time",
            "-of",
            "json",
            index.to_str().unwrap(),
        ],
    );
    assert_eq!(stderr, "", "ffprobe complained");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let frames = v["frames"].as_array().cloned().unwrap_or_default();
    frames
        .iter()
        .map(|f| {
            let t = f["pts_time"].as_str().and_then(|t| t.parse().ok());
            match (f["width"].as_u64(), f["height"].as_u64(), t) {
                (Some(w), Some(h), Some(t)) => (w, h, t),
                _ => panic!("unexpected ffprobe frame {f}"),
            }
        })
        .collect()
}

/// Timestamps step by exactly 1/FPS from the first frame: our timeline has no gaps.
fn assert_steady(frames: &[(u64, u64, f64)]) {
    for (i, w) in frames.windows(2).enumerate() {
        let step = w[1].2 - w[0].2;
        assert!(
            (step - 1.0 / FPS as f64).abs() < 1e-3,
            "step {step} after frame {i}: {frames:?}"
        );
    }
}

fn read_frames(stream: &serde_json::Value) -> u64 {
    stream["nb_read_frames"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no nb_read_frames in {stream}"))
}

#[test]
fn ffprobe_reads_every_frame() {
    // 4 s at 10 fps, IDR every 10 frames: four 1 s segments with a 1 s target.
    let clip = encode(320, 240, 40, 10);
    let mut seg = Segmenter::new(Duration::from_secs(1), 10);
    // Any start: retina's timestamps start at the camera's random RTP offset.
    let mut pts = 1_234_567_890;
    feed(&mut seg, &clip, &mut pts);
    // End of session: the last GOP becomes a segment too.
    assert_eq!(seg.reset(), Some(3));

    let dir = tempfile::tempdir().unwrap();
    let playlist = write_hls(&seg, dir.path());
    assert_eq!(playlist.matches("#EXTINF:1.000,").count(), 4, "{playlist}");
    assert!(playlist.contains("#EXT-X-TARGETDURATION:1\n"), "{playlist}");

    let streams = probe_and_decode(dir.path());
    assert_eq!(streams.len(), 1, "{streams:?}");
    let s = &streams[0];
    assert_eq!(s["codec_type"], "video");
    assert_eq!(s["codec_name"], "h264");
    assert_eq!(s["width"], 320);
    assert_eq!(s["height"], 240);
    assert_eq!(read_frames(s), 40);
    assert_eq!(seg.stats().timestamp_jumps, 0);
    let frames = decoded_frames(dir.path());
    assert_eq!(frames.len(), 40);
    assert_steady(&frames);
}

#[test]
fn resolution_change_plays_across_the_discontinuity() {
    let first = encode(320, 240, 20, 10);
    let second = encode(160, 128, 20, 10);
    let mut seg = Segmenter::new(Duration::from_secs(1), 10);
    let mut pts = 0;
    feed(&mut seg, &first, &mut pts);
    // The camera was reconfigured: new parameters, and its clock restarted.
    pts = 500_000;
    feed(&mut seg, &second, &mut pts);
    seg.reset();

    let dir = tempfile::tempdir().unwrap();
    let playlist = write_hls(&seg, dir.path());
    assert_eq!(
        playlist.matches("#EXT-X-DISCONTINUITY\n").count(),
        1,
        "{playlist}"
    );
    assert!(
        playlist.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init1.mp4\"\n"),
        "{playlist}"
    );
    assert_eq!(playlist.matches("#EXT-X-MAP").count(), 2, "{playlist}");

    let streams = probe_and_decode(dir.path());
    assert_eq!(streams.len(), 1, "{streams:?}");
    let s = &streams[0];
    assert_eq!(s["codec_name"], "h264");
    assert_eq!(read_frames(s), 40);
    // Each frame decodes at its own resolution, on one steady timeline.
    let frames = decoded_frames(dir.path());
    let sizes: Vec<(u64, u64)> = frames.iter().map(|&(w, h, _)| (w, h)).collect();
    let mut expected = vec![(320, 240); 20];
    expected.extend([(160, 128); 20]);
    assert_eq!(sizes, expected);
    assert_steady(&frames);
}
