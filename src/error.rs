//! The library's typed error. Callers (the CLI, tests, embedding programs) match on the variant;
//! the binary adds context with anyhow at its edge.

use std::path::PathBuf;

/// Everything that can go wrong in the library, by what the caller may want to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading, mapping, creating or renaming a file failed.
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The input is not a (complete) ONNX protobuf.
    #[error("{}: not a valid ONNX model: {reason}", path.display())]
    InvalidModel { path: PathBuf, reason: String },

    /// The input is not a (complete) ONNX Runtime training checkpoint.
    #[error("{}: not a valid ONNX Runtime training checkpoint: {reason}", path.display())]
    InvalidCheckpoint { path: PathBuf, reason: String },

    /// The input parsed, but its fields hold something this tool cannot accept.
    #[error("{}: {reason}", path.display())]
    Unsupported { path: PathBuf, reason: String },

    /// The input has fields unknown to the vendored ONNX schema; writing would drop them.
    #[error(
        "{}: {count} field(s) unknown to the ONNX IR {ir} schema would be lost (first: {first}); pass --allow-lossy to write anyway",
        path.display()
    )]
    UnknownFields {
        path: PathBuf,
        count: usize,
        first: String,
        ir: i64,
    },

    /// The input has no optimizer update this tool recognizes.
    #[error("{}: no optimizer update found: {reason}", path.display())]
    NoOptimizer { path: PathBuf, reason: String },

    /// The input was already rewritten by this tool.
    #[error("{}: already rewritten ({scheme}, by onnx-lookahead {version}); a second averaging scheme is not stacked on a rewrite: rewrite the original", path.display())]
    AlreadyRewritten {
        path: PathBuf,
        /// The scheme with its settings ("Lookahead k=5 alpha=0.5").
        scheme: String,
        version: String,
    },

    /// `finalize` was given something the tool did not rewrite (or cannot take back).
    #[error("{}: not a rewrite onnx-lookahead can take back: {reason}", path.display())]
    NotRewritten { path: PathBuf, reason: String },

    /// A name the rewrite must add is already used in the input.
    #[error("{}: name clash: {name} is already used ({wher})", path.display(), wher = where_used)]
    NameClash {
        path: PathBuf,
        name: String,
        where_used: String,
    },

    /// The files of an artifacts set describe different models (a parameter's type or shape
    /// differs between a graph and the checkpoint).
    #[error("{}: the files of the set disagree: {reason}", path.display())]
    InconsistentSet { path: PathBuf, reason: String },

    /// `--target-ort`: the set cannot be written so that this release loads it (and why).
    #[error("{}: cannot be written for ONNX Runtime {release}: {reason}", path.display())]
    TargetOrt {
        path: PathBuf,
        release: String,
        reason: String,
    },

    /// k or alpha out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),

    /// A graph the tool is about to write breaks an ONNX rule; nothing was written.
    #[error("internal validation failed for graph {graph}: {reason}")]
    Validation { graph: String, reason: String },

    /// The output would exceed what protobuf can serialize.
    #[error("{}: serialized model is {size} bytes, over protobuf's 2 GiB limit; store large tensors as external data", path.display())]
    TooLarge { path: PathBuf, size: u64 },

    /// A checkpoint would exceed what a FlatBuffer can address.
    #[error("{}: checkpoint would be about {size} bytes, over the FlatBuffers limit of 2 GiB; keep large tensors in the external data file", path.display())]
    CheckpointTooLarge { path: PathBuf, size: u64 },

    /// A tensor's type, dims and values do not agree.
    #[error("{}: tensor {tensor:?} {reason}", path.display())]
    InvalidTensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },

    /// An external-data reference is malformed, escapes the model directory, or is out of range.
    #[error("{}: external data of tensor {tensor}: {reason}", path.display())]
    ExternalData {
        path: PathBuf,
        tensor: String,
        reason: String,
    },

    /// `inspect --format dot|mermaid` of an input that has no graphs to draw (a lone checkpoint).
    #[error("{}: nothing to draw: {reason}", path.display())]
    NothingToDraw { path: PathBuf, reason: String },

    /// The output exists and overwriting was not requested.
    #[error("{} already exists; pass --force to overwrite", path.display())]
    OutputExists { path: PathBuf },

    /// The output path is, contains, or lies inside an input; the input is never modified.
    #[error("{}: refused as output: {reason}", path.display())]
    OutputIsInput { path: PathBuf, reason: String },

    /// The output path cannot name a new file or folder (it ends in `..`, its folder is missing).
    #[error("{}: cannot be used as output: {reason}", path.display())]
    BadOutputPath { path: PathBuf, reason: String },

    /// The output exists and the tool will not replace it.
    #[error("{}: not replaced: {reason}", path.display())]
    OutputRefused { path: PathBuf, reason: String },

    /// A path that must be a regular file is a FIFO, device, socket or directory; it is never
    /// opened for reading (a FIFO would block, a device stream without end).
    #[error("{}: is a {kind}, not a regular file", path.display())]
    NotRegularFile { path: PathBuf, kind: &'static str },

    /// The ORT-format copies of an output set could not be written (the converter failed or
    /// wrote something else than asked); nothing was written.
    #[error("{}: cannot write the ORT format of its models: {reason}", path.display())]
    OrtFormat { path: PathBuf, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
