//! Replay sources: image files (PNG/JPEG/BMP), a directory of them, or a raw YUYV/NV12/GREY dump.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

use super::convert::{self, LumaRange, PixelFormat};
use super::{CaptureError, FrameInfo, FrameSource};
use crate::frame::LumaFrame;
use crate::geometry::Rect;

const IMAGE_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "bmp", "pgm"];

/// Image files, in sorted order, optionally looping.
pub struct ImageReplay {
    files: Vec<PathBuf>,
    next: usize,
    looping: bool,
    frame: LumaFrame,
    sequence: u64,
    origin: String,
}

impl ImageReplay {
    /// `path`: one image or a directory of images.
    pub fn open(path: &Path, looping: bool) -> Result<Self> {
        let files = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot list directory {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
                })
                .collect();
            files.sort();
            ensure!(!files.is_empty(), "no PNG/JPEG/BMP images in directory {}", path.display());
            files
        } else if path.is_file() {
            vec![path.to_path_buf()]
        } else {
            bail!("replay source {} does not exist", path.display());
        };
        Ok(Self {
            files,
            next: 0,
            looping,
            frame: LumaFrame::default(),
            sequence: 0,
            origin: path.display().to_string(),
        })
    }

    /// The file the last lent frame came from.
    pub fn current_file(&self) -> Option<&Path> {
        let i = self.next.checked_sub(1).unwrap_or(self.files.len() - 1);
        self.files.get(i).map(PathBuf::as_path)
    }
}

impl FrameSource for ImageReplay {
    fn next_frame(&mut self) -> Result<Option<(&LumaFrame, FrameInfo)>, CaptureError> {
        if self.next >= self.files.len() {
            if !self.looping {
                return Ok(None);
            }
            self.next = 0;
        }
        let path = &self.files[self.next];
        self.next += 1;
        let info = FrameInfo { sequence: self.sequence };
        self.sequence += 1;
        match LumaFrame::load(path) {
            Ok(f) => {
                self.frame = f;
                Ok(Some((&self.frame, info)))
            }
            Err(e) => Err(CaptureError::BadFrame(format!("{e:#}"))),
        }
    }

    fn describe(&self) -> String {
        format!("replay {}", self.origin)
    }
}

/// A raw dump of back-to-back frames of one pixel format and size (what `ffmpeg -f rawvideo`
/// or `v4l2-ctl --stream-to` writes).
pub struct RawReplay {
    path: PathBuf,
    file: File,
    format: PixelFormat,
    range: LumaRange,
    width: u32,
    height: u32,
    looping: bool,
    raw: Vec<u8>,
    scratch: Vec<u8>,
    frame: LumaFrame,
    sequence: u64,
    /// [`FrameSource::set_window`].
    window: Option<Rect>,
}

impl RawReplay {
    pub fn open(
        path: &Path,
        format: PixelFormat,
        range: LumaRange,
        width: u32,
        height: u32,
        looping: bool,
    ) -> Result<Self> {
        let frame_len = format
            .raw_len(width, height)
            .with_context(|| format!("{format:?} is compressed: raw dumps hold YUYV, NV12, GREY or RGB3"))?;
        ensure!(frame_len > 0, "raw frame size {width}x{height} is empty");
        let file = File::open(path).with_context(|| format!("cannot open raw dump {}", path.display()))?;
        let len = file.metadata().with_context(|| format!("cannot stat {}", path.display()))?.len();
        ensure!(
            len >= frame_len as u64,
            "raw dump {} holds {len} bytes, less than one {width}x{height} {format:?} frame ({frame_len} bytes)",
            path.display()
        );
        Ok(Self {
            path: path.to_path_buf(),
            file,
            format,
            range,
            width,
            height,
            looping,
            raw: vec![0; frame_len],
            scratch: Vec::new(),
            frame: LumaFrame::new(width, height),
            sequence: 0,
            window: None,
        })
    }

