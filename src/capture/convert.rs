//! Pixel-format conversion to the 8-bit luma plane the pipeline works on.
//!
//! Every function checks the buffer length first: a truncated frame from a dongle is an error
//! naming the sizes, never an out-of-bounds read.

use anyhow::{Context, Result, ensure};

use crate::frame::LumaFrame;
use crate::geometry::Rect;

/// Pixel formats a capture dongle delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PixelFormat {
    /// Packed 4:2:2, Y0 U Y1 V.
    Yuyv,
    /// Planar Y followed by interleaved UV at half resolution.
    Nv12,
    /// Motion JPEG: one baseline JPEG per frame.
    Mjpeg,
    /// 8-bit greyscale.
    Grey,
    /// Packed 8-bit RGB.
    Rgb24,
}

impl PixelFormat {
    /// Bytes a raw frame of this format occupies; None for compressed formats.
    pub fn raw_len(self, width: u32, height: u32) -> Option<usize> {
        let px = width as usize * height as usize;
        match self {
            PixelFormat::Yuyv => Some(px * 2),
            PixelFormat::Nv12 => Some(px + px / 2),
            PixelFormat::Grey => Some(px),
            PixelFormat::Rgb24 => Some(px * 3),
            PixelFormat::Mjpeg => None,
        }
    }

    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Yuyv => *b"YUYV",
            PixelFormat::Nv12 => *b"NV12",
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::Grey => *b"GREY",
            PixelFormat::Rgb24 => *b"RGB3",
        }
    }

    pub fn from_fourcc(code: [u8; 4]) -> Option<Self> {
        [Self::Yuyv, Self::Nv12, Self::Mjpeg, Self::Grey, Self::Rgb24].into_iter().find(|f| f.fourcc() == code)
    }
}

fn check_len(format: PixelFormat, data: &[u8], width: u32, height: u32) -> Result<()> {
    if let Some(expected) = format.raw_len(width, height) {
        ensure!(
            data.len() >= expected,
            "truncated {format:?} frame: {} bytes, a {width}x{height} frame needs {expected}",
            data.len()
        );
    }
    Ok(())
}

/// YUYV: luma is every even byte.
pub fn yuyv_to_luma(data: &[u8], width: u32, height: u32, out: &mut [u8]) -> Result<()> {
    crate::simd::with_avx2!(yuyv_luma_mapped(data, width, height, out, |y| y))
}

/// Every even byte of a YUYV frame, through `map` (inlined, so the loop still vectorises).
#[inline(always)]
fn yuyv_luma_mapped(data: &[u8], width: u32, height: u32, out: &mut [u8], map: impl Fn(u8) -> u8) -> Result<()> {
    check_len(PixelFormat::Yuyv, data, width, height)?;
    let n = width as usize * height as usize;
    for (dst, pair) in out[..n].iter_mut().zip(data.chunks_exact(2)) {
        *dst = map(pair[0]);
    }
    Ok(())
}

/// NV12: the first plane is luma.
pub fn nv12_to_luma(data: &[u8], width: u32, height: u32, out: &mut [u8]) -> Result<()> {
    check_len(PixelFormat::Nv12, data, width, height)?;
    let n = width as usize * height as usize;
    out[..n].copy_from_slice(&data[..n]);
    Ok(())
}

/// How the source codes luma: video YUV is usually limited ("studio") range 16..235, JPEG and
/// image files use the full 0..255. The pipeline always works in full range, so a grey B-mode
/// pixel has the same value whether it came through a dongle or a screenshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LumaRange {
    #[default]
    Limited,
    Full,
}

/// Limited-range luma (16..235) to full range, rounding to nearest: the exact value of
/// `((v - 16) * 510 + 219) / 438` clamped to 0..255, written in u16 arithmetic
/// (`255 * 239 + 109` fits) so that the compiler vectorises it; a table lookup does not.
#[inline(always)]
fn limited_to_full(v: u8) -> u8 {
    let x = v.saturating_sub(16) as u16;
    ((x * 255 + 109) / 219).min(255) as u8
}

