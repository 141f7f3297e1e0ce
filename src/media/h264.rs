//! H.264 → JPEG for snapshots from RTSP: retina hands us access units with 4-byte length
//! prefixes (what fMP4 needs too) and the SPS/PPS in front of every keyframe; openh264 wants
//! Annex B. A picture is the last frame of a run that starts at a keyframe (a P-frame alone
//! decodes to garbage or nothing), scaled down to `max_width` and encoded with jpeg-encoder
//! straight from the decoder's YUV, a few rows at a time (no full-size RGB copy).

use crate::error::{Error, ErrorKind, Result};
use openh264::decoder::DecodedYUV;
use openh264::formats::YUVSource;

/// Rewrite 4-byte length prefixes as Annex B start codes. A length running past the end is an
/// error (a broken depacketizer or a cut frame), never a panic.
pub fn avcc_to_annexb(avcc: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let mut rest = avcc;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "H.264 frame ends inside a NAL length ({} bytes left)",
                    rest.len()
                ),
            ));
        }
        let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let Some(nal) = rest.get(4..4 + n) else {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "H.264 NAL length {n} runs past the frame ({} bytes left)",
                    rest.len() - 4
                ),
            ));
        };
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
        rest = &rest[4 + n..];
    }
    Ok(())
}

/// The SPS and PPS inside an `avcC` box body (`AVCDecoderConfigurationRecord`), as Annex B.
/// Lets a decoder start from the sample entry when the stream carries no in-band parameters.
pub fn avcc_parameter_sets(record: &[u8]) -> Result<Vec<u8>> {
    let bad = || Error::new(ErrorKind::Protocol, "malformed avcC record");
    let mut out = Vec::new();
    let n_sps = (*record.get(5).ok_or_else(bad)? & 0x1f) as usize;
    let mut i = 6;
    let take = |i: &mut usize, out: &mut Vec<u8>| -> Result<()> {
        let len = u16::from_be_bytes([
            *record.get(*i).ok_or_else(bad)?,
            *record.get(*i + 1).ok_or_else(bad)?,
        ]) as usize;
        let nal = record.get(*i + 2..*i + 2 + len).ok_or_else(bad)?;
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
        *i += 2 + len;
        Ok(())
    };
    for _ in 0..n_sps {
        take(&mut i, &mut out)?;
    }
    let n_pps = *record.get(i).ok_or_else(bad)? as usize;
    i += 1;
    for _ in 0..n_pps {
        take(&mut i, &mut out)?;
    }
    Ok(out)
}

/// A decoded picture as planar YUV 4:2:0 (I420), rows without padding: what the decoder
/// gives, at half the size of packed RGB. Limited range (16–235), as H.264 cameras send.
pub struct Yuv {
    pub width: usize,
    pub height: usize,
    /// Y (`width` × `height`), then U and V (`chroma_width` × `chroma_height` each).
    pub data: Vec<u8>,
    pub chroma_width: usize,
    pub chroma_height: usize,
}

impl Yuv {
    fn planes(&self) -> (&[u8], &[u8], &[u8]) {
        let (y, uv) = self.data.split_at(self.width * self.height);
        let (u, v) = uv.split_at(self.chroma_width * self.chroma_height);
        (y, u, v)
    }

    /// Copy a decoder's picture (which its next frame overwrites) into `slot`, reusing the
    /// buffer already there.
    fn keep(slot: &mut Option<Yuv>, pic: &DecodedYUV<'_>) {
        let (w, h) = pic.dimensions();
        let (cw, ch) = pic.dimensions_uv();
        let (sy, su, sv) = pic.strides();
        let mut data = slot.take().map(|y| y.data).unwrap_or_default();
        data.clear();
        data.reserve_exact(w * h + 2 * cw * ch);
        for (plane, stride, w, h) in [
            (pic.y(), sy, w, h),
            (pic.u(), su, cw, ch),
            (pic.v(), sv, cw, ch),
        ] {
            for row in plane.chunks(stride).take(h) {
                data.extend_from_slice(&row[..w]);
            }
        }
        *slot = Some(Yuv {
            width: w,
            height: h,
            data,
            chroma_width: cw,
            chroma_height: ch,
        });
    }
}

