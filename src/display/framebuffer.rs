//! Linux framebuffer sink (/dev/fbN): geometry and pixel format from the FBIOGET_VSCREENINFO /
//! FBIOGET_FSCREENINFO ioctls, rows written with pwrite at `line_length` stride. Any packed
//! 16, 24 or 32 bpp true-colour format with the channel offsets the driver reports (RGB565,
//! RGB888 / BGR888, XRGB8888 / XBGR8888, ...). [`FramebufferSink::with_format`] takes the
//! geometry explicitly, so a plain file can stand in for the device in tests.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result, ensure};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;

use super::{Canvas, DisplaySink};

/// Where one colour channel sits in a pixel value (as fbdev's `fb_bitfield`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    pub offset: u8,
    pub length: u8,
}

const fn ch(offset: u8, length: u8) -> Channel {
    Channel { offset, length }
}

/// A packed true-colour pixel: a native-endian integer of `bits_per_pixel` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelFormat {
    pub bits_per_pixel: u8,
    pub red: Channel,
    pub green: Channel,
    pub blue: Channel,
    /// Alpha / padding; written fully opaque when the driver reports a length.
    pub transp: Channel,
}

impl PixelFormat {
    pub const RGB565: Self = Self::new(16, ch(11, 5), ch(5, 6), ch(0, 5), ch(0, 0));
    /// 24 bpp, red in the high byte: B, G, R in memory (fbdev's usual 24-bit layout).
    pub const RGB888: Self = Self::new(24, ch(16, 8), ch(8, 8), ch(0, 8), ch(0, 0));
    /// 24 bpp, red in the low byte: R, G, B in memory.
    pub const BGR888: Self = Self::new(24, ch(0, 8), ch(8, 8), ch(16, 8), ch(0, 0));
    pub const XRGB8888: Self = Self::new(32, ch(16, 8), ch(8, 8), ch(0, 8), ch(0, 0));
    pub const XBGR8888: Self = Self::new(32, ch(0, 8), ch(8, 8), ch(16, 8), ch(0, 0));

    pub const fn new(bits_per_pixel: u8, red: Channel, green: Channel, blue: Channel, transp: Channel) -> Self {
        Self { bits_per_pixel, red, green, blue, transp }
    }

    pub fn bytes_per_pixel(&self) -> usize {
        usize::from(self.bits_per_pixel) / 8
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(
            matches!(self.bits_per_pixel, 16 | 24 | 32),
            "{} bits per pixel is not supported (16, 24 or 32)",
            self.bits_per_pixel
        );
        for (name, c) in [("red", self.red), ("green", self.green), ("blue", self.blue)] {
            ensure!(
                (1..=8).contains(&c.length)
                    && u32::from(c.offset) + u32::from(c.length) <= u32::from(self.bits_per_pixel),
                "{name} channel (offset {}, length {}) does not fit a {} bpp pixel",
                c.offset,
                c.length,
                self.bits_per_pixel
            );
        }
        let t = self.transp;
        ensure!(
            t.length == 0 || u32::from(t.offset) + u32::from(t.length) <= u32::from(self.bits_per_pixel),
            "alpha channel does not fit the pixel"
        );
        Ok(())
    }

    /// The pixel value of a colour.
    pub fn encode(&self, c: Rgb888) -> u32 {
        let put = |v: u8, ch: Channel| {
            if ch.length == 0 { 0 } else { (u32::from(v) >> (8 - u32::from(ch.length.min(8)))) << ch.offset }
        };
        let alpha =
            if self.transp.length == 0 { 0 } else { ((1u32 << self.transp.length.min(31)) - 1) << self.transp.offset };
        put(c.r(), self.red) | put(c.g(), self.green) | put(c.b(), self.blue) | alpha
    }

    /// Writes the pixel's bytes as they lie in memory.
    fn store(&self, c: Rgb888, out: &mut [u8]) {
        let v = self.encode(c);
        match self.bits_per_pixel {
            16 => out.copy_from_slice(&(v as u16).to_ne_bytes()),
            32 => out.copy_from_slice(&v.to_ne_bytes()),
            _ => {
                let b = v.to_ne_bytes();
                out.copy_from_slice(if cfg!(target_endian = "little") { &b[..3] } else { &b[1..] });
            }
        }
    }
}

