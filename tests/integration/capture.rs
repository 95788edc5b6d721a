//! Format conversion against frames written by ffmpeg, not by our own encoder.

use kidney_screen::capture::CaptureError;
use kidney_screen::capture::FrameSource;
use kidney_screen::capture::convert::{LumaRange, PixelFormat};
use kidney_screen::capture::replay::{MjpegReplay, RawReplay};

use crate::fixture;

const W: u32 = 320;
const H: u32 = 180;

fn first_frame(src: &mut dyn FrameSource) -> Vec<u8> {
    let (frame, _) = src.next_frame().expect("frame").expect("not at end");
    assert_eq!((frame.width(), frame.height()), (W, H));
    frame.pixels().to_vec()
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(fixture(rel)).expect(rel)
}

#[test]
fn yuyv_luma_equals_ffmpeg_y_plane() {
    let mut src =
        RawReplay::open(&fixture("frames/yuyv_320x180.yuv"), PixelFormat::Yuyv, LumaRange::Full, W, H, false).unwrap();
    assert_eq!(first_frame(&mut src), read("frames/y_yuyv_320x180.gray"));
    assert!(src.next_frame().unwrap().is_none(), "one frame in the file");
}

#[test]
fn nv12_luma_equals_ffmpeg_y_plane() {
    let mut src =
        RawReplay::open(&fixture("frames/nv12_320x180.yuv"), PixelFormat::Nv12, LumaRange::Full, W, H, false).unwrap();
    assert_eq!(first_frame(&mut src), read("frames/y_nv12_320x180.gray"));
}

#[test]
fn limited_range_expansion_matches_ffmpeg_swscale() {
    let mut src =
        RawReplay::open(&fixture("frames/yuyv_320x180.yuv"), PixelFormat::Yuyv, LumaRange::Limited, W, H, false)
            .unwrap();
    let ours = first_frame(&mut src);
    let theirs = read("frames/yfull_yuyv_320x180.gray");
    let max = ours.iter().zip(&theirs).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
    // swscale rounds through 15-bit fixed point; ours rounds exactly: at most one level apart.
    assert!(max <= 1, "max difference {max}");
}

#[test]
fn mjpeg_luma_matches_ffmpeg_decoder() {
    let mut src = MjpegReplay::open(&fixture("frames/frame_320x180.mjpg"), false).unwrap();
    let ours = first_frame(&mut src);
    let theirs = read("frames/y_mjpeg_320x180.gray");
    let diffs: Vec<u32> = ours.iter().zip(&theirs).map(|(a, b)| u32::from(a.abs_diff(*b))).collect();
    let mean = diffs.iter().sum::<u32>() as f64 / diffs.len() as f64;
    let max = *diffs.iter().max().unwrap();
    // Two IDCT implementations plus our colour round trip: a level or two, never more.
    assert!(mean < 0.75 && max <= 4, "mean {mean} max {max}");
}

#[test]
fn mjpeg_stream_of_full_screens_replays_every_frame() {
    let mut src = MjpegReplay::open(&fixture("frames/screens_1280x720.mjpg"), false).unwrap();
    let mut n = 0;
    while let Some((frame, info)) = src.next_frame().unwrap() {
        assert_eq!((frame.width(), frame.height()), (1280, 720));
        assert_eq!(info.sequence, n);
        n += 1;
    }
    assert_eq!(n, 4);
}

#[test]
fn truncated_mjpeg_is_a_dropped_frame_not_a_panic() {
    let data = read("frames/screens_1280x720.mjpg");
    let dir = tempfile::tempdir().unwrap();
    // Cut inside the second JPEG: the first decodes, the second is reported and the stream ends.
    let first_end = data.windows(2).position(|w| w == [0xFF, 0xD9]).unwrap() + 2;
    for cut in [first_end + 600, first_end + 40_000, data.len() - 3] {
        let path = dir.path().join(format!("cut{cut}.mjpg"));
        std::fs::write(&path, &data[..cut]).unwrap();
        let mut src = MjpegReplay::open(&path, false).unwrap();
        assert!(src.next_frame().unwrap().is_some());
        let mut errors = 0;
        loop {
            match src.next_frame() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(CaptureError::BadFrame(msg)) => {
                    assert!(msg.contains("JPEG"), "{msg}");
                    errors += 1;
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert!(errors >= 1, "cut at {cut}");
    }
}

#[test]
fn corrupt_jpeg_body_is_a_bad_frame() {
    let mut data = read("frames/frame_320x180.mjpg");
    // Overwrite the entropy-coded middle with garbage but keep the markers.
    let mid = data.len() / 2;
    for b in &mut data[mid..mid + 200] {
        *b = 0xFF;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.mjpg");
    std::fs::write(&path, &data).unwrap();
    let mut src = MjpegReplay::open(&path, false).unwrap();
    // Either the decoder rejects it or it conceals the damage; it must never panic.
    if let Err(e) = src.next_frame() {
        assert!(matches!(e, CaptureError::BadFrame(_)), "{e}");
    }
}

#[test]
fn wrong_size_and_empty_raw_files_are_refused_with_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.yuv");
    std::fs::write(&empty, b"").unwrap();
    let err = RawReplay::open(&empty, PixelFormat::Yuyv, LumaRange::Full, W, H, false).err().expect("refused");
    assert!(format!("{err:#}").contains("empty.yuv"), "{err:#}");

    let short = dir.path().join("short.yuv");
    std::fs::write(&short, &read("frames/yuyv_320x180.yuv")[..1000]).unwrap();
    let err = RawReplay::open(&short, PixelFormat::Yuyv, LumaRange::Full, W, H, false).err().expect("refused");
    assert!(format!("{err:#}").contains("short.yuv"), "{err:#}");
}

#[test]
fn converters_refuse_short_buffers() {
    use kidney_screen::capture::convert::{nv12_to_luma, yuyv_to_luma};
    let mut out = vec![0u8; (W * H) as usize];
    assert!(yuyv_to_luma(&[0u8; 100], W, H, &mut out).is_err());
    assert!(nv12_to_luma(&[0u8; 100], W, H, &mut out).is_err());
}
