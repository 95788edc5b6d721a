//! The pipeline: wires Source -> Screen -> Roi -> Preprocess -> Model -> Decision -> Indicator +
//! Audit. Stages only meet here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::audit::{AuditLog, AuditRecord, now_rfc3339};
use crate::capture::{CaptureError, FrameInfo, FrameSource};
use crate::decision::{Shown, Stabilizer, Verdict, classify};
use crate::frame::LumaFrame;
use crate::indicator::{Indicator, IndicatorState};
use crate::model::{Classifier, OperatingPoint};
use crate::preprocess::Preprocessor;
use crate::roi::{Roi, RoiSelector};
use crate::screen::{ScreenLocator, ScreenState};

/// What happened to one frame.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameResult {
    Classified {
        roi: Roi,
        probability: f32,
        raw: Verdict,
    },
    NoImage,
    NoSignal,
    /// The frame was unusable and dropped (counted, logged).
    Dropped(String),
    /// A stage failed on a good frame (model output not finite, ...).
    Fault(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub sequence: u64,
    pub result: FrameResult,
    pub shown: Shown,
}

/// Running totals, for logs and the bench.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub frames: u64,
    pub classified: u64,
    pub no_image: u64,
    pub no_signal: u64,
    pub dropped: u64,
    pub faults: u64,
    pub audit_records: u64,
    pub audit_errors: u64,
    /// Audit records lost because the backlog for a failing log was full.
    pub audit_dropped: u64,
}

pub struct Pipeline {
    locator: ScreenLocator,
    roi: RoiSelector,
    pre: Preprocessor,
    model: Classifier,
    op: OperatingPoint,
    stabilizer: Stabilizer,
    indicator: Box<dyn Indicator>,
    audit: Option<AuditLog>,
    source_name: String,
    started: Instant,
    counters: Counters,
    last_shown: Shown,
}

/// The stages a pipeline is built from (see `setup::build_pipeline`).
pub struct Stages {
    pub locator: ScreenLocator,
    pub roi: RoiSelector,
    pub model: Classifier,
    /// Overrides the manifest's threshold and indeterminate band.
    pub op: Option<OperatingPoint>,
    pub stabilizer: Stabilizer,
    pub indicator: Box<dyn Indicator>,
    pub audit: Option<AuditLog>,
    pub source_name: String,
}

