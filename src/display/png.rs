//! PNG file sink: the status screen as an image, rewritten atomically (temporary file + rename)
//! after each change, for tests, the demo (`--display-png`) and remote viewing.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;
use image::RgbImage;

use super::{Canvas, DisplaySink};

pub struct PngSink {
    path: PathBuf,
    tmp: PathBuf,
    image: RgbImage,
    writes: u64,
}

impl PngSink {
    /// Nothing is written until the first update; the folder must exist.
    pub fn new(path: &Path, size: Size) -> Result<Self> {
        ensure!(size.width > 0 && size.height > 0, "empty display size");
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        ensure!(dir.is_dir(), "folder {} does not exist", dir.display());
        let name = path.file_name().context("the PNG path names no file")?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(".tmp");
        Ok(Self {
            path: path.to_path_buf(),
            tmp: dir.join(tmp_name),
            image: RgbImage::new(size.width, size.height),
            writes: 0,
        })
    }

    /// What the file holds after the latest `present`.
    pub fn image(&self) -> &RgbImage {
        &self.image
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Files written so far.
    pub fn writes(&self) -> u64 {
        self.writes
    }
}

impl DisplaySink for PngSink {
    fn size(&self) -> Size {
        Size::new(self.image.width(), self.image.height())
    }

    fn flush_region(&mut self, canvas: &Canvas, area: Rectangle) -> Result<()> {
        let area = area.intersection(&canvas.bounds());
        let (x0, y0) = (area.top_left.x as u32, area.top_left.y as u32);
        for y in y0..y0 + area.size.height {
            for (i, c) in canvas.row_span(y, x0, area.size.width).iter().enumerate() {
                self.image.put_pixel(x0 + i as u32, y, image::Rgb([c.r(), c.g(), c.b()]));
            }
        }
        Ok(())
    }

    fn present(&mut self) -> Result<()> {
        self.image
            .save_with_format(&self.tmp, image::ImageFormat::Png)
            .with_context(|| format!("cannot write {}", self.tmp.display()))?;
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("cannot rename {} to {}", self.tmp.display(), self.path.display()))?;
        self.writes += 1;
        Ok(())
    }
}
