//! Input formats. Each adapter answers: which tensors are trainable weights, which nodes update
//! them, and where new state and nodes go. Detection is by content, not by file name alone.

pub mod ort_artifacts;
pub mod training_info;

use std::path::Path;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A directory of ONNX Runtime on-device training artifacts.
    OrtArtifacts,
    /// An ONNX model with ModelProto.training_info.
    TrainingInfo,
    /// Any other ONNX model (inference, or a lone ORT training graph): inspectable only.
    Model,
}

impl Format {
    pub fn id(self) -> &'static str {
        match self {
            Format::OrtArtifacts => "ort-artifacts",
            Format::TrainingInfo => "training-info",
            Format::Model => "onnx-model",
        }
    }
}

/// Detects the format of a path: a directory must hold ORT artifacts; a file must be ONNX.
/// (For files the model is decoded by the caller; `detect_model` classifies it.)
pub fn detect_path(path: &Path) -> Result<Option<Format>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("cannot read", path, e))?;
    if meta.is_dir() {
        return ort_artifacts::ArtifactFiles::find(path)
            .map(|_| Some(Format::OrtArtifacts))
            .map_err(|reason| Error::Unsupported {
                path: path.to_path_buf(),
                reason,
            });
    }
    Ok(None)
}

/// Classifies a decoded model file.
pub fn detect_model(model: &crate::generated::onnx::ModelProto) -> Format {
    if model.training_info.is_empty() {
        Format::Model
    } else {
        Format::TrainingInfo
    }
}
