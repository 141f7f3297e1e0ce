//! Fragmented MP4 (CMAF-style) boxes for HLS, written by hand: one init segment (`ftyp` +
//! `moov`) per set of codec parameters, and one media segment (`moof` + `mdat`) per run of
//! samples. Video only, one track (ID 1).
//!
//! Input is what retina gives with `FrameFormat::MP4`: each sample is a sequence of NAL units,
//! each prefixed with its 4-byte big-endian length (AVCC), with the parameter sets (SPS/PPS,
//! and VPS for H.265) *not* in-band but in the `avc1`/`hvc1` sample entry
//! (`VideoParameters::mp4_sample_entry().build()`).
//!
//! References: ISO/IEC 14496-12 (ISO BMFF) for the box layouts, ISO/IEC 14496-15 for `avcC`.

use bytes::Bytes;

use crate::err;
use crate::error::Error;

/// One sample (an access unit: one video frame) of a media segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// AVCC: NAL units each prefixed with a 4-byte big-endian length.
    pub data: Bytes,
    /// In units of the init segment's timescale.
    pub duration: u32,
    /// A random access point (IDR for H.264, IRAP for H.265).
    pub is_key: bool,
}

/// The only track in our files.
const TRACK_ID: u32 = 1;

/// `trun` sample flags (ISO 14496-12 §8.8.3.1): `sample_depends_on = 2` (depends on no other
/// sample: an I frame).
const FLAGS_KEY: u32 = 0x0200_0000;
/// `sample_depends_on = 1` (depends on others) and `sample_is_non_sync_sample = 1`.
const FLAGS_NON_KEY: u32 = 0x0101_0000;

/// The unity matrix of `mvhd` and `tkhd` (16.16 and 2.30 fixed point).
const UNITY_MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

// ---------------------------------------------------------------------------------------------
// Box writer

/// Appends boxes to a buffer. A box is opened with [`BoxWriter::open`] (which writes a
/// placeholder size) and closed with [`BoxWriter::close`] (which patches the size in).
/// Sizes are checked: a box over 4 GiB is an error, not a wrapped size.
#[derive(Default)]
struct BoxWriter {
    buf: Vec<u8>,
}

impl BoxWriter {
    fn with_capacity(n: usize) -> Self {
        BoxWriter {
            buf: Vec::with_capacity(n),
        }
    }

    /// Starts a box; returns its start offset for [`BoxWriter::close`].
    fn open(&mut self, fourcc: &[u8; 4]) -> usize {
        let start = self.buf.len();
        self.u32(0);
        self.buf.extend_from_slice(fourcc);
        start
    }

    /// Starts a "full box" (with version and 24-bit flags).
    fn open_full(&mut self, fourcc: &[u8; 4], version: u8, flags: u32) -> usize {
        let start = self.open(fourcc);
        self.u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
        start
    }

