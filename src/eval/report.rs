//! Turns per-image scores into the study-style report (Markdown, JSON, CSV, ROC figure).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use serde::Serialize;

use super::metrics::{self, AtThreshold, Auc};
use crate::geometry::Rect;

/// One evaluated image.
#[derive(Debug, Clone, Serialize)]
pub struct ScoredCase {
    pub file: PathBuf,
    pub label: bool,
    pub model: f64,
    pub readers: Vec<f64>,
    pub patient: Option<String>,
    pub fold: Option<String>,
    pub roi: Option<Rect>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScorerSummary {
    pub name: String,
    pub n: usize,
    pub auc: Auc,
    pub at_threshold: AtThreshold,
    pub youden: AtThreshold,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub reader: String,
    /// z = (AUC_model - AUC_reader) / SE; positive when the model is higher.
    pub z: f64,
    pub p: f64,
    pub auc_model: f64,
    pub auc_reader: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FoldRow {
    pub fold: String,
    pub n: usize,
    pub auc: f64,
    pub accuracy: f64,
    pub sensitivity: f64,
    pub specificity: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MeanSd {
    pub mean: f64,
    pub sd: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Excluded {
    pub file: PathBuf,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub model_id: String,
    pub model_sha256: String,
    pub threshold: f64,
    pub n: usize,
    pub positives: usize,
    pub negatives: usize,
    pub model: ScorerSummary,
    pub readers: Vec<ScorerSummary>,
    pub delong: Vec<Comparison>,
    pub folds: Vec<FoldRow>,
    pub folds_summary: BTreeMap<String, MeanSd>,
    pub patient_level: Option<ScorerSummary>,
    pub excluded: Vec<Excluded>,
}

fn summarize(name: &str, labels: &[bool], scores: &[f64], threshold: f64) -> Result<ScorerSummary> {
    let youden = metrics::youden_threshold(labels, scores);
    Ok(ScorerSummary {
        name: name.to_string(),
        n: labels.len(),
        auc: metrics::auc(labels, scores).with_context(|| format!("AUC of {name}"))?,
        at_threshold: metrics::at_threshold(labels, scores, threshold),
        youden: metrics::at_threshold(labels, scores, youden),
    })
}

/// A reader's operating threshold: 0.5 for probabilities and 0/1 calls; the middle of the
/// scale for ordinal scores (3 on a 1-5 confidence scale: "uncertain" counts as positive,
/// as a screening reader would refer it).
pub fn reader_threshold(scores: &[f64]) -> f64 {
    let (lo, hi) = scores.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &s| (lo.min(s), hi.max(s)));
    if lo >= 0.0 && hi <= 1.0 { 0.5 } else { (lo + hi) / 2.0 }
}

/// Computes every number of the report from scored cases.
pub fn evaluate(
    cases: &[ScoredCase],
    reader_names: &[String],
    threshold: f64,
    model_id: &str,
    model_sha256: &str,
    excluded: Vec<Excluded>,
) -> Result<EvalReport> {
    ensure!(!cases.is_empty(), "no image could be evaluated");
    let labels: Vec<bool> = cases.iter().map(|c| c.label).collect();
    let model_scores: Vec<f64> = cases.iter().map(|c| c.model).collect();
    let model = summarize(model_id, &labels, &model_scores, threshold)?;
    let mut readers = Vec::new();
    let mut delong = Vec::new();
    for (r, name) in reader_names.iter().enumerate() {
        let scores: Vec<f64> = cases.iter().map(|c| c.readers[r]).collect();
        readers.push(summarize(name, &labels, &scores, reader_threshold(&scores))?);
        match metrics::delong_test(&labels, &scores, &model_scores) {
            Ok(d) => delong.push(Comparison {
                reader: name.clone(),
                z: d.z,
                p: d.p,
                auc_model: d.auc_b,
                auc_reader: d.auc_a,
            }),
            Err(e) => log::warn!("DeLong model vs {name}: {e:#}"),
        }
    }
    let mut folds = Vec::new();
    let mut by_fold: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, c) in cases.iter().enumerate() {
        if let Some(f) = &c.fold {
            by_fold.entry(f.as_str()).or_default().push(i);
        }
    }
    for (fold, idx) in &by_fold {
        let l: Vec<bool> = idx.iter().map(|&i| labels[i]).collect();
        let s: Vec<f64> = idx.iter().map(|&i| model_scores[i]).collect();
        let m = metrics::at_threshold(&l, &s, threshold);
        folds.push(FoldRow {
            fold: fold.to_string(),
            n: idx.len(),
            auc: metrics::auc(&l, &s).map(|a| a.auc).unwrap_or(f64::NAN),
            accuracy: m.accuracy,
            sensitivity: m.sensitivity,
            specificity: m.specificity,
        });
    }
    let mut folds_summary = BTreeMap::new();
    if !folds.is_empty() {
        type Get = fn(&FoldRow) -> f64;
        let columns: [(&str, Get); 4] = [
            ("auc", |f| f.auc),
            ("accuracy", |f| f.accuracy),
            ("sensitivity", |f| f.sensitivity),
            ("specificity", |f| f.specificity),
        ];
        for (key, get) in columns {
            let v: Vec<f64> = folds.iter().map(get).collect();
            let (mean, sd) = metrics::mean_sd(&v);
            folds_summary.insert(key.to_string(), MeanSd { mean, sd });
        }
    }
    let patient_level = patient_scores(cases)?
        .map(|(l, s)| summarize(&format!("{model_id} (per patient)"), &l, &s, threshold))
        .transpose()?;
    Ok(EvalReport {
        model_id: model_id.to_string(),
        model_sha256: model_sha256.to_string(),
        threshold,
        n: cases.len(),
        positives: labels.iter().filter(|l| **l).count(),
        negatives: labels.iter().filter(|l| !**l).count(),
        model,
        readers,
        delong,
        folds,
        folds_summary,
        patient_level,
        excluded,
    })
}

/// Mean model score per patient; a patient whose images disagree on the label is an error.
fn patient_scores(cases: &[ScoredCase]) -> Result<Option<(Vec<bool>, Vec<f64>)>> {
    let mut by: BTreeMap<&str, (bool, f64, usize)> = BTreeMap::new();
    for c in cases {
        let Some(p) = &c.patient else { return Ok(None) };
        let e = by.entry(p.as_str()).or_insert((c.label, 0.0, 0));
        ensure!(e.0 == c.label, "patient {p} has images labeled both esrd and normal");
        e.1 += c.model;
        e.2 += 1;
    }
    if by.len() == cases.len() {
        return Ok(None); // one image per patient: identical to the image level
    }
    Ok(Some(by.values().map(|(l, s, n)| (*l, s / *n as f64)).unzip()))
}

fn pct(v: f64) -> String {
    if v.is_nan() { "-".into() } else { format!("{:.2}%", v * 100.0) }
}

fn row(s: &ScorerSummary, m: &AtThreshold) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {:.3} ({:.3}-{:.3}) | {} / {} / {} / {} |",
        s.name,
        s.n,
        pct(m.accuracy),
        pct(m.sensitivity),
        pct(m.specificity),
        pct(m.ppv),
        pct(m.npv),
        s.auc.auc,
        s.auc.ci_low,
        s.auc.ci_high,
        m.tp,
        m.fp,
        m.tn,
        m.fn_
    )
}

