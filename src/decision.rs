//! Decision stage: probability -> per-frame verdict -> a shown verdict that does not flicker.

use heapless::Deque;
use serde::Serialize;

use crate::model::OperatingPoint;

/// Longest agreement window supported (the `n` of k-of-n).
pub const MAX_WINDOW: usize = 16;

/// What the indicator shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    Normal,
    EsrdSuspected,
    Indeterminate,
    NoSignal,
    NoImage,
    Fault,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Normal => "NORMAL",
            Verdict::EsrdSuspected => "ESRD SUSPECTED",
            Verdict::Indeterminate => "INDETERMINATE",
            Verdict::NoSignal => "NO SIGNAL",
            Verdict::NoImage => "NO IMAGE",
            Verdict::Fault => "FAULT",
        }
    }

    /// True for verdicts about a kidney (as opposed to the state of the feed).
    pub fn is_classification(self) -> bool {
        matches!(self, Verdict::Normal | Verdict::EsrdSuspected | Verdict::Indeterminate)
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Maps a probability of ESRD to a per-frame verdict.
pub fn classify(op: &OperatingPoint, probability: f32) -> Verdict {
    let [low, high] = op.indeterminate;
    if probability >= high && probability >= op.threshold {
        Verdict::EsrdSuspected
    } else if probability < low && probability < op.threshold {
        Verdict::Normal
    } else {
        Verdict::Indeterminate
    }
}

/// The verdict on show and how firmly it is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shown {
    /// None until some verdict first reaches k of the last n frames.
    pub verdict: Option<Verdict>,
    /// Frames among the last n that agree with the shown verdict.
    pub agreeing: u8,
    pub window: u8,
    /// True on the frame the shown verdict changed.
    pub changed: bool,
}

/// k-of-n agreement over a fixed-size history (no allocation).
#[derive(Debug, Clone)]
pub struct Stabilizer {
    k: usize,
    n: usize,
    history: Deque<Verdict, MAX_WINDOW>,
    shown: Option<Verdict>,
}

impl Stabilizer {
    /// `k` of the last `n` frames must agree; 1 <= k <= n <= MAX_WINDOW (checked by config).
    pub fn new(k: usize, n: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (1..=MAX_WINDOW).contains(&n) && (1..=n).contains(&k),
            "k-of-n must satisfy 1 <= k <= n <= {MAX_WINDOW} (got k={k}, n={n})"
        );
        Ok(Self { k, n, history: Deque::new(), shown: None })
    }

    pub fn push(&mut self, v: Verdict) -> Shown {
        if self.history.len() == self.n {
            self.history.pop_front();
        }
        // Capacity is MAX_WINDOW >= n and we just made room: the push cannot fail.
        let _ = self.history.push_back(v);
        let count = |x: Verdict| self.history.iter().filter(|&&h| h == x).count();
        let previous = self.shown;
        // The newest verdict wins when it has k votes; otherwise the shown one stays.
        if count(v) >= self.k {
            self.shown = Some(v);
        }
        let agreeing = self.shown.map_or(0, count);
        Shown { verdict: self.shown, agreeing: agreeing as u8, window: self.n as u8, changed: self.shown != previous }
    }

    /// Fills the window with `v`, so the next push shows it at once (a feed failure must not
    /// wait for k frames that will never come).
    pub fn force(&mut self, v: Verdict) {
        self.history.clear();
        for _ in 1..self.n {
            let _ = self.history.push_back(v);
        }
    }

    pub fn reset(&mut self) {
        self.history.clear();
        self.shown = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OP: OperatingPoint = OperatingPoint { threshold: 0.5, indeterminate: [0.35, 0.65] };

    #[test]
    fn probability_bands() {
        assert_eq!(classify(&OP, 0.0), Verdict::Normal);
        assert_eq!(classify(&OP, 0.3499), Verdict::Normal);
        assert_eq!(classify(&OP, 0.35), Verdict::Indeterminate);
        assert_eq!(classify(&OP, 0.5), Verdict::Indeterminate);
        assert_eq!(classify(&OP, 0.65), Verdict::EsrdSuspected);
        assert_eq!(classify(&OP, 1.0), Verdict::EsrdSuspected);
        let no_band = OperatingPoint { threshold: 0.5, indeterminate: [0.5, 0.5] };
        assert_eq!(classify(&no_band, 0.4999), Verdict::Normal);
        assert_eq!(classify(&no_band, 0.5), Verdict::EsrdSuspected);
    }

    #[test]
    fn verdict_needs_k_of_n() {
        let mut s = Stabilizer::new(3, 5).unwrap();
        use Verdict::*;
        assert_eq!(s.push(Normal).verdict, None);
        assert_eq!(s.push(Normal).verdict, None);
        let third = s.push(Normal);
        assert_eq!(third.verdict, Some(Normal));
        assert!(third.changed);
        assert_eq!(third.agreeing, 3);
        // Two ESRD frames do not flip it; the third within the window does.
        assert_eq!(s.push(EsrdSuspected).verdict, Some(Normal));
        let r = s.push(EsrdSuspected);
        assert_eq!(r.verdict, Some(Normal));
        assert!(!r.changed);
        let r = s.push(EsrdSuspected);
        assert_eq!(r.verdict, Some(EsrdSuspected));
        assert!(r.changed);
    }

    #[test]
    fn alternating_frames_never_flicker() {
        let mut s = Stabilizer::new(4, 6).unwrap();
        let mut changes = 0;
        for i in 0..100 {
            let v = if i % 2 == 0 { Verdict::Normal } else { Verdict::EsrdSuspected };
            changes += usize::from(s.push(v).changed);
        }
        assert_eq!(changes, 0);
    }

    #[test]
    fn bad_window_is_refused() {
        assert!(Stabilizer::new(0, 5).is_err());
        assert!(Stabilizer::new(6, 5).is_err());
        assert!(Stabilizer::new(3, MAX_WINDOW + 1).is_err());
    }
}
