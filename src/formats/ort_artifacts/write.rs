//! Writing a rewritten artifacts set: the destination checked, the checkpoint given the scheme's
//! state (and the record in its property bag), everything staged in a sibling folder and renamed
//! into place.

use std::path::Path;

use super::ort_format::Conversion;
use super::{ArtifactFiles, ArtifactSet, present};
use crate::compat::Release;
use crate::compat::target::checkpoint_format;
use crate::error::{Error, Result};
use crate::formats::{Plan, Written};
use crate::generated::onnx::ModelProto;
use crate::graph::validate::Validated;
use crate::inject::ort::{NewState, NewStateValue};
use crate::io::atomic::StagedDir;
use crate::io::checkpoint::{
    Checkpoint, CheckpointTensor, EXTERNAL_DATA_THRESHOLD, ExternalDataLayout, Property,
    TensorData, data_type, read_checkpoint, write_checkpoint_with,
};
use crate::io::model::write_model;
use crate::io::output::{InputPaths, check_output};
use crate::options::{OrtFormat, RewriteOptions};
use crate::record::{META_ALPHA, META_K, META_RECORD, RewriteRecord};

pub(super) fn write(
    set: &ArtifactSet,
    models: Validated<Vec<(String, ModelProto)>>,
    plan: &Plan,
    record: &RewriteRecord,
    output: &Path,
    options: &RewriteOptions,
) -> Result<Written> {
    let dir = &set.dir;
    let mut inputs = InputPaths::new();
    inputs.add_tree(dir);
    let destination = check_output(output, &inputs, options.force, &|existing| {
        replaceable_artifacts(existing, dir)
    })?;
    let files = &set.files;
    let mut checkpoint = with_new_state(&set.checkpoint, &plan.new_state, Some(record))?;
    let nominal_path = dir.join(files.nominal_checkpoint());
    let mut nominal = if present(&nominal_path) {
        Some(nominal_with_new_state(
            read_checkpoint(&nominal_path)?,
            &plan.new_state,
        )?)
    } else {
        None
    };
    // Slow weights double the parameter bytes; past ORT's own threshold the parameters go to
    // checkpoint.data as ORT would put them, which keeps the FlatBuffer under its 2 GiB limit.
    let layout = if checkpoint.inline_data_bytes() >= EXTERNAL_DATA_THRESHOLD {
        ExternalDataLayout::ModuleStateExternal
    } else {
        ExternalDataLayout::Keep
    };
    retarget_checkpoints(
        set,
        options.target_ort,
        &mut checkpoint,
        nominal.as_mut(),
        layout,
    )?;
    let contents = SetContents {
        models: models.get(),
        checkpoint: Some((&checkpoint, layout)),
        nominal: nominal.as_ref(),
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

/// Gives the output checkpoints (the set's and its nominal one) the format version `target`
/// reads, or says why they cannot have it; without a target they keep their own.
pub(super) fn retarget_checkpoints(
    set: &ArtifactSet,
    target: Option<&Release>,
    checkpoint: &mut Checkpoint,
    nominal: Option<&mut Checkpoint>,
    layout: ExternalDataLayout,
) -> Result<()> {
    let Some(release) = target else {
        return Ok(());
    };
    let refuse = |reason: String| crate::compat::target::refusal(release, &set.dir, reason);
    let name = set.files.checkpoint();
    if release.checkpoint_format == 1 && layout == ExternalDataLayout::ModuleStateExternal {
        return Err(refuse(format!(
            "{name} with the slow weights holds {} of tensors, which needs an external data file, and checkpoint format 1 (ONNX Runtime {}) cannot refer to one",
            crate::io::human_bytes(checkpoint.inline_data_bytes()),
            release.id
        )));
    }
    checkpoint.version = checkpoint_format(release, &name, checkpoint).map_err(refuse)?;
    if let Some(nominal) = nominal {
        let name = set.files.nominal_checkpoint();
        nominal.version = checkpoint_format(release, &name, nominal).map_err(refuse)?;
    }
    Ok(())
}

/// What an output artifacts folder gets written; everything else comes from the input folder.
pub(super) struct SetContents<'a> {
    /// The models by file name (the optimizer model only when it was changed).
    pub models: &'a [(String, ModelProto)],
    pub checkpoint: Option<(&'a Checkpoint, ExternalDataLayout)>,
    pub nominal: Option<&'a Checkpoint>,
}

/// Stages the output folder beside `output` and renames it into place: the input folder's
/// entries are copied (links as links) except the ones written from `contents` and the
/// ORT-format copies that would not describe the output's models (`Conversion`); with a
/// converter every model's ORT-format copies are written in the staged folder last, so a failed
/// conversion leaves nothing. `destination` is `output` resolved.
pub(super) fn write_set(
    set: &ArtifactSet,
    contents: &SetContents,
    output: &Path,
    destination: &Path,
    force: bool,
    ort: &OrtFormat,
) -> Result<Written> {
    let (dir, files) = (&set.dir, &set.files);
    let changed: Vec<&str> = contents.models.iter().map(|(l, _)| l.as_str()).collect();
    let conversion = Conversion::decide(set, ort)?;
    let mut not_copied = vec![
        files.training(),
        files.eval(),
        files.checkpoint(),
        files.checkpoint_data(),
        files.nominal_checkpoint(),
    ];
    not_copied.extend(conversion.left_out(files, &changed));
    not_copied.extend(changed.iter().map(|label| label.to_string()));
    let staged = StagedDir::new(output, force)?;
    let write_all = || -> Result<Vec<String>> {
        copy_entries_except(dir, staged.path(), &not_copied)?;
        for (label, model) in contents.models {
            write_model(model, &staged.path().join(label), true)?;
        }
        if let Some((checkpoint, layout)) = contents.checkpoint {
            write_checkpoint_with(checkpoint, staged.path().join(files.checkpoint()), layout)?;
        }
        if let Some(nominal) = contents.nominal {
            let path = staged.path().join(files.nominal_checkpoint());
            write_checkpoint_with(nominal, path, ExternalDataLayout::Keep)?;
        }
        conversion.run(staged.path(), destination, files, output)
    };
    let ort_format = write_all().map_err(|e| staged.blame(e))?;
    staged.commit()?;
    Ok(Written {
        notes: conversion.notes(files, &changed, output),
        ort_format,
    })
}

/// Whether an existing directory may be replaced by the rewrite of `input` under --force: only a
/// directory that holds one artifacts set and nothing else, except entries the rewrite would copy
/// from `input` again unchanged.
pub(super) fn replaceable_artifacts(
    existing: &Path,
    input: &Path,
) -> std::result::Result<(), String> {
    let meta = std::fs::metadata(existing).map_err(|e| format!("it cannot be read ({e})"))?;
    if !meta.is_dir() {
        return Err(format!(
            "it is a {}, not an artifacts folder",
            crate::io::fs::kind_name(meta.file_type())
        ));
    }
    let files = ArtifactFiles::find(existing)
        .map_err(|_| "it does not hold a set of training artifacts".to_string())?;
    let own = [
        files.training(),
        files.eval(),
        files.optimizer(),
        files.checkpoint(),
        files.checkpoint_data(),
        files.nominal_checkpoint(),
    ];
    let entries = std::fs::read_dir(existing).map_err(|e| format!("it cannot be listed ({e})"))?;
    for entry in entries {
        let name = entry
            .map_err(|e| format!("it cannot be listed ({e})"))?
            .file_name();
        if own.iter().any(|f| name == f.as_str())
            || name.to_str().is_some_and(|n| files.is_derived(n))
        {
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

/// The checkpoint with the scheme's state added as frozen parameters, and the record in its
/// property bag (so a checkpoint alone says what it is). State copies share the bytes of their
/// parameter (inline or external), so nothing is copied before writing.
pub(crate) fn with_new_state(
    original: &Checkpoint,
    new: &[NewState],
    record: Option<&RewriteRecord>,
) -> Result<Checkpoint> {
    let mut checkpoint = original.clone();
    let copies: Vec<(&str, &str)> = new
        .iter()
        .filter_map(|s| match &s.value {
            NewStateValue::CopyOf(source) => Some((source.as_str(), s.name.as_str())),
            NewStateValue::ZerosF32(_) => None,
        })
        .collect();
    checkpoint.add_frozen_copies(&copies)?;
    for state in new {
        if let NewStateValue::ZerosF32(dims) = &state.value {
            let count = crate::io::dtype::element_count(dims).unwrap_or(0) as usize;
            let zeros = bytes::Bytes::from(vec![0u8; 4 * count]);
            let tensor = CheckpointTensor::new(
                state.name.clone(),
                dims.clone(),
                data_type::FLOAT,
                TensorData::Inline(zeros),
            );
            checkpoint.add_frozen_parameter(tensor)?;
        }
    }
    if let Some(record) = record {
        let bag = &mut checkpoint.property_bag;
        if let Some(k) = record.settings.get("k").and_then(serde_json::Value::as_i64) {
            bag.ints.push(Property {
                name: META_K.into(),
                value: k,
            });
        }
        if let Some(alpha) = record
            .settings
            .get("alpha")
            .and_then(serde_json::Value::as_f64)
        {
            bag.floats.push(Property {
                name: META_ALPHA.into(),
                value: alpha as f32,
            });
        }
        bag.strings.push(Property {
            name: META_RECORD.into(),
            value: serde_json::to_string(record).unwrap_or_default(),
        });
    }
    Ok(checkpoint)
}

/// The nominal checkpoint with the state added, in its own form (each new entry shaped like an
/// existing nominal parameter: names and types only).
fn nominal_with_new_state(mut nominal: Checkpoint, new: &[NewState]) -> Result<Checkpoint> {
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
    for state in new {
        match &state.value {
            NewStateValue::CopyOf(source) => {
                nominal.add_frozen_copy(source, &state.name)?;
            }
            NewStateValue::ZerosF32(_) => {
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
                tensor.name = state.name.clone();
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