/// Decode a run of access units (AVCC framing) starting at a keyframe and return the last
/// picture. `params` (Annex B SPS/PPS) is fed first when given.
///
/// Memory: the decoder itself (~27 MB at 1080p: its picture buffers and per-macroblock
/// state, freed when it returns) and one copy of the picture returned (3 MB at 1080p). Only
/// the last unit's picture is copied out of the decoder (a door picture decodes up to a GOP);
/// when the last unit gives none (a broken last frame), the run is decoded again keeping
/// each picture, so the newest one that decodes is still the answer.
pub fn decode_last(params: Option<&[u8]>, units: &[impl AsRef<[u8]>]) -> Result<Yuv> {
    let (last, _) = decode_pass(params, units, false)?;
    if let Some(y) = last {
        return Ok(y);
    }
    let (last, errors) = decode_pass(params, units, true)?;
    last.ok_or_else(|| {
        Error::new(
            ErrorKind::Protocol,
            format!(
                "no picture decoded from {} H.264 frame(s) ({errors} rejected)",
                units.len()
            ),
        )
    })
}

/// One decode of `units`: the picture of the last unit (or, with `keep_all`, the newest
/// any unit gave) and how many units the decoder rejected.
fn decode_pass(
    params: Option<&[u8]>,
    units: &[impl AsRef<[u8]>],
    keep_all: bool,
) -> Result<(Option<Yuv>, usize)> {
    let mut dec = openh264::decoder::Decoder::new()
        .map_err(|e| Error::new(ErrorKind::Internal, format!("H.264 decoder: {e}")))?;
    let mut annexb = Vec::new();
    let mut last: Option<Yuv> = None;
    let mut errors = 0usize;
    if let Some(p) = params
        && let Err(e) = dec.decode(p)
    {
        tracing::debug!(error = %e, "parameter sets rejected by the decoder");
    }
    for (i, u) in units.iter().enumerate() {
        annexb.clear();
        avcc_to_annexb(u.as_ref(), &mut annexb)?;
        match dec.decode(&annexb) {
            Ok(Some(pic)) if keep_all || i + 1 == units.len() => Yuv::keep(&mut last, &pic),
            Ok(_) => {}
            Err(_) => errors += 1,
        }
    }
    // Decoders may hold the last picture back (reordering): ask for it.
    if let Ok(rest) = dec.flush_remaining()
        && let Some(pic) = rest.last()
    {
        Yuv::keep(&mut last, pic);
    }
    Ok((last, errors))
}

/// The size a picture is scaled to: at most `max_width` wide, aspect kept; `0` or narrower
/// = unchanged.
pub fn scaled_size(width: usize, height: usize, max_width: u32) -> (usize, usize) {
    let max_width = max_width as usize;
    if max_width == 0 || width <= max_width {
        return (width, height);
    }
    (max_width, (height * max_width / width).max(1))
}

/// The rows of a picture as the JPEG encoder asks for them (16 at a time): scaled (box
/// filter) and turned from limited to full range as they go, so no full-size RGB or scaled
/// copy is ever held.
struct JpegRows<'a> {
    yuv: &'a Yuv,
    width: usize,
    height: usize,
    /// Source columns `[start, end)` of each output column.
    cols: Vec<(usize, usize)>,
    luma: [u8; 256],
    chroma: [u8; 256],
}

