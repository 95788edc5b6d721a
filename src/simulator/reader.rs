//! A simulated human reader for the phantoms, so `eval` can show the study's model-vs-physician
//! comparison (AUC, DeLong test) on simulated data. The reader judges the two signs a
//! sonographer uses, kidney length and cortical echogenicity against the liver, each measured
//! with realistic error, and answers on a 5-point confidence scale (1 = surely normal,
//! 5 = surely ESRD), as reader studies do. It is not a model of any real physician.

use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use rand_pcg::Pcg64Mcg;

use super::KidneyCase;

/// Standard deviation of a caliper length measurement on an oblique section (cm).
const LENGTH_ERROR_CM: f32 = 1.6;
/// Standard deviation of a visual cortex-to-liver echogenicity judgement (ratio units).
const ECHO_ERROR: f32 = 0.4;

/// The reader's 5-point score for a case; deterministic from the case seed.
pub fn reader_score(case: &KidneyCase, seed: u64) -> u8 {
    let mut rng = Pcg64Mcg::seed_from_u64(seed ^ 0x005E_ADE4_5EAD);
    let length = case.length_cm + Normal::new(0.0, LENGTH_ERROR_CM).map_or(0.0, |d| d.sample(&mut rng));
    let ratio = case.cortex_echo / case.liver_echo + Normal::new(0.0, ECHO_ERROR).map_or(0.0, |d| d.sample(&mut rng));
    // Small kidney and bright cortex both point to ESRD; 9.5 cm and ratio 0.9 are the cut-offs.
    let evidence = (9.5 - length) / 1.2 + (ratio - 0.9) / 0.25;
    match evidence {
        e if e < -1.5 => 1,
        e if e < -0.5 => 2,
        e if e < 0.5 => 3,
        e if e < 1.5 => 4,
        _ => 5,
    }
}
