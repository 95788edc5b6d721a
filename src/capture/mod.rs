//! Capture stage: frames from a video source, converted to luma.
//!
//! `FrameSource` is deliberately narrow: one call lends the next frame (or says why there is
//! none). Sources: V4L2 capture dongles (Linux), replayed image files and raw dumps, and the
//! built-in scanner simulator.

pub mod convert;
pub mod replay;
pub mod simulated;
pub mod thread;
#[cfg(target_os = "linux")]
pub mod v4l2;

use std::time::Duration;

use crate::frame::LumaFrame;
use crate::geometry::Rect;

pub use convert::{LumaRange, PixelFormat};

/// Why a source had no frame this time. Transient problems are reported, never hidden: the
/// pipeline shows them on the indicator and keeps going.
#[derive(Debug)]
pub enum CaptureError {
    /// No frame within the timeout (stalled dongle, scanner frozen, 100% dropped buffers).
    Timeout(Duration),
    /// The device went away (unplugged); the source will try to reopen it.
    Disconnected(String),
    /// A frame arrived but is unusable (flagged ERROR by the driver, truncated, corrupt JPEG).
    /// It is dropped and counted.
    BadFrame(String),
    /// The source reports it has no input signal (HDMI unplugged at the scanner, no lock).
    NoSignal(String),
    /// The source cannot continue (configuration or permanent device error).
    Fatal(anyhow::Error),
}

impl std::fmt::Display for CaptureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaptureError::Timeout(d) => write!(f, "no frame within {} ms", d.as_millis()),
            CaptureError::Disconnected(why) => write!(f, "capture device disconnected: {why}"),
            CaptureError::BadFrame(why) => write!(f, "bad frame dropped: {why}"),
            CaptureError::NoSignal(why) => write!(f, "no input signal: {why}"),
            CaptureError::Fatal(e) => write!(f, "capture failed: {e:#}"),
        }
    }
}

impl std::error::Error for CaptureError {}

/// Where the lent frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Sequence number within this source, counting every frame delivered.
    pub sequence: u64,
}

/// A frame source. `next_frame` lends a frame valid until the next call; `Ok(None)` means the
/// source has ended (a replay without looping).
pub trait FrameSource {
    fn next_frame(&mut self) -> Result<Option<(&LumaFrame, FrameInfo)>, CaptureError>;

    /// The next frame written into `into`, for a source run on a [`thread::CaptureThread`]. A
    /// source that owns its frame buffer may swap it with `into` instead of copying; the default
    /// copies the lent frame (into `into`'s own buffers: no allocation once warm).
    fn take_frame(&mut self, into: &mut LumaFrame) -> Result<Option<FrameInfo>, CaptureError> {
        Ok(self.next_frame()?.map(|(frame, info)| {
            into.clone_from(frame);
            info
        }))
    }

    /// From the next frame on, convert whole only the pixels inside `window` (and the rows the
    /// screen stage's block sums sample, across the whole width); None converts whole frames.
    /// A hint: the pipeline gives it once it knows which pixels it will read, and a source that
    /// decodes whole images anyway (files, the simulator) keeps doing so.
    fn set_window(&mut self, window: Option<Rect>) {
        let _ = window;
    }

    /// A short description for logs and the audit trail (never patient data).
    fn describe(&self) -> String;
}

impl<T: FrameSource + ?Sized> FrameSource for Box<T> {
    fn next_frame(&mut self) -> Result<Option<(&LumaFrame, FrameInfo)>, CaptureError> {
        (**self).next_frame()
    }

    fn take_frame(&mut self, into: &mut LumaFrame) -> Result<Option<FrameInfo>, CaptureError> {
        (**self).take_frame(into)
    }

    fn set_window(&mut self, window: Option<Rect>) {
        (**self).set_window(window)
    }

    fn describe(&self) -> String {
        (**self).describe()
    }
}
