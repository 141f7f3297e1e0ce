//! HLS for one camera channel: a rolling in-memory window of fMP4 segments and the m3u8
//! playlist that lists them. No transcoding: retina's frames (`FrameFormat::MP4`) are remuxed.
//!
//! [`Segmenter`] is pure (frames in, bytes out, no I/O, no clock): the RTSP task pushes
//! frames, the web layer asks for the playlist and files. Segments are cut at keyframes once
//! `target` has accumulated (less a tolerance: a camera whose 2 s GOP measures 1.996 s must
//! not make 4 s segments), so their length follows the camera's GOP (a camera with a 4 s
//! I-frame interval gives 4 s segments whatever the target).
//!
//! RFC 8216 to the letter: `#EXT-X-TARGETDURATION` is fixed when the first segment is cut,
//! from the target and the GOP as measured (this run's, or a hint from an earlier session),
//! and never changes (§6.2.1); a segment that would round above it is cut before the frame
//! that would make it so, mid-GOP if need be, and the segment after a mid-GOP cut ends at
//! the next keyframe, back in step. Segments leave the playlist only while what stays lasts
//! three target durations (§6.2.2). Segments may start mid-GOP (the short first one, a cut
//! at the target), so the playlist never claims `#EXT-X-INDEPENDENT-SEGMENTS`.
//!
//! Memory is bounded: at most `window` segments plus a byte cap (oldest dropped first), and a
//! GOP that grows past the cap without a keyframe is discarded rather than buffered. A slow
//! viewer that asks for a segment that has left the window gets a 404 and reloads the
//! playlist, i.e. skips ahead to the next keyframe.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;

use crate::error::Error;
use crate::media::fmp4::{self, Codec, Sample};

/// RTP video clock: retina's timestamps and our timescale.
pub const TIMESCALE: u32 = 90_000;

/// Default hard cap on the bytes held by one segmenter (segments, inits and the GOP being
/// built). At 4 Mbit/s (a 1080p main stream) this is about a minute of video.
pub const DEFAULT_MAX_BYTES: usize = 32 << 20;

/// A frame-to-frame timestamp step above this is treated as a jump, not a real gap.
const MAX_FRAME_STEP: i64 = 10 * TIMESCALE as i64;

/// Duration guess before two frames have been seen: 25 fps (the usual PAL-region camera
/// default, e.g. Hikvision's).
const DEFAULT_FRAME_DURATION: u32 = TIMESCALE / 25;

/// The first segment of a live run ends this long after its keyframe (90 kHz): 0.5 s.
const SHORT_FIRST: u64 = TIMESCALE as u64 / 2;

/// At a keyframe, a segment this close to the target (90 kHz: 5 % of it, at least half a
/// frame) is complete: timestamp jitter or a slightly fast camera clock makes a 2 s GOP
/// measure a few ms short, and waiting for the next keyframe would double the segment.
fn tolerance(target: u64, frame: u32) -> u64 {
    (target / 20).max(u64::from(frame) / 2)
}

/// A GOP longer than this is discarded (no keyframe to cut at; the playlist's target
/// duration would be meaningless).
const MAX_SEGMENT_DURATION: u64 = 60 * TIMESCALE as u64;

/// Counters, for logs and the diagnostics page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames given to [`Segmenter::push`].
    pub frames_in: u64,
    /// Frames dropped while waiting for a keyframe (stream start, after reset or a discarded
    /// GOP).
    pub frames_dropped_waiting_for_key: u64,
    /// Frames dropped because [`Segmenter::set_params`] had not been called, or were empty.
    pub frames_dropped_invalid: u64,
    /// Timestamp steps that went backwards, were zero or jumped ahead more than 10 s: the
    /// frame got the previous frame's duration instead.
    pub timestamp_jumps: u64,
    /// Segments completed.
    pub segments: u64,
    /// Segments dropped from the window (by count or by the byte cap).
    pub segments_evicted: u64,
    /// GOPs thrown away because they grew past the byte cap or 60 s without a keyframe.
    pub gops_discarded: u64,
    /// Segments that could not be built (see the log); their frames are lost.
    pub segment_errors: u64,
}

/// Codec parameters of the stream, as retina gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Params {
    sample_entry: Vec<u8>,
    codec: String,
    width: u32,
    height: u32,
}

#[derive(Debug, Clone)]
struct Init {
    generation: u32,
    data: Bytes,
}

#[derive(Debug, Clone)]
struct Segment {
    seq: u64,
    generation: u32,
    /// In 90 kHz units.
    duration: u64,
    /// Preceded by `#EXT-X-DISCONTINUITY` (new parameters, or a restarted session).
    discontinuity: bool,
    data: Bytes,
}

#[derive(Debug)]
struct PendingFrame {
    data: Bytes,
    is_key: bool,
    /// Known once the next frame arrives.
    duration: u32,
}

