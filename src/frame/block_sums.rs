//! Per-block pixel sums of a luma frame: the sum and the sum of squares of each 16x16 block's
//! sampled rows (every [`SAMPLE_STEP`]th row: rows 0, 4, 8 and 12 of each block), from which
//! screen location reads texture (speckle) and the frame's flatness.
//!
//! A quarter of the rows is plenty for a standard deviation over 64 pixels, and it lets capture
//! decode only those rows outside the region the pipeline needs whole
//! ([`super::LumaFrame::write_in_strips`] with a window): reading a fraction of the frame is what
//! makes the stages cheap at 1080p, where the decode is bound by memory.
//!
//! They are computed where a frame is written ([`super::LumaFrame::write_in_strips`]): each
//! 16-row strip right after it is written, while it is still in cache, instead of a second pass
//! over the whole frame after inference has evicted it. Frames written otherwise get them from
//! [`BlockSumsBuffer::compute`]. Integers either way, so the same sums in any order (tested).

use super::LumaFrame;

/// Edge of a block, in pixels.
pub const BLOCK: u32 = 16;
/// The block sums take every this many rows, starting with each block's first.
pub const SAMPLE_STEP: u32 = 4;
/// Rows of a block that its sums cover.
const SAMPLED_ROWS: usize = (BLOCK / SAMPLE_STEP) as usize;
/// Pixels of a block that its sums cover.
pub const SAMPLED_PIXELS: u32 = BLOCK * BLOCK / SAMPLE_STEP;

/// Whether row `y` of a frame is one the block sums take.
pub fn is_sampled_row(y: u32) -> bool {
    y.is_multiple_of(SAMPLE_STEP)
}

/// The sum and the sum of squares of one block's sampled pixels (at most 64 * 255^2: fits u32).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockSums {
    pub sum: u32,
    pub squares: u32,
}

/// Block sums, row-major, `width / 16` by `height / 16` blocks (pixels past the last whole
/// block are not covered), and the scratch their computation reuses.
#[derive(Debug, Default)]
pub struct BlockSumsBuffer {
    sums: Vec<BlockSums>,
    blocks_wide: usize,
    /// Per-column sums and sums of squares over one strip (portable path only).
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    column_sums: Vec<u16>,
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    column_squares: Vec<u32>,
}

/// Copies the sums (not the scratch), into this buffer's own allocation.
impl Clone for BlockSumsBuffer {
    fn clone(&self) -> Self {
        let mut copy = Self::default();
        copy.clone_from(self);
        copy
    }

    fn clone_from(&mut self, source: &Self) {
        self.sums.clone_from(&source.sums);
        self.blocks_wide = source.blocks_wide;
    }
}

impl BlockSumsBuffer {
    /// Computes the sums of every block of `frame`.
    pub fn compute(&mut self, frame: &LumaFrame) -> &[BlockSums] {
        self.start(frame.width(), frame.height());
        let width = frame.width() as usize;
        for (strip, rows) in frame.pixels().chunks_exact(BLOCK as usize * width).enumerate() {
            self.add_strip(strip, rows, width);
        }
        &self.sums
    }

    pub fn sums(&self) -> &[BlockSums] {
        &self.sums
    }

    /// Sizes the buffer for a `width` x `height` frame (keeping its allocation).
    pub(super) fn start(&mut self, width: u32, height: u32) {
        self.blocks_wide = (width / BLOCK) as usize;
        self.sums.clear();
        self.sums.resize(self.blocks_wide * (height / BLOCK) as usize, BlockSums::default());
    }

    /// The sums of strip `strip` (its 16 rows, `width` pixels each, in `rows`; only the sampled
    /// ones are read). Strips past the last whole one are ignored.
    pub(super) fn add_strip(&mut self, strip: usize, rows: &[u8], width: usize) {
        let bw = self.blocks_wide;
        if bw == 0 || (strip + 1) * bw > self.sums.len() || rows.len() < BLOCK as usize * width {
            return;
        }
        let rows: [&[u8]; SAMPLED_ROWS] = std::array::from_fn(|i| &rows[i * SAMPLE_STEP as usize * width..][..width]);
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        let out = &mut self.sums[strip * bw..][..bw];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, detected at run time.
            unsafe { strip_sums_avx2(&rows, out) };
        } else {
            strip_sums_simd(&rows, out);
        }
        #[cfg(target_arch = "aarch64")]
        strip_sums_simd(&rows, out);
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        self.strip_sums_portable(&rows, strip);
    }

    /// Block sums on CPUs without the vector path: per-column totals over the sampled rows of a strip,
    /// added along whole rows so the loop vectorises (4 * 255 fits in u16, 4 * 255^2 in u32).
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    fn strip_sums_portable(&mut self, rows: &[&[u8]; SAMPLED_ROWS], strip: usize) {
        let width = self.blocks_wide * BLOCK as usize;
        self.column_sums.clear();
        self.column_sums.resize(width, 0);
        self.column_squares.clear();
        self.column_squares.resize(width, 0);
        for row in rows {
            for ((sum, square), &p) in
                self.column_sums.iter_mut().zip(self.column_squares.iter_mut()).zip(&row[..width])
            {
                *sum += u16::from(p);
                *square += u32::from(p) * u32::from(p);
            }
        }
        let blocks =
            self.column_sums.chunks_exact(BLOCK as usize).zip(self.column_squares.chunks_exact(BLOCK as usize));
        let out = &mut self.sums[strip * self.blocks_wide..][..self.blocks_wide];
        for (out, (sums, squares)) in out.iter_mut().zip(blocks) {
            out.sum = sums.iter().map(|&v| u32::from(v)).sum();
            out.squares = squares.iter().sum();
        }
    }
}

