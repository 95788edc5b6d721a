//! The small status screen beside the LEDs (issue 6): verdict in large type and colour, p(ESRD)
//! as a bar with the threshold and indeterminate band, a thumbnail of the ROI being classified,
//! frames agreeing (k of n), model id and "Screening aid - not a diagnosis".
//!
//! [`StatusDisplay`] draws into one [`Canvas`] allocated at construction, redraws only the
//! regions whose inputs changed and pushes only the changed rectangles to a [`DisplaySink`]:
//! an SPI TFT through mipidsi ([`spi`]), a Linux framebuffer ([`framebuffer`]) or a PNG file
//! ([`png`]). It is an [`Indicator`], so it joins the LEDs in the `Fanout`.

pub mod canvas;
#[cfg(unix)]
pub mod framebuffer;
pub mod png;
mod render;
pub mod spi;
#[cfg(test)]
mod tests;

use anyhow::{Context, Result, ensure};
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;

pub use canvas::Canvas;
pub use render::{FOOTER_TEXT, verdict_colors, verdict_text};

use crate::config::{DisplayConfig, DisplaySinkConfig, MIN_DISPLAY_SIDE};
use crate::decision::Verdict;
use crate::indicator::{Indicator, IndicatorState};
use crate::model::OperatingPoint;
use render::Layout;

/// Where the status screen's pixels go.
pub trait DisplaySink {
    /// Drawable size in pixels (after any rotation).
    fn size(&self) -> Size;

    /// Sends `area` (inside `canvas`, which has this sink's size) to the screen.
    fn flush_region(&mut self, canvas: &Canvas, area: Rectangle) -> Result<()>;

    /// Called once after the regions of one update were flushed.
    fn present(&mut self) -> Result<()> {
        Ok(())
    }

    /// Backlight (or blanking) on or off, where the sink has one.
    fn set_backlight(&mut self, on: bool) -> Result<()> {
        let _ = on;
        Ok(())
    }
}

impl<S: DisplaySink + ?Sized> DisplaySink for Box<S> {
    fn size(&self) -> Size {
        (**self).size()
    }
    fn flush_region(&mut self, canvas: &Canvas, area: Rectangle) -> Result<()> {
        (**self).flush_region(canvas, area)
    }
    fn present(&mut self) -> Result<()> {
        (**self).present()
    }
    fn set_backlight(&mut self, on: bool) -> Result<()> {
        (**self).set_backlight(on)
    }
}

/// SPI panel controllers supported through mipidsi.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    St7789,
    Ili9341,
}

impl Panel {
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "st7789" => Some(Panel::St7789),
            "ili9341" => Some(Panel::Ili9341),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Panel::St7789 => "st7789",
            Panel::Ili9341 => "ili9341",
        }
    }

    /// Native size (rotation 0) of the usual modules.
    pub fn default_size(self) -> (u16, u16) {
        match self {
            Panel::St7789 => (240, 240),
            Panel::Ili9341 => (240, 320),
        }
    }

    /// The controller's frame memory.
    pub fn max_size(self) -> (u16, u16) {
        (240, 320)
    }

    /// ST7789 modules are IPS panels that need colour inversion on.
    pub fn default_inverted(self) -> bool {
        self == Panel::St7789
    }

    /// ILI9341 modules are wired BGR.
    pub fn default_bgr(self) -> bool {
        self == Panel::Ili9341
    }
}

/// What was last drawn in each region.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Drawn {
    verdict: Option<Verdict>,
    milli: Option<u16>,
    agreeing: u8,
    window: u8,
    model: u64,
    roi: bool,
}

/// The status screen as an indicator.
pub struct StatusDisplay<S: DisplaySink> {
    sink: S,
    canvas: Canvas,
    layout: Layout,
    op: OperatingPoint,
    /// None: the panel's content is unknown (start, after safe_state or a failed flush).
    drawn: Option<Drawn>,
    backlight_on: bool,
}

