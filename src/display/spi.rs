//! SPI TFT sink: ST7789 / ILI9341 panels through mipidsi, over any embedded-hal 1.0 `SpiDevice`
//! plus a data/command `OutputPin` (rppal on a Raspberry Pi, embedded-hal-mock in tests).
//!
//! mipidsi does the panel's init sequence, orientation (MADCTL) and the address-window offsets
//! of panels smaller than the controller's memory; [`PanelBus`] is the 4-wire interface under
//! it: command bytes with DC low, parameters and pixels with DC high, pixels in chunks of at
//! most [`CHUNK`] bytes (Linux spidev's default transfer limit) from one buffer allocated once.

use anyhow::{Result, anyhow};
use embedded_graphics::pixelcolor::{Rgb565, Rgb888};
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;
use embedded_hal::digital::OutputPin;
use embedded_hal::spi::SpiDevice;
use mipidsi::interface::{Interface, InterfaceKind};
use mipidsi::models::Model;
use mipidsi::options::{ColorInversion, ColorOrder, Orientation, Rotation};
use mipidsi::{Builder, Display, NoResetPin};

use super::{Canvas, DisplaySink};

/// Largest single SPI write.
pub const CHUNK: usize = 4096;

/// Error of the SPI bus or the DC pin.
#[derive(Debug)]
pub enum BusError<S, P> {
    Spi(S),
    Dc(P),
}

/// MIPI DBI type C option 3 (4-wire SPI) for mipidsi, owning its pixel buffer.
pub struct PanelBus<SPI, DC> {
    spi: SPI,
    dc: DC,
    buffer: Box<[u8]>,
}

impl<SPI: SpiDevice, DC: OutputPin> PanelBus<SPI, DC> {
    pub fn new(spi: SPI, dc: DC) -> Self {
        Self { spi, dc, buffer: vec![0; CHUNK].into_boxed_slice() }
    }

    pub fn release(self) -> (SPI, DC) {
        (self.spi, self.dc)
    }

    fn write(&mut self, n: usize) -> Result<(), BusError<SPI::Error, DC::Error>> {
        self.spi.write(&self.buffer[..n]).map_err(BusError::Spi)
    }
}

impl<SPI: SpiDevice, DC: OutputPin> Interface for PanelBus<SPI, DC> {
    type Word = u8;
    type Error = BusError<SPI::Error, DC::Error>;

    const KIND: InterfaceKind = InterfaceKind::Serial4Line;

    fn send_command(&mut self, command: u8, args: &[u8]) -> Result<(), Self::Error> {
        self.dc.set_low().map_err(BusError::Dc)?;
        self.spi.write(&[command]).map_err(BusError::Spi)?;
        self.dc.set_high().map_err(BusError::Dc)?;
        if !args.is_empty() {
            self.spi.write(args).map_err(BusError::Spi)?;
        }
        Ok(())
    }

    fn send_pixels<const N: usize>(&mut self, pixels: impl IntoIterator<Item = [u8; N]>) -> Result<(), Self::Error> {
        let mut filled = 0;
        for px in pixels {
            if filled + N > self.buffer.len() {
                self.write(filled)?;
                filled = 0;
            }
            self.buffer[filled..filled + N].copy_from_slice(&px);
            filled += N;
        }
        if filled > 0 {
            self.write(filled)?;
        }
        Ok(())
    }

    fn send_repeated_pixel<const N: usize>(&mut self, pixel: [u8; N], count: u32) -> Result<(), Self::Error> {
        self.send_pixels(core::iter::repeat_n(pixel, count as usize))
    }
}

/// How the panel is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PanelSettings {
    /// Native size (rotation 0).
    pub width: u16,
    pub height: u16,
    /// Degrees clockwise: 0, 90, 180, 270.
    pub rotation: u16,
    pub invert_colors: bool,
    pub bgr: bool,
}

/// A mipidsi builder for `model` on `spi` + `dc`, set up from `settings`. Add a reset pin with
/// `.reset_pin(..)` (without one the panel gets a software reset), then `.init(&mut delay)`.
pub fn builder<SPI, DC, M>(
    spi: SPI,
    dc: DC,
    model: M,
    settings: &PanelSettings,
) -> Builder<PanelBus<SPI, DC>, M, NoResetPin>
where
    SPI: SpiDevice,
    DC: OutputPin,
    M: Model<ColorFormat = Rgb565>,
{
    let rotation = match settings.rotation {
        90 => Rotation::Deg90,
        180 => Rotation::Deg180,
        270 => Rotation::Deg270,
        _ => Rotation::Deg0,
    };
    Builder::new(model, PanelBus::new(spi, dc))
        .display_size(settings.width, settings.height)
        .orientation(Orientation::new().rotate(rotation))
        .invert_colors(if settings.invert_colors { ColorInversion::Inverted } else { ColorInversion::Normal })
        .color_order(if settings.bgr { ColorOrder::Bgr } else { ColorOrder::Rgb })
}

