//! Screen stage: where on the scanner's screen is the B-mode image?
//!
//! A scanner profile may give the image rectangle outright (best for a known scanner). Otherwise
//! it is detected: the screen is cut into blocks, blocks with speckle-like texture are kept, and
//! the largest connected group of them is the image. Header text, rulers and logos form small
//! groups of their own and are ignored. Nothing outside the found rectangle goes further.

use crate::frame::{BLOCK, BlockSumsBuffer, LumaFrame, SAMPLED_PIXELS};
use crate::geometry::Rect;
/// A block whose standard deviation is at least this is textured (speckle, tissue).
const TEXTURE_STD: u64 = 6;
/// Pixels of a block its sums cover (every fourth row's).
const BLOCK_PIXELS: u64 = SAMPLED_PIXELS as u64;
/// A frame whose whole standard deviation is below this is a flat "no signal" screen.
const FLAT_FRAME_STD: f32 = 3.0;
/// The image must cover at least this fraction of the screen.
const MIN_IMAGE_FRACTION: f64 = 0.04;
/// A textured region covering more than this fraction of the screen is noise, not a scanner
/// screen (a capture card without lock often delivers full-frame noise).
const NOISE_FRACTION: f64 = 0.85;
/// A pixel brighter than this counts as image content when refining the edges.
const CONTENT_LEVEL: u8 = 24;
/// In a profile-fixed rectangle, at least this fraction of blocks must be textured.
const MIN_TEXTURED_IN_FIXED: f64 = 0.2;
/// A detection within this many pixels of the locked rectangle keeps the locked one.
const LOCK_TOLERANCE_FRACTION: f32 = 0.03;

/// What the screen shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScreenState {
    /// The B-mode image is at this rectangle.
    Image(Rect),
    /// A scanner screen without an image (probe lifted, frozen blank, menus).
    NoImage,
    /// Not a scanner screen at all: flat colour or noise.
    NoSignal,
    /// The textured area moved away from the locked image area on a frame that capture
    /// converted whole only around the ROI: the new edges are found on the next whole frame.
    Relocating,
}

/// Finds the image area frame after frame, holding its answer steady against speckle.
pub struct ScreenLocator {
    fixed: Option<Rect>,
    /// Frame size the fixed rectangle was measured on (the profile's capture size).
    fixed_frame: Option<(u32, u32)>,
    locked: Option<Rect>,
    /// The textured region's bounding box (in blocks) when `locked` was last confirmed: while
    /// the region stays near it, the lock holds without reading pixels.
    locked_blocks: Rect,
    /// Frame size the locked rectangle was found on: a mode change drops the lock.
    locked_frame: (u32, u32),
    /// Per block: standard deviation >= [`TEXTURE_STD`].
    textured: Vec<bool>,
    /// Runs of textured blocks, their union-find parents and groups (kept between frames).
    runs: Vec<Run>,
    parent: Vec<usize>,
    groups: Vec<Group>,
    /// Block sums for frames that do not carry theirs.
    block_sums: BlockSumsBuffer,
}

impl ScreenLocator {
    /// `fixed`: the image rectangle from a scanner profile, or None to detect it.
    pub fn new(fixed: Option<Rect>) -> Self {
        Self {
            fixed,
            fixed_frame: None,
            locked: None,
            locked_blocks: Rect::new(0, 0, 0, 0),
            locked_frame: (0, 0),
            textured: Vec::new(),
            runs: Vec::new(),
            parent: Vec::new(),
            groups: Vec::new(),
            block_sums: BlockSumsBuffer::default(),
        }
    }

    /// The frame size the fixed rectangle was measured on. When a dongle changes mode (the
    /// scanner's screen is then scaled to the new size) the rectangle is scaled with it instead
    /// of pointing at another part of the screen.
    pub fn measured_on(mut self, frame_size: Option<(u32, u32)>) -> Self {
        self.fixed_frame = frame_size;
        self
    }

    /// The fixed rectangle in this frame's coordinates.
    fn fixed_rect_for(&self, rect: Rect, width: u32, height: u32) -> Rect {
        match self.fixed_frame {
            Some((fw, fh)) if (fw, fh) != (width, height) && fw > 0 && fh > 0 => {
                let scale = |v: u32, to: u32, from: u32| (u64::from(v) * u64::from(to) / u64::from(from)) as u32;
                Rect::new(
                    scale(rect.x, width, fw),
                    scale(rect.y, height, fh),
                    scale(rect.width, width, fw),
                    scale(rect.height, height, fh),
                )
            }
            _ => rect,
        }
    }

