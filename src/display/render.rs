//! Layout and drawing of the status screen. Every region draws itself from its own inputs only,
//! so a change to one input redraws one region. Nothing here allocates.

use core::fmt::Write as _;

use embedded_graphics::mono_font::ascii::{FONT_6X10, FONT_7X13};
use embedded_graphics::mono_font::{MonoFont, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;
use embedded_graphics::text::{Baseline, Text};
use profont::{PROFONT_12_POINT, PROFONT_14_POINT, PROFONT_18_POINT, PROFONT_24_POINT};

use super::canvas::{Canvas, Scaled};
use crate::decision::{Verdict, classify};
use crate::model::OperatingPoint;

/// The side the layout is designed for; larger screens draw it scaled by a whole factor.
pub const BASE_SIDE: u32 = 240;

pub const FOOTER_TEXT: &str = "Screening aid - not a diagnosis";

pub(crate) const BACKGROUND: Rgb888 = Rgb888::new(0, 0, 0);
const TEXT: Rgb888 = Rgb888::new(255, 255, 255);
const CAPTION: Rgb888 = Rgb888::new(150, 150, 150);
const FOOTER: Rgb888 = Rgb888::new(205, 205, 205);
const RULE: Rgb888 = Rgb888::new(70, 70, 70);
const TRACK: Rgb888 = Rgb888::new(52, 52, 52);
const BAND_TINT: Rgb888 = Rgb888::new(96, 72, 16);
const BAND: Rgb888 = Rgb888::new(245, 166, 0);
const THUMB_EMPTY: Rgb888 = Rgb888::new(24, 24, 24);

const GREEN: Rgb888 = Rgb888::new(24, 160, 72);
const RED: Rgb888 = Rgb888::new(214, 32, 32);
const AMBER: Rgb888 = Rgb888::new(245, 166, 0);

/// Banner colours (background, text) of a shown verdict; None is WAITING.
pub fn verdict_colors(verdict: Option<Verdict>) -> (Rgb888, Rgb888) {
    match verdict {
        None => (Rgb888::new(36, 36, 36), Rgb888::new(175, 175, 175)),
        Some(Verdict::Normal) => (GREEN, TEXT),
        Some(Verdict::EsrdSuspected) => (RED, TEXT),
        Some(Verdict::Indeterminate) => (AMBER, Rgb888::BLACK),
        Some(Verdict::NoSignal) => (Rgb888::new(40, 84, 150), TEXT),
        Some(Verdict::NoImage) => (Rgb888::new(92, 104, 120), TEXT),
        Some(Verdict::Fault) => (Rgb888::new(190, 0, 190), TEXT),
    }
}

pub fn verdict_text(verdict: Option<Verdict>) -> &'static str {
    verdict.map_or("WAITING", Verdict::label)
}

/// Where everything goes. Regions are in logical pixels; logical (0, 0) is physical `origin`
/// and a logical pixel is `scale` x `scale` physical ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Layout {
    pub scale: u32,
    pub origin: Point,
    pub banner: Rectangle,
    pub bar: Rectangle,
    pub thumb: Rectangle,
    pub info: Rectangle,
    pub footer: Rectangle,
}

const MARGIN: i32 = 6;
const BAR_HEIGHT: u32 = 40;
const FOOTER_HEIGHT: u32 = 16;

impl Layout {
    /// Square and portrait screens stack banner, bar, thumbnail + info; landscape ones put the
    /// thumbnail on the right. Needs at least 240x240.
    pub fn new(size: Size) -> Self {
        let scale = (size.width / BASE_SIDE).min(size.height / BASE_SIDE).max(1);
        let (w, h) = (size.width / scale, size.height / scale);
        let origin = Point::new(((size.width - w * scale) / 2) as i32, ((size.height - h * scale) / 2) as i32);
        let (wi, hi) = (w as i32, h as i32);
        let banner_h = (h * 2 / 5).clamp(96, 150);
        let banner = Rectangle::new(Point::zero(), Size::new(w, banner_h));
        let footer = Rectangle::new(Point::new(0, hi - FOOTER_HEIGHT as i32), Size::new(w, FOOTER_HEIGHT));
        let top = banner_h as i32 + MARGIN;
        let bottom = footer.top_left.y - 3;
        let rect = |x: i32, y: i32, w: i32, h: i32| {
            Rectangle::new(Point::new(x, y), Size::new(w.max(1) as u32, h.max(1) as u32))
        };
        let landscape = w * 4 >= h * 5;
        let (bar, thumb, info) = if landscape {
            let side = (bottom - top).min(wi / 2);
            let thumb = rect(wi - MARGIN - side, top, side, side);
            let left_w = thumb.top_left.x - 2 * MARGIN;
            let bar = rect(MARGIN, top, left_w, BAR_HEIGHT as i32);
            let info_top = top + BAR_HEIGHT as i32 + 4;
            (bar, thumb, rect(MARGIN, info_top, left_w, bottom - info_top))
        } else {
            let bar = rect(MARGIN, top, wi - 2 * MARGIN, BAR_HEIGHT as i32);
            let lower = top + BAR_HEIGHT as i32 + 4;
            let side = (bottom - lower).min((wi - 3 * MARGIN) / 2);
            let thumb = rect(MARGIN, lower, side, side);
            let info_x = MARGIN * 2 + side;
            (bar, thumb, rect(info_x, lower, wi - info_x - MARGIN, bottom - lower))
        };
        Self { scale, origin, banner, bar, thumb, info, footer }
    }