/// A rolling window of fMP4 segments for one camera channel. See the module docs.
#[derive(Debug)]
pub struct Segmenter {
    target: u64,
    window: usize,
    max_bytes: usize,
    /// `#EXT-X-TARGETDURATION` in seconds, fixed when the first segment is cut.
    target_secs: Option<u64>,
    /// A GOP (90 kHz) measured before this segmenter started (the hub's earlier sessions).
    gop_hint: Option<u64>,
    /// This run's GOP as measured between its last two keyframes (90 kHz).
    gop: Option<u64>,
    /// Duration since the last keyframe, `None` before the run's first one.
    since_key: Option<u64>,
    /// The segment being built started mid-GOP: it ends at the next keyframe.
    resync: bool,

    params: Option<Params>,
    /// The current parameter sets as AVCC NAL units, prepended to keyframes that lack them.
    /// See [`Segmenter::set_params`].
    inband: Option<(Codec, Bytes)>,
    /// Init segments still referenced by a held segment, plus the current one (last).
    inits: VecDeque<Init>,
    segments: VecDeque<Segment>,
    /// Number of `#EXT-X-DISCONTINUITY` tags that have left the window.
    discontinuity_seq: u64,
    next_seq: u64,
    next_generation: u32,
    /// The next segment gets `#EXT-X-DISCONTINUITY`.
    discontinuity_pending: bool,

    /// The GOP(s) being accumulated into the next segment; starts with a keyframe.
    pending: Vec<PendingFrame>,
    pending_bytes: usize,
    /// Sum of the known durations in `pending` (all but the last frame's).
    pending_duration: u64,
    /// Our decode timeline (tfdt) at the start of `pending`: counts from 0, never goes back.
    decode_time: u64,
    last_pts: Option<i64>,
    last_duration: u32,
    waiting_for_key: bool,
    /// With [`Segmenter::with_short_first`]: the first segment of a run (after start, a reset
    /// or new parameters) ends [`SHORT_FIRST`] after its keyframe (or at the next keyframe if
    /// that comes first), so a viewer who just pressed play waits for one keyframe and half a
    /// second, not a GOP or a whole target. The segment after it starts mid-GOP and ends at
    /// the next keyframe.
    short_first_enabled: bool,
    short_first: bool,

    stats: Stats,
}

impl Segmenter {
    /// `target`: the minimum segment duration (segments end at the first keyframe after it).
    /// `window`: how many segments to keep (at least 1). Byte cap: [`DEFAULT_MAX_BYTES`].
    pub fn new(target: Duration, window: usize) -> Self {
        let target = (target.as_micros().min(u128::from(u32::MAX)) as u64) * u64::from(TIMESCALE)
            / 1_000_000;
        Segmenter {
            target: target.max(1),
            window: window.max(1),
            max_bytes: DEFAULT_MAX_BYTES,
            target_secs: None,
            gop_hint: None,
            gop: None,
            since_key: None,
            resync: false,
            params: None,
            inband: None,
            inits: VecDeque::new(),
            segments: VecDeque::new(),
            discontinuity_seq: 0,
            next_seq: 0,
            next_generation: 0,
            discontinuity_pending: false,
            pending: Vec::new(),
            pending_bytes: 0,
            pending_duration: 0,
            decode_time: 0,
            last_pts: None,
            last_duration: DEFAULT_FRAME_DURATION,
            waiting_for_key: true,
            short_first: true,
            short_first_enabled: false,
            stats: Stats::default(),
        }
    }

    /// End the first segment of each run half a second after its keyframe (live viewers
    /// start sooner).
    pub fn with_short_first(mut self) -> Self {
        self.short_first_enabled = true;
        self
    }

    /// The camera's GOP as an earlier session measured it: the target duration, fixed at
    /// the first segment, can then allow for it before this run has seen two keyframes.
    pub fn with_gop_hint(mut self, gop: Option<Duration>) -> Self {
        self.gop_hint = gop.map(|g| g.as_micros() as u64 * u64::from(TIMESCALE) / 1_000_000);
        self
    }

