//! Golden images of every state (tests/fixtures/display/*.png; `UPDATE_GOLDENS=1` rewrites
//! them), partial redraws, the OFF screen, and the sinks end to end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;

use super::png::PngSink;
use super::render::Layout;
use super::*;

const OP: OperatingPoint = OperatingPoint { threshold: 0.5, indeterminate: [0.35, 0.65] };
const MODEL: &str = "densenet121-kidney-sim-int8";
const ROI_SIDE: u32 = 128;

/// A fixed synthetic ROI: a diagonal gradient with a darker ellipse ringed by a bright rim.
fn roi_pixels(shift: u32) -> Vec<u8> {
    let n = ROI_SIDE as i64;
    let mut px = Vec::with_capacity((n * n) as usize);
    for y in 0..n {
        for x in 0..n {
            let base = 30 + (x + y + i64::from(shift)) * 150 / (2 * n);
            let (dx, dy) = (x - n / 2, y - n / 2);
            let r = dx * dx * 4 + dy * dy * 9; // ellipse, 2:3
            let v = if r < 3000 {
                base / 2
            } else if r < 4200 {
                220
            } else {
                base
            };
            px.push(v.clamp(0, 255) as u8);
        }
    }
    px
}

struct Case {
    name: &'static str,
    verdict: Option<Verdict>,
    probability: Option<f32>,
    agreeing: u8,
    with_roi: bool,
}

const CASES: [Case; 7] = [
    Case { name: "normal", verdict: Some(Verdict::Normal), probability: Some(0.12), agreeing: 5, with_roi: true },
    Case {
        name: "esrd_suspected",
        verdict: Some(Verdict::EsrdSuspected),
        probability: Some(0.91),
        agreeing: 6,
        with_roi: true,
    },
    Case {
        name: "indeterminate",
        verdict: Some(Verdict::Indeterminate),
        probability: Some(0.52),
        agreeing: 4,
        with_roi: true,
    },
    Case { name: "no_signal", verdict: Some(Verdict::NoSignal), probability: None, agreeing: 6, with_roi: false },
    Case { name: "no_image", verdict: Some(Verdict::NoImage), probability: None, agreeing: 5, with_roi: false },
    Case { name: "fault", verdict: Some(Verdict::Fault), probability: None, agreeing: 4, with_roi: false },
    Case { name: "waiting", verdict: None, probability: Some(0.42), agreeing: 2, with_roi: true },
];

fn state<'a>(case: &Case, roi: &'a [u8]) -> IndicatorState<'a> {
    IndicatorState {
        verdict: case.verdict,
        probability: case.probability,
        agreeing: case.agreeing,
        window: 6,
        uptime: Duration::from_secs(12),
        model_id: MODEL,
        changed: true,
        sequence: 42,
        roi: case.with_roi.then_some((ROI_SIDE, ROI_SIDE, roi)),
    }
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/display")
}

/// Renders `case` at `size` through the PNG sink and returns what it wrote.
fn render_png(case: &Case, size: Size, dir: &Path) -> image::RgbImage {
    let roi = roi_pixels(0);
    let path = dir.join(format!("{}_{}x{}.png", case.name, size.width, size.height));
    let mut display = StatusDisplay::new(PngSink::new(&path, size).unwrap(), OP).unwrap();
    assert!(display.update(&state(case, &roi)).unwrap());
    let written = image::open(&path).unwrap().to_rgb8();
    assert_eq!(&written, display.sink().image(), "the file holds what was drawn");
    written
}

fn check_golden(name: &str, image: &image::RgbImage) {
    let path = golden_dir().join(format!("{name}.png"));
    if std::env::var_os("UPDATE_GOLDENS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(golden_dir()).unwrap();
        image.save(&path).unwrap();
        return;
    }
    let golden =
        image::open(&path).unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDENS=1 writes it)", path.display())).to_rgb8();
    assert_eq!(golden.dimensions(), image.dimensions(), "{name}: size");
    let differing = golden.pixels().zip(image.pixels()).filter(|(a, b)| a != b).count();
    assert_eq!(
        differing,
        0,
        "{name}: {differing} pixels differ from {} (UPDATE_GOLDENS=1 rewrites it)",
        path.display()
    );
}

#[test]
fn golden_240x240_every_state() {
    let dir = tempfile::tempdir().unwrap();
    for case in &CASES {
        let image = render_png(case, Size::new(240, 240), dir.path());
        check_golden(case.name, &image);
    }
}