    pub fn physical(&self, area: &Rectangle) -> Rectangle {
        let s = self.scale as i32;
        Rectangle::new(self.origin + Point::new(area.top_left.x * s, area.top_left.y * s), area.size * self.scale)
    }

    /// A view of one region, in region-local logical pixels.
    fn view<'a>(&self, canvas: &'a mut Canvas, area: &Rectangle) -> Scaled<'a> {
        let phys = self.physical(area);
        canvas.view(phys.top_left, self.scale, phys)
    }
}

fn text(target: &mut Scaled<'_>, s: &str, at: Point, font: &MonoFont<'_>, color: Rgb888) {
    let _ = Text::with_baseline(s, at, MonoTextStyle::new(font, color), Baseline::Top).draw(target);
}

fn text_width(s: &str, font: &MonoFont<'_>) -> u32 {
    s.len() as u32 * (font.character_size.width + font.character_spacing)
}

/// Fonts for the verdict, largest first: (font, whole-number zoom).
const VERDICT_FONTS: [(&MonoFont<'static>, u32); 7] = [
    (&PROFONT_24_POINT, 2),
    (&PROFONT_18_POINT, 2),
    (&PROFONT_14_POINT, 2),
    (&PROFONT_24_POINT, 1),
    (&PROFONT_18_POINT, 1),
    (&PROFONT_14_POINT, 1),
    (&PROFONT_12_POINT, 1),
];

/// The largest font and line split (one line, or one word a line) that fits `label` into
/// `room`.
fn fit_verdict(label: &str, room: Size) -> (&'static MonoFont<'static>, u32, bool) {
    let words = label.split(' ');
    for (font, zoom) in VERDICT_FONTS {
        let (cw, ch) = (font.character_size.width * zoom, font.character_size.height * zoom);
        if label.len() as u32 * cw <= room.width && ch <= room.height {
            return (font, zoom, false);
        }
        let lines = words.clone().count() as u32;
        let widest = words.clone().map(str::len).max().unwrap_or(0) as u32;
        if lines > 1 && widest * cw <= room.width && lines * ch + (lines - 1) * 2 <= room.height {
            return (font, zoom, true);
        }
    }
    (&PROFONT_12_POINT, 1, false)
}

pub(crate) fn draw_banner(canvas: &mut Canvas, layout: &Layout, verdict: Option<Verdict>) {
    let (bg, fg) = verdict_colors(verdict);
    let area = layout.banner;
    let mut v = layout.view(canvas, &area);
    let _ = v.fill_solid(&Rectangle::new(Point::zero(), area.size), bg);
    let label = verdict_text(verdict);
    let room = Size::new(area.size.width.saturating_sub(2 * MARGIN as u32), area.size.height.saturating_sub(4));
    let (font, zoom, split) = fit_verdict(label, room);
    let line_h = font.character_size.height * zoom;
    // Verdict labels hold no newline: splitting on one yields the label whole.
    let sep = if split { ' ' } else { '\n' };
    let n = label.split(sep).count() as u32;
    let total = n * line_h + (n - 1) * 2;
    // Capitals sit above the descender rows: centre them, not the whole cell.
    let descent = (font.character_size.height - font.baseline - 1) * zoom;
    let mut y = (area.size.height as i32 - total as i32 + descent as i32) / 2;
    for line in label.split(sep) {
        let w = text_width(line, font) * zoom;
        let x = (area.size.width as i32 - w as i32) / 2;
        let mut z = v.zoom(Point::new(x, y), zoom);
        text(&mut z, line, Point::zero(), font, fg);
        y += line_h as i32 + 2;
    }
}

/// Probability rounded for display; equal values draw identical bars.
pub(crate) fn quantize(p: Option<f32>) -> Option<u16> {
    p.map(|p| (p.clamp(0.0, 1.0) * 1000.0).round() as u16)
}

pub(crate) fn draw_bar(canvas: &mut Canvas, layout: &Layout, op: &OperatingPoint, milli: Option<u16>) {
    let area = layout.bar;
    let mut v = layout.view(canvas, &area);
    let w = area.size.width as i32;
    let _ = v.fill_solid(&Rectangle::new(Point::zero(), area.size), BACKGROUND);
    text(&mut v, "p(ESRD)", Point::new(0, 2), &PROFONT_12_POINT, CAPTION);
    let mut s: heapless::String<24> = heapless::String::new();
    match milli {
        Some(m) => {
            let _ = write!(s, "{}.{:03}", m / 1000, m % 1000);
        }
        None => {
            let _ = s.push_str("  -");
        }
    }
    text(&mut v, &s, Point::new(61, 0), &PROFONT_14_POINT, TEXT);
    s.clear();
    let _ = write!(s, "cut {:.2}", op.threshold);
    let cut_w = text_width(&s, &PROFONT_12_POINT) as i32;
    text(&mut v, &s, Point::new(w - cut_w, 2), &PROFONT_12_POINT, CAPTION);

    let x_of = |p: f32| (p.clamp(0.0, 1.0) * (w - 1) as f32).round() as i32;
    let (track_y, track_h) = (20, 13);
    let [lo, hi] = op.indeterminate;
    let band = Rectangle::with_corners(Point::new(x_of(lo), track_y), Point::new(x_of(hi), track_y + track_h - 1));
    let _ = v.fill_solid(&Rectangle::new(Point::new(0, track_y), Size::new(w as u32, track_h as u32)), TRACK);
    let _ = v.fill_solid(&band, BAND_TINT);
    if let Some(m) = milli {
        let p = f32::from(m) / 1000.0;
        let color = match classify(op, p) {
            Verdict::Normal => GREEN,
            Verdict::EsrdSuspected => RED,
            _ => AMBER,
        };
        let end = x_of(p);
        let _ = v.fill_solid(&Rectangle::new(Point::new(0, track_y), Size::new(end as u32 + 1, track_h as u32)), color);
    }
    // The indeterminate band as a strip under the bar, the threshold as a tick through it.
    let strip = Rectangle::with_corners(
        Point::new(x_of(lo), track_y + track_h + 1),
        Point::new(x_of(hi), track_y + track_h + 3),
    );
    let _ = v.fill_solid(&strip, BAND);
    let tick_x = x_of(op.threshold).clamp(1, w - 1);
    let tick = Rectangle::with_corners(Point::new(tick_x - 1, track_y - 3), Point::new(tick_x, track_y + track_h + 4));
    let _ = v.fill_solid(&tick, TEXT);
}

/// The ROI, box-filtered into the thumbnail square at full physical resolution. Pixels are
/// written once each (no clear first), so the canvas sees only those that really changed.
pub(crate) fn draw_thumb(canvas: &mut Canvas, layout: &Layout, roi: Option<(u32, u32, &[u8])>) {
    let area = layout.thumb;
    let mut v = layout.view(canvas, &area);
    let (w, h) = (area.size.width as i32, area.size.height as i32);
    for edge in [(0, 0, w, 1), (0, h - 1, w, 1), (0, 0, 1, h), (w - 1, 0, 1, h)] {
        let _ =
            v.fill_solid(&Rectangle::new(Point::new(edge.0, edge.1), Size::new(edge.2 as u32, edge.3 as u32)), RULE);
    }
    let inner_logical = Rectangle::new(Point::new(1, 1), area.size.saturating_sub(Size::new(2, 2)));
    let roi = roi.filter(|(w, h, px)| *w > 0 && *h > 0 && px.len() >= (*w as usize) * (*h as usize));
    let Some((rw, rh, px)) = roi else {
        let _ = v.fill_solid(&inner_logical, THUMB_EMPTY);
        let label = "NO ROI";
        let x = (w - text_width(label, &FONT_6X10) as i32) / 2;
        text(&mut v, label, Point::new(x, (h - 10) / 2), &FONT_6X10, CAPTION);
        return;
    };
    let inner = v.physical(&inner_logical).intersection(&v.clip());
    let (iw, ih) = (inner.size.width, inner.size.height);
    if iw == 0 || ih == 0 {
        return;
    }
    // Keep the aspect ratio: letterbox inside the square.
    let (tw, th) =
        if rw * ih >= rh * iw { (iw, (rh * iw / rw).clamp(1, ih)) } else { ((rw * ih / rh).clamp(1, iw), ih) };
    let x0 = inner.top_left.x as u32 + (iw - tw) / 2;
    let y0 = inner.top_left.y as u32 + (ih - th) / 2;
    let canvas = v.canvas();
    let (ix, iy) = (inner.top_left.x as u32, inner.top_left.y as u32);
    let bars = [
        (ix, iy, iw, y0 - iy),
        (ix, y0 + th, iw, iy + ih - (y0 + th)),
        (ix, y0, x0 - ix, th),
        (x0 + tw, y0, ix + iw - (x0 + tw), th),
    ];
    for (x, y, bw, bh) in bars {
        canvas.fill_rect(&Rectangle::new(Point::new(x as i32, y as i32), Size::new(bw, bh)), THUMB_EMPTY);
    }
    // Source columns of each thumbnail column, worked out once, not once per pixel: the thumbnail
    // is redrawn every frame. The canvas is at most a few hundred pixels wide.
    let mut columns: heapless::Vec<(u32, u32), 512> = heapless::Vec::new();
    for tx in 0..tw {
        let sx0 = tx * rw / tw;
        if columns.push((sx0, ((tx + 1) * rw / tw).max(sx0 + 1))).is_err() {
            break;
        }
    }
    for ty in 0..th {
        let sy0 = ty * rh / th;
        let sy1 = ((ty + 1) * rh / th).max(sy0 + 1);
        for (tx, &(sx0, sx1)) in (0..tw).zip(&columns) {
            let mut sum = 0u32;
            for sy in sy0..sy1 {
                let row = &px[(sy * rw) as usize..];
                for sx in sx0..sx1 {
                    sum += u32::from(row[sx as usize]);
                }
            }
            let n = (sy1 - sy0) * (sx1 - sx0);
            let g = ((sum + n / 2) / n) as u8;
            canvas.set(x0 + tx, y0 + ty, Rgb888::new(g, g, g));
        }
    }
}

pub(crate) fn draw_info(canvas: &mut Canvas, layout: &Layout, agreeing: u8, window: u8, model_id: &str) {
    let area = layout.info;
    let mut v = layout.view(canvas, &area);
    let _ = v.fill_solid(&Rectangle::new(Point::zero(), area.size), BACKGROUND);
    text(&mut v, "FRAMES AGREEING", Point::new(0, 0), &FONT_6X10, CAPTION);
    let mut s: heapless::String<24> = heapless::String::new();
    if window == 0 {
        let _ = s.push_str("-");
    } else {
        let _ = write!(s, "{agreeing} of {window}");
    }
    text(&mut v, &s, Point::new(0, 11), &PROFONT_18_POINT, TEXT);
    text(&mut v, "MODEL", Point::new(0, 37), &FONT_6X10, CAPTION);
    let per_line = (area.size.width / FONT_6X10.character_size.width).max(1) as usize;
    let mut y = 48;
    let mut rest = model_id.trim();
    while !rest.is_empty() && y + 10 <= area.size.height as i32 {
        let last_line = y + 20 > area.size.height as i32;
        let line = if rest.len() <= per_line || last_line {
            &rest[..floor_char_boundary(rest, per_line)]
        } else {
            // Break after a separator when one is in reach, else mid-word.
            let cut = floor_char_boundary(rest, per_line);
            let at = rest[..cut].rfind(['-', '_', '.', ' ']).map_or(cut, |i| i + 1);
            &rest[..at]
        };
        text(&mut v, line, Point::new(0, y), &FONT_6X10, TEXT);
        rest = &rest[line.len()..];
        y += 10;
    }
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut i = max;
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

pub(crate) fn draw_footer(canvas: &mut Canvas, layout: &Layout) {
    let area = layout.footer;
    let mut v = layout.view(canvas, &area);
    let _ = v.fill_solid(&Rectangle::new(Point::zero(), area.size), BACKGROUND);
    let _ =
        v.fill_solid(&Rectangle::new(Point::new(MARGIN, 0), Size::new(area.size.width - 2 * MARGIN as u32, 1)), RULE);
    let font = if text_width(FOOTER_TEXT, &FONT_7X13) + 4 <= area.size.width { &FONT_7X13 } else { &FONT_6X10 };
    let x = (area.size.width as i32 - text_width(FOOTER_TEXT, font) as i32) / 2;
    text(&mut v, FOOTER_TEXT, Point::new(x, 2), font, FOOTER);
}

/// The whole screen for a display switched off: black, a dim "OFF".
pub(crate) fn draw_off(canvas: &mut Canvas) {
    let size = canvas.size();
    canvas.fill_rect(&canvas.bounds(), BACKGROUND);
    let layout = Layout::new(size);
    let area = Rectangle::new(Point::zero(), size / layout.scale);
    let mut v = layout.view(canvas, &area);
    let label = "OFF";
    let x = (area.size.width as i32 - text_width(label, &PROFONT_24_POINT) as i32) / 2;
    let y = (area.size.height as i32 - PROFONT_24_POINT.character_size.height as i32) / 2;
    text(&mut v, label, Point::new(x, y), &PROFONT_24_POINT, RULE);
}
