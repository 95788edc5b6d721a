//! Pixel-format converters on arbitrary bytes with fuzzer-chosen frame sizes (at most
//! 4096x4096 and 8 MB of pixels): an error or a frame, never a panic or an out-of-bounds read.
//!
//! Input: [format, range (and window width), width lo, width hi, height lo, height hi, data...].
#![no_main]

use kidney_screen::capture::convert::{self, LumaRange, PixelFormat};
use kidney_screen::frame::LumaFrame;
use kidney_screen::geometry::Rect;
use libfuzzer_sys::fuzz_target;

const FORMATS: [PixelFormat; 5] =
    [PixelFormat::Yuyv, PixelFormat::Nv12, PixelFormat::Mjpeg, PixelFormat::Grey, PixelFormat::Rgb24];
const MAX_SIDE: u32 = 4096;
const MAX_PIXELS: u32 = 8 * 1024 * 1024 / 3;

fuzz_target!(|input: &[u8]| {
    if input.len() < 6 {
        return;
    }
    let format = FORMATS[usize::from(input[0]) % FORMATS.len()];
    let range = if input[1] & 1 == 0 { LumaRange::Limited } else { LumaRange::Full };
    // 0 is kept: an empty size must be an error too.
    let width = u32::from(u16::from_le_bytes([input[2], input[3]])) % (MAX_SIDE + 1);
    let mut height = u32::from(u16::from_le_bytes([input[4], input[5]])) % (MAX_SIDE + 1);
    if width > 0 && width * height > MAX_PIXELS {
        height = MAX_PIXELS / width;
    }
    let data = &input[6..];
    let mut frame = LumaFrame::default();
    let mut scratch = Vec::new();
    if convert::to_luma(None, format, range, data, width, height, &mut frame, &mut scratch).is_ok() {
        assert_eq!((frame.width(), frame.height()), (width, height));
    }
    // Within a window taken from the range byte's upper bits (one that does not fit the frame
    // converts it whole): the same bounds checks, rows written in part.
    let window = Rect::new(width / 4, height / 4, (width / 2).max(u32::from(input[1] >> 1)), height / 2 + 1);
    if convert::to_luma(Some(window), format, range, data, width, height, &mut frame, &mut scratch).is_ok() {
        assert_eq!((frame.width(), frame.height()), (width, height));
    }
    // The converters on their own, with an output of the frame's size.
    let mut out = vec![0u8; (width * height) as usize];
    match format {
        PixelFormat::Yuyv => drop(convert::yuyv_to_luma(data, width, height, &mut out)),
        PixelFormat::Nv12 => drop(convert::nv12_to_luma(data, width, height, &mut out)),
        PixelFormat::Mjpeg => drop(convert::mjpeg_to_luma(data, width, height, &mut out, &mut scratch)),
        PixelFormat::Grey => convert::limited_luma_to_full(data, &mut out),
        PixelFormat::Rgb24 => convert::rgb_to_luma(data, &mut out),
    }
});
