//! Writing: placements decided first, external data streamed, the FlatBuffer built and written.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::Path;

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, WIPOffset};

use super::model::*;
use super::*;
use crate::generated::ort_checkpoint::onnxruntime::fbs;
use crate::{Error, Result};

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

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

/// Writes `checkpoint` to `path`, and its external data to `<path>.data` when the layout calls for
/// a data file. Both are written to temporary files in the destination folder and renamed into
/// place when complete (data file first); on error nothing new is left behind.
///
/// The data file is laid out afresh in checkpoint order with ONNX Runtime's alignment; tensors
/// whose bytes are the same memory (a `Bytes` clone, or the same external range) are stored once.
/// The model is not changed: with a layout other than `Keep`, the written `has_external_data`
/// follows the layout.
pub fn write_checkpoint_with(
    checkpoint: &Checkpoint,
    path: impl AsRef<Path>,
    layout: ExternalDataLayout,
) -> Result<()> {
    let path = path.as_ref();
    let plan = Plan::new(checkpoint, layout, path)?;
    if plan.estimated_size > MAX_CHECKPOINT_SIZE {
        return Err(Error::CheckpointTooLarge {
            path: path.to_path_buf(),
            size: plan.estimated_size,
        });
    }

    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let data_path = external_data_path(path);
    let (data_file, external_offsets) = if plan.external_data_file {
        let (file, offsets) = write_external_data(&plan, folder, &data_path)?;
        (Some(file), offsets)
    } else {
        (None, Vec::new())
    };

    let builder = build_flatbuffer(checkpoint, &plan, &external_offsets);
    let buffer = builder.finished_data();
    if buffer.len() as u64 > MAX_CHECKPOINT_SIZE {
        return Err(Error::CheckpointTooLarge {
            path: path.to_path_buf(),
            size: buffer.len() as u64,
        });
    }
    let mut checkpoint_file = new_temp_file(folder, path)?;
    checkpoint_file
        .write_all(buffer)
        .and_then(|()| checkpoint_file.as_file().sync_all())
        .map_err(|e| Error::io("write checkpoint", path, e))?;

    if let Some(data_file) = data_file {
        persist(data_file, &data_path)?;
    }
    if let Err(error) = persist(checkpoint_file, path) {
        // The new data file is useless without the checkpoint that indexes it.
        if plan.external_data_file {
            let _ = std::fs::remove_file(&data_path);
        }
        return Err(error);
    }
    Ok(())
}

/// Where one tensor's bytes go in the output.
enum Placement {
    Absent,
    Inline(Bytes),
    /// Index into `Plan::external` (tensors sharing memory share an entry).
    External(usize),
}

/// The output decided before anything is written: each tensor's placement, the external data in
/// file order, and an upper bound of the FlatBuffer's size.
pub(super) struct Plan {
    /// Keyed by the tensor's address in the model being written.
    placements: HashMap<*const CheckpointTensor, Placement>,
    /// Distinct external byte runs in data file order, with their alignment.
    external: Vec<(Bytes, u64)>,
    external_data_file: bool,
    has_external_data: bool,
    pub(super) estimated_size: u64,
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
        let mut plan = Plan {
            placements: HashMap::new(),
            external: Vec::new(),
            // ONNX Runtime opens the data file whenever the flag is set, even if no tensor uses it.
            external_data_file: has_external_data,
            has_external_data,
            estimated_size: estimated_flatbuffer_size(checkpoint),
        };
        // Same memory, same alignment: one copy in the data file.
        let mut shared: HashMap<(usize, usize, u64), usize> = HashMap::new();
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
                    if to_external && !has_external_data {
                        return Err(Error::ExternalData {
                            path: path.to_path_buf(),
                            tensor: tensor.name.clone(),
                            reason:
                                "is external, but the module state does not declare external data"
                                    .into(),
                        });
                    }
                    let bytes = match checkpoint.tensor_bytes(tensor)? {
                        Some(bytes) => bytes,
                        None => Bytes::new(),
                    };
                    if to_external {
                        let alignment = external_alignment(tensor.data_type);
                        let key = (bytes.as_ptr() as usize, bytes.len(), alignment);
                        let next = plan.external.len();
                        let index = *shared.entry(key).or_insert(next);
                        if index == next {
                            plan.external.push((bytes, alignment));
                        }
                        Placement::External(index)
                    } else {
                        plan.estimated_size += bytes.len() as u64;
                        Placement::Inline(bytes)
                    }
                }
            };
            plan.placements
                .insert(tensor as *const CheckpointTensor, placement);
        }
        Ok(plan)
    }
}

