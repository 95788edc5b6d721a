//! The built-in demo source: the scanner simulator as a frame source.

use super::{CaptureError, FrameInfo, FrameSource};
use crate::frame::LumaFrame;
use crate::simulator::{ScannerSimulator, ScreenLayout, Segment};

pub struct SimulatedSource {
    simulator: ScannerSimulator,
    frame: LumaFrame,
    sequence: u64,
    limit: Option<u64>,
    seed: u64,
}

impl SimulatedSource {
    /// `limit`: stop after this many frames (None: run forever).
    pub fn new(seed: u64, layout: ScreenLayout, frames_per_patient: u32, limit: Option<u64>) -> Self {
        Self {
            simulator: ScannerSimulator::new(seed, layout, frames_per_patient),
            frame: LumaFrame::default(),
            sequence: 0,
            limit,
            seed,
        }
    }

    /// Ground truth of the last frame (for tests and the demo's printout).
    pub fn segment(&self) -> Segment {
        self.simulator.segment()
    }
}

impl FrameSource for SimulatedSource {
    fn next_frame(&mut self) -> Result<Option<(&LumaFrame, FrameInfo)>, CaptureError> {
        if self.limit.is_some_and(|l| self.sequence >= l) {
            return Ok(None);
        }
        self.simulator.next_rgb().to_luma(&mut self.frame);
        let info = FrameInfo { sequence: self.sequence };
        self.sequence += 1;
        Ok(Some((&self.frame, info)))
    }

    fn describe(&self) -> String {
        let (w, h) = self.simulator.layout().size();
        format!("simulated scanner {w}x{h} seed {}", self.seed)
    }
}
