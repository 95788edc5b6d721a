//! Board / scanner profile (TOML), validated once at start-up in two stages: parse into raw
//! structs that reject unknown keys, then check values and combinations, with errors that name
//! the file and the key.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;

use crate::capture::{LumaRange, PixelFormat};
use crate::display::Panel;
use crate::geometry::{Rect, RelativeRect};
use crate::model::OperatingPoint;

/// Where frames come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    V4l2 { device: PathBuf, width: u32, height: u32, formats: Vec<PixelFormat>, timeout_ms: u64, luma_range: LumaRange },
    Simulated { seed: u64, hd1080: bool, frames_per_patient: u32 },
    Images { path: PathBuf, looping: bool },
    Raw { path: PathBuf, format: PixelFormat, width: u32, height: u32, luma_range: LumaRange, looping: bool },
    Mjpeg { path: PathBuf, looping: bool },
}

/// The three LEDs (`[indicator.gpio]`).
#[derive(Debug, Clone, PartialEq)]
pub struct GpioLeds {
    pub backend: GpioBackend,
    /// BCM GPIO numbers (rppal), or line offsets on `chip` (cdev).
    pub green: u16,
    pub amber: u16,
    pub red: u16,
    pub active_low: bool,
}

/// What drives the LED lines (`[indicator.gpio] backend`).
#[derive(Debug, Clone, PartialEq)]
pub enum GpioBackend {
    /// rppal: Raspberry Pi only (Pi 1..5); pins are BCM numbers 0..27. The default.
    Rppal,
    /// The Linux GPIO character device, any board: lines are offsets 0..511 on `chip`.
    Cdev { chip: PathBuf },
}