/// Block sums in vector registers, one block at a time, its sampled rows accumulated in registers:
/// the sum with SAD (x86) or pairwise widening adds (NEON), the squares with a 16-bit multiply-add
/// (x86) or widening multiply (NEON). Screen location at 1080p on the development machine: 0.19 ms
/// with the per-column totals (still the portable path), 0.11 ms with this and its AVX2 form.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
fn strip_sums_simd(rows: &[&[u8]; SAMPLED_ROWS], out: &mut [BlockSums]) {
    for (bx, sums) in out.iter_mut().enumerate() {
        *sums = block_sums_of(&block_segments(rows, bx * BLOCK as usize));
    }
}

/// The sampled row segments of the block whose left column is `x`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
fn block_segments<'a>(rows: &[&'a [u8]; SAMPLED_ROWS], x: usize) -> [&'a [u8; BLOCK as usize]; SAMPLED_ROWS] {
    std::array::from_fn(|i| {
        let Ok(segment) = <&[u8; BLOCK as usize]>::try_from(&rows[i][x..][..BLOCK as usize]) else {
            unreachable!("a slice of BLOCK bytes")
        };
        segment
    })
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn block_sums_of(segments: &[&[u8; BLOCK as usize]; SAMPLED_ROWS]) -> BlockSums {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of x86-64; each load reads one 16-byte segment.
    unsafe {
        let zero = _mm_setzero_si128();
        let (mut sum, mut squares) = (zero, zero);
        for segment in segments {
            let v = _mm_loadu_si128(segment.as_ptr().cast());
            sum = _mm_add_epi64(sum, _mm_sad_epu8(v, zero));
            let (low, high) = (_mm_unpacklo_epi8(v, zero), _mm_unpackhi_epi8(v, zero));
            squares = _mm_add_epi32(squares, _mm_add_epi32(_mm_madd_epi16(low, low), _mm_madd_epi16(high, high)));
        }
        let mut sums = [0u64; 2];
        let mut square_lanes = [0u32; 4];
        _mm_storeu_si128(sums.as_mut_ptr().cast(), sum);
        _mm_storeu_si128(square_lanes.as_mut_ptr().cast(), squares);
        BlockSums { sum: (sums[0] + sums[1]) as u32, squares: square_lanes.iter().sum() }
    }
}

#[cfg(target_arch = "aarch64")]
#[inline(always)]
fn block_sums_of(segments: &[&[u8; BLOCK as usize]; SAMPLED_ROWS]) -> BlockSums {
    use std::arch::aarch64::*;
    // SAFETY: NEON is part of aarch64; each load reads one 16-byte segment.
    unsafe {
        let (mut sum, mut squares) = (vdupq_n_u16(0), vdupq_n_u32(0));
        for segment in segments {
            let v = vld1q_u8(segment.as_ptr());
            // 4 rows * 2 * 255 fits u16; each square 255^2 fits u16.
            sum = vpadalq_u8(sum, v);
            squares = vpadalq_u16(squares, vmull_u8(vget_low_u8(v), vget_low_u8(v)));
            squares = vpadalq_u16(squares, vmull_high_u8(v, v));
        }
        BlockSums { sum: vaddlvq_u16(sum), squares: vaddvq_u32(squares) }
    }
}

/// [`strip_sums_simd`] two blocks per 32-byte load.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn strip_sums_avx2(rows: &[&[u8]; SAMPLED_ROWS], out: &mut [BlockSums]) {
    use std::arch::x86_64::*;
    let pair = 2 * BLOCK as usize;
    let (pairs, single) = out.as_chunks_mut::<2>();
    for (index, sums) in pairs.iter_mut().enumerate() {
        let zero = _mm256_setzero_si256();
        let (mut sum, mut squares) = (zero, zero);
        for row in rows {
            let segment = &row[index * pair..][..pair];
            // SAFETY: reads the 32 bytes of `segment`.
            let v = unsafe { _mm256_loadu_si256(segment.as_ptr().cast()) };
            sum = _mm256_add_epi64(sum, _mm256_sad_epu8(v, zero));
            let (low, high) = (_mm256_unpacklo_epi8(v, zero), _mm256_unpackhi_epi8(v, zero));
            let both = _mm256_add_epi32(_mm256_madd_epi16(low, low), _mm256_madd_epi16(high, high));
            squares = _mm256_add_epi32(squares, both);
        }
        // Each 128-bit lane holds one block: two 64-bit sums, four 32-bit sums of squares.
        let (mut sum_lanes, mut square_lanes) = ([0u64; 4], [0u32; 8]);
        // SAFETY: each store writes 32 bytes into a 32-byte array.
        unsafe {
            _mm256_storeu_si256(sum_lanes.as_mut_ptr().cast(), sum);
            _mm256_storeu_si256(square_lanes.as_mut_ptr().cast(), squares);
        }
        for (block, out) in sums.iter_mut().enumerate() {
            out.sum = (sum_lanes[2 * block] + sum_lanes[2 * block + 1]) as u32;
            out.squares = square_lanes[4 * block..][..4].iter().sum();
        }
    }
    if let [last] = single {
        *last = block_sums_of(&block_segments(rows, pairs.len() * pair));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Rect;

    /// Every block's sums computed the plain way, over its sampled rows.
    fn reference_sums(frame: &LumaFrame) -> Vec<BlockSums> {
        let (bw, bh) = (frame.width() / BLOCK, frame.height() / BLOCK);
        let mut sums = Vec::new();
        for by in 0..bh {
            for bx in 0..bw {
                let mut block = BlockSums::default();
                for y in (by * BLOCK..(by + 1) * BLOCK).step_by(SAMPLE_STEP as usize) {
                    for &p in &frame.row(y)[(bx * BLOCK) as usize..((bx + 1) * BLOCK) as usize] {
                        block.sum += u32::from(p);
                        block.squares += u32::from(p) * u32::from(p);
                    }
                }
                sums.push(block);
            }
        }
        sums
    }

    #[test]
    fn block_sums_equal_the_plain_sums() {
        let mut state = 3u64;
        // An odd number of blocks (the AVX2 path's single-block tail), partial blocks at the
        // right and bottom edges, saturated pixels (the largest sums), frames smaller than a block.
        for (width, height) in [(1000, 530), (1920, 1080), (64, 64), (17 * 16 + 5, 40), (15, 40), (40, 15)] {
            let data: Vec<u8> = (0..width * height)
                .map(|i| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    if i % 97 < 20 { 255 } else { (state >> 56) as u8 }
                })
                .collect();
            let frame = LumaFrame::from_vec(width, height, data.clone()).unwrap();
            assert_eq!(frame.block_sums(), None, "a frame from a buffer carries no sums");
            let reference = reference_sums(&frame);
            let mut buffer = BlockSumsBuffer::default();
            assert_eq!(buffer.compute(&frame), reference, "{width}x{height}");
            // Written strip by strip (as capture does), in strips of any height.
            let mut written = LumaFrame::default();
            written.reshape(width, height);
            written
                .write_rows(
                    None,
                    |_, _, _| {},
                    |y, x, row| {
                        let at = y as usize * width as usize + x as usize;
                        row.copy_from_slice(&data[at..at + row.len()]);
                        Ok(())
                    },
                )
                .unwrap();
            assert_eq!(written.pixels(), frame.pixels());
            assert_eq!(written.block_sums(), Some(&reference[..]), "{width}x{height}, written in strips");
            // The 16-byte path too (the one taken without AVX2, and on aarch64).
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            {
                let (bw, w) = ((width / BLOCK) as usize, width as usize);
                let mut sums = vec![BlockSums::default(); reference.len()];
                if bw > 0 {
                    for (strip, (rows, out)) in
                        frame.pixels().chunks_exact(16 * w).zip(sums.chunks_exact_mut(bw)).enumerate()
                    {
                        let rows: [&[u8]; SAMPLED_ROWS] = std::array::from_fn(|i| &rows[i * 4 * w..][..w]);
                        strip_sums_simd(&rows, out);
                        assert_eq!(out, &reference[strip * bw..][..bw], "{width}x{height}, 16-byte path");
                    }
                }
            }
            // Written within a window: the same sums (they read only the sampled rows, which are
            // written whole), the window's pixels and the sampled rows equal the frame's, and the
            // rest is left as it was.
            let window = Rect::new(width / 3, height / 4, width / 3 + 1, height / 2 + 1);
            let mut partial = LumaFrame::new(width, height);
            partial
                .write_rows(
                    Some(window),
                    |_, _, _| {},
                    |y, x, row| {
                        let at = y as usize * width as usize + x as usize;
                        row.copy_from_slice(&data[at..at + row.len()]);
                        Ok(())
                    },
                )
                .unwrap();
            assert_eq!(partial.block_sums(), Some(&reference[..]), "{width}x{height}, written within {window}");
            assert_eq!(partial.window(), Some(window));
            assert!(partial.holds(window) && !partial.holds(Rect::new(0, 0, width, height)));
            for y in 0..height {
                for x in 0..width {
                    let inside = (window.x..window.right()).contains(&x) && (window.y..window.bottom()).contains(&y);
                    let expected = if inside || is_sampled_row(y) { frame.get(x, y) } else { 0 };
                    assert_eq!(partial.get(x, y), expected, "{width}x{height}, pixel {x},{y}");
                }
            }
            // Changing pixels drops the carried sums.
            written.pixels_mut()[0] ^= 1;
            assert_eq!(written.block_sums(), None);
        }
    }
}