    pub fn locate(&mut self, frame: &LumaFrame) -> ScreenState {
        let (bw, bh) = (frame.width() / BLOCK, frame.height() / BLOCK);
        if bw < 4 || bh < 4 {
            return ScreenState::NoSignal;
        }
        let global_std = self.block_statistics(frame, bw, bh);
        if global_std < FLAT_FRAME_STD {
            self.locked = None;
            return ScreenState::NoSignal;
        }
        if let Some(rect) = self.fixed {
            let rect = self.fixed_rect_for(rect, frame.width(), frame.height());
            // A card without lock fills the whole frame with noise, profile rectangle or not.
            let whole = Rect::new(0, 0, bw * BLOCK, bh * BLOCK);
            if self.textured_fraction(whole, bw, bh) > NOISE_FRACTION {
                return ScreenState::NoSignal;
            }
            if !rect.fits_in(frame.width(), frame.height()) {
                // Validated at start-up against the configured size; a dongle that changed mode
                // shows up here instead of reading outside the frame.
                return ScreenState::NoSignal;
            }
            let textured = self.textured_fraction(rect, bw, bh);
            return if textured >= MIN_TEXTURED_IN_FIXED { ScreenState::Image(rect) } else { ScreenState::NoImage };
        }
        let total_blocks = (bw * bh) as f64;
        let Some((count, block_box)) = self.largest_textured_region(bw, bh) else {
            self.locked = None;
            return ScreenState::NoImage;
        };
        let fraction = count as f64 / total_blocks;
        if fraction > NOISE_FRACTION {
            self.locked = None;
            return ScreenState::NoSignal;
        }
        if fraction < MIN_IMAGE_FRACTION {
            self.locked = None;
            return ScreenState::NoImage;
        }
        let frame_size = (frame.width(), frame.height());
        let locked = self.locked.filter(|_| self.locked_frame == frame_size);
        if let Some(locked) = locked
            && blocks_within_tolerance(&locked, &self.locked_blocks, &block_box)
        {
            // The textured region is where it was when the lock was confirmed, to within the
            // tolerance (or a block, the texture map's resolution): the image has not moved.
            // No pixel is read, which lets capture convert whole only the ROI.
            return ScreenState::Image(locked);
        }
        // Whole blocks only cover the frame (`bw`, `bh` round down): no clamping needed.
        let block_pixels =
            Rect::new(block_box.x * BLOCK, block_box.y * BLOCK, block_box.width * BLOCK, block_box.height * BLOCK);
        if !frame.holds(block_pixels) {
            return ScreenState::Relocating;
        }
        let found = refine_edges(frame, block_box);
        let rect = match locked {
            Some(locked) if within_tolerance(&locked, &found) => locked,
            _ => found,
        };
        self.locked = Some(rect);
        self.locked_blocks = block_box;
        self.locked_frame = frame_size;
        ScreenState::Image(rect)
    }

    /// Fills `textured` and returns the whole frame's standard deviation, from the block sums
    /// the frame carries (capture takes them as it writes the frame) or, for a frame without
    /// them, computed here.
    fn block_statistics(&mut self, frame: &LumaFrame, bw: u32, bh: u32) -> f32 {
        let sums = match frame.block_sums() {
            Some(carried) => carried,
            None => self.block_sums.compute(frame),
        };
        debug_assert_eq!(sums.len(), (bw * bh) as usize);
        let (mut total, mut total_sq) = (0u64, 0u64);
        self.textured.clear();
        self.textured.extend(sums.iter().map(|sums| {
            let (s, sq) = (u64::from(sums.sum), u64::from(sums.squares));
            total += s;
            total_sq += sq;
            block_is_textured(s, sq)
        }));
        let count = (BLOCK_PIXELS * u64::from(bw * bh)) as f64;
        let mean = total as f64 / count;
        (total_sq as f64 / count - mean * mean).max(0.0).sqrt() as f32
    }

    fn textured_fraction(&self, rect: Rect, bw: u32, bh: u32) -> f64 {
        let (x0, y0) = (rect.x / BLOCK, rect.y / BLOCK);
        let (x1, y1) = ((rect.right() / BLOCK).min(bw), (rect.bottom() / BLOCK).min(bh));
        let (mut textured, mut all) = (0u32, 0u32);
        for by in y0..y1 {
            for bx in x0..x1 {
                all += 1;
                if self.textured[(by * bw + bx) as usize] {
                    textured += 1;
                }
            }
        }
        if all == 0 { 0.0 } else { f64::from(textured) / f64::from(all) }
    }

