//! Simulated scanner feed: kidney B-mode phantoms composed onto a scanner screen.
//!
//! Used as the demo's built-in source, in tests, and to make training data (no kidney
//! ultrasound data can be downloaded where this is built). Deterministic from a seed.

pub mod phantom;
pub mod reader;
pub mod screen;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

pub use phantom::{Condition, KidneyCase, PhantomRenderer};
pub use screen::{RgbCanvas, ScreenCompositor, ScreenLayout};

use crate::frame::LumaFrame;

/// What the simulated cart shows during a stretch of the demo video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// A patient being scanned.
    Scan(Condition),
    /// Probe lifted: the scanner shows its screen with an empty (black) image area.
    ProbeLifted,
    /// Cable pulled or scanner off: the dongle delivers a uniform frame.
    NoSignal,
}

/// A video of scanning sessions: one patient after another, with the probe lifted in between
/// and one stretch of lost signal.
pub struct ScannerSimulator {
    rng: Pcg64Mcg,
    renderer: PhantomRenderer,
    compositor: ScreenCompositor,
    bmode: LumaFrame,
    canvas: RgbCanvas,
    case: Option<KidneyCase>,
    segment: Segment,
    frames_left: u32,
    frame_in_segment: u32,
    patients_seen: u32,
    frames_per_patient: u32,
}

impl ScannerSimulator {
    pub fn new(seed: u64, layout: ScreenLayout, frames_per_patient: u32) -> Self {
        Self {
            rng: Pcg64Mcg::seed_from_u64(seed),
            renderer: PhantomRenderer::new(seed ^ 0x5eed),
            compositor: ScreenCompositor::new(layout, "PATIENT: SIMULATED  ID: SIM-0000", 16.0),
            bmode: LumaFrame::default(),
            canvas: RgbCanvas::new(1, 1),
            case: None,
            segment: Segment::ProbeLifted,
            frames_left: 0,
            frame_in_segment: 0,
            patients_seen: 0,
            frames_per_patient: frames_per_patient.max(1),
        }
    }

    pub fn layout(&self) -> ScreenLayout {
        self.compositor.layout()
    }

    /// The segment the last rendered frame belongs to (ground truth for tests).
    pub fn segment(&self) -> Segment {
        self.segment
    }

    fn next_segment(&mut self) {
        self.segment = match self.segment {
            Segment::Scan(_) => {
                if self.patients_seen % 4 == 3 {
                    Segment::NoSignal
                } else {
                    Segment::ProbeLifted
                }
            }
            Segment::ProbeLifted | Segment::NoSignal => {
                // Alternate conditions so a short demo shows both verdicts.
                let condition = if self.patients_seen.is_multiple_of(2) { Condition::Normal } else { Condition::Esrd };
                self.patients_seen += 1;
                let case = KidneyCase::sample(&mut self.rng, condition);
                self.case = Some(case);
                Segment::Scan(condition)
            }
        };
        self.frames_left = match self.segment {
            Segment::Scan(_) => self.frames_per_patient,
            _ => (self.frames_per_patient / 4).max(3) + self.rng.gen_range(0..3),
        };
        self.frame_in_segment = 0;
    }

    /// Renders the next frame of the video as RGB (what an HDMI dongle delivers).
    pub fn next_rgb(&mut self) -> &RgbCanvas {
        if self.frames_left == 0 {
            self.next_segment();
        }
        self.frames_left -= 1;
        let img = self.compositor.layout().image_rect();
        match self.segment {
            Segment::Scan(_) => {
                if let Some(case) = &self.case {
                    self.renderer.render(case, self.frame_in_segment, img.width, img.height, &mut self.bmode);
                }
                self.compositor.compose(&self.bmode, &mut self.canvas);
            }
            Segment::ProbeLifted => {
                self.bmode.reshape(img.width, img.height);
                self.bmode.pixels_mut().fill(0);
                self.compositor.compose(&self.bmode, &mut self.canvas);
            }
            Segment::NoSignal => {
                let (w, h) = self.compositor.layout().size();
                if self.canvas.width() != w || self.canvas.height() != h {
                    self.canvas = RgbCanvas::new(w, h);
                }
                // Dongles show a flat blue or black screen without input.
                for px in self.canvas.rgb_mut().chunks_exact_mut(3) {
                    px.copy_from_slice(&[16, 16, 160]);
                }
            }
        }
        self.frame_in_segment += 1;
        &self.canvas
    }
}

/// Renders one still screen of a freshly drawn case: the unit of training and evaluation data.
pub fn render_case_screen(seed: u64, condition: Condition, layout: ScreenLayout) -> (KidneyCase, RgbCanvas) {
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let case = KidneyCase::sample(&mut rng, condition);
    let mut renderer = PhantomRenderer::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let img = layout.image_rect();
    let mut bmode = LumaFrame::default();
    renderer.render(&case, 0, img.width, img.height, &mut bmode);
    let compositor = ScreenCompositor::new(layout, "PATIENT: SIMULATED  ID: SIM-0000", case.depth_cm);
    let mut canvas = RgbCanvas::new(1, 1);
    compositor.compose(&bmode, &mut canvas);
    (case, canvas)
}