#[test]
fn golden_portrait_and_landscape() {
    let dir = tempfile::tempdir().unwrap();
    for size in [Size::new(240, 320), Size::new(320, 240)] {
        for case in [&CASES[1], &CASES[2]] {
            let image = render_png(case, size, dir.path());
            check_golden(&format!("{}_{}x{}", case.name, size.width, size.height), &image);
        }
    }
}

#[test]
fn banner_has_the_verdict_colour_and_bar_marks_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(Size::new(240, 240));
    for case in &CASES {
        let image = render_png(case, Size::new(240, 240), dir.path());
        let (bg, _) = verdict_colors(case.verdict);
        let corner = image.get_pixel(2, 2);
        assert_eq!(corner.0, [bg.r(), bg.g(), bg.b()], "{}", case.name);
        // The threshold tick is white, above the bar's track.
        let bar = layout.physical(&layout.bar);
        let tick_x = bar.top_left.x as u32 + (0.5 * (bar.size.width - 1) as f32).round() as u32;
        assert_eq!(image.get_pixel(tick_x, bar.top_left.y as u32 + 18).0, [255, 255, 255], "{}", case.name);
    }
}

#[test]
fn larger_screens_draw_the_same_layout_scaled() {
    let dir = tempfile::tempdir().unwrap();
    // Without ROI (the thumbnail uses full resolution) 480x480 is 240x240 doubled.
    let case = &CASES[3];
    let small = render_png(case, Size::new(240, 240), dir.path());
    let large = render_png(case, Size::new(480, 480), dir.path());
    for (x, y, p) in large.enumerate_pixels() {
        assert_eq!(p, small.get_pixel(x / 2, y / 2), "({x}, {y})");
    }
    // A 1080p framebuffer: scale 4, centred; everything still inside.
    for case in &CASES {
        render_png(case, Size::new(1920, 1080), dir.path());
        render_png(case, Size::new(800, 480), dir.path());
    }
}

/// Records what the display sends.
#[derive(Default)]
struct Recorder {
    size: Size,
    flushed: Vec<Rectangle>,
    presents: u32,
    backlight: Vec<bool>,
    fail: bool,
}

impl DisplaySink for Recorder {
    fn size(&self) -> Size {
        self.size
    }
    fn flush_region(&mut self, canvas: &Canvas, area: Rectangle) -> Result<()> {
        anyhow::ensure!(!self.fail, "bus error");
        assert!(canvas.bounds().contains(area.top_left) && canvas.bounds().contains(area.bottom_right().unwrap()));
        self.flushed.push(area);
        Ok(())
    }
    fn present(&mut self) -> Result<()> {
        self.presents += 1;
        Ok(())
    }
    fn set_backlight(&mut self, on: bool) -> Result<()> {
        self.backlight.push(on);
        Ok(())
    }
}

fn recorder_display() -> StatusDisplay<Recorder> {
    let sink = Recorder { size: Size::new(240, 240), ..Recorder::default() };
    StatusDisplay::new(sink, OP).unwrap()
}

fn inside(area: &Rectangle, outer: &Rectangle) -> bool {
    outer.contains(area.top_left) && outer.contains(area.bottom_right().unwrap())
}

#[test]
fn only_what_changed_is_flushed() {
    let roi = roi_pixels(0);
    let moved = roi_pixels(40);
    let layout = Layout::new(Size::new(240, 240));
    let mut d = recorder_display();
    let base = state(&CASES[0], &roi);

    assert!(d.update(&base).unwrap());
    assert_eq!(d.sink().flushed, vec![Rectangle::new(Point::zero(), Size::new(240, 240))], "first frame: everything");
    assert_eq!(d.sink().backlight, vec![true]);

    d.sink_mut().flushed.clear();
    assert!(!d.update(&base).unwrap(), "identical frame");
    assert!(
        !d.update(&IndicatorState { sequence: 43, uptime: Duration::from_secs(13), changed: false, ..base }).unwrap()
    );
    assert!(d.sink().flushed.is_empty());
    assert_eq!(d.sink().presents, 1);

    // A new probability: only the bar (a refresh interval later).
    let later = |ms: u64| base.uptime + Duration::from_millis(ms);
    assert!(d.update(&IndicatorState { probability: Some(0.2), uptime: later(1100), ..base }).unwrap());
    let bar = layout.physical(&layout.bar);
    assert_eq!(d.sink().flushed.len(), 1);
    assert!(inside(&d.sink().flushed[0], &bar), "{:?} outside the bar {bar:?}", d.sink().flushed);

    // A new ROI: only the thumbnail.
    d.sink_mut().flushed.clear();
    let moved_roi =
        IndicatorState { probability: Some(0.2), roi: Some((ROI_SIDE, ROI_SIDE, &moved)), uptime: later(1200), ..base };
    assert!(d.update(&moved_roi).unwrap());
    let thumb = layout.physical(&layout.thumb);
    assert_eq!(d.sink().flushed.len(), 1);
    assert!(inside(&d.sink().flushed[0], &thumb));

    // A new verdict and count: banner and info, nothing else, without waiting for the interval.
    d.sink_mut().flushed.clear();
    let esrd = IndicatorState { verdict: Some(Verdict::EsrdSuspected), agreeing: 6, uptime: later(1210), ..moved_roi };
    assert!(d.update(&esrd).unwrap());
    let flushed = d.sink().flushed.clone();
    assert_eq!(flushed.len(), 2, "{flushed:?}");
    assert!(inside(&flushed[0], &layout.physical(&layout.banner)));
    assert!(inside(&flushed[1], &layout.physical(&layout.info)));
}

