//! Replay sources on arbitrary files: an MJPEG stream (concatenated JPEGs, truncated, corrupt)
//! and a raw dump of a fuzzer-chosen format and size. Every frame is a frame or a counted bad
//! frame, never a panic; the stream ends.
//!
//! Input: [format, width lo, width hi, height, data...]; the data is written to a file and
//! replayed both as MJPEG and as a raw dump.
#![no_main]

use std::io::Write;

use kidney_screen::capture::replay::{MjpegReplay, RawReplay};
use kidney_screen::capture::{CaptureError, FrameSource, LumaRange, PixelFormat};
use libfuzzer_sys::fuzz_target;

const RAW_FORMATS: [PixelFormat; 4] = [PixelFormat::Yuyv, PixelFormat::Nv12, PixelFormat::Grey, PixelFormat::Rgb24];
fn path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("kidney-screen-fuzz-replay-{}.bin", std::process::id()))
}

fn drain(source: &mut dyn FrameSource) {
    for _ in 0..64 {
        match source.next_frame() {
            Ok(Some((frame, _))) => assert_eq!(frame.pixels().len(), (frame.width() * frame.height()) as usize),
            Ok(None) => return,
            Err(CaptureError::BadFrame(_)) => {}
            Err(CaptureError::Fatal(_)) => return,
            Err(e) => panic!("replay reported {e}"),
        }
    }
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 4 {
        return;
    }
    let format = RAW_FORMATS[usize::from(input[0]) % RAW_FORMATS.len()];
    let width = u32::from(u16::from_le_bytes([input[1], input[2]])) % 1025;
    let height = u32::from(input[3]);
    let data = &input[4..];
    let path = path();
    std::fs::File::create(&path).and_then(|mut f| f.write_all(data)).expect("temp file");
    if let Ok(mut mjpeg) = MjpegReplay::open(&path, false) {
        drain(&mut mjpeg);
    }
    if let Ok(mut raw) = RawReplay::open(&path, format, LumaRange::Limited, width, height, false) {
        drain(&mut raw);
    }
});