    /// Largest 8-connected group of textured blocks: (block count, bounding box in blocks); of
    /// equal groups, the one whose first block comes first in raster order.
    ///
    /// Labelled by runs: each block row's runs of textured blocks are joined (union-find) to the
    /// runs of the row above that touch them, corners included. Work in proportion to the runs,
    /// not to the blocks and their eight neighbours as a flood fill does (0.04 ms of a 1080p
    /// frame's 0.08 ms screen location).
    fn largest_textured_region(&mut self, bw: u32, bh: u32) -> Option<(usize, Rect)> {
        let w = bw as usize;
        self.runs.clear();
        self.parent.clear();
        // Room for the most runs a map can hold (every other block), so that a frame with more
        // runs than those before it allocates nothing.
        let most_runs = bh as usize * w.div_ceil(2);
        self.runs.reserve(most_runs);
        self.parent.reserve(most_runs);
        self.groups.reserve(most_runs);
        let mut above = 0..0;
        for (y, row) in self.textured.chunks_exact(w).take(bh as usize).enumerate() {
            let first_here = self.runs.len();
            // The first run of the row above that can still touch a run of this row.
            let mut touching = above.start;
            let mut x = 0;
            while x < w {
                if !row[x] {
                    x += 1;
                    continue;
                }
                let x0 = x;
                while x < w && row[x] {
                    x += 1;
                }
                let run = Run { y: y as u32, x0: x0 as u32, x1: x as u32 };
                let index = self.runs.len();
                self.runs.push(run);
                self.parent.push(index);
                // A run above touches this one when it reaches column x0 - 1 and starts by x.
                while touching < above.end && (self.runs[touching].x1 as usize) < x0 {
                    touching += 1;
                }
                let mut k = touching;
                while k < above.end && self.runs[k].x0 as usize <= x {
                    union(&mut self.parent, k, index);
                    k += 1;
                }
            }
            above = first_here..self.runs.len();
        }
        // Per group (at its root, its first run): block count and bounding box.
        self.groups.clear();
        self.groups.resize(self.runs.len(), Group::default());
        for i in 0..self.runs.len() {
            let root = find(&mut self.parent, i);
            let run = self.runs[i];
            let group = &mut self.groups[root];
            if group.count == 0 {
                *group = Group { count: 0, x0: run.x0, y0: run.y, x1: run.x1, y1: run.y + 1 };
            }
            group.count += (run.x1 - run.x0) as usize;
            group.x0 = group.x0.min(run.x0);
            group.x1 = group.x1.max(run.x1);
            group.y1 = group.y1.max(run.y + 1);
        }
        let mut best: Option<&Group> = None;
        for group in self.groups.iter().filter(|g| g.count > 0) {
            if best.is_none_or(|b| group.count > b.count) {
                best = Some(group);
            }
        }
        best.map(|g| (g.count, Rect::new(g.x0, g.y0, g.x1 - g.x0, g.y1 - g.y0)))
    }
}

/// A run of textured blocks in block row `y`, columns `x0..x1`.
#[derive(Debug, Clone, Copy)]
struct Run {
    y: u32,
    x0: u32,
    x1: u32,
}

/// A group of touching runs: its block count and bounding box (`x1`, `y1` exclusive).
#[derive(Debug, Clone, Copy, Default)]
struct Group {
    count: usize,
    x0: u32,
    y0: u32,
    x1: u32,
    y1: u32,
}

/// The root of run `i`'s group, halving the path on the way.
fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// Joins the groups of runs `a` and `b` under the earlier root, so that a group's root is its
/// first run in raster order.
fn union(parent: &mut [usize], a: usize, b: usize) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    let (root, child) = if ra < rb { (ra, rb) } else { (rb, ra) };
    parent[child] = root;
}

/// Whether a block with pixel sum `sum` and sum of squares `squares` has a standard deviation of
/// at least [`TEXTURE_STD`]: `squares / n - (sum / n)^2 >= TEXTURE_STD^2`, times `n^2`, in
/// integers (no square root or division per block; the sums are exact, so this is the same
/// decision as in floating point).
fn block_is_textured(sum: u64, squares: u64) -> bool {
    // n * squares >= sum^2 for any pixels (Cauchy-Schwarz); saturating all the same.
    (BLOCK_PIXELS * squares).saturating_sub(sum * sum) >= TEXTURE_STD * TEXTURE_STD * BLOCK_PIXELS * BLOCK_PIXELS
}

fn within_tolerance(locked: &Rect, found: &Rect) -> bool {
    locked.max_edge_distance(found) <= lock_tolerance(locked).max(2)
}

