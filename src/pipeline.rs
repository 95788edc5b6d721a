//! The pipeline: wires Source -> Screen -> Roi -> Preprocess -> Model -> Decision -> Indicator +
//! Audit. Stages only meet here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::audit::{AuditLog, AuditRecord, now_rfc3339};
use crate::capture::thread::{Ahead, AheadThread, Delivery};
use crate::capture::{CaptureError, FrameInfo, FrameSource};
use crate::decision::{Shown, Stabilizer, Verdict, classify};
use crate::frame::LumaFrame;
use crate::geometry::Rect;
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

/// What the stages before the model made of a frame.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Located {
    /// The ROI, cropped, resized and normalised into the model's input.
    Roi(Roi),
    NoImage,
    #[default]
    NoSignal,
    /// The ROI could not be taken from this frame (why).
    Dropped(String),
}

/// The stages before the model: screen location, ROI selection and preprocessing. Separate from
/// the rest ([`Back`]) so that `run` can work them on the capture thread, one frame ahead.
pub struct Front {
    locator: ScreenLocator,
    roi: RoiSelector,
    pre: Preprocessor,
    /// The pixels the last ROI's preprocessing read: all the next frame needs converted whole.
    window: Option<Rect>,
}

impl Front {
    /// Locates the image and its ROI; for [`Located::Roi`] the model's input is then in
    /// [`Front::tensor`] and the resized ROI in [`Front::resized`].
    pub fn prepare(&mut self, frame: &LumaFrame) -> Located {
        self.window = None;
        let area = match self.locator.locate(frame) {
            ScreenState::NoSignal => return Located::NoSignal,
            ScreenState::NoImage => return Located::NoImage,
            ScreenState::Relocating => {
                return Located::Dropped(
                    "the image area moved: it is located on the next frame, converted whole".into(),
                );
            }
            ScreenState::Image(area) => area,
        };
        let prepared = self.roi.select(area, frame.width(), frame.height()).and_then(|roi| {
            self.pre.run(frame, roi)?;
            Ok(roi)
        });
        match prepared {
            Ok(roi) => {
                self.window = Some(self.pre.source_rect(frame.width(), frame.height(), roi));
                Located::Roi(roi)
            }
            Err(e) => Located::Dropped(format!("{e:#}")),
        }
    }

    /// What the next frame needs converted whole, for [`FrameSource::set_window`]: the pixels
    /// the last ROI was preprocessed from, while the image area is located (screen location
    /// itself reads only the rows the block sums sample until the image moves); None, for whole
    /// frames, otherwise.
    pub fn window(&self) -> Option<Rect> {
        self.window
    }

    pub fn tensor(&self) -> &[f32] {
        self.pre.tensor()
    }

    /// [`Preprocessor::swap_output`]: the tensor and resized ROI change hands without a copy.
    pub fn swap_output(&mut self, tensor: &mut Vec<f32>, resized: &mut Vec<u8>) {
        self.pre.swap_output(tensor, resized);
    }

    pub fn resized(&self) -> &[u8] {
        self.pre.resized()
    }
}

/// One frame's work from the stages before the model, in buffers of its own, to be handed from
/// the capture thread to the loop (swapped, not copied, and reused frame after frame).
#[derive(Debug, Default)]
pub struct Prepared {
    located: Located,
    tensor: Vec<f32>,
    resized: Vec<u8>,
}

/// The model and the stages after it: decision, indicator, audit.
pub struct Back {
    model: Classifier,
    op: OperatingPoint,
    stabilizer: Stabilizer,
    indicator: Box<dyn Indicator>,
    audit: Option<AuditLog>,
    source_name: String,
    /// The model's input size, which is the resized ROI's (the display's thumbnail).
    input_size: (u32, u32),
    started: Instant,
    counters: Counters,
    last_shown: Shown,
}