/// An initialised panel and its optional backlight pin.
pub struct SpiSink<SPI, DC, M, RST, BL>
where
    SPI: SpiDevice,
    DC: OutputPin,
    M: Model<ColorFormat = Rgb565>,
    RST: OutputPin,
    BL: OutputPin,
{
    display: Display<PanelBus<SPI, DC>, M, RST>,
    backlight: Option<BL>,
}

impl<SPI, DC, M, RST, BL> SpiSink<SPI, DC, M, RST, BL>
where
    SPI: SpiDevice,
    DC: OutputPin,
    M: Model<ColorFormat = Rgb565>,
    RST: OutputPin,
    BL: OutputPin,
{
    /// Takes a display from [`builder`]`(..).init(..)`. The backlight stays off until the
    /// first screen is drawn.
    pub fn new(display: Display<PanelBus<SPI, DC>, M, RST>, mut backlight: Option<BL>) -> Result<Self> {
        if let Some(bl) = &mut backlight {
            bl.set_low().map_err(|e| anyhow!("backlight pin: {e:?}"))?;
        }
        Ok(Self { display, backlight })
    }

    pub fn release(self) -> (Display<PanelBus<SPI, DC>, M, RST>, Option<BL>) {
        (self.display, self.backlight)
    }
}

impl<SPI, DC, M, RST, BL> DisplaySink for SpiSink<SPI, DC, M, RST, BL>
where
    SPI: SpiDevice,
    DC: OutputPin,
    M: Model<ColorFormat = Rgb565>,
    RST: OutputPin,
    BL: OutputPin,
{
    fn size(&self) -> Size {
        self.display.size()
    }

    fn flush_region(&mut self, canvas: &Canvas, area: Rectangle) -> Result<()> {
        let area = area.intersection(&canvas.bounds()).intersection(&self.display.bounding_box());
        let Some(br) = area.bottom_right() else { return Ok(()) };
        let (x0, y0, w) = (area.top_left.x as u32, area.top_left.y as u32, area.size.width);
        let pixels =
            (y0..=br.y as u32).flat_map(|y| canvas.row_span(y, x0, w).iter()).map(|c: &Rgb888| Rgb565::from(*c));
        self.display
            .set_pixels(x0 as u16, y0 as u16, br.x as u16, br.y as u16, pixels)
            .map_err(|e| anyhow!("SPI display write failed: {e:?}"))
    }

    fn set_backlight(&mut self, on: bool) -> Result<()> {
        if let Some(bl) = &mut self.backlight {
            if on { bl.set_high() } else { bl.set_low() }.map_err(|e| anyhow!("backlight pin: {e:?}"))?;
        }
        Ok(())
    }
}

/// The panel on a Raspberry Pi: rppal's SPI and GPIO.
#[cfg(target_os = "linux")]
pub mod rpi {
    use anyhow::{Context, Result, anyhow};
    use mipidsi::models::{ILI9341Rgb565, Model, ST7789};
    use rppal::gpio::{Gpio, OutputPin};
    use rppal::spi::{Bus, Mode, SimpleHalSpiDevice, SlaveSelect, Spi};

    use super::{PanelSettings, SpiSink, builder};
    use crate::config::SpiPanelConfig;
    use crate::display::{DisplaySink, Panel};

    fn pin(gpio: &Gpio, bcm: u8, what: &str) -> Result<OutputPin> {
        let mut pin = gpio
            .get(bcm)
            .with_context(|| format!("cannot claim GPIO {bcm} for the display's {what}"))?
            .into_output_low();
        pin.set_reset_on_drop(true);
        Ok(pin)
    }

