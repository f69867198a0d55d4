//! What a caller asks of a rewrite besides the scheme's own settings.

use crate::compat::Release;
use crate::inject::ort::AliasOp;
use crate::scheme::{EvalWeights, Lookahead};

#[derive(Debug, Clone, Default)]
pub struct RewriteOptions {
    pub lookahead: Lookahead,
    /// Replace an existing output (only an earlier output of the same kind).
    pub force: bool,
    /// Write even when fields unknown to the schema would be dropped.
    pub allow_lossy: bool,
    /// ORT artifacts: how readers of a parameter wait for the sync (PassThrough is zero-copy;
    /// Reshape also works with ONNX Runtime's parallel executor).
    pub alias: AliasOp,
    /// Which weights evaluation and export read.
    pub eval_weights: EvalWeights,
    /// Glob patterns of trainable parameters to wrap (empty: all) and to leave alone.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// ORT artifacts: write the set so that this ONNX Runtime release loads it (`--target-ort`);
    /// None keeps the input's headers.
    pub target_ort: Option<&'static Release>,
}

/// What a caller asks of `finalize`.
#[derive(Debug, Clone, Default)]
pub struct FinalizeOptions {
    /// The weights the plain result gets: the Lookahead weights (any pending sync applied) or the
    /// slow weights.
    pub weights: EvalWeights,
    /// ORT artifacts: the checkpoint to take the weights and optimizer state from (default: the
    /// artifacts' own).
    pub checkpoint: Option<std::path::PathBuf>,
    /// Replace an existing output (only an earlier output of the same kind).
    pub force: bool,
    /// ORT artifacts: write the plain set so that this ONNX Runtime release loads it.
    pub target_ort: Option<&'static Release>,
}
