//! Builds the pipeline and its source from a validated configuration.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::audit::AuditLog;
use crate::capture::FrameSource;
use crate::capture::replay::{ImageReplay, MjpegReplay, RawReplay};
use crate::capture::simulated::SimulatedSource;
use crate::config::{Config, SourceConfig};
use crate::decision::Stabilizer;
use crate::indicator::{ConsoleIndicator, Fanout, Indicator, JsonEvents};
use crate::model::{Classifier, OperatingPoint};
use crate::pipeline::{Pipeline, Stages};
use crate::roi::RoiSelector;
use crate::screen::ScreenLocator;
use crate::simulator::ScreenLayout;

/// Finds a model directory: as given, else relative to the executable (an installed tarball
/// keeps models/ beside bin/), else relative to the source tree (cargo run).
pub fn resolve_model_dir(dir: &Path) -> PathBuf {
    if dir.exists() || dir.is_absolute() {
        return dir.to_path_buf();
    }
    let candidates = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|p| p.to_path_buf()))
        .into_iter()
        .flat_map(|bin| [bin.join(dir), bin.join("..").join(dir)])
        .chain(std::iter::once(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)));
    for c in candidates {
        if c.join(crate::model::MANIFEST_FILE).exists() {
            return c;
        }
    }
    dir.to_path_buf()
}

/// Loads the model from a directory (as given, beside the executable, or in the source tree).
pub fn load_model(dir: &Path) -> Result<Classifier> {
    load_model_verified(dir, None)
}

/// Loads the model; with a public key, the manifest's signature must verify against it.
pub fn load_model_verified(dir: &Path, public_key: Option<&[u8; 32]>) -> Result<Classifier> {
    let dir = resolve_model_dir(dir);
    Classifier::load_verified(&dir, public_key).with_context(|| format!("cannot load model from {}", dir.display()))
}

pub fn open_source(source: &SourceConfig) -> Result<Box<dyn FrameSource + Send>> {
    Ok(match source {
        SourceConfig::Simulated { seed, hd1080, frames_per_patient } => {
            let layout = if *hd1080 { ScreenLayout::Hd1080 } else { ScreenLayout::Hd720 };
            Box::new(SimulatedSource::new(*seed, layout, *frames_per_patient, None))
        }
        SourceConfig::Images { path, looping } => Box::new(ImageReplay::open(path, *looping)?),
        SourceConfig::Raw { path, format, width, height, luma_range, looping } => {
            Box::new(RawReplay::open(path, *format, *luma_range, *width, *height, *looping)?)
        }
        SourceConfig::Mjpeg { path, looping } => Box::new(MjpegReplay::open(path, *looping)?),
        #[cfg(target_os = "linux")]
        SourceConfig::V4l2 { device, width, height, formats, timeout_ms, luma_range } => {
            Box::new(crate::capture::v4l2::V4l2Source::open(crate::capture::v4l2::V4l2Settings {
                device: device.clone(),
                width: *width,
                height: *height,
                formats: formats.clone(),
                timeout: std::time::Duration::from_millis(*timeout_ms),
                luma_range: *luma_range,
            })?)
        }
        #[cfg(not(target_os = "linux"))]
        SourceConfig::V4l2 { .. } => anyhow::bail!("V4L2 capture needs Linux"),
    })
}

/// Indicators named by the configuration, plus `extra` (the demo's printer). `op` is the
/// operating point in force, drawn on the status display's probability bar.
pub fn open_indicators(
    config: &Config,
    op: &OperatingPoint,
    extra: Option<Box<dyn Indicator>>,
) -> Result<Box<dyn Indicator>> {
    let mut all: Vec<Box<dyn Indicator>> = Vec::new();
    if config.console && extra.is_none() {
        all.push(Box::new(ConsoleIndicator::new(std::io::stdout(), false)));
    }
    if let Some(extra) = extra {
        all.push(extra);
    }
    if let Some(path) = &config.json_events {
        let out: Box<dyn std::io::Write> = if path.as_os_str() == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open JSON events file {}", path.display()))?,
            )
        };
        all.push(Box::new(JsonEvents::new(out)));
    }
    #[cfg(target_os = "linux")]
    if let Some(g) = &config.gpio {
        all.push(open_gpio_leds(g)?);
    }
    #[cfg(not(target_os = "linux"))]
    if config.gpio.is_some() {
        anyhow::bail!("[indicator.gpio] needs Linux (rppal on a Raspberry Pi, or a GPIO character device)");
    }
    if let Some(display) = &config.display {
        match crate::display::open(display, *op) {
            Ok(d) => all.push(d),
            Err(e) if display.required => {
                return Err(e.context("the status display is required ([display] required = true)"));
            }
            Err(e) => log::warn!("{e:#}; going on without the status display ([display] required = false)"),
        }
    }
    Ok(Box::new(Fanout(all)))
}

/// The three LEDs through the configured backend (with the lamp test).
#[cfg(target_os = "linux")]
fn open_gpio_leds(g: &crate::config::GpioLeds) -> Result<Box<dyn Indicator>> {
    use crate::config::GpioBackend;
    Ok(match &g.backend {
        GpioBackend::Rppal => {
            // Validated as BCM numbers 0..27.
            let bcm = |(key, line): (&str, u16)| u8::try_from(line).with_context(|| format!("{key} = {line}"));
            let [green, amber, red] = g.named_lines().map(bcm);
            Box::new(crate::indicator::led::rpi::open_leds(green?, amber?, red?, g.active_low)?)
        }
        GpioBackend::Cdev { chip } => Box::new(crate::indicator::gpiocdev::open_leds(
            chip,
            u32::from(g.green),
            u32::from(g.amber),
            u32::from(g.red),
            g.active_low,
        )?),
    })
}

/// Everything but the source: model, stages, indicators, audit.
pub fn build_pipeline(config: &Config, source_name: String, extra: Option<Box<dyn Indicator>>) -> Result<Pipeline> {
    crate::model::use_threads(config.threads)?;
    let model = load_model_verified(&config.model_dir, config.model_public_key.as_ref())?;
    let op = config.operating_point.unwrap_or(model.manifest().decision);
    let audit = match &config.audit_dir {
        Some(dir) => Some(AuditLog::open_with(dir, crate::audit::AuditOptions::from_config(config))?),
        None => None,
    };
    Pipeline::new(Stages {
        locator: ScreenLocator::new(config.image_rect).measured_on(config.image_rect_frame),
        roi: RoiSelector::new(config.guide)?,
        model,
        op: config.operating_point,
        stabilizer: Stabilizer::new(config.k, config.n)?,
        indicator: open_indicators(config, &op, extra)?,
        audit,
        source_name,
    })
}
