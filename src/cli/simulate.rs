//! `simulate`: training and evaluation data from the scanner simulator, cut through the same
//! screen/ROI/resize code as the live pipeline.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, ensure};

use crate::frame::LumaFrame;
use crate::geometry::RelativeRect;
use crate::preprocess::{Normalization, Preprocessor};
use crate::roi::RoiSelector;
use crate::screen::{ScreenLocator, ScreenState};
use crate::simulator::{Condition, ScreenLayout, render_case_screen};

#[derive(clap::Args)]
pub struct Args {
    /// Output directory (created).
    #[arg(long)]
    out: PathBuf,
    /// Number of cases; half normal, half ESRD.
    #[arg(long, default_value_t = 100)]
    count: u32,
    /// Seed of the first case; case i uses seed + i, so disjoint ranges never share a case.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Side of the square ROI written (the model input size).
    #[arg(long, default_value_t = 128)]
    size: u32,
    /// Also write each full 1280x720 screen (screens/ subdirectory).
    #[arg(long)]
    screens: bool,
    /// Also write the ROI crop before resizing (crops/ subdirectory).
    #[arg(long)]
    crops: bool,
    /// Guide box relative to the image area: x,y,width,height.
    #[arg(long, default_value = "0.12,0.2,0.76,0.68", value_parser = parse_relative)]
    guide: RelativeRect,
}

pub fn parse_relative(s: &str) -> Result<RelativeRect, String> {
    let v: Vec<f32> =
        s.split(',').map(|p| p.trim().parse::<f32>().map_err(|e| format!("{p:?}: {e}"))).collect::<Result<_, _>>()?;
    let [x, y, width, height] = v[..] else {
        return Err(format!("expected x,y,width,height, got {s:?}"));
    };
    let r = RelativeRect { x, y, width, height };
    r.validate().map_err(|e| e.to_string())?;
    Ok(r)
}

pub fn run(args: Args) -> Result<()> {
    ensure!(args.count > 0, "--count must be > 0");
    let roi_dir = args.out.join("rois");
    std::fs::create_dir_all(&roi_dir).with_context(|| format!("cannot create {}", roi_dir.display()))?;
    for (flag, sub) in [(args.screens, "screens"), (args.crops, "crops")] {
        if flag {
            std::fs::create_dir_all(args.out.join(sub))?;
        }
    }
    let labels_path = args.out.join("labels.csv");
    let mut labels = std::io::BufWriter::new(
        std::fs::File::create(&labels_path).with_context(|| format!("cannot create {}", labels_path.display()))?,
    );
    writeln!(labels, "file,label,seed,length_cm,cortex_cm,cortex_to_liver,probe,reader_simulated,fold")?;
    let selector = RoiSelector::new(args.guide)?;
    // Normalisation does not matter here: only the resized u8 ROI is written.
    let norm = Normalization { mean: [0.0; 3], std: [1.0; 3] };
    let mut pre = Preprocessor::new(args.size, args.size, norm)?;
    let mut luma = LumaFrame::default();
    let started = std::time::Instant::now();
    for i in 0..args.count {
        let seed = args.seed + u64::from(i);
        let condition = if i % 2 == 0 { Condition::Normal } else { Condition::Esrd };
        let (case, screen) = render_case_screen(seed, condition, ScreenLayout::Hd720);
        screen.to_luma(&mut luma);
        let mut locator = ScreenLocator::new(None);
        let ScreenState::Image(area) = locator.locate(&luma) else {
            anyhow::bail!("screen locator found no image on simulated case seed {seed}");
        };
        let roi = selector.select(area, luma.width(), luma.height())?;
        pre.resize_roi(&luma, roi)?;
        let name = format!("{}_{seed:07}.png", condition.as_str());
        image::save_buffer(roi_dir.join(&name), pre.resized(), args.size, args.size, image::ExtendedColorType::L8)
            .with_context(|| format!("cannot write {name}"))?;
        if args.screens {
            let path = args.out.join("screens").join(&name);
            image::save_buffer(&path, screen.rgb(), screen.width(), screen.height(), image::ExtendedColorType::Rgb8)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        if args.crops {
            let r = roi.rect();
            let mut crop = Vec::with_capacity(r.area() as usize);
            for y in r.y..r.bottom() {
                crop.extend_from_slice(&luma.row(y)[r.x as usize..r.right() as usize]);
            }
            let path = args.out.join("crops").join(&name);
            image::save_buffer(&path, &crop, r.width, r.height, image::ExtendedColorType::L8)?;
        }
        let probe = match case.probe {
            crate::simulator::phantom::Probe::Convex { .. } => "convex",
            crate::simulator::phantom::Probe::Linear { .. } => "linear",
        };
        writeln!(
            labels,
            "rois/{name},{},{seed},{:.2},{:.2},{:.3},{probe},{},{}",
            condition.as_str(),
            case.length_cm,
            case.cortex_cm,
            case.cortex_echo / case.liver_echo,
            crate::simulator::reader::reader_score(&case, seed),
            // Five folds, each with as many normal as ESRD cases (the study reports 5 runs).
            (i / 2) % 5 + 1
        )?;
    }
    labels.flush()?;
    log::info!("wrote {} cases to {} in {:.1} s", args.count, args.out.display(), started.elapsed().as_secs_f32());
    Ok(())
}
