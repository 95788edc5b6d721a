//! V4L2 capture (USB HDMI/composite dongles, HDMI receivers with DV timings).
//!
//! Streaming is done on raw ioctls (the `v4l` crate supplies the kernel structs and most ioctl
//! numbers, and `probe`): its mmap `Stream` panics in `drop` when STREAMOFF fails, re-queues a
//! buffer before the next dequeue can fail, and cannot wait for V4L2 events.
//!
//! What the source handles, and what it reports (tested against the kernel's `vivid` driver,
//! docs/vivid.md):
//! - no signal / no lock / out of range on an HDMI input: a receiver often keeps delivering
//!   full-rate noise frames. A SOURCE_CHANGE event, VIDIOC_QUERY_DV_TIMINGS failing with ENOLINK /
//!   ENOLCK / ERANGE, or the input status (NO_POWER, NO_SIGNAL, NO_H_LOCK, ...) tell: such frames
//!   are dropped and `NoSignal` returned until the input locks again. The status is polled too
//!   (every second, every 250 ms while lost), for drivers without events.
//! - resolution change (new DV timings, announced by SOURCE_CHANGE): the stream is stopped, the
//!   new timings set and the format renegotiated; frames come at the new size.
//! - no frame within the timeout (stalled device, 100% dropped buffers): `Timeout`.
//! - buffers flagged ERROR by the driver: re-queued, counted, `BadFrame`.
//! - fatal streaming error (poll reports POLLERR, DQBUF/QBUF fail with EIO): the stream is
//!   restarted in place (STREAMOFF, queue all, STREAMON); if that fails, the device is reopened.
//! - unplug (ENODEV, POLLHUP): `Disconnected`; the device is reopened with exponential backoff
//!   (250 ms .. 5 s), without blocking the caller for longer than the frame timeout.
//!
//! The per-frame path (poll, DQBUF, convert, QBUF) does not allocate.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use v4l::v4l_sys::{
    V4L2_BUF_FLAG_ERROR, V4L2_CAP_DEVICE_CAPS, V4L2_CAP_STREAMING, V4L2_CAP_VIDEO_CAPTURE, V4L2_EVENT_SOURCE_CHANGE,
    V4L2_EVENT_SRC_CH_RESOLUTION, V4L2_IN_CAP_DV_TIMINGS, V4L2_IN_ST_NO_CARRIER, V4L2_IN_ST_NO_H_LOCK,
    V4L2_IN_ST_NO_POWER, V4L2_IN_ST_NO_SIGNAL, V4L2_IN_ST_NO_STD_LOCK, V4L2_IN_ST_NO_SYNC, V4L2_IN_ST_NO_V_LOCK,
    v4l2_buffer, v4l2_capability, v4l2_dv_timings, v4l2_event, v4l2_event_subscription, v4l2_fmtdesc, v4l2_format,
    v4l2_input, v4l2_requestbuffers,
};
use v4l::v4l2::vidioc;
use v4l::{Device, FourCC};

use super::convert::{self, LumaRange, PixelFormat};
use super::{CaptureError, FrameInfo, FrameSource};
use crate::frame::LumaFrame;
use crate::geometry::Rect;

const BUFFERS: u32 = 4;
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the input status is read while the signal is good / lost.
const CHECK_LOCKED: Duration = Duration::from_secs(1);
const CHECK_LOST: Duration = Duration::from_millis(250);
/// Stream restarts without a good frame in between before the device is reopened instead.
const MAX_RESTARTS: u32 = 3;
/// A high share of frames skipped by the driver is logged at most this often.
const GAP_LOG_INTERVAL: Duration = Duration::from_secs(5);

const BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
const MEMORY_MMAP: u32 = 1;
/// The input status bits that mean "no usable picture".
const NO_PICTURE: u32 = V4L2_IN_ST_NO_POWER
    | V4L2_IN_ST_NO_SIGNAL
    | V4L2_IN_ST_NO_H_LOCK
    | V4L2_IN_ST_NO_V_LOCK
    | V4L2_IN_ST_NO_STD_LOCK
    | V4L2_IN_ST_NO_SYNC
    | V4L2_IN_ST_NO_CARRIER;

/// ioctl numbers `v4l` 0.14 does not define (linux/videodev2.h; the generic _IOC encoding that
/// x86 and ARM share).
mod ioc {
    use std::mem::size_of;

    use v4l::v4l_sys::{v4l2_dv_timings, v4l2_event, v4l2_event_subscription};
    use v4l::v4l2::vidioc::_IOC_TYPE;

    const WRITE: u32 = 1;
    const READ: u32 = 2;

    const fn ioc(dir: u32, nr: u32, size: usize) -> _IOC_TYPE {
        ((dir as _IOC_TYPE) << 30) | ((size as _IOC_TYPE) << 16) | ((b'V' as _IOC_TYPE) << 8) | nr as _IOC_TYPE
    }

