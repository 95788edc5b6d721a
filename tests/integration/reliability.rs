//! A cart runs all day: random and damaged input never panics (property tests), the audit log
//! survives kill -9 and a full disk, the soak command works, and a signed model manifest is
//! checked before the model is used. The long runs (fuzzing, the 100,000-frame soak) are in
//! scripts/fuzz.sh and docs/reliability.md.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kidney_screen::audit::{AUDIT_FILE, AuditLog, AuditOptions, AuditRecord, read_dir_records, read_records};
use kidney_screen::capture::convert::{self, LumaRange, PixelFormat};
use kidney_screen::capture::replay::{MjpegReplay, RawReplay};
use kidney_screen::capture::{CaptureError, FrameInfo, FrameSource};
use kidney_screen::config::Config;
use kidney_screen::decision::Verdict;
use kidney_screen::frame::LumaFrame;
use kidney_screen::model::{Classifier, SIGNATURE_FILE};
use kidney_screen::pipeline::{FrameResult, run_loop};
use proptest::prelude::*;

use crate::{fixture, fixture_screens, shipped_model};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kidney-screen"));
    c.env("RUST_LOG", "error");
    c
}

const FORMATS: [PixelFormat; 5] =
    [PixelFormat::Yuyv, PixelFormat::Nv12, PixelFormat::Mjpeg, PixelFormat::Grey, PixelFormat::Rgb24];

/// Drains a source: every frame is a frame of its stated size or a bad frame; it ends within
/// `file_len + 1` calls (a raw dump of 1x1 GREY frames has one frame per byte).
fn drain(source: &mut dyn FrameSource, file_len: usize) -> (usize, usize) {
    let (mut good, mut bad) = (0, 0);
    for _ in 0..file_len + 2 {
        match source.next_frame() {
            Ok(Some((frame, _))) => {
                assert_eq!(frame.pixels().len(), (frame.width() * frame.height()) as usize);
                good += 1;
            }
            Ok(None) => return (good, bad),
            Err(CaptureError::BadFrame(why)) => {
                assert!(!why.is_empty());
                bad += 1;
            }
            Err(e) => panic!("unexpected capture error {e}"),
        }
    }
    panic!("a non-looping replay did not end");
}