/// The Markdown report, laid out like the study's table.
pub fn markdown(r: &EvalReport) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Site validation report\n");
    let _ = writeln!(md, "**Screening aid for trained staff - not a diagnosis.**\n");
    let _ = writeln!(
        md,
        "Model `{}` (sha256 `{}`), decision threshold {}. {} images: {} ESRD, {} normal.\n",
        r.model_id,
        &r.model_sha256[..16.min(r.model_sha256.len())],
        r.threshold,
        r.n,
        r.positives,
        r.negatives
    );
    let header = "| reader | n | accuracy | sensitivity | specificity | PPV | NPV | AUC (95% CI, DeLong) | TP / FP / TN / FN |\n|---|---|---|---|---|---|---|---|---|";
    let _ = writeln!(md, "## At the operating threshold\n\n{header}");
    for s in r.readers.iter().chain(std::iter::once(&r.model)) {
        let t = s.at_threshold.threshold;
        let _ = writeln!(
            md,
            "{}",
            row(s, &s.at_threshold).replacen(&format!("| {} |", s.name), &format!("| {} (t = {t}) |", s.name), 1)
        );
    }
    let _ = writeln!(md);
    let _ = writeln!(md, "## At the Youden-optimal threshold\n\n{header}");
    for s in r.readers.iter().chain(std::iter::once(&r.model)) {
        let _ = writeln!(
            md,
            "{}",
            row(s, &s.youden).replacen(
                &format!("| {} |", s.name),
                &format!("| {} (t = {:.4}) |", s.name, s.youden.threshold),
                1
            )
        );
    }
    if !r.delong.is_empty() {
        let _ = writeln!(
            md,
            "\n## DeLong test, model vs reader (paired, two-sided)\n\n| reader | AUC reader | AUC model | Z | P |\n|---|---|---|---|---|"
        );
        for d in &r.delong {
            let _ = writeln!(
                md,
                "| {} | {:.3} | {:.3} | {:.3} | {} |",
                d.reader,
                d.auc_reader,
                d.auc_model,
                d.z,
                format_p(d.p)
            );
        }
    }
    if !r.folds.is_empty() {
        let _ = writeln!(
            md,
            "\n## Per fold (model, threshold {})\n\n| fold | n | accuracy | sensitivity | specificity | AUC |\n|---|---|---|---|---|---|",
            r.threshold
        );
        for f in &r.folds {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.3} |",
                f.fold,
                f.n,
                pct(f.accuracy),
                pct(f.sensitivity),
                pct(f.specificity),
                f.auc
            );
        }
        let ms = |k: &str| {
            r.folds_summary.get(k).map_or("-".into(), |m| format!("{:.2}% +- {:.2}", m.mean * 100.0, m.sd * 100.0))
        };
        let auc = r.folds_summary.get("auc").map_or("-".into(), |m| format!("{:.3} +- {:.3}", m.mean, m.sd));
        let _ = writeln!(
            md,
            "| mean +- sd | | {} | {} | {} | {auc} |",
            ms("accuracy"),
            ms("sensitivity"),
            ms("specificity")
        );
    }
    if let Some(p) = &r.patient_level {
        let _ = writeln!(md, "\n## Patient level (mean score per patient)\n\n{header}\n{}", row(p, &p.at_threshold));
    }
    if !r.excluded.is_empty() {
        let _ = writeln!(md, "\n## Excluded images ({})\n", r.excluded.len());
        for e in &r.excluded {
            let _ = writeln!(md, "- `{}`: {}", e.file.display(), e.reason);
        }
    }
    let _ = writeln!(md, "\n![ROC curves](roc.png)");
    md
}

