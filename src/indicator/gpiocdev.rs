//! LEDs through the Linux GPIO character device (`/dev/gpiochipN`, uAPI v2, crate gpiocdev):
//! any board whose kernel has a GPIO driver, RK3588 and other non-Raspberry boards included
//! (rppal drives the Raspberry Pi's own GPIO registers and nothing else). Lines are offsets on
//! one chip; the three LEDs are one request, so they are claimed, and released, together.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use gpiocdev::line::Value;

use super::led::{LAMP_TEST, Led, LedIndicator};

/// Shown by `gpioinfo` as the lines' consumer.
pub const CONSUMER: &str = "kidney-screen";

/// One LED: a line of a request shared by the three.
pub struct CdevLed {
    request: Arc<gpiocdev::Request>,
    chip: Arc<PathBuf>,
    offset: u32,
}

impl Led for CdevLed {
    fn set(&mut self, on: bool) -> Result<()> {
        // Logical value: the request is active-low when the LEDs are.
        let value = if on { Value::Active } else { Value::Inactive };
        self.request
            .set_value(self.offset, value)
            .with_context(|| format!("cannot set line {} of GPIO chip {}", self.offset, self.chip.display()))
    }
}

/// Claims lines `green`, `amber` and `red` of `chip` as outputs, off, and runs the lamp test.
pub fn open_leds(chip: &Path, green: u32, amber: u32, red: u32, active_low: bool) -> Result<LedIndicator<CdevLed>> {
    let (g, a, r) = claim(chip, [green, amber, red], active_low)?;
    LedIndicator::new(g, a, r, LAMP_TEST)
}

fn claim(chip: &Path, lines: [u32; 3], active_low: bool) -> Result<(CdevLed, CdevLed, CdevLed)> {
    let shown = chip.display();
    if !chip.exists() {
        bail!(
            "GPIO chip {shown} does not exist: check [indicator.gpio] chip (`ls /dev/gpiochip*` or `gpiodetect` \
             lists this board's chips)"
        );
    }
    let info = gpiocdev::Chip::from_path(chip).and_then(|c| c.info()).with_context(|| {
        format!("cannot open GPIO chip {shown}: not a GPIO character device, or no permission (gpio group)")
    })?;
    for (name, line) in ["green", "amber", "red"].into_iter().zip(lines) {
        ensure!(
            line < info.num_lines,
            "[indicator.gpio] {name} = {line}: GPIO chip {shown} ({}) has lines 0..{} only",
            info.label,
            info.num_lines.saturating_sub(1)
        );
    }
    let mut builder = gpiocdev::Request::builder();
    builder.on_chip(chip).with_consumer(CONSUMER).with_lines(&lines).as_output(Value::Inactive);
    if active_low {
        builder.as_active_low();
    }
    let request = builder.request().with_context(|| {
        format!(
            "cannot claim lines {}, {}, {} of GPIO chip {shown} ({}) for the LEDs: in use by another program? \
             (`gpioinfo {shown}` names the consumer)",
            lines[0], lines[1], lines[2], info.label
        )
    })?;
    let request = Arc::new(request);
    let chip = Arc::new(chip.to_path_buf());
    let led = |offset| CdevLed { request: request.clone(), chip: chip.clone(), offset };
    Ok((led(lines[0]), led(lines[1]), led(lines[2])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(chip: &Path) -> String {
        match open_leds(chip, 1, 2, 3, false) {
            Ok(_) => panic!("{} opened as a GPIO chip", chip.display()),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn missing_chip_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let chip = dir.path().join("gpiochip9");
        let err = error(&chip);
        assert!(err.contains(&chip.display().to_string()) && err.contains("does not exist"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_a_chip_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gpiochip0");
        std::fs::write(&file, b"").unwrap();
        let err = error(&file);
        assert!(err.contains(&file.display().to_string()) && err.contains("not a GPIO character device"), "{err}");
        let err = error(Path::new("/dev/null"));
        assert!(err.contains("/dev/null") && err.contains("not a GPIO character device"), "{err}");
    }
}