impl<'a> JpegRows<'a> {
    fn new(yuv: &'a Yuv, max_width: u32) -> JpegRows<'a> {
        let (width, height) = scaled_size(yuv.width, yuv.height, max_width);
        let cols = (0..width)
            .map(|x| span(x, width, yuv.width))
            .collect::<Vec<_>>();
        // BT.601 limited range to JFIF's full range (what openh264's RGB conversion assumes).
        let range = |v: usize, off: f32, scale: f32, mid: f32| {
            ((v as f32 - off) * scale + mid).round().clamp(0.0, 255.0) as u8
        };
        JpegRows {
            yuv,
            width,
            height,
            cols,
            luma: std::array::from_fn(|v| range(v, 16.0, 255.0 / 219.0, 0.0)),
            chroma: std::array::from_fn(|v| range(v, 128.0, 255.0 / 224.0, 128.0)),
        }
    }
}

/// Source range `[start, end)` (at least one) of output index `i` of `n` over `src`.
fn span(i: usize, n: usize, src: usize) -> (usize, usize) {
    let a = i * src / n;
    (a, ((i + 1) * src / n).max(a + 1))
}

/// Mean of `plane` (rows of `stride`) over columns `xs` of rows `ys`.
fn mean(plane: &[u8], stride: usize, xs: (usize, usize), ys: (usize, usize)) -> u8 {
    let mut acc = 0u32;
    for row in ys.0..ys.1 {
        for &p in &plane[row * stride + xs.0..row * stride + xs.1] {
            acc += u32::from(p);
        }
    }
    (acc / ((xs.1 - xs.0) * (ys.1 - ys.0)) as u32) as u8
}

impl jpeg_encoder::ImageBuffer for JpegRows<'_> {
    fn get_jpeg_color_type(&self) -> jpeg_encoder::JpegColorType {
        jpeg_encoder::JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        self.width as u16
    }

    fn height(&self) -> u16 {
        self.height as u16
    }

    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        let src = self.yuv;
        let (py, pu, pv) = src.planes();
        let (cw, ch) = (src.chroma_width.max(1), src.chroma_height.max(1));
        let y = usize::from(y);
        let [out_y, out_u, out_v, _] = buffers;
        if self.width == src.width && self.height == src.height {
            // Unscaled (the default for 1080p): a table lookup per sample.
            let w = src.width;
            out_y.extend(
                py[y * w..(y + 1) * w]
                    .iter()
                    .map(|&v| self.luma[usize::from(v)]),
            );
            let crow = (y / 2).min(ch - 1) * cw;
            for (out, plane) in [(out_u, pu), (out_v, pv)] {
                let row = &plane[crow..crow + cw];
                let start = out.len();
                // Each chroma sample covers two columns; an odd last column takes the last.
                out.resize(start + w, self.chroma[usize::from(row[cw - 1])]);
                for (pair, &c) in out[start..].chunks_exact_mut(2).zip(row) {
                    pair.fill(self.chroma[usize::from(c)]);
                }
            }
            return;
        }
        let ys = span(y, self.height, src.height);
        // The chroma rows and columns under the same area (half resolution, at least one).
        let half = |(a, b): (usize, usize), n: usize| {
            let a = (a / 2).min(n - 1);
            (a, b.div_ceil(2).clamp(a + 1, n))
        };
        let cys = half(ys, ch);
        for &xs in &self.cols {
            out_y.push(self.luma[usize::from(mean(py, src.width, xs, ys))]);
            let cxs = half(xs, cw);
            out_u.push(self.chroma[usize::from(mean(pu, cw, cxs, cys))]);
            out_v.push(self.chroma[usize::from(mean(pv, cw, cxs, cys))]);
        }
    }
}

/// A picture as a JPEG, scaled down to at most `max_width` (`0` = never); with its size.
pub fn encode_jpeg(yuv: &Yuv, quality: u8, max_width: u32) -> Result<(Vec<u8>, (usize, usize))> {
    let rows = JpegRows::new(yuv, max_width);
    let size = (rows.width, rows.height);
    if u16::try_from(rows.width).is_err() || u16::try_from(rows.height).is_err() {
        return Err(Error::new(
            ErrorKind::Protocol,
            format!("picture {}x{} too large for JPEG", rows.width, rows.height),
        ));
    }
    let mut out = Vec::with_capacity(rows.width * rows.height / 4);
    jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100))
        .encode_image(rows)
        .map_err(|e| Error::new(ErrorKind::Internal, format!("JPEG encode: {e}")))?;
    Ok((out, size))
}