/// An upper bound of the FlatBuffer's size without inline tensor bytes (the plan adds those):
/// strings plus generous per-table, per-vector and per-string overheads (headers, vtables,
/// alignment padding).
pub(super) fn estimated_flatbuffer_size(checkpoint: &Checkpoint) -> u64 {
    const TABLE: u64 = 128;
    const VECTOR: u64 = 16;
    const STRING: u64 = 12;
    let text = |s: &str| s.len() as u64 + STRING;
    let mut size = 64 + TABLE + 2 * VECTOR;
    let mut tensor_count = 0u64;
    for tensor in checkpoint.tensors() {
        tensor_count += 1;
        size += TABLE + 4 + text(&tensor.name);
        size += tensor.doc_string.as_deref().map_or(0, text);
        size += 2 * VECTOR + 8 * tensor.dims.len() as u64;
        size += VECTOR + tensor.string_data.iter().map(|s| 4 + text(s)).sum::<u64>();
    }
    size += 4 * tensor_count + 2 * VECTOR;
    for group in &checkpoint.optimizer_groups {
        size += TABLE + 4 + text(&group.group_name) + VECTOR;
        for state in &group.optimizer_states {
            size += TABLE + 4 + text(&state.param_name) + VECTOR;
        }
    }
    let bag = &checkpoint.property_bag;
    size += TABLE + 3 * VECTOR;
    size += bag
        .ints
        .iter()
        .map(|p| TABLE + 4 + text(&p.name))
        .sum::<u64>();
    size += bag
        .floats
        .iter()
        .map(|p| TABLE + 4 + text(&p.name))
        .sum::<u64>();
    size += bag
        .strings
        .iter()
        .map(|p| TABLE + 4 + text(&p.name) + text(&p.value))
        .sum::<u64>();
    size
}

/// Alignment ONNX Runtime 1.19.2 gives a tensor of this type in the external data file.
pub(super) fn external_alignment(data_type: i32) -> u64 {
    match data_type {
        data_type::INT64 | data_type::DOUBLE => 8,
        _ => 4,
    }
}

/// Streams the plan's external byte runs into a temporary file beside `data_path`.
/// Returns the file and the offset of each run.
pub(super) fn write_external_data(
    plan: &Plan,
    folder: &Path,
    data_path: &Path,
) -> Result<(tempfile::NamedTempFile, Vec<u64>)> {
    let write_error = |e| Error::io("write external data of checkpoint", data_path, e);
    let file = new_temp_file(folder, data_path)?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    let mut offsets = Vec::with_capacity(plan.external.len());
    let mut position = 0u64;
    for (bytes, alignment) in &plan.external {
        let padding = position.next_multiple_of(*alignment) - position;
        writer
            .write_all(&[0u8; 8][..padding as usize])
            .and_then(|()| writer.write_all(bytes))
            .map_err(write_error)?;
        position += padding;
        offsets.push(position);
        position += bytes.len() as u64;
    }
    let file = writer
        .into_inner()
        .map_err(|e| write_error(e.into_error()))?;
    file.as_file().sync_all().map_err(write_error)?;
    Ok((file, offsets))
}

