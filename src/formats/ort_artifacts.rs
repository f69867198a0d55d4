//! ONNX Runtime on-device training artifacts (generate_artifacts of onnxruntime-training):
//! training_model.onnx, eval_model.onnx, optimizer_model.onnx and checkpoint in one directory.

pub const TRAINING_MODEL: &str = "training_model.onnx";
pub const EVAL_MODEL: &str = "eval_model.onnx";
pub const OPTIMIZER_MODEL: &str = "optimizer_model.onnx";
pub const CHECKPOINT: &str = "checkpoint";

/// Files an artifacts directory must have (the eval model is optional).
pub const REQUIRED_FILES: [&str; 3] = [TRAINING_MODEL, OPTIMIZER_MODEL, CHECKPOINT];

use std::path::Path;

use crate::error::Result;
use crate::inspect::Report;
use crate::pipeline::{RewriteOptions, RewriteSummary};

pub fn inspect(_dir: &Path) -> Result<Report> {
    todo!("ORT artifacts inspect: waiting for the checkpoint reader")
}

pub fn rewrite(_dir: &Path, _output: &Path, _options: &RewriteOptions) -> Result<RewriteSummary> {
    todo!("ORT artifacts rewrite: waiting for the checkpoint reader")
}