/// Access units from a keyframe on → JPEG bytes and the picture's (scaled) size.
pub fn units_to_jpeg(
    params: Option<&[u8]>,
    units: &[impl AsRef<[u8]>],
    quality: u8,
    max_width: u32,
) -> Result<(Vec<u8>, (usize, usize))> {
    encode_jpeg(&decode_last(params, units)?, quality, max_width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avcc_to_annexb_rewrites_lengths_and_rejects_overruns() {
        let mut out = Vec::new();
        avcc_to_annexb(&[0, 0, 0, 2, 0x67, 0x42, 0, 0, 0, 1, 0x68], &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68]);
        let e = avcc_to_annexb(&[0, 0, 0, 9, 0x67], &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("runs past"), "{e}");
        assert!(avcc_to_annexb(&[0, 0], &mut Vec::new()).is_err());
    }

    #[test]
    fn parameter_sets_from_an_avcc_record() {
        // version 1, profile 0x42, compat 0, level 0x1e, 0xff, 1 SPS of 2 bytes, 1 PPS of 1.
        let rec = [
            1, 0x42, 0, 0x1e, 0xff, 0xe1, 0, 2, 0x67, 0x42, 1, 0, 1, 0x68,
        ];
        assert_eq!(
            avcc_parameter_sets(&rec).unwrap(),
            [0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68]
        );
        assert!(avcc_parameter_sets(&rec[..9]).is_err());
    }

    /// A 4×2 picture: Y black and white columns in turn, chroma neutral.
    fn stripes() -> Yuv {
        Yuv {
            width: 4,
            height: 2,
            data: [[16u8, 235].repeat(4), vec![128; 4]].concat(),
            chroma_width: 2,
            chroma_height: 1,
        }
    }

    /// The rows the JPEG encoder would get.
    fn rows(yuv: &Yuv, max_width: u32) -> ((usize, usize), [Vec<u8>; 4]) {
        use jpeg_encoder::ImageBuffer;
        let r = JpegRows::new(yuv, max_width);
        let mut out: [Vec<u8>; 4] = Default::default();
        for y in 0..r.height() {
            r.fill_buffers(y, &mut out);
        }
        ((r.width, r.height), out)
    }

    #[test]
    fn rows_are_full_range_and_scaled_with_the_aspect_kept() {
        let ((w, h), [y, u, v, _]) = rows(&stripes(), 0);
        assert_eq!((w, h), (4, 2));
        assert_eq!(y, [0, 255].repeat(4));
        assert_eq!((u, v), (vec![128; 8], vec![128; 8]));
        // Half width: each output pixel is the mean of a black and a white one.
        let ((w, h), [y, u, _, _]) = rows(&stripes(), 2);
        assert_eq!((w, h), (2, 1));
        let mid = JpegRows::new(&stripes(), 0).luma[(16 + 235) / 2];
        assert_eq!(y, [mid, mid]);
        assert_eq!(u, [128, 128]);
        assert_eq!(scaled_size(1920, 1080, 640), (640, 360));
        assert_eq!(scaled_size(1920, 1080, 1920), (1920, 1080));
    }

    #[test]
    fn a_decoded_picture_becomes_a_jpeg_of_the_scaled_size() {
        let mut yuv = stripes();
        yuv.width = 64;
        yuv.height = 36;
        yuv.chroma_width = 32;
        yuv.chroma_height = 18;
        yuv.data = vec![128; 64 * 36 * 3 / 2];
        let (jpeg, size) = encode_jpeg(&yuv, 80, 32).unwrap();
        assert_eq!(size, (32, 18));
        assert!(jpeg.starts_with(&[0xFF, 0xD8]) && jpeg.ends_with(&[0xFF, 0xD9]));
        // SOF0: height then width.
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        assert_eq!(&jpeg[sof + 5..sof + 9], &[0, 18, 0, 32]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let units = [vec![0, 0, 0, 3, 0x65, 0xff, 0x00]];
        assert!(decode_last(None, &units).is_err());
    }
}
