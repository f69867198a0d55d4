//! The file names of one set of ONNX Runtime training artifacts, and finding the set in a folder.

use std::path::Path;

pub const TRAINING_MODEL: &str = "training_model.onnx";
pub const EVAL_MODEL: &str = "eval_model.onnx";
pub const OPTIMIZER_MODEL: &str = "optimizer_model.onnx";
pub const CHECKPOINT: &str = "checkpoint";

/// The file names of one set of artifacts. generate_artifacts(prefix=...) prepends the same
/// prefix to all of them ("mnist_training_model.onnx", ..., "mnist_checkpoint").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactFiles {
    pub prefix: String,
}

impl ArtifactFiles {
    pub fn training(&self) -> String {
        format!("{}{TRAINING_MODEL}", self.prefix)
    }
    pub fn eval(&self) -> String {
        format!("{}{EVAL_MODEL}", self.prefix)
    }
    pub fn optimizer(&self) -> String {
        format!("{}{OPTIMIZER_MODEL}", self.prefix)
    }
    pub fn checkpoint(&self) -> String {
        format!("{}{CHECKPOINT}", self.prefix)
    }
    /// The names-only checkpoint generate_artifacts(nominal_checkpoint=True) writes beside the
    /// full one; rewritten too, so that it lists the Lookahead state.
    pub fn nominal_checkpoint(&self) -> String {
        format!("{}nominal_{CHECKPOINT}", self.prefix)
    }
    /// The checkpoint's external data file (laid out by the checkpoint writer).
    pub fn checkpoint_data(&self) -> String {
        format!(
            "{}{}",
            self.checkpoint(),
            crate::io::checkpoint::EXTERNAL_DATA_SUFFIX
        )
    }

    /// The files that describe one model of the set in another form: its ORT-format copy
    /// (`.ort`) and the operator list of minimal builds made from it. Wherever the model
    /// changes they would still describe the old graphs, so they are never carried over then.
    pub fn ort_format_copies(model_file: &str) -> [String; 2] {
        let stem = model_file.strip_suffix(".onnx").unwrap_or(model_file);
        [
            format!("{stem}.ort"),
            format!("{stem}.required_operators.config"),
        ]
    }

    /// The ORT-format copies of every model of the set.
    pub fn all_ort_format_copies(&self) -> Vec<String> {
        [self.training(), self.eval(), self.optimizer()]
            .iter()
            .flat_map(|model| Self::ort_format_copies(model))
            .collect()
    }

    /// Finds the artifact set in `dir`: the `<prefix>training_model.onnx` that has its optimizer
    /// model and checkpoint beside it. Err(reason) when there is none or more than one.
    pub fn find(dir: &Path) -> std::result::Result<Self, String> {
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("cannot list the directory: {e}"))?;
        let mut prefixes: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(TRAINING_MODEL))
                    .map(str::to_string)
            })
            .collect();
        prefixes.sort();
        let complete: Vec<ArtifactFiles> = prefixes
            .iter()
            .map(|prefix| ArtifactFiles {
                prefix: prefix.clone(),
            })
            .filter(|files| {
                present(&dir.join(files.optimizer())) && present(&dir.join(files.checkpoint()))
            })
            .collect();
        match complete.as_slice() {
            [one] => Ok(one.clone()),
            [] => {
                let files = ArtifactFiles {
                    prefix: prefixes.first().cloned().unwrap_or_default(),
                };
                let missing: Vec<String> =
                    [files.training(), files.optimizer(), files.checkpoint()]
                        .into_iter()
                        .filter(|f| !present(&dir.join(f)))
                        .collect();
                Err(format!(
                    "a directory input must hold ONNX Runtime training artifacts; missing {}",
                    missing.join(", ")
                ))
            }
            several => Err(format!(
                "it holds {} sets of training artifacts (prefixes {}); pass a directory with one",
                several.len(),
                several
                    .iter()
                    .map(|f| format!("{:?}", f.prefix))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// Whether a directory entry is there, whatever its type: a FIFO or a dangling link in place of an
/// artifact file must fail when it is read, not be taken for a missing optional file.
pub(crate) fn present(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}