pub(super) fn new_temp_file(folder: &Path, destination: &Path) -> Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".onnx-lookahead-").suffix(".tmp");
    // Temporary files are private (0600); give the result the permissions of the file it replaces,
    // or the usual 0644 of a new file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let permissions = std::fs::metadata(destination)
            .map(|metadata| metadata.permissions())
            .unwrap_or_else(|_| std::fs::Permissions::from_mode(0o644));
        builder.permissions(permissions);
    }
    builder
        .tempfile_in(folder)
        .map_err(|e| Error::io("create temporary file for", destination, e))
}

pub(super) fn persist(file: tempfile::NamedTempFile, destination: &Path) -> Result<()> {
    file.persist(destination)
        .map(drop)
        .map_err(|e| Error::io("rename temporary file to", destination, e.error))
}

/// Serializes the model with the plan's placements.
pub(super) fn build_flatbuffer(
    checkpoint: &Checkpoint,
    plan: &Plan,
    external_offsets: &[u64],
) -> FlatBufferBuilder<'static> {
    // The estimate is an upper bound, so the builder need not grow (and copy) its buffer.
    let mut builder = FlatBufferBuilder::with_capacity(plan.estimated_size as usize);
    let mut writer = Writer {
        builder: &mut builder,
        plan,
        external_offsets,
    };
    let root = writer.checkpoint(checkpoint);
    fbs::finish_checkpoint_buffer(&mut builder, root);
    builder
}

type TableVector<'b, T> = WIPOffset<Vector<'b, ForwardsUOffset<T>>>;

pub(super) struct Writer<'w, 'b> {
    builder: &'w mut FlatBufferBuilder<'b>,
    plan: &'w Plan,
    external_offsets: &'w [u64],
}

