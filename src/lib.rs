//! onnx-lookahead: rewrite exported ONNX training graphs so that they train with the Lookahead
//! optimizer (Zhang et al. 2019) around their own optimizer, in an unmodified runtime.
//!
//! The tree reads as the pipeline (`pipeline.rs`): read and analyse (`formats/`, one adapter per
//! input format, on `io/` and `graph/`) -> plan (`inject/`, a `scheme/` wired into the format)
//! -> apply (`graph::patch`) -> validate (`graph::validate`) -> write (`io/`). `record` is what a
//! rewrite writes down about itself; `report` renders `inspect`.

pub mod cli;
pub mod compat;
pub mod error;
pub mod formats;
pub mod generated;
pub mod graph;
pub mod inject;
pub mod io;
pub mod options;
pub mod pipeline;
#[cfg(feature = "python")]
mod python;
pub mod record;
pub mod report;
pub mod scheme;

pub use error::{Error, Result};
pub use options::{FinalizeOptions, RewriteOptions};
pub use pipeline::{FinalizeSummary, RewriteSummary, draw, dump, finalize, inspect, rewrite};
pub use report::Report;
pub use report::draw::DrawFormat;
/// Lookahead's settings (k, alpha).
pub use scheme::Lookahead as Options;
pub use scheme::{EvalWeights, Lookahead, SchemeOptions};
