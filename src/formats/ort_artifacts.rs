//! ONNX Runtime on-device training artifacts (generate_artifacts of onnxruntime-training):
//! training_model.onnx, eval_model.onnx, optimizer_model.onnx and checkpoint in one directory.
//!
//! The optimizer model holds ONE com.microsoft optimizer node (AdamWOptimizer or SGDOptimizerV2)
//! over tensor sequences whose order is decided at run time, so it cannot tell which tensor is
//! which parameter. The trainable parameters are the checkpoint's requires-grad parameters that
//! the training graph takes together with a gradient accumulation buffer
//! (`<P>_grad.accumulation.buffer`); frozen parameters are the checkpoint's other parameters.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::formats::Format;
use crate::graph::build::MS_DOMAIN;
use crate::graph::dataflow::{Dataflow, nodes_of_type};
use crate::graph::names::NameGenerator;
use crate::graph::patch;
use crate::graph::validate::validate_model;
use crate::inspect::{self, NodeRef, ParameterReport, Report};
use crate::io::atomic::StagedDir;
use crate::io::checkpoint::{
    Checkpoint, CheckpointTensor, EXTERNAL_DATA_THRESHOLD, ExternalDataLayout, TensorData,
    data_type, read_checkpoint, write_checkpoint_with,
};
use crate::io::external_data::check_external_data;
use crate::io::model::{ModelFile, load_model, write_model};
use crate::io::output::{InputPaths, check_output};
use crate::io::tensor_check::check_model_tensors;
use crate::lookahead::ort::{NewParamValue, OrtPlan};
use crate::lookahead::{self, NAME_PREFIX, marker};
use crate::pipeline::{RewriteOptions, RewriteSummary, lookahead_report, refuse_rewritten};

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

    /// Files of the input that describe the training or eval model in another form (ORT format
    /// `.ort`, and the operator lists of minimal builds made from it). They would still describe
    /// the original graphs, so a rewrite does not carry them over.
    pub fn stale_after_rewrite(&self) -> Vec<String> {
        [TRAINING_MODEL, EVAL_MODEL]
            .iter()
            .flat_map(|model| {
                let stem = model.trim_end_matches(".onnx");
                [
                    format!("{}{stem}.ort", self.prefix),
                    format!("{}{stem}.required_operators.config", self.prefix),
                ]
            })
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
fn present(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Optimizer operators the ORT training API runs, and the names users know them by.
const OPTIMIZERS: [(&str, &str); 2] = [("AdamWOptimizer", "AdamW"), ("SGDOptimizerV2", "SGD")];

/// Suffix of the training graph input holding a trainable parameter's gradient accumulator.
pub const ACCUMULATION_BUFFER_SUFFIX: &str = "_grad.accumulation.buffer";

/// An artifacts directory, decoded (models memory-mapped, checkpoint memory-mapped).
pub struct OrtArtifacts {
    pub dir: PathBuf,
    pub files: ArtifactFiles,
    pub training: ModelFile,
    pub eval: Option<ModelFile>,
    pub optimizer: ModelFile,
    pub checkpoint: Checkpoint,
}

/// What the adapter finds in the artifacts.
#[derive(Debug, Clone)]
pub struct OrtAnalysis {
    /// "AdamW" or "SGD".
    pub optimizer: String,
    pub optimizer_node: NodeRef,
    /// Trainable parameters (checkpoint order) that the training graph takes with a gradient.
    pub trainable: Vec<String>,
    /// Parameters that already have Lookahead slow weights (on rewritten input).
    pub wrapped: Vec<String>,
}

pub fn load(dir: &Path) -> Result<OrtArtifacts> {
    let files = ArtifactFiles::find(dir).map_err(|reason| Error::Unsupported {
        path: dir.to_path_buf(),
        reason,
    })?;
    let eval_path = dir.join(files.eval());
    Ok(OrtArtifacts {
        dir: dir.to_path_buf(),
        training: load_model(&dir.join(files.training()))?,
        eval: if present(&eval_path) {
            Some(load_model(&eval_path)?)
        } else {
            None
        },
        optimizer: load_model(&dir.join(files.optimizer()))?,
        checkpoint: read_checkpoint(dir.join(files.checkpoint()))?,
        files,
    })
}

impl OrtArtifacts {
    /// The models by file name: training, eval (if present), optimizer.
    fn models(&self) -> Vec<(String, &ModelFile)> {
        let mut models = vec![(self.files.training(), &self.training)];
        if let Some(eval) = &self.eval {
            models.push((self.files.eval(), eval));
        }
        models.push((self.files.optimizer(), &self.optimizer));
        models
    }

    fn requires_grad(&self) -> &[CheckpointTensor] {
        self.checkpoint
            .module_state
            .as_ref()
            .map(|m| m.requires_grad_params.as_slice())
            .unwrap_or(&[])
    }

    fn frozen(&self) -> &[CheckpointTensor] {
        self.checkpoint
            .module_state
            .as_ref()
            .map(|m| m.frozen_params.as_slice())
            .unwrap_or(&[])
    }
}

pub fn analyze(artifacts: &OrtArtifacts) -> Result<OrtAnalysis> {
    let optimizer_path = artifacts.dir.join(artifacts.files.optimizer());
    let graph = artifacts
        .optimizer
        .model
        .graph
        .as_ref()
        .ok_or_else(|| Error::InvalidModel {
            path: optimizer_path.clone(),
            reason: "the main graph is missing".into(),
        })?;
    // Like ORT, only the main graph's nodes count, not nodes inside subgraphs.
    let found: Vec<(usize, &str, &str)> = OPTIMIZERS
        .iter()
        .flat_map(|&(op, user_name)| {
            nodes_of_type(graph, MS_DOMAIN, op).map(move |(i, _)| (i, op, user_name))
        })
        .collect();
    let (position, op_type, optimizer) = match found.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::NoOptimizer {
                path: optimizer_path,
                reason: "no com.microsoft AdamWOptimizer or SGDOptimizerV2 node in the main graph"
                    .into(),
            });
        }
        _ => {
            return Err(Error::Unsupported {
                path: optimizer_path,
                reason: format!(
                    "{} optimizer nodes; ONNX Runtime accepts exactly one",
                    found.len()
                ),
            });
        }
    };
    let node = &graph.node[position];
    let optimizer_node = NodeRef {
        graph: artifacts.files.optimizer(),
        name: if node.name().is_empty() {
            format!("#{position}")
        } else {
            node.name().to_string()
        },
        op_type: op_type.to_string(),
    };
    // A trainable parameter comes with a gradient accumulation buffer that an
    // InPlaceAccumulatorV2 node of the training graph accumulates into.
    let training_graph =
        artifacts
            .training
            .model
            .graph
            .as_ref()
            .ok_or_else(|| Error::InvalidModel {
                path: artifacts.dir.join(artifacts.files.training()),
                reason: "the main graph is missing".into(),
            })?;
    let flow = Dataflow::build(training_graph).map_err(|d| Error::Unsupported {
        path: artifacts.dir.join(artifacts.files.training()),
        reason: format!("{:?} is defined more than once", d.name),
    })?;
    let inputs: HashSet<&str> = training_graph.input.iter().map(|i| i.name()).collect();
    let is_input = |name: &str| inputs.contains(name);
    let accumulated = |param: &str| {
        let buffer = format!("{param}{ACCUMULATION_BUFFER_SUFFIX}");
        is_input(&buffer)
            && flow
                .consumers(&buffer)
                .iter()
                .any(|&n| training_graph.node[n].op_type() == "InPlaceAccumulatorV2")
    };
    let trainable: Vec<String> = artifacts
        .requires_grad()
        .iter()
        .map(|t| t.name.clone())
        .filter(|p| is_input(p) && accumulated(p))
        .collect();
    // On rewritten input, the injected PassThrough lists the parameters with slow weights.
    let wrapped = artifacts
        .training
        .model
        .graph
        .iter()
        .flat_map(|g| g.node.iter())
        .filter(|n| n.op_type() == "PassThrough" && n.name().starts_with(NAME_PREFIX))
        .flat_map(|n| n.input.iter().skip(1).cloned())
        .collect();
    Ok(OrtAnalysis {
        optimizer: optimizer.to_string(),
        optimizer_node,
        trainable,
        wrapped,
    })
}

