//! onnx-lookahead: rewrite exported ONNX training graphs so that they train with the Lookahead
//! optimizer (Zhang et al. 2019) around their own optimizer, in an unmodified runtime.
//!
//! Pipeline: read (mmap, zero-copy decode) -> dataflow view -> format adapter finds weights and
//! update nodes -> Lookahead pass plans the change -> apply -> validate -> atomic write.

pub mod error;
pub mod generated;
pub mod graph;
pub mod io;

pub use error::{Error, Result};
pub mod formats;
pub mod inspect;
pub mod lookahead;
pub mod pipeline;
pub use lookahead::Options;
pub use pipeline::{RewriteOptions, RewriteSummary, dump, inspect, rewrite};
pub mod record;
pub mod scheme;
