//! ROI stage: the kidney region to classify, from the guide box and the image area.
//!
//! The sonographer centres the kidney in a guide box defined relative to the B-mode image (the
//! study cropped a hand-drawn kidney ROI; a fixed guide box is its live equivalent).

use anyhow::{Result, ensure};

use crate::geometry::{Rect, RelativeRect};

/// The region of the frame that goes to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Roi(pub Rect);

impl Roi {
    pub fn rect(&self) -> Rect {
        self.0
    }
}

/// Places the guide box inside the located image area.
#[derive(Debug, Clone)]
pub struct RoiSelector {
    guide: RelativeRect,
    min_side: u32,
}

impl RoiSelector {
    /// Smallest ROI side, in pixels, worth classifying: below it the image area is too small
    /// to hold a kidney at a useful resolution.
    pub const DEFAULT_MIN_SIDE: u32 = 32;

    pub fn new(guide: RelativeRect) -> Result<Self> {
        guide.validate()?;
        Ok(Self { guide, min_side: Self::DEFAULT_MIN_SIDE })
    }

    pub fn guide(&self) -> RelativeRect {
        self.guide
    }

    /// The ROI for an image area on a `frame_width` x `frame_height` frame; an error when the
    /// area does not lie inside the frame or the ROI would be too small.
    pub fn select(&self, image_area: Rect, frame_width: u32, frame_height: u32) -> Result<Roi> {
        ensure!(
            image_area.fits_in(frame_width, frame_height),
            "image area {image_area} lies outside the {frame_width}x{frame_height} frame"
        );
        let rect = self.guide.within(&image_area);
        ensure!(
            rect.width >= self.min_side && rect.height >= self.min_side,
            "ROI {rect} is smaller than {0}x{0} pixels",
            self.min_side
        );
        Ok(Roi(rect))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roi_inside_frame() {
        let sel = RoiSelector::new(RelativeRect { x: 0.1, y: 0.2, width: 0.8, height: 0.6 }).unwrap();
        let roi = sel.select(Rect::new(100, 100, 500, 400), 1280, 720).unwrap();
        assert_eq!(roi.rect(), Rect::new(150, 180, 400, 240));
        assert!(roi.rect().fits_in(1280, 720));
    }

    #[test]
    fn area_outside_frame_is_refused() {
        let sel = RoiSelector::new(RelativeRect::WHOLE).unwrap();
        assert!(sel.select(Rect::new(1000, 0, 400, 400), 1280, 720).is_err());
        assert!(sel.select(Rect::new(0, 0, 10, 10), 1280, 720).is_err());
    }
}
