//! B-mode kidney phantom: tissue echogenicity -> speckle through a point-spread function ->
//! attenuation and time-gain compensation -> log compression -> scan conversion.
//!
//! The physics is deliberately simple but follows the real chain, so that what separates a normal
//! kidney from an end-stage one is what a sonographer looks at (size, cortical thickness, cortical
//! echogenicity against the liver, corticomedullary differentiation, contour), not an artefact.

use rand::Rng;
use rand_distr::{Distribution, Normal};
use rand_pcg::Pcg64Mcg;
use serde::Serialize;

use crate::frame::LumaFrame;

/// Ground truth of a simulated case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    Normal,
    Esrd,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Normal => "normal",
            Condition::Esrd => "esrd",
        }
    }
}

/// Transducer geometry.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Probe {
    /// Curvilinear: radius of curvature and total field-of-view angle.
    Convex { radius_cm: f32, fov_rad: f32 },
    /// Linear array of the given aperture width.
    Linear { width_cm: f32 },
}

/// Everything that defines one simulated patient and scan.
#[derive(Debug, Clone, Serialize)]
pub struct KidneyCase {
    pub condition: Condition,
    pub probe: Probe,
    pub depth_cm: f32,
    pub length_cm: f32,
    pub width_cm: f32,
    pub cortex_cm: f32,
    /// Mean echogenicity (linear amplitude scale) of liver, cortex, pyramids, sinus fat.
    pub liver_echo: f32,
    pub cortex_echo: f32,
    pub pyramid_echo: f32,
    pub sinus_echo: f32,
    pub pyramid_count: u32,
    /// Relative amplitude of contour irregularity (0 = smooth ellipse).
    pub irregularity: f32,
    /// Harmonic phases of the contour, so each case has its own shape.
    pub contour_phase: [f32; 3],
    /// Kidney centre, relative to the image (0..1 lateral, 0..1 depth).
    pub centre_rel: (f32, f32),
    pub tilt_rad: f32,
    pub gain_db: f32,
    pub dynamic_range_db: f32,
    pub attenuation_db_per_cm: f32,
    pub tgc_compensation: f32,
    /// Axial and lateral PSF widths, in beam samples and lines.
    pub psf_axial: f32,
    pub psf_lateral: f32,
    pub noise_floor: f32,
    /// Optional rib shadow: lateral start and end (0..1) and the depth (cm) it starts at.
    pub shadow: Option<(f32, f32, f32)>,
    /// Slow probe motion: lateral sway amplitude (fraction of width) and phase.
    pub sway: f32,
    pub sway_phase: f32,
}

fn uniform(rng: &mut Pcg64Mcg, lo: f32, hi: f32) -> f32 {
    rng.gen_range(lo..hi)
}

impl KidneyCase {
    /// Draws a case. The ranges overlap at their edges on purpose (a small normal kidney, a
    /// moderately bright normal cortex) so the task is not trivial.
    pub fn sample(rng: &mut Pcg64Mcg, condition: Condition) -> Self {
        let probe = if rng.gen_bool(0.75) {
            Probe::Convex { radius_cm: uniform(rng, 3.5, 6.0), fov_rad: uniform(rng, 55.0, 75.0).to_radians() }
        } else {
            Probe::Linear { width_cm: uniform(rng, 13.0, 16.0) }
        };
        let liver_echo = uniform(rng, 0.8, 1.2);
        let (length_cm, cortex_cm, cortex_rel, pyramid_rel, irregularity, sinus_rel) = match condition {
            Condition::Normal => (
                uniform(rng, 9.2, 12.5),
                uniform(rng, 0.75, 1.5),
                uniform(rng, 0.4, 0.85),
                uniform(rng, 0.2, 0.55),
                uniform(rng, 0.0, 0.04),
                uniform(rng, 1.6, 2.4),
            ),
            Condition::Esrd => (
                uniform(rng, 6.0, 9.8),
                uniform(rng, 0.3, 0.8),
                uniform(rng, 0.9, 1.6),
                uniform(rng, 0.75, 1.05),
                uniform(rng, 0.02, 0.12),
                uniform(rng, 1.1, 1.8),
            ),
        };
        let width_cm = length_cm * uniform(rng, 0.42, 0.55);
        let cortex_echo = liver_echo * cortex_rel;
        let shadow = if rng.gen_bool(0.3) {
            let start = uniform(rng, 0.0, 0.8);
            Some((start, start + uniform(rng, 0.05, 0.18), uniform(rng, 1.5, 4.0)))
        } else {
            None
        };
        let depth_cm = uniform(rng, 14.0, 18.0);
        Self {
            condition,
            probe,
            depth_cm,
            length_cm,
            width_cm,
            cortex_cm,
            liver_echo,
            cortex_echo,
            pyramid_echo: cortex_echo * pyramid_rel,
            sinus_echo: liver_echo * sinus_rel,
            pyramid_count: rng.gen_range(5..9),
            irregularity,
            contour_phase: [uniform(rng, 0.0, 6.3), uniform(rng, 0.0, 6.3), uniform(rng, 0.0, 6.3)],
            centre_rel: (uniform(rng, 0.42, 0.58), uniform(rng, 0.45, 0.6)),
            tilt_rad: uniform(rng, -25.0, 25.0).to_radians(),
            gain_db: uniform(rng, -6.0, 6.0),
            dynamic_range_db: uniform(rng, 50.0, 65.0),
            attenuation_db_per_cm: uniform(rng, 2.5, 4.5),
            tgc_compensation: uniform(rng, 0.75, 1.0),
            psf_axial: uniform(rng, 0.8, 1.6),
            psf_lateral: uniform(rng, 1.2, 2.4),
            noise_floor: uniform(rng, 0.005, 0.03),
            shadow,
            sway: uniform(rng, 0.01, 0.04),
            sway_phase: uniform(rng, 0.0, 6.3),
        }
    }
}

