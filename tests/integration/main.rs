//! Integration tests: real encoded frames (ffmpeg), the shipped model, the whole pipeline,
//! the binary's error handling, and the evaluation against independent implementations.
//! Fixtures: tests/fixtures (see tests/fixtures/make-fixtures.sh).

mod boards;
mod capture;
mod cli;
mod eval;
mod model;
mod pipeline;
mod reliability;
mod screen;

use std::path::{Path, PathBuf};

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures").join(rel)
}

pub fn shipped_model() -> PathBuf {
    root().join("models/densenet121-kidney-sim")
}

pub fn fp32_model() -> PathBuf {
    root().join("models/densenet121-kidney-sim-fp32")
}

/// The fixture screens with their labels (true = ESRD).
pub fn fixture_screens() -> Vec<(PathBuf, bool)> {
    let text = std::fs::read_to_string(fixture("screens/labels.csv")).expect("fixture labels");
    text.lines()
        .skip(1)
        .map(|l| {
            let (file, label) = l.split_once(',').expect("file,label");
            (fixture(&format!("screens/{file}")), label == "esrd")
        })
        .collect()
}