    /// Sets the hard cap on [`Segmenter::bytes_held`] (oldest segments dropped first).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Sets the stream's codec parameters: `sample_entry` is the complete `avc1`/`hvc1` box
    /// (retina's `VideoParameters::mp4_sample_entry().build()`), `codec` the RFC 6381 string
    /// (`rfc6381_codec()`). The same parameters again are a no-op. Different ones close the
    /// segment being built (returning its sequence number), start a new init generation, and
    /// mark the next segment as a discontinuity. On error nothing changes.
    ///
    /// The parameter sets are also put in-band, before each keyframe that lacks them: ffmpeg
    /// (5.1 checked; so also mpv, ffplay and anything recording our HLS with ffmpeg) ignores
    /// the `moov` of a second `EXT-X-MAP` ("Found duplicated MOOV Atom. Skipped it") and
    /// would decode the new resolution's slices with the old SPS. ISO 14496-15 allows
    /// in-band copies with `avc1`; browsers (MSE, Safari) accept them. Cost: one SPS+PPS
    /// (tens of bytes) per GOP. Not for H.265: `hvc1` sets `array_completeness = 1` ("no
    /// parameter sets in the stream") and Safari wants `hvc1`, so there ffmpeg-based
    /// players may show garbage after a resolution change until they reopen the stream.
    pub fn set_params(
        &mut self,
        sample_entry: &[u8],
        codec: &str,
        width: u32,
        height: u32,
    ) -> Result<Option<u64>, Error> {
        if let Some(p) = &self.params
            && p.sample_entry == sample_entry
            && p.codec == codec
            && p.width == width
            && p.height == height
        {
            return Ok(None);
        }
        let init = fmp4::init_segment(sample_entry, width, height, TIMESCALE)?;
        let completed = self.flush();
        // The old parameters' frames are finished with; the new ones start at a keyframe.
        self.new_run();
        self.inband = match fmp4::parameter_sets(sample_entry) {
            Ok((codec @ Codec::H264, sets)) => {
                let mut avcc = Vec::new();
                for set in sets {
                    avcc.extend_from_slice(&(set.len() as u32).to_be_bytes());
                    avcc.extend_from_slice(set);
                }
                Some((codec, Bytes::from(avcc)))
            }
            Ok((Codec::H265, _)) => None,
            Err(e) => {
                tracing::debug!(error = %e, "HLS: no in-band parameter sets");
                None
            }
        };
        self.params = Some(Params {
            sample_entry: sample_entry.to_vec(),
            codec: codec.to_owned(),
            width,
            height,
        });
        self.inits.push_back(Init {
            generation: self.next_generation,
            data: Bytes::from(init),
        });
        self.next_generation = self.next_generation.wrapping_add(1);
        self.prune_inits();
        self.enforce_bounds();
        Ok(completed)
    }

    /// The RTSP session restarted: closes the segment being built (returning its sequence
    /// number), waits for a keyframe, and marks the next segment as a discontinuity. Sequence
    /// numbers and the decode timeline keep increasing; the parameters are kept (call
    /// [`Segmenter::set_params`] with the new session's, a no-op if unchanged).
    pub fn reset(&mut self) -> Option<u64> {
        let completed = self.flush();
        self.new_run();
        completed
    }

    /// Adds one frame: AVCC data, whether it is a random access point, and its timestamp in
    /// 90 kHz units (PTS = DTS). Returns the sequence number of a segment this frame
    /// completed. Bad frames are counted in [`Segmenter::stats`], never an error.
    pub fn push(&mut self, frame_data: Bytes, is_key: bool, pts_90k: i64) -> Option<u64> {
        self.stats.frames_in += 1;
        if self.params.is_none() || frame_data.is_empty() {
            self.stats.frames_dropped_invalid += 1;
            return None;
        }
        if self.waiting_for_key && !is_key {
            self.stats.frames_dropped_waiting_for_key += 1;
            return None;
        }
        self.waiting_for_key = false;

        // The previous frame lasts until this one.
        if let Some(last_pts) = self.last_pts
            && let Some(prev) = self.pending.last_mut()
        {
            let step = pts_90k.saturating_sub(last_pts);
            let duration = if step <= 0 || step > MAX_FRAME_STEP {
                // Cameras restart their RTP clock, NVRs splice recordings, 32-bit RTP
                // timestamps wrap: keep the timeline smooth instead.
                self.stats.timestamp_jumps += 1;
                self.last_duration
            } else {
                step as u32
            };
            prev.duration = duration;
            self.last_duration = duration;
            self.pending_duration += u64::from(duration);
            if let Some(k) = &mut self.since_key {
                *k += u64::from(duration);
            }
        }
        self.last_pts = Some(pts_90k);
        if is_key {
            if let Some(gop) = self.since_key.filter(|g| *g > 0) {
                self.gop = Some(gop);
            }
            self.since_key = Some(0);
        }

        let mut completed = None;
        let short = self.short_first && self.short_first_enabled;
        // With this frame the segment would last at least this long.
        let with_frame = self.pending_duration + u64::from(self.last_duration);
        let over = self
            .target_secs
            .is_some_and(|t| with_frame >= t * u64::from(TIMESCALE) + u64::from(TIMESCALE) / 2);
        let at_key = is_key
            && (short
                || self.resync
                || self.pending_duration + tolerance(self.target, self.last_duration)
                    >= self.target);
        if !self.pending.is_empty()
            && (over || at_key || (short && self.pending_duration >= SHORT_FIRST))
        {
            completed = self.cut();
            self.short_first = false;
            self.resync = !is_key;
        }

        let frame_data = match &self.inband {
            Some((codec, sets)) if is_key && !fmp4::has_parameter_sets(*codec, &frame_data) => {
                let mut d = Vec::with_capacity(sets.len() + frame_data.len());
                d.extend_from_slice(sets);
                d.extend_from_slice(&frame_data);
                Bytes::from(d)
            }
            _ => frame_data,
        };

        self.pending_bytes += frame_data.len();
        self.pending.push(PendingFrame {
            data: frame_data,
            is_key,
            duration: self.last_duration,
        });

        if self.pending_bytes > self.max_bytes / 2 || self.pending_duration > MAX_SEGMENT_DURATION {
            // No keyframe for too long: this GOP can never become a segment within bounds.
            tracing::warn!(
                bytes = self.pending_bytes,
                duration_ms = self.pending_duration * 1000 / u64::from(TIMESCALE),
                "HLS: discarding a GOP with no keyframe in sight"
            );
            self.stats.gops_discarded += 1;
            self.clear_pending();
            self.new_run();
        }
        self.enforce_bounds();
        completed
    }

