//! `soak`: the simulated scanner feed through the whole pipeline (model, decision, indicators,
//! audit) for many frames, sampling the resident set size to show memory stays flat.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use serde::Serialize;

use crate::capture::FrameSource;
use crate::capture::simulated::SimulatedSource;
use crate::config::{Config, DEFAULT_MODEL_DIR, SourceConfig};
use crate::pipeline::{Counters, run_loop};
use crate::simulator::ScreenLayout;

#[derive(clap::Args)]
pub struct Args {
    /// Frames to run.
    #[arg(long, default_value_t = 100_000)]
    frames: u64,
    /// Sample RSS every this many frames.
    #[arg(long, default_value_t = 1000)]
    sample_every: u64,
    /// Simulator seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long, default_value_t = 24)]
    frames_per_patient: u32,
    /// Use a 1920x1080 scanner screen.
    #[arg(long)]
    hd1080: bool,
    /// Model directory.
    #[arg(long, default_value = DEFAULT_MODEL_DIR)]
    model: PathBuf,
    /// k of the k-of-n decision (1 writes an audit record at every change of the raw verdict).
    #[arg(long, default_value_t = crate::config::DEFAULT_K)]
    k: usize,
    #[arg(long, default_value_t = crate::config::DEFAULT_N)]
    n: usize,
    /// Audit log directory (default: a temporary one, removed at the end).
    #[arg(long)]
    audit_dir: Option<PathBuf>,
    /// Write the figures and every sample as JSON here.
    #[arg(long, value_name = "PATH")]
    report: Option<PathBuf>,
    /// Fail (exit 1) if RSS grows by more than this many MiB after the first sample.
    #[arg(long, value_name = "MIB")]
    max_growth_mib: Option<f64>,
}

/// One RSS sample.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub frame: u64,
    pub seconds: f64,
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// VmHWM (peak RSS), KiB.
    pub hwm_kib: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub frames: u64,
    pub seconds: f64,
    pub frames_per_second: f64,
    /// RSS at the first sample (after `sample_every` frames: model loaded, buffers warm).
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
    pub rss_max_kib: u64,
    /// Peak RSS of the whole run, model loading included.
    pub hwm_kib: u64,
    /// Least-squares slope of RSS over the samples, KiB per 1000 frames.
    pub slope_kib_per_1000_frames: f64,
    pub counters: Counters,
    pub samples: Vec<Sample>,
}

/// (VmRSS, VmHWM) in KiB from /proc/self/status (Linux).
pub fn rss_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        status.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Least-squares slope of y over x.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (mx, my) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + (x - mx) * (y - my), b + (x - mx).powi(2)));
    if den == 0.0 { 0.0 } else { num / den }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn run(args: Args) -> Result<()> {
    ensure!(args.frames > 0 && args.sample_every > 0, "--frames and --sample-every must be positive");
    ensure!(rss_kib().is_some(), "soak reads RSS from /proc/self/status: Linux only");
    let mut config = Config::parse("[capture]\nsource = \"simulated\"\n[indicator]\nconsole = false\n")?;
    config.source =
        SourceConfig::Simulated { seed: args.seed, hd1080: args.hd1080, frames_per_patient: args.frames_per_patient };
    config.model_dir = args.model.clone();
    config.k = args.k;
    config.n = args.n;
    let temp_audit = args.audit_dir.is_none();
    let audit_dir = args
        .audit_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("kidney-screen-soak-{}", std::process::id())));
    config.audit_dir = Some(audit_dir.clone());
    let layout = if args.hd1080 { ScreenLayout::Hd1080 } else { ScreenLayout::Hd720 };
    let mut source = SimulatedSource::new(args.seed, layout, args.frames_per_patient, Some(args.frames));
    let mut pipeline = crate::setup::build_pipeline(&config, source.describe(), None)?;
    println!(
        "soak: {} frames from {} through model {}, k={} of n={}, audit in {}; RSS every {} frames",
        args.frames,
        source.describe(),
        pipeline.model().manifest().id,
        config.k,
        config.n,
        audit_dir.display(),
        args.sample_every
    );
    let stop = crate::cli::install_signal_handlers()?;
    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::with_capacity((args.frames / args.sample_every) as usize + 1);
    let every = args.sample_every;
    let result = run_loop(&mut source, &mut pipeline, &stop, None, |outcome, _| {
        let frame = outcome.sequence + 1;
        if frame % every == 0
            && let Some((rss, hwm)) = rss_kib()
        {
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "frame {frame:>7}: RSS {:7.1} MiB, peak {:7.1} MiB, {:6.1} frames/s",
                mib(rss),
                mib(hwm),
                frame as f64 / seconds
            );
            samples.push(Sample { frame, seconds, rss_kib: rss, hwm_kib: hwm });
        }
    });
    pipeline.shutdown();
    let counters = result?;
    let seconds = started.elapsed().as_secs_f64();
    if temp_audit {
        let _ = std::fs::remove_dir_all(&audit_dir);
    }
    let (end_rss, hwm) = rss_kib().unwrap_or((0, 0));
    if samples.last().is_none_or(|s| s.frame != counters.frames) {
        samples.push(Sample { frame: counters.frames, seconds, rss_kib: end_rss, hwm_kib: hwm });
    }
    let points: Vec<(f64, f64)> = samples.iter().map(|s| (s.frame as f64 / 1000.0, s.rss_kib as f64)).collect();
    let report = Report {
        frames: counters.frames,
        seconds,
        frames_per_second: counters.frames as f64 / seconds,
        rss_start_kib: samples[0].rss_kib,
        rss_end_kib: end_rss,
        rss_max_kib: samples.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        hwm_kib: hwm,
        slope_kib_per_1000_frames: slope(&points),
        counters,
        samples,
    };
    println!(
        "{} frames in {:.1} s ({:.1} frames/s): {} classified, {} no image, {} no signal, {} dropped, {} faults, \
         {} audit records, {} audit errors",
        counters.frames,
        seconds,
        report.frames_per_second,
        counters.classified,
        counters.no_image,
        counters.no_signal,
        counters.dropped,
        counters.faults,
        counters.audit_records,
        counters.audit_errors
    );
    println!(
        "RSS: start {:.1} MiB (frame {}), end {:.1} MiB, max {:.1} MiB, peak (VmHWM) {:.1} MiB, slope {:+.1} KiB per 1000 frames",
        mib(report.rss_start_kib),
        report.samples[0].frame,
        mib(report.rss_end_kib),
        mib(report.rss_max_kib),
        mib(report.hwm_kib),
        report.slope_kib_per_1000_frames
    );
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write soak report {}", path.display()))?;
    }
    if let Some(limit) = args.max_growth_mib {
        let growth = mib(report.rss_end_kib) - mib(report.rss_start_kib);
        ensure!(growth <= limit, "RSS grew by {growth:.1} MiB after the first sample (limit {limit} MiB)");
    }
    Ok(())
}