/// Byte-level damage to a valid stream: flips, a cut, an insertion.
fn damage(mut data: Vec<u8>, flips: &[(usize, u8)], cut: Option<usize>, insert: &[u8], at: usize) -> Vec<u8> {
    for &(pos, value) in flips {
        let i = pos % data.len();
        data[i] ^= value;
    }
    let at = at % (data.len() + 1);
    data.splice(at..at, insert.iter().copied());
    if let Some(cut) = cut {
        data.truncate(cut % (data.len() + 1));
    }
    data
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random bytes of random lengths (around the exact frame size too) into every converter.
    #[test]
    fn converters_never_panic_on_random_bytes_and_sizes(
        format in 0..FORMATS.len(),
        full in any::<bool>(),
        width in 0u32..300,
        height in 0u32..200,
        exact in any::<bool>(),
        slack in -8i64..8,
        seed in any::<u64>(),
    ) {
        let format = FORMATS[format];
        let len = match (exact, format.raw_len(width, height)) {
            (true, Some(n)) => (n as i64 + slack).max(0) as usize,
            _ => (seed % 20_000) as usize,
        };
        let mut rng = <rand_pcg::Pcg64 as rand::SeedableRng>::seed_from_u64(seed);
        let data: Vec<u8> = (0..len).map(|_| rand::Rng::r#gen(&mut rng)).collect();
        let range = if full { LumaRange::Full } else { LumaRange::Limited };
        let mut frame = LumaFrame::default();
        let mut scratch = Vec::new();
        let result = convert::to_luma(None, format, range, &data, width, height, &mut frame, &mut scratch);
        if width == 0 || height == 0 {
            prop_assert!(result.is_err());
        }
        if let Some(needed) = format.raw_len(width, height) {
            prop_assert_eq!(result.is_ok(), width > 0 && height > 0 && data.len() >= needed);
        }
        if result.is_ok() {
            prop_assert_eq!((frame.width(), frame.height()), (width, height));
        }
        let mut out = vec![0u8; (width * height) as usize];
        let _ = convert::yuyv_to_luma(&data, width, height, &mut out);
        let _ = convert::nv12_to_luma(&data, width, height, &mut out);
        let _ = convert::mjpeg_to_luma(&data, width, height, &mut out, &mut scratch);
    }

    /// A real JPEG with random damage: the decoder gives an error or a frame, never a panic.
    #[test]
    fn damaged_jpegs_decode_or_fail_cleanly(
        flips in prop::collection::vec((any::<usize>(), 1u8..=255), 0..6),
        cut in prop::option::of(any::<usize>()),
        insert in prop::collection::vec(any::<u8>(), 0..16),
        at in any::<usize>(),
    ) {
        let jpeg = damage(std::fs::read(fixture("frames/frame_320x180.mjpg")).unwrap(), &flips, cut, &insert, at);
        let mut frame = LumaFrame::default();
        let mut scratch = Vec::new();
        let _ = convert::to_luma(None, PixelFormat::Mjpeg, LumaRange::Full, &jpeg, 320, 180, &mut frame, &mut scratch);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Damaged MJPEG streams and random raw dumps through the replay sources (files on disk).
    #[test]
    fn replay_sources_never_panic_on_damaged_or_random_files(
        flips in prop::collection::vec((any::<usize>(), 1u8..=255), 0..8),
        cut in prop::option::of(any::<usize>()),
        insert in prop::collection::vec(any::<u8>(), 0..64),
        at in any::<usize>(),
        format in 0..FORMATS.len(),
        width in 0u32..64,
        height in 0u32..64,
        random in prop::collection::vec(any::<u8>(), 0..30_000),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let stream = damage(std::fs::read(fixture("frames/screens_1280x720.mjpg")).unwrap(), &flips, cut, &insert, at);
        for (name, data) in [("damaged.mjpg", &stream), ("random.bin", &random)] {
            let path = dir.path().join(name);
            std::fs::write(&path, data).unwrap();
            if let Ok(mut src) = MjpegReplay::open(&path, false) {
                drain(&mut src, data.len());
            }
            if let Ok(mut src) = RawReplay::open(&path, FORMATS[format], LumaRange::Limited, width, height, false) {
                let (good, bad) = drain(&mut src, data.len());
                let frame_len = FORMATS[format].raw_len(width, height).unwrap();
                prop_assert_eq!(good, data.len() / frame_len);
                prop_assert_eq!(bad, usize::from(data.len() % frame_len != 0));
            }
        }
    }
}

/// Values for config keys: in range, out of range, wrong type.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        (-5i64..70_000).prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        Just("nan".to_string()),
        Just("-inf".to_string()),
        any::<bool>().prop_map(|v| v.to_string()),
        "[a-z0-9/._ -]{0,12}".prop_map(|s| format!("{s:?}")),
        prop::collection::vec(-2.0f64..2.0, 0..4).prop_map(|v| format!("{v:?}")),
        (0.0f64..1.2, 0.0f64..1.2, 0.0f64..1.2, 0.0f64..1.2)
            .prop_map(|(x, y, w, h)| format!("{{ x = {x}, y = {y}, width = {w}, height = {h} }}")),
        (-10i64..2000, -10i64..2000, -10i64..2000, -10i64..2000)
            .prop_map(|(x, y, w, h)| format!("{{ x = {x}, y = {y}, width = {w}, height = {h} }}")),
    ]
}

