//! `run`: the live pipeline from a board/scanner profile.

use std::path::PathBuf;

use anyhow::Result;

use crate::capture::FrameSource;
use crate::config::Config;
use crate::pipeline::run_loop_ahead;
use crate::watchdog::Notifier;

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
    // Under systemd (Type=notify, WatchdogSec=): a no-op elsewhere.
    let mut notifier = Notifier::from_env();
    let started = (|| {
        let config = Config::load(&args.config)?;
        let stop = crate::cli::install_signal_handlers()?;
        let source = crate::setup::open_source(&config.source)?;
        let pipeline = crate::setup::build_pipeline(&config, source.describe(), None)?;
        anyhow::Ok((config, stop, source, pipeline))
    })();
    let (config, stop, source, pipeline) = match started {
        Ok(started) => started,
        Err(e) => {
            // `systemctl status` shows why before the restart.
            notifier.status(&format!("start-up failed: {e:#}"));
            return Err(e);
        }
    };
    log::info!(
        "board {}: {} -> model {} ({} of {} frames to show a verdict); screening aid, not a diagnosis",
        config.board,
        source.describe(),
        pipeline.model().manifest().id,
        config.k,
        config.n
    );
    if let Some(period) = notifier.watchdog_period() {
        log::info!("systemd watchdog: pinging every {}", humantime::format_duration(period));
    }
    // Ready now; the pings come from the frame loop itself, so a loop that stalls (no frames and
    // no capture timeouts) goes unpinged and systemd restarts the service.
    notifier.ready();
    // The next frame is captured, converted, located and preprocessed on a thread of its own
    // while this one runs the model on the frame before.
    let (front, mut back) = pipeline.split();
    let result = run_loop_ahead(source, front, &mut back, &stop, args.frames, |outcome| {
        notifier.frame(outcome.shown.verdict);
    });
    notifier.stopping();
    // Safe state on every exit path: end of source, signal, or error.
    back.shutdown();
    let counters = result?;
    log::info!("stopped: {counters:?}");
    Ok(())
}
