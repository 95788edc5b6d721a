//! `classify`: one-shot probability and verdict per image.

use std::path::PathBuf;

use anyhow::Result;

use crate::config::DEFAULT_MODEL_DIR;
use crate::frame::LumaFrame;
use crate::geometry::Rect;
use crate::preprocess::Preprocessor;
use crate::roi::{Roi, RoiSelector};
use crate::screen::{ScreenLocator, ScreenState};

#[derive(clap::Args)]
pub struct Args {
    /// Image files: full scanner screens, or ROIs with --roi-input.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[arg(long, default_value = DEFAULT_MODEL_DIR)]
    model: PathBuf,
    /// Treat each image as an already-cropped kidney ROI.
    #[arg(long)]
    roi_input: bool,
    /// Guide box relative to the image area: x,y,width,height.
    #[arg(long, value_parser = crate::cli::simulate::parse_relative)]
    guide: Option<crate::geometry::RelativeRect>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let mut model = crate::setup::load_model(&args.model)?;
    let m = model.manifest().clone();
    let mut pre = Preprocessor::new(m.input.width, m.input.height, m.normalization)?;
    let selector = RoiSelector::new(args.guide.unwrap_or(crate::config::DEFAULT_GUIDE))?;
    let mut failures = 0;
    for path in &args.images {
        let result = (|| -> Result<Option<(Rect, f32)>> {
            let frame = LumaFrame::load(path)?;
            let roi = if args.roi_input {
                Roi(Rect::new(0, 0, frame.width(), frame.height()))
            } else {
                match ScreenLocator::new(None).locate(&frame) {
                    ScreenState::Image(area) => selector.select(area, frame.width(), frame.height())?,
                    _ => return Ok(None),
                }
            };
            let p = model.probability(pre.run(&frame, roi)?)?;
            Ok(Some((roi.rect(), p)))
        })();
        match result {
            Ok(Some((roi, p))) => {
                let verdict = crate::decision::classify(&m.decision, p);
                if args.json {
                    println!("{}", serde_json::json!({"file": path, "roi": roi, "probability": p, "verdict": verdict}));
                } else {
                    println!("{}\tp(ESRD)={p:.6}\t{}\tROI {roi}", path.display(), verdict.label());
                }
            }
            Ok(None) => {
                if args.json {
                    println!("{}", serde_json::json!({"file": path, "verdict": "NO_IMAGE"}));
                } else {
                    println!("{}\t-\tNO IMAGE", path.display());
                }
            }
            // One image: its error is the command's error (one line, naming the file).
            Err(e) if args.images.len() == 1 => return Err(e),
            Err(e) => {
                failures += 1;
                eprintln!("error: {}: {e:#}", path.display());
            }
        }
    }
    anyhow::ensure!(failures == 0, "{failures} of {} images could not be classified", args.images.len());
    Ok(())
}