pub struct FramebufferSink {
    file: File,
    width: u32,
    height: u32,
    format: PixelFormat,
    line_length: u32,
    /// Byte offset of the visible area's first pixel (panning offsets).
    origin: u64,
    /// One converted row, allocated once.
    row: Vec<u8>,
    /// FBIOBLANK works for backlight on/off (device opened with `open`).
    can_blank: bool,
}

impl FramebufferSink {
    /// A framebuffer of known geometry: `file` is /dev/fbN or a stand-in file.
    pub fn with_format(file: File, width: u32, height: u32, format: PixelFormat, line_length: u32) -> Result<Self> {
        Self::with_origin(file, width, height, format, line_length, 0)
    }

    fn with_origin(
        file: File,
        width: u32,
        height: u32,
        format: PixelFormat,
        line_length: u32,
        origin: u64,
    ) -> Result<Self> {
        format.validate()?;
        ensure!(width > 0 && height > 0, "framebuffer is {width}x{height}");
        let row_bytes = width as usize * format.bytes_per_pixel();
        ensure!(
            line_length as usize >= row_bytes,
            "line length {line_length} is shorter than a {width}-pixel row ({row_bytes} bytes)"
        );
        Ok(Self { file, width, height, format, line_length, origin, row: vec![0; row_bytes], can_blank: false })
    }

    /// Opens /dev/fbN and reads its geometry and pixel format from the driver.
    #[cfg(target_os = "linux")]
    pub fn open(path: &std::path::Path) -> Result<Self> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let fd = file.as_raw_fd();
        let mut var = sys::VarScreeninfo::default();
        let mut fix = sys::FixScreeninfo::default();
        // SAFETY: both requests fill a struct of exactly the kernel's layout, passed by pointer.
        unsafe {
            if libc::ioctl(fd, sys::FBIOGET_VSCREENINFO as _, &mut var as *mut sys::VarScreeninfo) < 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("FBIOGET_VSCREENINFO on {}", path.display()));
            }
            if libc::ioctl(fd, sys::FBIOGET_FSCREENINFO as _, &mut fix as *mut sys::FixScreeninfo) < 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("FBIOGET_FSCREENINFO on {}", path.display()));
            }
        }
        ensure!(
            fix.type_ == sys::FB_TYPE_PACKED_PIXELS
                && matches!(fix.visual, sys::FB_VISUAL_TRUECOLOR | sys::FB_VISUAL_DIRECTCOLOR),
            "{} is not a packed true-colour framebuffer (type {}, visual {})",
            path.display(),
            fix.type_,
            fix.visual
        );
        ensure!(var.grayscale == 0, "{} is a greyscale framebuffer", path.display());
        let bf = |b: sys::Bitfield| ch(b.offset.min(255) as u8, b.length.min(255) as u8);
        let format = PixelFormat::new(
            var.bits_per_pixel.min(255) as u8,
            bf(var.red),
            bf(var.green),
            bf(var.blue),
            bf(var.transp),
        );
        let bpp = u64::from(var.bits_per_pixel / 8);
        let origin = u64::from(var.yoffset) * u64::from(fix.line_length) + u64::from(var.xoffset) * bpp;
        let mut me = Self::with_origin(file, var.xres, var.yres, format, fix.line_length, origin)
            .with_context(|| format!("framebuffer {}", path.display()))?;
        me.can_blank = true;
        log::info!(
            "{}: {}x{}, {} bpp (r {}/{}, g {}/{}, b {}/{}), line {} bytes",
            path.display(),
            var.xres,
            var.yres,
            var.bits_per_pixel,
            var.red.offset,
            var.red.length,
            var.green.offset,
            var.green.length,
            var.blue.offset,
            var.blue.length,
            fix.line_length
        );
        Ok(me)
    }

    pub fn format(&self) -> PixelFormat {
        self.format
    }

    pub fn line_length(&self) -> u32 {
        self.line_length
    }
}

