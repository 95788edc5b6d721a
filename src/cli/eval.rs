//! `eval`: the study's validation table on a site's own labeled images.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::config::DEFAULT_MODEL_DIR;
use crate::eval::Dataset;
use crate::eval::report::{Excluded, ScoredCase, evaluate, markdown, write_all};
use crate::frame::LumaFrame;
use crate::geometry::Rect;
use crate::preprocess::Preprocessor;
use crate::roi::{Roi, RoiSelector};
use crate::screen::{ScreenLocator, ScreenState};

#[derive(clap::Args)]
pub struct Args {
    /// Directory the `file` column is relative to (default: the labels file's directory).
    #[arg(long)]
    data: Option<PathBuf>,
    /// CSV: file,label[,reader_*...][,patient_id][,fold].
    #[arg(long)]
    labels: PathBuf,
    #[arg(long, default_value = DEFAULT_MODEL_DIR)]
    model: PathBuf,
    /// Report directory (report.md, report.json, scores.csv, roc.png, roc.svg).
    #[arg(long, default_value = "out/eval")]
    out: PathBuf,
    /// Images are already-cropped kidney ROIs (skip screen location and the guide box).
    #[arg(long)]
    roi_input: bool,
    /// Scanner image rectangle x,y,width,height in pixels (default: detect per image).
    #[arg(long, value_parser = parse_rect)]
    image_rect: Option<Rect>,
    /// Guide box relative to the image area: x,y,width,height.
    #[arg(long, value_parser = crate::cli::simulate::parse_relative)]
    guide: Option<crate::geometry::RelativeRect>,
    /// Decision threshold (default: the manifest's).
    #[arg(long)]
    threshold: Option<f64>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub(crate) fn parse_rect(s: &str) -> Result<Rect, String> {
    let v: Vec<u32> =
        s.split(',').map(|p| p.trim().parse::<u32>().map_err(|e| format!("{p:?}: {e}"))).collect::<Result<_, _>>()?;
    let [x, y, width, height] = v[..] else { return Err(format!("expected x,y,width,height, got {s:?}")) };
    Ok(Rect::new(x, y, width, height))
}

pub fn run(args: Args) -> Result<()> {
    let dataset = Dataset::load(&args.labels, args.data.as_deref())?;
    let mut model = crate::setup::load_model(&args.model)?;
    let manifest = model.manifest().clone();
    let threshold = args.threshold.unwrap_or(f64::from(manifest.decision.threshold));
    anyhow::ensure!(threshold > 0.0 && threshold < 1.0, "--threshold {threshold} must be within (0, 1)");
    let mut pre = Preprocessor::new(manifest.input.width, manifest.input.height, manifest.normalization)?;
    let selector = RoiSelector::new(args.guide.unwrap_or(crate::config::DEFAULT_GUIDE))?;
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(dataset.rows.len() as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} images  {elapsed} elapsed, {eta} left")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut cases = Vec::with_capacity(dataset.rows.len());
    let mut excluded = Vec::new();
    for row in &dataset.rows {
        bar.inc(1);
        let scored = (|| -> Result<std::result::Result<(Roi, f64), String>> {
            let frame = LumaFrame::load(&row.file)?;
            let roi = if args.roi_input {
                Roi(Rect::new(0, 0, frame.width(), frame.height()))
            } else {
                // A fresh locator per image: images are independent, no temporal lock.
                match ScreenLocator::new(args.image_rect).locate(&frame) {
                    ScreenState::Image(area) => selector.select(area, frame.width(), frame.height())?,
                    ScreenState::NoImage => return Ok(Err("no B-mode image found on the screen".into())),
                    ScreenState::NoSignal => return Ok(Err("not a scanner screen (flat or noise)".into())),
                    // Only on frames converted in part, which a file never is.
                    ScreenState::Relocating => anyhow::bail!("image area moving on a frame read whole"),
                }
            };
            let p = model.probability(pre.run(&frame, roi)?)?;
            Ok(Ok((roi, f64::from(p))))
        })()
        .with_context(|| format!("{}", row.file.display()))?;
        match scored {
            Ok((roi, p)) => cases.push(ScoredCase {
                file: row.file.clone(),
                label: row.label,
                model: p,
                readers: row.readers.clone(),
                patient: row.patient.clone(),
                fold: row.fold.clone(),
                roi: Some(roi.rect()),
            }),
            Err(reason) => excluded.push(Excluded { file: row.file.clone(), reason }),
        }
    }
    bar.finish_and_clear();
    let report = evaluate(&cases, &dataset.reader_names, threshold, &manifest.id, &manifest.sha256, excluded)?;
    write_all(&args.out, &report, &cases, &dataset.reader_names)?;
    println!("{}", markdown(&report));
    println!("wrote {}/report.md, report.json, scores.csv, roc.png, roc.svg", args.out.display());
    Ok(())
}
