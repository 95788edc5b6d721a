//! `bench`: per-stage latency of the frame-to-verdict path on a 1080p scanner screen, frames
//! per second, peak RSS and cold start. JSON lines on stdout, a table on stderr. Timings are
//! reported, never asserted: run it on the target board and compare.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use embedded_graphics::prelude::Size;

use crate::audit::{AuditLog, AuditRecord};
use crate::capture::convert::{self, LumaRange, PixelFormat};
use crate::capture::thread::{AheadThread, CaptureThread};
use crate::capture::{CaptureError, FrameInfo, FrameSource};
use crate::config::{DEFAULT_GUIDE, DEFAULT_MODEL_DIR};
use crate::decision::{Stabilizer, classify};
use crate::display::{Canvas, DisplaySink, StatusDisplay};
use crate::frame::LumaFrame;
use crate::geometry::Rect;
use crate::indicator::{Fanout, Indicator, IndicatorState, JsonEvents};
use crate::pipeline::{FrameResult, Pipeline, Preparing, Stages};
use crate::preprocess::Preprocessor;
use crate::roi::RoiSelector;
use crate::screen::{ScreenLocator, ScreenState};
use crate::simulator::{ScannerSimulator, ScreenLayout};

#[derive(clap::Args)]
pub struct Args {
    /// Model directory.
    #[arg(long, default_value = DEFAULT_MODEL_DIR)]
    model: PathBuf,
    /// Timed iterations per stage (after warm-up).
    #[arg(long, default_value_t = 30)]
    iterations: usize,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Inference threads (tract's matrix-multiply executor).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Use a 1280x720 screen instead of 1920x1080.
    #[arg(long)]
    hd720: bool,
    /// Also time every tract op during inference and print the time per op kind.
    #[arg(long)]
    ops: bool,
    /// The raw format the stand-in capture dongle delivers (limited range).
    #[arg(long, value_enum, default_value_t = RawCapture::Yuyv)]
    capture: RawCapture,
}

/// Raw formats a 1080p dongle delivers: packed YUYV, or NV12 with its luma plane on its own
/// (half the bytes to read for the same pixels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum RawCapture {
    Yuyv,
    Nv12,
}

impl RawCapture {
    fn format(self) -> PixelFormat {
        match self {
            RawCapture::Yuyv => PixelFormat::Yuyv,
            RawCapture::Nv12 => PixelFormat::Nv12,
        }
    }

    /// The stage names of a whole and a partial conversion.
    fn stages(self) -> (&'static str, &'static str) {
        match self {
            RawCapture::Yuyv => ("decode_yuyv_whole", "decode_yuyv"),
            RawCapture::Nv12 => ("decode_nv12_whole", "decode_nv12"),
        }
    }

    fn encode(self, rgb: &[u8], width: usize, height: usize) -> Vec<u8> {
        match self {
            RawCapture::Yuyv => rgb_to_yuyv(rgb, width, height),
            RawCapture::Nv12 => rgb_to_nv12(rgb, width, height),
        }
    }
}

/// A display that draws into its canvas and sends nothing: measures the rendering cost.
struct NullSink(Size);

impl DisplaySink for NullSink {
    fn size(&self) -> Size {
        self.0
    }
    fn flush_region(&mut self, _: &Canvas, _: embedded_graphics::primitives::Rectangle) -> Result<()> {
        Ok(())
    }
}

struct Stats {
    stage: &'static str,
    median: f64,
    p95: f64,
    mean: f64,
}

fn time_stage(stage: &'static str, warmup: usize, n: usize, mut f: impl FnMut() -> Result<()>) -> Result<Stats> {
    for _ in 0..warmup {
        f().with_context(|| format!("stage {stage}"))?;
    }
    let mut ms: Vec<f64> = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().with_context(|| format!("stage {stage}"))?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    Ok(Stats { stage, median: quantile(&ms, 0.5), p95: quantile(&ms, 0.95), mean })
}

/// The `q` quantile of sorted, non-empty `ms` (nearest rank).
fn quantile(ms: &[f64], q: f64) -> f64 {
    ms[((ms.len() as f64 - 1.0) * q).round() as usize]
}

