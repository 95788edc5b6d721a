//! Pixel rectangles on a frame, and rectangles relative to another rectangle.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// An axis-aligned rectangle in frame pixels (x, y is the top-left corner).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    pub const fn new(x: u32, y: u32, width: u32, height: u32) -> Self {
        Self { x, y, width, height }
    }

    pub fn right(&self) -> u32 {
        self.x + self.width
    }

    pub fn bottom(&self) -> u32 {
        self.y + self.height
    }

    pub fn area(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    /// True when the rectangle is non-empty and lies inside a `width` x `height` frame.
    pub fn fits_in(&self, width: u32, height: u32) -> bool {
        self.width > 0
            && self.height > 0
            && u64::from(self.x) + u64::from(self.width) <= u64::from(width)
            && u64::from(self.y) + u64::from(self.height) <= u64::from(height)
    }

    /// True when `other` lies wholly inside this rectangle.
    pub fn contains(&self, other: &Rect) -> bool {
        other.x >= self.x && other.y >= self.y && other.right() <= self.right() && other.bottom() <= self.bottom()
    }

    /// Largest absolute difference of any edge, in pixels.
    pub fn max_edge_distance(&self, other: &Rect) -> u32 {
        let d = |a: u32, b: u32| a.abs_diff(b);
        d(self.x, other.x)
            .max(d(self.y, other.y))
            .max(d(self.right(), other.right()))
            .max(d(self.bottom(), other.bottom()))
    }
}

impl std::fmt::Display for Rect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}+{}+{}", self.width, self.height, self.x, self.y)
    }
}

/// A rectangle given as fractions (0..1) of a parent rectangle: how the kidney guide box is
/// defined relative to the B-mode image area, whatever the screen resolution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelativeRect {
    pub x: f32,
    pub y: f32,
    pub width: f32,
    pub height: f32,
}

impl RelativeRect {
    pub const WHOLE: RelativeRect = RelativeRect { x: 0.0, y: 0.0, width: 1.0, height: 1.0 };

    /// Checks the fractions describe a non-empty box inside the parent.
    pub fn validate(&self) -> Result<()> {
        let in_unit = |v: f32| (0.0..=1.0).contains(&v);
        if !(in_unit(self.x) && in_unit(self.y)) {
            bail!("x and y must be within 0..1 (got x={}, y={})", self.x, self.y);
        }
        if !(self.width > 0.0 && self.height > 0.0) {
            bail!("width and height must be > 0 (got {}x{})", self.width, self.height);
        }
        if self.x + self.width > 1.0 + 1e-6 || self.y + self.height > 1.0 + 1e-6 {
            bail!(
                "box leaves its parent: x+width={} y+height={} (must be <= 1)",
                self.x + self.width,
                self.y + self.height
            );
        }
        Ok(())
    }

    /// The pixel rectangle this box covers inside `parent`, clamped to the parent and at least 1x1.
    pub fn within(&self, parent: &Rect) -> Rect {
        let pw = parent.width as f32;
        let ph = parent.height as f32;
        let x0 = (self.x * pw).round().clamp(0.0, pw - 1.0) as u32;
        let y0 = (self.y * ph).round().clamp(0.0, ph - 1.0) as u32;
        let x1 = ((self.x + self.width) * pw).round().clamp(x0 as f32 + 1.0, pw) as u32;
        let y1 = ((self.y + self.height) * ph).round().clamp(y0 as f32 + 1.0, ph) as u32;
        Rect::new(parent.x + x0, parent.y + y0, x1 - x0, y1 - y0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_box_maps_inside_parent() {
        let parent = Rect::new(100, 50, 400, 300);
        let rel = RelativeRect { x: 0.25, y: 0.5, width: 0.5, height: 0.5 };
        assert_eq!(rel.within(&parent), Rect::new(200, 200, 200, 150));
        assert_eq!(RelativeRect::WHOLE.within(&parent), parent);
    }

    #[test]
    fn relative_box_rejects_out_of_range() {
        let bad = RelativeRect { x: 0.6, y: 0.0, width: 0.5, height: 1.0 };
        assert!(bad.validate().is_err());
        let neg = RelativeRect { x: -0.1, y: 0.0, width: 0.5, height: 1.0 };
        assert!(neg.validate().is_err());
    }

    #[test]
    fn fits_in_checks_bounds_without_overflow() {
        assert!(Rect::new(0, 0, 10, 10).fits_in(10, 10));
        assert!(!Rect::new(1, 0, 10, 10).fits_in(10, 10));
        assert!(!Rect::new(u32::MAX, 0, 2, 1).fits_in(10, 10));
        assert!(!Rect::new(0, 0, 0, 1).fits_in(10, 10));
    }
}