    fn init<M>(
        model: M,
        spi: SimpleHalSpiDevice,
        dc: OutputPin,
        rst: Option<OutputPin>,
        bl: Option<OutputPin>,
        settings: &PanelSettings,
    ) -> Result<Box<dyn DisplaySink>>
    where
        M: Model<ColorFormat = embedded_graphics::pixelcolor::Rgb565> + 'static,
    {
        let mut delay = rppal::hal::Delay::new();
        let b = builder(spi, dc, model, settings);
        Ok(match rst {
            Some(rst) => Box::new(SpiSink::new(
                b.reset_pin(rst).init(&mut delay).map_err(|e| anyhow!("panel init failed: {e:?}"))?,
                bl,
            )?),
            None => Box::new(SpiSink::new(b.init(&mut delay).map_err(|e| anyhow!("panel init failed: {e:?}"))?, bl)?),
        })
    }

    /// Opens /dev/spidev{bus}.{cs} and the DC / reset / backlight pins, and inits the panel.
    pub fn open(c: &SpiPanelConfig) -> Result<Box<dyn DisplaySink>> {
        let bus = match c.spi_bus {
            0 => Bus::Spi0,
            1 => Bus::Spi1,
            2 => Bus::Spi2,
            3 => Bus::Spi3,
            4 => Bus::Spi4,
            5 => Bus::Spi5,
            _ => Bus::Spi6,
        };
        let cs = match c.spi_cs {
            0 => SlaveSelect::Ss0,
            1 => SlaveSelect::Ss1,
            _ => SlaveSelect::Ss2,
        };
        let mode = match c.spi_mode {
            0 => Mode::Mode0,
            1 => Mode::Mode1,
            2 => Mode::Mode2,
            _ => Mode::Mode3,
        };
        let spi = Spi::new(bus, cs, c.spi_hz, mode)
            .with_context(|| format!("cannot open /dev/spidev{}.{} (SPI enabled? spi group?)", c.spi_bus, c.spi_cs))?;
        let spi = SimpleHalSpiDevice::new(spi);
        let gpio = Gpio::new().context("cannot open the Raspberry Pi GPIO (/dev/gpiomem)")?;
        let dc = pin(&gpio, c.dc_pin, "DC line")?;
        let rst = c.rst_pin.map(|p| pin(&gpio, p, "reset line")).transpose()?;
        let bl = c.backlight_pin.map(|p| pin(&gpio, p, "backlight")).transpose()?;
        let settings = PanelSettings {
            width: c.width,
            height: c.height,
            rotation: c.rotation,
            invert_colors: c.invert_colors,
            bgr: c.bgr,
        };
        match c.panel {
            Panel::St7789 => init(ST7789, spi, dc, rst, bl, &settings),
            Panel::Ili9341 => init(ILI9341Rgb565, spi, dc, rst, bl, &settings),
        }
    }
}