fn median(ms: &mut [f64]) -> f64 {
    ms.sort_by(f64::total_cmp);
    quantile(ms, 0.5)
}

/// Full-range RGB pixel to limited-range BT.601 (Y, U, V).
fn limited_yuv(p: &[u8]) -> (f32, f32, f32) {
    let (r, g, b) = (f32::from(p[0]), f32::from(p[1]), f32::from(p[2]));
    let y = 0.299 * r + 0.587 * g + 0.114 * b;
    (16.0 + y * 219.0 / 255.0, 128.0 + (b - y) * 0.564 * 224.0 / 255.0, 128.0 + (r - y) * 0.713 * 224.0 / 255.0)
}

/// Full-range RGB to limited-range BT.601 YUYV, as a capture dongle delivers it.
fn rgb_to_yuyv(rgb: &[u8], width: usize, height: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(width * height * 2);
    for pair in rgb.chunks_exact(6) {
        let (y0, u0, v0) = limited_yuv(&pair[..3]);
        let (y1, u1, v1) = limited_yuv(&pair[3..]);
        out.extend_from_slice(&[y0 as u8, ((u0 + u1) / 2.0) as u8, y1 as u8, ((v0 + v1) / 2.0) as u8]);
    }
    out
}

/// Full-range RGB to limited-range BT.601 NV12: the luma plane, then U and V interleaved for
/// each 2x2 block (width and height even).
fn rgb_to_nv12(rgb: &[u8], width: usize, height: usize) -> Vec<u8> {
    let mut out: Vec<u8> = rgb.chunks_exact(3).map(|p| limited_yuv(p).0 as u8).collect();
    for y in (0..height).step_by(2) {
        for x in (0..width).step_by(2) {
            let (mut u, mut v) = (0.0, 0.0);
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let at = 3 * ((y + dy) * width + x + dx);
                let (_, pu, pv) = limited_yuv(&rgb[at..at + 3]);
                (u, v) = (u + pu / 4.0, v + pv / 4.0);
            }
            out.extend_from_slice(&[u as u8, v as u8]);
        }
    }
    out
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.iterations >= 5, "--iterations must be at least 5");
    let cold = Instant::now();
    crate::model::use_threads(args.threads)?;
    let model = crate::setup::load_model(&args.model)?;
    let manifest = model.manifest().clone();
    let layout = if args.hd720 { ScreenLayout::Hd720 } else { ScreenLayout::Hd1080 };
    let mut sim = ScannerSimulator::new(11, layout, 1000);
    let canvas = sim.next_rgb();
    let (w, h) = (canvas.width(), canvas.height());
    let rgb = canvas.rgb().to_vec();
    let mut pipeline = Pipeline::new(Stages {
        locator: ScreenLocator::new(None),
        roi: RoiSelector::new(DEFAULT_GUIDE)?,
        model,
        op: None,
        stabilizer: Stabilizer::new(4, 6)?,
        indicator: Box::new(Fanout(Vec::new())),
        audit: None,
        source_name: "bench".into(),
    })?;
    let mut frame = LumaFrame::default();
    canvas.to_luma(&mut frame);
    let first = pipeline.process(&frame, FrameInfo { sequence: 0 });
    let cold_start_ms = cold.elapsed().as_secs_f64() * 1e3;
    log::info!("first frame: {:?}", first.result);

    let (format, (decode_whole, decode)) = (args.capture.format(), args.capture.stages());
    let raw = args.capture.encode(&rgb, w as usize, h as usize);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
        .encode(&rgb, w, h, image::ExtendedColorType::Rgb8)
        .context("cannot encode the bench JPEG")?;
    let (n, warm) = (args.iterations, args.warmup);
    let mut scratch = Vec::new();
    let mut stats = Vec::new();
    // The demo's source, not a pipeline stage: reported so its live frame rate is known.
    let mut sim_frame = LumaFrame::default();
    stats.push(time_stage("simulator_frame", warm, n, || {
        sim.next_rgb().to_luma(&mut sim_frame);
        Ok(())
    })?);
    // Whole frames: what capture converts until the image area is located (and after it moves).
    stats.push(time_stage(decode_whole, warm, n, || {
        convert::to_luma(None, format, LumaRange::Limited, &raw, w, h, &mut frame, &mut scratch)
    })?);
    stats.push(time_stage("decode_mjpeg", warm, n, || {
        convert::to_luma(None, PixelFormat::Mjpeg, LumaRange::Full, &jpeg, w, h, &mut frame, &mut scratch)
    })?);
    let mut locator = ScreenLocator::new(None);
    let mut area = None;
    stats.push(time_stage("screen_locate", warm, n, || {
        match locator.locate(&frame) {
            ScreenState::Image(a) => area = Some(a),
            other => anyhow::bail!("bench screen not found: {other:?}"),
        }
        Ok(())
    })?);
    let area = area.context("no image area")?;
    let selector = RoiSelector::new(DEFAULT_GUIDE)?;
    let mut roi = None;
    stats.push(time_stage("roi_select", warm, n, || {
        roi = Some(selector.select(area, w, h)?);
        Ok(())
    })?);
    let roi = roi.context("no ROI")?;
    let mut pre = Preprocessor::new(manifest.input.width, manifest.input.height, manifest.normalization)?;
    stats.push(time_stage("preprocess", warm, n, || pre.run(&frame, roi).map(|_| ()))?);
    // Once the image area is located, as `run` works: whole only the pixels preprocessing reads,
    // elsewhere the rows the block sums sample.
    let window = Some(pre.source_rect(w, h, roi));
    convert::to_luma(None, format, LumaRange::Limited, &raw, w, h, &mut frame, &mut scratch)?;
    let whole_tensor = pre.run(&frame, roi)?.to_vec();
    stats.push(time_stage(decode, warm, n, || {
        convert::to_luma(window, format, LumaRange::Limited, &raw, w, h, &mut frame, &mut scratch)
    })?);
    // Screen location and preprocessing then do what they did on the whole frame (the lock
    // holds without reading pixels; the ROI's pixels are the same).
    match locator.locate(&frame) {
        ScreenState::Image(a) if a == area => {}
        other => anyhow::bail!("bench screen not held on a frame converted within {window:?}: {other:?}"),
    }
    anyhow::ensure!(pre.run(&frame, roi)? == &whole_tensor[..], "preprocessing differs on the windowed frame");
    let mut classifier = crate::setup::load_model(&args.model)?;
    let tensor = pre.tensor().to_vec();
    let mut p = 0.0;
    stats.push(time_stage("inference", warm, n, || {
        p = classifier.probability(&tensor)?;
        Ok(())
    })?);
    let op_times = if args.ops { classifier.profile_ops(&tensor, n)? } else { Vec::new() };
    let mut stabilizer = Stabilizer::new(4, 6)?;
    let mut shown = None;
    stats.push(time_stage("decision", warm, n, || {
        shown = Some(stabilizer.push(classify(&manifest.decision, p)));
        Ok(())
    })?);
    let shown = shown.context("no decision")?;
    let display = StatusDisplay::new(NullSink(Size::new(240, 240)), manifest.decision)?;
    let mut indicator = Fanout(vec![Box::new(JsonEvents::new(std::io::sink())), Box::new(display)]);
    let (rw, rh) = pre.input_size();
    let mut seq = 0u64;
    stats.push(time_stage("indicator", warm, n, || {
        seq += 1;
        // A new probability every frame, so the display redraws its bar and thumbnail.
        let state = IndicatorState {
            verdict: shown.verdict,
            probability: Some((seq % 100) as f32 / 100.0),
            agreeing: shown.agreeing,
            window: shown.window,
            uptime: Duration::from_millis(seq * 40),
            model_id: &manifest.id,
            changed: seq.is_multiple_of(25),
            sequence: seq,
            roi: Some((rw, rh, pre.resized())),
        };
        indicator.show(&state)
    })?);
    let audit_dir = std::env::temp_dir().join(format!("kidney-screen-bench-{}", std::process::id()));
    let mut audit = AuditLog::open(&audit_dir, true)?;
    let record = AuditRecord {
        time: crate::audit::now_rfc3339(),
        sequence: 1,
        source: "bench".into(),
        model_id: manifest.id.clone(),
        model_sha256: manifest.sha256.clone(),
        roi_sha256: Some("0".repeat(64)),
        roi: Some(roi.rect()),
        probability: Some(p),
        verdict: "NORMAL".into(),
        agreeing: 4,
        window: 6,
    };
    stats.push(time_stage("audit_append_fsync", warm, n, || audit.append(&record))?);
    // Each frame's own inference time, read from the model inside the loop: the in-loop cost of
    // everything else is taken frame by frame, not as a difference of medians from two phases
    // (which a noisy machine can drive below zero). Both loops take their frames from the same
    // stand-in dongle: on the loop's own thread, and on a capture thread as `run` does.
    let mut dongle = RawDongle::new(format, &raw, w, h);
    let mut seq = 1u64;
    let mut frame_loop = |stage: &'static str, source: &mut dyn FrameSource, rest_ms: &mut Vec<f64>| {
        time_stage(stage, warm, n, || {
            seq += 1;
            let started = Instant::now();
            let (frame, _) = source.next_frame()?.context("the bench source ended")?;
            let outcome = pipeline.process(frame, FrameInfo { sequence: seq });
            source.set_window(pipeline.window());
            let whole = started.elapsed();
            anyhow::ensure!(
                matches!(outcome.result, FrameResult::Classified { .. }),
                "bench frame not classified: {:?}",
                outcome.result
            );
            rest_ms.push(whole.saturating_sub(pipeline.model().last_inference()).as_secs_f64() * 1e3);
            Ok(())
        })
    };
    let mut on_loop_thread_ms: Vec<f64> = Vec::with_capacity(n + warm);
    stats.push(frame_loop("whole_frame", &mut dongle, &mut on_loop_thread_ms)?);
    let mut capture_thread = CaptureThread::spawn(dongle)?;
    let mut capture_thread_ms: Vec<f64> = Vec::with_capacity(n + warm);
    stats.push(frame_loop("whole_frame_capture_thread", &mut capture_thread, &mut capture_thread_ms)?);
    drop(capture_thread);
    // As `run` works: capture, screen location, ROI and preprocessing one frame ahead on a
    // thread of their own; the loop runs the model and what follows it.
    let (front, mut back) = pipeline.split();
    let mut ahead = AheadThread::start(Preparing::new(RawDongle::new(format, &raw, w, h), front))?;
    let mut prepare_ahead_ms: Vec<f64> = Vec::with_capacity(n + warm);
    // The capture thread's CPU time over the timed frames, and each of those frames' inference:
    // the stages' cost as `run` pays it (buffers cold from DMA, caches shared with inference),
    // against inference timed in the same seconds, so that the VM's drift moves both.
    let (mut frames_taken, mut ahead_cpu_from) = (0usize, Duration::ZERO);
    let mut ahead_inference_ms: Vec<f64> = Vec::with_capacity(n);
    stats.push(time_stage("whole_frame_prepare_ahead", warm, n, || {
        if frames_taken == warm {
            ahead_cpu_from = ahead.worker_cpu_time();
        }
        frames_taken += 1;
        let started = Instant::now();
        let (prepared, info) = ahead.next_item()?.context("the bench source ended")?;
        let outcome = back.finish_prepared(prepared, info);
        let whole = started.elapsed();
        anyhow::ensure!(
            matches!(outcome.result, FrameResult::Classified { .. }),
            "bench frame not classified: {:?}",
            outcome.result
        );
        prepare_ahead_ms.push(whole.saturating_sub(back.model().last_inference()).as_secs_f64() * 1e3);
        if frames_taken > warm {
            ahead_inference_ms.push(back.model().last_inference().as_secs_f64() * 1e3);
        }
        Ok(())
    })?);
    let capture_thread_cpu_ms = (ahead.worker_cpu_time() - ahead_cpu_from).as_secs_f64() * 1e3 / n as f64;
    let ahead_inference = median(&mut ahead_inference_ms);
    drop(ahead);
    let in_loop_rest = median(&mut on_loop_thread_ms[warm..]);
    let in_loop_rest_capture_thread = median(&mut capture_thread_ms[warm..]);
    let in_loop_rest_prepare_ahead = median(&mut prepare_ahead_ms[warm..]);

    drop(audit);
    let _ = std::fs::remove_dir_all(&audit_dir);
    let get = |s: &str| stats.iter().find(|x| x.stage == s).map_or(0.0, |x| x.median);
    let inference = get("inference");
    // The status display redraws its bar and thumbnail at most every 100 ms, so most frames
    // draw nothing: its cost per frame is the mean over frames (at the bench's 25 frames/s of
    // uptime), not the median.
    let indicator = stats.iter().find(|x| x.stage == "indicator").map_or(0.0, |x| x.mean);
    // Per frame: decode (YUYV or NV12), locate, ROI, preprocess, decision, indicator. Audit runs only
    // when the shown verdict changes, so it is reported separately.
    let non_inference =
        get(decode) + get("screen_locate") + get("roi_select") + get("preprocess") + get("decision") + indicator;
    // The same work inside the frame loop, where inference has just been through the caches:
    // the whole frame (decode + pipeline, whose indicator list is empty) less that frame's
    // inference, plus the indicator. Higher than the sum of the stages, each timed on its own.
    // With a capture thread (as `run` works), the decode is off the loop's thread: what is left
    // is taking the frame, the stages after capture and the indicator.
    let in_loop_non_inference = in_loop_rest + indicator;
    let in_loop_capture_thread = in_loop_rest_capture_thread + indicator;
    // With the stages before the model ahead as well: taking the prepared frame, decision,
    // (audit) and the indicator.
    let in_loop_prepare_ahead = in_loop_rest_prepare_ahead + indicator;
    // All of it in CPU time as `run` spends it: the capture thread's per frame plus the loop's.
    let run_non_inference = capture_thread_cpu_ms + in_loop_prepare_ahead;
    let mut out = std::io::stdout().lock();
    for s in &stats {
        writeln!(
            out,
            "{}",
            serde_json::json!({"stage": s.stage, "median_ms": s.median, "p95_ms": s.p95, "mean_ms": s.mean, "n": n})
        )?;
    }
    let summary = serde_json::json!({
        "summary": true,
        "model": manifest.id,
        "input": format!("{}x{}", manifest.input.width, manifest.input.height),
        "screen": format!("{w}x{h}"),
        "capture_format": String::from_utf8_lossy(&format.fourcc()),
        "threads": args.threads,
        "frames_per_second": 1e3 / get("whole_frame"),
        "frames_per_second_capture_thread": 1e3 / get("whole_frame_capture_thread"),
        "inference_ms": inference,
        "non_inference_ms": non_inference,
        "non_inference_share_of_inference": non_inference / inference,
        "in_loop_non_inference_ms": in_loop_non_inference,
        "in_loop_non_inference_share_of_inference": in_loop_non_inference / inference,
        "in_loop_non_inference_capture_thread_ms": in_loop_capture_thread,
        "in_loop_non_inference_capture_thread_share_of_inference": in_loop_capture_thread / inference,
        "in_loop_non_inference_prepare_ahead_ms": in_loop_prepare_ahead,
        "in_loop_non_inference_prepare_ahead_share_of_inference": in_loop_prepare_ahead / inference,
        "frames_per_second_prepare_ahead": 1e3 / get("whole_frame_prepare_ahead"),
        "capture_thread_cpu_ms_per_frame": capture_thread_cpu_ms,
        "inference_prepare_ahead_ms": ahead_inference,
        "run_non_inference_cpu_ms": run_non_inference,
        "run_non_inference_cpu_share_of_inference": run_non_inference / ahead_inference,
        "peak_rss_mb": peak_rss_mb(),
        "cold_start_to_first_verdict_ms": cold_start_ms,
        "arch": std::env::consts::ARCH,
    });
    writeln!(out, "{summary}")?;
    for t in &op_times {
        writeln!(out, "{}", serde_json::json!({"op": t.op, "nodes": t.nodes, "ms_per_inference": t.ms_per_run}))?;
    }
    if !op_times.is_empty() {
        eprintln!("{:<40} {:>6} {:>12}", "tract op (inference)", "nodes", "ms/inference");
        for t in &op_times {
            eprintln!("{:<40} {:>6} {:>12.3}", t.op, t.nodes, t.ms_per_run);
        }
    }
    eprintln!("{:<26} {:>10} {:>10} {:>10}", "stage", "median ms", "p95 ms", "mean ms");
    for s in &stats {
        eprintln!("{:<26} {:>10.3} {:>10.3} {:>10.3}", s.stage, s.median, s.p95, s.mean);
    }
    eprintln!(
        "{} on {w}x{h} {format:?}, {} thread(s): {:.1} frames/s as `run` works ({:.1} with only capture on a thread, {:.1} with everything on the loop's thread); everything but inference as `run` works, CPU time on both threads {:.2} ms = {:.1}% of that phase's inference ({:.2} ms on the capture thread); the stages timed alone {:.2} ms = {:.1}% of inference; in the frame loop {:.3} ms = {:.1}% as `run` works, {:.2} ms = {:.1}% with only capture on a thread, {:.2} ms = {:.1}% with everything on the loop's thread; peak RSS {:.0} MB; cold start to first verdict {:.0} ms",
        manifest.id,
        args.threads,
        1e3 / get("whole_frame_prepare_ahead"),
        1e3 / get("whole_frame_capture_thread"),
        1e3 / get("whole_frame"),
        run_non_inference,
        100.0 * run_non_inference / ahead_inference,
        capture_thread_cpu_ms,
        non_inference,
        100.0 * non_inference / inference,
        in_loop_prepare_ahead,
        100.0 * in_loop_prepare_ahead / inference,
        in_loop_capture_thread,
        100.0 * in_loop_capture_thread / inference,
        in_loop_non_inference,
        100.0 * in_loop_non_inference / inference,
        peak_rss_mb().unwrap_or(f64::NAN),
        cold_start_ms
    );
    Ok(())
}

