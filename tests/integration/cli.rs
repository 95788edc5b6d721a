//! The binary as a user runs it: main commands work, bad input is one clear line and a
//! non-zero exit, never a panic.

use std::path::Path;
use std::process::{Command, Output};

use crate::{fixture, fixture_screens, shipped_model};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kidney-screen"));
    c.env("RUST_LOG", "error");
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("binary runs")
}

/// Fails unless the command failed with exit code 1 and one `error:` line naming `needles`.
fn assert_clear_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} missing from: {err}");
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn demo_runs_on_the_builtin_source_and_shipped_model() {
    let out = run(bin().args(["demo", "--frames", "60"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("NOT A DIAGNOSIS"));
    assert!(text.contains("60 frames"), "{text}");
    // The simulated video starts with a scan: a verdict gets shown and matches the truth.
    let line = text.lines().find(|l| l.starts_with("shown verdicts matching")).unwrap();
    let (right, total) = line.rsplit_once(' ').unwrap().1.split_once('/').unwrap();
    let (right, total): (u32, u32) = (right.parse().unwrap(), total.parse().unwrap());
    assert!(total > 10 && right * 10 >= total * 9, "{line}");
}

#[test]
fn classify_prints_a_verdict_per_screen() {
    let screens = fixture_screens();
    let out = run(bin().arg("classify").arg("--json").args(screens.iter().map(|s| &s.0)));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), screens.len());
    for (v, (_, esrd)) in lines.iter().zip(&screens) {
        let want = if *esrd { "ESRD_SUSPECTED" } else { "NORMAL" };
        assert_eq!(v["verdict"], want, "{v}");
    }
}

#[test]
fn check_model_accepts_the_shipped_model() {
    let out = run(bin().arg("check-model").arg(shipped_model()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn missing_capture_device_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "board.toml",
        "[capture]\nsource = \"v4l2\"\ndevice = \"/dev/video97\"\nwidth = 1280\nheight = 720\n",
    );
    let out = run(bin().arg("run").arg("--config").arg(&cfg));
    assert_clear_error(&out, &["/dev/video97"]);
}

#[test]
fn unreadable_images_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(bin().args(["classify", "/nonexistent/screen.png"]));
    assert_clear_error(&out, &["/nonexistent/screen.png"]);
    let junk = write(dir.path(), "junk.png", "this is not a PNG");
    let out = run(bin().arg("classify").arg(&junk));
    assert_clear_error(&out, &["junk.png"]);
    let png = std::fs::read(&fixture_screens()[0].0).unwrap();
    let cut = dir.path().join("cut.png");
    std::fs::write(&cut, &png[..png.len() / 2]).unwrap();
    let out = run(bin().arg("classify").arg(&cut));
    assert_clear_error(&out, &["cut.png"]);
}

#[test]
fn corrupt_model_and_wrong_hash_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["manifest.toml", "model.int8.onnx"] {
        std::fs::copy(shipped_model().join(f), dir.path().join(f)).unwrap();
    }
    // Wrong hash: the file was replaced.
    let model = dir.path().join("model.int8.onnx");
    std::fs::write(&model, b"not an onnx model").unwrap();
    let out = run(bin().arg("check-model").arg(dir.path()));
    assert_clear_error(&out, &["model.int8.onnx", "sha256"]);
    // Corrupt but with its hash recorded: ONNX parsing must fail by name.
    let sha = kidney_screen::model::sha256_file(&model).unwrap();
    let manifest = std::fs::read_to_string(dir.path().join("manifest.toml")).unwrap();
    let old = manifest.lines().find(|l| l.starts_with("sha256")).unwrap();
    std::fs::write(dir.path().join("manifest.toml"), manifest.replace(old, &format!("sha256 = \"{sha}\""))).unwrap();
    let out = run(bin().arg("classify").arg("--model").arg(dir.path()).arg(&fixture_screens()[0].0));
    assert_clear_error(&out, &["model.int8.onnx"]);
}

#[test]
fn malformed_config_names_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("syntax.toml", "[capture\nsource = 1\n", vec!["syntax.toml"]),
        ("unknown.toml", "[capture]\nsource = \"simulated\"\nfps = 30\n", vec!["unknown.toml", "fps"]),
        ("range.toml", "[capture]\nsource = \"simulated\"\n[decision]\nk = 9\nn = 6\n", vec!["range.toml", "k"]),
        (
            "pins.toml",
            "[capture]\nsource = \"simulated\"\n[indicator.gpio]\ngreen = 17\namber = 40\nred = 22\n",
            vec!["pins.toml", "amber"],
        ),
    ];
    for (name, text, needles) in cases {
        let cfg = write(dir.path(), name, text);
        let out = run(bin().arg("run").arg("--config").arg(&cfg));
        assert_clear_error(&out, &needles);
    }
    let out = run(bin().args(["run", "--config", "/nonexistent/board.toml"]));
    assert_clear_error(&out, &["/nonexistent/board.toml"]);
}

#[test]
fn run_replays_a_profile_and_writes_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "board.toml",
        &format!(
            "[capture]\nsource = \"mjpeg\"\npath = \"{}\"\n[screen]\nimage_rect = {{ x = 260, y = 96, width = 640, height = 520 }}\n[decision]\nk = 1\nn = 1\n[audit]\ndir = \"{}\"\n",
            fixture("frames/screens_1280x720.mjpg").display(),
            dir.path().join("audit").display()
        ),
    );
    let out = run(bin().arg("run").arg("--config").arg(&cfg));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (records, _) = kidney_screen::audit::read_records(&dir.path().join("audit/audit.jsonl")).unwrap();
    let verdicts: Vec<&str> = records.iter().map(|r| r.verdict.as_str()).collect();
    assert_eq!(verdicts, ["ESRD SUSPECTED", "NORMAL"]);
}

#[test]
fn bench_reports_every_stage_and_the_summary_as_json_lines() {
    let out = run(bin().args(["bench", "--iterations", "5", "--warmup", "1", "--hd720"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {err}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let stages: Vec<&str> = lines.iter().filter_map(|l| l["stage"].as_str()).collect();
    for stage in ["decode_yuyv", "decode_mjpeg", "screen_locate", "preprocess", "inference", "indicator", "whole_frame"]
    {
        assert!(stages.contains(&stage), "{stage} missing: {stages:?}");
    }
    let summary = lines.iter().find(|l| l["summary"] == true).expect("summary line");
    for key in ["inference_ms", "non_inference_ms", "in_loop_non_inference_ms", "peak_rss_mb"] {
        let value = summary[key].as_f64().unwrap_or_else(|| panic!("{key} missing: {summary}"));
        assert!(value.is_finite() && value > 0.0, "{key} = {value}");
    }
    assert_eq!(summary["screen"], "1280x720");
}
