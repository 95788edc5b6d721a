//! The whole pipeline, frame in to shown verdict and audit record out, from replayed frames:
//! full scanner screens as PNG files and as an ffmpeg-encoded MJPEG stream.

use std::sync::atomic::AtomicBool;

use kidney_screen::audit::{AUDIT_FILE, read_records};
use kidney_screen::capture::FrameSource;
use kidney_screen::capture::replay::{ImageReplay, MjpegReplay};
use kidney_screen::config::Config;
use kidney_screen::decision::Verdict;
use kidney_screen::model::Manifest;
use kidney_screen::pipeline::{FrameResult, run_loop};

use crate::{fixture, fixture_screens, shipped_model};

fn config(audit: Option<&std::path::Path>) -> Config {
    let mut text = format!(
        "[capture]\nsource = \"images\"\npath = \"{}\"\n[model]\ndir = \"{}\"\n[indicator]\nconsole = false\n",
        fixture("screens").display(),
        shipped_model().display()
    );
    if let Some(dir) = audit {
        text.push_str(&format!("[audit]\ndir = \"{}\"\n", dir.display()));
    }
    Config::parse(&text).unwrap()
}

#[test]
fn every_fixture_screen_is_classified_as_labelled() {
    let cfg = config(None);
    let mut pipeline = kidney_screen::setup::build_pipeline(&cfg, "test".into(), None).unwrap();
    for (path, esrd) in fixture_screens() {
        let frame = kidney_screen::frame::LumaFrame::load(&path).unwrap();
        let outcome = pipeline.process(&frame, kidney_screen::capture::FrameInfo { sequence: 0 });
        let FrameResult::Classified { probability, raw, roi } = outcome.result else {
            panic!("{}: {:?}", path.display(), outcome.result);
        };
        let expected = if esrd { Verdict::EsrdSuspected } else { Verdict::Normal };
        assert_eq!(raw, expected, "{}: p(ESRD) {probability}", path.display());
        // The ROI lies inside the image area, never over the chrome with the patient fields.
        assert!(roi.rect().x >= 260 && roi.rect().y >= 96 && roi.rect().right() <= 900 && roi.rect().bottom() <= 616);
    }
    pipeline.shutdown();
}

#[test]
fn steady_scan_shows_a_verdict_after_k_frames_and_audits_it() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    let (esrd_screen, _) = fixture_screens().into_iter().find(|(_, esrd)| *esrd).unwrap();
    for i in 0..8 {
        std::fs::copy(&esrd_screen, frames.join(format!("f{i:02}.png"))).unwrap();
    }
    let audit_dir = dir.path().join("audit");
    let cfg = config(Some(&audit_dir));
    let mut source = ImageReplay::open(&frames, false).unwrap();
    let mut pipeline = kidney_screen::setup::build_pipeline(&cfg, source.describe(), None).unwrap();
    let mut shown = Vec::new();
    let counters =
        run_loop(&mut source, &mut pipeline, &AtomicBool::new(false), None, |o, _| shown.push(o.shown.verdict))
            .unwrap();
    pipeline.shutdown();
    assert_eq!(counters.frames, 8);
    assert_eq!(counters.classified, 8);
    // k = 4 of n = 6 by default: nothing shown for three frames, then ESRD SUSPECTED steadily.
    assert_eq!(&shown[..3], &[None, None, None]);
    assert!(shown[3..].iter().all(|v| *v == Some(Verdict::EsrdSuspected)), "{shown:?}");

    let (records, torn) = read_records(&audit_dir.join(AUDIT_FILE)).unwrap();
    assert_eq!(torn, 0);
    assert_eq!(records.len(), 1, "one record per shown verdict");
    let r = &records[0];
    let manifest = Manifest::load(&shipped_model()).unwrap();
    assert_eq!(r.verdict, "ESRD SUSPECTED");
    assert_eq!(r.sequence, 3);
    assert_eq!(r.model_sha256, manifest.sha256);
    assert_eq!(r.model_id, manifest.id);
    assert!(r.probability.unwrap() >= 0.65);
    assert_eq!(r.roi_sha256.as_ref().map(String::len), Some(64));
    // Nothing but the record: no image data is stored next to the log.
    let stored: Vec<_> = std::fs::read_dir(&audit_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(stored, vec![std::ffi::OsString::from(AUDIT_FILE)]);
}

