//! Preprocess stage: ROI -> model input tensor.
//!
//! Geometry (crop + resize) happens here in Rust only: the training scripts read ROIs that this
//! code already resized (`simulate` and `prepare` write them), so training and inference see the
//! same pixels. The per-pixel step is `(v / 255 - mean[c]) / std[c]` in f32 for each of the three
//! channels, the identical float operations `scripts/kidney_model/transforms.py` performs.

use anyhow::{Result, ensure};

use crate::frame::LumaFrame;
use crate::geometry::Rect;
use crate::resize::GreyResizer;
use crate::roi::Roi;

/// Per-channel normalisation, from the model manifest.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalization {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.std.iter().all(|s| s.is_finite() && *s > 0.0),
            "normalization std must be finite and > 0 (got {:?})",
            self.std
        );
        ensure!(self.mean.iter().all(|m| m.is_finite()), "normalization mean must be finite");
        Ok(())
    }
}

/// One pixel byte of channel `c`, normalised as `scripts/kidney_model/transforms.py` does.
fn normalize(v: u8, norm: Normalization, c: usize) -> f32 {
    (f32::from(v) / 255.0 - norm.mean[c]) / norm.std[c]
}

/// Owns the resized ROI and the NCHW tensor; both are allocated once. The resampling filter
/// ([`GreyResizer`]) is bilinear with anti-aliasing support scaled to the reduction, so a
/// 400-pixel ROI shrinks without speckle aliasing; it is bit-identical to fast_image_resize
/// 5.1.4's `Convolution(Bilinear)`, which made the training ROIs, and allocates nothing once warm.
pub struct Preprocessor {
    width: u32,
    height: u32,
    resizer: GreyResizer,
    resized: Vec<u8>,
    tensor: Vec<f32>,
    /// Per channel, the normalised value of each pixel byte: the per-pixel formula evaluated
    /// once per byte value (the same f32 operations), so normalising is a lookup.
    normalized: [[f32; 256]; 3],
}

impl Preprocessor {
    pub fn new(width: u32, height: u32, norm: Normalization) -> Result<Self> {
        ensure!(width > 0 && height > 0, "model input size {width}x{height} is empty");
        norm.validate()?;
        Ok(Self {
            width,
            height,
            resizer: GreyResizer::new(),
            resized: vec![0; width as usize * height as usize],
            tensor: vec![0.0; 3 * width as usize * height as usize],
            normalized: std::array::from_fn(|c| std::array::from_fn(|v| normalize(v as u8, norm, c))),
        })
    }

    pub fn input_size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Crops `roi` out of `frame`, resizes it to the model input and normalises it.
    pub fn run(&mut self, frame: &LumaFrame, roi: Roi) -> Result<&[f32]> {
        self.resize_roi(frame, roi)?;
        self.normalize_resized();
        Ok(&self.tensor)
    }

    /// The pixels of a `frame_width` x `frame_height` frame that preprocessing `roi` reads (the
    /// ROI and the resampling filter's reach around it): capture may convert only these whole.
    pub fn source_rect(&self, frame_width: u32, frame_height: u32, roi: Roi) -> Rect {
        GreyResizer::source_rect(frame_width, frame_height, roi.rect(), self.width, self.height)
    }

    /// Crop + resize only; the result is `resized()`.
    pub fn resize_roi(&mut self, frame: &LumaFrame, roi: Roi) -> Result<()> {
        let r = roi.rect();
        ensure!(
            r.fits_in(frame.width(), frame.height()),
            "ROI {r} lies outside the {}x{} frame",
            frame.width(),
            frame.height()
        );
        if let Some(window) = frame.window() {
            let reach = self.source_rect(frame.width(), frame.height(), roi);
            ensure!(
                frame.holds(reach),
                "ROI {r} reads {reach}, but the frame was converted whole only within {window}"
            );
        }
        ensure!(
            frame.pixels().len() == frame.width() as usize * frame.height() as usize,
            "frame buffer does not match its size"
        );
        self.resizer.resize(frame.pixels(), frame.width(), frame.height(), r, &mut self.resized, self.width);
        Ok(())
    }

    /// Loads an already model-sized greyscale ROI (as the training scripts read it).
    pub fn set_resized(&mut self, pixels: &[u8]) -> Result<()> {
        ensure!(
            pixels.len() == self.resized.len(),
            "ROI has {} pixels, the model takes {}x{}",
            pixels.len(),
            self.width,
            self.height
        );
        self.resized.copy_from_slice(pixels);
        Ok(())
    }