const SECTIONS: &[(&str, &[&str])] = &[
    (
        "capture",
        &[
            "source",
            "device",
            "path",
            "width",
            "height",
            "formats",
            "format",
            "timeout_ms",
            "luma_range",
            "loop",
            "seed",
            "frames_per_patient",
        ],
    ),
    ("screen", &["image_rect"]),
    ("roi", &["guide"]),
    ("model", &["dir", "threads", "public_key"]),
    ("decision", &["k", "n", "threshold", "indeterminate"]),
    ("indicator", &["console", "json_events"]),
    ("indicator.gpio", &["backend", "chip", "green", "amber", "red", "active_low"]),
    ("audit", &["dir", "sync", "max_bytes", "keep"]),
    (
        "display",
        &[
            "sink", "device", "path", "panel", "width", "height", "rotation", "spi_bus", "spi_hz", "dc_pin", "rst_pin",
            "required",
        ],
    ),
    ("bogus", &["key"]),
];

/// Profiles built from the real sections and keys with random values.
fn random_profile() -> impl Strategy<Value = String> {
    let entry = (0..SECTIONS.len(), any::<prop::sample::Index>(), toml_value());
    (prop::collection::vec(entry, 0..14), any::<bool>()).prop_map(|(entries, simulated)| {
        let mut by_section: Vec<(usize, Vec<(String, String)>)> = Vec::new();
        for (s, key, value) in entries {
            let key = key.get(SECTIONS[s].1).to_string();
            match by_section.iter_mut().find(|(i, _)| *i == s) {
                Some((_, keys)) if !keys.iter().any(|(k, _)| *k == key) => keys.push((key, value)),
                Some(_) => {}
                None => by_section.push((s, vec![(key, value)])),
            }
        }
        let mut text = if simulated { "[capture]\nsource = \"simulated\"\n".to_string() } else { String::new() };
        for (s, keys) in by_section {
            if simulated && SECTIONS[s].0 == "capture" {
                for (k, v) in keys.iter().filter(|(k, _)| k != "source") {
                    text.push_str(&format!("{k} = {v}\n"));
                }
                continue;
            }
            text.push_str(&format!("[{}]\n", SECTIONS[s].0));
            for (k, v) in keys {
                text.push_str(&format!("{k} = {v}\n"));
            }
        }
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Arbitrary text: a config or a one-line error, never a panic.
    #[test]
    fn config_parse_never_panics_on_random_text(text in "\\PC{0,200}") {
        if let Err(e) = Config::parse(&text) {
            let message = format!("{e:#}");
            prop_assert!(!message.contains('\n'), "{}", message);
        }
    }

    /// Real sections and keys with random, often out-of-range values: a valid config or a
    /// one-line error; never a panic.
    #[test]
    fn config_parse_never_panics_on_random_values(text in random_profile()) {
        match Config::parse(&text) {
            Ok(c) => {
                prop_assert!((1..=c.n).contains(&c.k));
                prop_assert!(c.audit_keep >= 1 && c.audit_max_bytes >= 4096);
            }
            Err(e) => {
                let message = format!("{e:#}");
                prop_assert!(!message.contains('\n'), "{}", message);
            }
        }
    }
}

#[test]
/// Range errors name the key; type errors (serde's) name the line and column of the value.
fn out_of_range_values_are_errors_naming_the_key_or_its_line() {
    let sim = "[capture]\nsource = \"simulated\"\n";
    let cases: &[(&str, &str)] = &[
        ("[audit]\nmax_bytes = 100\n", "[audit] max_bytes = 100"),
        ("[audit]\nmax_bytes = -1\n", "line 4, column 13: invalid value: integer `-1`"),
        ("[audit]\nkeep = 0\n", "[audit] keep = 0"),
        ("[audit]\nkeep = 5000\n", "[audit] keep = 5000"),
        ("[audit]\nsync = 1\n", "line 4, column 8: invalid type: integer `1`"),
        ("[model]\nthreads = 0\n", "[model] threads = 0"),
        ("[model]\nthreads = 99\n", "[model] threads = 99"),
        ("[model]\npublic_key = \"abc\"\n", "[model] public_key"),
        ("[model]\npublic_key = 7\n", "line 4, column 14: invalid type"),
        ("[model]\ndir = [1]\n", "line 4, column 7: invalid type: sequence"),
        ("[decision]\nk = 0\n", "[decision] k = 0"),
        ("[decision]\nk = 4\nn = 17\n", "n = 17"),
        ("[decision]\nk = -1\n", "line 4, column 5: invalid value: integer `-1`"),
        ("[decision]\nthreshold = nan\n", "threshold"),
        ("[decision]\nthreshold = 0.5\nindeterminate = [0.7, 0.6]\n", "indeterminate band"),
        ("[decision]\nthreshold = 0.5\nindeterminate = [0.2]\n", "line 5, column 17: invalid length 1"),
        ("[decision]\nindeterminate = [0.2, 0.8]\n", "needs threshold"),
        ("[roi]\nguide = { x = nan, y = 0.1, width = 0.5, height = 0.5 }\n", "[roi] guide"),
        ("[roi]\nguide = { x = 0.1, y = 0.1, width = -0.5, height = 0.5 }\n", "[roi] guide"),
        ("[screen]\nimage_rect = { x = -1, y = 0, width = 10, height = 10 }\n", "x"),
        ("[screen]\nimage_rect = { x = 0, y = 0, width = 1281, height = 10 }\n", "image_rect"),
    ];
    let mut wrong = Vec::new();
    for (section, needle) in cases {
        let err = format!("{:#}", Config::parse(&format!("{sim}{section}")).unwrap_err());
        if !err.contains(needle) || err.contains('\n') {
            wrong.push(format!("{section:?}: {needle:?} not in {err:?}"));
        }
    }
    let captures: &[(&str, &str)] = &[
        ("source = \"v4l2\"\nwidth = 100000\nheight = 720\n", "width"),
        ("source = \"v4l2\"\nwidth = 1280\nheight = 720\ntimeout_ms = 10\n", "timeout_ms = 10"),
        ("source = \"v4l2\"\nwidth = 1280\nheight = 720\nformats = []\n", "formats"),
        ("source = \"v4l2\"\nwidth = 1280\nheight = 720\nformats = [\"H264\"]\n", "H264"),
        ("source = \"simulated\"\nwidth = 640\nheight = 480\n", "1280x720 or 1920x1080"),
        ("source = \"simulated\"\nseed = -5\n", "line 3, column 8: invalid value: integer `-5`"),
        ("source = \"simulated\"\nframes_per_patient = 5000000000\n", "line 3, column 22"),
        ("source = \"raw\"\npath = \"x.yuv\"\nformat = \"MJPEG\"\nwidth = 4\nheight = 4\n", "MJPEG"),
        ("source = \"raw\"\npath = \"x.yuv\"\nformat = \"YUYV\"\nwidth = 4\n", "height"),
        ("source = \"mjpeg\"\n", "needs `path`"),
        ("source = \"simulated\"\nluma_range = \"studio\"\n", "studio"),
    ];
    for (capture, needle) in captures {
        let err = format!("{:#}", Config::parse(&format!("[capture]\n{capture}")).unwrap_err());
        if !err.contains(needle) || err.contains('\n') {
            wrong.push(format!("{capture:?}: {needle:?} not in {err:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn audit_rotation_and_public_key_keys_parse() {
    let key = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
    let c = Config::parse(&format!(
        "[capture]\nsource = \"simulated\"\n[model]\npublic_key = \"{key}\"\n[audit]\ndir = \"/tmp/a\"\nmax_bytes = 65536\nkeep = 3\n"
    ))
    .unwrap();
    assert_eq!((c.audit_max_bytes, c.audit_keep), (65536, 3));
    assert_eq!(c.model_public_key.map(hex::encode).as_deref(), Some(key));
    let options = AuditOptions::from_config(&c);
    assert_eq!((options.max_bytes, options.keep, options.sync), (65536, 3, true));
    let d = Config::parse("[capture]\nsource = \"simulated\"\n").unwrap();
    assert_eq!((d.audit_max_bytes, d.audit_keep, d.model_public_key), (16 * 1024 * 1024, 8, None));
}

/// A corrupt frame whose JPEG header declares 60000x60000 must be dropped as a bad frame, not
/// make the replay allocate 10.8 GB and abort (capture/replay.rs caps the declared size).
#[test]
fn oversized_jpeg_header_is_a_bad_frame_not_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("board.toml");
    std::fs::write(
        &cfg,
        format!(
            "[capture]\nsource = \"mjpeg\"\npath = \"{}\"\n[model]\ndir = \"{}\"\n[indicator]\nconsole = false\n",
            fixture("frames/huge_dims_60000x60000.mjpg").display(),
            shipped_model().display()
        ),
    )
    .unwrap();
    // 4 GiB of address space: the 10.8 GB allocation fails at once instead of swapping.
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 4000000; exec \"$0\" run --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_kidney-screen"))
        .arg(&cfg)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the bad frame must be dropped and the replay end: {:?} {err}", out.status);
}

#[test]
fn truncated_last_raw_frame_is_a_counted_dropped_frame_at_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let one = std::fs::read(fixture("frames/yuyv_320x180.yuv")).unwrap();
    let path = dir.path().join("dump.yuv");
    let mut data = one.clone();
    data.extend_from_slice(&one);
    data.extend_from_slice(&one[..one.len() / 3]);
    std::fs::write(&path, &data).unwrap();
    let cfg = Config::parse(&format!(
        "[capture]\nsource = \"raw\"\npath = \"{}\"\nformat = \"YUYV\"\nwidth = 320\nheight = 180\n[model]\ndir = \"{}\"\n[indicator]\nconsole = false\n",
        path.display(),
        shipped_model().display()
    ))
    .unwrap();
    let mut source = kidney_screen::setup::open_source(&cfg.source).unwrap();
    let mut pipeline = kidney_screen::setup::build_pipeline(&cfg, source.describe(), None).unwrap();
    let mut dropped = Vec::new();
    let counters = run_loop(&mut source, &mut pipeline, &Default::default(), None, |o, _| {
        if let FrameResult::Dropped(why) = &o.result {
            dropped.push(why.clone());
        }
    })
    .unwrap();
    assert_eq!((counters.frames, counters.dropped), (3, 1), "{counters:?}");
    assert!(dropped[0].contains("truncated") && dropped[0].contains("dump.yuv"), "{dropped:?}");
}

#[test]
fn a_model_with_nan_output_shows_fault_and_the_pipeline_keeps_going() {
    let cfg = Config::parse(&format!(
        "[capture]\nsource = \"simulated\"\n[model]\ndir = \"{}\"\n[decision]\nk = 2\nn = 3\n[indicator]\nconsole = false\n",
        fixture("models/nan").display()
    ))
    .unwrap();
    let mut pipeline = kidney_screen::setup::build_pipeline(&cfg, "test".into(), None).unwrap();
    let screen = LumaFrame::load(&fixture_screens()[0].0).unwrap();
    let shown: Vec<_> = (0..4)
        .map(|i| {
            let o = pipeline.process(&screen, FrameInfo { sequence: i });
            assert!(matches!(&o.result, FrameResult::Fault(why) if why.contains("not finite")), "{:?}", o.result);
            o.shown.verdict
        })
        .collect();
    assert_eq!(shown, [None, Some(Verdict::Fault), Some(Verdict::Fault), Some(Verdict::Fault)]);
    assert_eq!(pipeline.counters().faults, 4);
}

// ---------------------------------------------------------------------------------------------
// Audit log: kill -9, full disk.

fn sim_profile(dir: &Path, audit: &Path) -> PathBuf {
    let cfg = dir.join("board.toml");
    std::fs::write(
        &cfg,
        format!(
            "[capture]\nsource = \"simulated\"\nframes_per_patient = 3\n[model]\ndir = \"{}\"\n[decision]\nk = 1\nn = 1\n[indicator]\nconsole = false\n[audit]\ndir = \"{}\"\nsync = true\n",
            shipped_model().display(),
            audit.display()
        ),
    )
    .unwrap();
    cfg
}

fn count_lines(path: &Path) -> usize {
    std::fs::read(path).map(|b| b.iter().filter(|&&c| c == b'\n').count()).unwrap_or(0)
}

#[cfg(unix)]
#[test]
fn kill_9_mid_write_leaves_every_earlier_record_parseable() {
    use rand::Rng;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit");
    let cfg = sim_profile(dir.path(), &audit);
    let log = audit.join(AUDIT_FILE);
    let mut rng = rand::thread_rng();
    let kills = 5;
    let (mut lines, mut before) = (0, 0);
    for round in 0..kills {
        let mut child = bin().arg("run").arg("--config").arg(&cfg).stdout(Stdio::null()).spawn().unwrap();
        // Until this run has written some records of its own, then a random moment later.
        let deadline = Instant::now() + Duration::from_secs(120);
        while count_lines(&log) < lines + 2 {
            assert!(Instant::now() < deadline, "round {round}: no audit records within 120 s");
            assert!(child.try_wait().unwrap().is_none(), "round {round}: the run stopped early");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..1500)));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
        let (records, torn) = read_records(&log).unwrap();
        // Every record before the kill parses; only a record cut by this kill may be torn.
        assert!(torn <= round + 1, "round {round}: {torn} torn lines");
        assert!(records.len() > before, "round {round}: {} records, {before} before", records.len());
        for r in &records {
            assert!(
                ["NORMAL", "ESRD SUSPECTED", "INDETERMINATE", "NO IMAGE", "NO SIGNAL", "FAULT"]
                    .contains(&r.verdict.as_str())
            );
        }
        (lines, before) = (count_lines(&log), records.len());
    }
    // Re-opening repairs a torn end; the next record is on its own line and parses.
    let mut reopened = AuditLog::open(&audit, true).unwrap();
    let (records, _) = read_records(&log).unwrap();
    let mut last = records.last().unwrap().clone();
    last.sequence = 999_999;
    reopened.append(&last).unwrap();
    let (after, _) = read_records(&log).unwrap();
    assert_eq!(after.len(), records.len() + 1);
    assert_eq!(after.last().unwrap().sequence, 999_999);
    println!("kill -9: {kills} kills, {} records all parseable", after.len());
}