    /// The next frames start a new run: from a keyframe, with a short first segment, after a
    /// discontinuity (unless nothing was published yet).
    fn new_run(&mut self) {
        self.waiting_for_key = true;
        self.short_first = true;
        self.resync = false;
        self.since_key = None;
        self.last_pts = None;
        if self.next_seq > 0 {
            self.discontinuity_pending = true;
        }
    }

    /// Closes `pending` early (session end, new parameters): its last frame gets the previous
    /// frame's duration.
    fn flush(&mut self) -> Option<u64> {
        let last = self.pending.last_mut()?;
        last.duration = self.last_duration;
        self.pending_duration += u64::from(self.last_duration);
        let completed = self.cut();
        self.enforce_bounds();
        completed
    }

    /// Turns `pending` (all durations known) into a segment.
    fn cut(&mut self) -> Option<u64> {
        let frames = std::mem::take(&mut self.pending);
        let duration = self.pending_duration;
        let generation = self.inits.back().map(|i| i.generation);
        self.clear_pending();
        let generation = generation?;
        let samples: Vec<Sample> = frames
            .into_iter()
            .map(|f| Sample {
                data: f.data,
                duration: f.duration,
                is_key: f.is_key,
            })
            .collect();
        let seq = self.next_seq;
        // mfhd's sequence number is 32-bit; it only has to increase within a session.
        let built = fmp4::media_segment(seq as u32, self.decode_time, &samples);
        self.decode_time += duration;
        let data = match built {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, seq, "HLS: unable to build segment");
                self.stats.segment_errors += 1;
                self.discontinuity_pending |= self.next_seq > 0;
                return None;
            }
        };
        self.next_seq += 1;
        self.stats.segments += 1;
        if self.target_secs.is_none() {
            self.target_secs = Some(self.target_duration(duration));
        }
        self.segments.push_back(Segment {
            seq,
            generation,
            duration,
            discontinuity: std::mem::take(&mut self.discontinuity_pending),
            data: Bytes::from(data),
        });
        Some(seq)
    }

    fn clear_pending(&mut self) {
        self.pending.clear();
        self.pending_bytes = 0;
        self.pending_duration = 0;
    }

    /// `#EXT-X-TARGETDURATION` for the life of the playlist, when its first segment (of
    /// `first` 90 kHz) is cut: what keyframe cuts will make of the target and the GOP (the
    /// smallest whole number of GOPs within the tolerance of the target), at least the
    /// target, rounded to the nearest second (RFC 8216 §4.3.3.1 compares rounded durations).
    fn target_duration(&self, first: u64) -> u64 {
        let ts = u64::from(TIMESCALE);
        let mut longest = self.target.div_ceil(ts) * ts;
        if let Some(gop) = self.gop.or(self.gop_hint).filter(|g| *g > 0) {
            let cut_at = self.target - tolerance(self.target, self.last_duration).min(self.target);
            longest = longest.max(cut_at.div_ceil(gop).max(1) * gop);
        }
        // The first segment itself (a flush before a second keyframe can be long).
        longest = longest.max(first);
        ((longest + ts / 2) / ts).max(1)
    }

    /// Drops the oldest segments beyond the window or the byte cap. A segment leaves only
    /// while the rest last three target durations (RFC 8216 §6.2.2): with long GOPs the
    /// window holds more than `window` segments.
    fn enforce_bounds(&mut self) {
        let keep = self.target_secs.unwrap_or(0) * 3 * u64::from(TIMESCALE);
        let mut total: u64 = self.segments.iter().map(|s| s.duration).sum();
        while (self.segments.len() > self.window
            && self
                .segments
                .front()
                .is_some_and(|f| total - f.duration >= keep))
            || (self.bytes_held() > self.max_bytes && !self.segments.is_empty())
        {
            if let Some(s) = self.segments.pop_front() {
                total -= s.duration;
                if s.discontinuity {
                    self.discontinuity_seq += 1;
                }
                self.stats.segments_evicted += 1;
            }
        }
        self.prune_inits();
    }

    /// Keeps the current init and those a held segment refers to.
    fn prune_inits(&mut self) {
        while self.inits.len() > 1 {
            let g = self.inits[0].generation;
            if self.segments.iter().any(|s| s.generation == g) {
                break;
            }
            self.inits.pop_front();
        }
    }

    /// Bytes held: segments, init segments and the frames of the segment being built.
    pub fn bytes_held(&self) -> usize {
        self.segments.iter().map(|s| s.data.len()).sum::<usize>()
            + self.inits.iter().map(|i| i.data.len()).sum::<usize>()
            + self.pending_bytes
    }

    /// The live playlist, or `None` before the first segment. Every URI is
    /// `<prefix><name><query>`: `prefix` may be empty (relative URIs) and `query` (e.g.
    /// `?token=abc`) is repeated so that signed URLs keep working in players.
    pub fn playlist(&self, prefix: &str, query: &str) -> Option<String> {
        let first = self.segments.front()?;
        let target = self.target_secs?;
        let mut m = String::with_capacity(256 + 64 * self.segments.len());
        // Writing to a String cannot fail.
        let _ = write!(
            m,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n\
             #EXT-X-MEDIA-SEQUENCE:{}\n#EXT-X-DISCONTINUITY-SEQUENCE:{}\n",
            first.seq, self.discontinuity_seq
        );
        let mut generation = None;
        for s in &self.segments {
            if s.discontinuity {
                m.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if generation != Some(s.generation) {
                let _ = writeln!(
                    m,
                    "#EXT-X-MAP:URI=\"{prefix}init{}.mp4{query}\"",
                    s.generation
                );
                generation = Some(s.generation);
            }
            let secs = s.duration as f64 / f64::from(TIMESCALE);
            let _ = write!(m, "#EXTINF:{secs:.3},\n{prefix}seg{}.m4s{query}\n", s.seq);
        }
        Some(m)
    }

    /// The RFC 6381 codec string for a master playlist's `CODECS` attribute.
    pub fn codecs(&self) -> Option<&str> {
        self.params.as_ref().map(|p| p.codec.as_str())
    }

    /// The current parameters' width and height.
    pub fn dimensions(&self) -> Option<(u32, u32)> {
        self.params.as_ref().map(|p| (p.width, p.height))
    }

    /// A file named in the playlist: `init<G>.mp4` or `seg<N>.m4s`. `None` if unknown or no
    /// longer held.
    pub fn get(&self, file: &str) -> Option<Bytes> {
        if let Some(n) = file
            .strip_prefix("seg")
            .and_then(|f| f.strip_suffix(".m4s"))
        {
            return self.segment(parse_number(n)?);
        }
        let g = file.strip_prefix("init")?.strip_suffix(".mp4")?;
        let g = u32::try_from(parse_number(g)?).ok()?;
        self.inits
            .iter()
            .find(|i| i.generation == g)
            .map(|i| i.data.clone())
    }

    /// A held segment by sequence number.
    pub fn segment(&self, seq: u64) -> Option<Bytes> {
        let first = self.segments.front()?.seq;
        let s = self
            .segments
            .get(usize::try_from(seq.checked_sub(first)?).ok()?)?;
        (s.seq == seq).then(|| s.data.clone())
    }

    /// The current init segment.
    pub fn init(&self) -> Option<Bytes> {
        self.inits.back().map(|i| i.data.clone())
    }

    /// Sequence number of the newest segment.
    pub fn last_seq(&self) -> Option<u64> {
        self.segments.back().map(|s| s.seq)
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }
}