    pub const S_DV_TIMINGS: _IOC_TYPE = ioc(READ | WRITE, 87, size_of::<v4l2_dv_timings>());
    pub const G_DV_TIMINGS: _IOC_TYPE = ioc(READ | WRITE, 88, size_of::<v4l2_dv_timings>());
    pub const DQEVENT: _IOC_TYPE = ioc(READ, 89, size_of::<v4l2_event>());
    pub const SUBSCRIBE_EVENT: _IOC_TYPE = ioc(WRITE, 90, size_of::<v4l2_event_subscription>());
    pub const QUERY_DV_TIMINGS: _IOC_TYPE = ioc(READ, 99, size_of::<v4l2_dv_timings>());
}

pub struct V4l2Settings {
    pub device: PathBuf,
    pub width: u32,
    pub height: u32,
    /// Preference order; the first one the device offers is used.
    pub formats: Vec<PixelFormat>,
    pub timeout: Duration,
    pub luma_range: LumaRange,
}

/// An all-zero kernel struct.
fn zeroed<T: Copy>() -> T {
    // SAFETY: only used for the plain-data videodev2 structs above (integers, arrays, unions of
    // them, nullable pointers), for which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

/// One ioctl on `fd` with `arg` as its argument, retried on EINTR.
fn xioctl<T>(fd: RawFd, request: vidioc::_IOC_TYPE, arg: &mut T) -> io::Result<()> {
    loop {
        // SAFETY: `arg` is the argument type `request` encodes (sizes checked in the tests) and
        // lives for the whole call.
        match unsafe { v4l::v4l2::ioctl(fd, request, (arg as *mut T).cast()) } {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

fn stream_on_off(fd: RawFd, on: bool) -> io::Result<()> {
    let mut typ = BUF_TYPE_VIDEO_CAPTURE as i32;
    xioctl(fd, if on { vidioc::VIDIOC_STREAMON } else { vidioc::VIDIOC_STREAMOFF }, &mut typ)
}

fn queue(fd: RawFd, index: u32) -> io::Result<()> {
    let mut buf: v4l2_buffer = zeroed();
    buf.index = index;
    buf.type_ = BUF_TYPE_VIDEO_CAPTURE;
    buf.memory = MEMORY_MMAP;
    xioctl(fd, vidioc::VIDIOC_QBUF, &mut buf)
}

fn request_buffers(fd: RawFd, count: u32) -> io::Result<u32> {
    let mut req: v4l2_requestbuffers = zeroed();
    req.count = count;
    req.type_ = BUF_TYPE_VIDEO_CAPTURE;
    req.memory = MEMORY_MMAP;
    xioctl(fd, vidioc::VIDIOC_REQBUFS, &mut req)?;
    Ok(req.count)
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// The parts of a DV timing that make it a different video mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timings {
    width: u32,
    height: u32,
    interlaced: bool,
    pixelclock: u64,
    total_width: u32,
    total_height: u32,
}

impl Timings {
    fn from_raw(t: &v4l2_dv_timings) -> Self {
        // SAFETY: type 0 (V4L2_DV_BT_656_1120) is the only kind of DV timings; `bt` is the
        // union's only member besides padding. Fields of the packed struct are copied out.
        let bt = unsafe { t.__bindgen_anon_1.bt };
        let (w, h, hfp, hs, hbp, vfp, vs, vbp) =
            (bt.width, bt.height, bt.hfrontporch, bt.hsync, bt.hbackporch, bt.vfrontporch, bt.vsync, bt.vbackporch);
        Self {
            width: w,
            height: h,
            interlaced: bt.interlaced != 0,
            pixelclock: bt.pixelclock,
            total_width: w + hfp + hs + hbp,
            total_height: h + vfp + vs + vbp,
        }
    }
}

impl Timings {
    /// The same video mode: equal active size and scan, totals within a line or two and the
    /// pixel clock within 0.5 % (receivers that measure it report a slightly different value
    /// each time; 59.94 and 60 Hz count as the same mode, as in V4L2).
    fn same_mode(&self, other: &Self) -> bool {
        let close = |a: u32, b: u32| a.abs_diff(b) <= 2;
        let clock_delta = self.pixelclock.abs_diff(other.pixelclock);
        (self.width, self.height, self.interlaced) == (other.width, other.height, other.interlaced)
            && close(self.total_width, other.total_width)
            && close(self.total_height, other.total_height)
            && clock_delta * 200 <= self.pixelclock.max(other.pixelclock)
    }
}

impl std::fmt::Display for Timings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total = u64::from(self.total_width) * u64::from(self.total_height);
        let fps = if total == 0 { 0.0 } else { self.pixelclock as f64 / total as f64 };
        write!(f, "{}x{}{}{:.2}", self.width, self.height, if self.interlaced { "i" } else { "p" }, fps)
    }
}

/// What the input says about its signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// Locked; for a DV input, at these timings.
    Locked(Option<Timings>),
    /// No usable picture, and why.
    Lost(&'static str),
}

/// A mapped capture buffer.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned (unmapped in drop) and only read through `&self`.
unsafe impl Send for Mapping {}

impl Mapping {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until drop.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` came from a successful mmap and are unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// An open, streaming device.
struct Open {
    maps: Vec<Mapping>,
    fd: OwnedFd,
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: u32,
    /// The current input takes DV timings (HDMI/DVI receiver), and its current timings.
    dv: Option<Timings>,
    /// Subscribed to source-change events.
    events: bool,
    input: u32,
    streaming: bool,
    /// A buffer could not be queued again: restart the stream before the next dequeue.
    restart: bool,
}

impl Open {
    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Stops streaming, queues every buffer again and restarts.
    fn restart_stream(&mut self) -> io::Result<()> {
        let fd = self.raw();
        self.streaming = false;
        stream_on_off(fd, false)?;
        for index in 0..self.maps.len() as u32 {
            queue(fd, index)?;
        }
        stream_on_off(fd, true)?;
        self.streaming = true;
        self.restart = false;
        Ok(())
    }

    /// Reads the input's signal state: DV timings query first (HDMI), then the input status.
    fn signal(&self) -> io::Result<Signal> {
        let fd = self.raw();
        let mut locked = None;
        if self.dv.is_some() {
            let mut t: v4l2_dv_timings = zeroed();
            match xioctl(fd, ioc::QUERY_DV_TIMINGS, &mut t) {
                Ok(()) => locked = Some(Timings::from_raw(&t)),
                Err(e) => match errno(&e) {
                    libc::ENOLINK => return Ok(Signal::Lost("no signal (no link)")),
                    libc::ENOLCK => return Ok(Signal::Lost("no lock")),
                    libc::ERANGE => return Ok(Signal::Lost("signal out of range")),
                    libc::ENODEV => return Err(e),
                    _ => {}
                },
            }
        }
        let mut inp: v4l2_input = zeroed();
        inp.index = self.input;
        match xioctl(fd, vidioc::VIDIOC_ENUMINPUT, &mut inp) {
            Ok(()) => {
                let status = inp.status & NO_PICTURE;
                if status & (V4L2_IN_ST_NO_POWER | V4L2_IN_ST_NO_SIGNAL | V4L2_IN_ST_NO_CARRIER) != 0 {
                    return Ok(Signal::Lost("no signal"));
                }
                if status != 0 {
                    return Ok(Signal::Lost("no lock"));
                }
            }
            Err(e) if errno(&e) == libc::ENODEV => return Err(e),
            Err(_) => {}
        }
        Ok(Signal::Locked(locked))
    }

    /// Drains pending events; true if one says the source changed.
    fn take_events(&mut self) -> io::Result<bool> {
        let mut changed = false;
        let mut ev: v4l2_event = zeroed();
        loop {
            match xioctl(self.raw(), ioc::DQEVENT, &mut ev) {
                Ok(()) => {
                    if ev.type_ == V4L2_EVENT_SOURCE_CHANGE {
                        // SAFETY: the kernel filled the union member matching `type_`.
                        let changes = unsafe { ev.u.src_change.changes };
                        changed |= changes & V4L2_EVENT_SRC_CH_RESOLUTION != 0;
                    }
                    if ev.pending == 0 {
                        return Ok(changed);
                    }
                }
                // ENOENT: no event pending.
                Err(e) if errno(&e) == libc::ENOENT => return Ok(changed),
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let fd = self.raw();
        if self.streaming
            && let Err(e) = stream_on_off(fd, false)
        {
            // Closing the file releases the queue anyway; nothing to panic about.
            log::debug!("STREAMOFF on close failed: {e}");
        }
        self.maps.clear();
        let _ = request_buffers(fd, 0);
        // `fd` closes when the field drops.
    }
}

/// What waiting for a frame gave.
enum Wait {
    /// A dequeued buffer: index, bytes used, flags, driver sequence.
    Frame {
        index: u32,
        used: u32,
        flags: u32,
        sequence: u32,
    },
    /// The source changed (event); check the signal before going on.
    SourceChange,
    Timeout,
    /// The stream failed (EIO and the like): restart it.
    StreamError(io::Error),
    /// The device went away.
    Gone(String),
}

fn wait_frame(open: &mut Open, deadline: Instant) -> Wait {
    let fd = open.raw();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Wait::Timeout;
        }
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN | libc::POLLPRI, revents: 0 };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Wait::StreamError(e);
        }
        if n == 0 {
            return Wait::Timeout;
        }
        if pfd.revents & (libc::POLLHUP | libc::POLLNVAL) != 0 {
            return Wait::Gone("device hung up".into());
        }
        if pfd.revents & libc::POLLPRI != 0 && open.events {
            match open.take_events() {
                Ok(true) => return Wait::SourceChange,
                Ok(false) => {}
                Err(e) if errno(&e) == libc::ENODEV => return Wait::Gone(e.to_string()),
                Err(e) => log::debug!("DQEVENT failed: {e}"),
            }
        }
        if pfd.revents & (libc::POLLIN | libc::POLLERR) == 0 {
            continue;
        }
        let mut buf: v4l2_buffer = zeroed();
        buf.type_ = BUF_TYPE_VIDEO_CAPTURE;
        buf.memory = MEMORY_MMAP;
        return match xioctl(fd, vidioc::VIDIOC_DQBUF, &mut buf) {
            Ok(()) if (buf.index as usize) < open.maps.len() => {
                Wait::Frame { index: buf.index, used: buf.bytesused, flags: buf.flags, sequence: buf.sequence }
            }
            Ok(()) => Wait::StreamError(io::Error::other(format!("driver returned buffer index {}", buf.index))),
            Err(e) if errno(&e) == libc::EAGAIN => continue,
            Err(e) if errno(&e) == libc::ENODEV => Wait::Gone(e.to_string()),
            Err(e) => Wait::StreamError(e),
        };
    }
}

fn open_device(s: &V4l2Settings) -> Result<Open> {
    let dev = s.device.display();
    let path = CString::new(s.device.as_os_str().as_bytes()).context("device path contains a NUL byte")?;
    // SAFETY: a valid C string; the returned descriptor is owned below.
    let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("cannot open capture device {dev}"));
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let f = fd.as_raw_fd();

    let mut caps: v4l2_capability = zeroed();
    xioctl(f, vidioc::VIDIOC_QUERYCAP, &mut caps).with_context(|| format!("{dev} is not a V4L2 device"))?;
    let device_caps = if caps.capabilities & V4L2_CAP_DEVICE_CAPS != 0 { caps.device_caps } else { caps.capabilities };
    let card = String::from_utf8_lossy(caps.card.split(|&b| b == 0).next().unwrap_or_default()).into_owned();
    if device_caps & V4L2_CAP_VIDEO_CAPTURE == 0 {
        bail!("{dev} ({card}) cannot capture video (single-planar)");
    }
    if device_caps & V4L2_CAP_STREAMING == 0 {
        bail!("{dev} ({card}) cannot stream");
    }

    // The current input, and whether it takes DV timings (HDMI): then lock to what it receives.
    let mut input = 0i32;
    let mut dv = None;
    if xioctl(f, vidioc::VIDIOC_G_INPUT, &mut input).is_ok() {
        let mut inp: v4l2_input = zeroed();
        inp.index = input as u32;
        if xioctl(f, vidioc::VIDIOC_ENUMINPUT, &mut inp).is_ok() && inp.capabilities & V4L2_IN_CAP_DV_TIMINGS != 0 {
            let mut current: v4l2_dv_timings = zeroed();
            xioctl(f, ioc::G_DV_TIMINGS, &mut current).with_context(|| format!("{dev}: cannot read DV timings"))?;
            let mut detected: v4l2_dv_timings = zeroed();
            match xioctl(f, ioc::QUERY_DV_TIMINGS, &mut detected) {
                Ok(()) if !Timings::from_raw(&detected).same_mode(&Timings::from_raw(&current)) => {
                    xioctl(f, ioc::S_DV_TIMINGS, &mut detected).with_context(|| {
                        format!("{dev}: cannot set the detected DV timings {}", Timings::from_raw(&detected))
                    })?;
                    log::info!(
                        "{dev}: input timings {} -> {}",
                        Timings::from_raw(&current),
                        Timings::from_raw(&detected)
                    );
                    current = detected;
                }
                Ok(()) => {}
                // No signal now: keep the current timings; `Signal` reports it.
                Err(e) => log::debug!("{dev}: QUERY_DV_TIMINGS: {e}"),
            }
            dv = Some(Timings::from_raw(&current));
        }
    }

    let mut offered = Vec::new();
    for index in 0.. {
        let mut desc: v4l2_fmtdesc = zeroed();
        desc.index = index;
        desc.type_ = BUF_TYPE_VIDEO_CAPTURE;
        if xioctl(f, vidioc::VIDIOC_ENUM_FMT, &mut desc).is_err() {
            break;
        }
        offered.push(desc.pixelformat);
    }
    let code = |p: PixelFormat| u32::from_le_bytes(p.fourcc());
    let Some(format) = s.formats.iter().copied().find(|&p| offered.contains(&code(p))) else {
        let names: Vec<String> = offered.iter().map(|&c| FourCC::from(c).to_string()).collect();
        bail!("{dev} offers {} but none of the configured formats {:?}", names.join(", "), s.formats);
    };

    let mut fmt: v4l2_format = zeroed();
    fmt.type_ = BUF_TYPE_VIDEO_CAPTURE;
    xioctl(f, vidioc::VIDIOC_G_FMT, &mut fmt).with_context(|| format!("{dev}: cannot read the format"))?;
    // SAFETY: `pix` is the union member for VIDEO_CAPTURE.
    let pix = unsafe { &mut fmt.fmt.pix };
    pix.width = s.width;
    pix.height = s.height;
    pix.pixelformat = code(format);
    pix.field = 0; // V4L2_FIELD_ANY
    // Let the driver compute the stride for the new size (an old stride is kept otherwise).
    pix.bytesperline = 0;
    pix.sizeimage = 0;
    xioctl(f, vidioc::VIDIOC_S_FMT, &mut fmt).with_context(|| format!("{dev}: cannot set format"))?;
    // SAFETY: as above.
    let pix = unsafe { fmt.fmt.pix };
    if pix.pixelformat != code(format) {
        bail!("{dev}: asked for {format:?}, the driver chose {}", FourCC::from(pix.pixelformat));
    }
    if (pix.width, pix.height) != (s.width, s.height) {
        log::warn!("{dev}: asked for {}x{}, the device gives {}x{}", s.width, s.height, pix.width, pix.height);
    }

    // Events before streaming, so no change goes unnoticed. Not every driver has them.
    let mut sub: v4l2_event_subscription = zeroed();
    sub.type_ = V4L2_EVENT_SOURCE_CHANGE;
    sub.id = input as u32;
    let events = match xioctl(f, ioc::SUBSCRIBE_EVENT, &mut sub) {
        Ok(()) => true,
        Err(e) => {
            log::debug!("{dev}: no source-change events ({e})");
            false
        }
    };

    let count = request_buffers(f, BUFFERS).with_context(|| format!("{dev}: cannot allocate capture buffers"))?;
    if count < 2 {
        bail!("{dev}: the driver gave {count} capture buffer(s)");
    }
    let mut open = Open {
        maps: Vec::with_capacity(count as usize),
        fd,
        format,
        width: pix.width,
        height: pix.height,
        stride: pix.bytesperline,
        dv,
        events,
        input: input as u32,
        streaming: false,
        restart: false,
    };
    for index in 0..count {
        let mut buf: v4l2_buffer = zeroed();
        buf.index = index;
        buf.type_ = BUF_TYPE_VIDEO_CAPTURE;
        buf.memory = MEMORY_MMAP;
        xioctl(f, vidioc::VIDIOC_QUERYBUF, &mut buf).with_context(|| format!("{dev}: cannot query buffer {index}"))?;
        let len = buf.length as usize;
        // SAFETY: maps a buffer the driver just described; unmapped by `Mapping::drop`.
        let ptr = unsafe {
            // SAFETY: `offset` is the union member for MMAP buffers.
            let offset = buf.m.offset;
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, f, offset as libc::off_t)
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error()).with_context(|| format!("{dev}: cannot map buffer {index}"));
        }
        open.maps.push(Mapping { ptr: ptr.cast(), len });
        queue(f, index).with_context(|| format!("{dev}: cannot queue buffer {index}"))?;
    }
    stream_on_off(f, true).with_context(|| format!("{dev}: cannot start streaming"))?;
    open.streaming = true;
    Ok(open)
}

/// Bytes of one line of the first plane, and the number of such lines in a frame (NV12's
/// chroma plane follows with the same stride).
fn line_layout(format: PixelFormat, width: u32, height: u32) -> Option<(usize, usize)> {
    let (w, h) = (width as usize, height as usize);
    match format {
        PixelFormat::Yuyv => Some((w * 2, h)),
        PixelFormat::Nv12 => Some((w, h + h / 2)),
        PixelFormat::Grey => Some((w, h)),
        PixelFormat::Rgb24 => Some((w * 3, h)),
        PixelFormat::Mjpeg => None,
    }
}

pub struct V4l2Source {
    settings: V4l2Settings,
    open: Option<Open>,
    frame: LumaFrame,
    packed: Vec<u8>,
    scratch: Vec<u8>,
    sequence: u64,
    /// [`FrameSource::set_window`]: converted whole only inside it (a mode change makes it not
    /// fit, and whole frames are converted until the pipeline gives a new one).
    window: Option<Rect>,
    backoff: Duration,
    next_attempt: Instant,
    bad_frames: u64,
    restarts: u64,
    restarts_without_frame: u32,
    reopens: u64,
    /// Why the input has no usable picture, while it has none.
    lost: Option<&'static str>,
    check_now: bool,
    next_check: Instant,
    last_driver_sequence: Option<u32>,
    driver_skipped: u64,
    next_gap_log: Instant,
    heartbeat: Heartbeat,
}

impl V4l2Source {
    /// Opens the device now, so a missing or unsuitable device is a start-up error. An input
    /// without signal is not: that is reported frame by frame.
    pub fn open(settings: V4l2Settings) -> Result<Self> {
        let open = open_device(&settings)?;
        let now = Instant::now();
        let mut source = Self {
            settings,
            open: None,
            frame: LumaFrame::default(),
            packed: Vec::new(),
            scratch: Vec::new(),
            sequence: 0,
            window: None,
            backoff: MIN_BACKOFF,
            next_attempt: now,
            bad_frames: 0,
            restarts: 0,
            restarts_without_frame: 0,
            reopens: 0,
            lost: None,
            check_now: true,
            next_check: now,
            last_driver_sequence: None,
            driver_skipped: 0,
            next_gap_log: now,
            heartbeat: Heartbeat::default(),
        };
        source.started(open);
        Ok(source)
    }

    /// Frames dropped as unusable (ERROR flag, truncated).
    pub fn bad_frames(&self) -> u64 {
        self.bad_frames
    }

    /// Stream restarts after fatal streaming errors.
    pub fn stream_restarts(&self) -> u64 {
        self.restarts
    }

    /// Successful reopens (after unplug, failed restart or resolution change).
    pub fn reopens(&self) -> u64 {
        self.reopens
    }

    /// Frames the driver skipped (gaps in its sequence numbers).
    pub fn driver_skipped(&self) -> u64 {
        self.driver_skipped
    }

    fn started(&mut self, open: Open) {
        log::info!(
            "{}: streaming {:?} {}x{} (stride {}){}{}",
            self.settings.device.display(),
            open.format,
            open.width,
            open.height,
            open.stride,
            open.dv.map(|t| format!(", DV timings {t}")).unwrap_or_default(),
            if open.events { ", source-change events" } else { "" },
        );
        self.open = Some(open);
        self.check_now = true;
        self.last_driver_sequence = None;
    }

    fn close(&mut self) {
        self.open = None;
    }

    /// Closes the device and reports it gone; the next call reopens it after the backoff.
    fn lose_device(&mut self, why: String) -> CaptureError {
        log::warn!("{}: {why}; closing, will reopen", self.settings.device.display());
        self.close();
        self.next_attempt = Instant::now() + self.backoff;
        CaptureError::Disconnected(why)
    }

    /// Reopens the device when the backoff allows, waiting at most one frame timeout so the
    /// caller stays responsive (signals, indicator).
    fn reopen(&mut self) -> Result<(), CaptureError> {
        let now = Instant::now();
        if now < self.next_attempt {
            let wait = self.next_attempt - now;
            if wait > self.settings.timeout {
                std::thread::sleep(self.settings.timeout);
                return Err(CaptureError::Disconnected(format!(
                    "{} closed, next attempt in {} ms",
                    self.settings.device.display(),
                    (wait - self.settings.timeout).as_millis()
                )));
            }
            std::thread::sleep(wait);
        }
        self.open_now()
    }

    fn open_now(&mut self) -> Result<(), CaptureError> {
        match open_device(&self.settings) {
            Ok(open) => {
                self.reopens += 1;
                self.backoff = MIN_BACKOFF;
                log::info!("{}: reopened", self.settings.device.display());
                self.started(open);
                Ok(())
            }
            Err(e) => {
                self.next_attempt = Instant::now() + self.backoff;
                log::warn!(
                    "{}: reopen failed: {e:#}; next attempt in {} ms",
                    self.settings.device.display(),
                    self.backoff.as_millis()
                );
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                Err(CaptureError::Disconnected(format!("{e:#}")))
            }
        }
    }

    /// Reads the signal state; renegotiates when the input now carries different timings.
    fn check_signal(&mut self) -> Result<(), CaptureError> {
        self.check_now = false;
        let Some(open) = self.open.as_ref() else { return Ok(()) };
        let signal = match open.signal() {
            Ok(s) => s,
            Err(e) => return Err(self.lose_device(e.to_string())),
        };
        let now = Instant::now();
        match signal {
            Signal::Lost(why) => {
                if self.lost != Some(why) {
                    log::warn!("{}: {why}; frames are dropped until the input locks", self.settings.device.display());
                }
                self.lost = Some(why);
                self.next_check = now + CHECK_LOST;
            }
            Signal::Locked(Some(t)) if open.dv.is_none_or(|current| !current.same_mode(&t)) => {
                log::info!(
                    "{}: source changed to {t} (was {}); renegotiating",
                    self.settings.device.display(),
                    open.dv.map(|t| t.to_string()).unwrap_or_default()
                );
                self.lost = None;
                self.close();
                self.open_now()?;
            }
            Signal::Locked(_) => {
                if let Some(why) = self.lost.take() {
                    log::info!("{}: input locked again (was: {why})", self.settings.device.display());
                }
                self.next_check = now + CHECK_LOCKED;
            }
        }
        Ok(())
    }

    /// Counts frames the driver skipped (gaps in its sequence numbers).
    fn note_sequence(&mut self, sequence: u32) {
        if let Some(last) = self.last_driver_sequence {
            let gap = sequence.wrapping_sub(last).wrapping_sub(1);
            if gap > 0 && gap < u32::MAX / 2 {
                self.driver_skipped += u64::from(gap);
                self.heartbeat.skipped += u64::from(gap);
            }
        }
        self.last_driver_sequence = Some(sequence);
    }
}

impl V4l2Source {
    /// One frame into `self.frame`, or why there is none.
    fn capture(&mut self) -> Result<FrameInfo, CaptureError> {
        if self.open.is_none() {
            self.reopen()?;
        }
        let timeout = self.settings.timeout;
        let deadline = Instant::now() + timeout;
        loop {
            if self.check_now || Instant::now() >= self.next_check {
                self.check_signal()?;
            }
            let Some(open) = self.open.as_mut() else {
                return Err(CaptureError::Disconnected("device closed".into()));
            };
            if open.restart {
                if let Err(e) = open.restart_stream() {
                    return Err(self.lose_device(format!("cannot restart streaming: {e}")));
                }
                self.last_driver_sequence = None;
                continue;
            }
            match wait_frame(open, deadline) {
                Wait::Frame { index, used, flags, sequence } => {
                    self.note_sequence(sequence);
                    let info = FrameInfo { sequence: self.sequence };
                    self.sequence += 1;
                    let Some(open) = self.open.as_mut() else { unreachable!("open above") };
                    let result = if let Some(why) = self.lost {
                        // Noise from a receiver without lock: never a picture.
                        Err(CaptureError::NoSignal(why.to_string()))
                    } else if flags & V4L2_BUF_FLAG_ERROR != 0 {
                        self.bad_frames += 1;
                        Err(CaptureError::BadFrame(format!("buffer {sequence} flagged ERROR by the driver")))
                    } else {
                        let (format, width, height, stride) = (open.format, open.width, open.height, open.stride);
                        let buf = open.maps[index as usize].bytes();
                        let data = &buf[..(used as usize).min(buf.len())];
                        // Repack rows when the driver pads them (stride > packed line length).
                        let data: &[u8] = match line_layout(format, width, height) {
                            Some((line, lines)) if stride as usize > line => {
                                self.packed.clear();
                                for row in data.chunks(stride as usize).take(lines) {
                                    self.packed.extend_from_slice(&row[..line.min(row.len())]);
                                }
                                &self.packed
                            }
                            _ => data,
                        };
                        convert::to_luma(
                            self.window,
                            format,
                            self.settings.luma_range,
                            data,
                            width,
                            height,
                            &mut self.frame,
                            &mut self.scratch,
                        )
                        .map_err(|e| {
                            self.bad_frames += 1;
                            CaptureError::BadFrame(format!("{e:#}"))
                        })
                    };
                    // The frame is copied out: hand the buffer back at once.
                    if let Err(e) = queue(open.raw(), index) {
                        if errno(&e) == libc::ENODEV {
                            return Err(self.lose_device(format!("QBUF: {e}")));
                        }
                        log::warn!("{}: QBUF failed ({e}); restarting the stream", self.settings.device.display());
                        open.restart = true;
                        self.restarts += 1;
                    }
                    result?;
                    self.restarts_without_frame = 0;
                    return Ok(info);
                }
                Wait::SourceChange => {
                    log::info!("{}: source change event", self.settings.device.display());
                    self.check_now = true;
                }
                Wait::Timeout => {
                    // A receiver that stops delivering without signal: say so, not "stalled".
                    self.check_signal()?;
                    return Err(match self.lost {
                        Some(why) => CaptureError::NoSignal(why.to_string()),
                        None => CaptureError::Timeout(timeout),
                    });
                }
                Wait::StreamError(e) => {
                    self.restarts += 1;
                    self.restarts_without_frame += 1;
                    if self.restarts_without_frame > MAX_RESTARTS {
                        self.restarts_without_frame = 0;
                        return Err(self.lose_device(format!("streaming keeps failing ({e})")));
                    }
                    log::warn!(
                        "{}: streaming error ({e}); restarting the stream (restart #{})",
                        self.settings.device.display(),
                        self.restarts
                    );
                    let Some(open) = self.open.as_mut() else { unreachable!("open above") };
                    if let Err(e2) = open.restart_stream() {
                        return Err(self.lose_device(format!("cannot restart streaming after {e}: {e2}")));
                    }
                    self.last_driver_sequence = None;
                }
                Wait::Gone(why) => return Err(self.lose_device(why)),
            }
        }
    }

    /// About once a second: a debug heartbeat of what the source delivered (for tests and field
    /// logs), and a warning when the driver skipped many frames. A clock read per frame.
    fn beat(&mut self, result: &Result<FrameInfo, CaptureError>) {
        let b = &mut self.heartbeat;
        match result {
            Ok(_) => b.frames += 1,
            Err(CaptureError::NoSignal(_)) => b.no_signal += 1,
            Err(CaptureError::BadFrame(_)) => b.bad += 1,
            Err(CaptureError::Timeout(_)) => b.timeouts += 1,
            Err(CaptureError::Disconnected(_)) => b.disconnected += 1,
            Err(CaptureError::Fatal(_)) => {}
        }
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(b.since);
        if elapsed < Duration::from_secs(1) {
            return;
        }
        let dev = self.settings.device.display();
        let delivered = b.frames + b.no_signal + b.bad;
        // More than a quarter of the frames lost: worth a warning (rate-limited).
        if b.skipped * 4 > delivered + b.skipped && now >= self.next_gap_log {
            log::warn!(
                "{dev}: the driver skipped {} of {} frames in the last {:.1} s ({} in all)",
                b.skipped,
                delivered + b.skipped,
                elapsed.as_secs_f32(),
                self.driver_skipped
            );
            self.next_gap_log = now + GAP_LOG_INTERVAL;
        }
        if log::log_enabled!(log::Level::Debug) {
            let (w, h) = self.open.as_ref().map(|o| (o.width, o.height)).unwrap_or_default();
            log::debug!(
                "{dev}: {} frames ({w}x{h}), {} no-signal, {} bad, {} skipped by the driver, {} timeouts, \
                 {} disconnected in {:.1} s",
                b.frames,
                b.no_signal,
                b.bad,
                b.skipped,
                b.timeouts,
                b.disconnected,
                elapsed.as_secs_f32()
            );
        }
        *b = Heartbeat { since: now, ..Heartbeat::default() };
    }
}

#[derive(Debug, Clone, Copy)]
struct Heartbeat {
    since: Instant,
    frames: u64,
    no_signal: u64,
    bad: u64,
    skipped: u64,
    timeouts: u64,
    disconnected: u64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self { since: Instant::now(), frames: 0, no_signal: 0, bad: 0, skipped: 0, timeouts: 0, disconnected: 0 }
    }
}

impl FrameSource for V4l2Source {
    fn next_frame(&mut self) -> Result<Option<(&LumaFrame, FrameInfo)>, CaptureError> {
        let result = self.capture();
        self.beat(&result);
        result.map(|info| Some((&self.frame, info)))
    }

    /// The converted frame changes hands without a copy; the next conversion writes into the
    /// buffer `into` held (same size once warm: no allocation).
    fn take_frame(&mut self, into: &mut LumaFrame) -> Result<Option<FrameInfo>, CaptureError> {
        let result = self.capture();
        self.beat(&result);
        let info = result?;
        std::mem::swap(&mut self.frame, into);
        Ok(Some(info))
    }

    fn set_window(&mut self, window: Option<Rect>) {
        self.window = window;
    }

    fn describe(&self) -> String {
        format!("v4l2 {}", self.settings.device.display())
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
        for desc in v4l::video::Capture::enum_formats(&dev).unwrap_or_default() {
            let sizes: Vec<String> = v4l::video::Capture::enum_framesizes(&dev, desc.fourcc)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers linux/videodev2.h gives on 64-bit targets.
    #[test]
    #[cfg(all(target_pointer_width = "64", not(target_env = "musl")))]
    fn ioctl_numbers_match_videodev2() {
        assert_eq!(ioc::S_DV_TIMINGS, 0xc084_5657);
        assert_eq!(ioc::G_DV_TIMINGS, 0xc084_5658);
        assert_eq!(ioc::DQEVENT, 0x8088_5659);
        assert_eq!(ioc::SUBSCRIBE_EVENT, 0x4020_565a);
        assert_eq!(ioc::QUERY_DV_TIMINGS, 0x8084_5663);
    }

    #[test]
    fn line_layouts() {
        assert_eq!(line_layout(PixelFormat::Yuyv, 1280, 720), Some((2560, 720)));
        assert_eq!(line_layout(PixelFormat::Nv12, 1280, 720), Some((1280, 1080)));
        assert_eq!(line_layout(PixelFormat::Mjpeg, 1280, 720), None);
    }

    #[test]
    fn timings_show_rate() {
        let t = Timings {
            width: 1280,
            height: 720,
            interlaced: false,
            pixelclock: 74_250_000,
            total_width: 1650,
            total_height: 750,
        };
        assert_eq!(t.to_string(), "1280x720p60.00");
    }

    #[test]
    fn same_mode_tolerates_measured_clocks() {
        let p60 = Timings {
            width: 1920,
            height: 1080,
            interlaced: false,
            pixelclock: 148_500_000,
            total_width: 2200,
            total_height: 1125,
        };
        let measured = Timings { pixelclock: 148_351_648, ..p60 };
        assert!(p60.same_mode(&measured), "59.94 Hz is the same mode");
        assert!(!p60.same_mode(&Timings { pixelclock: 123_750_000, ..p60 }), "50 Hz is another mode");
        assert!(!p60.same_mode(&Timings { width: 1280, height: 720, ..p60 }));
        assert!(!p60.same_mode(&Timings { interlaced: true, ..p60 }));
    }

    #[test]
    fn missing_device_is_a_startup_error() {
        let settings = V4l2Settings {
            device: PathBuf::from("/dev/this-video-device-does-not-exist"),
            width: 640,
            height: 480,
            formats: vec![PixelFormat::Yuyv],
            timeout: Duration::from_millis(100),
            luma_range: LumaRange::Limited,
        };
        let err = V4l2Source::open(settings).err().expect("no such device");
        assert!(format!("{err:#}").contains("cannot open capture device"), "{err:#}");
    }
}
