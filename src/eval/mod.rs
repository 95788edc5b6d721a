//! Site validation: the study's table on a site's own labeled images.
//!
//! Every image goes through the live pipeline's screen/ROI/preprocess/model code. The report
//! gives, for the model and each reader: counts, TP/FP/TN/FN, accuracy, sensitivity,
//! specificity, PPV, NPV, AUC with a DeLong 95% CI, at the manifest threshold and at Youden's;
//! the paired DeLong test of the model against each reader; per-fold rows with mean +- sd; and
//! patient-level results when an id column exists.

pub mod dataset;
pub mod metrics;
pub mod plot;
pub mod report;

pub use dataset::{Dataset, Row};
pub use report::{EvalReport, evaluate};