    fn close(&mut self, start: usize) -> Result<(), Error> {
        let len = self.buf.len() - start;
        let len = u32::try_from(len).map_err(|_| {
            err!(
                InvalidArgument,
                "unable to write MP4 box: {len} bytes is too large"
            )
        })?;
        self.buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn zeros(&mut self, n: usize) {
        self.buf.resize(self.buf.len() + n, 0);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    fn matrix(&mut self) {
        for v in UNITY_MATRIX {
            self.u32(v);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Init segment

/// Checks that `entry` is one well-formed box (its size field equals its length) with a
/// printable four-character type; returns the type.
fn check_sample_entry(entry: &[u8]) -> Result<[u8; 4], Error> {
    if entry.len() < 8 {
        return Err(err!(
            InvalidArgument,
            "unable to build MP4 init segment: sample entry is {} bytes, too short for a box",
            entry.len()
        ));
    }
    let size = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]) as usize;
    let fourcc = [entry[4], entry[5], entry[6], entry[7]];
    if size != entry.len() {
        return Err(err!(
            InvalidArgument,
            "unable to build MP4 init segment: sample entry box says {size} bytes but has {}",
            entry.len()
        ));
    }
    if !fourcc
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b' ')
    {
        return Err(err!(
            InvalidArgument,
            "unable to build MP4 init segment: sample entry type {fourcc:02x?} is not a box type"
        ));
    }
    Ok(fourcc)
}

/// The init segment: `ftyp` + `moov` with one video track whose `stsd` holds `sample_entry`
/// (the complete `avc1`/`hvc1` box, e.g. retina's `mp4_sample_entry().build()`), and an
/// `mvex` announcing that the samples come in fragments.
pub fn init_segment(
    sample_entry: &[u8],
    width: u32,
    height: u32,
    timescale: u32,
) -> Result<Vec<u8>, Error> {
    check_sample_entry(sample_entry)?;
    if timescale == 0 {
        return Err(err!(
            InvalidArgument,
            "unable to build MP4 init segment: timescale is 0"
        ));
    }
    // tkhd stores width and height as 16.16 fixed point.
    let (Ok(w), Ok(h)) = (u16::try_from(width), u16::try_from(height)) else {
        return Err(err!(
            InvalidArgument,
            "unable to build MP4 init segment: {width}x{height} does not fit 16.16 fixed point"
        ));
    };
    let mut b = BoxWriter::with_capacity(700 + sample_entry.len());

    // ftyp: CMAF (ISO 23000-19) wants `cmfc` among the compatible brands; `iso6` is the ISO
    // BMFF version with `tfdt` and default-base-is-moof; `isom`/`mp41` for older readers.
    let ftyp = b.open(b"ftyp");
    b.bytes(b"iso6"); // major brand
    b.u32(0); // minor version
    for brand in [b"iso6", b"cmfc", b"isom", b"mp41"] {
        b.bytes(brand);
    }
    b.close(ftyp)?;

    let moov = b.open(b"moov");

    let mvhd = b.open_full(b"mvhd", 0, 0);
    b.u32(0); // creation_time
    b.u32(0); // modification_time
    b.u32(timescale);
    b.u32(0); // duration: unknown (fragmented)
    b.u32(0x0001_0000); // rate 1.0
    b.u16(0x0100); // volume 1.0
    b.zeros(2 + 8); // reserved
    b.matrix();
    b.zeros(6 * 4); // pre_defined
    b.u32(TRACK_ID + 1); // next_track_ID
    b.close(mvhd)?;

    let trak = b.open(b"trak");
    let tkhd = b.open_full(b"tkhd", 0, 0x3); // track_enabled | track_in_movie
    b.u32(0); // creation_time
    b.u32(0); // modification_time
    b.u32(TRACK_ID);
    b.u32(0); // reserved
    b.u32(0); // duration
    b.zeros(8); // reserved
    b.u16(0); // layer
    b.u16(0); // alternate_group
    b.u16(0); // volume: 0 for video
    b.u16(0); // reserved
    b.matrix();
    b.u32(u32::from(w) << 16);
    b.u32(u32::from(h) << 16);
    b.close(tkhd)?;

    let mdia = b.open(b"mdia");
    let mdhd = b.open_full(b"mdhd", 0, 0);
    b.u32(0); // creation_time
    b.u32(0); // modification_time
    b.u32(timescale);
    b.u32(0); // duration
    b.u16(0x55c4); // language "und": three 5-bit letters minus 0x60
    b.u16(0); // pre_defined
    b.close(mdhd)?;

    let hdlr = b.open_full(b"hdlr", 0, 0);
    b.u32(0); // pre_defined
    b.bytes(b"vide");
    b.zeros(3 * 4); // reserved
    b.bytes(b"VideoHandler\0");
    b.close(hdlr)?;

    let minf = b.open(b"minf");
    let vmhd = b.open_full(b"vmhd", 0, 1); // flags 1 is mandatory for vmhd
    b.u16(0); // graphicsmode: copy
    b.zeros(3 * 2); // opcolor
    b.close(vmhd)?;

    let dinf = b.open(b"dinf");
    let dref = b.open_full(b"dref", 0, 0);
    b.u32(1); // entry_count
    let url = b.open_full(b"url ", 0, 1); // flag 1: media data is in this file
    b.close(url)?;
    b.close(dref)?;
    b.close(dinf)?;

    let stbl = b.open(b"stbl");
    let stsd = b.open_full(b"stsd", 0, 0);
    b.u32(1); // entry_count
    b.bytes(sample_entry);
    b.close(stsd)?;
    // The sample tables are empty: the samples are described by each fragment's trun.
    for table in [b"stts", b"stsc", b"stco"] {
        let t = b.open_full(table, 0, 0);
        b.u32(0); // entry_count
        b.close(t)?;
    }
    let stsz = b.open_full(b"stsz", 0, 0);
    b.u32(0); // sample_size: per sample
    b.u32(0); // sample_count
    b.close(stsz)?;
    b.close(stbl)?;
    b.close(minf)?;
    b.close(mdia)?;
    b.close(trak)?;

    let mvex = b.open(b"mvex");
    let trex = b.open_full(b"trex", 0, 0);
    b.u32(TRACK_ID);
    b.u32(1); // default_sample_description_index
    b.u32(0); // default_sample_duration
    b.u32(0); // default_sample_size
    b.u32(0); // default_sample_flags
    b.close(trex)?;
    b.close(mvex)?;

    b.close(moov)?;
    Ok(b.buf)
}

// ---------------------------------------------------------------------------------------------
// Media segment

/// One media segment: `moof` (`mfhd` with `seq`, `traf` with `tfhd` default-base-is-moof,
/// `tfdt` version 1 with `base_decode_time`, and a `trun` giving each sample's duration, size
/// and flags) followed by an `mdat` with the samples' data.
///
/// DTS = PTS (no B-frames: the cameras this is for send none), so there are no composition
/// offsets.
pub fn media_segment(
    seq: u32,
    base_decode_time: u64,
    samples: &[Sample],
) -> Result<Vec<u8>, Error> {
    if samples.is_empty() {
        return Err(err!(
            InvalidArgument,
            "unable to build MP4 media segment {seq}: no samples"
        ));
    }
    let count = u32::try_from(samples.len()).map_err(|_| {
        err!(
            InvalidArgument,
            "unable to build MP4 media segment {seq}: too many samples"
        )
    })?;
    // The whole segment must stay well under 4 GiB: the mdat size is 32-bit here and
    // trun's data_offset is a signed 32-bit offset.
    let mut data_len: u64 = 0;
    for (i, s) in samples.iter().enumerate() {
        if s.data.is_empty() {
            return Err(err!(
                InvalidArgument,
                "unable to build MP4 media segment {seq}: sample {i} is empty"
            ));
        }
        data_len += s.data.len() as u64;
    }
    let moof_len = 8 + 16 + 8 + 16 + 20 + (8 + 4 + 4 + 4) + 12 * u64::from(count);
    if moof_len + 8 + data_len > i32::MAX as u64 {
        return Err(err!(
            InvalidArgument,
            "unable to build MP4 media segment {seq}: {data_len} bytes of samples is too large"
        ));
    }
    let mut b = BoxWriter::with_capacity((moof_len + 8 + data_len) as usize);

    let moof = b.open(b"moof");
    let mfhd = b.open_full(b"mfhd", 0, 0);
    b.u32(seq);
    b.close(mfhd)?;

    let traf = b.open(b"traf");
    let tfhd = b.open_full(b"tfhd", 0, 0x02_0000); // default-base-is-moof
    b.u32(TRACK_ID);
    b.close(tfhd)?;

    let tfdt = b.open_full(b"tfdt", 1, 0); // version 1: 64-bit baseMediaDecodeTime
    b.u64(base_decode_time);
    b.close(tfdt)?;

    // data-offset-present | sample-duration-present | sample-size-present | sample-flags-present
    let trun = b.open_full(b"trun", 0, 0x00_0001 | 0x00_0100 | 0x00_0200 | 0x00_0400);
    b.u32(count);
    let data_offset_at = b.buf.len();
    b.u32(0); // data_offset, patched below
    for s in samples {
        b.u32(s.duration);
        b.u32(s.data.len() as u32); // fits: checked against i32::MAX above
        b.u32(if s.is_key { FLAGS_KEY } else { FLAGS_NON_KEY });
    }
    b.close(trun)?;
    b.close(traf)?;
    b.close(moof)?;

    // With default-base-is-moof, data_offset counts from the first byte of the moof: the
    // samples start right after the mdat header.
    let data_offset = (b.buf.len() - moof + 8) as u32;
    b.buf[data_offset_at..data_offset_at + 4].copy_from_slice(&data_offset.to_be_bytes());

    let mdat = b.open(b"mdat");
    for s in samples {
        b.bytes(&s.data);
    }
    b.close(mdat)?;
    Ok(b.buf)
}

// ---------------------------------------------------------------------------------------------
// Parameter sets

/// The codec of a sample entry, by its box type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
}

impl Codec {
    /// Whether an AVCC NAL unit (without its length) is a parameter set of this codec.
    fn is_parameter_set(self, nal: &[u8]) -> bool {
        match (self, nal.first()) {
            (Codec::H264, Some(h)) => matches!(h & 0x1f, 7 | 8),
            (Codec::H265, Some(h)) => matches!((h >> 1) & 0x3f, 32..=34),
            (_, None) => false,
        }
    }
}

/// The codec and the parameter sets (SPS/PPS, and VPS for H.265, in the order stored) of an
/// `avc1`/`avc3` (`avcC`) or `hvc1`/`hev1` (`hvcC`) sample entry.
pub fn parameter_sets(sample_entry: &[u8]) -> Result<(Codec, Vec<&[u8]>), Error> {
    let fourcc = check_sample_entry(sample_entry)?;
    let (codec, config) = match &fourcc {
        b"avc1" | b"avc3" => (Codec::H264, b"avcC"),
        b"hvc1" | b"hev1" => (Codec::H265, b"hvcC"),
        other => {
            return Err(err!(
                InvalidArgument,
                "unable to read parameter sets: unsupported sample entry {}",
                String::from_utf8_lossy(other)
            ));
        }
    };
    let bad = || {
        err!(
            InvalidArgument,
            "unable to read parameter sets: malformed {} box",
            String::from_utf8_lossy(config)
        )
    };
    // The VisualSampleEntry fields take 78 bytes after the box header; child boxes follow.
    let mut children = sample_entry.get(8 + 78..).ok_or_else(bad)?;
    let payload = loop {
        let size = children.get(..4).ok_or_else(bad)?;
        let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize;
        if size < 8 || size > children.len() {
            return Err(bad());
        }
        if &children[4..8] == config {
            break &children[8..size];
        }
        children = &children[size..];
    };
    let mut r = Reader(payload);
    let mut sets = Vec::new();
    match codec {
        Codec::H264 => {
            r.take(5).ok_or_else(bad)?; // version, profile, compatibility, level, length size
            let sps = r.u8().ok_or_else(bad)? & 0x1f;
            for _ in 0..sps {
                sets.push(r.prefixed().ok_or_else(bad)?);
            }
            let pps = r.u8().ok_or_else(bad)?;
            for _ in 0..pps {
                sets.push(r.prefixed().ok_or_else(bad)?);
            }
        }
        Codec::H265 => {
            r.take(22).ok_or_else(bad)?; // profile, tier, level, ... lengthSizeMinusOne
            let arrays = r.u8().ok_or_else(bad)?;
            for _ in 0..arrays {
                r.u8().ok_or_else(bad)?; // array_completeness, NAL_unit_type
                let n = r.u16().ok_or_else(bad)?;
                for _ in 0..n {
                    sets.push(r.prefixed().ok_or_else(bad)?);
                }
            }
        }
    }
    Ok((codec, sets))
}

/// Whether AVCC `data` contains a parameter set of `codec` (stops at a malformed length).
pub fn has_parameter_sets(codec: Codec, mut data: &[u8]) -> bool {
    while data.len() >= 4 {
        let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let Some(nal) = data.get(4..4 + len) else {
            return false;
        };
        if codec.is_parameter_set(nal) {
            return true;
        }
        data = &data[4 + len..];
    }
    false
}

/// Big-endian reads from a slice; `None` past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    /// A 16-bit length, then that many bytes.
    fn prefixed(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

// ---------------------------------------------------------------------------------------------
// H.264 helpers for tests and the simulators (production parameters come from retina)

/// Builds an `avc1` sample entry with its `avcC` from one SPS and one PPS (NAL units without
/// start code or length prefix), as retina's `mp4_sample_entry()` would for the same stream.
pub fn avc1_sample_entry(
    sps: &[u8],
    pps: &[u8],
    width: u16,
    height: u16,
) -> Result<Vec<u8>, Error> {
    if sps.len() < 4 || sps[0] & 0x1f != 7 {
        return Err(err!(
            InvalidArgument,
            "unable to build avc1 sample entry: not an SPS"
        ));
    }
    if pps.is_empty() || pps[0] & 0x1f != 8 {
        return Err(err!(
            InvalidArgument,
            "unable to build avc1 sample entry: not a PPS"
        ));
    }
    let (Ok(sps_len), Ok(pps_len)) = (u16::try_from(sps.len()), u16::try_from(pps.len())) else {
        return Err(err!(
            InvalidArgument,
            "unable to build avc1 sample entry: parameter set too large"
        ));
    };
    let mut b = BoxWriter::with_capacity(128 + sps.len() + pps.len());
    // VisualSampleEntry (ISO 14496-12 §12.1.3).
    let avc1 = b.open(b"avc1");
    b.zeros(6); // reserved
    b.u16(1); // data_reference_index
    b.u16(0); // pre_defined
    b.u16(0); // reserved
    b.zeros(3 * 4); // pre_defined
    b.u16(width);
    b.u16(height);
    b.u32(0x0048_0000); // horizresolution 72 dpi
    b.u32(0x0048_0000); // vertresolution 72 dpi
    b.u32(0); // reserved
    b.u16(1); // frame_count
    b.zeros(32); // compressorname (Pascal string, empty)
    b.u16(0x0018); // depth
    b.u16(0xffff); // pre_defined = -1

    // AVCDecoderConfigurationRecord (ISO 14496-15 §5.3.3.1). For High profiles (100 and up)
    // the spec adds chroma/bit-depth fields; decoders (ffmpeg included) read them from the
    // SPS anyway, and openh264 only encodes Baseline/Main, so they are left out here.
    let avcc = b.open(b"avcC");
    b.u8(1); // configurationVersion
    b.u8(sps[1]); // AVCProfileIndication
    b.u8(sps[2]); // profile_compatibility
    b.u8(sps[3]); // AVCLevelIndication
    b.u8(0xfc | 3); // reserved | lengthSizeMinusOne: 4-byte lengths
    b.u8(0xe0 | 1); // reserved | numOfSequenceParameterSets
    b.u16(sps_len);
    b.bytes(sps);
    b.u8(1); // numOfPictureParameterSets
    b.u16(pps_len);
    b.bytes(pps);
    b.close(avcc)?;
    b.close(avc1)?;
    Ok(b.buf)
}

/// The RFC 6381 codec string of an H.264 SPS, e.g. `avc1.42C01E` (what retina's
/// `rfc6381_codec()` returns for H.264).
pub fn avc1_codec_string(sps: &[u8]) -> Option<String> {
    if sps.len() < 4 || sps[0] & 0x1f != 7 {
        return None;
    }
    Some(format!("avc1.{:02X}{:02X}{:02X}", sps[1], sps[2], sps[3]))
}

/// One H.264 access unit converted from Annex B (start codes, as encoders and
/// `FrameFormat::SIMPLE` give) to what retina's `FrameFormat::MP4` gives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AvccFrame {
    /// The NAL units other than SPS, PPS and access unit delimiters, each with a 4-byte
    /// big-endian length prefix. Empty if the input held only parameter sets.
    pub data: Vec<u8>,
    /// The last SPS seen (without prefix), if any.
    pub sps: Option<Vec<u8>>,
    /// The last PPS seen (without prefix), if any.
    pub pps: Option<Vec<u8>>,
    /// Whether an IDR slice (NAL type 5) is present.
    pub is_idr: bool,
}

/// Splits Annex B data at its start codes (`00 00 01` or `00 00 00 01`) and converts it to
/// AVCC, moving SPS/PPS out of band (retina's `FrameFormat::MP4` does the same: parameter sets
/// go to the sample entry, never in-band).
pub fn annexb_to_avcc(annexb: &[u8]) -> AvccFrame {
    let mut out = AvccFrame::default();
    for nal in annexb_nals(annexb) {
        match nal[0] & 0x1f {
            7 => out.sps = Some(nal.to_vec()),
            8 => out.pps = Some(nal.to_vec()),
            9 => {} // access unit delimiter: not wanted in MP4 samples
            t => {
                if t == 5 {
                    out.is_idr = true;
                }
                // A NAL unit over 4 GiB cannot come out of an encoder; skip rather than wrap.
                if let Ok(len) = u32::try_from(nal.len()) {
                    out.data.extend_from_slice(&len.to_be_bytes());
                    out.data.extend_from_slice(nal);
                }
            }
        }
    }
    out
}

/// The NAL units of Annex B data, without start codes or trailing zero bytes.
fn annexb_nals(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new(); // offsets just past each start code
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(data.len(), |&n| n - 3);
        // Zeros before a start code are its leading zero (4-byte form) or trailing_zero_8bits.
        while end > s && data[end - 1] == 0 {
            end -= 1;
        }
        if end > s {
            nals.push(&data[s..end]);
        }
    }
    nals
}

