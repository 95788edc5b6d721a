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

use std::time::Duration;

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

/// The bar, the thumbnail and the frames-agreeing line are redrawn at most this often; a
/// change of the shown verdict is drawn at once, with whatever else is pending. Ten updates a
/// second is more than anyone reads off a bar, and an SPI panel takes about 5 ms to take a new
/// thumbnail (18 kB at 32 MHz) that would otherwise be sent with every frame.
pub const DEFAULT_REFRESH: Duration = Duration::from_millis(100);

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
    /// Least time between redraws of the regions other than the verdict banner.
    refresh: Duration,
    /// Uptime at which those regions were last brought up to date.
    refreshed_at: Duration,
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
        Ok(Self {
            canvas: Canvas::new(size),
            layout: Layout::new(size),
            sink,
            op,
            drawn: None,
            backlight_on: false,
            refresh: DEFAULT_REFRESH,
            refreshed_at: Duration::ZERO,
        })
    }

    /// Sets the least time between redraws of the bar, thumbnail and agreeing count
    /// ([`DEFAULT_REFRESH`]); zero redraws them with every frame.
    pub fn with_refresh(mut self, refresh: Duration) -> Self {
        self.refresh = refresh;
        self
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

    /// Draws `s`, flushing only what changed (the regions other than the banner at most once per
    /// refresh interval, by `s.uptime`). Returns whether anything was sent to the sink.
    pub fn update(&mut self, s: &IndicatorState<'_>) -> Result<bool> {
        let now = Drawn {
            verdict: s.verdict,
            milli: render::quantize(s.probability),
            agreeing: s.agreeing,
            window: s.window,
            model: hash_str(s.model_id),
            roi: s.roi.is_some(),
        };
        match self.draw(&now, s) {
            Ok((shown, flushed)) => {
                self.drawn = Some(shown);
                Ok(flushed)
            }
            Err(e) => {
                // A failed flush leaves the panel unknown: redraw everything next time.
                self.drawn = None;
                Err(e)
            }
        }
    }

    /// Draws what is due of `now`; returns what the panel then shows and whether anything was
    /// flushed.
    fn draw(&mut self, now: &Drawn, s: &IndicatorState<'_>) -> Result<(Drawn, bool)> {
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
            self.refreshed_at = s.uptime;
            return Ok((*now, true));
        };
        let verdict_changed = last.verdict != now.verdict;
        let refresh_due = verdict_changed || s.uptime.saturating_sub(self.refreshed_at) >= self.refresh;
        canvas.take_dirty();
        let mut region = |draw: &mut dyn FnMut(&mut Canvas)| -> Result<bool> {
            draw(&mut *canvas);
            let Some(area) = canvas.take_dirty() else { return Ok(false) };
            self.sink.flush_region(canvas, area)?;
            Ok(true)
        };
        let banner = verdict_changed && region(&mut |c| render::draw_banner(c, layout, now.verdict))?;
        let mut others = false;
        if refresh_due {
            if last.milli != now.milli {
                let op = self.op;
                others |= region(&mut |c| render::draw_bar(c, layout, &op, now.milli))?;
            }
            // ROI pixels change nearly every frame: redraw, and let the canvas tell what changed.
            if now.roi || last.roi {
                others |= region(&mut |c| render::draw_thumb(c, layout, s.roi))?;
            }
            if (last.agreeing, last.window, last.model) != (now.agreeing, now.window, now.model) {
                others |= region(&mut |c| render::draw_info(c, layout, now.agreeing, now.window, s.model_id))?;
            }
        }
        if banner || others {
            self.sink.present()?;
        }
        // The interval runs from the last redraw: a change after a quiet spell shows at once.
        if others {
            self.refreshed_at = s.uptime;
        }
        let shown = if refresh_due { *now } else { Drawn { verdict: now.verdict, ..last } };
        Ok((shown, banner || others))
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