pub fn inspect(dir: &Path) -> Result<Report> {
    let artifacts = load(dir)?;
    let analysis = analyze(&artifacts)?;
    let mut graphs = Vec::new();
    let mut injected_nodes = Vec::new();
    for (label, file) in artifacts.models() {
        if let Some(g) = &file.model.graph {
            graphs.push(inspect::graph_report(&label, &file.model, g));
            inspect::injected_nodes(&label, g, &mut injected_nodes);
        }
    }
    let wrapped: HashSet<&str> = analysis.wrapped.iter().map(String::as_str).collect();
    let trainable: HashSet<&str> = analysis.trainable.iter().map(String::as_str).collect();
    let param = |t: &CheckpointTensor, trainable: bool| ParameterReport {
        name: t.name.clone(),
        trainable,
        lookahead: wrapped.contains(t.name.as_str()),
        data_type: inspect::data_type_name(t.data_type),
        shape: t.dims.clone(),
    };
    let mut parameters: Vec<ParameterReport> = artifacts
        .requires_grad()
        .iter()
        .map(|t| param(t, trainable.contains(t.name.as_str())))
        .collect();
    let mut injected_state = Vec::new();
    for t in artifacts.frozen() {
        if t.name.starts_with(NAME_PREFIX) {
            injected_state.push(t.name.clone());
        } else {
            parameters.push(param(t, false));
        }
    }
    let (lookahead, rewritten_by) = lookahead_report(marker(&artifacts.training.model));
    Ok(Report {
        format: Format::OrtArtifacts.id().to_string(),
        input: dir.display().to_string(),
        optimizer: Some(analysis.optimizer.clone()),
        lookahead,
        rewritten_by,
        parameters,
        optimizer_nodes: vec![analysis.optimizer_node],
        injected_nodes,
        injected_state,
        graphs,
    })
}

