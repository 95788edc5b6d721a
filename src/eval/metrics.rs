//! Screening metrics: confusion matrix, ROC AUC with DeLong's variance, the paired DeLong
//! test, Youden's operating point. Cross-checked against scikit-learn and MLstatkit
//! (tests/integration/metrics_crosscheck.rs, fixtures written by scripts/crosscheck_metrics.py).

use anyhow::{Result, ensure};
use serde::Serialize;

/// Two-sided 95% normal quantile, norm.ppf(0.975).
pub const Z_95: f64 = 1.959_963_984_540_054;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    pub fn_: u64,
}

/// Metrics at one threshold (score >= threshold is positive).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AtThreshold {
    pub threshold: f64,
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
    pub accuracy: f64,
    pub sensitivity: f64,
    pub specificity: f64,
    pub ppv: f64,
    pub npv: f64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { f64::NAN } else { a as f64 / b as f64 }
}

pub fn confusion(labels: &[bool], scores: &[f64], threshold: f64) -> Confusion {
    let mut c = Confusion { tp: 0, fp: 0, tn: 0, fn_: 0 };
    for (&y, &s) in labels.iter().zip(scores) {
        match (y, s >= threshold) {
            (true, true) => c.tp += 1,
            (false, true) => c.fp += 1,
            (false, false) => c.tn += 1,
            (true, false) => c.fn_ += 1,
        }
    }
    c
}

pub fn at_threshold(labels: &[bool], scores: &[f64], threshold: f64) -> AtThreshold {
    let c = confusion(labels, scores, threshold);
    AtThreshold {
        threshold,
        tp: c.tp,
        fp: c.fp,
        tn: c.tn,
        fn_: c.fn_,
        accuracy: ratio(c.tp + c.tn, c.tp + c.tn + c.fp + c.fn_),
        sensitivity: ratio(c.tp, c.tp + c.fn_),
        specificity: ratio(c.tn, c.tn + c.fp),
        ppv: ratio(c.tp, c.tp + c.fp),
        npv: ratio(c.tn, c.tn + c.fn_),
    }
}

/// Threshold maximising sensitivity + specificity - 1 (the lowest such threshold on ties).
pub fn youden_threshold(labels: &[bool], scores: &[f64]) -> f64 {
    let mut candidates: Vec<f64> = scores.to_vec();
    candidates.sort_by(|a, b| a.total_cmp(b));
    candidates.dedup();
    let mut best = (f64::NEG_INFINITY, 0.5);
    for t in candidates {
        let m = at_threshold(labels, scores, t);
        let j = m.sensitivity + m.specificity - 1.0;
        if j > best.0 {
            best = (j, t);
        }
    }
    best.1
}

/// Heaviside kernel of the Mann-Whitney statistic: 1, 1/2 on ties, 0.
fn psi(x: f64, y: f64) -> f64 {
    if x > y {
        1.0
    } else if x == y {
        0.5
    } else {
        0.0
    }
}

/// DeLong structural components of one scorer: V10 over positives, V01 over negatives.
struct Components {
    v10: Vec<f64>,
    v01: Vec<f64>,
}

fn components(labels: &[bool], scores: &[f64]) -> Components {
    let pos: Vec<f64> = labels.iter().zip(scores).filter(|(y, _)| **y).map(|(_, s)| *s).collect();
    let neg: Vec<f64> = labels.iter().zip(scores).filter(|(y, _)| !**y).map(|(_, s)| *s).collect();
    let (m, n) = (pos.len() as f64, neg.len() as f64);
    let mut v01 = vec![0.0; neg.len()];
    let v10 = pos
        .iter()
        .map(|&x| {
            let mut row = 0.0;
            for (j, &y) in neg.iter().enumerate() {
                let k = psi(x, y);
                row += k;
                v01[j] += k;
            }
            row / n
        })
        .collect();
    v01.iter_mut().for_each(|v| *v /= m);
    Components { v10, v01 }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Sample covariance (n - 1 denominator).
fn cov(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (mean(a), mean(b));
    a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum::<f64>() / (a.len() as f64 - 1.0)
}

/// AUC with DeLong variance and 95% CI (normal approximation, clipped to 0..1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Auc {
    pub auc: f64,
    pub variance: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

fn check_two_classes(labels: &[bool], scores: &[f64]) -> Result<()> {
    ensure!(labels.len() == scores.len(), "{} labels but {} scores", labels.len(), scores.len());
    let pos = labels.iter().filter(|y| **y).count();
    ensure!(
        pos >= 2 && labels.len() - pos >= 2,
        "AUC needs at least 2 positive and 2 negative cases (got {pos} and {})",
        labels.len() - pos
    );
    ensure!(scores.iter().all(|s| s.is_finite()), "scores must be finite");
    Ok(())
}

pub fn auc(labels: &[bool], scores: &[f64]) -> Result<Auc> {
    check_two_classes(labels, scores)?;
    let c = components(labels, scores);
    let a = mean(&c.v10);
    let variance = cov(&c.v10, &c.v10) / c.v10.len() as f64 + cov(&c.v01, &c.v01) / c.v01.len() as f64;
    let half = Z_95 * variance.max(0.0).sqrt();
    Ok(Auc { auc: a, variance, ci_low: (a - half).max(0.0), ci_high: (a + half).min(1.0) })
}

/// Paired DeLong test of B against A on the same cases: z = (AUC_B - AUC_A) / SE, two-sided p.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DeLong {
    pub auc_a: f64,
    pub auc_b: f64,
    pub z: f64,
    pub p: f64,
}

