//! V4L2 capture (USB HDMI/composite dongles) through the `v4l` crate: format negotiation,
//! mmap streaming with a dequeue timeout, buffer flag checks, unplug and reopen with backoff.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use v4l::buffer::{Flags, Type};
use v4l::io::mmap::Stream;
use v4l::io::traits::{CaptureStream, Stream as _};
use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::convert::{self, LumaRange, PixelFormat};
use super::{CaptureError, FrameInfo, FrameSource};
use crate::frame::LumaFrame;

const BUFFERS: u32 = 4;
const ENODEV: i32 = 19;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct V4l2Settings {
    pub device: PathBuf,
    pub width: u32,
    pub height: u32,
    /// Preference order; the first one the device offers is used.
    pub formats: Vec<PixelFormat>,
    pub timeout: Duration,
    pub luma_range: LumaRange,
}

struct Open {
    stream: Stream<'static>,
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: u32,
    /// After a dequeue timeout the stream's current buffer is already queued again; the next
    /// call must dequeue before `next()` may re-queue it (re-queueing a buffer the kernel owns
    /// fails with EINVAL).
    after_timeout: bool,
    _device: Device,
}

pub struct V4l2Source {
    settings: V4l2Settings,
    open: Option<Open>,
    frame: LumaFrame,
    packed: Vec<u8>,
    scratch: Vec<u8>,
    sequence: u64,
    backoff: Duration,
    next_attempt: Instant,
    bad_frames: u64,
}

impl V4l2Source {
    /// Opens the device now, so a missing or unsuitable device is a start-up error.
    pub fn open(settings: V4l2Settings) -> Result<Self> {
        let open = open_device(&settings)?;
        log::info!(
            "{}: streaming {:?} {}x{} (stride {})",
            settings.device.display(),
            open.format,
            open.width,
            open.height,
            open.stride
        );
        Ok(Self {
            settings,
            open: Some(open),
            frame: LumaFrame::default(),
            packed: Vec::new(),
            scratch: Vec::new(),
            sequence: 0,
            backoff: Duration::from_millis(250),
            next_attempt: Instant::now(),
            bad_frames: 0,
        })
    }

    pub fn bad_frames(&self) -> u64 {
        self.bad_frames
    }

    fn close(&mut self) {
        if let Some(mut open) = self.open.take() {
            // v4l's Stream::drop panics when STREAMOFF fails for any reason but ENODEV: stop it
            // here and leak the mappings rather than panic if that fails.
            match open.stream.stop() {
                Ok(()) => drop(open),
                Err(e) if e.raw_os_error() == Some(ENODEV) => drop(open),
                Err(e) => {
                    log::error!("STREAMOFF failed ({e}); releasing the stream without unmapping");
                    std::mem::forget(open.stream);
                }
            }
        }
    }

    fn reopen(&mut self) -> Result<(), CaptureError> {
        let now = Instant::now();
        if now < self.next_attempt {
            std::thread::sleep(self.next_attempt - now);
        }
        match open_device(&self.settings) {
            Ok(open) => {
                log::info!("{}: reopened", self.settings.device.display());
                self.open = Some(open);
                self.backoff = Duration::from_millis(250);
                Ok(())
            }
            Err(e) => {
                self.next_attempt = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                Err(CaptureError::Disconnected(format!("{e:#}")))
            }
        }
    }
}

fn open_device(s: &V4l2Settings) -> Result<Open> {
    let device =
        Device::with_path(&s.device).with_context(|| format!("cannot open capture device {}", s.device.display()))?;
    let caps = device.query_caps().with_context(|| format!("{} is not a V4L2 device", s.device.display()))?;
    if !caps.capabilities.contains(v4l::capability::Flags::VIDEO_CAPTURE) {
        bail!("{} ({}) cannot capture video", s.device.display(), caps.card);
    }
    let offered: Vec<FourCC> = device.enum_formats()?.into_iter().map(|d| d.fourcc).collect();
    let Some(format) = s.formats.iter().copied().find(|f| offered.contains(&FourCC::new(&f.fourcc()))) else {
        let names: Vec<String> = offered.iter().map(|f| f.to_string()).collect();
        bail!("{} offers {} but none of the configured formats {:?}", s.device.display(), names.join(", "), s.formats);
    };
    let mut fmt = device.format()?;
    fmt.width = s.width;
    fmt.height = s.height;
    fmt.fourcc = FourCC::new(&format.fourcc());
    // Let the driver compute the stride for the new size (an old stride is kept otherwise).
    fmt.stride = 0;
    fmt.size = 0;
    let fmt = device.set_format(&fmt).with_context(|| format!("{}: cannot set format", s.device.display()))?;
    if (fmt.width, fmt.height) != (s.width, s.height) {
        log::warn!(
            "{}: asked for {}x{}, the device gives {}x{}",
            s.device.display(),
            s.width,
            s.height,
            fmt.width,
            fmt.height
        );
    }
    let mut stream = Stream::with_buffers(&device, Type::VideoCapture, BUFFERS)
        .with_context(|| format!("{}: cannot map capture buffers", s.device.display()))?;
    stream.set_timeout(s.timeout);
    Ok(Open {
        stream,
        format,
        width: fmt.width,
        height: fmt.height,
        stride: fmt.stride,
        after_timeout: false,
        _device: device,
    })
}