impl DisplaySink for FramebufferSink {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }

    fn flush_region(&mut self, canvas: &Canvas, area: Rectangle) -> Result<()> {
        let area = area.intersection(&canvas.bounds()).intersection(&Rectangle::new(Point::zero(), self.size()));
        let (x0, y0, w) = (area.top_left.x as u32, area.top_left.y as u32, area.size.width);
        let bpp = self.format.bytes_per_pixel();
        let bytes = w as usize * bpp;
        for y in y0..y0 + area.size.height {
            for (c, out) in canvas.row_span(y, x0, w).iter().zip(self.row[..bytes].chunks_exact_mut(bpp)) {
                self.format.store(*c, out);
            }
            let at = self.origin + u64::from(y) * u64::from(self.line_length) + u64::from(x0) * bpp as u64;
            self.file.write_all_at(&self.row[..bytes], at).context("framebuffer write failed")?;
        }
        Ok(())
    }

    fn set_backlight(&mut self, on: bool) -> Result<()> {
        #[cfg(target_os = "linux")]
        if self.can_blank {
            use std::os::fd::AsRawFd;
            let level: libc::c_ulong = if on { sys::FB_BLANK_UNBLANK } else { sys::FB_BLANK_POWERDOWN };
            // SAFETY: FBIOBLANK takes its argument by value.
            if unsafe { libc::ioctl(self.file.as_raw_fd(), sys::FBIOBLANK as _, level) } < 0 {
                // Many drivers cannot blank; the OFF screen is shown either way.
                log::debug!("FBIOBLANK: {}", std::io::Error::last_os_error());
            }
        }
        let _ = on;
        Ok(())
    }
}

/// The kernel's fbdev ABI (linux/fb.h).
#[cfg(target_os = "linux")]
mod sys {
    use libc::{c_char, c_ulong};

    pub const FBIOGET_VSCREENINFO: c_ulong = 0x4600;
    pub const FBIOGET_FSCREENINFO: c_ulong = 0x4602;
    pub const FBIOBLANK: c_ulong = 0x4611;
    pub const FB_BLANK_UNBLANK: c_ulong = 0;
    pub const FB_BLANK_POWERDOWN: c_ulong = 4;
    pub const FB_TYPE_PACKED_PIXELS: u32 = 0;
    pub const FB_VISUAL_TRUECOLOR: u32 = 2;
    pub const FB_VISUAL_DIRECTCOLOR: u32 = 4;

    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Bitfield {
        pub offset: u32,
        pub length: u32,
        pub msb_right: u32,
    }

    #[repr(C)]
    #[derive(Debug, Default)]
    pub struct VarScreeninfo {
        pub xres: u32,
        pub yres: u32,
        pub xres_virtual: u32,
        pub yres_virtual: u32,
        pub xoffset: u32,
        pub yoffset: u32,
        pub bits_per_pixel: u32,
        pub grayscale: u32,
        pub red: Bitfield,
        pub green: Bitfield,
        pub blue: Bitfield,
        pub transp: Bitfield,
        pub nonstd: u32,
        pub activate: u32,
        pub height: u32,
        pub width: u32,
        pub accel_flags: u32,
        pub pixclock: u32,
        pub left_margin: u32,
        pub right_margin: u32,
        pub upper_margin: u32,
        pub lower_margin: u32,
        pub hsync_len: u32,
        pub vsync_len: u32,
        pub sync: u32,
        pub vmode: u32,
        pub rotate: u32,
        pub colorspace: u32,
        pub reserved: [u32; 4],
    }

    #[repr(C)]
    #[derive(Debug, Default)]
    pub struct FixScreeninfo {
        pub id: [c_char; 16],
        pub smem_start: c_ulong,
        pub smem_len: u32,
        pub type_: u32,
        pub type_aux: u32,
        pub visual: u32,
        pub xpanstep: u16,
        pub ypanstep: u16,
        pub ywrapstep: u16,
        pub line_length: u32,
        pub mmio_start: c_ulong,
        pub mmio_len: u32,
        pub accel: u32,
        pub capabilities: u16,
        pub reserved: [u16; 2],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stand_in(len: u64) -> (tempfile::NamedTempFile, File) {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().set_len(len).unwrap();
        let file = tmp.reopen().unwrap();
        (tmp, file)
    }