/// Every stage, run one frame at a time on the caller's thread ([`Pipeline::process`]), or split
/// in two for [`run_loop_ahead`].
pub struct Pipeline {
    front: Front,
    back: Back,
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
        let input_size = pre.input_size();
        let op = op.unwrap_or(m.decision);
        Ok(Self {
            front: Front { locator, roi, pre, window: None },
            back: Back {
                model,
                op,
                stabilizer,
                indicator,
                audit,
                source_name,
                input_size,
                started: Instant::now(),
                counters: Counters::default(),
                last_shown: Shown { verdict: None, agreeing: 0, window: 0, changed: false },
            },
        })
    }

    /// [`Front::window`].
    pub fn window(&self) -> Option<Rect> {
        self.front.window()
    }

    /// The stages before the model and the rest, to run on two threads.
    pub fn split(self) -> (Front, Back) {
        (self.front, self.back)
    }

    pub fn counters(&self) -> Counters {
        self.back.counters
    }

    pub fn model(&self) -> &Classifier {
        &self.back.model
    }

    pub fn operating_point(&self) -> OperatingPoint {
        self.back.op
    }

    /// Runs every stage on one frame.
    pub fn process(&mut self, frame: &LumaFrame, info: FrameInfo) -> Outcome {
        let located = self.front.prepare(frame);
        self.back.finish(info.sequence, &located, self.front.tensor(), self.front.resized())
    }

    /// See [`Back::capture_failed`].
    pub fn capture_failed(&mut self, sequence: u64, err: &CaptureError) -> Outcome {
        self.back.capture_failed(sequence, err)
    }

    /// Puts the indicator in its safe state; call on every exit path.
    pub fn shutdown(&mut self) {
        self.back.shutdown();
    }
}

impl Back {
    pub fn counters(&self) -> Counters {
        self.counters
    }

    pub fn model(&self) -> &Classifier {
        &self.model
    }

    /// Classifies what the stages before the model made of frame `sequence`, and shows and
    /// audits the result.
    pub fn finish(&mut self, sequence: u64, located: &Located, tensor: &[f32], resized: &[u8]) -> Outcome {
        self.counters.frames += 1;
        let result = match located {
            Located::NoSignal => FrameResult::NoSignal,
            Located::NoImage => FrameResult::NoImage,
            Located::Dropped(why) => FrameResult::Dropped(why.clone()),
            Located::Roi(roi) => match self.model.probability(tensor) {
                Ok(p) => FrameResult::Classified { roi: *roi, probability: p, raw: classify(&self.op, p) },
                Err(e) => FrameResult::Fault(format!("{e:#}")),
            },
        };
        self.publish(sequence, result, resized)
    }

    /// [`Back::finish`] on work prepared ahead.
    pub fn finish_prepared(&mut self, prepared: &Prepared, info: FrameInfo) -> Outcome {
        self.finish(info.sequence, &prepared.located, &prepared.tensor, &prepared.resized)
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
        self.publish(sequence, result, &[])
    }

