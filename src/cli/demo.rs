//! `demo`: the simulated scanner feed through the whole pipeline with the shipped model.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use crate::capture::FrameSource;
use crate::capture::simulated::SimulatedSource;
use crate::config::{Config, DEFAULT_MODEL_DIR, DisplayConfig, DisplaySinkConfig, MIN_DISPLAY_SIDE, SourceConfig};
use crate::decision::Verdict;
use crate::pipeline::{FrameResult, run_loop};
use crate::simulator::{Condition, ScreenLayout, Segment};

#[derive(clap::Args)]
pub struct Args {
    /// Frames to run (the simulated video has a new patient every --frames-per-patient).
    #[arg(long, default_value_t = 120)]
    frames: u64,
    #[arg(long, default_value_t = 24)]
    frames_per_patient: u32,
    /// Simulator seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Model directory.
    #[arg(long, default_value = DEFAULT_MODEL_DIR)]
    model: PathBuf,
    /// Audit log directory (default: none).
    #[arg(long)]
    audit_dir: Option<PathBuf>,
    /// Use a 1920x1080 scanner screen.
    #[arg(long)]
    hd1080: bool,
    /// Write the 240x240 status screen to this PNG after each change (atomically replaced).
    #[arg(long, value_name = "PATH")]
    display_png: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let mut config = Config::parse("[capture]\nsource = \"simulated\"\n")?;
    config.source =
        SourceConfig::Simulated { seed: args.seed, hd1080: args.hd1080, frames_per_patient: args.frames_per_patient };
    config.model_dir = args.model;
    config.audit_dir = args.audit_dir;
    config.console = false;
    config.display = args.display_png.map(|path| DisplayConfig {
        sink: DisplaySinkConfig::Png { path, width: MIN_DISPLAY_SIDE, height: MIN_DISPLAY_SIDE },
        required: true,
    });
    let layout = if args.hd1080 { ScreenLayout::Hd1080 } else { ScreenLayout::Hd720 };
    let mut source = SimulatedSource::new(args.seed, layout, args.frames_per_patient, Some(args.frames));
    let mut pipeline = crate::setup::build_pipeline(&config, source.describe(), None)?;
    let manifest = pipeline.model().manifest();
    println!("kidney-screen demo: SCREENING AID FOR TRAINED STAFF - NOT A DIAGNOSIS");
    println!(
        "model {} v{} ({}), source: {}, shown verdict needs {} of {} frames",
        manifest.id,
        manifest.version,
        &manifest.sha256[..12],
        source.describe(),
        config.k,
        config.n
    );
    let stop = crate::cli::install_signal_handlers()?;
    let started = Instant::now();
    let (mut agree, mut scored) = (0u32, 0u32);
    let counters = run_loop(&mut source, &mut pipeline, &stop, None, |outcome, src| {
        let truth = match src.segment() {
            Segment::Scan(Condition::Normal) => "normal kidney",
            Segment::Scan(Condition::Esrd) => "ESRD kidney",
            Segment::ProbeLifted => "probe lifted",
            Segment::NoSignal => "no signal",
        };
        let frame = match &outcome.result {
            FrameResult::Classified { roi, probability, raw } => {
                format!("ROI {:<16} p(ESRD) {probability:.3} {:<14}", roi.rect().to_string(), raw.label())
            }
            FrameResult::NoImage => format!("{:<52}", "no B-mode image on screen"),
            FrameResult::NoSignal => format!("{:<52}", "no signal"),
            FrameResult::Dropped(why) => format!("dropped: {why}"),
            FrameResult::Fault(why) => format!("FAULT: {why}"),
        };
        let shown = outcome.shown.verdict.map_or("WAITING", Verdict::label);
        println!(
            "frame {:>4} | truth: {truth:<13} | {frame} | shown: {shown} ({}/{})",
            outcome.sequence, outcome.shown.agreeing, outcome.shown.window
        );
        if let (Segment::Scan(c), Some(v)) = (src.segment(), outcome.shown.verdict)
            && v.is_classification()
        {
            scored += 1;
            let right =
                matches!((c, v), (Condition::Normal, Verdict::Normal) | (Condition::Esrd, Verdict::EsrdSuspected));
            agree += u32::from(right);
        }
    });
    pipeline.shutdown();
    let counters = counters?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} frames in {secs:.1} s ({:.1} frames/s): {} classified, {} no image, {} no signal, {} dropped, {} faults",
        counters.frames,
        counters.frames as f64 / secs,
        counters.classified,
        counters.no_image,
        counters.no_signal,
        counters.dropped,
        counters.faults
    );
    println!("shown verdicts matching the simulated truth while scanning: {agree}/{scored}");
    if counters.audit_records > 0 {
        println!("{} audit records written", counters.audit_records);
    }
    Ok(())
}