#[test]
fn mjpeg_stream_gives_the_same_verdicts_as_the_png_screens() {
    // ffmpeg's glob order: esrd_9000001, esrd_9000003, normal_9000000, normal_9000002.
    let expected = [Verdict::EsrdSuspected, Verdict::EsrdSuspected, Verdict::Normal, Verdict::Normal];
    let cfg = config(None);
    let mut source = MjpegReplay::open(&fixture("frames/screens_1280x720.mjpg"), false).unwrap();
    let mut pipeline = kidney_screen::setup::build_pipeline(&cfg, source.describe(), None).unwrap();
    let mut raw = Vec::new();
    run_loop(&mut source, &mut pipeline, &AtomicBool::new(false), None, |o, _| {
        if let FrameResult::Classified { raw: v, .. } = o.result {
            raw.push(v);
        }
    })
    .unwrap();
    assert_eq!(raw, expected);
}

#[test]
fn capture_loss_shows_no_signal_at_once() {
    use kidney_screen::capture::CaptureError;
    let cfg = config(None);
    let mut pipeline = kidney_screen::setup::build_pipeline(&cfg, "test".into(), None).unwrap();
    let o = pipeline.capture_failed(0, &CaptureError::Disconnected("unplugged".into()));
    assert_eq!(o.shown.verdict, Some(Verdict::NoSignal));
    let o = pipeline.capture_failed(1, &CaptureError::BadFrame("ERROR flag".into()));
    assert_eq!(o.result, FrameResult::Dropped("ERROR flag".into()));
    assert_eq!(o.shown.verdict, Some(Verdict::NoSignal));
    assert_eq!(pipeline.counters().dropped, 1);
}

/// `run` prepares the next frame (capture, screen location, ROI, preprocessing) on a thread of
/// its own while the loop classifies this one. Frame for frame it must give what the one-thread
/// loop gives: the same outcomes in the same order, bad frames included, and the same audit
/// records (verdict changes, the ROI hash taken from the prepared frame's own buffer).
#[test]
fn preparing_ahead_on_a_thread_gives_the_same_outcomes_and_audit_as_the_one_thread_loop() {
    use kidney_screen::pipeline::run_loop_ahead;
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    // Screens of both labels in runs long enough to show verdicts, with an unreadable frame
    // (dropped) and a flat screen (no signal) among them.
    let screens = fixture_screens();
    let mut n = 0;
    let mut add = |from: &std::path::Path| {
        std::fs::copy(from, frames.join(format!("f{n:03}.png"))).unwrap();
        n += 1;
    };
    // Six frames of each screen: enough for k = 4 of n = 6 to show its verdict.
    for (path, _) in screens.iter().chain(&screens) {
        for _ in 0..6 {
            add(path);
        }
    }
    std::fs::write(frames.join("f004.png"), b"\x89PNG truncated").unwrap();
    kidney_screen::frame::LumaFrame::new(1280, 720).save_png(&frames.join("f010.png")).unwrap();

    let run = |ahead: bool| {
        let audit_dir = dir.path().join(if ahead { "audit-ahead" } else { "audit-direct" });
        let cfg = config(Some(&audit_dir));
        let source = ImageReplay::open(&frames, false).unwrap();
        let pipeline = kidney_screen::setup::build_pipeline(&cfg, source.describe(), None).unwrap();
        let mut outcomes = Vec::new();
        let counters = if ahead {
            let (front, mut back) = pipeline.split();
            let c =
                run_loop_ahead(source, front, &mut back, &AtomicBool::new(false), None, |o| outcomes.push(o.clone()));
            back.shutdown();
            c
        } else {
            let (mut source, mut pipeline) = (source, pipeline);
            let c =
                run_loop(&mut source, &mut pipeline, &AtomicBool::new(false), None, |o, _| outcomes.push(o.clone()));
            pipeline.shutdown();
            c
        }
        .unwrap();
        let (mut records, torn) = read_records(&audit_dir.join(AUDIT_FILE)).unwrap();
        assert_eq!(torn, 0);
        for r in &mut records {
            r.time.clear();
        }
        (outcomes, counters, records)
    };
    let (direct, direct_counters, direct_audit) = run(false);
    let (ahead, ahead_counters, ahead_audit) = run(true);
    assert_eq!(direct.len(), n);
    assert_eq!(ahead, direct);
    assert_eq!(ahead_counters, direct_counters);
    assert_eq!(ahead_audit, direct_audit);
    // The run covered what it claims to: a dropped frame, a flat screen, both verdicts shown.
    assert_eq!((direct_counters.dropped, direct_counters.no_signal), (1, 1), "{direct_counters:?}");
    let shown: std::collections::HashSet<_> = direct.iter().filter_map(|o| o.shown.verdict).collect();
    assert!(shown.contains(&Verdict::EsrdSuspected) && shown.contains(&Verdict::Normal), "{shown:?}");
    assert!(direct_audit.len() >= 3 && direct_audit.iter().any(|r| r.roi_sha256.is_some()), "{direct_audit:?}");
}