/// Limited-range luma (16..235; an NV12 luma plane's row) expanded to full range into `out`,
/// rounding to nearest, in the same pass as the copy: one read of the input and one write, not a
/// copy and then a second pass over it. Converts as many pixels as the shorter slice holds.
pub fn limited_luma_to_full(luma: &[u8], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, detected at run time.
        unsafe { limited_luma_to_full_avx2(luma, out) };
        return;
    }
    out.iter_mut().zip(luma).for_each(|(dst, &v)| *dst = limited_to_full(v));
}

/// [`limited_to_full`] on 16-bit lanes (the value in each lane's low byte), as multiply-high by
/// 38305 and a shift by 7 for the division by 219: exact on every value the expansion produces
/// (tested on all 256 inputs).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn expand_lanes_avx2(lanes: std::arch::x86_64::__m256i) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let y = _mm256_subs_epu16(_mm256_and_si256(lanes, _mm256_set1_epi16(0xff)), _mm256_set1_epi16(16));
    let numerator = _mm256_add_epi16(_mm256_mullo_epi16(y, _mm256_set1_epi16(255)), _mm256_set1_epi16(109));
    _mm256_srli_epi16::<7>(_mm256_mulhi_epu16(numerator, _mm256_set1_epi16(38305u16 as i16)))
}

/// [`limited_luma_to_full`], 32 pixels per step.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn limited_luma_to_full_avx2(luma: &[u8], out: &mut [u8]) {
    use std::arch::x86_64::*;
    let n = luma.len().min(out.len());
    let (ins, in_tail) = luma[..n].as_chunks::<32>();
    let (outs, out_tail) = out[..n].as_chunks_mut::<32>();
    let zero = _mm256_setzero_si256();
    for (pixels, dst) in ins.iter().zip(outs.iter_mut()) {
        // SAFETY: the load reads the 32-byte input chunk and the store writes the 32-byte
        // output chunk.
        unsafe {
            let v = _mm256_loadu_si256(pixels.as_ptr().cast());
            // Unpacking and packing both work within 128-bit lanes: the order comes back as it was.
            let low = expand_lanes_avx2(_mm256_unpacklo_epi8(v, zero));
            let high = expand_lanes_avx2(_mm256_unpackhi_epi8(v, zero));
            _mm256_storeu_si256(dst.as_mut_ptr().cast(), _mm256_packus_epi16(low, high));
        }
    }
    for (dst, &v) in out_tail.iter_mut().zip(in_tail) {
        *dst = limited_to_full(v);
    }
}

/// YUYV luma expanded from limited range in the same pass (one read of the frame, not two).
fn yuyv_to_full_range_luma(data: &[u8], width: u32, height: u32, out: &mut [u8]) -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        check_len(PixelFormat::Yuyv, data, width, height)?;
        let n = width as usize * height as usize;
        // SAFETY: the CPU has AVX2, detected at run time.
        unsafe { yuyv_limited_to_full_avx2(&data[..2 * n], &mut out[..n]) };
        return Ok(());
    }
    crate::simd::with_avx2!(yuyv_luma_mapped(data, width, height, out, limited_to_full))
}

/// [`limited_to_full`] of every even byte of `yuyv` into `out`, 32 pixels per step. LLVM keeps
/// the mapped loop at 0.18 ms per 1080p frame (even-byte gather, 16-bit division); this is
/// 0.08 ms. The division by 219 is a multiply-high by 38305 and a shift by 7, exact on every
/// value the expansion produces (tested on all 256 inputs).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn yuyv_limited_to_full_avx2(yuyv: &[u8], out: &mut [u8]) {
    use std::arch::x86_64::*;
    let (pairs, pair_tail) = yuyv.as_chunks::<64>();
    let (outs, out_tail) = out.as_chunks_mut::<32>();
    for (pair, luma) in pairs.iter().zip(outs.iter_mut()) {
        // SAFETY: each load reads 32 of the chunk's 64 bytes and the store writes the 32-byte
        // output chunk.
        unsafe {
            let first = expand_lanes_avx2(_mm256_loadu_si256(pair.as_ptr().cast()));
            let second = expand_lanes_avx2(_mm256_loadu_si256(pair.as_ptr().add(32).cast()));
            // packus saturates at 255 (the scalar min) and interleaves 128-bit lanes: permute back.
            let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi16(first, second));
            _mm256_storeu_si256(luma.as_mut_ptr().cast(), packed);
        }
    }
    for (luma, pair) in out_tail.iter_mut().zip(pair_tail.chunks_exact(2)) {
        *luma = limited_to_full(pair[0]);
    }
}

