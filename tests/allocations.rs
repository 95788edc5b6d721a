//! Allocations on the per-frame path once warm, counted by a global allocator on 1080p
//! frames. Our own stages (screen location, ROI, crop + resize, normalisation, decision) must
//! allocate nothing. One library call still does and is reported, not hidden: tract allocates
//! its intermediate tensors per run (README, "Speed": what is left).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Counting is global: tests that count take turns.
static ONE_COUNT_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn counted<R>(f: impl FnOnce() -> R) -> (R, u64) {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let r = f();
    COUNTING.store(false, Ordering::SeqCst);
    (r, ALLOCATIONS.load(Ordering::SeqCst))
}

#[test]
fn each_stage_outside_inference_allocates_nothing_when_warm() {
    use kidney_screen::decision::{Stabilizer, Verdict};
    use kidney_screen::frame::LumaFrame;
    use kidney_screen::preprocess::{Normalization, Preprocessor};
    use kidney_screen::roi::RoiSelector;
    use kidney_screen::screen::{ScreenLocator, ScreenState};
    use kidney_screen::simulator::{ScannerSimulator, ScreenLayout};

    let _turn = ONE_COUNT_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut sim = ScannerSimulator::new(5, ScreenLayout::Hd1080, 1000);
    let frames: Vec<LumaFrame> = (0..6)
        .map(|_| {
            let mut luma = LumaFrame::default();
            sim.next_rgb().to_luma(&mut luma);
            luma
        })
        .collect();
    let mut locator = ScreenLocator::new(None);
    let selector = RoiSelector::new(kidney_screen::config::DEFAULT_GUIDE).unwrap();
    let norm = Normalization { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
    let mut pre = Preprocessor::new(128, 128, norm).unwrap();
    let mut stabilizer = Stabilizer::new(4, 6).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut model = kidney_screen::setup::load_model(&root.join("models/densenet121-kidney-sim")).unwrap();
    let mut inference = 0;
    let mut run = |frame: &LumaFrame| -> [u64; 5] {
        let (state, a) = counted(|| locator.locate(frame));
        let ScreenState::Image(area) = state else { panic!("{state:?}") };
        let (roi, b) = counted(|| selector.select(area, frame.width(), frame.height()).unwrap());
        let (_, c) = counted(|| pre.resize_roi(frame, roi).unwrap());
        let (_, d) = counted(|| {
            pre.normalize_resized();
        });
        (_, inference) = counted(|| model.probability(pre.tensor()).unwrap());
        let (_, e) = counted(|| stabilizer.push(Verdict::Normal));
        [a, b, c, d, e]
    };
    for f in &frames[..2] {
        run(f);
    }
    for f in &frames[2..] {
        assert_eq!(run(f), [0, 0, 0, 0, 0], "allocations in [locate, select, resize, normalize, decision]");
    }
    println!("per frame, library calls: tract inference {inference} allocations (resize and our other stages: 0)");

    // A new ROI recomputes the resize coefficients, into buffers that keep their capacity: once
    // they have held a larger ROI's, other ROIs allocate nothing either.
    use kidney_screen::geometry::Rect;
    use kidney_screen::roi::Roi;
    let frame = &frames[0];
    pre.resize_roi(frame, Roi(Rect::new(0, 0, 1920, 1080))).unwrap();
    for rect in [Rect::new(600, 260, 730, 530), Rect::new(10, 20, 1000, 900), Rect::new(5, 5, 40, 30)] {
        let (_, n) = counted(|| pre.resize_roi(frame, Roi(rect)).unwrap());
        assert_eq!(n, 0, "allocations resizing the new ROI {rect}");
    }
}

/// `run`'s capture path: a raw limited-range YUYV dump read and converted (range expansion and
/// block sums) on the capture thread, each frame handed to the loop by swapping buffers. The
/// count covers both threads (the allocator is global), so the capture thread's conversions of
/// the frames ahead are in it too.
#[test]
fn capture_thread_allocates_nothing_per_frame_when_warm() {
    use kidney_screen::capture::thread::CaptureThread;
    use kidney_screen::capture::{FrameSource, LumaRange, PixelFormat, replay::RawReplay};
    use kidney_screen::frame::LumaFrame;
    use kidney_screen::simulator::{ScannerSimulator, ScreenLayout};

    let _turn = ONE_COUNT_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (width, height) = (1920u32, 1080u32);
    let mut sim = ScannerSimulator::new(11, ScreenLayout::Hd1080, 1000);
    let mut dump = Vec::new();
    let mut luma = LumaFrame::default();
    for _ in 0..4 {
        sim.next_rgb().to_luma(&mut luma);
        assert_eq!((luma.width(), luma.height()), (width, height));
        // Luma in the limited range (16..=235), chroma neutral.
        dump.extend(luma.pixels().iter().flat_map(|&y| [16 + (u32::from(y) * 219 / 255) as u8, 128]));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frames.yuyv");
    std::fs::write(&path, &dump).unwrap();
    let source = RawReplay::open(&path, PixelFormat::Yuyv, LumaRange::Limited, width, height, true).unwrap();
    let mut capture = CaptureThread::spawn(source).unwrap();

    let mut checksum = 0u64;
    let mut take = |capture: &mut CaptureThread<RawReplay>| {
        let (frame, info) = capture.next_frame().unwrap().expect("a looping replay does not end");
        assert!(frame.block_sums().is_some(), "frame {} lacks the block sums capture takes", info.sequence);
        checksum = checksum.wrapping_add(u64::from(frame.pixels()[info.sequence as usize % 1000]));
    };
    // Warm: every rotating buffer has held a full frame (three buffers, a dump of four).
    for _ in 0..8 {
        take(&mut capture);
    }
    let ((), allocations) = counted(|| {
        for _ in 0..24 {
            take(&mut capture);
        }
    });
    assert_eq!(allocations, 0, "allocations over 24 frames taken from the capture thread");
    assert!(checksum > 0);
}
