//! Writing: placements decided first (inline, or where in the data file), the FlatBuffer laid out
//! in full (pass 1, `layout`), the size limit checked, then both files streamed (pass 2, `stream`)
//! as temporary siblings of their destinations and renamed into place.

mod flatbuffer;
mod layout;
mod stream;

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;

use super::external::DataFileLayout;
use super::model::*;
use super::*;
use crate::io::atomic::StagedFile;
use crate::{Error, Result};

#[cfg(test)]
pub(super) use layout::{Layout, RAW_DATA_ALIGNMENT};

/// Where [`write_checkpoint_with`] puts tensor bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExternalDataLayout {
    /// Every tensor stays where the model has it: inline bytes inline, external ranges in the data
    /// file, which is written when the module state declares external data.
    #[default]
    Keep,
    /// All bytes inline, no data file: a checkpoint that fits in one FlatBuffer (under 2 GiB).
    Inline,
    /// Every module-state tensor's bytes in the data file and optimizer momentums as they are, as
    /// ONNX Runtime's CheckpointState.save_checkpoint writes a checkpoint with external data.
    ModuleStateExternal,
}

/// Writes `checkpoint` to `path`, keeping every tensor where it is ([`ExternalDataLayout::Keep`]).
pub fn write_checkpoint(checkpoint: &Checkpoint, path: impl AsRef<Path>) -> Result<()> {
    write_checkpoint_with(checkpoint, path, ExternalDataLayout::Keep)
}

/// Writes `checkpoint` to `path` (replacing what is there), and its external data to
/// `<path>.data` when the layout calls for a data file. Both are written to temporary files in
/// the destination folder, flushed to disk, and renamed into place when complete (data file
/// first); on error nothing new is left behind. The exact size of the checkpoint is known before
/// anything is created: one over the FlatBuffers limit is refused first.
///
/// Tensors whose bytes are the same memory (a `Bytes` clone, or the same external range) are
/// stored once: one region of the data file (laid out afresh in checkpoint order with ONNX
/// Runtime's alignment), or one byte vector of the FlatBuffer. Bytes that are a slice of a file
/// the checkpoint was read from are copied from that file by the kernel. The model is not
/// changed: with a layout other than `Keep`, the written `has_external_data` follows the layout.
pub fn write_checkpoint_with(
    checkpoint: &Checkpoint,
    path: impl AsRef<Path>,
    layout: ExternalDataLayout,
) -> Result<()> {
    let path = path.as_ref();
    let plan = Plan::new(checkpoint, layout, path)?;
    let file = layout::Layout::new(checkpoint, &plan, MAX_CHECKPOINT_SIZE);
    // ONNX Runtime stores every tensor separately when it saves a checkpoint: refuse what it could
    // load but not save again.
    let size = file.size.max(file.size_unshared);
    if size > MAX_CHECKPOINT_SIZE {
        return Err(Error::CheckpointTooLarge {
            path: path.to_path_buf(),
            size,
        });
    }

    let data_path = external_data_path(path);
    let data_file = match &plan.data_file {
        Some(data) => {
            let mut staged = StagedFile::new(&data_path)?;
            staged.fill(|out| stream::data_file(checkpoint, data, out))?;
            Some(staged)
        }
        None => None,
    };
    let mut staged = StagedFile::new(path)?;
    staged.fill(|out| stream::checkpoint_file(checkpoint, &file, out))?;

    if let Some(data_file) = data_file {
        data_file.commit(true)?;
    }
    if let Err(error) = staged.commit(true) {
        // The new data file is useless without the checkpoint that indexes it.
        if plan.data_file.is_some() {
            let _ = std::fs::remove_file(&data_path);
        }
        return Err(error);
    }
    Ok(())
}

/// Where one tensor's bytes go in the output.
pub(super) enum Placement {
    Absent,
    Inline(Bytes),
    /// At this offset of the data file.
    External(u64),
}

/// The output decided before anything is laid out: each tensor's placement and the data file.
pub(super) struct Plan {
    /// Keyed by the tensor's address in the model being written.
    placements: HashMap<*const CheckpointTensor, Placement>,
    /// The data file, when one is written (ONNX Runtime opens it whenever `has_external_data` is
    /// set, even if no tensor uses it).
    data_file: Option<DataFileLayout>,
    has_external_data: bool,
}

impl Plan {
    pub(super) fn new(
        checkpoint: &Checkpoint,
        layout: ExternalDataLayout,
        path: &Path,
    ) -> Result<Plan> {
        let declared = checkpoint
            .module_state
            .as_ref()
            .is_some_and(|module| module.has_external_data);
        let has_external_data = match layout {
            ExternalDataLayout::Keep => declared,
            ExternalDataLayout::Inline => false,
            ExternalDataLayout::ModuleStateExternal => checkpoint.module_state.is_some(),
        };
        let mut placements = HashMap::new();
        let mut data_file = has_external_data.then(DataFileLayout::default);
        for (tensor, in_module_state) in checkpoint.tensors_with_origin() {
            let to_external = match (&tensor.data, layout) {
                (TensorData::Absent, _) => None,
                (TensorData::Inline(_), ExternalDataLayout::ModuleStateExternal) => {
                    Some(in_module_state)
                }
                (TensorData::Inline(_), _) => Some(false),
                (TensorData::External(_), ExternalDataLayout::Inline) => Some(false),
                (TensorData::External(_), _) => Some(true),
            };
            let placement = match to_external {
                None => Placement::Absent,
                Some(to_external) => {
                    let bytes = checkpoint.tensor_bytes(tensor)?.unwrap_or_default();
                    // The data file does not store lengths: a reader sizes each range from dims
                    // and type, so only bytes that match them can move there (not, e.g., the
                    // empty bytes of a nominal checkpoint's parameters).
                    let moved = matches!(tensor.data, TensorData::Inline(_));
                    if to_external
                        && moved
                        && tensor.expected_byte_length() != Some(bytes.len() as u64)
                    {
                        return Err(Error::ExternalData {
                            path: path.to_path_buf(),
                            tensor: tensor.name.clone(),
                            reason: format!(
                                "{} inline bytes do not match dims {:?} of type {}, so they cannot move to the external data file",
                                bytes.len(),
                                tensor.dims,
                                crate::io::dtype::name(tensor.data_type)
                            ),
                        });
                    }
                    match (to_external, &mut data_file) {
                        (false, _) => Placement::Inline(bytes),
                        (true, Some(data)) => {
                            Placement::External(data.place(bytes, tensor.data_type))
                        }
                        (true, None) => {
                            return Err(Error::ExternalData {
                                path: path.to_path_buf(),
                                tensor: tensor.name.clone(),
                                reason: "is external, but the module state does not declare \
                                         external data"
                                    .into(),
                            });
                        }
                    }
                }
            };
            placements.insert(tensor as *const CheckpointTensor, placement);
        }
        Ok(Plan {
            placements,
            data_file,
            has_external_data,
        })
    }

    /// Where `tensor` (of the checkpoint this plan is for) goes.
    pub(super) fn placement(&self, tensor: &CheckpointTensor) -> Option<&Placement> {
        self.placements.get(&(tensor as *const CheckpointTensor))
    }

    /// The `ModuleState.has_external_data` to write.
    pub(super) fn has_external_data(&self) -> bool {
        self.has_external_data
    }
}
