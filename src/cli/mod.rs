//! Command line: one module per subcommand, each with one entry function.

mod bench;
mod check_model;
mod classify;
mod demo;
pub(crate) mod eval;
mod prepare;
mod probe;
mod run;
mod sign;
pub(crate) mod simulate;
mod soak;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes (documented in the README).
pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(name = "kidney-screen", version, about = "Kidney ultrasound ESRD screening aid (not a diagnosis)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the built-in demo: simulated scanner feed, shipped model, no hardware.
    Demo(demo::Args),
    /// Run live from a board/scanner profile.
    Run(run::Args),
    /// Classify image files (scanner screenshots or ROIs) once.
    Classify(classify::Args),
    /// Validate the model on labeled images: the study's table, DeLong vs readers, ROC figure.
    Eval(eval::Args),
    /// List V4L2 capture devices, formats and sizes.
    Probe(probe::Args),
    /// Verify a model directory and run it once.
    CheckModel(check_model::Args),
    /// Write simulated kidney ROIs (and optionally full screens) with a labels CSV.
    Simulate(simulate::Args),
    /// Cut and resize a site's labelled screenshots into model-sized ROIs for training.
    Prepare(prepare::Args),
    /// Per-stage latency, frames per second, peak RSS and cold start on a 1080p screen.
    Bench(bench::Args),
    /// Run the simulated feed through the whole pipeline for many frames, sampling RSS.
    Soak(soak::Args),
    /// Sign a model's manifest with an ed25519 key (manifest.toml.sig), or make a key pair.
    Sign(sign::Args),
}

pub fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Run(args) => run::run(args),
        Command::Classify(args) => classify::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Probe(args) => probe::run(args),
        Command::CheckModel(args) => check_model::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Prepare(args) => prepare::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Soak(args) => soak::run(args),
        Command::Sign(args) => sign::run(args),
    };
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// A stop flag that SIGINT and SIGTERM set; the loop then exits and the indicator is put in
/// its safe state (rppal's reset-on-drop does not run when a signal kills the process).
pub(crate) fn install_signal_handlers() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(flag)
}