/// Beam-space sampling grid: scan lines x axial samples.
const LINES: usize = 192;
const SAMPLES: usize = 320;

/// Renders cases into B-mode images; owns its work buffers so rendering a video allocates once.
pub struct PhantomRenderer {
    rng: Pcg64Mcg,
    echo: Vec<f32>,
    re: Vec<f32>,
    im: Vec<f32>,
    tmp: Vec<f32>,
    re_blur: Vec<f32>,
    im_blur: Vec<f32>,
    blur_mid: Vec<f32>,
    beam: Vec<f32>,
}

impl PhantomRenderer {
    pub fn new(seed: u64) -> Self {
        let n = LINES * SAMPLES;
        Self {
            rng: Pcg64Mcg::new(u128::from(seed) | 1 << 64),
            echo: vec![0.0; n],
            re: vec![0.0; n],
            im: vec![0.0; n],
            tmp: vec![0.0; n],
            re_blur: vec![0.0; n],
            im_blur: vec![0.0; n],
            blur_mid: vec![0.0; n],
            beam: vec![0.0; n],
        }
    }

    /// Maps beam indices to physical coordinates (lateral x from the probe centre, depth z from
    /// the skin), both in cm.
    fn beam_point(case: &KidneyCase, line: f32, sample: f32) -> (f32, f32) {
        let depth = case.depth_cm * sample / (SAMPLES - 1) as f32;
        match case.probe {
            Probe::Convex { radius_cm, fov_rad } => {
                let theta = -fov_rad / 2.0 + fov_rad * line / (LINES - 1) as f32;
                let r = radius_cm + depth;
                (r * theta.sin(), r * theta.cos() - radius_cm)
            }
            Probe::Linear { width_cm } => (-width_cm / 2.0 + width_cm * line / (LINES - 1) as f32, depth),
        }
    }

    /// Physical extent of the image: (x_min, x_max, z_min, z_max) in cm.
    fn extent(case: &KidneyCase) -> (f32, f32, f32, f32) {
        match case.probe {
            Probe::Convex { radius_cm, fov_rad } => {
                let r = radius_cm + case.depth_cm;
                let half = fov_rad / 2.0;
                (-r * half.sin(), r * half.sin(), 0.0, r - radius_cm)
            }
            Probe::Linear { width_cm } => (-width_cm / 2.0, width_cm / 2.0, 0.0, case.depth_cm),
        }
    }

