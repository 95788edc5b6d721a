//! `run`: the live pipeline from a board/scanner profile.

use std::path::PathBuf;

use anyhow::Result;

use crate::config::Config;
use crate::pipeline::run_loop;

#[derive(clap::Args)]
pub struct Args {
    /// Board/scanner profile (TOML), e.g. boards/rpi5.toml.
    #[arg(long)]
    config: PathBuf,
    /// Stop after this many frames (default: run until SIGINT/SIGTERM).
    #[arg(long)]
    frames: Option<u64>,
}

pub fn run(args: Args) -> Result<()> {
    let config = Config::load(&args.config)?;
    let stop = crate::cli::install_signal_handlers()?;
    let mut source = crate::setup::open_source(&config.source)?;
    let mut pipeline = crate::setup::build_pipeline(&config, source.describe(), None)?;
    log::info!(
        "board {}: {} -> model {} ({} of {} frames to show a verdict); screening aid, not a diagnosis",
        config.board,
        source.describe(),
        pipeline.model().manifest().id,
        config.k,
        config.n
    );
    let result = run_loop(&mut source, &mut pipeline, &stop, args.frames, |_, _| {});
    // Safe state on every exit path: end of source, signal, or error.
    pipeline.shutdown();
    let counters = result?;
    log::info!("stopped: {counters:?}");
    Ok(())
}