/// Whether two displays' canvases hold the same pixels.
fn same_canvas(a: &Canvas, b: &Canvas) -> bool {
    let size = a.size();
    size == b.size() && (0..size.height).all(|y| a.row_span(y, 0, size.width) == b.row_span(y, 0, size.width))
}

#[test]
fn bar_thumbnail_and_count_redraw_at_most_once_per_refresh_interval() {
    let (roi, moved) = (roi_pixels(0), roi_pixels(40));
    let layout = Layout::new(Size::new(240, 240));
    let mut d = recorder_display();
    let base = state(&CASES[0], &roi);
    let at = |ms: u64| base.uptime + Duration::from_millis(ms);
    assert!(d.update(&base).unwrap());
    d.sink_mut().flushed.clear();

    // Within the interval a new probability, ROI and count wait.
    let pending =
        IndicatorState { probability: Some(0.3), agreeing: 3, roi: Some((ROI_SIDE, ROI_SIDE, &moved)), ..base };
    assert!(!d.update(&IndicatorState { uptime: at(40), ..pending }).unwrap());
    assert!(!d.update(&IndicatorState { uptime: at(99), ..pending }).unwrap());
    assert!(d.sink().flushed.is_empty());
    // Once it has passed, all three are drawn, and the panel shows what a fresh display would.
    assert!(d.update(&IndicatorState { uptime: at(100), ..pending }).unwrap());
    let flushed = d.sink().flushed.clone();
    assert_eq!(flushed.len(), 3, "bar, thumbnail, count: {flushed:?}");
    assert!(inside(&flushed[0], &layout.physical(&layout.bar)));
    assert!(inside(&flushed[1], &layout.physical(&layout.thumb)));
    assert!(inside(&flushed[2], &layout.physical(&layout.info)));
    let mut fresh = recorder_display();
    fresh.update(&IndicatorState { uptime: at(100), ..pending }).unwrap();
    assert!(same_canvas(d.canvas(), fresh.canvas()), "after the pending redraw");

    // A verdict change is drawn at once, with the bar that was waiting.
    d.sink_mut().flushed.clear();
    assert!(!d.update(&IndicatorState { probability: Some(0.7), uptime: at(120), ..pending }).unwrap());
    let esrd =
        IndicatorState { verdict: Some(Verdict::EsrdSuspected), probability: Some(0.8), uptime: at(130), ..pending };
    assert!(d.update(&esrd).unwrap());
    let flushed = d.sink().flushed.clone();
    assert_eq!(flushed.len(), 2, "banner and bar: {flushed:?}");
    assert!(inside(&flushed[0], &layout.physical(&layout.banner)));
    assert!(inside(&flushed[1], &layout.physical(&layout.bar)));
    let mut fresh = recorder_display();
    fresh.update(&esrd).unwrap();
    assert!(same_canvas(d.canvas(), fresh.canvas()), "after the verdict change");

    // A verdict change alone, inside the interval, leaves a new probability for later.
    d.sink_mut().flushed.clear();
    let normal = IndicatorState { verdict: Some(Verdict::Normal), probability: Some(0.2), uptime: at(140), ..esrd };
    let normal_later = IndicatorState { probability: Some(0.1), uptime: at(150), ..normal };
    assert!(d.update(&normal).unwrap());
    assert!(!d.update(&normal_later).unwrap(), "the bar was drawn 10 ms ago");
    assert!(d.update(&IndicatorState { uptime: at(250), ..normal_later }).unwrap());

    // With a zero interval every change is drawn with its frame.
    let mut every = recorder_display().with_refresh(Duration::ZERO);
    assert!(every.update(&base).unwrap());
    assert!(every.update(&IndicatorState { probability: Some(0.3), ..base }).unwrap());
    assert!(every.update(&IndicatorState { probability: Some(0.31), ..base }).unwrap());
}

