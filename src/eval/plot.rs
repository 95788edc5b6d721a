//! ROC figure: model and readers in one plot, AUCs in the legend (PNG and SVG).

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

/// DejaVu Sans, embedded so the PNG renders the same on any board (no fontconfig needed).
static FONT: &[u8] = include_bytes!("fonts/DejaVuSans.ttf");

pub struct Curve {
    pub name: String,
    pub auc: f64,
    pub points: Vec<(f64, f64)>,
}

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The font is compiled in and known to parse.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, plotters::coord::Shift>, title: &str, curves: &[Curve]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(42)
        .y_label_area_size(52)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("1 - specificity (false positive rate)")
        .y_desc("sensitivity (true positive rate)")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            ShapeStyle::from(&RGBColor(170, 170, 170)).stroke_width(1),
        ))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let palette = [
        RGBColor(200, 30, 30),
        RGBColor(30, 90, 200),
        RGBColor(20, 150, 60),
        RGBColor(150, 60, 170),
        RGBColor(220, 130, 0),
    ];
    for (i, c) in curves.iter().enumerate() {
        let color = palette[i % palette.len()];
        chart
            .draw_series(LineSeries::new(c.points.iter().copied(), color.stroke_width(3)))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .label(format!("{} (AUC {:.3})", c.name, c.auc))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

/// Writes `stem.png` and `stem.svg`.
pub fn roc_figure(stem: &Path, title: &str, curves: &[Curve]) -> Result<()> {
    register_font();
    let (w, h) = (720u32, 640u32);
    let svg = stem.with_extension("svg");
    draw(SVGBackend::new(&svg, (w, h)).into_drawing_area(), title, curves)
        .with_context(|| format!("cannot draw {}", svg.display()))?;
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    draw(BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area(), title, curves)
        .with_context(|| "cannot draw the ROC bitmap")?;
    let png = stem.with_extension("png");
    image::save_buffer(&png, &rgb, w, h, image::ExtendedColorType::Rgb8)
        .with_context(|| format!("cannot write {}", png.display()))?;
    Ok(())
}