/// The lowest ai.onnx opset with every standard operator the injected nodes use (Equal on
/// floats needs 11).
const MIN_DEFAULT_OPSET: i64 = 11;

/// The operator domains of the nodes a patch adds, subgraphs included ("" for ai.onnx).
fn domains_used(patch: &patch::ModelPatch) -> std::collections::BTreeSet<String> {
    fn visit(
        node: &crate::generated::onnx::NodeProto,
        into: &mut std::collections::BTreeSet<String>,
    ) {
        let domain = if node.domain() == "ai.onnx" {
            ""
        } else {
            node.domain()
        };
        into.insert(domain.to_string());
        for graph in crate::graph::scope::subgraphs(node) {
            graph.node.iter().for_each(|n| visit(n, into));
        }
    }
    let mut domains = std::collections::BTreeSet::new();
    patch
        .added_nodes()
        .for_each(|(_, node)| visit(node, &mut domains));
    domains
}

/// The opset imports the patch's nodes need in `file`'s model: an ai.onnx import when the model
/// has none (the newest opset its IR version allows, at least 11) and com.microsoft when absent.
/// An existing ai.onnx import below 11 is refused: raising it would change what the model's own
/// nodes mean.
fn opsets_for_injected_nodes(
    file: &ModelFile,
    patch: &patch::ModelPatch,
) -> Result<Vec<(String, i64)>> {
    let model = &file.model;
    let used = domains_used(patch);
    let imported = |domain: &str| {
        model
            .opset_import
            .iter()
            .find(|o| crate::graph::dataflow::same_domain(o.domain(), domain))
            .map(|o| o.version())
    };
    let mut opsets = Vec::new();
    match imported("").filter(|_| used.contains("")) {
        _ if !used.contains("") => {}
        Some(version) if version < MIN_DEFAULT_OPSET => {
            return Err(Error::Unsupported {
                path: file.path.clone(),
                reason: format!(
                    "the model imports ai.onnx opset {version}; the injected nodes need opset >= {MIN_DEFAULT_OPSET}"
                ),
            });
        }
        Some(_) => {}
        None => {
            // The newest opset each IR version was released with (onnx/helper.py VERSION_TABLE).
            let version = match model.ir_version() {
                ..=5 => {
                    return Err(Error::Unsupported {
                        path: file.path.clone(),
                        reason: format!(
                            "the model imports no ai.onnx opset and has IR version {}; the injected nodes need opset >= {MIN_DEFAULT_OPSET} (IR version >= 6)",
                            model.ir_version()
                        ),
                    });
                }
                6 => 11,
                7 => 13,
                8 => 17,
                9 => 20,
                _ => 21,
            };
            opsets.push((String::new(), version));
        }
    }
    if used.contains(MS_DOMAIN) && imported(MS_DOMAIN).is_none() {
        opsets.push((MS_DOMAIN.to_string(), 1));
    }
    Ok(opsets)
}

