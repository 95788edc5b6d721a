//! Indicator stage: shows the verdict. Console line, JSON events for other programs, GPIO LEDs,
//! all behind one narrow trait, combined with `Fanout`.

#[cfg(target_os = "linux")]
pub mod gpiocdev;
pub mod led;

use std::io::Write;
use std::time::Duration;

use anyhow::Result;

use crate::decision::Verdict;

/// Everything an indicator may show for one frame.
#[derive(Debug, Clone, Copy)]
pub struct IndicatorState<'a> {
    pub verdict: Option<Verdict>,
    /// Probability of ESRD of the current frame, when it was classified.
    pub probability: Option<f32>,
    pub agreeing: u8,
    pub window: u8,
    /// Time since start; drives blinking.
    pub uptime: Duration,
    pub model_id: &'a str,
    pub changed: bool,
    pub sequence: u64,
    /// Model-sized ROI the model saw (width, height, pixels), for displays.
    pub roi: Option<(u32, u32, &'a [u8])>,
}

pub trait Indicator {
    fn show(&mut self, state: &IndicatorState<'_>) -> Result<()>;

    /// Puts the indicator into its safe state (all off). Called on every exit path.
    fn safe_state(&mut self) -> Result<()>;
}

/// Prints a line when the shown verdict changes.
pub struct ConsoleIndicator<W: Write> {
    out: W,
    every_frame: bool,
}

impl<W: Write> ConsoleIndicator<W> {
    pub fn new(out: W, every_frame: bool) -> Self {
        Self { out, every_frame }
    }
}

impl<W: Write> Indicator for ConsoleIndicator<W> {
    fn show(&mut self, s: &IndicatorState<'_>) -> Result<()> {
        if s.changed || self.every_frame {
            let verdict = s.verdict.map_or("WAITING", Verdict::label);
            let p = s.probability.map_or_else(|| "  -  ".to_string(), |p| format!("{p:.3}"));
            writeln!(
                self.out,
                "frame {:>6}  p(ESRD) {p}  shown {verdict:<15} ({}/{})  [screening aid - not a diagnosis]",
                s.sequence, s.agreeing, s.window
            )?;
        }
        Ok(())
    }

    fn safe_state(&mut self) -> Result<()> {
        writeln!(self.out, "indicator off")?;
        Ok(())
    }
}

/// One JSON object per line on each change of the shown verdict, for other programs.
pub struct JsonEvents<W: Write> {
    out: W,
}

impl<W: Write> JsonEvents<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

impl<W: Write> Indicator for JsonEvents<W> {
    fn show(&mut self, s: &IndicatorState<'_>) -> Result<()> {
        if s.changed {
            let event = serde_json::json!({
                "event": "verdict",
                "time": crate::audit::now_rfc3339(),
                "sequence": s.sequence,
                "verdict": s.verdict,
                "probability": s.probability,
                "agreeing": s.agreeing,
                "window": s.window,
                "model_id": s.model_id,
            });
            writeln!(self.out, "{event}")?;
            self.out.flush()?;
        }
        Ok(())
    }

    fn safe_state(&mut self) -> Result<()> {
        writeln!(self.out, "{}", serde_json::json!({"event": "stopped", "time": crate::audit::now_rfc3339()}))?;
        self.out.flush()?;
        Ok(())
    }
}

/// Several indicators at once. Every one is driven even if another fails; the first error is
/// returned.
pub struct Fanout(pub Vec<Box<dyn Indicator>>);

impl Indicator for Fanout {
    fn show(&mut self, state: &IndicatorState<'_>) -> Result<()> {
        let mut first = Ok(());
        for i in &mut self.0 {
            if let Err(e) = i.show(state)
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }

    fn safe_state(&mut self) -> Result<()> {
        let mut first = Ok(());
        for i in &mut self.0 {
            if let Err(e) = i.safe_state()
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }
}
