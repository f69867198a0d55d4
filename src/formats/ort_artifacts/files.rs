//! The file names of one set of ONNX Runtime training artifacts, and finding the set in a folder.

use std::path::Path;

pub const TRAINING_MODEL: &str = "training_model.onnx";
pub const EVAL_MODEL: &str = "eval_model.onnx";
pub const OPTIMIZER_MODEL: &str = "optimizer_model.onnx";
pub const CHECKPOINT: &str = "checkpoint";
/// How ONNX Runtime's converter names the operator lists it writes.
const REQUIRED_OPERATORS: &str = "required_operators";

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

    /// The models of the set by file name: training, eval, optimizer.
    pub fn models(&self) -> [String; 3] {
        [self.training(), self.eval(), self.optimizer()]
    }

    /// The operator list of the whole set that an ORT-format conversion writes beside the models
    /// (what a minimal build of ONNX Runtime takes with `--include_ops_by_config`).
    pub fn merged_config(&self) -> String {
        format!("{}{REQUIRED_OPERATORS}.config", self.prefix)
    }

    /// Whether `name` is a file ONNX Runtime's converter (`convert_onnx_models_to_ort`) derives
    /// from `model_file`: its ORT-format copy (`<stem>.ort`, or with the optimization level and
    /// style in the name, `<stem>.basic.with_runtime_opt.ort`), its operator list
    /// (`<stem>.required_operators[_and_types][.<level>].config`) or its optimized ONNX form
    /// (`<stem>[.<level>].optimized.onnx`). They describe that model's graphs, so they go
    /// wherever the model is written anew.
    pub fn is_ort_format_copy(model_file: &str, name: &str) -> bool {
        let stem = model_file.strip_suffix(".onnx").unwrap_or(model_file);
        let Some(rest) = name.strip_prefix(stem).and_then(|r| r.strip_prefix('.')) else {
            return false;
        };
        rest == "ort"
            || rest.ends_with(".ort")
            || (rest.starts_with(REQUIRED_OPERATORS) && rest.ends_with(".config"))
            || rest == "optimized.onnx"
            || rest.ends_with(".optimized.onnx")
    }

    /// Whether `name` is an operator list of the whole set: `[<prefix>]required_operators[...]
    /// .config` (the converter names the one of a folder `required_operators.config`; a folder
    /// holds one set).
    pub fn is_set_config(&self, name: &str) -> bool {
        let rest = name.strip_prefix(self.prefix.as_str()).unwrap_or(name);
        rest.starts_with(REQUIRED_OPERATORS) && rest.ends_with(".config")
    }

    /// Whether `name` is derived from the set's models: a model's ORT-format forms or an
    /// operator list of the set.
    pub fn is_derived(&self, name: &str) -> bool {
        self.is_set_config(name)
            || self
                .models()
                .iter()
                .any(|model| Self::is_ort_format_copy(model, name))
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
