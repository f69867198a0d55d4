//! Input formats, one adapter each behind one interface (`Adapter`): detect and load an input,
//! analyse it (everything the plan needs, every reason a rewrite would be refused, the record of
//! an earlier rewrite), plan a scheme's injection, and write the staged output. The pipeline
//! (`pipeline.rs`) knows the formats only through this module.

pub mod model;
pub mod ort_artifacts;
pub mod ort_checkpoint;
pub mod select;
pub mod training_info;
pub mod unwind;

use std::path::Path;

use crate::error::{Error, Result};
use crate::graph::NodeRef;
use crate::graph::names::NameGenerator;
use crate::graph::patch::ModelPatch;
use crate::graph::validate::Validated;
use crate::inject::ort::NewState;
use crate::io::checkpoint::Checkpoint;
use crate::io::external_data::{DataFile, stage_external_files};
use crate::io::model::ModelFile;
use crate::io::output::{InputPaths, check_output};
use crate::options::{FinalizeOptions, RewriteOptions};
use crate::record::{Mode, Recorded, RewriteRecord, WrappedParameter};
use crate::scheme::Scheme;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A directory of ONNX Runtime on-device training artifacts.
    OrtArtifacts,
    /// An ONNX model with ModelProto.training_info.
    TrainingInfo,
    /// Any other ONNX model (inference, or a lone ORT training graph): inspectable only.
    Model,
    /// A lone ONNX Runtime training checkpoint: inspectable only.
    OrtCheckpoint,
}

impl Format {
    pub fn id(self) -> &'static str {
        match self {
            Format::OrtArtifacts => "ort-artifacts",
            Format::TrainingInfo => "training-info",
            Format::Model => "onnx-model",
            Format::OrtCheckpoint => "ort-checkpoint",
        }
    }
}

/// A parameter of the input: trainable (updated by the optimizer) or frozen.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    pub name: String,
    pub trainable: bool,
    pub data_type: i32,
    pub dims: Vec<i64>,
}

/// What an adapter finds in its input.
#[derive(Debug)]
pub struct Analysis {
    pub format: Format,
    /// The inner optimizer ("AdamW", "SGD", "Momentum", ...), if recognised.
    pub optimizer: Option<String>,
    pub optimizer_nodes: Vec<NodeRef>,
    pub parameters: Vec<Parameter>,
    /// What the input's metadata records of an earlier rewrite.
    pub recorded: Recorded,
    /// Every reason a rewrite of this input would be refused, in the order they are reported.
    /// `Error::UnknownFields` is one only without `--allow-lossy`.
    pub refusals: Vec<Error>,
}

impl Analysis {
    /// Takes the first refusal that applies with these options.
    pub fn take_refusal(&mut self, options: &RewriteOptions) -> Option<Error> {
        let position = self
            .refusals
            .iter()
            .position(|e| !(options.allow_lossy && matches!(e, Error::UnknownFields { .. })))?;
        Some(self.refusals.remove(position))
    }
}

/// A planned rewrite: a patch per model (by label) and what the format keeps outside its models.
#[derive(Debug, Default)]
pub struct Plan {
    pub patches: Vec<(String, ModelPatch)>,
    pub mode: Option<Mode>,
    pub wrapped: Vec<WrappedParameter>,
    pub counters: Vec<String>,
    /// The scheme's set-wide state tensors.
    pub shared: Vec<String>,
    /// New checkpoint parameters (ORT artifacts).
    pub new_state: Vec<NewState>,
}

/// A rewrite taken back, before validation: the plain models by label, and the plain checkpoints.
#[derive(Debug, Default)]
pub struct Unwound {
    pub models: Vec<(String, crate::generated::onnx::ModelProto)>,
    pub checkpoint: Option<Checkpoint>,
    pub nominal: Option<Checkpoint>,
    /// The weights the result was given.
    pub weights: crate::scheme::EvalWeights,
    /// Parameters whose values changed (a pending sync folded in, or the slow weights taken).
    pub changed: Vec<String>,
}

/// What writing an output did besides writing the models and checkpoints it was given.
#[derive(Debug, Default)]
pub struct Written {
    /// Notes for the user (input files not carried over, and why).
    pub notes: Vec<String>,
    /// ORT artifacts: the ORT-format files written for the output's models, by name.
    pub ort_format: Vec<String>,
}

/// One input, loaded: memory-mapped, decoded zero-copy, analysed.
pub trait Adapter {
    fn format(&self) -> Format;
    fn path(&self) -> &Path;
    /// The ONNX models of the input by label (a file name in an artifacts folder, or the file's
    /// name for a model file).
    fn models(&self) -> Vec<(String, &ModelFile)>;
    /// The checkpoint of the input, if it has one (ORT artifacts, a lone checkpoint).
    fn checkpoint(&self) -> Option<&Checkpoint> {
        None
    }
    /// The checkpoint's file name, for messages.
    fn checkpoint_name(&self) -> Option<String> {
        None
    }
    fn analysis(&self) -> &Analysis;
    fn analysis_mut(&mut self) -> &mut Analysis;
    /// Every name a rewrite must not reuse: all names of all models (and of the checkpoint).
    fn reserved_names(&self) -> NameGenerator;
    /// Why an inspect-only input is neither rewritten nor finalized: what the operations below
    /// return where an adapter does not provide them.
    fn refusal(&self) -> Error {
        Error::Unsupported {
            path: self.path().to_path_buf(),
            reason: "this input can only be inspected".into(),
        }
    }
    /// The scheme's injection into this input.
    fn plan(
        &self,
        _scheme: &dyn Scheme,
        _options: &RewriteOptions,
        _names: &mut NameGenerator,
    ) -> Result<Plan> {
        Err(self.refusal())
    }
    /// Writes the validated models and everything else of the output, staged and renamed into
    /// place; returns notes for the user (files left out) and the ORT-format files written.
    fn write(
        &self,
        _models: Validated<Vec<(String, crate::generated::onnx::ModelProto)>>,
        _plan: &Plan,
        _record: &RewriteRecord,
        _output: &Path,
        _options: &RewriteOptions,
    ) -> Result<Written> {
        Err(self.refusal())
    }
    /// Takes the recorded rewrite back: the plain models with the chosen weights.
    fn unwind(&self, _options: &FinalizeOptions) -> Result<Unwound> {
        Err(self.refusal())
    }
    /// Writes the plain result, staged and renamed into place; returns notes for the user.
    fn write_unwound(
        &self,
        _models: Validated<Vec<(String, crate::generated::onnx::ModelProto)>>,
        _unwound: Unwound,
        _output: &Path,
        _options: &FinalizeOptions,
    ) -> Result<Written> {
        Err(self.refusal())
    }
}