fn shown_verdicts(records: &[AuditRecord]) -> Vec<(u64, &str)> {
    records.iter().map(|r| (r.sequence, r.verdict.as_str())).collect()
}

#[cfg(target_os = "linux")]
#[test]
fn audit_on_a_full_disk_shows_fault_keeps_running_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit");
    std::fs::create_dir(&audit).unwrap();
    let log = audit.join(AUDIT_FILE);
    // Every write to /dev/full fails with ENOSPC.
    std::os::unix::fs::symlink("/dev/full", &log).unwrap();
    let cfg = Config::parse(&format!(
        "[capture]\nsource = \"images\"\npath = \"{}\"\n[model]\ndir = \"{}\"\n[decision]\nk = 1\nn = 1\n[indicator]\nconsole = false\n[audit]\ndir = \"{}\"\n",
        fixture("screens").display(),
        shipped_model().display(),
        audit.display()
    ))
    .unwrap();
    let mut pipeline = kidney_screen::setup::build_pipeline(&cfg, "test".into(), None).unwrap();
    let (esrd, _) = fixture_screens().into_iter().find(|(_, esrd)| *esrd).unwrap();
    let screen = LumaFrame::load(&esrd).unwrap();
    for i in 0..3 {
        let o = pipeline.process(&screen, FrameInfo { sequence: i });
        // The frames are still classified; what is shown is FAULT.
        assert!(matches!(o.result, FrameResult::Classified { raw: Verdict::EsrdSuspected, .. }), "{:?}", o.result);
        assert_eq!(o.shown.verdict, Some(Verdict::Fault), "frame {i}");
        assert_eq!(o.shown.changed, i == 0);
    }
    let c = pipeline.counters();
    assert_eq!((c.frames, c.classified, c.audit_records, c.audit_errors, c.audit_dropped), (3, 3, 0, 2, 0));
    // Space returns (the card is swapped: audit.jsonl is a new file).
    std::fs::remove_file(&log).unwrap();
    let o = pipeline.process(&screen, FrameInfo { sequence: 3 });
    assert_eq!(o.shown.verdict, Some(Verdict::EsrdSuspected));
    assert!(o.shown.changed);
    let (records, torn) = read_records(&log).unwrap();
    assert_eq!(torn, 0);
    // Nothing lost: the verdict that could not be written, the FAULT shown in its place, and
    // the verdict shown again once the log took records.
    assert_eq!(shown_verdicts(&records), [(0, "ESRD SUSPECTED"), (0, "FAULT"), (3, "ESRD SUSPECTED")]);
    assert_eq!(pipeline.counters().audit_records, 3);
}

