//! The adapter for ONNX Runtime on-device training artifacts (generate_artifacts of
//! onnxruntime-training): training_model.onnx, eval_model.onnx, optimizer_model.onnx and
//! checkpoint (+ checkpoint.data) in one directory, all with the same optional prefix.

mod analyse;
mod consistency;
mod files;
mod ort_format;
mod unwind;
mod write;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub use analyse::{ACCUMULATION_BUFFER_SUFFIX, MIN_DEFAULT_OPSET};
pub use files::*;
pub use ort_format::convert_command;
pub(crate) use ort_format::required_converter;

use crate::error::{Error, Result};
use crate::formats::{Adapter, Analysis, Format, Plan, Unwound, Written};
use crate::generated::onnx::{ModelProto, NodeProto};
use crate::graph::build::MS_DOMAIN;
use crate::graph::names::NameGenerator;
use crate::graph::patch::ModelPatch;
use crate::graph::validate::Validated;
use crate::inject::ort::{TrainableInput, TrainingGraph, inject};
use crate::inject::ort_optimizer::reset_adamw_state;
use crate::io::checkpoint::{Checkpoint, read_checkpoint};
use crate::io::model::{ModelFile, load_model};
use crate::options::{FinalizeOptions, RewriteOptions};
use crate::record::{Mode, RewriteRecord};
use crate::scheme::{InnerState, Scheme};

/// The files of one artifacts set, loaded (models and checkpoint memory-mapped).
pub struct ArtifactSet {
    pub dir: PathBuf,
    pub files: ArtifactFiles,
    pub training: ModelFile,
    pub eval: Option<ModelFile>,
    pub optimizer: ModelFile,
    pub checkpoint: Checkpoint,
}

