//! Kidney-ultrasound screening firmware: frames from a scanner's video output in, a stable
//! ESRD / normal screening verdict out, on a $50-$150 ARM board.
//!
//! **Screening aid for trained staff, never a diagnosis.**
//!
//! Design, in one line: `Source -> Screen -> Roi -> Preprocess -> Model -> Decision ->
//! Indicator + Audit`. A [`capture::FrameSource`] lends a luma frame; [`screen`] finds the
//! B-mode image on the scanner's screen (nothing outside it is kept); [`roi`] places the kidney
//! guide box inside it; [`preprocess`] resizes and normalises into a tensor allocated once;
//! [`model`] runs the int8 DenseNet121 with tract; [`decision`] turns probabilities into a
//! verdict that only changes when k of the last n frames agree; [`indicator`] shows it (LEDs,
//! console, JSON events, display) and [`audit`] appends it to a crash-safe log. [`pipeline`]
//! wires the stages; they never reach into each other. [`simulator`] makes the demo feed and
//! training data; [`eval`] reproduces the study's validation table on a site's own images.

mod simd;

pub mod audit;
pub mod capture;
pub mod cli;
pub mod config;
pub mod decision;
pub mod display;
pub mod eval;
pub mod frame;
pub mod geometry;
pub mod indicator;
pub mod model;
pub mod model_prep;
pub mod pipeline;
pub mod preprocess;
pub mod resize;
pub mod roi;
pub mod screen;
pub mod setup;
pub mod simulator;
pub mod watchdog;