impl GpioLeds {
    /// The lines with their keys, for messages and clash checks.
    pub fn named_lines(&self) -> [(&'static str, u16); 3] {
        [
            ("[indicator.gpio] green", self.green),
            ("[indicator.gpio] amber", self.amber),
            ("[indicator.gpio] red", self.red),
        ]
    }
}

/// Highest line offset accepted for backend = "cdev" (a chip has at most a few hundred lines).
pub const MAX_CDEV_LINE: u16 = 511;

/// The optional status display (`[display]`).
#[derive(Debug, Clone, PartialEq)]
pub struct DisplayConfig {
    pub sink: DisplaySinkConfig,
    /// True: a display that cannot be opened stops start-up. False (default): a warning, and
    /// the LEDs / console carry on alone.
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DisplaySinkConfig {
    /// SPI TFT panel driven directly (Raspberry Pi SPI + GPIO).
    Spi(SpiPanelConfig),
    /// Linux framebuffer device; geometry and pixel format come from the device.
    Framebuffer { device: PathBuf },
    /// PNG file rewritten (atomically) after each change: tests, demos, remote viewing.
    Png { path: PathBuf, width: u32, height: u32 },
}

/// An SPI panel. `width` x `height` is the panel's native size (rotation 0); rotated 90 or 270
/// degrees the screen is `height` x `width`.
#[derive(Debug, Clone, PartialEq)]
pub struct SpiPanelConfig {
    pub panel: Panel,
    pub width: u16,
    pub height: u16,
    /// Degrees clockwise: 0, 90, 180 or 270.
    pub rotation: u16,
    /// /dev/spidev{spi_bus}.{spi_cs}
    pub spi_bus: u8,
    pub spi_cs: u8,
    pub spi_hz: u32,
    pub spi_mode: u8,
    /// BCM GPIO numbers.
    pub dc_pin: u8,
    pub rst_pin: Option<u8>,
    pub backlight_pin: Option<u8>,
    pub invert_colors: bool,
    pub bgr: bool,
}

impl DisplayConfig {
    /// The device or file, in words, for messages.
    pub fn describe(&self) -> String {
        match &self.sink {
            DisplaySinkConfig::Spi(s) => format!(
                "{} SPI display on /dev/spidev{}.{} (DC GPIO {})",
                s.panel.name(),
                s.spi_bus,
                s.spi_cs,
                s.dc_pin
            ),
            DisplaySinkConfig::Framebuffer { device } => format!("framebuffer display {}", device.display()),
            DisplaySinkConfig::Png { path, .. } => format!("PNG display file {}", path.display()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub board: String,
    pub source: SourceConfig,
    pub image_rect: Option<Rect>,
    /// The capture frame size `image_rect` was measured on, when the source has a fixed size.
    pub image_rect_frame: Option<(u32, u32)>,
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
    /// `[audit] max_bytes`: audit.jsonl is rotated before it would pass this size.
    pub audit_max_bytes: u64,
    /// `[audit] keep`: rotated audit files kept (`audit.1.jsonl` .. `audit.<keep>.jsonl`).
    pub audit_keep: usize,
    /// `[model] public_key`: ed25519 key (32 bytes) the model manifest's signature
    /// (`manifest.toml.sig`) must verify with; None: no signature check.
    pub model_public_key: Option<[u8; 32]>,
    pub display: Option<DisplayConfig>,
}

pub const DEFAULT_GUIDE: RelativeRect = RelativeRect { x: 0.12, y: 0.2, width: 0.76, height: 0.68 };
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
    display: Option<RawDisplay>,
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
    public_key: Option<String>,
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
    backend: Option<String>,
    chip: Option<PathBuf>,
    // Wide, so that an out-of-range number is reported with its key.
    green: i64,
    amber: i64,
    red: i64,
    #[serde(default)]
    active_low: bool,
}

impl RawGpio {
    fn validate(self) -> Result<GpioLeds> {
        let lines = [("green", self.green), ("amber", self.amber), ("red", self.red)];
        let backend = match self.backend.as_deref().unwrap_or("rppal") {
            "rppal" => {
                ensure!(
                    self.chip.is_none(),
                    "[indicator.gpio] `chip` does not apply to backend = \"rppal\" (BCM numbers): use backend = \"cdev\""
                );
                for (name, pin) in lines {
                    ensure!(
                        (0..=i64::from(MAX_BCM_PIN)).contains(&pin),
                        "[indicator.gpio] {name} = {pin} is not a header GPIO (0..{MAX_BCM_PIN})"
                    );
                }
                GpioBackend::Rppal
            }
            "cdev" => {
                let chip = self.chip.context(
                    "[indicator.gpio] backend = \"cdev\" needs `chip`, e.g. \"/dev/gpiochip0\" (`gpiodetect` lists them)",
                )?;
                ensure!(
                    chip.is_absolute(),
                    "[indicator.gpio] chip = {:?} must be an absolute path such as /dev/gpiochip0",
                    chip.display().to_string()
                );
                for (name, line) in lines {
                    ensure!(
                        (0..=i64::from(MAX_CDEV_LINE)).contains(&line),
                        "[indicator.gpio] {name} = {line} is not a line offset (0..{MAX_CDEV_LINE})"
                    );
                }
                GpioBackend::Cdev { chip }
            }
            other => bail!("[indicator.gpio] backend = {other:?} is unknown (rppal, cdev)"),
        };
        ensure!(
            self.green != self.amber && self.amber != self.red && self.green != self.red,
            "[indicator.gpio] green, amber and red must be different pins"
        );
        // In range (checked above).
        let line = |v: i64| v as u16;
        Ok(GpioLeds {
            backend,
            green: line(self.green),
            amber: line(self.amber),
            red: line(self.red),
            active_low: self.active_low,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    dir: Option<PathBuf>,
    sync: Option<bool>,
    max_bytes: Option<u64>,
    keep: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisplay {
    sink: String,
    device: Option<PathBuf>,
    path: Option<PathBuf>,
    panel: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    rotation: Option<u32>,
    spi_bus: Option<u8>,
    spi_cs: Option<u8>,
    spi_hz: Option<u32>,
    spi_mode: Option<u8>,
    dc_pin: Option<u8>,
    rst_pin: Option<u8>,
    backlight_pin: Option<u8>,
    invert_colors: Option<bool>,
    bgr: Option<bool>,
    required: Option<bool>,
}

/// Smallest screen the status layout is drawn for.
pub const MIN_DISPLAY_SIDE: u32 = 240;
pub const DEFAULT_SPI_HZ: u32 = 40_000_000;

impl RawDisplay {
    fn validate(self, leds: Option<&GpioLeds>) -> Result<DisplayConfig> {
        let sink = self.sink.as_str();
        // Keys that only make sense for other sinks are mistakes, not silently ignored.
        let spi_only = [
            ("panel", self.panel.is_some()),
            ("rotation", self.rotation.is_some()),
            ("spi_bus", self.spi_bus.is_some()),
            ("spi_cs", self.spi_cs.is_some()),
            ("spi_hz", self.spi_hz.is_some()),
            ("spi_mode", self.spi_mode.is_some()),
            ("dc_pin", self.dc_pin.is_some()),
            ("rst_pin", self.rst_pin.is_some()),
            ("backlight_pin", self.backlight_pin.is_some()),
            ("invert_colors", self.invert_colors.is_some()),
            ("bgr", self.bgr.is_some()),
        ];
        let not_for = |keys: &[(&str, bool)]| -> Result<()> {
            match keys.iter().find(|(_, set)| *set) {
                Some((key, _)) => bail!("[display] `{key}` does not apply to sink = {sink:?}"),
                None => Ok(()),
            }
        };
        let sink_config = match sink {
            "spi" => {
                not_for(&[("device", self.device.is_some()), ("path", self.path.is_some())])?;
                let panel = match self.panel.as_deref() {
                    None => bail!("[display] sink = \"spi\" needs `panel` (st7789, ili9341)"),
                    Some(name) => Panel::from_name(name)
                        .with_context(|| format!("[display] panel = {name:?} is unknown (st7789, ili9341)"))?,
                };
                let (default_w, default_h) = panel.default_size();
                let width = self.width.unwrap_or(u32::from(default_w));
                let height = self.height.unwrap_or(u32::from(default_h));
                let (max_w, max_h) = panel.max_size();
                ensure!(
                    (MIN_DISPLAY_SIDE..=u32::from(max_w)).contains(&width)
                        && (MIN_DISPLAY_SIDE..=u32::from(max_h)).contains(&height),
                    "[display] width x height = {width}x{height}: a {} panel is at most {max_w}x{max_h} \
                     (native size, rotation 0) and the status screen needs at least {MIN_DISPLAY_SIDE}x{MIN_DISPLAY_SIDE}",
                    panel.name()
                );
                let rotation = self.rotation.unwrap_or(0);
                ensure!(
                    matches!(rotation, 0 | 90 | 180 | 270),
                    "[display] rotation = {rotation} must be 0, 90, 180 or 270"
                );
                let spi_bus = self.spi_bus.unwrap_or(0);
                ensure!(spi_bus <= 6, "[display] spi_bus = {spi_bus} must be within 0..6");
                let spi_cs = self.spi_cs.unwrap_or(0);
                ensure!(spi_cs <= 2, "[display] spi_cs = {spi_cs} must be within 0..2");
                let spi_hz = self.spi_hz.unwrap_or(DEFAULT_SPI_HZ);
                ensure!(
                    (1_000_000..=125_000_000).contains(&spi_hz),
                    "[display] spi_hz = {spi_hz} must be within 1000000..125000000"
                );
                let spi_mode = self.spi_mode.unwrap_or(0);
                ensure!(spi_mode <= 3, "[display] spi_mode = {spi_mode} must be within 0..3");
                let dc_pin = self.dc_pin.context("[display] sink = \"spi\" needs `dc_pin` (BCM GPIO number)")?;
                let pins = [("dc_pin", Some(dc_pin)), ("rst_pin", self.rst_pin), ("backlight_pin", self.backlight_pin)];
                let mut taken: Vec<(&str, u8)> = Vec::new();
                if let Some(g) = leds {
                    // BCM numbers with rppal; with cdev on a Pi's header chip the offsets are too.
                    taken.extend(
                        g.named_lines().into_iter().filter_map(|(key, line)| Some((key, u8::try_from(line).ok()?))),
                    );
                }
                if spi_bus == 0 {
                    // SPI0's own lines: MISO, MOSI, SCLK and the chip select in use.
                    let ce = if spi_cs == 0 { 8 } else { 7 };
                    taken.extend([("SPI0 MISO", 9), ("SPI0 MOSI", 10), ("SPI0 SCLK", 11), ("SPI0 chip select", ce)]);
                }
                for (key, pin) in pins {
                    let Some(pin) = pin else { continue };
                    ensure!(pin <= MAX_BCM_PIN, "[display] {key} = {pin} is not a header GPIO (0..27)");
                    if let Some((other, _)) = taken.iter().find(|(_, p)| *p == pin) {
                        bail!("[display] {key} = {pin} is already used by {other}");
                    }
                    taken.push((key, pin));
                }
                DisplaySinkConfig::Spi(SpiPanelConfig {
                    panel,
                    width: width as u16,
                    height: height as u16,
                    rotation: rotation as u16,
                    spi_bus,
                    spi_cs,
                    spi_hz,
                    spi_mode,
                    dc_pin,
                    rst_pin: self.rst_pin,
                    backlight_pin: self.backlight_pin,
                    invert_colors: self.invert_colors.unwrap_or(panel.default_inverted()),
                    bgr: self.bgr.unwrap_or(panel.default_bgr()),
                })
            }
            "framebuffer" => {
                not_for(&spi_only)?;
                not_for(&[
                    ("path", self.path.is_some()),
                    ("width", self.width.is_some()),
                    ("height", self.height.is_some()),
                ])?;
                DisplaySinkConfig::Framebuffer { device: self.device.unwrap_or_else(|| PathBuf::from("/dev/fb0")) }
            }
            "png" => {
                not_for(&spi_only)?;
                not_for(&[("device", self.device.is_some())])?;
                let path = self.path.context("[display] sink = \"png\" needs `path`")?;
                let width = self.width.unwrap_or(MIN_DISPLAY_SIDE);
                let height = self.height.unwrap_or(MIN_DISPLAY_SIDE);
                ensure!(
                    (MIN_DISPLAY_SIDE..=4096).contains(&width) && (MIN_DISPLAY_SIDE..=4096).contains(&height),
                    "[display] width x height = {width}x{height} must be within {MIN_DISPLAY_SIDE}..4096 each"
                );
                DisplaySinkConfig::Png { path, width, height }
            }
            other => bail!("[display] sink = {other:?} is unknown (spi, framebuffer, png)"),
        };
        Ok(DisplayConfig { sink: sink_config, required: self.required.unwrap_or(false) })
    }
}

/// Highest BCM GPIO number on a Raspberry Pi header.
const MAX_BCM_PIN: u8 = 27;

/// `[audit] max_bytes` bounds: 4 KiB (a few records) .. 1 TiB.
pub const AUDIT_MIN_BYTES: u64 = 4096;
pub const AUDIT_MAX_BYTES: u64 = 1 << 40;
/// `[audit] keep` upper bound.
pub const AUDIT_MAX_KEEP: usize = 1000;

/// An ed25519 public key written as 64 hex digits.
pub fn parse_public_key(text: &str) -> Result<[u8; 32]> {
    let text = text.trim();
    ensure!(
        text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()),
        "an ed25519 public key is 64 hex digits (got {} characters)",
        text.chars().count()
    );
    let mut key = [0u8; 32];
    hex::decode_to_slice(text, &mut key)?;
    Ok(key)
}

/// toml's own message spans several lines (with a source excerpt); logs and the CLI want one.
fn one_line_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end().replace('\n', "; ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", one_line_toml_error(text, &e)))?;
        raw.validate()
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config> {
        let c = self.capture;
        let need_path =
            |what: &str| c.path.clone().with_context(|| format!("[capture] source = \"{what}\" needs `path`"));
        let source = match c.source.as_str() {
            "v4l2" => {
                let width = c.width.context("[capture] source = \"v4l2\" needs `width`")?;
                let height = c.height.context("[capture] source = \"v4l2\" needs `height`")?;
                ensure!(
                    (160..=4096).contains(&width) && (120..=2160).contains(&height),
                    "[capture] width x height {width}x{height} is out of range (160..4096 x 120..2160)"
                );
                let formats =
                    c.formats.unwrap_or_else(|| vec![PixelFormat::Mjpeg, PixelFormat::Yuyv, PixelFormat::Nv12]);
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
            "images" => SourceConfig::Images { path: need_path("images")?, looping: c.looping.unwrap_or(false) },
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
            "mjpeg" => SourceConfig::Mjpeg { path: need_path("mjpeg")?, looping: c.looping.unwrap_or(false) },
            other => bail!("[capture] source = {other:?} is unknown (v4l2, simulated, images, raw, mjpeg)"),
        };
        let frame_size = match &source {
            SourceConfig::V4l2 { width, height, .. } | SourceConfig::Raw { width, height, .. } => {
                Some((*width, *height))
            }
            SourceConfig::Simulated { hd1080, .. } => Some(if *hd1080 { (1920, 1080) } else { (1280, 720) }),
            _ => None,
        };
        if let (Some(rect), Some((w, h))) = (self.screen.image_rect, frame_size) {
            ensure!(rect.fits_in(w, h), "[screen] image_rect {rect} lies outside the {w}x{h} capture frame");
        }
        let guide = self.roi.guide.unwrap_or(DEFAULT_GUIDE);
        guide.validate().context("[roi] guide")?;
        let threads = self.model.threads.unwrap_or(1);
        ensure!((1..=16).contains(&threads), "[model] threads = {threads} must be within 1..16");
        let model_public_key = match &self.model.public_key {
            None => None,
            Some(key) => Some(parse_public_key(key).context("[model] public_key")?),
        };
        let audit_max_bytes = self.audit.max_bytes.unwrap_or(crate::audit::DEFAULT_MAX_BYTES);
        ensure!(
            (AUDIT_MIN_BYTES..=AUDIT_MAX_BYTES).contains(&audit_max_bytes),
            "[audit] max_bytes = {audit_max_bytes} must be within {AUDIT_MIN_BYTES}..{AUDIT_MAX_BYTES}"
        );
        let audit_keep = self.audit.keep.unwrap_or(crate::audit::DEFAULT_KEEP);
        ensure!(
            (1..=AUDIT_MAX_KEEP).contains(&audit_keep),
            "[audit] keep = {audit_keep} must be within 1..{AUDIT_MAX_KEEP}"
        );
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
                let op = OperatingPoint { threshold, indeterminate: band.unwrap_or([threshold, threshold]) };
                crate::model::validate_operating_point(&op).context("[decision]")?;
                Some(op)
            }
            (None, Some(_)) => bail!("[decision] indeterminate needs threshold too"),
        };
        let gpio = match self.indicator.gpio {
            None => None,
            Some(g) => Some(g.validate()?),
        };
        let display = match self.display {
            None => None,
            Some(d) => Some(d.validate(gpio.as_ref())?),
        };
        Ok(Config {
            board: self.board.unwrap_or_else(|| "unnamed".into()),
            source,
            image_rect: self.screen.image_rect,
            image_rect_frame: frame_size,
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
            audit_max_bytes,
            audit_keep,
            model_public_key,
            display,
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
            ("[capture]\nsource = \"simulated\"\n[decision]\nk = 7\nn = 6\n", "[decision] k = 7"),
            ("[capture]\nsource = \"simulated\"\n[decision]\nthreshold = 1.5\n", "threshold"),
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

    #[test]
    fn gpio_backends() {
        let rppal = Config::parse(&format!("{MINIMAL}[indicator.gpio]\ngreen = 17\namber = 27\nred = 22\n")).unwrap();
        let g = rppal.gpio.unwrap();
        assert_eq!((g.backend, g.green, g.amber, g.red, g.active_low), (GpioBackend::Rppal, 17, 27, 22, false));
        let cdev = Config::parse(&format!(
            "{MINIMAL}[indicator.gpio]\nbackend = \"cdev\"\nchip = \"/dev/gpiochip1\"\ngreen = 300\namber = 11\nred = 12\nactive_low = true\n"
        ))
        .unwrap();
        assert_eq!(
            cdev.gpio.unwrap(),
            GpioLeds {
                backend: GpioBackend::Cdev { chip: PathBuf::from("/dev/gpiochip1") },
                green: 300,
                amber: 11,
                red: 12,
                active_low: true,
            }
        );
        let gpio = "[indicator.gpio]\ngreen = 17\namber = 27\nred = 22\n";
        let cases = [
            (format!("{gpio}backend = \"sysfs\"\n"), "backend = \"sysfs\" is unknown"),
            (format!("{gpio}chip = \"/dev/gpiochip0\"\n"), "`chip` does not apply to backend = \"rppal\""),
            (format!("{gpio}backend = \"cdev\"\n"), "needs `chip`"),
            (format!("{gpio}backend = \"cdev\"\nchip = \"gpiochip0\"\n"), "absolute path"),
            (
                "[indicator.gpio]\nbackend = \"cdev\"\nchip = \"/dev/gpiochip0\"\ngreen = 512\namber = 1\nred = 2\n"
                    .into(),
                "green = 512",
            ),
            (
                "[indicator.gpio]\nbackend = \"cdev\"\nchip = \"/dev/gpiochip0\"\ngreen = 5\namber = 1\nred = 5\n"
                    .into(),
                "different pins",
            ),
            ("[indicator.gpio]\ngreen = 17\namber = 28\nred = 22\n".into(), "amber = 28 is not a header GPIO"),
            ("[indicator.gpio]\ngreen = 17\namber = 27\nred = 70000\n".into(), "red = 70000"),
            ("[indicator.gpio]\ngreen = -1\namber = 27\nred = 22\n".into(), "green = -1"),
        ];
        for (section, needle) in cases {
            let err = format!("{:#}", Config::parse(&format!("{MINIMAL}{section}")).unwrap_err());
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
    }

    #[test]
    fn display_sections_parse_with_defaults() {
        assert_eq!(Config::parse(MINIMAL).unwrap().display, None);
        let spi = Config::parse(&format!(
            "{MINIMAL}[display]\nsink = \"spi\"\npanel = \"st7789\"\nrotation = 90\ndc_pin = 25\nrst_pin = 24\nbacklight_pin = 18\nrequired = true\n"
        ))
        .unwrap()
        .display
        .unwrap();
        assert!(spi.required);
        let DisplaySinkConfig::Spi(p) = spi.sink else { panic!("{spi:?}") };
        assert_eq!(
            p,
            SpiPanelConfig {
                panel: Panel::St7789,
                width: 240,
                height: 240,
                rotation: 90,
                spi_bus: 0,
                spi_cs: 0,
                spi_hz: DEFAULT_SPI_HZ,
                spi_mode: 0,
                dc_pin: 25,
                rst_pin: Some(24),
                backlight_pin: Some(18),
                invert_colors: true,
                bgr: false,
            }
        );
        let ili = Config::parse(&format!(
            "{MINIMAL}[display]\nsink = \"spi\"\npanel = \"ILI9341\"\nspi_bus = 1\nspi_cs = 2\nspi_hz = 32000000\nspi_mode = 3\ndc_pin = 9\ninvert_colors = true\nbgr = false\n"
        ))
        .unwrap()
        .display
        .unwrap();
        let DisplaySinkConfig::Spi(p) = ili.sink else { panic!() };
        assert_eq!(
            (p.panel, p.width, p.height, p.spi_bus, p.spi_cs, p.spi_hz, p.spi_mode),
            (Panel::Ili9341, 240, 320, 1, 2, 32_000_000, 3)
        );
        assert!(p.invert_colors && !p.bgr && !ili.required);
        let fb = Config::parse(&format!("{MINIMAL}[display]\nsink = \"framebuffer\"\n")).unwrap().display.unwrap();
        assert_eq!(fb.sink, DisplaySinkConfig::Framebuffer { device: PathBuf::from("/dev/fb0") });
        assert!(!fb.required);
        let fb1 =
            Config::parse(&format!("{MINIMAL}[display]\nsink = \"framebuffer\"\ndevice = \"/dev/fb1\"\n")).unwrap();
        assert!(fb1.display.unwrap().describe().contains("/dev/fb1"));
        let png =
            Config::parse(&format!("{MINIMAL}[display]\nsink = \"png\"\npath = \"out/status.png\"\nheight = 320\n"))
                .unwrap();
        assert_eq!(
            png.display.unwrap().sink,
            DisplaySinkConfig::Png { path: PathBuf::from("out/status.png"), width: 240, height: 320 }
        );
    }

    #[test]
    fn display_errors_name_the_key() {
        let spi = "[display]\nsink = \"spi\"\npanel = \"st7789\"\n";
        let cases = [
            ("[display]\npanel = \"st7789\"\n", "sink"),
            ("[display]\nsink = \"hdmi\"\n", "hdmi"),
            ("[display]\nsink = \"png\"\npath = \"a.png\"\ncolour = 1\n", "colour"),
            ("[display]\nsink = \"spi\"\ndc_pin = 25\n", "panel"),
            ("[display]\nsink = \"spi\"\npanel = \"ssd1306\"\ndc_pin = 25\n", "ssd1306"),
            (spi, "dc_pin"),
            (&format!("{spi}dc_pin = 25\nrotation = 45\n"), "rotation = 45"),
            (&format!("{spi}dc_pin = 25\nwidth = 135\n"), "width x height = 135x240"),
            (&format!("{spi}dc_pin = 25\nheight = 480\n"), "width x height"),
            (&format!("{spi}dc_pin = 25\nspi_bus = 7\n"), "spi_bus = 7"),
            (&format!("{spi}dc_pin = 25\nspi_cs = 3\n"), "spi_cs = 3"),
            (&format!("{spi}dc_pin = 25\nspi_hz = 1000\n"), "spi_hz = 1000"),
            (&format!("{spi}dc_pin = 25\nspi_mode = 4\n"), "spi_mode = 4"),
            (&format!("{spi}dc_pin = 28\n"), "dc_pin = 28"),
            (&format!("{spi}dc_pin = 25\nrst_pin = 25\n"), "rst_pin = 25 is already used by dc_pin"),
            (&format!("{spi}dc_pin = 10\n"), "dc_pin = 10 is already used by SPI0 MOSI"),
            (&format!("{spi}dc_pin = 25\npath = \"x.png\"\n"), "`path` does not apply to sink = \"spi\""),
            (
                &format!("[indicator.gpio]\ngreen = 17\namber = 27\nred = 22\n{spi}dc_pin = 22\n"),
                "dc_pin = 22 is already used by [indicator.gpio] red",
            ),
            ("[display]\nsink = \"framebuffer\"\ndc_pin = 25\n", "`dc_pin` does not apply to sink = \"framebuffer\""),
            ("[display]\nsink = \"framebuffer\"\nwidth = 320\n", "`width` does not apply"),
            ("[display]\nsink = \"png\"\n", "needs `path`"),
            ("[display]\nsink = \"png\"\npath = \"a.png\"\ndevice = \"/dev/fb0\"\n", "`device` does not apply"),
            ("[display]\nsink = \"png\"\npath = \"a.png\"\nwidth = 100\n", "width x height = 100x240"),
            ("[display]\nsink = \"png\"\npath = \"a.png\"\nrequired = \"yes\"\n", "expected a boolean"),
        ];
        for (section, needle) in cases {
            let err = format!("{:#}", Config::parse(&format!("{MINIMAL}{section}")).unwrap_err());
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
    }
}