    /// Echogenicity of tissue at (x, z), cm; `shift` is the lateral probe motion.
    fn tissue(case: &KidneyCase, x: f32, z: f32, ext: (f32, f32, f32, f32), shift: f32) -> f32 {
        let (x0, x1, _, z1) = ext;
        let cx = x0 + (x1 - x0) * (case.centre_rel.0 + shift);
        let cz = z1 * case.centre_rel.1;
        // Skin and subcutaneous fat, with a bright fascia line.
        if z < 0.3 {
            return 1.4;
        }
        if z < 1.4 {
            return if (z - 1.2).abs() < 0.08 { 1.6 } else { 0.45 };
        }
        let (s, c) = case.tilt_rad.sin_cos();
        let u = (x - cx) * c + (z - cz) * s;
        let v = -(x - cx) * s + (z - cz) * c;
        let a = case.length_cm / 2.0;
        let b = case.width_cm / 2.0;
        let phi = v.atan2(u * b / a);
        let p = case.contour_phase;
        let contour = 1.0
            + case.irregularity
                * ((3.0 * phi + p[0]).sin() + 0.7 * (5.0 * phi + p[1]).sin() + 0.5 * (9.0 * phi + p[2]).sin())
                / 2.2;
        let rho = ((u / a).powi(2) + (v / b).powi(2)).sqrt() / contour;
        // Distance inward from the capsule, approximately in cm along the short axis.
        let inward = (1.0 - rho) * b;
        if rho < 1.0 {
            if inward < 0.12 {
                return 1.5; // capsule
            }
            if inward < case.cortex_cm {
                return case.cortex_echo;
            }
            let sinus = (u / (a * 0.62)).powi(2) + (v / (b * 0.42)).powi(2);
            if sinus < 1.0 {
                // Sinus fat with vessels and collecting system: bright, heterogeneous.
                let texture = 0.75 + 0.25 * ((u * 5.0).sin() * (v * 7.0).cos());
                return case.sinus_echo * texture;
            }
            // Medulla: pyramids separated by columns of Bertin (cortical tissue).
            let lobe = (case.pyramid_count as f32 * phi + p[1]).cos();
            return if lobe > -0.25 { case.pyramid_echo } else { case.cortex_echo };
        }
        if rho < 1.08 {
            return 1.1; // perirenal fat
        }
        // Liver above the kidney, posterior muscle below.
        if v < 0.0 && z < cz {
            let vessel = ((x - cx * 0.7 - 2.0).powi(2) + (z - cz * 0.45).powi(2)).sqrt() < 0.6;
            return if vessel { 0.05 } else { case.liver_echo };
        }
        0.6
    }

    /// Renders frame `t` (a video time step; 0 for a still) of `case` into `out`, resized to
    /// `width` x `height`. Pixels outside the scanned field are 0.
    pub fn render(&mut self, case: &KidneyCase, t: u32, width: u32, height: u32, out: &mut LumaFrame) {
        let ext = Self::extent(case);
        let shift = case.sway * (t as f32 * 0.05 + case.sway_phase).sin();
        let tilt_wobble = 0.04 * (t as f32 * 0.031).sin();
        let mut moved = case.clone();
        moved.tilt_rad += tilt_wobble;
        for line in 0..LINES {
            for sample in 0..SAMPLES {
                let (x, z) = Self::beam_point(case, line as f32, sample as f32);
                self.echo[line * SAMPLES + sample] = Self::tissue(&moved, x, z, ext, shift);
            }
        }
        // Scatterers: circular complex Gaussian amplitudes scaled by echogenicity (an amplitude
        // reflectivity, so a cortex at 0.5 of the liver is 6 dB darker). Between video
        // frames the field decorrelates partly (elevational motion), as real speckle does.
        let normal = Normal::new(0.0f32, 1.0).unwrap_or_else(|_| unreachable!());
        let keep = if t == 0 { 0.0 } else { 0.85f32 };
        let fresh = (1.0 - keep * keep).sqrt();
        for i in 0..LINES * SAMPLES {
            let e = self.echo[i];
            let nr: f32 = normal.sample(&mut self.rng);
            let ni: f32 = normal.sample(&mut self.rng);
            if t == 0 {
                self.re[i] = nr * e;
                self.im[i] = ni * e;
            } else {
                // Previous field carries over; fresh scatterers fill the rest.
                let prev_e = self.tmp[i].max(1e-6);
                self.re[i] = self.re[i] / prev_e * e * keep + nr * e * fresh;
                self.im[i] = self.im[i] / prev_e * e * keep + ni * e * fresh;
            }
        }
        for i in 0..LINES * SAMPLES {
            self.tmp[i] = self.echo[i];
        }
        blur_separable(&self.re, &mut self.re_blur, &mut self.blur_mid, case.psf_lateral, case.psf_axial);
        blur_separable(&self.im, &mut self.im_blur, &mut self.blur_mid, case.psf_lateral, case.psf_axial);
        // Envelope, attenuation with TGC, electronic noise, log compression to 0..1.
        for line in 0..LINES {
            let (lx, _) = Self::beam_point(case, line as f32, 0.0);
            let lateral_rel = (lx - ext.0) / (ext.1 - ext.0);
            for sample in 0..SAMPLES {
                let i = line * SAMPLES + sample;
                let depth = case.depth_cm * sample as f32 / (SAMPLES - 1) as f32;
                let mut amp = (self.re_blur[i].powi(2) + self.im_blur[i].powi(2)).sqrt();
                let net_db = -case.attenuation_db_per_cm * depth * (1.0 - case.tgc_compensation);
                amp *= 10f32.powf((net_db + case.gain_db) / 20.0);
                if let Some((s0, s1, d0)) = case.shadow
                    && lateral_rel >= s0
                    && lateral_rel <= s1
                    && depth > d0
                {
                    amp *= 0.12;
                }
                let noise: f32 = normal.sample(&mut self.rng);
                amp = (amp * amp + (case.noise_floor * noise).powi(2)).sqrt();
                let db = 20.0 * amp.max(1e-6).log10();
                // Mean speckle amplitude of echogenicity 1 is ~2 dB; it lands at 60% of the grey
                // scale, as a liver does on a well-set scanner.
                self.beam[i] = ((db - 2.0 + 0.6 * case.dynamic_range_db) / case.dynamic_range_db).clamp(0.0, 1.0);
            }
        }
        self.scan_convert(case, ext, width, height, out);
    }

