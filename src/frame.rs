//! The frame type every stage after capture works on: one 8-bit luma plane.
//!
//! B-mode ultrasound is greyscale; colour on a scanner screen is UI chrome (and Doppler, which the
//! model does not use), so capture converts every pixel format to luma once and nothing downstream
//! cares about the dongle's format.

use anyhow::{Result, ensure};

mod block_sums;

pub use block_sums::{BLOCK, BlockSums, BlockSumsBuffer};

/// An 8-bit greyscale image, row-major, stride equal to width. Its buffer is reused between
/// frames: `reshape` only reallocates when the frame grows. A frame written through
/// [`LumaFrame::write_in_strips`] also carries its 16x16 block sums.
#[derive(Debug, Default)]
pub struct LumaFrame {
    width: u32,
    height: u32,
    data: Vec<u8>,
    sums: BlockSumsBuffer,
    /// Whether `sums` are those of the pixels now in `data`.
    sums_current: bool,
}

impl Clone for LumaFrame {
    fn clone(&self) -> Self {
        let mut copy = Self::default();
        copy.clone_from(self);
        copy
    }

    /// Copies into this frame's own buffers: no allocation once they are large enough (a capture
    /// thread hands frames over this way, frame after frame).
    fn clone_from(&mut self, source: &Self) {
        self.width = source.width;
        self.height = source.height;
        self.data.clone_from(&source.data);
        self.sums.clone_from(&source.sums);
        self.sums_current = source.sums_current;
    }
}

/// Two frames are equal when their pixels are: the block sums are derived from them.
impl PartialEq for LumaFrame {
    fn eq(&self, other: &Self) -> bool {
        (self.width, self.height) == (other.width, other.height) && self.data == other.data
    }
}

impl Eq for LumaFrame {}

impl LumaFrame {
    pub fn new(width: u32, height: u32) -> Self {
        Self::from_parts(width, height, vec![0; width as usize * height as usize])
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
        Ok(Self::from_parts(width, height, data))
    }

    fn from_parts(width: u32, height: u32, data: Vec<u8>) -> Self {
        Self { width, height, data, sums: BlockSumsBuffer::default(), sums_current: false }
    }

    /// Changes the size, keeping the allocation when it is large enough.
    pub fn reshape(&mut self, width: u32, height: u32) {
        self.width = width;
        self.height = height;
        self.data.resize(width as usize * height as usize, 0);
        self.sums_current = false;
    }

    /// Writes the whole frame, 16 rows at a time: `write(first_row, rows)` fills the rows it is
    /// given (the last strip may be shorter), and each strip's block sums are taken right after,
    /// while it is in cache. An error from `write` leaves the frame without sums.
    pub fn write_in_strips(&mut self, mut write: impl FnMut(u32, &mut [u8]) -> Result<()>) -> Result<()> {
        self.sums_current = false;
        let width = self.width as usize;
        if width == 0 {
            return Ok(());
        }
        self.sums.start(self.width, self.height);
        for (strip, rows) in self.data.chunks_mut(BLOCK as usize * width).enumerate() {
            write((strip * BLOCK as usize) as u32, rows)?;
            self.sums.add_strip(strip, rows, width);
        }
        self.sums_current = true;
        Ok(())
    }

    /// The sums of each whole 16x16 block, row-major, when the frame was written by
    /// [`LumaFrame::write_in_strips`] and not changed since; else None
    /// ([`BlockSumsBuffer::compute`] makes them).
    pub fn block_sums(&self) -> Option<&[BlockSums]> {
        self.sums_current.then(|| self.sums.sums())
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
        self.sums_current = false;
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