/// Whether an existing directory may be replaced by the rewrite of `input` under --force: only a
/// directory that holds one artifacts set and nothing else, except entries the rewrite would copy
/// from `input` again unchanged.
fn replaceable_artifacts(existing: &Path, input: &Path) -> std::result::Result<(), String> {
    let meta = std::fs::metadata(existing).map_err(|e| format!("it cannot be read ({e})"))?;
    if !meta.is_dir() {
        return Err(format!(
            "it is a {}, not an artifacts folder",
            crate::io::fs::kind_name(meta.file_type())
        ));
    }
    let files = ArtifactFiles::find(existing)
        .map_err(|_| "it does not hold a set of training artifacts".to_string())?;
    let mut own = vec![
        files.training(),
        files.eval(),
        files.optimizer(),
        files.checkpoint(),
        files.checkpoint_data(),
        files.nominal_checkpoint(),
    ];
    own.extend(files.stale_after_rewrite());
    let entries = std::fs::read_dir(existing).map_err(|e| format!("it cannot be listed ({e})"))?;
    for entry in entries {
        let name = entry
            .map_err(|e| format!("it cannot be listed ({e})"))?
            .file_name();
        if own.iter().any(|f| name == f.as_str()) {
            continue;
        }
        let unchanged = crate::io::fs::same_tree(&input.join(&name), &existing.join(&name))
            .map_err(|e| e.to_string())?;
        if !unchanged {
            return Err(format!(
                "it holds {:?}, which is not part of an artifacts set",
                name.to_string_lossy()
            ));
        }
    }
    Ok(())
}

pub fn rewrite(dir: &Path, output: &Path, options: &RewriteOptions) -> Result<RewriteSummary> {
    let mut inputs = InputPaths::new();
    inputs.add_tree(dir);
    check_output(output, &inputs, options.force, &|existing| {
        replaceable_artifacts(existing, dir)
    })?;
    let artifacts = load(dir)?;
    let mut names = NameGenerator::empty();
    for (_, file) in artifacts.models() {
        file.ensure_lossless(options.allow_lossy)?;
        names.reserve_model(&file.model);
    }
    names.reserve(
        artifacts
            .requires_grad()
            .iter()
            .chain(artifacts.frozen())
            .map(|t| t.name.clone()),
    );
    for (label, file) in artifacts.models() {
        refuse_rewritten(&file.model, &dir.join(&label), &names)?;
        check_model_tensors(&file.model, &dir.join(&label))?;
        // External data files of the models are copied along with the directory; check them first.
        check_external_data(&dir.join(&label), &file.model)?;
    }
    let analysis = analyze(&artifacts)?;
    if analysis.trainable.is_empty() {
        return Err(Error::NoOptimizer {
            path: dir.join(artifacts.files.checkpoint()),
            reason: "no requires-grad parameter of the checkpoint has a gradient accumulator in the training graph".into(),
        });
    }
    for (label, file) in artifacts.models() {
        validate_model(&file.model).map_err(|e| Error::Unsupported {
            path: dir.join(&label),
            reason: format!("the input breaks an ONNX rule: {e}"),
        })?;
    }
    let plan = lookahead::ort::plan(
        (&artifacts.training.model, &artifacts.training.path),
        artifacts
            .eval
            .as_ref()
            .map(|e| (&e.model, e.path.as_path())),
        &analysis.trainable,
        options.lookahead,
        options.alias,
        &mut names,
    )?;
    let injected_nodes = plan.training.added_nodes().count()
        + plan.eval.as_ref().map_or(0, |p| p.added_nodes().count());
    let OrtPlan {
        training: mut training_patch,
        eval: mut eval_patch,
        new_frozen_params,
        wrapped,
    } = plan;
    training_patch.opsets = opsets_for_injected_nodes(&artifacts.training, &training_patch)?;
    if let (Some(file), Some(p)) = (&artifacts.eval, eval_patch.as_mut()) {
        p.opsets = opsets_for_injected_nodes(file, p)?;
    }

    let mut training = artifacts.training.model.clone();
    patch::apply(&mut training, training_patch)?;
    validate_model(&training)?;
    let eval = match (&artifacts.eval, eval_patch) {
        (Some(file), Some(p)) => {
            let mut eval = file.model.clone();
            patch::apply(&mut eval, p)?;
            validate_model(&eval)?;
            Some(eval)
        }
        _ => None,
    };
    let checkpoint = with_new_frozen_params(&artifacts, &new_frozen_params)?;

    let files = &artifacts.files;
    let nominal_path = dir.join(files.nominal_checkpoint());
    let nominal = if present(&nominal_path) {
        Some(nominal_with_new_frozen_params(
            read_checkpoint(&nominal_path)?,
            &new_frozen_params,
        )?)
    } else {
        None
    };
    let mut not_copied = vec![
        files.training(),
        files.eval(),
        files.checkpoint(),
        files.checkpoint_data(),
        files.nominal_checkpoint(),
    ];
    let stale = files.stale_after_rewrite();
    not_copied.extend(stale.iter().cloned());
    let staged = StagedDir::new(output, options.force)?;
    let write_all = || -> Result<()> {
        copy_entries_except(dir, staged.path(), &not_copied)?;
        write_model(&training, &staged.path().join(files.training()), true)?;
        if let Some(eval) = &eval {
            write_model(eval, &staged.path().join(files.eval()), true)?;
        }
        // Slow weights double the parameter bytes; past ORT's own threshold the parameters go to
        // checkpoint.data as ORT would put them, which keeps the FlatBuffer under its 2 GiB limit.
        let layout = if checkpoint.inline_data_bytes() >= EXTERNAL_DATA_THRESHOLD {
            ExternalDataLayout::ModuleStateExternal
        } else {
            ExternalDataLayout::Keep
        };
        write_checkpoint_with(&checkpoint, staged.path().join(files.checkpoint()), layout)?;
        if let Some(nominal) = &nominal {
            write_checkpoint_with(
                nominal,
                staged.path().join(files.nominal_checkpoint()),
                ExternalDataLayout::Keep,
            )?;
        }
        Ok(())
    };
    write_all().map_err(|e| staged.blame(e))?;
    staged.commit()?;
    Ok(RewriteSummary {
        format: Format::OrtArtifacts,
        output: output.to_path_buf(),
        optimizer: analysis.optimizer,
        wrapped_parameters: wrapped,
        injected_nodes,
        dropped_files: stale.into_iter().filter(|f| dir.join(f).exists()).collect(),
    })
}