pub fn delong_test(labels: &[bool], scores_a: &[f64], scores_b: &[f64]) -> Result<DeLong> {
    check_two_classes(labels, scores_a)?;
    check_two_classes(labels, scores_b)?;
    let a = components(labels, scores_a);
    let b = components(labels, scores_b);
    let (m, n) = (a.v10.len() as f64, a.v01.len() as f64);
    let var = |x: &Components, y: &Components| cov(&x.v10, &y.v10) / m + cov(&x.v01, &y.v01) / n;
    let var_diff = var(&a, &a) + var(&b, &b) - 2.0 * var(&a, &b);
    let (auc_a, auc_b) = (mean(&a.v10), mean(&b.v10));
    ensure!(
        var_diff.is_finite() && var_diff > 0.0,
        "DeLong variance of the AUC difference is {var_diff}: the two scorers rank the cases identically"
    );
    let z = (auc_b - auc_a) / var_diff.sqrt();
    Ok(DeLong { auc_a, auc_b, z, p: two_sided_p(z) })
}

/// Two-sided normal p-value, 2 * (1 - Phi(|z|)) = erfc(|z| / sqrt 2).
pub fn two_sided_p(z: f64) -> f64 {
    libm::erfc(z.abs() / std::f64::consts::SQRT_2)
}

/// ROC curve points (false positive rate, true positive rate), from (0,0) to (1,1).
pub fn roc_points(labels: &[bool], scores: &[f64]) -> Vec<(f64, f64)> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&i, &j| scores[j].total_cmp(&scores[i]));
    let pos = labels.iter().filter(|y| **y).count() as f64;
    let neg = labels.len() as f64 - pos;
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut pts = vec![(0.0, 0.0)];
    let mut k = 0;
    while k < idx.len() {
        // All cases sharing a score move together (a diagonal step on ties).
        let s = scores[idx[k]];
        while k < idx.len() && scores[idx[k]] == s {
            if labels[idx[k]] {
                tp += 1.0
            } else {
                fp += 1.0
            }
            k += 1;
        }
        pts.push((fp / neg.max(1.0), tp / pos.max(1.0)));
    }
    pts
}

/// Mean and sample standard deviation.
pub fn mean_sd(values: &[f64]) -> (f64, f64) {
    let m = mean(values);
    let sd = if values.len() > 1 { cov(values, values).sqrt() } else { 0.0 };
    (m, sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_inverted_rankings() {
        let y = [false, false, true, true];
        assert_eq!(auc(&y, &[0.1, 0.2, 0.8, 0.9]).unwrap().auc, 1.0);
        assert_eq!(auc(&y, &[0.9, 0.8, 0.2, 0.1]).unwrap().auc, 0.0);
        assert_eq!(auc(&y, &[0.5, 0.5, 0.5, 0.5]).unwrap().auc, 0.5);
    }

    #[test]
    fn p_value_of_known_z() {
        assert!((two_sided_p(1.959_963_984_540_054) - 0.05).abs() < 1e-12);
        assert!((two_sided_p(0.0) - 1.0).abs() < 1e-15);
    }

    #[test]
    fn one_class_is_an_error() {
        assert!(auc(&[true, true, true], &[0.1, 0.2, 0.3]).is_err());
    }

    #[test]
    fn confusion_counts() {
        let m = at_threshold(&[true, true, false, false], &[0.9, 0.4, 0.6, 0.1], 0.5);
        assert_eq!((m.tp, m.fn_, m.fp, m.tn), (1, 1, 1, 1));
        assert_eq!(m.accuracy, 0.5);
    }
}