/// Unmounts on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A real filesystem that fills up: a 64 KiB tmpfs. Needs root with CAP_SYS_ADMIN (skipped with
/// a note elsewhere; the /dev/full and injected-disk tests cover the same paths).
#[cfg(target_os = "linux")]
#[test]
fn audit_on_a_real_full_tmpfs_keeps_what_was_written_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let mount_ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(dir.path())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mount_ok {
        eprintln!("note: cannot mount a tmpfs here (not root / no CAP_SYS_ADMIN): test skipped");
        return;
    }
    let _mount = Mount(dir.path().to_path_buf());
    let audit = dir.path().join("audit");
    let options = AuditOptions { sync: true, max_bytes: 1 << 20, keep: 2, backlog: 64 };
    let mut log = AuditLog::open_with(&audit, options).unwrap();
    let record = |sequence: u64| AuditRecord {
        time: kidney_screen::audit::now_rfc3339(),
        sequence,
        source: "tmpfs".into(),
        model_id: "m".into(),
        model_sha256: "0".repeat(64),
        roi_sha256: None,
        roi: None,
        probability: Some(0.5),
        verdict: "NORMAL".into(),
        agreeing: 1,
        window: 1,
    };
    for seq in 0..3 {
        log.append(&record(seq)).unwrap();
    }
    // Fill the rest of the filesystem.
    let filler = dir.path().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    while f.write_all(&[0u8; 4096]).is_ok() {}
    drop(f);
    // Records still fit in the log's last page, then one is cut short by ENOSPC.
    let mut seq = 3;
    while log.append(&record(seq)).is_ok() {
        seq += 1;
        assert!(seq < 1000, "the tmpfs never filled");
    }
    let failed_at = seq;
    for s in failed_at + 1..failed_at + 5 {
        assert!(log.append(&record(s)).is_err());
    }
    assert!(log.is_failing());
    assert_eq!(log.pending(), 5);
    let (records, torn) = read_records(&audit.join(AUDIT_FILE)).unwrap();
    assert_eq!(torn, 0, "the short write was cut off again");
    assert_eq!(records.iter().map(|r| r.sequence).collect::<Vec<_>>(), (0..failed_at).collect::<Vec<_>>());
    std::fs::remove_file(&filler).unwrap();
    log.retry().unwrap();
    let (records, torn) = read_dir_records(&audit).unwrap();
    assert_eq!(torn, 0);
    assert_eq!(records.iter().map(|r| r.sequence).collect::<Vec<_>>(), (0..failed_at + 5).collect::<Vec<_>>());
    println!("tmpfs: the disk filled after {failed_at} records; 5 waited and were written when space returned");
}