/// A decimal number as we write them in file names: ASCII digits only, no sign, no leading
/// zero (one name per file).
fn parse_number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::fmp4::{avc1_sample_entry, read_boxes};

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x0d, 0x8c, 0x8d, 0x40, 0xa0];
    const SPS2: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0x8c, 0x8d, 0x40, 0x50];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    /// 10 fps.
    const STEP: i64 = 9000;

    fn segmenter(target_secs: u64, window: usize) -> Segmenter {
        let mut s = Segmenter::new(Duration::from_secs(target_secs), window);
        let entry = avc1_sample_entry(SPS, PPS, 320, 240).unwrap();
        assert_eq!(s.set_params(&entry, "avc1.42C00D", 320, 240).unwrap(), None);
        s
    }

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![0, 0, 0, 2, 0x41, n])
    }

    /// Pushes `count` frames at 10 fps from `pts`, a keyframe every `gop`; returns the
    /// completed segments.
    fn feed(s: &mut Segmenter, pts: &mut i64, count: usize, gop: usize) -> Vec<u64> {
        let mut done = Vec::new();
        for i in 0..count {
            done.extend(s.push(frame(i as u8), i % gop == 0, *pts));
            *pts += STEP;
        }
        done
    }

    /// (tfdt, [(duration, size, flags)]) of a media segment.
    fn parse_segment(seg: &[u8]) -> (u64, Vec<(u32, u32, u32)>) {
        let top = read_boxes(seg).unwrap();
        assert_eq!(&top[0].0, b"moof");
        assert_eq!(&top[1].0, b"mdat");
        let moof = read_boxes(top[0].1).unwrap();
        let traf = read_boxes(moof[1].1).unwrap();
        let tfdt = u64::from_be_bytes(traf[1].1[4..12].try_into().unwrap());
        let trun = traf[2].1;
        let n = u32::from_be_bytes(trun[4..8].try_into().unwrap()) as usize;
        let be = |at: usize| u32::from_be_bytes(trun[at..at + 4].try_into().unwrap());
        let samples = (0..n)
            .map(|i| (be(12 + 12 * i), be(16 + 12 * i), be(20 + 12 * i)))
            .collect();
        (tfdt, samples)
    }

    #[test]
    fn cuts_at_keyframes_after_target() {
        let mut s = segmenter(2, 10);
        let mut pts = 1_000_000;
        // Nothing before the first keyframe.
        assert_eq!(s.push(frame(0), false, pts - STEP), None);
        assert!(s.playlist("", "").is_none());
        // GOP of 15 frames (1.5 s) with a 2 s target: segments of 2 GOPs = 3 s.
        let done = feed(&mut s, &mut pts, 61, 15);
        assert_eq!(done, [0, 1]);
        let (tfdt0, samples0) = parse_segment(&s.segment(0).unwrap());
        assert_eq!(tfdt0, 0);
        assert_eq!(samples0.len(), 30);
        assert!(samples0.iter().all(|&(d, _, _)| d == 9000));
        // Keyframes carry the parameter sets in-band: 4 + SPS + 4 + PPS more bytes.
        let inband = (4 + SPS.len() + 4 + PPS.len()) as u32;
        assert_eq!(samples0[0].1, 6 + inband);
        assert_eq!(samples0[1].1, 6);
        assert_eq!(samples0[15].1, 6 + inband);
        assert_eq!(samples0[0].2, 0x0200_0000);
        assert_eq!(samples0[1].2, 0x0101_0000);
        assert_eq!(samples0[15].2, 0x0200_0000);
        let (tfdt1, _) = parse_segment(&s.segment(1).unwrap());
        assert_eq!(tfdt1, 30 * 9000);

        let st = s.stats();
        assert_eq!(st.frames_in, 62);
        assert_eq!(st.frames_dropped_waiting_for_key, 1);
        assert_eq!(st.segments, 2);

        let m = s.playlist("", "").unwrap();
        assert_eq!(
            m,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:3\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXT-X-MAP:URI=\"init0.mp4\"\n#EXTINF:3.000,\nseg0.m4s\n#EXTINF:3.000,\nseg1.m4s\n"
        );
        assert_eq!(s.codecs(), Some("avc1.42C00D"));
    }

    #[test]
    fn long_gop_sets_segment_length_and_target_duration() {
        let mut s = segmenter(1, 10);
        let mut pts = 0;
        // Keyframe every 4.5 s: segments are 4.5 s, target duration rounds up to 5.
        assert_eq!(feed(&mut s, &mut pts, 91, 45), [0, 1]);
        let m = s.playlist("/cam/", "?token=a%20b").unwrap();
        assert!(m.contains("#EXT-X-TARGETDURATION:5\n"), "{m}");
        assert!(
            m.contains("#EXTINF:4.500,\n/cam/seg0.m4s?token=a%20b\n"),
            "{m}"
        );
        assert!(
            m.contains("#EXT-X-MAP:URI=\"/cam/init0.mp4?token=a%20b\"\n"),
            "{m}"
        );
    }

    #[test]
    fn window_and_byte_cap_bound_memory() {
        let mut s = segmenter(1, 3);
        let mut pts = 0;
        feed(&mut s, &mut pts, 10 * 10 + 1, 10);
        assert_eq!(s.stats().segments, 10);
        // Window 3 of 1 s segments: three target durations, just.
        assert_eq!(s.stats().segments_evicted, 7);
        assert!(s.segment(6).is_none());
        assert!(s.get("seg7.m4s").is_some());
        assert!(
            s.playlist("", "")
                .unwrap()
                .contains("#EXT-X-MEDIA-SEQUENCE:7\n")
        );
        // 3 s without a keyframe: cut at the target (1.4 s, mid-GOP), the next segment ends
        // at the next keyframe; the target duration stays 1.
        feed(&mut s, &mut pts, 30, 30);
        feed(&mut s, &mut pts, 41, 10);
        let m = s.playlist("", "").unwrap();
        assert!(m.contains("#EXT-X-TARGETDURATION:1\n"), "{m}");
        assert!(
            m.lines()
                .filter_map(|l| l.strip_prefix("#EXTINF:"))
                .all(|d| d.trim_end_matches(',').parse::<f64>().unwrap() < 1.5),
            "{m}"
        );

        // Byte cap: 100 KB frames, 1 MB cap → the GOP being built plus a few segments.
        let mut s = segmenter(1, 100).with_max_bytes(1_000_000);
        let big = Bytes::from(vec![0u8; 100_000]);
        for i in 0..60 {
            s.push(big.clone(), i % 3 == 0, i * STEP * 4);
            assert!(s.bytes_held() <= 1_000_000, "{} at {i}", s.bytes_held());
        }
        assert!(s.stats().segments_evicted > 0);
        assert!(s.playlist("", "").is_some());
    }

    #[test]
    fn gop_without_keyframe_is_discarded() {
        let mut s = segmenter(1, 5).with_max_bytes(1_000_000);
        let big = Bytes::from(vec![0u8; 100_000]);
        s.push(big.clone(), true, 0);
        for i in 1..20 {
            s.push(big.clone(), false, i * STEP);
        }
        assert_eq!(s.stats().gops_discarded, 1);
        assert!(s.bytes_held() <= 1_000_000);
        assert!(s.stats().frames_dropped_waiting_for_key > 0);
    }

    #[test]
    fn params_change_starts_a_new_generation() {
        let mut s = segmenter(1, 10);
        let entry = avc1_sample_entry(SPS, PPS, 320, 240).unwrap();
        let mut pts = 0;
        assert_eq!(feed(&mut s, &mut pts, 25, 10), [0, 1]);
        // Same parameters: nothing happens.
        assert_eq!(s.set_params(&entry, "avc1.42C00D", 320, 240).unwrap(), None);
        // Bad parameters: an error, nothing changes.
        assert!(s.set_params(&[1, 2, 3], "avc1.42C00D", 320, 240).is_err());
        assert_eq!(s.codecs(), Some("avc1.42C00D"));

        let entry2 = avc1_sample_entry(SPS2, PPS, 640, 480).unwrap();
        // The 5 frames being built are flushed as segment 2.
        assert_eq!(
            s.set_params(&entry2, "avc1.42C01E", 640, 480).unwrap(),
            Some(2)
        );
        let (_, flushed) = parse_segment(&s.segment(2).unwrap());
        assert_eq!(flushed.len(), 5);
        assert_eq!(s.codecs(), Some("avc1.42C01E"));
        assert_eq!(s.dimensions(), Some((640, 480)));
        // Non-key frames of the new stream are dropped until its keyframe.
        assert_eq!(s.push(frame(1), false, pts), None);
        let before = s.stats().frames_dropped_waiting_for_key;
        assert_eq!(before, 1);
        assert_eq!(feed(&mut s, &mut pts, 21, 10), [3, 4]);

        let m = s.playlist("", "").unwrap();
        let tail = "#EXTINF:0.500,\nseg2.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init1.mp4\"\n\
                    #EXTINF:1.000,\nseg3.m4s\n";
        assert!(m.contains(tail), "{m}");
        assert!(s.get("init0.mp4").is_some());
        assert_eq!(s.init(), s.get("init1.mp4"));
        assert_ne!(s.get("init0.mp4"), s.get("init1.mp4"));
        // The timeline carries on across the change.
        let (tfdt3, _) = parse_segment(&s.segment(3).unwrap());
        assert_eq!(tfdt3, 25 * 9000);
    }

    #[test]
    fn old_inits_and_discontinuity_sequence_follow_the_window() {
        let mut s = segmenter(1, 2);
        let entry2 = avc1_sample_entry(SPS2, PPS, 640, 480).unwrap();
        let mut pts = 0;
        feed(&mut s, &mut pts, 11, 10);
        s.set_params(&entry2, "avc1.42C01E", 640, 480).unwrap();
        feed(&mut s, &mut pts, 41, 10);
        // init0's segments have left the window, and with them the discontinuity.
        assert!(s.get("init0.mp4").is_none());
        assert!(s.get("init1.mp4").is_some());
        let m = s.playlist("", "").unwrap();
        assert!(m.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{m}");
        assert!(!m.contains("#EXT-X-DISCONTINUITY\n"), "{m}");
    }

    #[test]
    fn reset_keeps_sequence_and_marks_discontinuity() {
        let mut s = segmenter(1, 10);
        let mut pts = 5_000_000;
        feed(&mut s, &mut pts, 15, 10);
        assert_eq!(s.reset(), Some(1));
        // The new session's clock starts anywhere (here: far back).
        let mut pts = 0;
        assert_eq!(feed(&mut s, &mut pts, 21, 10), [2, 3]);
        let m = s.playlist("", "").unwrap();
        assert!(
            m.contains("seg1.m4s\n#EXT-X-DISCONTINUITY\n#EXTINF:1.000,\nseg2.m4s\n"),
            "{m}"
        );
        // Only one MAP: the parameters did not change.
        assert_eq!(m.matches("#EXT-X-MAP").count(), 1);
        // No jump counted: the reset forgot the old clock.
        assert_eq!(s.stats().timestamp_jumps, 0);
        let (tfdt2, _) = parse_segment(&s.segment(2).unwrap());
        assert_eq!(tfdt2, 15 * 9000);
    }

    #[test]
    fn short_first_segment_is_half_a_second_and_the_next_ends_at_a_keyframe() {
        let mut s = segmenter(2, 10).with_short_first();
        let mut pts = 0;
        // GOP 1 s, target 2 s: the first segment is ready 0.5 s after the first keyframe.
        assert_eq!(feed(&mut s, &mut pts, 6, 10), [0]);
        let (_, first) = parse_segment(&s.segment(0).unwrap());
        assert_eq!(first.len(), 5);
        assert_eq!(first[0].2, 0x0200_0000, "starts at the keyframe");
        assert!(s.playlist("", "").unwrap().contains("seg0.m4s"));
        // The rest of the GOP is segment 1 (mid-GOP start, ends at the keyframe); then 2 s.
        let mut done = Vec::new();
        for i in 6..31 {
            done.extend(s.push(frame(i as u8), i % 10 == 0, pts));
            pts += STEP;
        }
        assert_eq!(done, [1, 2]);
        let (_, second) = parse_segment(&s.segment(1).unwrap());
        assert_ne!(second[0].2, 0x0200_0000);
        assert_eq!(second.len(), 5);
        assert_eq!(parse_segment(&s.segment(2).unwrap()).1.len(), 20);
        let m = s.playlist("", "").unwrap();
        assert!(
            m.contains("#EXT-X-TARGETDURATION:2\n") && !m.contains("INDEPENDENT"),
            "{m}"
        );
        assert!(
            m.contains("#EXTINF:0.500,\nseg1.m4s\n#EXTINF:2.000,\nseg2.m4s\n"),
            "{m}"
        );
        // After a reset (RTSP session restarted) the first segment is short again.
        s.reset();
        let mut done = Vec::new();
        for i in 0..26 {
            done.extend(s.push(frame(i as u8), i % 10 == 0, pts));
            pts += STEP;
        }
        assert_eq!(done, [4, 5]);
        assert_eq!(parse_segment(&s.segment(4).unwrap()).1.len(), 5);
        assert_eq!(parse_segment(&s.segment(5).unwrap()).1.len(), 5);
        // Without the option the first segment waits for the target.
        let mut plain = segmenter(2, 10);
        let mut pts = 0;
        assert_eq!(feed(&mut plain, &mut pts, 11, 10), Vec::<u64>::new());
    }

    #[test]
    fn timestamp_jumps_are_clamped() {
        let mut s = segmenter(1, 10);
        let mut pts = 0;
        feed(&mut s, &mut pts, 5, 10);
        // Backwards, repeated, and a huge jump forward (a 32-bit RTP wrap seen unextended).
        pts -= 1_000_000;
        feed(&mut s, &mut pts, 1, 10);
        feed(&mut s, &mut pts, 1, 10);
        pts -= STEP;
        feed(&mut s, &mut pts, 1, 10);
        pts += 1 << 32;
        feed(&mut s, &mut pts, 3, 10);
        pts = i64::MIN;
        assert_eq!(feed(&mut s, &mut pts, 1, 1), [0]);
        assert_eq!(s.stats().timestamp_jumps, 4);
        let (_, samples) = parse_segment(&s.segment(0).unwrap());
        assert_eq!(samples.len(), 11);
        assert!(samples.iter().all(|&(d, _, _)| d == 9000), "{samples:?}");
    }

    #[test]
    fn get_resolves_only_our_names() {
        let mut s = segmenter(1, 10);
        let mut pts = 0;
        feed(&mut s, &mut pts, 11, 10);
        assert!(s.get("seg0.m4s").is_some());
        assert!(s.get("init0.mp4").is_some());
        for bad in [
            "seg+0.m4s",
            "seg.m4s",
            "seg00.m4s",
            "seg00000000000000000000000000.m4s",
            "seg1.m4s",
            "seg0.mp4",
            "init-0.mp4",
            "init99999999999.mp4",
            "../init0.mp4",
            "seg0.m4s?x",
            "",
        ] {
            assert!(s.get(bad).is_none(), "{bad}");
        }
        assert!(s.segment(u64::MAX).is_none());
    }

    #[test]
    fn frames_without_params_or_data_are_dropped() {
        let mut s = Segmenter::new(Duration::from_secs(1), 3);
        assert_eq!(s.push(frame(0), true, 0), None);
        assert!(s.init().is_none());
        assert!(s.codecs().is_none());
        let mut s = segmenter(1, 3);
        assert_eq!(s.push(Bytes::new(), true, 0), None);
        assert_eq!(s.stats().frames_dropped_invalid, 1);
    }
}