// ---------------------------------------------------------------------------------------------

/// A minimal box reader for tests: the (type, payload) of each box in `data`; `None` if a
/// size is inconsistent.
#[cfg(test)]
pub(crate) fn read_boxes(data: &[u8]) -> Option<Vec<([u8; 4], &[u8])>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.len() < 8 {
            return None;
        }
        let size = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
        if size < 8 || size > rest.len() {
            return None;
        }
        out.push((rest[4..8].try_into().ok()?, &rest[8..size]));
        rest = &rest[size..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A Constrained Baseline level 1.3 SPS/PPS pair. Only the SPS's first four bytes (NAL
    // header, profile, constraints, level) are read here; the rest is opaque.
    const SPS: &[u8] = &[
        0x67, 0x42, 0xc0, 0x0d, 0x8c, 0x8d, 0x40, 0xa0, 0xf9, 0x00, 0xf0, 0x88, 0x46, 0xa0,
    ];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

    fn find<'a>(boxes: &[([u8; 4], &'a [u8])], t: &[u8; 4]) -> &'a [u8] {
        boxes
            .iter()
            .find(|(bt, _)| bt == t)
            .map(|(_, p)| *p)
            .unwrap_or_else(|| panic!("no {}", String::from_utf8_lossy(t)))
    }

    fn types(boxes: &[([u8; 4], &[u8])]) -> Vec<String> {
        boxes
            .iter()
            .map(|(t, _)| String::from_utf8_lossy(t).into_owned())
            .collect()
    }

    fn be32(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn init_segment_structure() {
        let entry = avc1_sample_entry(SPS, PPS, 320, 240).unwrap();
        let init = init_segment(&entry, 320, 240, 90_000).unwrap();
        let top = read_boxes(&init).unwrap();
        assert_eq!(types(&top), ["ftyp", "moov"]);
        assert_eq!(&find(&top, b"ftyp")[..4], b"iso6");
        assert!(find(&top, b"ftyp").windows(4).any(|w| w == b"cmfc"));

        let moov = read_boxes(find(&top, b"moov")).unwrap();
        assert_eq!(types(&moov), ["mvhd", "trak", "mvex"]);
        assert_eq!(be32(find(&moov, b"mvhd"), 4 + 8), 90_000);

        let trak = read_boxes(find(&moov, b"trak")).unwrap();
        assert_eq!(types(&trak), ["tkhd", "mdia"]);
        let tkhd = find(&trak, b"tkhd");
        assert_eq!(tkhd.len(), 92 - 8); // tkhd version 0 is 92 bytes
        assert_eq!(be32(tkhd, tkhd.len() - 8), 320 << 16);
        assert_eq!(be32(tkhd, tkhd.len() - 4), 240 << 16);

        let mdia = read_boxes(find(&trak, b"mdia")).unwrap();
        assert_eq!(types(&mdia), ["mdhd", "hdlr", "minf"]);
        assert_eq!(be32(find(&mdia, b"mdhd"), 4 + 8), 90_000);
        assert_eq!(&find(&mdia, b"hdlr")[8..12], b"vide");

        let minf = read_boxes(find(&mdia, b"minf")).unwrap();
        assert_eq!(types(&minf), ["vmhd", "dinf", "stbl"]);
        let dinf = read_boxes(find(&minf, b"dinf")).unwrap();
        let dref = find(&dinf, b"dref");
        assert_eq!(types(&read_boxes(&dref[8..]).unwrap()), ["url "]);

        let stbl = read_boxes(find(&minf, b"stbl")).unwrap();
        assert_eq!(types(&stbl), ["stsd", "stts", "stsc", "stco", "stsz"]);
        let stsd = find(&stbl, b"stsd");
        assert_eq!(be32(stsd, 4), 1);
        assert_eq!(&stsd[8..], &entry[..]);
        let entries = read_boxes(&stsd[8..]).unwrap();
        assert_eq!(types(&entries), ["avc1"]);
        // avc1 has 78 bytes of VisualSampleEntry fields before its child boxes.
        let avc1_children = read_boxes(&find(&entries, b"avc1")[78..]).unwrap();
        assert_eq!(types(&avc1_children), ["avcC"]);
        let avcc = find(&avc1_children, b"avcC");
        assert_eq!(&avcc[..4], &[1, 0x42, 0xc0, 0x0d]);
        assert_eq!(&avcc[8..8 + SPS.len()], SPS);

        let mvex = read_boxes(find(&moov, b"mvex")).unwrap();
        assert_eq!(types(&mvex), ["trex"]);
        assert_eq!(be32(find(&mvex, b"trex"), 4), TRACK_ID);
    }

    #[test]
    fn init_segment_rejects_bad_input() {
        let entry = avc1_sample_entry(SPS, PPS, 320, 240).unwrap();
        assert!(init_segment(&[], 320, 240, 90_000).is_err());
        assert!(init_segment(&entry[..entry.len() - 1], 320, 240, 90_000).is_err());
        let mut bad_type = entry.clone();
        bad_type[4] = 0;
        assert!(init_segment(&bad_type, 320, 240, 90_000).is_err());
        assert!(init_segment(&entry, 70_000, 240, 90_000).is_err());
        assert!(init_segment(&entry, 320, 240, 0).is_err());
        assert!(avc1_sample_entry(PPS, SPS, 320, 240).is_err());
        assert!(avc1_sample_entry(&SPS[..3], PPS, 320, 240).is_err());
    }

    #[test]
    fn media_segment_structure() {
        let samples = [
            Sample {
                data: Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]),
                duration: 9000,
                is_key: true,
            },
            Sample {
                data: Bytes::from_static(&[0, 0, 0, 3, 0x41, 0x9a, 0x01]),
                duration: 9001,
                is_key: false,
            },
        ];
        let seg = media_segment(7, 1 << 40, &samples).unwrap();
        let top = read_boxes(&seg).unwrap();
        assert_eq!(types(&top), ["moof", "mdat"]);
        let mdat = find(&top, b"mdat");
        assert_eq!(
            mdat,
            &[0, 0, 0, 2, 0x65, 0x88, 0, 0, 0, 3, 0x41, 0x9a, 0x01]
        );

        let moof = read_boxes(find(&top, b"moof")).unwrap();
        assert_eq!(types(&moof), ["mfhd", "traf"]);
        assert_eq!(be32(find(&moof, b"mfhd"), 4), 7);
        let traf = read_boxes(find(&moof, b"traf")).unwrap();
        assert_eq!(types(&traf), ["tfhd", "tfdt", "trun"]);
        assert_eq!(be32(find(&traf, b"tfhd"), 0), 0x02_0000);
        let tfdt = find(&traf, b"tfdt");
        assert_eq!(tfdt[0], 1);
        assert_eq!(u64::from_be_bytes(tfdt[4..12].try_into().unwrap()), 1 << 40);

        let trun = find(&traf, b"trun");
        assert_eq!(be32(trun, 0), 0x701);
        assert_eq!(be32(trun, 4), 2);
        // data_offset points from the moof's first byte to the first sample byte.
        let data_offset = be32(trun, 8) as usize;
        assert_eq!(&seg[data_offset..], mdat);
        assert_eq!(
            [be32(trun, 12), be32(trun, 16), be32(trun, 20)],
            [9000, 6, FLAGS_KEY]
        );
        assert_eq!(
            [be32(trun, 24), be32(trun, 28), be32(trun, 32)],
            [9001, 7, FLAGS_NON_KEY]
        );
    }

    #[test]
    fn media_segment_rejects_bad_input() {
        assert!(media_segment(1, 0, &[]).is_err());
        let empty = Sample {
            data: Bytes::new(),
            duration: 1,
            is_key: true,
        };
        assert!(media_segment(1, 0, &[empty]).is_err());
    }

    #[test]
    fn parameter_sets_from_sample_entry() {
        let entry = avc1_sample_entry(SPS, PPS, 320, 240).unwrap();
        let (codec, sets) = parameter_sets(&entry).unwrap();
        assert_eq!(codec, Codec::H264);
        assert_eq!(sets, [SPS, PPS]);
        for cut in [0, 8, 86, 95, entry.len() - 1] {
            let mut short = entry[..cut].to_vec();
            if short.len() >= 4 {
                let n = short.len() as u32;
                short[..4].copy_from_slice(&n.to_be_bytes());
            }
            assert!(parameter_sets(&short).is_err(), "cut at {cut}");
        }
        let mut avcc = vec![0, 0, 0, 2, 0x41, 0x9a];
        assert!(!has_parameter_sets(Codec::H264, &avcc));
        avcc.extend_from_slice(&[0, 0, 0, 1, 0x68]);
        assert!(has_parameter_sets(Codec::H264, &avcc));
        assert!(!has_parameter_sets(Codec::H264, &[0, 0, 0, 9, 0x67]));
        // H.265 VPS (32), SPS (33), PPS (34) NAL headers are two bytes: type << 1.
        assert!(has_parameter_sets(Codec::H265, &[0, 0, 0, 2, 0x42, 0x01]));
        assert!(!has_parameter_sets(Codec::H265, &[0, 0, 0, 2, 0x26, 0x01]));
    }

    #[test]
    fn annexb_conversion() {
        let mut annexb = vec![0, 0, 0, 1];
        annexb.extend_from_slice(SPS);
        annexb.extend_from_slice(&[0, 0, 0, 1]);
        annexb.extend_from_slice(PPS);
        annexb.extend_from_slice(&[0, 0, 1, 0x65, 0xb8, 0x00, 0x00, 0x00, 0x01, 0x65, 0x01]);
        let f = annexb_to_avcc(&annexb);
        assert_eq!(f.sps.as_deref(), Some(SPS));
        assert_eq!(f.pps.as_deref(), Some(PPS));
        assert!(f.is_idr);
        assert_eq!(f.data, [0, 0, 0, 2, 0x65, 0xb8, 0, 0, 0, 2, 0x65, 0x01]);
        assert_eq!(avc1_codec_string(SPS).as_deref(), Some("avc1.42C00D"));

        let p = annexb_to_avcc(&[0, 0, 1, 0x41, 0x9a, 0, 0, 1]);
        assert!(!p.is_idr);
        assert_eq!(p.data, [0, 0, 0, 2, 0x41, 0x9a]);
        assert_eq!(annexb_to_avcc(&[1, 2, 3]), AvccFrame::default());
    }
}