    /// Nearest physical point -> beam coordinates, then bilinear interpolation.
    fn scan_convert(&self, case: &KidneyCase, ext: (f32, f32, f32, f32), width: u32, height: u32, out: &mut LumaFrame) {
        out.reshape(width, height);
        let (x0, x1, z0, z1) = ext;
        let w = out.width() as usize;
        let px = out.pixels_mut();
        for py in 0..height as usize {
            let z = z0 + (z1 - z0) * (py as f32 + 0.5) / height as f32;
            for pxi in 0..width as usize {
                let x = x0 + (x1 - x0) * (pxi as f32 + 0.5) / width as f32;
                let (line, sample) = match case.probe {
                    Probe::Convex { radius_cm, fov_rad } => {
                        let r = (x * x + (z + radius_cm).powi(2)).sqrt();
                        let theta = x.atan2(z + radius_cm);
                        (
                            (theta + fov_rad / 2.0) / fov_rad * (LINES - 1) as f32,
                            (r - radius_cm) / case.depth_cm * (SAMPLES - 1) as f32,
                        )
                    }
                    Probe::Linear { width_cm } => {
                        ((x + width_cm / 2.0) / width_cm * (LINES - 1) as f32, z / case.depth_cm * (SAMPLES - 1) as f32)
                    }
                };
                let value = if line < 0.0 || sample < 0.0 || line > (LINES - 1) as f32 || sample > (SAMPLES - 1) as f32
                {
                    0.0
                } else {
                    let l0 = (line as usize).min(LINES - 2);
                    let s0 = (sample as usize).min(SAMPLES - 2);
                    let fl = line - l0 as f32;
                    let fs = sample - s0 as f32;
                    let at = |l: usize, s: usize| self.beam[l * SAMPLES + s];
                    let top = at(l0, s0) * (1.0 - fs) + at(l0, s0 + 1) * fs;
                    let bot = at(l0 + 1, s0) * (1.0 - fs) + at(l0 + 1, s0 + 1) * fs;
                    // Keep 1 as the darkest in-field value so the sector is distinguishable from
                    // the black screen outside it.
                    (top * (1.0 - fl) + bot * fl) * 254.0 + 1.0
                };
                px[py * w + pxi] = value as u8;
            }
        }
    }
}

/// Separable Gaussian blur of a LINES x SAMPLES field (sigma along lines, then along samples).
fn blur_separable(src: &[f32], dst: &mut [f32], mid: &mut [f32], sigma_lines: f32, sigma_samples: f32) {
    let kl = gaussian_kernel(sigma_lines);
    let ks = gaussian_kernel(sigma_samples);
    let rl = kl.len() / 2;
    for line in 0..LINES {
        for sample in 0..SAMPLES {
            let mut acc = 0.0;
            for (k, w) in kl.iter().enumerate() {
                let l = (line + k).saturating_sub(rl).min(LINES - 1);
                acc += w * src[l * SAMPLES + sample];
            }
            mid[line * SAMPLES + sample] = acc;
        }
    }
    let rs = ks.len() / 2;
    for line in 0..LINES {
        let row = &mid[line * SAMPLES..(line + 1) * SAMPLES];
        for sample in 0..SAMPLES {
            let mut acc = 0.0;
            for (k, w) in ks.iter().enumerate() {
                let s = (sample + k).saturating_sub(rs).min(SAMPLES - 1);
                acc += w * row[s];
            }
            dst[line * SAMPLES + sample] = acc;
        }
    }
}

fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let radius = (sigma * 3.0).ceil().max(1.0) as i32;
    let mut k: Vec<f32> = (-radius..=radius).map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp()).collect();
    // Unit energy keeps the speckle power equal to the echogenicity whatever the PSF size.
    let energy: f32 = k.iter().map(|v| v * v).sum::<f32>().sqrt();
    k.iter_mut().for_each(|v| *v /= energy);
    k
}