#[cfg(test)]
mod tests {
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as PinTx};
    use embedded_hal_mock::eh1::spi::{Mock as SpiMock, Transaction as SpiTx};
    use mipidsi::models::ST7789;

    use super::*;

    /// What one command puts on the wires: SPI writes (one transaction each) and DC levels.
    fn command(cmd: u8, args: &[u8], spi: &mut Vec<SpiTx<u8>>, dc: &mut Vec<PinTx>) {
        dc.push(PinTx::set(State::Low));
        spi.extend([SpiTx::transaction_start(), SpiTx::write_vec(vec![cmd]), SpiTx::transaction_end()]);
        dc.push(PinTx::set(State::High));
        if !args.is_empty() {
            spi.extend([SpiTx::transaction_start(), SpiTx::write_vec(args.to_vec()), SpiTx::transaction_end()]);
        }
    }

    fn st7789_init(madctl: u8, spi: &mut Vec<SpiTx<u8>>, dc: &mut Vec<PinTx>) {
        command(0x01, &[], spi, dc); // SWRESET (no reset pin)
        command(0x11, &[], spi, dc); // SLPOUT
        command(0x36, &[madctl], spi, dc); // MADCTL
        command(0x21, &[], spi, dc); // INVON
        command(0x3A, &[0x55], spi, dc); // COLMOD 16 bpp
        command(0x13, &[], spi, dc); // NORON
        command(0x29, &[], spi, dc); // DISPON
    }

    fn settings(rotation: u16) -> PanelSettings {
        PanelSettings { width: 240, height: 240, rotation, invert_colors: true, bgr: false }
    }

    #[test]
    fn st7789_init_then_region_flush_is_caset_raset_ramwr_and_pixels() {
        let (mut spi_tx, mut dc_tx) = (Vec::new(), Vec::new());
        st7789_init(0x00, &mut spi_tx, &mut dc_tx);
        // A 2x2 region at (10, 20): big-endian RGB565, red then white on each row.
        command(0x2A, &[0, 10, 0, 11], &mut spi_tx, &mut dc_tx); // CASET 10..=11
        command(0x2B, &[0, 20, 0, 21], &mut spi_tx, &mut dc_tx); // RASET 20..=21
        command(0x2C, &[], &mut spi_tx, &mut dc_tx); // RAMWR
        spi_tx.extend([
            SpiTx::transaction_start(),
            SpiTx::write_vec(vec![0xF8, 0x00, 0xFF, 0xFF, 0xF8, 0x00, 0xFF, 0xFF]),
            SpiTx::transaction_end(),
        ]);
        let bl_tx = [PinTx::set(State::Low), PinTx::set(State::High), PinTx::set(State::Low)];
        let (mut spi, mut dc, mut bl) = (SpiMock::new(&spi_tx), PinMock::new(&dc_tx), PinMock::new(&bl_tx));

        let display = builder(spi.clone(), dc.clone(), ST7789, &settings(0)).init(&mut NoopDelay::new()).unwrap();
        let mut sink = SpiSink::new(display, Some(bl.clone())).unwrap();
        assert_eq!(sink.size(), Size::new(240, 240));
        let mut canvas = Canvas::new(Size::new(240, 240));
        canvas.fill_rect(&Rectangle::new(Point::new(10, 20), Size::new(1, 2)), Rgb888::RED);
        canvas.fill_rect(&Rectangle::new(Point::new(11, 20), Size::new(1, 2)), Rgb888::WHITE);
        let dirty = canvas.take_dirty().unwrap();
        sink.flush_region(&canvas, dirty).unwrap();
        sink.set_backlight(true).unwrap();
        sink.set_backlight(false).unwrap();
        spi.done();
        dc.done();
        bl.done();
    }

    #[test]
    fn rotated_240x240_st7789_gets_the_row_offset() {
        // 240x240 glass on a 240x320 controller, upside down: rows start at 80.
        let (mut spi_tx, mut dc_tx) = (Vec::new(), Vec::new());
        st7789_init(0xC0, &mut spi_tx, &mut dc_tx); // MY | MX
        command(0x2A, &[0, 0, 0, 0], &mut spi_tx, &mut dc_tx);
        command(0x2B, &[0, 80, 0, 80], &mut spi_tx, &mut dc_tx);
        command(0x2C, &[], &mut spi_tx, &mut dc_tx);
        spi_tx.extend([SpiTx::transaction_start(), SpiTx::write_vec(vec![0x00, 0x1F]), SpiTx::transaction_end()]);
        let (mut spi, mut dc) = (SpiMock::new(&spi_tx), PinMock::new(&dc_tx));
        let display = builder(spi.clone(), dc.clone(), ST7789, &settings(180)).init(&mut NoopDelay::new()).unwrap();
        let mut sink: SpiSink<_, _, _, _, PinMock> = SpiSink::new(display, None).unwrap();
        let mut canvas = Canvas::new(Size::new(240, 240));
        canvas.fill_rect(&Rectangle::new(Point::zero(), Size::new(1, 1)), Rgb888::BLUE);
        let dirty = canvas.take_dirty().unwrap();
        sink.flush_region(&canvas, dirty).unwrap();
        spi.done();
        dc.done();
    }

    #[test]
    fn large_regions_go_out_in_chunks() {
        let (mut spi_tx, mut dc_tx) = (Vec::new(), Vec::new());
        st7789_init(0x00, &mut spi_tx, &mut dc_tx);
        command(0x2A, &[0, 0, 0, 239], &mut spi_tx, &mut dc_tx);
        command(0x2B, &[0, 0, 0, 239], &mut spi_tx, &mut dc_tx);
        command(0x2C, &[], &mut spi_tx, &mut dc_tx);
        let mut left = 240 * 240 * 2;
        while left > 0 {
            let n = left.min(CHUNK);
            spi_tx.extend([SpiTx::transaction_start(), SpiTx::write_vec(vec![0; n]), SpiTx::transaction_end()]);
            left -= n;
        }
        let (mut spi, mut dc) = (SpiMock::new(&spi_tx), PinMock::new(&dc_tx));
        let display = builder(spi.clone(), dc.clone(), ST7789, &settings(0)).init(&mut NoopDelay::new()).unwrap();
        let mut sink: SpiSink<_, _, _, _, PinMock> = SpiSink::new(display, None).unwrap();
        let canvas = Canvas::new(Size::new(240, 240));
        sink.flush_region(&canvas, canvas.bounds()).unwrap();
        spi.done();
        dc.done();
    }
}
