//! `prepare`: turns a site's labelled scanner screenshots into model-sized ROIs for training,
//! through the same screen location, guide box and resize as the live pipeline, so training
//! and the device see the same pixels.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, ensure};

use crate::eval::Dataset;
use crate::frame::LumaFrame;
use crate::geometry::Rect;
use crate::preprocess::{Normalization, Preprocessor};
use crate::roi::{Roi, RoiSelector};
use crate::screen::{ScreenLocator, ScreenState};

#[derive(clap::Args)]
pub struct Args {
    /// CSV: file,label[,patient_id][,fold] (other columns are ignored).
    #[arg(long)]
    labels: PathBuf,
    /// Directory the `file` column is relative to (default: the labels file's directory).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output directory: rois/*.png and labels.csv.
    #[arg(long)]
    out: PathBuf,
    /// Side of the square ROI (the model input size).
    #[arg(long, default_value_t = 128)]
    size: u32,
    /// Images are already-cropped kidney ROIs: only resize them.
    #[arg(long)]
    roi_input: bool,
    /// Scanner image rectangle x,y,width,height in pixels (default: detect per image).
    #[arg(long, value_parser = crate::cli::eval::parse_rect)]
    image_rect: Option<Rect>,
    /// Guide box relative to the image area: x,y,width,height.
    #[arg(long, value_parser = crate::cli::simulate::parse_relative)]
    guide: Option<crate::geometry::RelativeRect>,
}

pub fn run(args: Args) -> Result<()> {
    ensure!((16..=1024).contains(&args.size), "--size {} must be within 16..1024", args.size);
    let dataset = Dataset::load(&args.labels, args.data.as_deref())?;
    let rois = args.out.join("rois");
    std::fs::create_dir_all(&rois).with_context(|| format!("cannot create {}", rois.display()))?;
    // Normalisation does not matter here: only the resized pixels are written.
    let norm = Normalization { mean: [0.0; 3], std: [1.0; 3] };
    let mut pre = Preprocessor::new(args.size, args.size, norm)?;
    let selector = RoiSelector::new(args.guide.unwrap_or(crate::config::DEFAULT_GUIDE))?;
    let csv_path = args.out.join("labels.csv");
    let mut csv = std::io::BufWriter::new(
        std::fs::File::create(&csv_path).with_context(|| format!("cannot create {}", csv_path.display()))?,
    );
    writeln!(csv, "file,label,patient_id,fold,source")?;
    let (mut written, mut skipped) = (0usize, 0usize);
    for (i, row) in dataset.rows.iter().enumerate() {
        let frame = LumaFrame::load(&row.file)?;
        let roi = if args.roi_input {
            Roi(Rect::new(0, 0, frame.width(), frame.height()))
        } else {
            match ScreenLocator::new(args.image_rect).locate(&frame) {
                ScreenState::Image(area) => selector
                    .select(area, frame.width(), frame.height())
                    .with_context(|| row.file.display().to_string())?,
                other => {
                    log::warn!("{}: skipped ({other:?})", row.file.display());
                    skipped += 1;
                    continue;
                }
            }
        };
        pre.resize_roi(&frame, roi).with_context(|| row.file.display().to_string())?;
        let stem = row.file.file_stem().map_or_else(|| "roi".into(), |s| s.to_string_lossy().into_owned());
        let name = format!("rois/{i:05}_{stem}.png");
        LumaFrame::from_vec(args.size, args.size, pre.resized().to_vec())?.save_png(&args.out.join(&name))?;
        let quote =
            |s: &str| if s.contains([',', '"']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() };
        writeln!(
            csv,
            "{},{},{},{},{}",
            quote(&name),
            if row.label { "esrd" } else { "normal" },
            quote(row.patient.as_deref().unwrap_or("")),
            quote(row.fold.as_deref().unwrap_or("")),
            quote(&row.file.display().to_string())
        )?;
        written += 1;
    }
    csv.flush().with_context(|| format!("cannot write {}", csv_path.display()))?;
    println!(
        "wrote {written} ROIs of {0}x{0} to {1} ({skipped} images without a B-mode image skipped)",
        args.size,
        args.out.display()
    );
    Ok(())
}