impl Pipeline {
    pub fn new(stages: Stages) -> Result<Self> {
        let Stages { locator, roi, model, op, stabilizer, indicator, audit, source_name } = stages;
        let m = model.manifest();
        let pre = Preprocessor::new(m.input.width, m.input.height, m.normalization)?;
        let op = op.unwrap_or(m.decision);
        Ok(Self {
            locator,
            roi,
            pre,
            model,
            op,
            stabilizer,
            indicator,
            audit,
            source_name,
            started: Instant::now(),
            counters: Counters::default(),
            last_shown: Shown { verdict: None, agreeing: 0, window: 0, changed: false },
        })
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    pub fn model(&self) -> &Classifier {
        &self.model
    }

    pub fn operating_point(&self) -> OperatingPoint {
        self.op
    }

    /// Runs every stage on one frame.
    pub fn process(&mut self, frame: &LumaFrame, info: FrameInfo) -> Outcome {
        self.counters.frames += 1;
        let result = match self.locator.locate(frame) {
            ScreenState::NoSignal => FrameResult::NoSignal,
            ScreenState::NoImage => FrameResult::NoImage,
            ScreenState::Image(area) => self.classify_area(frame, area),
        };
        self.publish(info.sequence, result)
    }

    fn classify_area(&mut self, frame: &LumaFrame, area: crate::geometry::Rect) -> FrameResult {
        let roi = match self.roi.select(area, frame.width(), frame.height()) {
            Ok(roi) => roi,
            Err(e) => return FrameResult::Dropped(format!("{e:#}")),
        };
        let tensor = match self.pre.run(frame, roi) {
            Ok(t) => t,
            Err(e) => return FrameResult::Dropped(format!("{e:#}")),
        };
        match self.model.probability(tensor) {
            Ok(p) => FrameResult::Classified { roi, probability: p, raw: classify(&self.op, p) },
            Err(e) => FrameResult::Fault(format!("{e:#}")),
        }
    }

    /// A capture error in place of a frame: the feed state is shown at once (no k-of-n wait
    /// for a pulled cable), bad frames are only counted.
    pub fn capture_failed(&mut self, sequence: u64, err: &CaptureError) -> Outcome {
        self.counters.frames += 1;
        let result = match err {
            CaptureError::BadFrame(why) => FrameResult::Dropped(why.clone()),
            CaptureError::Timeout(_) | CaptureError::Disconnected(_) | CaptureError::NoSignal(_) => {
                self.stabilizer.force(Verdict::NoSignal);
                FrameResult::NoSignal
            }
            CaptureError::Fatal(e) => FrameResult::Fault(format!("{e:#}")),
        };
        self.publish(sequence, result)
    }

    fn publish(&mut self, sequence: u64, result: FrameResult) -> Outcome {
        let per_frame = match &result {
            FrameResult::Classified { raw, .. } => {
                self.counters.classified += 1;
                Some(*raw)
            }
            FrameResult::NoImage => {
                self.counters.no_image += 1;
                Some(Verdict::NoImage)
            }
            FrameResult::NoSignal => {
                self.counters.no_signal += 1;
                Some(Verdict::NoSignal)
            }
            FrameResult::Dropped(why) => {
                self.counters.dropped += 1;
                log::warn!("frame {sequence} dropped: {why}");
                None
            }
            FrameResult::Fault(why) => {
                self.counters.faults += 1;
                log::error!("frame {sequence}: {why}");
                Some(Verdict::Fault)
            }
        };
        let mut shown = match per_frame {
            Some(v) => self.stabilizer.push(v),
            None => Shown { changed: false, ..self.last_shown },
        };
        let (mut probability, mut roi) = match &result {
            FrameResult::Classified { probability, roi, .. } => (Some(*probability), Some(*roi)),
            _ => (None, None),
        };
        // A failing audit log (full SD card, I/O error) shows FAULT until the records waiting
        // for it are on disk: a verdict that cannot be audited is not shown.
        if !self.retry_audit() {
            shown = self.audit_fault(&mut probability, &mut roi);
        }
        shown.changed = shown.verdict != self.last_shown.verdict;
        if shown.changed
            && !self.write_audit(sequence, &shown, probability, roi)
            && shown.verdict != Some(Verdict::Fault)
        {
            // This record waits in the backlog; from this frame on FAULT is shown, and that
            // change is recorded (it waits behind the verdict it replaced).
            shown = self.audit_fault(&mut probability, &mut roi);
            shown.changed = shown.verdict != self.last_shown.verdict;
            if shown.changed {
                self.write_audit(sequence, &shown, None, None);
            }
        }
        self.last_shown = shown;
        let (w, h) = self.pre.input_size();
        let state = IndicatorState {
            verdict: shown.verdict,
            probability,
            agreeing: shown.agreeing,
            window: shown.window,
            uptime: self.started.elapsed(),
            model_id: &self.model.manifest().id,
            changed: shown.changed,
            sequence,
            roi: roi.map(|_| (w, h, self.pre.resized())),
        };
        if let Err(e) = self.indicator.show(&state) {
            log::error!("indicator failed: {e:#}");
        }
        Outcome { sequence, result, shown }
    }

    /// FAULT in place of the shown verdict while the audit log fails (no probability, no ROI).
    fn audit_fault(&self, probability: &mut Option<f32>, roi: &mut Option<Roi>) -> Shown {
        (*probability, *roi) = (None, None);
        let window = self.last_shown.window.max(1);
        Shown { verdict: Some(Verdict::Fault), agreeing: window, window, changed: false }
    }

    /// While the audit log fails, tries the records waiting for it again (once per frame: a
    /// write that the disk refuses costs a system call). True when nothing is failing.
    fn retry_audit(&mut self) -> bool {
        let Some(audit) = self.audit.as_mut() else { return true };
        if !audit.is_failing() {
            return true;
        }
        let ok = match audit.retry() {
            Ok(()) => true,
            Err(e) => {
                log::debug!("audit still failing: {e:#}");
                false
            }
        };
        self.counters.audit_records = audit.records_written();
        self.counters.audit_dropped = audit.dropped();
        ok
    }

    /// Appends one record; false when it could not be written (it waits in the backlog).
    fn write_audit(&mut self, sequence: u64, shown: &Shown, probability: Option<f32>, roi: Option<Roi>) -> bool {
        let Some(audit) = self.audit.as_mut() else { return true };
        let manifest = self.model.manifest();
        let record = AuditRecord {
            time: now_rfc3339(),
            sequence,
            source: self.source_name.clone(),
            model_id: manifest.id.clone(),
            model_sha256: manifest.sha256.clone(),
            roi_sha256: roi.map(|_| hex::encode(Sha256::digest(self.pre.resized()))),
            roi: roi.map(|r| r.rect()),
            probability,
            verdict: shown.verdict.map_or("WAITING", |v| v.label()).to_string(),
            agreeing: shown.agreeing,
            window: shown.window,
        };
        let written = match audit.append(&record) {
            Ok(()) => true,
            Err(e) => {
                self.counters.audit_errors += 1;
                log::error!("audit: {e:#}; showing FAULT until it is written");
                false
            }
        };
        self.counters.audit_records = audit.records_written();
        self.counters.audit_dropped = audit.dropped();
        written
    }

    /// Puts the indicator in its safe state; call on every exit path.
    pub fn shutdown(&mut self) {
        if let Err(e) = self.indicator.safe_state() {
            log::error!("cannot put the indicator in its safe state: {e:#}");
        }
    }
}

/// Pulls frames until the source ends, `stop` is set, or `max_frames` were processed. `observe`
/// sees each outcome with the source (the demo prints the simulator's ground truth).
pub fn run_loop<S: FrameSource + ?Sized>(
    source: &mut S,
    pipeline: &mut Pipeline,
    stop: &AtomicBool,
    max_frames: Option<u64>,
    mut observe: impl FnMut(&Outcome, &S),
) -> Result<Counters> {
    let mut sequence = 0u64;
    while !stop.load(Ordering::Relaxed) && max_frames.is_none_or(|m| sequence < m) {
        let outcome = match source.next_frame() {
            Ok(Some((frame, info))) => {
                sequence = info.sequence + 1;
                pipeline.process(frame, info)
            }
            Ok(None) => break,
            Err(CaptureError::Fatal(e)) => {
                pipeline.capture_failed(sequence, &CaptureError::Fatal(anyhow::anyhow!("{e:#}")));
                return Err(e.context(format!("capture from {}", source.describe())));
            }
            Err(e) => {
                sequence += 1;
                pipeline.capture_failed(sequence - 1, &e)
            }
        };
        observe(&outcome, source);
    }
    Ok(pipeline.counters())
}
