//! H.264 → JPEG for snapshots from RTSP: retina hands us access units with 4-byte length
//! prefixes (what fMP4 needs too) and the SPS/PPS in front of every keyframe; openh264 wants
//! Annex B. A picture is the last frame of a run that starts at a keyframe (a P-frame alone
//! decodes to garbage or nothing), scaled down to `max_width` and encoded with jpeg-encoder.

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

/// A decoded picture as packed RGB.
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// Decode a run of access units (AVCC framing) starting at a keyframe and return the last
/// picture. `params` (Annex B SPS/PPS) is fed first when given.
pub fn decode_last(params: Option<&[u8]>, units: &[impl AsRef<[u8]>]) -> Result<Rgb> {
    let mut dec = openh264::decoder::Decoder::new()
        .map_err(|e| Error::new(ErrorKind::Internal, format!("H.264 decoder: {e}")))?;
    let mut annexb = Vec::new();
    let mut last: Option<Rgb> = None;
    let mut errors = 0usize;
    if let Some(p) = params
        && let Err(e) = dec.decode(p)
    {
        tracing::debug!(error = %e, "parameter sets rejected by the decoder");
    }
    for u in units {
        annexb.clear();
        avcc_to_annexb(u.as_ref(), &mut annexb)?;
        match dec.decode(&annexb) {
            Ok(Some(yuv)) => last = Some(to_rgb(&yuv)),
            Ok(None) => {}
            Err(_) => errors += 1,
        }
    }
    // Decoders may hold the last picture back (reordering): ask for it.
    if let Ok(rest) = dec.flush_remaining()
        && let Some(yuv) = rest.last()
    {
        last = Some(to_rgb(yuv));
    }
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

fn to_rgb(yuv: &DecodedYUV<'_>) -> Rgb {
    let (width, height) = yuv.dimensions();
    let mut data = vec![0u8; width * height * 3];
    yuv.write_rgb8(&mut data);
    Rgb {
        width,
        height,
        data,
    }
}

/// Box-filter downscale to at most `max_width` (aspect kept); `0` or narrower = unchanged.
pub fn scale(rgb: Rgb, max_width: u32) -> Rgb {
    let max_width = max_width as usize;
    if max_width == 0 || rgb.width <= max_width {
        return rgb;
    }
    let (w, h) = (max_width, (rgb.height * max_width / rgb.width).max(1));
    let mut out = vec![0u8; w * h * 3];
    for y in 0..h {
        let sy0 = y * rgb.height / h;
        let sy1 = ((y + 1) * rgb.height / h).max(sy0 + 1);
        for x in 0..w {
            let sx0 = x * rgb.width / w;
            let sx1 = ((x + 1) * rgb.width / w).max(sx0 + 1);
            let mut acc = [0u32; 3];
            for sy in sy0..sy1 {
                let row = &rgb.data[(sy * rgb.width + sx0) * 3..(sy * rgb.width + sx1) * 3];
                for px in row.chunks_exact(3) {
                    acc[0] += px[0] as u32;
                    acc[1] += px[1] as u32;
                    acc[2] += px[2] as u32;
                }
            }
            let n = ((sy1 - sy0) * (sx1 - sx0)) as u32;
            let o = (y * w + x) * 3;
            out[o] = (acc[0] / n) as u8;
            out[o + 1] = (acc[1] / n) as u8;
            out[o + 2] = (acc[2] / n) as u8;
        }
    }
    Rgb {
        width: w,
        height: h,
        data: out,
    }
}

pub fn encode_jpeg(rgb: &Rgb, quality: u8) -> Result<Vec<u8>> {
    let (Ok(w), Ok(h)) = (u16::try_from(rgb.width), u16::try_from(rgb.height)) else {
        return Err(Error::new(
            ErrorKind::Protocol,
            format!("picture {}x{} too large for JPEG", rgb.width, rgb.height),
        ));
    };
    let mut out = Vec::with_capacity(rgb.data.len() / 8);
    jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100))
        .encode(&rgb.data, w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| Error::new(ErrorKind::Internal, format!("JPEG encode: {e}")))?;
    Ok(out)
}

/// Access units from a keyframe on → JPEG bytes and the picture's (scaled) size.
pub fn units_to_jpeg(
    params: Option<&[u8]>,
    units: &[impl AsRef<[u8]>],
    quality: u8,
    max_width: u32,
) -> Result<(Vec<u8>, (usize, usize))> {
    let rgb = scale(decode_last(params, units)?, max_width);
    let size = (rgb.width, rgb.height);
    Ok((encode_jpeg(&rgb, quality)?, size))
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

    #[test]
    fn scale_keeps_aspect_and_averages() {
        let rgb = Rgb {
            width: 4,
            height: 2,
            data: [[0u8, 0, 0], [255, 255, 255]].repeat(4).concat(),
        };
        let s = scale(rgb, 2);
        assert_eq!((s.width, s.height), (2, 1));
        assert_eq!(s.data, [127, 127, 127, 127, 127, 127]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let units = [vec![0, 0, 0, 3, 0x65, 0xff, 0x00]];
        assert!(decode_last(None, &units).is_err());
    }
}