fn hash_str(s: &str) -> u64 {
    // FNV-1a: no allocation, stable across runs.
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

impl<S: DisplaySink> StatusDisplay<S> {
    /// Takes the sink and the operating point (threshold, indeterminate band) drawn on the bar.
    pub fn new(sink: S, op: OperatingPoint) -> Result<Self> {
        let size = sink.size();
        ensure!(
            size.width >= MIN_DISPLAY_SIDE && size.height >= MIN_DISPLAY_SIDE,
            "a {}x{} display is too small for the status screen (at least {MIN_DISPLAY_SIDE}x{MIN_DISPLAY_SIDE})",
            size.width,
            size.height
        );
        Ok(Self { canvas: Canvas::new(size), layout: Layout::new(size), sink, op, drawn: None, backlight_on: false })
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    pub fn canvas(&self) -> &Canvas {
        &self.canvas
    }

    pub fn into_sink(self) -> S {
        self.sink
    }

    /// Draws `s`, flushing only what changed. Returns whether anything was sent to the sink.
    pub fn update(&mut self, s: &IndicatorState<'_>) -> Result<bool> {
        let now = Drawn {
            verdict: s.verdict,
            milli: render::quantize(s.probability),
            agreeing: s.agreeing,
            window: s.window,
            model: hash_str(s.model_id),
            roi: s.roi.is_some(),
        };
        let result = self.draw(&now, s);
        // A failed flush leaves the panel unknown: redraw everything next time.
        self.drawn = if result.is_ok() { Some(now) } else { None };
        result
    }

    fn draw(&mut self, now: &Drawn, s: &IndicatorState<'_>) -> Result<bool> {
        let (canvas, layout) = (&mut self.canvas, &self.layout);
        let Some(last) = self.drawn else {
            canvas.fill_rect(&canvas.bounds(), render::BACKGROUND);
            render::draw_banner(canvas, layout, now.verdict);
            render::draw_bar(canvas, layout, &self.op, now.milli);
            render::draw_thumb(canvas, layout, s.roi);
            render::draw_info(canvas, layout, now.agreeing, now.window, s.model_id);
            render::draw_footer(canvas, layout);
            canvas.take_dirty();
            self.sink.flush_region(&self.canvas, self.canvas.bounds())?;
            self.sink.present()?;
            if !self.backlight_on {
                self.sink.set_backlight(true)?;
                self.backlight_on = true;
            }
            return Ok(true);
        };
        canvas.take_dirty();
        let mut flushed = false;
        let mut region = |draw: &mut dyn FnMut(&mut Canvas)| -> Result<()> {
            draw(&mut *canvas);
            if let Some(area) = canvas.take_dirty() {
                self.sink.flush_region(canvas, area)?;
                flushed = true;
            }
            Ok(())
        };
        if last.verdict != now.verdict {
            region(&mut |c| render::draw_banner(c, layout, now.verdict))?;
        }
        if last.milli != now.milli {
            let op = self.op;
            region(&mut |c| render::draw_bar(c, layout, &op, now.milli))?;
        }
        // ROI pixels change nearly every frame: redraw, and let the canvas tell what changed.
        if now.roi || last.roi {
            region(&mut |c| render::draw_thumb(c, layout, s.roi))?;
        }
        if (last.agreeing, last.window, last.model) != (now.agreeing, now.window, now.model) {
            region(&mut |c| render::draw_info(c, layout, now.agreeing, now.window, s.model_id))?;
        }
        if flushed {
            self.sink.present()?;
        }
        Ok(flushed)
    }

    /// Blank "OFF" screen, backlight off.
    pub fn switch_off(&mut self) -> Result<()> {
        self.drawn = None;
        render::draw_off(&mut self.canvas);
        self.canvas.take_dirty();
        let flushed = self.sink.flush_region(&self.canvas, self.canvas.bounds()).and_then(|()| self.sink.present());
        // The backlight goes off even when the panel did not take the OFF screen.
        let backlight = self.sink.set_backlight(false);
        self.backlight_on = false;
        flushed.and(backlight)
    }
}

impl<S: DisplaySink> Indicator for StatusDisplay<S> {
    fn show(&mut self, state: &IndicatorState<'_>) -> Result<()> {
        self.update(state).map(|_| ())
    }

    fn safe_state(&mut self) -> Result<()> {
        self.switch_off()
    }
}

/// Opens the display the profile names. Errors name the device.
pub fn open(config: &DisplayConfig, op: OperatingPoint) -> Result<Box<dyn Indicator>> {
    let what = config.describe();
    let sink: Box<dyn DisplaySink> = match &config.sink {
        DisplaySinkConfig::Png { path, width, height } => Box::new(
            png::PngSink::new(path, Size::new(*width, *height)).with_context(|| format!("cannot open {what}"))?,
        ),
        #[cfg(target_os = "linux")]
        DisplaySinkConfig::Framebuffer { device } => {
            Box::new(framebuffer::FramebufferSink::open(device).with_context(|| format!("cannot open {what}"))?)
        }
        #[cfg(target_os = "linux")]
        DisplaySinkConfig::Spi(panel) => spi::rpi::open(panel).with_context(|| format!("cannot open {what}"))?,
        #[cfg(not(target_os = "linux"))]
        _ => anyhow::bail!("the {what} needs Linux"),
    };
    let display = StatusDisplay::new(sink, op).with_context(|| format!("cannot use {what}"))?;
    log::info!("status display: {what}, {}x{}", display.canvas.size().width, display.canvas.size().height);
    Ok(Box::new(display))
}