impl ArtifactSet {
    pub fn load(dir: &Path) -> Result<Self> {
        let files = ArtifactFiles::find(dir).map_err(|reason| Error::Unsupported {
            path: dir.to_path_buf(),
            reason,
        })?;
        let eval_path = dir.join(files.eval());
        Ok(ArtifactSet {
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

    /// The models by file name: training, eval (if present), optimizer.
    pub fn models(&self) -> Vec<(String, &ModelFile)> {
        let mut models = vec![(self.files.training(), &self.training)];
        if let Some(eval) = &self.eval {
            models.push((self.files.eval(), eval));
        }
        models.push((self.files.optimizer(), &self.optimizer));
        models
    }
}

/// What the analysis established about the training graph for the injection.
#[derive(Debug, Clone, Default)]
pub struct OrtFacts {
    /// Trainable parameters taken by the training graph with a gradient accumulator, in
    /// checkpoint order.
    pub trainable: Vec<TrainableInput>,
    /// The `*_grad.accumulation.out` output the injection folds its side effects into.
    pub flag_output: String,
}

pub struct OrtArtifacts {
    pub set: ArtifactSet,
    analysis: Analysis,
    facts: OrtFacts,
}

impl OrtArtifacts {
    pub fn open(dir: &Path) -> Result<Self> {
        let set = ArtifactSet::load(dir)?;
        let names = reserved_names(&set);
        let (analysis, facts) = analyse::analyse(&set, &names);
        Ok(OrtArtifacts {
            set,
            analysis,
            facts,
        })
    }
}

/// Every name of every model of the set and of the checkpoint: they share one namespace when
/// the training API feeds checkpoint parameters to the graphs by name.
fn reserved_names(set: &ArtifactSet) -> NameGenerator {
    let mut names = NameGenerator::empty();
    for (_, file) in set.models() {
        names.reserve_model(&file.model);
    }
    if let Some(module) = &set.checkpoint.module_state {
        names.reserve(
            module
                .requires_grad_params
                .iter()
                .chain(&module.frozen_params)
                .map(|t| t.name.clone()),
        );
    }
    names
}

/// The optimizer step the checkpoint holds (0 without optimizer state): the inner-state reset
/// counts its cycles from there, in step with the Lookahead counter the rewrite starts at 0.
fn optimizer_step(checkpoint: &Checkpoint) -> i64 {
    checkpoint
        .optimizer_groups
        .first()
        .map(|g| g.step)
        .unwrap_or(0)
}

/// What `--inner-state` ONNX Runtime 1.19.2 artifacts allow (experiments:
/// docs/experiments/ort_inner_state/).
fn inner_state_supported(policy: InnerState, optimizer: &str) -> Result<()> {
    match policy {
        InnerState::Keep => Ok(()),
        _ if optimizer == "SGD" => Err(Error::InvalidOption(format!(
            "--inner-state {}: ONNX Runtime SGD artifacts keep no inner optimizer state (SGDOptimizerV2 has no momentum; the checkpoint's momentum0 is never read), so there is nothing to change at a sync; use --inner-state keep",
            policy.id()
        ))),
        InnerState::Pullback => Err(Error::InvalidOption(
            "--inner-state pullback is not possible for ONNX Runtime AdamW artifacts: only the optimizer model can write AdamW's momentum, and ONNX Runtime 1.19.2 gives it nowhere to keep the momentum saved at the previous sync (its inputs are fixed to the parameters, their gradients and the two moments, all in use at every step; the checkpoint's frozen parameters reach only the training and eval graphs); use --inner-state keep or reset".into(),
        )),
        InnerState::Reset => Ok(()),
    }
}

impl Adapter for OrtArtifacts {
    fn format(&self) -> Format {
        Format::OrtArtifacts
    }

    fn path(&self) -> &Path {
        &self.set.dir
    }

    fn models(&self) -> Vec<(String, &ModelFile)> {
        self.set.models()
    }

    fn checkpoint(&self) -> Option<&Checkpoint> {
        Some(&self.set.checkpoint)
    }

    fn checkpoint_name(&self) -> Option<String> {
        Some(self.set.files.checkpoint())
    }

    fn analysis(&self) -> &Analysis {
        &self.analysis
    }

    fn analysis_mut(&mut self) -> &mut Analysis {
        &mut self.analysis
    }

    fn reserved_names(&self) -> NameGenerator {
        reserved_names(&self.set)
    }

    fn plan(
        &self,
        scheme: &dyn Scheme,
        options: &RewriteOptions,
        names: &mut NameGenerator,
    ) -> Result<Plan> {
        inner_state_supported(
            scheme.inner_state(),
            self.analysis.optimizer.as_deref().unwrap_or(""),
        )?;
        let names_of: Vec<String> = self
            .facts
            .trainable
            .iter()
            .map(|t| t.name.clone())
            .collect();
        let selected: std::collections::HashSet<String> =
            crate::formats::select::select(&names_of, &options.include, &options.exclude)?
                .into_iter()
                .collect();
        let training = TrainingGraph {
            model: &self.set.training.model,
            trainable: self
                .facts
                .trainable
                .iter()
                .filter(|t| selected.contains(&t.name))
                .cloned()
                .collect(),
            flag_output: self.facts.flag_output.clone(),
        };
        if scheme.inner_state() == InnerState::Reset && selected.len() != names_of.len() {
            return Err(Error::InvalidOption(
                "--inner-state reset cannot be combined with --include/--exclude for ONNX Runtime artifacts: the optimizer model gets every parameter's moments in one unordered sequence, so a reset would restart the inner optimizer of the parameters left out too".into(),
            ));
        }
        let eval = self.set.eval.as_ref().map(|e| &e.model);
        let injection = inject(
            scheme,
            &training,
            eval,
            options.alias,
            options
                .eval_weights
                .unwrap_or_else(|| scheme.default_eval_weights()),
            names,
        )?;
        let mut patches = Vec::new();
        let mut training_patch = injection.training;
        training_patch.opsets = opsets_for(&self.set.training, &training_patch)?;
        patches.push((self.set.files.training(), training_patch));
        if let (Some(file), Some(mut patch)) = (&self.set.eval, injection.eval) {
            patch.opsets = opsets_for(file, &patch)?;
            patches.push((self.set.files.eval(), patch));
        }
        if scheme.inner_state() == InnerState::Reset {
            let mut patch = reset_adamw_state(
                &self.set.optimizer.model,
                &self.set.optimizer.path,
                scheme.schedule().period,
                optimizer_step(&self.set.checkpoint),
                names,
            )?;
            patch.opsets = opsets_for(&self.set.optimizer, &patch)?;
            patches.push((self.set.files.optimizer(), patch));
        }
        Ok(Plan {
            patches,
            mode: Some(match options.alias {
                crate::inject::ort::AliasOp::PassThrough => Mode::Passthrough,
                crate::inject::ort::AliasOp::Reshape => Mode::Reshape,
            }),
            wrapped: injection.wrapped,
            counters: vec![injection.counter],
            shared: injection.shared,
            new_state: injection.new_state,
        })
    }

    fn write(
        &self,
        models: Validated<Vec<(String, ModelProto)>>,
        plan: &Plan,
        record: &RewriteRecord,
        output: &Path,
        options: &RewriteOptions,
    ) -> Result<Written> {
        write::write(&self.set, models, plan, record, output, options)
    }

    fn unwind(&self, options: &FinalizeOptions) -> Result<Unwound> {
        unwind::unwind(&self.set, &self.analysis.recorded, options)
    }

    fn write_unwound(
        &self,
        models: Validated<Vec<(String, ModelProto)>>,
        unwound: Unwound,
        output: &Path,
        options: &FinalizeOptions,
    ) -> Result<Written> {
        unwind::write_unwound(&self.set, models, unwound, output, options)
    }
}

/// The operator domains of the nodes a patch adds, subgraphs included ("" for ai.onnx).
fn domains_used(patch: &ModelPatch) -> BTreeSet<String> {
    fn visit(node: &NodeProto, into: &mut BTreeSet<String>) {
        let domain = match node.domain() {
            "ai.onnx" => "",
            d => d,
        };
        into.insert(domain.to_string());
        for graph in crate::graph::scope::subgraphs(node) {
            graph.node.iter().for_each(|n| visit(n, into));
        }
    }
    let mut domains = BTreeSet::new();
    patch
        .added_nodes()
        .for_each(|(_, node)| visit(node, &mut domains));
    domains
}

/// The opset imports the patch's nodes need in `file`'s model that it lacks: ai.onnx (the newest
/// opset its IR version was released with, at least 11) and com.microsoft.
fn opsets_for(file: &ModelFile, patch: &ModelPatch) -> Result<Vec<(String, i64)>> {
    let model = &file.model;
    let imported = |domain: &str| {
        model
            .opset_import
            .iter()
            .any(|o| crate::graph::dataflow::same_domain(o.domain(), domain))
    };
    let used = domains_used(patch);
    let mut opsets = Vec::new();
    if used.contains("") && !imported("") {
        // onnx/helper.py VERSION_TABLE.
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
    if used.contains(MS_DOMAIN) && !imported(MS_DOMAIN) {
        opsets.push((MS_DOMAIN.to_string(), 1));
    }
    Ok(opsets)
}
