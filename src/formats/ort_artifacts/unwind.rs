//! Taking the rewrite of an artifacts set back: the training and eval graphs reverted from their
//! records, the optimizer model as it is, and a checkpoint (the set's own, or one saved during
//! training) without the scheme's state, its parameters at the chosen weights (a pending sync
//! folded in) and its optimizer state and step kept, so that the stock loop continues where the
//! rewritten one would have been.

use std::collections::HashSet;
use std::path::Path;

use super::consistency::disagreement;
use super::write::{SetContents, replaceable_artifacts, retarget_checkpoints, write_set};
use super::{ArtifactSet, present};
use crate::error::{Error, Result};
use crate::formats::ort_checkpoint::counter_position;
use crate::formats::unwind::{final_values, required_record, reverted};
use crate::formats::{Unwound, Written};
use crate::generated::onnx::ModelProto;
use crate::graph::validate::Validated;
use crate::io::checkpoint::{ExternalDataLayout, TensorData, read_checkpoint};
use crate::io::output::{InputPaths, check_output};
use crate::options::FinalizeOptions;
use crate::record::{META_PREFIX, Recorded};
use crate::scheme::EvalWeights;

pub(super) fn unwind(
    set: &ArtifactSet,
    recorded: &Recorded,
    options: &FinalizeOptions,
) -> Result<Unwound> {
    let record = required_record(recorded, &set.training.path)?;
    let scheme = record.scheme()?;
    let (mut checkpoint, path) = match &options.checkpoint {
        Some(path) => (read_checkpoint(path)?, path.clone()),
        None => (set.checkpoint.clone(), set.dir.join(set.files.checkpoint())),
    };
    let not_ours = |reason: String| Error::NotRewritten {
        path: path.clone(),
        reason,
    };
    let at_sync = counter_position(&checkpoint, record, &path)?.pending;
    let shared = record
        .shared
        .iter()
        .map(|s| match checkpoint.values_of(s).as_deref() {
            Ok([value]) => Ok(*value),
            _ => Err(not_ours(format!(
                "its averaging state {s} is missing or not one value"
            ))),
        })
        .collect::<Result<Vec<f64>>>()?;
    // A checkpoint from other artifacts (other shapes or types) would give a set whose files
    // disagree.
    if let Some(disagreement) = disagreement(set, &checkpoint, &path) {
        return Err(disagreement);
    }
    let mut changed = Vec::new();
    for p in &record.parameters {
        let state = p
            .state
            .iter()
            .map(|s| checkpoint.values_of(s))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| {
                not_ours(format!(
                    "the state of {} is missing or unreadable ({e})",
                    p.name
                ))
            })?;
        let data_type = checkpoint
            .parameter(&p.name)
            .map(|t| t.data_type)
            .ok_or_else(|| not_ours(format!("it holds no parameter {}", p.name)))?;
        let new_data = match (at_sync, options.weights.unwrap_or(record.eval_weights)) {
            (false, EvalWeights::Current) => continue,
            (false, EvalWeights::Averaged) => checkpoint
                .parameter(&p.state[0])
                .map(|s| s.data.clone())
                .ok_or_else(|| not_ours(format!("it holds no {}", p.state[0])))?,
            (true, weights) => {
                let fast = checkpoint.values_of(&p.name)?;
                TensorData::Inline(final_values(
                    scheme.as_ref(),
                    &p.name,
                    data_type,
                    &fast,
                    &state,
                    &shared,
                    weights,
                )?)
            }
        };
        if let Some(param) = checkpoint.parameter_mut(&p.name) {
            param.data = new_data;
        }
        changed.push(p.name.clone());
    }
    let state: HashSet<String> = record.state_names().into_iter().collect();
    checkpoint.remove_parameters(&state);
    let bag = &mut checkpoint.property_bag;
    bag.ints.retain(|p| !p.name.starts_with(META_PREFIX));
    bag.floats.retain(|p| !p.name.starts_with(META_PREFIX));
    bag.strings.retain(|p| !p.name.starts_with(META_PREFIX));
    let nominal_path = set.dir.join(set.files.nominal_checkpoint());
    let nominal = if present(&nominal_path) {
        let mut nominal = read_checkpoint(&nominal_path)?;
        nominal.remove_parameters(&state);
        Some(nominal)
    } else {
        None
    };
    let mut models = vec![(set.files.training(), reverted(&set.training.model)?)];
    if let Some(eval) = &set.eval {
        models.push((set.files.eval(), reverted(&eval.model)?));
    }
    // Patched only for --inner-state reset; otherwise it is copied as it is.
    if matches!(
        crate::record::recorded(&set.optimizer.model),
        Recorded::Record(_)
    ) {
        models.push((set.files.optimizer(), reverted(&set.optimizer.model)?));
    }
    Ok(Unwound {
        models,
        checkpoint: Some(checkpoint),
        nominal,
        changed,
        weights: options.weights.unwrap_or(record.eval_weights),
    })
}

pub(super) fn write_unwound(
    set: &ArtifactSet,
    models: Validated<Vec<(String, ModelProto)>>,
    unwound: Unwound,
    output: &Path,
    options: &FinalizeOptions,
) -> Result<Written> {
    let dir = &set.dir;
    let mut inputs = InputPaths::new();
    inputs.add_tree(dir);
    if let Some(path) = &options.checkpoint {
        inputs.add(path);
        inputs.add(&crate::io::checkpoint::external_data_path(path));
    }
    let destination = check_output(output, &inputs, options.force, &|existing| {
        replaceable_artifacts(existing, dir)
    })?;
    let mut unwound = unwound;
    if let Some(checkpoint) = unwound.checkpoint.as_mut() {
        retarget_checkpoints(
            set,
            options.target_ort,
            checkpoint,
            unwound.nominal.as_mut(),
            ExternalDataLayout::Keep,
        )?;
    }
    let contents = SetContents {
        models: models.get(),
        checkpoint: unwound
            .checkpoint
            .as_ref()
            .map(|c| (c, ExternalDataLayout::Keep)),
        nominal: unwound.nominal.as_ref(),
    };
    write_set(
        set,
        &contents,
        output,
        &destination.entry,
        options.force,
        &options.ort_format,
    )
}