/// Full-range BT.601 luma from RGB, integer arithmetic; exact identity on grey pixels.
pub fn rgb_to_luma(rgb: &[u8], out: &mut [u8]) {
    for (dst, px) in out.iter_mut().zip(rgb.chunks_exact(3)) {
        let y = 19595 * u32::from(px[0]) + 38470 * u32::from(px[1]) + 7471 * u32::from(px[2]) + 32768;
        *dst = (y >> 16) as u8;
    }
}

/// Decodes one MJPEG frame into `scratch` (the decoder's output, kept between calls) and says
/// how its pixels are stored there.
fn decode_mjpeg(data: &[u8], width: u32, height: u32, scratch: &mut Vec<u8>) -> Result<JpegPixels> {
    use image::ImageDecoder;
    ensure!(!data.is_empty(), "empty MJPEG frame");
    let decoder = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(data))
        .context("MJPEG frame is not a decodable JPEG")?;
    let (w, h) = decoder.dimensions();
    ensure!((w, h) == (width, height), "MJPEG frame is {w}x{h}, the stream was negotiated at {width}x{height}");
    let pixels = match decoder.color_type() {
        image::ColorType::L8 => JpegPixels::Luma,
        image::ColorType::Rgb8 => JpegPixels::Rgb,
        other => anyhow::bail!("MJPEG frame has unsupported colour type {other:?}"),
    };
    scratch.resize(decoder.total_bytes() as usize, 0);
    decoder.read_image(scratch).context("MJPEG frame is truncated or corrupt")?;
    Ok(pixels)
}

/// How a decoded JPEG holds its pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JpegPixels {
    Luma,
    /// The decoder converted YCbCr to RGB; BT.601 recovers Y (full range as JPEG uses).
    Rgb,
}

/// Decodes one MJPEG frame and keeps its luma. JPEG stores Y directly, so the Y channel is
/// taken without a colour round trip. `scratch` holds the decoded image between calls.
pub fn mjpeg_to_luma(data: &[u8], width: u32, height: u32, out: &mut [u8], scratch: &mut Vec<u8>) -> Result<()> {
    let pixels = decode_mjpeg(data, width, height, scratch)?;
    let n = width as usize * height as usize;
    match pixels {
        JpegPixels::Luma => out[..n].copy_from_slice(&scratch[..n]),
        JpegPixels::Rgb => rgb_to_luma(scratch, &mut out[..n]),
    }
    Ok(())
}

