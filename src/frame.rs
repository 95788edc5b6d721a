//! The frame type every stage after capture works on: one 8-bit luma plane.
//!
//! B-mode ultrasound is greyscale; colour on a scanner screen is UI chrome (and Doppler, which the
//! model does not use), so capture converts every pixel format to luma once and nothing downstream
//! cares about the dongle's format.

use anyhow::{Result, ensure};

mod block_sums;

pub use block_sums::{BLOCK, BlockSums, BlockSumsBuffer, SAMPLED_PIXELS, is_sampled_row};

use crate::geometry::Rect;

/// How many spans ahead of the one being written a partial [`LumaFrame::write_rows`] has its
/// input prefetched. Outside the window the rows written are four apart (15 KB of 1080p YUYV) and
/// inside it each is a short span starting on a new page: the hardware prefetcher does not follow
/// either, and a capture buffer is cold. Three spans ahead took the capture thread's CPU time per
/// 1080p frame from 0.79-0.98 to 0.60-0.78 ms in `bench` (two, four, six and eight were no
/// better; README "Speed").
pub const PREFETCH_AHEAD: usize = 3;

/// An 8-bit greyscale image, row-major, stride equal to width. Its buffer is reused between
/// frames: `reshape` only reallocates when the frame grows. A frame written through
/// [`LumaFrame::write_rows`] also carries its 16x16 block sums, and may have been written only
/// partly: whole within a window and on the rows the block sums sample, nowhere else
/// ([`LumaFrame::holds`] says which pixels can be read).
#[derive(Debug, Default)]
pub struct LumaFrame {
    width: u32,
    height: u32,
    data: Vec<u8>,
    sums: BlockSumsBuffer,
    /// Whether `sums` are those of the pixels now in `data`.
    sums_current: bool,
    /// When the last write covered only part of the frame: the rectangle written whole (the
    /// sampled rows were written across the whole width). Other pixels are stale.
    window: Option<Rect>,
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
        self.window = source.window;
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
        Self { width, height, data, sums: BlockSumsBuffer::default(), sums_current: false, window: None }
    }

    /// Changes the size, keeping the allocation when it is large enough.
    pub fn reshape(&mut self, width: u32, height: u32) {
        self.width = width;
        self.height = height;
        self.data.resize(width as usize * height as usize, 0);
        self.sums_current = false;
        self.window = None;
    }

    /// Writes the frame a row at a time, 16 rows (a strip) between block sums: `write(y, x, dst)`
    /// fills row `y` from column `x` on (`dst.len()` pixels). Each strip's block sums are taken
    /// right after it is written, while it is still in cache.
    ///
    /// With a `window` (one that lies inside the frame), only the rows the block sums sample are
    /// written across the whole width; the other rows are written only within the window. The
    /// pipeline asks for that once it knows where its ROI is, so that capture reads about 40 % of a
    /// 1080p frame instead of all of it. An error from `write` leaves the frame without sums.
    ///
    /// On such a partial write `prefetch(y, x, width)` is called for each span [`PREFETCH_AHEAD`]
    /// spans before `write` is called for it, once per span and in the same order, so that the
    /// caller can ask the CPU to start loading its input ([`crate::simd::prefetch_read`]).
    pub fn write_rows(
        &mut self,
        window: Option<Rect>,
        mut prefetch: impl FnMut(u32, u32, u32),
        mut write: impl FnMut(u32, u32, &mut [u8]) -> Result<()>,
    ) -> Result<()> {
        self.sums_current = false;
        let whole = Rect::new(0, 0, self.width, self.height);
        let window = window.filter(|w| w.fits_in(self.width, self.height) && *w != whole);
        self.window = window;
        let (width, height) = (self.width, self.height);
        if width == 0 {
            return Ok(());
        }
        // The span of row `y` that is written: (first column, pixels), or None.
        let span = |y: u32| match window {
            Some(w) if !is_sampled_row(y) => (w.y..w.bottom()).contains(&y).then_some((w.x, w.width)),
            _ => Some((0, width)),
        };
        // The prefetch cursor: the next row it looks at. A whole frame is read front to back,
        // which the hardware prefetcher follows on its own.
        let mut ahead_row = if window.is_some() { 0 } else { height };
        let mut prefetch_next = || {
            while ahead_row < height {
                let y = ahead_row;
                ahead_row += 1;
                if let Some((x, pixels)) = span(y) {
                    prefetch(y, x, pixels);
                    return;
                }
            }
        };
        // Each span written asks for the one PREFETCH_AHEAD later first.
        for _ in 0..PREFETCH_AHEAD {
            prefetch_next();
        }
        self.sums.start(width, height);
        let stride = width as usize;
        for (strip, rows) in self.data.chunks_mut(BLOCK as usize * stride).enumerate() {
            let first = strip as u32 * BLOCK;
            for (y, row) in (first..).zip(rows.chunks_exact_mut(stride)) {
                if let Some((x, pixels)) = span(y) {
                    prefetch_next();
                    write(y, x, &mut row[x as usize..(x + pixels) as usize])?;
                }
            }
            self.sums.add_strip(strip, rows, stride);
        }
        self.sums_current = true;
        Ok(())
    }

    /// Whether every pixel of `rect` lies inside the frame and was written by the last write.
    pub fn holds(&self, rect: Rect) -> bool {
        rect.fits_in(self.width, self.height) && self.window.is_none_or(|w| w.contains(&rect))
    }

    /// The window the last write was limited to, or None when the whole frame was written.
    pub fn window(&self) -> Option<Rect> {
        self.window
    }

    /// The sums of each whole 16x16 block, row-major, when the frame was written by
    /// [`LumaFrame::write_rows`] and not changed since; else None
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

    /// Every pixel, those outside a partial write's window included ([`LumaFrame::holds`]).
    pub fn pixels(&self) -> &[u8] {
        &self.data
    }

    /// For writing the whole frame: afterwards every pixel counts as written.
    pub fn pixels_mut(&mut self) -> &mut [u8] {
        self.sums_current = false;
        self.window = None;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What a partial write asks to prefetch is exactly what it then writes, span for span, each
    /// asked for PREFETCH_AHEAD spans before it is written; a whole write asks for nothing.
    #[test]
    fn a_partial_write_prefetches_each_span_it_writes_ahead_of_writing_it() {
        /// (written rather than prefetched, row, first column, pixels)
        type Event = (bool, u32, u32, u32);
        for (width, height, window) in [
            (203u32, 70u32, Rect::new(37, 21, 101, 30)),
            (64, 40, Rect::new(0, 1, 2, 1)),
            (64, 40, Rect::new(10, 0, 20, 39)),
            (33, 5, Rect::new(1, 1, 1, 1)),
        ] {
            let events = std::cell::RefCell::new(Vec::<Event>::new());
            let mut frame = LumaFrame::new(width, height);
            frame
                .write_rows(
                    Some(window),
                    |y, x, pixels| events.borrow_mut().push((false, y, x, pixels)),
                    |y, x, row| {
                        events.borrow_mut().push((true, y, x, row.len() as u32));
                        Ok(())
                    },
                )
                .unwrap();
            let events = events.into_inner();
            let spans = |written: bool| -> Vec<(u32, u32, u32)> {
                events.iter().filter(|e| e.0 == written).map(|&(_, y, x, n)| (y, x, n)).collect()
            };
            let written = spans(true);
            assert_eq!(spans(false), written, "{width}x{height} within {window}: prefetched, in order");
            let rows = (0..height).filter(|&y| is_sampled_row(y) || (window.y..window.bottom()).contains(&y));
            assert_eq!(written.len(), rows.count());
            for (i, &(y, x, n)) in written.iter().enumerate() {
                let asked = events.iter().position(|&e| e == (false, y, x, n)).unwrap();
                let writes_before = events[..asked].iter().filter(|e| e.0).count();
                assert_eq!(writes_before, i.saturating_sub(PREFETCH_AHEAD), "{width}x{height}, span {i}");
            }
        }
        // Whole: read front to back, left to the hardware prefetcher.
        let mut asked = 0;
        let mut frame = LumaFrame::new(40, 20);
        frame.write_rows(None, |_, _, _| asked += 1, |_, _, _| Ok(())).unwrap();
        assert_eq!(asked, 0);
    }
}