/// Writes a single-model output: the destination checked against `input` and its data files,
/// the data files staged beside the output, then the model, all or nothing.
pub(crate) fn write_model_file(
    input: &ModelFile,
    data_files: &[DataFile],
    model: &crate::generated::onnx::ModelProto,
    output: &Path,
    force: bool,
) -> Result<()> {
    let mut inputs = InputPaths::new();
    inputs.add(&input.path);
    for data in data_files {
        inputs.add(&data.resolved);
    }
    // Everything that can be refused is checked before the first byte is written: the size
    // limit, the destination, then the external data files; those are staged and appear only
    // together with the model.
    crate::io::model::encoded_len_checked(model, output)?;
    check_output(output, &inputs, force, &replaceable_model_file)?;
    let staged = stage_external_files(data_files, folder_of(&input.path), folder_of(output))?;
    staged.commit_with(|| crate::io::model::write_model(model, output, force))
}

/// The folder a file is in ("." for a bare file name).
pub(crate) fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The one model of a single-model output.
pub(crate) fn only_model(
    models: &[(String, crate::generated::onnx::ModelProto)],
) -> Result<&crate::generated::onnx::ModelProto> {
    match models {
        [(_, model)] => Ok(model),
        _ => Err(Error::Validation {
            graph: "graph".into(),
            reason: "one model expected".into(),
        }),
    }
}

/// Detects the format of `path` and loads it: a directory must hold ORT artifacts; a file must
/// be an ONNX model (with or without training_info).
pub fn open(path: &Path) -> Result<Box<dyn Adapter>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("cannot read", path, e))?;
    if meta.is_dir() {
        return Ok(Box::new(ort_artifacts::OrtArtifacts::open(path)?));
    }
    if ort_checkpoint::is_checkpoint(path) {
        return Ok(Box::new(ort_checkpoint::OrtCheckpoint::open(path)?));
    }
    let file = crate::io::model::load_model(path)?;
    if file.model.training_info.is_empty() {
        Ok(Box::new(model::PlainModel::open(file)))
    } else {
        Ok(Box::new(training_info::TrainingInfoModel::open(file)?))
    }
}

/// The refusals every ONNX model shares: unknown fields, an earlier rewrite, the reserved prefix.
pub(crate) fn model_refusals(file: &ModelFile, names: &NameGenerator, refusals: &mut Vec<Error>) {
    if let Err(e) = file.ensure_lossless(false) {
        refusals.push(e);
    }
    let path = file.path.clone();
    // One set of models is rewritten once: report it once.
    let already = refusals
        .iter()
        .any(|e| matches!(e, Error::AlreadyRewritten { .. }));
    match crate::record::recorded(&file.model) {
        _ if already => {}
        Recorded::None => {}
        Recorded::Record(record) => refusals.push(Error::AlreadyRewritten {
            path,
            scheme: record
                .scheme()
                .map(|s| s.describe())
                .unwrap_or_else(|_| format!("the {} scheme", record.scheme)),
            version: record.version.clone(),
        }),
        // Versions that kept no record knew only Lookahead.
        Recorded::MarkerOnly { version, k, alpha } => refusals.push(Error::AlreadyRewritten {
            path,
            scheme: format!("Lookahead k={k} alpha={alpha}"),
            version,
        }),
    }
    let prefix = crate::inject::NAME_PREFIX;
    let rewritten = refusals
        .iter()
        .any(|e| matches!(e, Error::AlreadyRewritten { .. }));
    let clash_known = refusals
        .iter()
        .any(|e| matches!(e, Error::NameClash { .. }));
    if !rewritten
        && !clash_known
        && let Some(name) = names.first_with_prefix(prefix)
    {
        refusals.push(Error::NameClash {
            path: file.path.clone(),
            name: name.to_string(),
            where_used: format!(
                "names starting with {prefix:?} are reserved for the injected Lookahead state"
            ),
        });
    }
}

/// Whether an existing file at `path` may be replaced by a model output under --force: only an
/// ONNX model (an earlier output) is.
pub(crate) fn replaceable_model_file(path: &Path) -> std::result::Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err("it is a directory".into()),
        Ok(meta) if !meta.is_file() => Err(format!(
            "it is a {}",
            crate::io::fs::kind_name(meta.file_type())
        )),
        Ok(_) => crate::io::model::load_model(path)
            .map(drop)
            .map_err(|_| "it is not an ONNX model".into()),
        Err(e) => Err(format!("it cannot be read ({e})")),
    }
}