fn classify_io(e: std::io::Error, timeout: Duration) -> CaptureError {
    if e.kind() == std::io::ErrorKind::TimedOut {
        CaptureError::Timeout(timeout)
    } else if e.raw_os_error() == Some(ENODEV) {
        CaptureError::Disconnected(e.to_string())
    } else {
        CaptureError::Fatal(anyhow::anyhow!("streaming error: {e}"))
    }
}

impl FrameSource for V4l2Source {
    fn next_frame(&mut self) -> Result<Option<(&LumaFrame, FrameInfo)>, CaptureError> {
        if self.open.is_none() {
            self.reopen()?;
        }
        let timeout = self.settings.timeout;
        let Some(open) = self.open.as_mut() else {
            return Err(CaptureError::Disconnected("device closed".into()));
        };
        if open.after_timeout {
            match open.stream.dequeue() {
                Ok(_) => open.after_timeout = false,
                Err(e) => {
                    let err = classify_io(e, timeout);
                    if !matches!(err, CaptureError::Timeout(_)) {
                        self.close();
                    }
                    return Err(err);
                }
            }
        }
        let (format, width, height, stride) = (open.format, open.width, open.height, open.stride);
        let (buf, meta) = match open.stream.next() {
            Ok(x) => x,
            Err(e) => {
                let err = classify_io(e, timeout);
                match err {
                    CaptureError::Timeout(_) => open.after_timeout = true,
                    // Unplugged, or a fatal streaming error: close now, reopen (and restart
                    // streaming) on the next call.
                    _ => {
                        self.close();
                        if let CaptureError::Fatal(e) = err {
                            return Err(CaptureError::Disconnected(format!("{e:#}; restarting the stream")));
                        }
                    }
                }
                return Err(err);
            }
        };
        let info = FrameInfo { sequence: self.sequence };
        self.sequence += 1;
        if meta.flags.contains(Flags::ERROR) {
            self.bad_frames += 1;
            return Err(CaptureError::BadFrame(format!("buffer {} flagged ERROR by the driver", meta.sequence)));
        }
        let used = (meta.bytesused as usize).min(buf.len());
        let data = &buf[..used];
        // Repack rows when the driver pads them (stride > packed row length).
        let row_len = format.raw_len(width, 1).unwrap_or(0);
        let data: &[u8] = if format != PixelFormat::Mjpeg && stride as usize > row_len && row_len > 0 {
            let lines = format.raw_len(width, height).unwrap_or(0) / row_len;
            self.packed.clear();
            for line in 0..lines {
                let start = line * stride as usize;
                match data.get(start..start + row_len) {
                    Some(row) => self.packed.extend_from_slice(row),
                    None => break,
                }
            }
            &self.packed
        } else {
            data
        };
        if let Err(e) =
            convert::to_luma(format, self.settings.luma_range, data, width, height, &mut self.frame, &mut self.scratch)
        {
            self.bad_frames += 1;
            return Err(CaptureError::BadFrame(format!("{e:#}")));
        }
        Ok(Some((&self.frame, info)))
    }

    fn describe(&self) -> String {
        format!("v4l2 {}", self.settings.device.display())
    }
}

impl Drop for V4l2Source {
    fn drop(&mut self) {
        self.close();
    }
}

/// What `probe` prints: every /dev/video* device with its formats and sizes.
pub fn probe(dir: &Path) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("video")))
        .collect();
    paths.sort();
    for path in paths {
        let dev = match Device::with_path(&path) {
            Ok(d) => d,
            Err(e) => {
                lines.push(format!("{}: cannot open ({e})", path.display()));
                continue;
            }
        };
        let caps = match dev.query_caps() {
            Ok(c) => c,
            Err(e) => {
                lines.push(format!("{}: not a V4L2 device ({e})", path.display()));
                continue;
            }
        };
        if !caps.capabilities.contains(v4l::capability::Flags::VIDEO_CAPTURE) {
            lines.push(format!("{}: {} (no video capture)", path.display(), caps.card));
            continue;
        }
        lines.push(format!("{}: {} [{}]", path.display(), caps.card, caps.driver));
        for desc in dev.enum_formats().unwrap_or_default() {
            let sizes: Vec<String> = dev
                .enum_framesizes(desc.fourcc)
                .unwrap_or_default()
                .iter()
                .map(|fs| match &fs.size {
                    v4l::framesize::FrameSizeEnum::Discrete(d) => format!("{}x{}", d.width, d.height),
                    v4l::framesize::FrameSizeEnum::Stepwise(s) => {
                        format!("{}x{}..{}x{}", s.min_width, s.min_height, s.max_width, s.max_height)
                    }
                })
                .collect();
            let usable = PixelFormat::from_fourcc(desc.fourcc.repr).is_some();
            lines.push(format!(
                "    {} {}{}: {}",
                desc.fourcc,
                desc.description,
                if usable { "" } else { " (not supported here)" },
                sizes.join(" ")
            ));
        }
    }
    if lines.is_empty() {
        lines.push(format!("no video devices in {}", dir.display()));
    }
    Ok(lines)
}
