//! Three-LED indicator: green NORMAL, amber INDETERMINATE, red ESRD SUSPECTED, steady; amber
//! blinking for NO SIGNAL, red blinking fast for FAULT; all off while waiting or with no image.
//! A lamp test lights all three at start so a dead LED is seen before the first patient.

use std::time::Duration;

use anyhow::Result;

use super::{Indicator, IndicatorState};
use crate::decision::Verdict;

/// One LED output (embedded-hal's `OutputPin` in miniature, so tests can record calls).
pub trait Led {
    fn set(&mut self, on: bool) -> Result<()>;
}

/// Blink half-periods.
const SLOW_BLINK: Duration = Duration::from_millis(500);
const FAST_BLINK: Duration = Duration::from_millis(150);
pub const LAMP_TEST: Duration = Duration::from_millis(600);

/// Which LEDs are lit: (green, amber, red).
pub fn pattern(verdict: Option<Verdict>, uptime: Duration) -> (bool, bool, bool) {
    let phase = |half: Duration| (uptime.as_millis() / half.as_millis()).is_multiple_of(2);
    match verdict {
        None | Some(Verdict::NoImage) => (false, false, false),
        Some(Verdict::Normal) => (true, false, false),
        Some(Verdict::Indeterminate) => (false, true, false),
        Some(Verdict::EsrdSuspected) => (false, false, true),
        Some(Verdict::NoSignal) => (false, phase(SLOW_BLINK), false),
        Some(Verdict::Fault) => (false, false, phase(FAST_BLINK)),
    }
}

pub struct LedIndicator<L: Led> {
    green: L,
    amber: L,
    red: L,
    lit: Option<(bool, bool, bool)>,
}

impl<L: Led> LedIndicator<L> {
    /// Takes the pins and runs the lamp test (all on for `lamp_test`, then all off).
    pub fn new(green: L, amber: L, red: L, lamp_test: Duration) -> Result<Self> {
        let mut me = Self { green, amber, red, lit: None };
        me.apply((true, true, true))?;
        std::thread::sleep(lamp_test);
        me.apply((false, false, false))?;
        Ok(me)
    }

    fn apply(&mut self, want: (bool, bool, bool)) -> Result<()> {
        // Only touch pins that change: GPIO writes are cheap, but this keeps traces readable.
        let prev = self.lit;
        if prev.is_none_or(|p| p.0 != want.0) {
            self.green.set(want.0)?;
        }
        if prev.is_none_or(|p| p.1 != want.1) {
            self.amber.set(want.1)?;
        }
        if prev.is_none_or(|p| p.2 != want.2) {
            self.red.set(want.2)?;
        }
        self.lit = Some(want);
        Ok(())
    }
}

impl<L: Led> Indicator for LedIndicator<L> {
    fn show(&mut self, s: &IndicatorState<'_>) -> Result<()> {
        self.apply(pattern(s.verdict, s.uptime))
    }

    fn safe_state(&mut self) -> Result<()> {
        self.lit = None;
        self.apply((false, false, false))
    }
}

/// Raspberry Pi GPIO through rppal (Pi 1..5; the Pi 5's RP1 through /dev/gpiomem0). Other boards:
/// the GPIO character device, [`crate::indicator::gpiocdev`].
#[cfg(target_os = "linux")]
pub mod rpi {
    use anyhow::{Context, Result};

    pub struct RppalLed {
        pin: rppal::gpio::OutputPin,
        active_low: bool,
    }

    impl RppalLed {
        pub fn open(gpio: &rppal::gpio::Gpio, bcm: u8, active_low: bool) -> Result<Self> {
            let mut pin = gpio.get(bcm).with_context(|| format!("cannot claim GPIO {bcm} for an LED"))?.into_output();
            // Belt and braces: rppal resets the pin on drop (not on SIGKILL); the pipeline
            // also calls safe_state on SIGINT/SIGTERM.
            pin.set_reset_on_drop(true);
            Ok(Self { pin, active_low })
        }
    }

    impl super::Led for RppalLed {
        fn set(&mut self, on: bool) -> Result<()> {
            if on != self.active_low {
                self.pin.set_high();
            } else {
                self.pin.set_low();
            }
            Ok(())
        }
    }

    /// Opens the three LED pins (BCM numbers) with a lamp test.
    pub fn open_leds(green: u8, amber: u8, red: u8, active_low: bool) -> Result<super::LedIndicator<RppalLed>> {
        let gpio = rppal::gpio::Gpio::new()
            .context("cannot open the Raspberry Pi GPIO (/dev/gpiomem): not a Pi, or no permission (gpio group)")?;
        super::LedIndicator::new(
            RppalLed::open(&gpio, green, active_low)?,
            RppalLed::open(&gpio, amber, active_low)?,
            RppalLed::open(&gpio, red, active_low)?,
            super::LAMP_TEST,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    /// Records every pin write; `done` fails if expectations were not met exactly.
    #[derive(Clone)]
    struct MockLed {
        name: &'static str,
        log: Rc<RefCell<Vec<(&'static str, bool)>>>,
    }

    impl Led for MockLed {
        fn set(&mut self, on: bool) -> Result<()> {
            self.log.borrow_mut().push((self.name, on));
            Ok(())
        }
    }

    fn state(verdict: Option<Verdict>, ms: u64) -> IndicatorState<'static> {
        IndicatorState {
            verdict,
            probability: None,
            agreeing: 0,
            window: 0,
            uptime: Duration::from_millis(ms),
            model_id: "m",
            changed: false,
            sequence: 0,
            roi: None,
        }
    }

    #[test]
    fn lamp_test_then_verdicts_then_safe_state() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let led = |name| MockLed { name, log: log.clone() };
        let mut ind = LedIndicator::new(led("green"), led("amber"), led("red"), Duration::ZERO).unwrap();
        ind.show(&state(Some(Verdict::Normal), 0)).unwrap();
        ind.show(&state(Some(Verdict::Normal), 10)).unwrap(); // no change, no writes
        ind.show(&state(Some(Verdict::EsrdSuspected), 20)).unwrap();
        ind.show(&state(Some(Verdict::NoSignal), 0)).unwrap(); // blink phase on
        ind.show(&state(Some(Verdict::NoSignal), 600)).unwrap(); // blink phase off
        ind.safe_state().unwrap();
        let expected = vec![
            ("green", true),
            ("amber", true),
            ("red", true), // lamp test
            ("green", false),
            ("amber", false),
            ("red", false),
            ("green", true), // NORMAL
            ("green", false),
            ("red", true), // ESRD
            ("amber", true),
            ("red", false),   // NO SIGNAL, blink on
            ("amber", false), // blink off
            ("green", false),
            ("amber", false),
            ("red", false), // safe state writes every pin
        ];
        assert_eq!(*log.borrow(), expected);
    }

    #[test]
    fn every_verdict_has_a_distinct_steady_pattern() {
        let steady = [Verdict::Normal, Verdict::Indeterminate, Verdict::EsrdSuspected];
        let patterns: Vec<_> = steady.iter().map(|v| pattern(Some(*v), Duration::ZERO)).collect();
        assert_eq!(patterns, vec![(true, false, false), (false, true, false), (false, false, true)]);
        assert_eq!(pattern(Some(Verdict::Fault), Duration::from_millis(0)), (false, false, true));
        assert_eq!(pattern(Some(Verdict::Fault), Duration::from_millis(150)), (false, false, false));
    }
}