/// Whether the textured region `blocks` lies within the lock tolerance of `locked_blocks` (both
/// in blocks), or within a block of it where the tolerance is smaller than a block.
fn blocks_within_tolerance(locked: &Rect, locked_blocks: &Rect, blocks: &Rect) -> bool {
    locked_blocks.max_edge_distance(blocks) * BLOCK <= lock_tolerance(locked).max(BLOCK)
}

/// How far, in pixels, the edges of the image area may move and still keep the locked one.
fn lock_tolerance(locked: &Rect) -> u32 {
    (LOCK_TOLERANCE_FRACTION * locked.width.max(locked.height) as f32) as u32
}

/// Block-precision bounding box -> pixel edges: each edge moves inward to the first row or
/// column with image content (the edge blocks are only partly covered by the image).
fn refine_edges(frame: &LumaFrame, blocks: Rect) -> Rect {
    let x0 = blocks.x * BLOCK;
    let y0 = blocks.y * BLOCK;
    let x1 = (blocks.right() * BLOCK).min(frame.width());
    let y1 = (blocks.bottom() * BLOCK).min(frame.height());
    // A line of the image must hold a few content pixels, so one hot pixel does not count.
    const MIN_CONTENT: usize = 3;
    let row_has =
        |y: u32| frame.row(y)[x0 as usize..x1 as usize].iter().filter(|&&p| p > CONTENT_LEVEL).count() >= MIN_CONTENT;
    // Columns are counted a block's width at a time along whole rows (contiguous reads), not one
    // column at a time down the frame.
    let column_counts = |from: u32, to: u32| {
        let mut counts = [0usize; BLOCK as usize];
        for y in y0..y1 {
            for (count, &p) in counts.iter_mut().zip(&frame.row(y)[from as usize..to as usize]) {
                *count += usize::from(p > CONTENT_LEVEL);
            }
        }
        counts
    };
    let col_has_from = |from: u32, to: u32, last: bool| {
        let counts = column_counts(from, to);
        let counts = &counts[..(to - from) as usize];
        let found = if last {
            counts.iter().rposition(|&c| c >= MIN_CONTENT)
        } else {
            counts.iter().position(|&c| c >= MIN_CONTENT)
        };
        found.map(|i| from + i as u32)
    };
    let left = (x0..x1).step_by(BLOCK as usize).find_map(|x| col_has_from(x, (x + BLOCK).min(x1), false)).unwrap_or(x0);
    let right = (left..x1)
        .rev()
        .step_by(BLOCK as usize)
        .find_map(|end| col_has_from(end.saturating_sub(BLOCK - 1).max(left), end + 1, true))
        .map_or(x1, |x| x + 1);
    let top = (y0..y1).find(|&y| row_has(y)).unwrap_or(y0);
    let bottom = (top..y1).rev().find(|&y| row_has(y)).map_or(y1, |y| y + 1);
    Rect::new(left, top, right.saturating_sub(left).max(1), bottom.saturating_sub(top).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flood fill the run labelling replaced.
    fn reference_largest_region(textured: &[bool], bw: u32, bh: u32) -> Option<(usize, Rect)> {
        let (w, h) = (bw as usize, bh as usize);
        let mut labels = vec![0u32; w * h];
        let mut stack = Vec::new();
        let mut best: Option<(usize, Rect)> = None;
        let mut next_label = 1;
        for start in 0..w * h {
            if labels[start] != 0 || !textured[start] {
                continue;
            }
            stack.clear();
            stack.push(start);
            labels[start] = next_label;
            let (mut count, mut x0, mut y0, mut x1, mut y1) = (0, w, h, 0, 0);
            while let Some(i) = stack.pop() {
                let (x, y) = (i % w, i / w);
                count += 1;
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x);
                y1 = y1.max(y);
                for dy in [-1i64, 0, 1] {
                    for dx in [-1i64, 0, 1] {
                        let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                        if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                            continue;
                        }
                        let j = ny as usize * w + nx as usize;
                        if labels[j] == 0 && textured[j] {
                            labels[j] = next_label;
                            stack.push(j);
                        }
                    }
                }
            }
            next_label += 1;
            if best.is_none_or(|(c, _)| count > c) {
                let rect = Rect::new(x0 as u32, y0 as u32, (x1 - x0 + 1) as u32, (y1 - y0 + 1) as u32);
                best = Some((count, rect));
            }
        }
        best
    }

    #[test]
    fn run_labelling_finds_the_region_the_flood_fill_found() {
        let mut state = 5u64;
        let mut locator = ScreenLocator::new(None);
        for case in 0..400 {
            let (bw, bh) = (1 + case % 37, 1 + (case * 7) % 23);
            // From sparse to dense maps; some all textured or all plain.
            let density = (case % 11) as u64;
            locator.textured.clear();
            locator.textured.extend((0..bw * bh).map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 33) % 10 < density
            }));
            let expected = reference_largest_region(&locator.textured, bw, bh);
            assert_eq!(locator.largest_textured_region(bw, bh), expected, "case {case}: {bw}x{bh}");
        }
    }

    /// The edge refinement one column at a time down the frame, as it was before the columns
    /// were counted along rows.
    fn reference_refine_edges(frame: &LumaFrame, blocks: Rect) -> Rect {
        let (x0, y0) = (blocks.x * BLOCK, blocks.y * BLOCK);
        let x1 = (blocks.right() * BLOCK).min(frame.width());
        let y1 = (blocks.bottom() * BLOCK).min(frame.height());
        let col_has = |x: u32| (y0..y1).filter(|&y| frame.get(x, y) > CONTENT_LEVEL).count() >= 3;
        let row_has = |y: u32| (x0..x1).filter(|&x| frame.get(x, y) > CONTENT_LEVEL).count() >= 3;
        let left = (x0..x1).find(|&x| col_has(x)).unwrap_or(x0);
        let right = (left..x1).rev().find(|&x| col_has(x)).map_or(x1, |x| x + 1);
        let top = (y0..y1).find(|&y| row_has(y)).unwrap_or(y0);
        let bottom = (top..y1).rev().find(|&y| row_has(y)).map_or(y1, |y| y + 1);
        Rect::new(left, top, right.saturating_sub(left).max(1), bottom.saturating_sub(top).max(1))
    }

    #[test]
    fn edge_refinement_equals_the_column_by_column_scan() {
        let (width, height) = (200u32, 120u32);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for case in 0..300 {
            let mut pixels = vec![0u8; (width * height) as usize];
            // Content in a random rectangle (values 20-219, so some pixels inside fall under the
            // content level), and a few stray bright pixels outside it.
            let (cx0, cy0) = ((next() % 90) as u32, (next() % 50) as u32);
            let (cx1, cy1) = (cx0 + 1 + (next() % 100) as u32, cy0 + 1 + (next() % 60) as u32);
            for y in cy0..cy1.min(height) {
                for x in cx0..cx1.min(width) {
                    pixels[(y * width + x) as usize] = 20 + (next() % 200) as u8;
                }
            }
            for _ in 0..(case % 7) {
                pixels[(next() % u64::from(width * height)) as usize] = 255;
            }
            let frame = LumaFrame::from_vec(width, height, pixels).unwrap();
            let (bx, by) = ((next() % 5) as u32, (next() % 3) as u32);
            let blocks = Rect::new(
                bx,
                by,
                1 + (next() % u64::from(width / BLOCK - bx)) as u32,
                1 + (next() % u64::from(height / BLOCK - by)) as u32,
            );
            assert_eq!(refine_edges(&frame, blocks), reference_refine_edges(&frame, blocks), "case {case}, {blocks:?}");
        }
    }

    /// The integer decision against the floating-point standard deviation it replaced, at and
    /// around the threshold for every block sum.
    #[test]
    fn textured_decision_equals_the_float_standard_deviation() {
        let float_decision = |sum: u64, squares: u64| {
            let n = BLOCK_PIXELS as f64;
            let mean = sum as f64 / n;
            (squares as f64 / n - mean * mean).max(0.0).sqrt() as f32 >= TEXTURE_STD as f32
        };
        let (mut textured, mut flat) = (0, 0);
        for sum in 0..=BLOCK_PIXELS * 255 {
            // The smallest sum of squares with that sum is about sum^2 / n; the threshold is
            // at (36 n^2 + sum^2) / n.
            let floor = (sum * sum).div_ceil(BLOCK_PIXELS);
            let threshold = (TEXTURE_STD * TEXTURE_STD * BLOCK_PIXELS * BLOCK_PIXELS + sum * sum) / BLOCK_PIXELS;
            for squares in [floor, floor + 1, threshold.saturating_sub(1), threshold, threshold + 1, threshold + 2] {
                if squares < floor || squares > BLOCK_PIXELS * 255 * 255 {
                    continue;
                }
                let decision = block_is_textured(sum, squares);
                assert_eq!(decision, float_decision(sum, squares), "sum {sum} squares {squares}");
                if decision { textured += 1 } else { flat += 1 }
            }
        }
        assert!(textured > 10_000 && flat > 10_000, "{textured} textured, {flat} flat");
    }
}
