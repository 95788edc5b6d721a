//! Locating the B-mode image on whole scanner screens (simulated 1280x720 screens with UI
//! chrome: text with names, rulers, logo, colour bar).

use kidney_screen::frame::LumaFrame;
use kidney_screen::geometry::Rect;
use kidney_screen::screen::{ScreenLocator, ScreenState};

use crate::fixture_screens;

/// Where the simulator's 720p layout puts the image area.
const IMAGE_720P: Rect = Rect { x: 260, y: 96, width: 640, height: 520 };

fn load(path: &std::path::Path) -> LumaFrame {
    LumaFrame::load(path).unwrap()
}

#[test]
fn finds_the_image_area_and_ignores_the_chrome() {
    for (path, _) in fixture_screens() {
        let mut locator = ScreenLocator::new(None);
        let ScreenState::Image(found) = locator.locate(&load(&path)) else {
            panic!("{}: no image found", path.display());
        };
        // The found area must lie inside the layout's image rectangle (never the text, ruler or
        // logo around it) and cover most of it (sector scans leave black corners).
        assert!(
            found.x >= IMAGE_720P.x
                && found.y >= IMAGE_720P.y
                && found.right() <= IMAGE_720P.right()
                && found.bottom() <= IMAGE_720P.bottom() + 2,
            "{}: {found} leaves the image area {IMAGE_720P}",
            path.display()
        );
        assert!(
            found.area() * 10 >= IMAGE_720P.area() * 8,
            "{}: {found} covers too little of {IMAGE_720P}",
            path.display()
        );
    }
}

#[test]
fn detection_holds_steady_over_frames() {
    let screens = fixture_screens();
    let mut locator = ScreenLocator::new(None);
    let first = locator.locate(&load(&screens[0].0));
    for _ in 0..3 {
        assert_eq!(locator.locate(&load(&screens[0].0)), first);
    }
}

#[test]
fn profile_rectangle_is_used_as_given() {
    let (path, _) = &fixture_screens()[1];
    let mut locator = ScreenLocator::new(Some(IMAGE_720P));
    assert_eq!(locator.locate(&load(path)), ScreenState::Image(IMAGE_720P));
}

#[test]
fn a_screen_without_an_image_is_no_image() {
    let (path, _) = &fixture_screens()[0];
    let mut frame = load(path);
    let w = frame.width();
    for y in IMAGE_720P.y..IMAGE_720P.bottom() {
        let row = &mut frame.pixels_mut()[(y * w) as usize..((y + 1) * w) as usize];
        row[IMAGE_720P.x as usize..IMAGE_720P.right() as usize].fill(0);
    }
    assert_eq!(ScreenLocator::new(None).locate(&frame), ScreenState::NoImage);
    // With a profile rectangle too: an empty rectangle is not an image.
    assert_eq!(ScreenLocator::new(Some(IMAGE_720P)).locate(&frame), ScreenState::NoImage);
}

#[test]
fn flat_and_noise_frames_are_no_signal() {
    let flat = LumaFrame::from_vec(1280, 720, vec![16; 1280 * 720]).unwrap();
    assert_eq!(ScreenLocator::new(None).locate(&flat), ScreenState::NoSignal);
    // A capture card without lock delivers full-frame noise (vivid does exactly this).
    let mut state = 0x2545F491u32;
    let noise: Vec<u8> = (0..1280 * 720)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect();
    let noise = LumaFrame::from_vec(1280, 720, noise).unwrap();
    assert_eq!(ScreenLocator::new(None).locate(&noise), ScreenState::NoSignal);
    assert_eq!(ScreenLocator::new(Some(IMAGE_720P)).locate(&noise), ScreenState::NoSignal);
}

/// The same screen as a dongle in 1080p mode delivers it (scaled by 1.5).
fn upscaled_to_1080p(frame: &LumaFrame) -> LumaFrame {
    let img = image::GrayImage::from_raw(frame.width(), frame.height(), frame.pixels().to_vec()).unwrap();
    let big = image::imageops::resize(&img, 1920, 1080, image::imageops::FilterType::Triangle);
    LumaFrame::from_vec(1920, 1080, big.into_raw()).unwrap()
}

#[test]
fn profile_rectangle_follows_a_capture_mode_change() {
    let (path, _) = &fixture_screens()[1];
    let small = load(path);
    let big = upscaled_to_1080p(&small);
    let mut locator = ScreenLocator::new(Some(IMAGE_720P)).measured_on(Some((1280, 720)));
    assert_eq!(locator.locate(&small), ScreenState::Image(IMAGE_720P));
    // Same screen, scaled: the rectangle scales with it instead of pointing elsewhere.
    assert_eq!(locator.locate(&big), ScreenState::Image(Rect::new(390, 144, 960, 780)));
    assert_eq!(locator.locate(&small), ScreenState::Image(IMAGE_720P));
}

#[test]
fn detected_rectangle_is_not_carried_across_a_capture_mode_change() {
    let (path, _) = &fixture_screens()[1];
    let small = load(path);
    let big = upscaled_to_1080p(&small);
    let fresh = ScreenLocator::new(None).locate(&big);
    let mut locator = ScreenLocator::new(None);
    assert!(matches!(locator.locate(&small), ScreenState::Image(_)));
    assert_eq!(locator.locate(&big), fresh, "the 720p lock must not survive the switch to 1080p");
    let ScreenState::Image(r) = fresh else { panic!("no image found on the 1080p screen") };
    assert!(r.x >= 385 && r.y >= 140 && r.right() <= 1355 && r.bottom() <= 929, "{r}");
}