    /// Normalises `resized()` into the tensor.
    pub fn normalize_resized(&mut self) -> &[f32] {
        let plane = self.width as usize * self.height as usize;
        let src = &self.resized;
        for (c, table) in self.normalized.iter().enumerate() {
            for (dst, &v) in self.tensor[c * plane..(c + 1) * plane].iter_mut().zip(src) {
                *dst = table[usize::from(v)];
            }
        }
        &self.tensor
    }

    /// Hands the last tensor and resized ROI over without copying them: they are swapped with
    /// `tensor` and `resized`, whose buffers this preprocessor writes next (sized to its own
    /// output: once they are, nothing is allocated). The capture thread hands its prepared
    /// frames to the loop this way; a copy was 600 KB per frame.
    pub fn swap_output(&mut self, tensor: &mut Vec<f32>, resized: &mut Vec<u8>) {
        let (tensor_len, resized_len) = (self.tensor.len(), self.resized.len());
        std::mem::swap(&mut self.tensor, tensor);
        std::mem::swap(&mut self.resized, resized);
        self.tensor.resize(tensor_len, 0.0);
        self.resized.resize(resized_len, 0);
    }

    /// The model-sized greyscale ROI last produced.
    pub fn resized(&self) -> &[u8] {
        &self.resized
    }

    pub fn tensor(&self) -> &[f32] {
        &self.tensor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NORM: Normalization = Normalization { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

    #[test]
    fn uniform_roi_normalises_per_channel() {
        let mut frame = LumaFrame::new(64, 48);
        frame.pixels_mut().fill(200);
        let mut pre = Preprocessor::new(16, 16, NORM).unwrap();
        let t = pre.run(&frame, Roi(Rect::new(8, 8, 40, 30))).unwrap().to_vec();
        for c in 0..3 {
            // Computed independently in f64, then compared with the f32 result.
            let expected = (200.0f64 / 255.0 - f64::from(NORM.mean[c])) / f64::from(NORM.std[c]);
            for v in &t[c * 256..(c + 1) * 256] {
                assert!((f64::from(*v) - expected).abs() < 1e-5, "{v} vs {expected}");
            }
        }
    }

    #[test]
    fn roi_outside_frame_is_an_error() {
        let frame = LumaFrame::new(64, 48);
        let mut pre = Preprocessor::new(16, 16, NORM).unwrap();
        assert!(pre.run(&frame, Roi(Rect::new(40, 8, 40, 30))).is_err());
    }

    #[test]
    fn crop_takes_the_roi_not_the_frame() {
        // Left half dark, right half bright: an ROI in the right half must be all bright.
        let mut frame = LumaFrame::new(64, 32);
        for y in 0..32 {
            for x in 32..64 {
                frame.pixels_mut()[y * 64 + x] = 250;
            }
        }
        let mut pre = Preprocessor::new(8, 8, NORM).unwrap();
        pre.resize_roi(&frame, Roi(Rect::new(36, 0, 28, 32))).unwrap();
        assert!(pre.resized().iter().all(|&v| v == 250), "{:?}", pre.resized());
    }

    #[test]
    fn a_frame_converted_within_the_source_rect_preprocesses_as_a_whole_one() {
        let (w, h) = (400u32, 300u32);
        let pixels: Vec<u8> = (0..w * h).map(|i| ((i * 7919) % 251) as u8).collect();
        let whole = LumaFrame::from_vec(w, h, pixels.clone()).unwrap();
        let roi = Roi(Rect::new(101, 57, 230, 170));
        let mut pre = Preprocessor::new(32, 32, NORM).unwrap();
        let expected = pre.run(&whole, roi).unwrap().to_vec();
        let write = |window| {
            let mut frame = LumaFrame::new(w, h);
            frame
                .write_rows(
                    Some(window),
                    |_, _, _| {},
                    |y, x, row| {
                        let at = (y * w + x) as usize;
                        row.copy_from_slice(&pixels[at..at + row.len()]);
                        Ok(())
                    },
                )
                .unwrap();
            frame
        };
        let reach = pre.source_rect(w, h, roi);
        assert!(reach.contains(&roi.rect()) && reach != roi.rect(), "{reach}");
        assert_eq!(pre.run(&write(reach), roi).unwrap(), &expected[..]);
        // A window that holds the ROI but not the filter's reach around it is refused, not read.
        let err = pre.run(&write(roi.rect()), roi).unwrap_err();
        assert!(format!("{err:#}").contains("converted whole only within"), "{err:#}");
    }

    #[test]
    fn invalid_std_is_refused() {
        let bad = Normalization { mean: [0.0; 3], std: [0.2, 0.0, 0.2] };
        assert!(Preprocessor::new(8, 8, bad).is_err());
    }
}