/// Writes report.md, report.json, scores.csv and roc.png/roc.svg into `out`.
pub fn write_all(out: &Path, report: &EvalReport, cases: &[ScoredCase], reader_names: &[String]) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    std::fs::write(out.join("report.md"), markdown(report))?;
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(report)?)?;
    let mut csv = csv::Writer::from_path(out.join("scores.csv"))?;
    let mut header = vec!["file".to_string(), "label".into(), "model_score".into()];
    header.extend(reader_names.iter().cloned());
    header.extend(["patient".into(), "fold".into(), "roi".into()]);
    csv.write_record(&header)?;
    for c in cases {
        let mut rec = vec![
            c.file.display().to_string(),
            if c.label { "esrd".into() } else { "normal".into() },
            format!("{:.6}", c.model),
        ];
        rec.extend(c.readers.iter().map(|v| format!("{v}")));
        rec.push(c.patient.clone().unwrap_or_default());
        rec.push(c.fold.clone().unwrap_or_default());
        rec.push(c.roi.map(|r| r.to_string()).unwrap_or_default());
        csv.write_record(&rec)?;
    }
    csv.flush()?;
    let labels: Vec<bool> = cases.iter().map(|c| c.label).collect();
    let mut curves = Vec::new();
    for (r, name) in reader_names.iter().enumerate() {
        let scores: Vec<f64> = cases.iter().map(|c| c.readers[r]).collect();
        curves.push(super::plot::Curve {
            name: name.clone(),
            auc: report.readers[r].auc.auc,
            points: metrics::roc_points(&labels, &scores),
        });
    }
    let model_scores: Vec<f64> = cases.iter().map(|c| c.model).collect();
    curves.push(super::plot::Curve {
        name: report.model_id.clone(),
        auc: report.model.auc.auc,
        points: metrics::roc_points(&labels, &model_scores),
    });
    super::plot::roc_figure(&out.join("roc"), "ROC: model and readers", &curves)
}

/// P as journals print it: four decimals, and "< 0.0001" rather than a misleading 0.0000.
fn format_p(p: f64) -> String {
    if p < 1e-4 { "< 0.0001".to_string() } else { format!("{p:.4}") }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tiny_p_is_not_printed_as_zero() {
        assert_eq!(super::format_p(0.002), "0.0020");
        assert_eq!(super::format_p(1e-13), "< 0.0001");
    }
}