// ---------------------------------------------------------------------------------------------
// Soak, model signature.

#[test]
fn soak_command_runs_and_reports_rss() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("soak.json");
    let out = bin()
        .args(["soak", "--frames", "40", "--sample-every", "10", "--report"])
        .arg(&report)
        .arg("--model")
        .arg(shipped_model())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("RSS: start"), "{text}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["frames"], 40);
    assert_eq!(report["samples"].as_array().unwrap().len(), 4);
    assert!(report["rss_end_kib"].as_u64().unwrap() > 1000);
    assert!(report["slope_kib_per_1000_frames"].is_number());
}

fn copy_model() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["manifest.toml", "model.int8.onnx"] {
        std::fs::copy(shipped_model().join(f), tmp.path().join(f)).unwrap();
    }
    tmp
}

fn load_error(dir: &Path, key: &[u8; 32]) -> String {
    match Classifier::load_verified(dir, Some(key)) {
        Ok(_) => panic!("{} loaded but must be refused", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn signed_manifest_loads_and_a_changed_or_unsigned_one_is_refused() {
    let model = copy_model();
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("signing.key");
    let out = bin().arg("sign").arg("--generate").arg(&key_file).arg(model.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let public_hex = stdout.split("public_key = \"").nth(1).unwrap().split('"').next().unwrap();
    let public = kidney_screen::config::parse_public_key(public_hex).unwrap();
    assert_eq!(std::fs::read_to_string(keys.path().join("signing.key.pub")).unwrap().trim(), public_hex);
    #[cfg(unix)]
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key_file).unwrap().permissions()) & 0o777,
        0o600
    );
    // Good signature: loads.
    Classifier::load_verified(model.path(), Some(&public)).unwrap();

    // One byte of the manifest changed (the operating point): refused, naming the files.
    let manifest = model.path().join("manifest.toml");
    let original = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, original.replacen("threshold = 0.5", "threshold = 0.4", 1)).unwrap();
    let err = load_error(model.path(), &public);
    assert!(err.contains(SIGNATURE_FILE) && err.contains("manifest.toml") && err.contains("does not verify"), "{err}");
    // Re-signed with the key: loads again.
    let out = bin().arg("sign").arg("--key").arg(&key_file).arg(model.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Classifier::load_verified(model.path(), Some(&public)).unwrap();
    std::fs::write(&manifest, &original).unwrap();

    // Another key: refused.
    let other = kidney_screen::model::public_key(&[7u8; 32]);
    let err = load_error(model.path(), &other);
    assert!(err.contains("does not verify"), "{err}");
    // A damaged signature file: refused.
    std::fs::write(model.path().join(SIGNATURE_FILE), "not hex\n").unwrap();
    let err = load_error(model.path(), &public);
    assert!(err.contains(SIGNATURE_FILE) && err.contains("128 hex digits"), "{err}");
    // No signature while a key is configured: refused; without a key the hash check alone runs.
    std::fs::remove_file(model.path().join(SIGNATURE_FILE)).unwrap();
    let err = load_error(model.path(), &public);
    assert!(err.contains(SIGNATURE_FILE) && err.contains("required"), "{err}");
    Classifier::load_verified(model.path(), None).unwrap();
}

#[test]
fn sign_command_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin().arg("sign").arg(shipped_model()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--key"));
    let bad_key = dir.path().join("bad.key");
    std::fs::write(&bad_key, "xyz").unwrap();
    let out = bin().arg("sign").arg("--key").arg(&bad_key).arg(shipped_model()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(1) && err.contains("bad.key") && err.contains("64 hex digits"), "{err}");
    // --generate never overwrites a key.
    let out = bin().arg("sign").arg("--generate").arg(&bad_key).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(1) && err.contains("bad.key"), "{err}");
    assert_eq!(std::fs::read_to_string(&bad_key).unwrap(), "xyz");
}
