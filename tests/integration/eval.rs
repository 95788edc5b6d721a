//! Evaluation: metric code against scikit-learn and MLstatkit on fixed score sets, and the
//! shipped model on freshly simulated held-out phantoms through the `eval` command.

use kidney_screen::eval::metrics::{at_threshold, auc, delong_test};
use serde::Deserialize;

use crate::fixture;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Confusion {
    tp: u64,
    fp: u64,
    tn: u64,
    #[serde(rename = "fn")]
    false_negatives: u64,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    labels: Vec<u8>,
    scores_a: Vec<f64>,
    scores_b: Vec<f64>,
    threshold: f64,
    sklearn_auc_a: f64,
    sklearn_auc_b: f64,
    sklearn_confusion_a: Confusion,
    mlstatkit_z: f64,
    mlstatkit_p: f64,
    mlstatkit_ci_a: [f64; 2],
    mlstatkit_ci_b: [f64; 2],
}

const AUC_TOLERANCE: f64 = 1e-9;
const Z_P_TOLERANCE: f64 = 1e-6;

#[test]
fn metrics_agree_with_scikit_learn_and_mlstatkit() {
    let text = std::fs::read_to_string(fixture("metrics/crosscheck.json")).unwrap();
    let fx: Fixture = serde_json::from_str(&text).unwrap();
    assert_eq!(fx.cases.len(), 4);
    for c in fx.cases {
        let y: Vec<bool> = c.labels.iter().map(|&l| l == 1).collect();
        let a = auc(&y, &c.scores_a).unwrap();
        let b = auc(&y, &c.scores_b).unwrap();
        assert!(
            (a.auc - c.sklearn_auc_a).abs() < AUC_TOLERANCE,
            "{}: AUC {} vs sklearn {}",
            c.name,
            a.auc,
            c.sklearn_auc_a
        );
        assert!((b.auc - c.sklearn_auc_b).abs() < AUC_TOLERANCE, "{}: reader AUC", c.name);
        for (ours, theirs) in [
            (a.ci_low, c.mlstatkit_ci_a[0]),
            (a.ci_high, c.mlstatkit_ci_a[1]),
            (b.ci_low, c.mlstatkit_ci_b[0]),
            (b.ci_high, c.mlstatkit_ci_b[1]),
        ] {
            assert!((ours - theirs).abs() < Z_P_TOLERANCE, "{}: CI bound {ours} vs MLstatkit {theirs}", c.name);
        }
        let d = delong_test(&y, &c.scores_a, &c.scores_b).unwrap();
        assert!((d.z - c.mlstatkit_z).abs() < Z_P_TOLERANCE, "{}: Z {} vs MLstatkit {}", c.name, d.z, c.mlstatkit_z);
        assert!((d.p - c.mlstatkit_p).abs() < Z_P_TOLERANCE, "{}: P {} vs MLstatkit {}", c.name, d.p, c.mlstatkit_p);
        let m = at_threshold(&y, &c.scores_a, c.threshold);
        let want = &c.sklearn_confusion_a;
        assert_eq!((m.tp, m.fp, m.tn, m.fn_), (want.tp, want.fp, want.tn, want.false_negatives), "{}", c.name);
    }
}

#[test]
fn swapping_the_scorers_negates_z() {
    let text = std::fs::read_to_string(fixture("metrics/crosscheck.json")).unwrap();
    let fx: Fixture = serde_json::from_str(&text).unwrap();
    let c = &fx.cases[0];
    let y: Vec<bool> = c.labels.iter().map(|&l| l == 1).collect();
    let ab = delong_test(&y, &c.scores_a, &c.scores_b).unwrap();
    let ba = delong_test(&y, &c.scores_b, &c.scores_a).unwrap();
    assert!((ab.z + ba.z).abs() < 1e-12 && (ab.p - ba.p).abs() < 1e-12);
}

/// Seeds far from training (1..3000) and the export's held-out set (1,000,000..).
const FRESH_SEED: u64 = 5_000_000;

#[test]
fn shipped_model_reaches_auc_099_on_fresh_phantoms() {
    let bin = env!("CARGO_BIN_EXE_kidney-screen");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let status = std::process::Command::new(bin)
        .args(["simulate", "--count", "200", "--seed", &FRESH_SEED.to_string(), "--out"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(status.success());
    let out = dir.path().join("report");
    let output = std::process::Command::new(bin)
        .args(["eval", "--roi-input", "--quiet", "--labels"])
        .arg(data.join("labels.csv"))
        .arg("--out")
        .arg(&out)
        .arg("--model")
        .arg(crate::shipped_model())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let auc = report["model"]["auc"]["auc"].as_f64().unwrap();
    assert_eq!(report["n"].as_u64(), Some(200));
    assert!(auc >= 0.99, "held-out AUC {auc}");
    for f in ["report.md", "scores.csv", "roc.png", "roc.svg"] {
        assert!(out.join(f).metadata().unwrap().len() > 0, "{f}");
    }
}

#[test]
fn labels_with_an_unknown_label_name_the_row() {
    let bin = env!("CARGO_BIN_EXE_kidney-screen");
    let dir = tempfile::tempdir().unwrap();
    let roi = crate::shipped_model().join("golden/esrd_1000001.roi.png");
    std::fs::copy(&roi, dir.path().join("a.png")).unwrap();
    std::fs::write(dir.path().join("labels.csv"), "file,label\na.png,esrd\na.png,maybe\n").unwrap();
    let output = std::process::Command::new(bin)
        .args(["eval", "--roi-input", "--quiet", "--labels"])
        .arg(dir.path().join("labels.csv"))
        .arg("--out")
        .arg(dir.path().join("r"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "bad input is exit code 1");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("labels.csv") && err.contains('3') && err.contains("maybe"), "{err}");
}
