//! `check-model`: verify a model directory (manifest, hash, shapes) and run it once.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Model directory (manifest.toml + model file).
    dir: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let mut model = crate::setup::load_model(&args.dir)?;
    let load = started.elapsed();
    let m = model.manifest().clone();
    let zeros = vec![0.0f32; 3 * m.input.width as usize * m.input.height as usize];
    let t = Instant::now();
    let p = model.probability(&zeros)?;
    println!("model      {} v{} ({})", m.id, m.version, m.architecture);
    println!("file       {} sha256 {} (verified)", model.model_path().display(), m.sha256);
    println!(
        "input      1x3x{}x{} mean {:?} std {:?}",
        m.input.height, m.input.width, m.normalization.mean, m.normalization.std
    );
    println!("output     {:?} labels {:?}, positive {:?}", m.output.kind, m.output.labels, m.output.positive_label);
    println!("decision   threshold {} indeterminate {:?}", m.decision.threshold, m.decision.indeterminate);
    println!(
        "load       {:.0} ms (read, verify, optimise); one inference {:.1} ms; p(zero input) = {p:.4}",
        load.as_secs_f64() * 1e3,
        t.elapsed().as_secs_f64() * 1e3
    );
    if !m.intended_use.is_empty() {
        println!("use        {}", m.intended_use);
    }
    Ok(())
}
