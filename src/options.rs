//! What a caller asks of a rewrite besides the scheme's own settings.

use std::path::Path;
use std::sync::Arc;

use crate::compat::Release;
use crate::inject::ort::AliasOp;
use crate::scheme::{EvalWeights, SchemeOptions};

#[derive(Debug, Clone, Default)]
pub struct RewriteOptions {
    /// The averaging scheme and its options (default: Lookahead k=5, alpha=0.5).
    pub scheme: SchemeOptions,
    /// Replace an existing output (only an earlier output of the same kind).
    pub force: bool,
    /// Write even when fields unknown to the schema would be dropped.
    pub allow_lossy: bool,
    /// ORT artifacts: how readers of a parameter wait for the sync (PassThrough is zero-copy;
    /// Reshape also works with ONNX Runtime's parallel executor).
    pub alias: AliasOp,
    /// Which weights evaluation and export read (None: the scheme's default).
    pub eval_weights: Option<EvalWeights>,
    /// Glob patterns of trainable parameters to wrap (empty: all) and to leave alone.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// ORT artifacts: write the set so that this ONNX Runtime release loads it (`--target-ort`);
    /// None keeps the input's headers.
    pub target_ort: Option<&'static Release>,
    /// ORT artifacts: whether the output set gets ORT-format copies of its models.
    pub ort_format: OrtFormat,
}

/// What a caller asks of `finalize`.
#[derive(Debug, Clone, Default)]
pub struct FinalizeOptions {
    /// The weights the plain result gets: the current weights (any pending update applied) or
    /// the scheme's average (None: the weights the rewrite's evaluation reads).
    pub weights: Option<EvalWeights>,
    /// ORT artifacts: the checkpoint to take the weights and optimizer state from (default: the
    /// artifacts' own).
    pub checkpoint: Option<std::path::PathBuf>,
    /// Replace an existing output (only an earlier output of the same kind).
    pub force: bool,
    /// ORT artifacts: write the plain set so that this ONNX Runtime release loads it.
    pub target_ort: Option<&'static Release>,
    /// ORT artifacts: whether the output set gets ORT-format copies of its models.
    pub ort_format: OrtFormat,
}

/// Whether an output artifacts set gets ORT-format copies (`.ort`, for minimal builds of ONNX
/// Runtime) of its models, written by `converter`. Without a converter (the library and the
/// binary have none: converting takes ONNX Runtime itself) no copy is written; a copy the input
/// held is then carried only with a model written as it was.
#[derive(Clone, Default)]
pub struct OrtFormat {
    pub mode: OrtFormatMode,
    pub converter: Option<Arc<dyn OrtConverter>>,
}

impl std::fmt::Debug for OrtFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtFormat")
            .field("mode", &self.mode)
            .field("converter", &self.converter.is_some())
            .finish()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OrtFormatMode {
    /// Copies of every model when the input held an ORT-format copy of one of its models and a
    /// converter can run.
    #[default]
    Auto,
    /// Copies of every model; refused without a converter that can run.
    Always,
    /// No conversion.
    Never,
}

/// Writes ONNX Runtime's ORT format of the models of an artifacts folder being assembled, as
/// `generate_artifacts(ort_format=True)` does. The Python package implements it with
/// onnxruntime-training's converter.
pub trait OrtConverter: Send + Sync {
    /// Ok when a conversion can run here, else why not (one line, naming the fix).
    fn available(&self) -> Result<(), String>;
    /// Writes, in `request.folder`, each model's ORT-format copy and operator list and one
    /// operator list of all of them under `request.merged_config`; returns the names of the
    /// files written.
    fn convert(&self, request: &OrtConversion) -> Result<Vec<String>, String>;
}

/// One conversion: the models of a staged output folder.
#[derive(Debug)]
pub struct OrtConversion<'a> {
    /// The staged output folder the models are in (renamed to `destination` afterwards).
    pub folder: &'a Path,
    /// The absolute path the folder will have, for the paths the files mention.
    pub destination: &'a Path,
    /// The model files to convert, by name.
    pub models: &'a [String],
    /// The name of the operator list of all models (for `--include_ops_by_config`).
    pub merged_config: &'a str,
}