    fn canvas_with(size: Size, area: Rectangle, color: Rgb888) -> Canvas {
        let mut canvas = Canvas::new(size);
        canvas.fill_rect(&area, color);
        canvas.take_dirty();
        canvas
    }

    #[test]
    fn rgb565_region_lands_at_line_length_stride() {
        let (w, h, line) = (16u32, 8u32, 40u32); // 8 bytes of padding per line
        let (tmp, file) = stand_in(u64::from(line * h));
        let mut sink = FramebufferSink::with_format(file, w, h, PixelFormat::RGB565, line).unwrap();
        let area = Rectangle::new(Point::new(3, 2), Size::new(4, 2));
        let canvas = canvas_with(Size::new(w, h), area, Rgb888::new(255, 0, 0));
        sink.flush_region(&canvas, area).unwrap();
        let bytes = std::fs::read(tmp.path()).unwrap();
        let at = |x: usize, y: usize| &bytes[y * line as usize + x * 2..][..2];
        assert_eq!(at(3, 2), 0xF800u16.to_ne_bytes());
        assert_eq!(at(6, 3), 0xF800u16.to_ne_bytes());
        assert_eq!(at(2, 2), [0, 0], "left of the region untouched");
        assert_eq!(at(7, 2), [0, 0], "right of the region untouched");
        assert_eq!(at(3, 4), [0, 0], "below the region untouched");
        // Only the region was written: the padding of every line too stays zero.
        assert_eq!(bytes.iter().filter(|b| **b != 0).count(), 8 * 2 / 2);
    }

    #[test]
    fn xrgb8888_and_24bpp_pixels_follow_the_offsets() {
        let color = Rgb888::new(0x12, 0x80, 0xFE);
        for (format, expect) in [
            (PixelFormat::XRGB8888, vec![0xFE, 0x80, 0x12, 0x00]),
            (PixelFormat::XBGR8888, vec![0x12, 0x80, 0xFE, 0x00]),
            (PixelFormat::RGB888, vec![0xFE, 0x80, 0x12]),
            (PixelFormat::BGR888, vec![0x12, 0x80, 0xFE]),
            (PixelFormat::new(32, ch(16, 8), ch(8, 8), ch(0, 8), ch(24, 8)), vec![0xFE, 0x80, 0x12, 0xFF]),
        ] {
            let bpp = format.bytes_per_pixel() as u32;
            let (w, h) = (10u32, 4u32);
            let line = w * bpp + 16;
            let (tmp, file) = stand_in(u64::from(line * h));
            let mut sink = FramebufferSink::with_format(file, w, h, format, line).unwrap();
            let area = Rectangle::new(Point::new(9, 3), Size::new(1, 1));
            let canvas = canvas_with(Size::new(w, h), area, color);
            sink.flush_region(&canvas, canvas.bounds()).unwrap();
            let bytes = std::fs::read(tmp.path()).unwrap();
            let at = (3 * line + 9 * bpp) as usize;
            assert_eq!(&bytes[at..at + bpp as usize], &expect[..], "{format:?}");
            assert!(bytes[..at].iter().all(|b| *b == 0) || format.transp.length > 0, "{format:?}");
        }
    }

    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    #[test]
    fn ioctl_structs_have_the_kernel_sizes() {
        assert_eq!(std::mem::size_of::<sys::VarScreeninfo>(), 160);
        assert_eq!(std::mem::size_of::<sys::FixScreeninfo>(), 80);
    }

    #[test]
    fn bad_geometry_is_refused() {
        let (_tmp, file) = stand_in(0);
        assert!(FramebufferSink::with_format(file.try_clone().unwrap(), 240, 240, PixelFormat::RGB565, 400).is_err());
        let odd = PixelFormat::new(8, ch(5, 3), ch(2, 3), ch(0, 2), ch(0, 0));
        assert!(FramebufferSink::with_format(file, 240, 240, odd, 480).is_err());
    }
}