    /// `resized`: the frame's resized ROI when it was classified (thumbnail and audit hash).
    fn publish(&mut self, sequence: u64, result: FrameResult, resized: &[u8]) -> Outcome {
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
            && !self.write_audit(sequence, &shown, probability, roi, resized)
            && shown.verdict != Some(Verdict::Fault)
        {
            // This record waits in the backlog; from this frame on FAULT is shown, and that
            // change is recorded (it waits behind the verdict it replaced).
            shown = self.audit_fault(&mut probability, &mut roi);
            shown.changed = shown.verdict != self.last_shown.verdict;
            if shown.changed {
                self.write_audit(sequence, &shown, None, None, resized);
            }
        }
        self.last_shown = shown;
        let (w, h) = self.input_size;
        let state = IndicatorState {
            verdict: shown.verdict,
            probability,
            agreeing: shown.agreeing,
            window: shown.window,
            uptime: self.started.elapsed(),
            model_id: &self.model.manifest().id,
            changed: shown.changed,
            sequence,
            roi: roi.map(|_| (w, h, resized)),
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
    fn write_audit(
        &mut self,
        sequence: u64,
        shown: &Shown,
        probability: Option<f32>,
        roi: Option<Roi>,
        resized: &[u8],
    ) -> bool {
        let Some(audit) = self.audit.as_mut() else { return true };
        let manifest = self.model.manifest();
        let record = AuditRecord {
            time: now_rfc3339(),
            sequence,
            source: self.source_name.clone(),
            model_id: manifest.id.clone(),
            model_sha256: manifest.sha256.clone(),
            roi_sha256: roi.map(|_| hex::encode(Sha256::digest(resized))),
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
    let Pipeline { front, back } = pipeline;
    let mut sequence = 0u64;
    while !stop.load(Ordering::Relaxed) && max_frames.is_none_or(|m| sequence < m) {
        let delivery = source.next_frame();
        let outcome = deliver(delivery, &mut sequence, back, |frame, info, back| {
            let located = front.prepare(frame);
            back.finish(info.sequence, &located, front.tensor(), front.resized())
        });
        source.set_window(front.window());
        match outcome {
            Ok(Some(outcome)) => observe(&outcome, source),
            Ok(None) => break,
            Err(e) => return Err(e.context(format!("capture from {}", source.describe()))),
        }
    }
    Ok(back.counters())
}

/// A source and the stages before the model, worked on the capture thread: the next frame is
/// captured, located and preprocessed while the loop classifies this one.
pub struct Preparing<S> {
    source: S,
    front: Front,
}

impl<S> Preparing<S> {
    pub fn new(source: S, front: Front) -> Self {
        Self { source, front }
    }
}

impl<S: FrameSource + Send + 'static> Ahead for Preparing<S> {
    type Item = Prepared;

    fn produce(&mut self, into: &mut Prepared) -> Delivery {
        let Some((frame, info)) = self.source.next_frame()? else { return Ok(None) };
        into.located = self.front.prepare(frame);
        self.source.set_window(self.front.window());
        if matches!(into.located, Located::Roi(_)) {
            // Swapped, not copied: nothing allocated once every slot has had its buffers.
            self.front.swap_output(&mut into.tensor, &mut into.resized);
        }
        Ok(Some(info))
    }

    fn describe(&self) -> String {
        self.source.describe()
    }
}

/// [`run_loop`] with capture and the stages before the model on a thread of their own, one frame
/// ahead (as `run` works): the loop's own thread runs the model and what follows it. Every
/// frame is still classified, in order, with the same outcomes as [`run_loop`] (tested).
pub fn run_loop_ahead<S: FrameSource + Send + 'static>(
    source: S,
    front: Front,
    back: &mut Back,
    stop: &AtomicBool,
    max_frames: Option<u64>,
    mut observe: impl FnMut(&Outcome),
) -> Result<Counters> {
    let mut ahead = AheadThread::start(Preparing::new(source, front))?;
    let mut sequence = 0u64;
    while !stop.load(Ordering::Relaxed) && max_frames.is_none_or(|m| sequence < m) {
        let delivery = ahead.next_item();
        match deliver(delivery, &mut sequence, back, |prepared, info, back| back.finish_prepared(prepared, info)) {
            Ok(Some(outcome)) => observe(&outcome),
            Ok(None) => break,
            Err(e) => return Err(e.context(format!("capture from {}", ahead.describe()))),
        }
    }
    Ok(back.counters())
}

/// One delivery of a source through the stages: `finish` for a frame, the back half's handling
/// for a capture error. `Ok(None)` when the source has ended; `Err` for a fatal capture error
/// (already shown as FAULT).
fn deliver<T>(
    delivery: Result<Option<(T, FrameInfo)>, CaptureError>,
    sequence: &mut u64,
    back: &mut Back,
    finish: impl FnOnce(T, FrameInfo, &mut Back) -> Outcome,
) -> Result<Option<Outcome>> {
    match delivery {
        Ok(Some((frame, info))) => {
            *sequence = info.sequence + 1;
            Ok(Some(finish(frame, info, back)))
        }
        Ok(None) => Ok(None),
        Err(CaptureError::Fatal(e)) => {
            back.capture_failed(*sequence, &CaptureError::Fatal(anyhow::anyhow!("{e:#}")));
            Err(e)
        }
        Err(e) => {
            *sequence += 1;
            Ok(Some(back.capture_failed(*sequence - 1, &e)))
        }
    }
}
