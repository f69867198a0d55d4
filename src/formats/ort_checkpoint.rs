//! A lone ONNX Runtime training checkpoint (the file people copy around): inspectable, so that a
//! checkpoint alone says what it holds and, when it comes from rewritten artifacts, what the
//! rewrite recorded in its property bag and where in the cycle it was saved.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::formats::{Adapter, Analysis, Format, Parameter};
use crate::graph::names::NameGenerator;
use crate::io::checkpoint::{Checkpoint, FILE_IDENTIFIER, read_checkpoint};
use crate::io::model::ModelFile;
use crate::record::{META_RECORD, Recorded, RewriteRecord};

/// Whether the file at `path` is a FlatBuffer with the checkpoint identifier (bytes 4..8).
pub fn is_checkpoint(path: &Path) -> bool {
    use std::io::Read;
    let Ok((mut file, length)) = crate::io::fs::open_regular(path) else {
        return false;
    };
    let mut head = [0u8; 8];
    length >= 8 && file.read_exact(&mut head).is_ok() && &head[4..8] == FILE_IDENTIFIER.as_bytes()
}

pub struct OrtCheckpoint {
    path: PathBuf,
    checkpoint: Checkpoint,
    analysis: Analysis,
}

impl OrtCheckpoint {
    pub fn open(path: &Path) -> Result<Self> {
        let checkpoint = read_checkpoint(path)?;
        let recorded = recorded(&checkpoint);
        let state: std::collections::HashSet<String> = match &recorded {
            Recorded::Record(r) => r.state_names().into_iter().collect(),
            _ => Default::default(),
        };
        let module = checkpoint.module_state.as_ref();
        let trainable = module
            .into_iter()
            .flat_map(|m| m.requires_grad_params.iter());
        let frozen = module.into_iter().flat_map(|m| m.frozen_params.iter());
        let parameters = trainable
            .map(|t| (t, true))
            .chain(frozen.map(|t| (t, false)))
            .filter(|(t, _)| !state.contains(&t.name))
            .map(|(t, trainable)| Parameter {
                name: t.name.clone(),
                trainable,
                data_type: t.data_type,
                dims: t.dims.clone(),
            })
            .collect();
        let mut refusals = vec![Error::Unsupported {
            path: path.to_path_buf(),
            reason: "a checkpoint alone cannot be rewritten; pass its artifacts directory".into(),
        }];
        if let Recorded::Record(record) = &recorded
            && let Err(e) = counter_position(&checkpoint, record, path)
        {
            refusals.push(e);
        }
        let analysis = Analysis {
            format: Format::OrtCheckpoint,
            optimizer: None,
            optimizer_nodes: Vec::new(),
            parameters,
            recorded,
            refusals,
        };
        Ok(OrtCheckpoint {
            path: path.to_path_buf(),
            checkpoint,
            analysis,
        })
    }
}

/// Where in its schedule `checkpoint` was saved, checked: its step counter must hold a value
/// training writes (NaN, -5, 2.5 or 1e30 would otherwise pass for some position).
pub(crate) fn counter_position(
    checkpoint: &Checkpoint,
    record: &RewriteRecord,
    path: &Path,
) -> Result<crate::scheme::Position> {
    let not_ours = |reason: String| Error::NotRewritten {
        path: path.to_path_buf(),
        reason,
    };
    let counter = record
        .counters
        .first()
        .ok_or_else(|| not_ours("the record names no step counter".into()))?;
    let values = checkpoint.values_of(counter).map_err(|_| {
        not_ours(format!(
            "it holds no {counter}: not a checkpoint of these rewritten artifacts"
        ))
    })?;
    let invalid = |reason: String| Error::InvalidCheckpoint {
        path: path.to_path_buf(),
        reason: format!("the step counter {counter} {reason}"),
    };
    // Shown as the counter's own type holds it (1e30, not the f64 nearest the f32).
    let float = checkpoint
        .parameter(counter)
        .is_some_and(|t| t.data_type == crate::io::dtype::code::FLOAT);
    match values.as_slice() {
        [value] => record.position(*value).map_err(|expected| {
            let shown = if float {
                (*value as f32).to_string()
            } else {
                value.to_string()
            };
            invalid(format!(
                "holds {shown}, which training never writes ({expected})"
            ))
        }),
        other => Err(invalid(format!("holds {} values, not one", other.len()))),
    }
}

/// The record a rewrite left in a checkpoint's property bag.
pub fn recorded(checkpoint: &Checkpoint) -> Recorded {
    checkpoint
        .property_bag
        .strings
        .iter()
        .find(|p| p.name == META_RECORD)
        .and_then(|p| serde_json::from_str::<RewriteRecord>(&p.value).ok())
        .map_or(Recorded::None, |r| Recorded::Record(Box::new(r)))
}

impl Adapter for OrtCheckpoint {
    fn refusal(&self) -> Error {
        Error::Unsupported {
            path: self.path.clone(),
            reason: "a checkpoint alone is neither rewritten nor finalized; pass its artifacts \
                     directory (finalize --checkpoint takes a checkpoint saved during training)"
                .into(),
        }
    }

    fn format(&self) -> Format {
        Format::OrtCheckpoint
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn models(&self) -> Vec<(String, &ModelFile)> {
        Vec::new()
    }

    fn checkpoint(&self) -> Option<&Checkpoint> {
        Some(&self.checkpoint)
    }

    fn checkpoint_name(&self) -> Option<String> {
        self.path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
    }

    fn analysis(&self) -> &Analysis {
        &self.analysis
    }

    fn analysis_mut(&mut self) -> &mut Analysis {
        &mut self.analysis
    }

    fn reserved_names(&self) -> NameGenerator {
        NameGenerator::empty()
    }
}