/// Converts a raw or compressed frame of `format` into `out` (resized to width x height): whole
/// with no `window`, or with one (that fits the frame) only the pixels inside it and, across the
/// whole width, the rows the block sums sample ([`LumaFrame::write_rows`]).
///
/// The luma is written row by row with the block sums taken after every 16 rows, so that the
/// frame carries them for screen location without a second pass over it: at 1080p that pass
/// read 2 MB that inference had just evicted from the cache (README "Speed").
#[allow(clippy::too_many_arguments)]
pub fn to_luma(
    window: Option<Rect>,
    format: PixelFormat,
    range: LumaRange,
    data: &[u8],
    width: u32,
    height: u32,
    out: &mut LumaFrame,
    scratch: &mut Vec<u8>,
) -> Result<()> {
    ensure!(width > 0 && height > 0, "frame size {width}x{height} is empty");
    // Raw formats are checked whole first, so that each row's slice below is in bounds.
    check_len(format, data, width, height)?;
    out.reshape(width, height);
    let w = width as usize;
    // Input bytes per pixel, and the input for `dst.len()` pixels of row `y` from column `x`.
    let span_of = |bytes_per_pixel: usize, y: u32, x: u32, pixels: usize| {
        let at = (y as usize * w + x as usize) * bytes_per_pixel;
        at..at + pixels * bytes_per_pixel
    };
    // The input of a span a partial write will convert a few spans later: a capture buffer is
    // cold (filled by DMA), and the spans are too short and far apart for the hardware
    // prefetcher (LumaFrame::write_rows).
    let prefetch = |bytes_per_pixel: usize| {
        move |y: u32, x: u32, pixels: u32| {
            crate::simd::prefetch_read(&data[span_of(bytes_per_pixel, y, x, pixels as usize)])
        }
    };
    let limited = range == LumaRange::Limited;
    match format {
        PixelFormat::Yuyv => out.write_rows(window, prefetch(2), |y, x, dst| {
            let from = &data[span_of(2, y, x, dst.len())];
            if limited {
                yuyv_to_full_range_luma(from, dst.len() as u32, 1, dst)
            } else {
                yuyv_to_luma(from, dst.len() as u32, 1, dst)
            }
        }),
        PixelFormat::Nv12 | PixelFormat::Grey => out.write_rows(window, prefetch(1), |y, x, dst| {
            // NV12's first plane is the luma.
            let from = &data[span_of(1, y, x, dst.len())];
            if limited && format == PixelFormat::Nv12 {
                limited_luma_to_full(from, dst);
            } else {
                dst.copy_from_slice(from);
            }
            Ok(())
        }),
        PixelFormat::Rgb24 => out.write_rows(window, prefetch(3), |y, x, dst| {
            rgb_to_luma(&data[span_of(3, y, x, dst.len())], dst);
            Ok(())
        }),
        PixelFormat::Mjpeg => {
            // A JPEG decodes whole; the window only spares the copy.
            let pixels = decode_mjpeg(data, width, height, scratch)?;
            let channels = if pixels == JpegPixels::Rgb { 3 } else { 1 };
            // The decoder has just written it: nothing to prefetch.
            out.write_rows(
                window,
                |_, _, _| {},
                |y, x, dst| {
                    let from = &scratch[span_of(channels, y, x, dst.len())];
                    match pixels {
                        JpegPixels::Luma => dst.copy_from_slice(from),
                        JpegPixels::Rgb => rgb_to_luma(from, dst),
                    }
                    Ok(())
                },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limited_range_yuyv_vector_path_equals_the_scalar_map() {
        // Every byte value in both Y and chroma positions, and lengths that leave a scalar tail.
        let data: Vec<u8> = (0..2 * 1000u32).map(|i| (i * 7 + i / 256) as u8).collect();
        for width in [1000u32, 999, 31, 32, 1] {
            let n = width as usize;
            let mut fast = vec![0u8; n];
            yuyv_to_full_range_luma(&data[..2 * n], width, 1, &mut fast).unwrap();
            let expected: Vec<u8> = data[..2 * n].chunks_exact(2).map(|pair| limited_to_full(pair[0])).collect();
            assert_eq!(fast, expected, "width {width}");
        }
        // The luma-plane path (NV12) too, on every value and with scalar tails.
        for len in [0usize, 1, 31, 32, 33, 256, 1000] {
            let plane: Vec<u8> = (0..len).map(|i| (i * 7 + i / 256) as u8).collect();
            let mut fast = vec![0u8; len];
            limited_luma_to_full(&plane, &mut fast);
            assert_eq!(fast, plane.iter().map(|&v| limited_to_full(v)).collect::<Vec<_>>(), "plane of {len}");
        }
        let all: Vec<u8> = (0..=255u8).flat_map(|v| [v, 128]).collect();
        let mut fast = vec![0u8; 256];
        yuyv_to_full_range_luma(&all, 256, 1, &mut fast).unwrap();
        assert_eq!(fast, (0..=255u8).map(limited_to_full).collect::<Vec<_>>());
    }

    #[test]
    fn converting_within_a_window_equals_converting_whole_where_it_writes() {
        let (width, height) = (203u32, 70u32);
        let n = (width * height) as usize;
        let bytes = |len: usize| -> Vec<u8> { (0..len).map(|i| ((i * 7919 + i / 3) % 256) as u8).collect() };
        let rgb = bytes(3 * n);
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode(&rgb, width, height, image::ExtendedColorType::Rgb8)
            .unwrap();
        let window = Rect::new(37, 21, 101, 30);
        for (format, data) in [
            (PixelFormat::Yuyv, bytes(2 * n)),
            (PixelFormat::Nv12, bytes(n + n / 2)),
            (PixelFormat::Grey, bytes(n)),
            (PixelFormat::Rgb24, rgb.clone()),
            (PixelFormat::Mjpeg, jpeg.clone()),
        ] {
            for range in [LumaRange::Limited, LumaRange::Full] {
                let (mut whole, mut part, mut scratch) = (LumaFrame::default(), LumaFrame::default(), Vec::new());
                to_luma(None, format, range, &data, width, height, &mut whole, &mut scratch).unwrap();
                to_luma(Some(window), format, range, &data, width, height, &mut part, &mut scratch).unwrap();
                assert_eq!(part.window(), Some(window));
                assert_eq!(part.block_sums(), whole.block_sums(), "{format:?}");
                let mut written = 0;
                for y in 0..height {
                    for x in 0..width {
                        let inside = window.contains(&Rect::new(x, y, 1, 1));
                        if inside || crate::frame::is_sampled_row(y) {
                            assert_eq!(part.get(x, y), whole.get(x, y), "{format:?} {range:?} at {x},{y}");
                            written += 1;
                        }
                    }
                }
                assert_eq!(written, window.area() as usize + 18 * width as usize - 7 * window.width as usize);
                // A window that does not fit the frame converts it whole.
                to_luma(Some(Rect::new(150, 0, 60, 10)), format, range, &data, width, height, &mut part, &mut scratch)
                    .unwrap();
                assert_eq!((part.window(), part.pixels()), (None, whole.pixels()), "{format:?}");
            }
        }
    }

    #[test]
    fn truncated_frames_are_errors() {
        let mut out = vec![0u8; 16];
        let err = yuyv_to_luma(&[0u8; 7], 4, 4, &mut out).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(nv12_to_luma(&[0u8; 23], 4, 4, &mut out).is_err());
        let mut scratch = Vec::new();
        assert!(mjpeg_to_luma(&[0xFF, 0xD8, 0xFF], 4, 4, &mut out, &mut scratch).is_err());
        assert!(mjpeg_to_luma(&[], 4, 4, &mut out, &mut scratch).is_err());
    }

    #[test]
    fn limited_range_formula_is_exact_for_every_byte() {
        for v in 0..=255u8 {
            // The rounding definition, in i32 with truncating division.
            let reference = (((v as i32 - 16) * 510 + 219) / 438).clamp(0, 255) as u8;
            assert_eq!(limited_to_full(v), reference, "luma {v}");
        }
    }

    #[test]
    fn fused_yuyv_equals_extract_then_expand() {
        let data: Vec<u8> = (0..2 * 37 * 3).map(|i| (i * 97 % 256) as u8).collect();
        let (mut fused, mut two_pass) = ([0u8; 37 * 3], [0u8; 37 * 3]);
        yuyv_to_full_range_luma(&data, 37, 3, &mut fused).unwrap();
        let mut extracted = [0u8; 37 * 3];
        yuyv_to_luma(&data, 37, 3, &mut extracted).unwrap();
        limited_luma_to_full(&extracted, &mut two_pass);
        assert_eq!(fused, two_pass);
    }

    #[test]
    fn yuyv_takes_even_bytes() {
        let data = [10, 1, 20, 2, 30, 3, 40, 4];
        let mut out = [0u8; 4];
        yuyv_to_luma(&data, 4, 1, &mut out).unwrap();
        assert_eq!(out, [10, 20, 30, 40]);
    }

    #[test]
    fn rgb_luma_matches_bt601_endpoints() {
        let mut out = [0u8; 2];
        rgb_to_luma(&[0, 0, 0, 255, 255, 255], &mut out);
        assert_eq!(out, [0, 255]);
        for v in 0..=255u8 {
            let mut y = [0u8];
            rgb_to_luma(&[v, v, v], &mut y);
            assert_eq!(y[0], v, "grey must map to itself");
        }
    }

    #[test]
    fn limited_range_expands_to_full() {
        let mut v = [0u8; 5];
        limited_luma_to_full(&[16, 235, 0, 255, 126], &mut v);
        assert_eq!(v, [0, 255, 0, 255, 128]);
    }

    #[test]
    fn fourcc_round_trips() {
        for f in [PixelFormat::Yuyv, PixelFormat::Nv12, PixelFormat::Mjpeg, PixelFormat::Grey, PixelFormat::Rgb24] {
            assert_eq!(PixelFormat::from_fourcc(f.fourcc()), Some(f));
        }
    }
}