/// Buffers the stand-in dongle rotates through: as many as the V4L2 source asks the driver for.
const DONGLE_BUFFERS: usize = 4;

/// Stands in for a V4L2 capture dongle: limited-range YUYV or NV12 converted as the V4L2 source converts
/// it, from [`DONGLE_BUFFERS`] buffers in turn, so that each frame is read from memory rather
/// than cache, as a buffer the driver has just filled by DMA would be.
struct RawDongle {
    format: PixelFormat,
    buffers: Vec<Vec<u8>>,
    next: usize,
    width: u32,
    height: u32,
    frame: LumaFrame,
    scratch: Vec<u8>,
    sequence: u64,
    window: Option<Rect>,
}

impl RawDongle {
    fn new(format: PixelFormat, raw: &[u8], width: u32, height: u32) -> Self {
        let buffers = vec![raw.to_vec(); DONGLE_BUFFERS];
        Self {
            format,
            buffers,
            next: 0,
            width,
            height,
            frame: LumaFrame::default(),
            scratch: Vec::new(),
            sequence: 0,
            window: None,
        }
    }

    fn convert_next(&mut self, into: &mut LumaFrame) -> Result<FrameInfo, CaptureError> {
        let data = &self.buffers[self.next];
        self.next = (self.next + 1) % self.buffers.len();
        convert::to_luma(
            self.window,
            self.format,
            LumaRange::Limited,
            data,
            self.width,
            self.height,
            into,
            &mut self.scratch,
        )
        .map_err(|e| CaptureError::BadFrame(format!("{e:#}")))?;
        self.sequence += 1;
        Ok(FrameInfo { sequence: self.sequence - 1 })
    }
}

impl FrameSource for RawDongle {
    fn next_frame(&mut self) -> Result<Option<(&LumaFrame, FrameInfo)>, CaptureError> {
        let mut frame = std::mem::take(&mut self.frame);
        let converted = self.convert_next(&mut frame);
        self.frame = frame;
        converted.map(|info| Some((&self.frame, info)))
    }

    /// Converts straight into the capture thread's buffer, as the V4L2 source hands its over.
    fn take_frame(&mut self, into: &mut LumaFrame) -> Result<Option<FrameInfo>, CaptureError> {
        self.convert_next(into).map(Some)
    }

    fn set_window(&mut self, window: Option<Rect>) {
        self.window = window;
    }

    fn describe(&self) -> String {
        format!("bench {} {}x{}", String::from_utf8_lossy(&self.format.fourcc()), self.width, self.height)
    }
}