#[test]
fn safe_state_shows_off_and_turns_the_backlight_off() {
    let roi = roi_pixels(0);
    let mut d = recorder_display();
    d.show(&state(&CASES[1], &roi)).unwrap();
    d.safe_state().unwrap();
    assert_eq!(d.sink().backlight, vec![true, false]);
    assert_eq!(d.sink().flushed.last(), Some(&Rectangle::new(Point::zero(), Size::new(240, 240))));
    // OFF: black but for a dim label in the middle.
    let c = d.canvas();
    assert_eq!(c.pixel(2, 2), Rgb888::BLACK);
    assert_eq!(c.pixel(120, 230), Rgb888::BLACK, "no footer, no verdict");
    // The next frame redraws everything and lights the panel again.
    d.sink_mut().flushed.clear();
    d.show(&state(&CASES[1], &roi)).unwrap();
    assert_eq!(d.sink().flushed, vec![Rectangle::new(Point::zero(), Size::new(240, 240))]);
    assert_eq!(d.sink().backlight, vec![true, false, true]);
}

#[test]
fn a_failed_flush_redraws_everything_next_time() {
    let roi = roi_pixels(0);
    let mut d = recorder_display();
    d.show(&state(&CASES[0], &roi)).unwrap();
    d.sink_mut().fail = true;
    assert!(d.show(&state(&CASES[1], &roi)).is_err());
    d.sink_mut().fail = false;
    d.sink_mut().flushed.clear();
    d.show(&state(&CASES[1], &roi)).unwrap();
    assert_eq!(d.sink().flushed, vec![Rectangle::new(Point::zero(), Size::new(240, 240))]);
}

#[test]
fn too_small_a_screen_is_refused() {
    let sink = Recorder { size: Size::new(135, 240), ..Recorder::default() };
    let err = StatusDisplay::new(sink, OP).err().unwrap();
    assert!(err.to_string().contains("135x240"), "{err}");
}

#[test]
fn png_sink_replaces_the_file_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("status.png");
    let roi = roi_pixels(0);
    let mut d = StatusDisplay::new(PngSink::new(&path, Size::new(240, 240)).unwrap(), OP).unwrap();
    d.show(&state(&CASES[0], &roi)).unwrap();
    d.show(&state(&CASES[0], &roi)).unwrap(); // unchanged: not rewritten
    d.show(&state(&CASES[1], &roi)).unwrap();
    assert_eq!(d.sink().writes(), 2);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("status.png")], "no temporary file left");
    assert!(PngSink::new(&dir.path().join("missing/status.png"), Size::new(240, 240)).is_err());
}

#[cfg(unix)]
#[test]
fn framebuffer_stand_in_gets_the_screen_at_the_stated_format() {
    use super::framebuffer::{FramebufferSink, PixelFormat};
    let roi = roi_pixels(0);
    let (w, h) = (240u32, 240u32);
    for (format, bpp, pad) in [(PixelFormat::RGB565, 2u32, 32u32), (PixelFormat::XRGB8888, 4, 0)] {
        let line = w * bpp + pad;
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().set_len(u64::from(line * h)).unwrap();
        let sink = FramebufferSink::with_format(tmp.reopen().unwrap(), w, h, format, line).unwrap();
        let mut d = StatusDisplay::new(sink, OP).unwrap();
        d.show(&state(&CASES[1], &roi)).unwrap();
        let bytes = std::fs::read(tmp.path()).unwrap();
        let at = |x: u32, y: u32| &bytes[(y * line + x * bpp) as usize..][..bpp as usize];
        let encode = |c: Rgb888| {
            let v = format.encode(c);
            if bpp == 2 { (v as u16).to_ne_bytes().to_vec() } else { v.to_ne_bytes().to_vec() }
        };
        // Banner corner: ESRD red; bottom-right corner: black; every pixel as the canvas says.
        assert_eq!(at(2, 2), encode(verdict_colors(Some(Verdict::EsrdSuspected)).0), "{format:?}");
        assert_eq!(at(239, 239), encode(Rgb888::BLACK), "{format:?}");
        for (x, y) in [(120, 60), (30, 120), (60, 180), (200, 232)] {
            assert_eq!(at(x, y), encode(d.canvas().pixel(x, y)), "{format:?} ({x}, {y})");
        }
        if format == PixelFormat::RGB565 {
            assert_eq!(at(2, 2), 0xD104u16.to_ne_bytes(), "RGB565 of (214, 32, 32)");
        } else {
            assert_eq!(at(2, 2), [32, 32, 214, 0], "XRGB8888 of (214, 32, 32) in memory: B G R X");
        }
    }
}
