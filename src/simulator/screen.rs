//! Scanner screen compositor: puts a B-mode image on a 1280x720 or 1920x1080 screen with the UI
//! chrome a real scanner draws around it (header text, depth ruler, grey bar, logo), so screen
//! location is tested against what a capture dongle really sees.

use embedded_graphics::{
    mono_font::{MonoTextStyle, ascii::FONT_6X10, ascii::FONT_10X20},
    pixelcolor::Rgb888,
    prelude::*,
    primitives::{Circle, PrimitiveStyle, Rectangle},
    text::Text,
};

use crate::frame::LumaFrame;
use crate::geometry::Rect;

/// Supported screen layouts (size and where the scanner puts its image).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScreenLayout {
    Hd720,
    Hd1080,
}

impl ScreenLayout {
    pub fn size(self) -> (u32, u32) {
        match self {
            ScreenLayout::Hd720 => (1280, 720),
            ScreenLayout::Hd1080 => (1920, 1080),
        }
    }

    /// Where the scanner draws the B-mode image: left of centre, with chrome on every side.
    pub fn image_rect(self) -> Rect {
        match self {
            ScreenLayout::Hd720 => Rect::new(260, 96, 640, 520),
            ScreenLayout::Hd1080 => Rect::new(390, 144, 960, 780),
        }
    }
}

/// An RGB888 canvas that embedded-graphics can draw on.
pub struct RgbCanvas {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl RgbCanvas {
    pub fn new(width: u32, height: u32) -> Self {
        Self { width, height, data: vec![0; width as usize * height as usize * 3] }
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn rgb(&self) -> &[u8] {
        &self.data
    }

    pub fn rgb_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Full-range luma, the formula `capture::convert` uses for every RGB source.
    pub fn to_luma(&self, out: &mut LumaFrame) {
        out.reshape(self.width, self.height);
        crate::capture::convert::rgb_to_luma(&self.data, out.pixels_mut());
    }
}

impl OriginDimensions for RgbCanvas {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for RgbCanvas {
    type Color = Rgb888;
    type Error = core::convert::Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 && (p.x as u32) < self.width && (p.y as u32) < self.height {
                let i = (p.y as usize * self.width as usize + p.x as usize) * 3;
                self.data[i] = c.r();
                self.data[i + 1] = c.g();
                self.data[i + 2] = c.b();
            }
        }
        Ok(())
    }
}

/// Draws the scanner's chrome once; `compose` then only copies the image in.
pub struct ScreenCompositor {
    layout: ScreenLayout,
    base: RgbCanvas,
}

impl ScreenCompositor {
    /// `header` is the made-up, non-identifying text in the patient field; `depth_cm` labels
    /// the ruler.
    pub fn new(layout: ScreenLayout, header: &str, depth_cm: f32) -> Self {
        let (w, h) = layout.size();
        let mut base = RgbCanvas::new(w, h);
        let img = layout.image_rect();
        let big = MonoTextStyle::new(&FONT_10X20, Rgb888::new(230, 230, 230));
        let small = MonoTextStyle::new(&FONT_6X10, Rgb888::new(200, 200, 120));
        // Infallible target: drawing cannot fail.
        let _ = base.clear(Rgb888::new(12, 12, 16));
        let _ = Rectangle::new(Point::new(0, 0), Size::new(w, 44))
            .into_styled(PrimitiveStyle::with_fill(Rgb888::new(28, 36, 60)))
            .draw(&mut base);
        let _ = Text::new(header, Point::new(120, 28), big).draw(&mut base);
        let _ = Text::new("ABD  C5-2  MI 0.9  TIS 0.4  FR 24Hz", Point::new(w as i32 - 420, 28), big).draw(&mut base);
        // Logo: a coloured disc and name.
        let _ = Circle::new(Point::new(16, 6), 32)
            .into_styled(PrimitiveStyle::with_fill(Rgb888::new(40, 140, 220)))
            .draw(&mut base);
        let _ = Text::new("SONO", Point::new(56, 28), MonoTextStyle::new(&FONT_10X20, Rgb888::new(40, 140, 220)))
            .draw(&mut base);
        // Depth ruler to the right of the image, with a gap.
        let rx = img.right() as i32 + 28;
        let _ = Rectangle::new(Point::new(rx, img.y as i32), Size::new(2, img.height))
            .into_styled(PrimitiveStyle::with_fill(Rgb888::new(180, 180, 180)))
            .draw(&mut base);
        let ticks = depth_cm.floor() as i32;
        for cm in 0..=ticks {
            let y = img.y as i32 + (cm as f32 / depth_cm * img.height as f32) as i32;
            let len = if cm % 5 == 0 { 12 } else { 6 };
            let _ = Rectangle::new(Point::new(rx, y), Size::new(len, 2))
                .into_styled(PrimitiveStyle::with_fill(Rgb888::new(180, 180, 180)))
                .draw(&mut base);
            if cm % 5 == 0 {
                let _ = Text::new(&format!("{cm}"), Point::new(rx + 16, y + 4), small).draw(&mut base);
            }
        }
        // Grey bar further right.
        let gx = rx + 60;
        for i in 0..256u32 {
            let y = img.y as i32 + (i * img.height / 2 / 256) as i32;
            let g = 255 - i as u8;
            let _ = Rectangle::new(Point::new(gx, y), Size::new(14, img.height / 512 + 1))
                .into_styled(PrimitiveStyle::with_fill(Rgb888::new(g, g, g)))
                .draw(&mut base);
        }
        // Measurement and preset panel on the left.
        for (i, line) in ["GAIN 52", "DR 60", "FOCUS 8cm", "PRESET RENAL", "Dist ---"].iter().enumerate() {
            let _ = Text::new(line, Point::new(20, img.y as i32 + 30 + 30 * i as i32), big).draw(&mut base);
        }
        let _ = Text::new("SIMULATED FEED - NOT A PATIENT", Point::new(20, h as i32 - 24), small).draw(&mut base);
        Self { layout, base }
    }

    pub fn layout(&self) -> ScreenLayout {
        self.layout
    }

    /// Copies the chrome, then the B-mode image (already at the image rect's size), into `out`.
    pub fn compose(&self, bmode: &LumaFrame, out: &mut RgbCanvas) {
        let img = self.layout.image_rect();
        debug_assert_eq!((bmode.width(), bmode.height()), (img.width, img.height));
        if out.width != self.base.width || out.height != self.base.height {
            *out = RgbCanvas::new(self.base.width, self.base.height);
        }
        out.data.copy_from_slice(&self.base.data);
        let stride = out.width as usize * 3;
        for y in 0..img.height.min(bmode.height()) {
            let row = bmode.row(y);
            let start = (img.y + y) as usize * stride + img.x as usize * 3;
            for (x, &v) in row.iter().take(img.width as usize).enumerate() {
                let i = start + x * 3;
                out.data[i] = v;
                out.data[i + 1] = v;
                out.data[i + 2] = v;
            }
        }
    }
}
