//! The frame type every stage after capture works on: one 8-bit luma plane.
//!
//! B-mode ultrasound is greyscale; colour on a scanner screen is UI chrome (and Doppler, which the
//! model does not use), so capture converts every pixel format to luma once and nothing downstream
//! cares about the dongle's format.

use anyhow::{Result, ensure};

/// An 8-bit greyscale image, row-major, stride equal to width. Its buffer is reused between
/// frames: `reshape` only reallocates when the frame grows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LumaFrame {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl LumaFrame {
    pub fn new(width: u32, height: u32) -> Self {
        Self { width, height, data: vec![0; width as usize * height as usize] }
    }

    /// Wraps an existing buffer; its length must be width * height.
    pub fn from_vec(width: u32, height: u32, data: Vec<u8>) -> Result<Self> {
        ensure!(
            data.len() == width as usize * height as usize,
            "luma buffer of {} bytes does not hold a {}x{} frame",
            data.len(),
            width,
            height
        );
        Ok(Self { width, height, data })
    }

    /// Changes the size, keeping the allocation when it is large enough.
    pub fn reshape(&mut self, width: u32, height: u32) {
        self.width = width;
        self.height = height;
        self.data.resize(width as usize * height as usize, 0);
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn pixels(&self) -> &[u8] {
        &self.data
    }

    pub fn pixels_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    pub fn row(&self, y: u32) -> &[u8] {
        let w = self.width as usize;
        &self.data[y as usize * w..(y as usize + 1) * w]
    }

    pub fn get(&self, x: u32, y: u32) -> u8 {
        self.data[y as usize * self.width as usize + x as usize]
    }

    /// Loads any image file the `image` crate decodes, converted to luma.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        use anyhow::Context;
        let img = image::ImageReader::open(path)
            .with_context(|| format!("cannot open image {}", path.display()))?
            .with_guessed_format()
            .with_context(|| format!("cannot read image {}", path.display()))?
            .decode()
            .with_context(|| format!("cannot decode image {}", path.display()))?;
        let luma = img.into_luma8();
        let (w, h) = luma.dimensions();
        Self::from_vec(w, h, luma.into_raw())
    }

    /// Writes the frame as an 8-bit greyscale PNG.
    pub fn save_png(&self, path: &std::path::Path) -> Result<()> {
        use anyhow::Context;
        image::save_buffer(path, &self.data, self.width, self.height, image::ExtendedColorType::L8)
            .with_context(|| format!("cannot write {}", path.display()))
    }
}