    fn read_frame(&mut self) -> std::io::Result<usize> {
        let mut filled = 0;
        while filled < self.raw.len() {
            let n = self.file.read(&mut self.raw[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        Ok(filled)
    }
}

impl FrameSource for RawReplay {
    fn next_frame(&mut self) -> Result<Option<(&LumaFrame, FrameInfo)>, CaptureError> {
        // The error names the file; built only on failure (a frame allocates nothing once warm).
        fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CaptureError + '_ {
            move |e| CaptureError::Fatal(anyhow::anyhow!("reading {}: {e}", path.display()))
        }
        let mut filled = self.read_frame().map_err(io_err(&self.path))?;
        if filled == 0 && self.looping && self.sequence > 0 {
            use std::io::Seek;
            self.file.rewind().map_err(io_err(&self.path))?;
            filled = self.read_frame().map_err(io_err(&self.path))?;
        }
        if filled == 0 {
            return Ok(None);
        }
        let info = FrameInfo { sequence: self.sequence };
        self.sequence += 1;
        if filled < self.raw.len() {
            return Err(CaptureError::BadFrame(format!(
                "truncated frame at the end of {}: {filled} of {} bytes",
                self.path.display(),
                self.raw.len()
            )));
        }
        convert::to_luma(
            self.window,
            self.format,
            self.range,
            &self.raw,
            self.width,
            self.height,
            &mut self.frame,
            &mut self.scratch,
        )
        .map_err(|e| CaptureError::BadFrame(format!("{e:#}")))?;
        Ok(Some((&self.frame, info)))
    }

    fn set_window(&mut self, window: Option<Rect>) {
        self.window = window;
    }

    fn describe(&self) -> String {
        format!("raw {:?} {}x{} {}", self.format, self.width, self.height, self.path.display())
    }
}

/// A file of concatenated JPEGs (an MJPEG stream as ffmpeg's `-f mjpeg` writes it).
pub struct MjpegReplay {
    path: PathBuf,
    data: Vec<u8>,
    offset: usize,
    looping: bool,
    scratch: Vec<u8>,
    frame: LumaFrame,
    sequence: u64,
}

impl MjpegReplay {
    pub fn open(path: &Path, looping: bool) -> Result<Self> {
        let data = std::fs::read(path).with_context(|| format!("cannot read MJPEG file {}", path.display()))?;
        ensure!(data.starts_with(&[0xFF, 0xD8]), "{} does not start with a JPEG marker", path.display());
        Ok(Self {
            path: path.to_path_buf(),
            data,
            offset: 0,
            looping,
            scratch: Vec::new(),
            frame: LumaFrame::default(),
            sequence: 0,
        })
    }
}

/// Length of the JPEG starting at `data[0]`: up to and including its end-of-image marker.
fn jpeg_length(data: &[u8]) -> Option<usize> {
    // Entropy-coded data stuffs 0xFF as 0xFF00, so FFD9 only appears as the real marker.
    data.windows(2).position(|w| w == [0xFF, 0xD9]).map(|p| p + 2)
}

impl FrameSource for MjpegReplay {
    fn next_frame(&mut self) -> Result<Option<(&LumaFrame, FrameInfo)>, CaptureError> {
        if self.offset >= self.data.len() {
            if !self.looping || self.sequence == 0 {
                return Ok(None);
            }
            self.offset = 0;
        }
        let info = FrameInfo { sequence: self.sequence };
        self.sequence += 1;
        let rest = &self.data[self.offset..];
        let Some(len) = jpeg_length(rest) else {
            self.offset = self.data.len();
            return Err(CaptureError::BadFrame(format!("truncated JPEG at the end of {}", self.path.display())));
        };
        let jpeg = &rest[..len];
        self.offset += len;
        let (w, h) = match jpeg_size(jpeg) {
            Ok(size) => size,
            Err(e) => return Err(CaptureError::BadFrame(format!("{e:#}"))),
        };
        convert::to_luma(None, PixelFormat::Mjpeg, LumaRange::Full, jpeg, w, h, &mut self.frame, &mut self.scratch)
            .map_err(|e| CaptureError::BadFrame(format!("{e:#}")))?;
        Ok(Some((&self.frame, info)))
    }

    fn describe(&self) -> String {
        format!("mjpeg {}", self.path.display())
    }
}

/// Largest frame a capture dongle delivers (4K, as for V4L2, is beyond any scanner output); a header
/// declaring more is corrupt, and must not make us allocate what it claims.
const MAX_JPEG_SIDE: u32 = 4096;

fn jpeg_size(jpeg: &[u8]) -> Result<(u32, u32)> {
    use image::ImageDecoder;
    let decoder = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(jpeg)).context("not a decodable JPEG")?;
    let (w, h) = decoder.dimensions();
    anyhow::ensure!(
        w <= MAX_JPEG_SIDE && h <= MAX_JPEG_SIDE,
        "JPEG header declares {w}x{h}, beyond the {MAX_JPEG_SIDE}x{MAX_JPEG_SIDE} limit (corrupt frame)"
    );
    Ok((w, h))
}