/// The checkpoint with the Lookahead state added as frozen parameters. Slow weights share the
/// bytes of their parameter (inline or external), so nothing is copied before writing.
fn with_new_frozen_params(
    artifacts: &OrtArtifacts,
    new: &[lookahead::ort::NewParam],
) -> Result<Checkpoint> {
    let mut checkpoint = artifacts.checkpoint.clone();
    if checkpoint
        .module_state
        .as_ref()
        .is_some_and(|m| m.is_nominal_state)
    {
        return Err(Error::Unsupported {
            path: artifacts.dir.join(artifacts.files.checkpoint()),
            reason: "a nominal checkpoint holds no parameter values to start the slow weights from"
                .into(),
        });
    }
    for param in new {
        match &param.value {
            NewParamValue::CopyOf(source) => {
                checkpoint.add_frozen_copy(source, &param.name)?;
            }
            NewParamValue::ZerosF32(dims) => {
                let count: i64 = dims.iter().product();
                let zeros = bytes::Bytes::from(vec![0u8; 4 * count.max(0) as usize]);
                let tensor = CheckpointTensor::new(
                    param.name.clone(),
                    dims.clone(),
                    data_type::FLOAT,
                    TensorData::Inline(zeros),
                );
                checkpoint.add_frozen_parameter(tensor)?;
            }
        }
    }
    Ok(checkpoint)
}

/// The nominal checkpoint with the Lookahead state added, in its own form (each new entry shaped
/// like an existing nominal parameter: names and types only).
fn nominal_with_new_frozen_params(
    mut nominal: Checkpoint,
    new: &[lookahead::ort::NewParam],
) -> Result<Checkpoint> {
    let path = nominal
        .source_path()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let is_nominal = nominal
        .module_state
        .as_ref()
        .is_some_and(|m| m.is_nominal_state);
    if !is_nominal {
        return Err(Error::Unsupported {
            path,
            reason: "a nominal checkpoint is expected under this name".into(),
        });
    }
    for param in new {
        match &param.value {
            NewParamValue::CopyOf(source) => {
                nominal.add_frozen_copy(source, &param.name)?;
            }
            NewParamValue::ZerosF32(_) => {
                let Some(form) = nominal
                    .module_state
                    .as_ref()
                    .and_then(|m| m.requires_grad_params.first().or(m.frozen_params.first()))
                else {
                    return Err(Error::InvalidCheckpoint {
                        path,
                        reason: "the nominal checkpoint lists no parameter".into(),
                    });
                };
                let mut tensor = form.clone();
                tensor.name = param.name.clone();
                tensor.doc_string = None;
                tensor.data_type = data_type::FLOAT;
                nominal.add_frozen_parameter(tensor)?;
            }
        }
    }
    Ok(nominal)
}

/// Copies every entry of the artifacts directory except `skip` (the files the rewrite writes
/// itself, and stale forms of them): the optimizer model and any other file or folder come out
/// byte for byte (links as links; special files are refused).
fn copy_entries_except(from: &Path, to: &Path, skip: &[String]) -> Result<()> {
    let entries = std::fs::read_dir(from).map_err(|e| Error::io("cannot list", from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("cannot list", from, e))?;
        let name = entry.file_name();
        if skip.iter().any(|s| name == s.as_str()) {
            continue;
        }
        crate::io::fs::copy_entry(&entry.path(), &to.join(&name))?;
    }
    Ok(())
}