impl<'b> Writer<'_, 'b> {
    /// A vector of tables, or nothing when it is empty and was not present empty in the source.
    fn tables<T, U>(
        &mut self,
        items: &[T],
        write_empty: bool,
        mut write: impl FnMut(&mut Self, &T) -> WIPOffset<U>,
    ) -> Option<TableVector<'b, U>> {
        if items.is_empty() && !write_empty {
            return None;
        }
        let offsets: Vec<WIPOffset<U>> = items.iter().map(|item| write(self, item)).collect();
        Some(self.builder.create_vector(&offsets))
    }

    fn checkpoint(&mut self, checkpoint: &Checkpoint) -> WIPOffset<fbs::Checkpoint<'b>> {
        let module_state = checkpoint
            .module_state
            .as_ref()
            .map(|module| self.module_state(module));
        let optimizer_groups = self.tables(
            &checkpoint.optimizer_groups,
            checkpoint.empty_present.has(OPTIMIZER_GROUPS_BIT),
            |w, group| w.optimizer_group(group),
        );
        let bag = &checkpoint.property_bag;
        let property_bag = (!bag.is_empty() || checkpoint.empty_present.has(PROPERTY_BAG_BIT))
            .then(|| self.property_bag(bag));
        fbs::Checkpoint::create(
            self.builder,
            &fbs::CheckpointArgs {
                version: checkpoint.version,
                module_state,
                optimizer_groups,
                property_bag,
            },
        )
    }

    fn module_state(&mut self, module: &ModuleState) -> WIPOffset<fbs::ModuleState<'b>> {
        let requires_grad_params = self.tables(
            &module.requires_grad_params,
            module.empty_present.has(REQUIRES_GRAD_BIT),
            |w, t| w.tensor(t),
        );
        let frozen_params = self.tables(
            &module.frozen_params,
            module.empty_present.has(FROZEN_BIT),
            |w, t| w.tensor(t),
        );
        fbs::ModuleState::create(
            self.builder,
            &fbs::ModuleStateArgs {
                requires_grad_params,
                frozen_params,
                is_nominal_state: module.is_nominal_state,
                has_external_data: self.plan.has_external_data,
            },
        )
    }

    fn optimizer_group(&mut self, group: &OptimizerGroup) -> WIPOffset<fbs::OptimizerGroup<'b>> {
        let optimizer_states = self.tables(
            &group.optimizer_states,
            group.empty_present.has(OPTIMIZER_STATES_BIT),
            |w, state| {
                let momentums = w.tables(
                    &state.momentums,
                    state.empty_present.has(MOMENTUMS_BIT),
                    |w, t| w.tensor(t),
                );
                let param_name = w.builder.create_string(&state.param_name);
                fbs::ParameterOptimizerState::create(
                    w.builder,
                    &fbs::ParameterOptimizerStateArgs {
                        param_name: Some(param_name),
                        momentums,
                    },
                )
            },
        );
        let group_name = self.builder.create_string(&group.group_name);
        fbs::OptimizerGroup::create(
            self.builder,
            &fbs::OptimizerGroupArgs {
                group_name: Some(group_name),
                step: group.step,
                initial_learning_rate: group.initial_learning_rate,
                optimizer_states,
            },
        )
    }

    fn property_bag(&mut self, bag: &PropertyBag) -> WIPOffset<fbs::PropertyBag<'b>> {
        let ints = self.tables(&bag.ints, bag.empty_present.has(INTS_BIT), |w, p| {
            let name = w.builder.create_string(&p.name);
            fbs::IntProperty::create(
                w.builder,
                &fbs::IntPropertyArgs {
                    name: Some(name),
                    value: p.value,
                },
            )
        });
        let floats = self.tables(&bag.floats, bag.empty_present.has(FLOATS_BIT), |w, p| {
            let name = w.builder.create_string(&p.name);
            fbs::FloatProperty::create(
                w.builder,
                &fbs::FloatPropertyArgs {
                    name: Some(name),
                    value: p.value,
                },
            )
        });
        let strings = self.tables(&bag.strings, bag.empty_present.has(STRINGS_BIT), |w, p| {
            let name = w.builder.create_string(&p.name);
            let value = w.builder.create_string(&p.value);
            fbs::StringProperty::create(
                w.builder,
                &fbs::StringPropertyArgs {
                    name: Some(name),
                    value: Some(value),
                },
            )
        });
        fbs::PropertyBag::create(
            self.builder,
            &fbs::PropertyBagArgs {
                ints,
                floats,
                strings,
            },
        )
    }

    fn tensor(&mut self, tensor: &CheckpointTensor) -> WIPOffset<fbs::Tensor<'b>> {
        let name = self.builder.create_string(&tensor.name);
        let doc_string = tensor
            .doc_string
            .as_deref()
            .map(|doc| self.builder.create_string(doc));
        let dims = (!tensor.dims.is_empty() || tensor.empty_present.has(DIMS_BIT))
            .then(|| self.builder.create_vector(&tensor.dims));
        // Plan::new placed every tensor of the model being written.
        let placement = self
            .plan
            .placements
            .get(&(tensor as *const CheckpointTensor));
        let (raw_data, external_data_offset) = match placement {
            Some(Placement::Inline(bytes)) => {
                (Some(self.builder.create_vector_direct(&bytes[..])), -1)
            }
            Some(Placement::External(index)) => (None, self.external_offsets[*index] as i64),
            Some(Placement::Absent) | None => (None, -1),
        };
        let string_data = (!tensor.string_data.is_empty()
            || tensor.empty_present.has(STRING_DATA_BIT))
        .then(|| {
            let strings: Vec<&str> = tensor.string_data.iter().map(String::as_str).collect();
            self.builder.create_vector_of_strings(&strings)
        });
        fbs::Tensor::create(
            self.builder,
            &fbs::TensorArgs {
                name: Some(name),
                doc_string,
                dims,
                data_type: fbs::TensorDataType(tensor.data_type),
                raw_data,
                string_data,
                external_data_offset,
            },
        )
    }
}
