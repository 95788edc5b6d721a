//! Allocations on the per-frame path once warm, counted by a global allocator on 1080p
//! frames. Our own stages (screen location, ROI, normalisation, decision) must allocate
//! nothing. Two library calls still do and are reported, not hidden: fast_image_resize
//! recomputes its filter coefficients per call, and tract allocates its intermediate tensors
//! per run (README, "Speed": what is left).

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
    let mut library = [0u64; 2];
    let mut run = |frame: &LumaFrame| -> [u64; 4] {
        let (state, a) = counted(|| locator.locate(frame));
        let ScreenState::Image(area) = state else { panic!("{state:?}") };
        let (roi, b) = counted(|| selector.select(area, frame.width(), frame.height()).unwrap());
        let (_, resize) = counted(|| pre.resize_roi(frame, roi).unwrap());
        let (_, c) = counted(|| {
            pre.normalize_resized();
        });
        let (_, inference) = counted(|| model.probability(pre.tensor()).unwrap());
        let (_, d) = counted(|| stabilizer.push(Verdict::Normal));
        library = [resize, inference];
        [a, b, c, d]
    };
    for f in &frames[..2] {
        run(f);
    }
    for f in &frames[2..] {
        assert_eq!(run(f), [0, 0, 0, 0], "allocations in [locate, select, normalize, decision]");
    }
    println!("per frame, library calls: resize {} allocations, tract inference {}", library[0], library[1]);
}