/// Once the image area is located, capture converts whole only the pixels preprocessing reads
/// (and, across the width, the rows screen location samples). Frame for frame that must classify
/// exactly as whole frames do. When the image moves, the one frame converted around its old
/// place is dropped, and the next, converted whole, finds it.
#[test]
fn converting_only_the_roi_classifies_as_whole_frames_do() {
    use kidney_screen::capture::replay::RawReplay;
    use kidney_screen::capture::{CaptureError, FrameInfo, LumaRange, PixelFormat};
    use kidney_screen::frame::LumaFrame;
    use kidney_screen::geometry::Rect;

    /// A raw replay that either converts whole frames whatever it is asked, or honours the
    /// window, counting the frames asked for with one.
    struct Replay {
        raw: RawReplay,
        honour: bool,
        windowed: usize,
    }
    impl FrameSource for Replay {
        fn next_frame(&mut self) -> Result<Option<(&LumaFrame, FrameInfo)>, CaptureError> {
            self.raw.next_frame()
        }
        fn set_window(&mut self, window: Option<Rect>) {
            self.windowed += usize::from(window.is_some());
            if self.honour {
                self.raw.set_window(window);
            }
        }
        fn describe(&self) -> String {
            self.raw.describe()
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let screens: Vec<LumaFrame> = fixture_screens().iter().map(|(p, _)| LumaFrame::load(p).unwrap()).collect();
    let (w, h) = (screens[0].width(), screens[0].height());
    // The first screen with everything on it moved 48 px right and 40 down: a scanner whose
    // image area moved (depth or zoom changed).
    let mut moved = LumaFrame::new(w, h);
    for y in 40..h {
        let (from, to) = (screens[0].row(y - 40), &mut moved.pixels_mut()[(y * w) as usize..][..w as usize]);
        to[48..].copy_from_slice(&from[..(w - 48) as usize]);
    }
    let sequence: Vec<&LumaFrame> = [&screens[0], &screens[1], &moved, &screens[0], &screens[2]]
        .into_iter()
        .flat_map(|s| std::iter::repeat_n(s, 6))
        .collect();
    let path = dir.path().join("screens.grey");
    let bytes: Vec<u8> = sequence.iter().flat_map(|f| f.pixels().iter().copied()).collect();
    std::fs::write(&path, bytes).unwrap();

    let run = |honour: bool| {
        let cfg = config(None);
        let raw = RawReplay::open(&path, PixelFormat::Grey, LumaRange::Full, w, h, false).unwrap();
        let mut source = Replay { raw, honour, windowed: 0 };
        let mut pipeline = kidney_screen::setup::build_pipeline(&cfg, source.describe(), None).unwrap();
        let mut results = Vec::new();
        run_loop(&mut source, &mut pipeline, &AtomicBool::new(false), None, |o, _| results.push(o.result.clone()))
            .unwrap();
        pipeline.shutdown();
        (results, source.windowed)
    };
    let (whole, _) = run(false);
    let (windowed, asked) = run(true);
    assert_eq!(whole.len(), sequence.len());
    assert!(whole.iter().all(|r| matches!(r, FrameResult::Classified { .. })), "{whole:?}");
    // After the first frame, every frame but the one after a move is asked for with a window.
    assert!(asked >= sequence.len() - 3, "{asked} of {} frames asked for with a window", sequence.len());
    let mut relocated = Vec::new();
    for (i, (ours, theirs)) in windowed.iter().zip(&whole).enumerate() {
        match ours {
            FrameResult::Dropped(why) if why.contains("image area moved") => relocated.push(i),
            _ => assert_eq!(ours, theirs, "frame {i}"),
        }
    }
    // The moved screen is noticed on its first frame, whose pixels around the old ROI are all
    // capture converted; moving back is noticed likewise.
    assert_eq!(relocated, vec![12, 18], "{windowed:?}");
}
