//! Board / scanner profile (TOML), validated once at start-up in two stages: parse into raw
//! structs that reject unknown keys, then check values and combinations, with errors that name
//! the file and the key.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;

use crate::capture::{LumaRange, PixelFormat};
use crate::geometry::{Rect, RelativeRect};
use crate::model::OperatingPoint;

/// Where frames come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    V4l2 {
        device: PathBuf,
        width: u32,
        height: u32,
        formats: Vec<PixelFormat>,
        timeout_ms: u64,
        luma_range: LumaRange,
    },
    Simulated {
        seed: u64,
        hd1080: bool,
        frames_per_patient: u32,
    },
    Images {
        path: PathBuf,
        looping: bool,
    },
    Raw {
        path: PathBuf,
        format: PixelFormat,
        width: u32,
        height: u32,
        luma_range: LumaRange,
        looping: bool,
    },
    Mjpeg {
        path: PathBuf,
        looping: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct GpioLeds {
    pub green: u8,
    pub amber: u8,
    pub red: u8,
    pub active_low: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub board: String,
    pub source: SourceConfig,
    pub image_rect: Option<Rect>,
    pub guide: RelativeRect,
    pub model_dir: PathBuf,
    pub threads: usize,
    pub k: usize,
    pub n: usize,
    pub operating_point: Option<OperatingPoint>,
    pub console: bool,
    pub json_events: Option<PathBuf>,
    pub gpio: Option<GpioLeds>,
    pub audit_dir: Option<PathBuf>,
    pub audit_sync: bool,
}

pub const DEFAULT_GUIDE: RelativeRect = RelativeRect {
    x: 0.12,
    y: 0.2,
    width: 0.76,
    height: 0.68,
};
pub const DEFAULT_MODEL_DIR: &str = "models/densenet121-kidney-sim";
pub const DEFAULT_K: usize = 4;
pub const DEFAULT_N: usize = 6;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    board: Option<String>,
    capture: RawCapture,
    #[serde(default)]
    screen: RawScreen,
    #[serde(default)]
    roi: RawRoi,
    #[serde(default)]
    model: RawModel,
    #[serde(default)]
    decision: RawDecision,
    #[serde(default)]
    indicator: RawIndicator,
    #[serde(default)]
    audit: RawAudit,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapture {
    source: String,
    device: Option<PathBuf>,
    path: Option<PathBuf>,
    width: Option<u32>,
    height: Option<u32>,
    formats: Option<Vec<PixelFormat>>,
    format: Option<PixelFormat>,
    timeout_ms: Option<u64>,
    luma_range: Option<LumaRange>,
    #[serde(rename = "loop")]
    looping: Option<bool>,
    seed: Option<u64>,
    frames_per_patient: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawScreen {
    image_rect: Option<Rect>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRoi {
    guide: Option<RelativeRect>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawModel {
    dir: Option<PathBuf>,
    threads: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDecision {
    k: Option<usize>,
    n: Option<usize>,
    threshold: Option<f32>,
    indeterminate: Option<[f32; 2]>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIndicator {
    console: Option<bool>,
    json_events: Option<PathBuf>,
    gpio: Option<RawGpio>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGpio {
    green: u8,
    amber: u8,
    red: u8,
    #[serde(default)]
    active_low: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    dir: Option<PathBuf>,
    sync: Option<bool>,
}

/// Highest BCM GPIO number on a Raspberry Pi header.
const MAX_BCM_PIN: u8 = 27;

impl Config {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
        raw.validate()
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config> {
        let c = self.capture;
        let need_path = |what: &str| c.path.clone().with_context(|| format!("[capture] source = \"{what}\" needs `path`"));
        let source = match c.source.as_str() {
            "v4l2" => {
                let width = c.width.context("[capture] source = \"v4l2\" needs `width`")?;
                let height = c.height.context("[capture] source = \"v4l2\" needs `height`")?;
                ensure!(
                    (160..=4096).contains(&width) && (120..=2160).contains(&height),
                    "[capture] width x height {width}x{height} is out of range (160..4096 x 120..2160)"
                );
                let formats = c.formats.unwrap_or_else(|| vec![PixelFormat::Mjpeg, PixelFormat::Yuyv, PixelFormat::Nv12]);
                ensure!(!formats.is_empty(), "[capture] formats must list at least one format");
                let timeout_ms = c.timeout_ms.unwrap_or(2000);
                ensure!(
                    (50..=60_000).contains(&timeout_ms),
                    "[capture] timeout_ms = {timeout_ms} must be within 50..60000"
                );
                SourceConfig::V4l2 {
                    device: c.device.unwrap_or_else(|| PathBuf::from("/dev/video0")),
                    width,
                    height,
                    formats,
                    timeout_ms,
                    luma_range: c.luma_range.unwrap_or_default(),
                }
            }
            "simulated" => SourceConfig::Simulated {
                seed: c.seed.unwrap_or(7),
                hd1080: match (c.width, c.height) {
                    (None, None) | (Some(1280), Some(720)) => false,
                    (Some(1920), Some(1080)) => true,
                    (w, h) => bail!("[capture] the simulated source is 1280x720 or 1920x1080 (got {w:?}x{h:?})"),
                },
                frames_per_patient: c.frames_per_patient.unwrap_or(24).max(1),
            },
            "images" => SourceConfig::Images {
                path: need_path("images")?,
                looping: c.looping.unwrap_or(false),
            },
            "raw" => {
                let format = c.format.context("[capture] source = \"raw\" needs `format` (YUYV, NV12, GREY, RGB3)")?;
                ensure!(format != PixelFormat::Mjpeg, "[capture] raw dumps cannot be MJPEG: use source = \"mjpeg\"");
                SourceConfig::Raw {
                    path: need_path("raw")?,
                    format,
                    width: c.width.context("[capture] source = \"raw\" needs `width`")?,
                    height: c.height.context("[capture] source = \"raw\" needs `height`")?,
                    luma_range: c.luma_range.unwrap_or_default(),
                    looping: c.looping.unwrap_or(false),
                }
            }
            "mjpeg" => SourceConfig::Mjpeg {
                path: need_path("mjpeg")?,
                looping: c.looping.unwrap_or(false),
            },
            other => bail!("[capture] source = {other:?} is unknown (v4l2, simulated, images, raw, mjpeg)"),
        };
        let frame_size = match &source {
            SourceConfig::V4l2 { width, height, .. } | SourceConfig::Raw { width, height, .. } => Some((*width, *height)),
            SourceConfig::Simulated { hd1080, .. } => Some(if *hd1080 { (1920, 1080) } else { (1280, 720) }),
            _ => None,
        };
        if let (Some(rect), Some((w, h))) = (self.screen.image_rect, frame_size) {
            ensure!(
                rect.fits_in(w, h),
                "[screen] image_rect {rect} lies outside the {w}x{h} capture frame"
            );
        }
        let guide = self.roi.guide.unwrap_or(DEFAULT_GUIDE);
        guide.validate().context("[roi] guide")?;
        let threads = self.model.threads.unwrap_or(1);
        ensure!((1..=16).contains(&threads), "[model] threads = {threads} must be within 1..16");
        let k = self.decision.k.unwrap_or(DEFAULT_K);
        let n = self.decision.n.unwrap_or(DEFAULT_N);
        ensure!(
            (1..=crate::decision::MAX_WINDOW).contains(&n) && (1..=n).contains(&k),
            "[decision] k = {k}, n = {n}: need 1 <= k <= n <= {}",
            crate::decision::MAX_WINDOW
        );
        let operating_point = match (self.decision.threshold, self.decision.indeterminate) {
            (None, None) => None,
            (Some(threshold), band) => {
                let op = OperatingPoint {
                    threshold,
                    indeterminate: band.unwrap_or([threshold, threshold]),
                };
                crate::model::validate_operating_point(&op).context("[decision]")?;
                Some(op)
            }
            (None, Some(_)) => bail!("[decision] indeterminate needs threshold too"),
        };
        let gpio = match self.indicator.gpio {
            None => None,
            Some(g) => {
                for (name, pin) in [("green", g.green), ("amber", g.amber), ("red", g.red)] {
                    ensure!(pin <= MAX_BCM_PIN, "[indicator.gpio] {name} = {pin} is not a header GPIO (0..27)");
                }
                ensure!(
                    g.green != g.amber && g.amber != g.red && g.green != g.red,
                    "[indicator.gpio] green, amber and red must be different pins"
                );
                Some(GpioLeds {
                    green: g.green,
                    amber: g.amber,
                    red: g.red,
                    active_low: g.active_low,
                })
            }
        };
        Ok(Config {
            board: self.board.unwrap_or_else(|| "unnamed".into()),
            source,
            image_rect: self.screen.image_rect,
            guide,
            model_dir: self.model.dir.unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL_DIR)),
            threads,
            k,
            n,
            operating_point,
            console: self.indicator.console.unwrap_or(true),
            json_events: self.indicator.json_events,
            gpio,
            audit_dir: self.audit.dir,
            audit_sync: self.audit.sync.unwrap_or(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[capture]\nsource = \"simulated\"\n";

    #[test]
    fn minimal_profile_gets_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.k, DEFAULT_K);
        assert_eq!(c.guide, DEFAULT_GUIDE);
        assert!(c.audit_sync);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[capture]\nsource = \"v4l2\"\n", "width"),
            ("[capture]\nsource = \"simulated\"\nbogus = 1\n", "bogus"),
            ("[capture]\nsource = \"warp\"\n", "warp"),
            (
                "[capture]\nsource = \"simulated\"\n[decision]\nk = 7\nn = 6\n",
                "[decision] k = 7",
            ),
            (
                "[capture]\nsource = \"simulated\"\n[decision]\nthreshold = 1.5\n",
                "threshold",
            ),
            (
                "[capture]\nsource = \"simulated\"\n[screen]\nimage_rect = { x = 1000, y = 0, width = 400, height = 100 }\n",
                "image_rect",
            ),
            (
                "[capture]\nsource = \"simulated\"\n[roi]\nguide = { x = 0.5, y = 0.0, width = 0.8, height = 0.5 }\n",
                "[roi] guide",
            ),
            (
                "[capture]\nsource = \"simulated\"\n[indicator.gpio]\ngreen = 17\namber = 17\nred = 22\n",
                "different pins",
            ),
            ("[capture\nsource = 1", "invalid"),
        ];
        for (text, needle) in cases {
            let err = format!("{:#}", Config::parse(text).unwrap_err());
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
    }
}
