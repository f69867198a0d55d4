//! Reading: memory-mapped, verified, converted into the owned model without copying tensor bytes.

use std::path::Path;

use bytes::Bytes;
use flatbuffers::Vector;

use super::model::*;
use super::verify::flatbuffer as verify;
use super::*;
use crate::generated::ort_checkpoint::onnxruntime::fbs;
use crate::io::fs::MappedFile;
use crate::{Error, Result};

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// Reads the checkpoint at `path` (and its external data file, when it has one), memory-mapped.
///
/// The returned model keeps the mappings alive through `Bytes`, and the files open so that writing
/// can copy tensor bytes from them in the kernel; the files must not be modified while it is in
/// use.
pub fn read_checkpoint(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let mapped = MappedFile::open(path)?;
    let mut checkpoint = parse_checkpoint(mapped.bytes(), path)?;
    checkpoint.source = Some(path.to_path_buf());
    checkpoint.mapped = Some(mapped);

    let external: Vec<(String, ExternalRange)> = checkpoint
        .tensors()
        .filter_map(|tensor| match tensor.data {
            TensorData::External(range) => Some((tensor.name.clone(), range)),
            _ => None,
        })
        .collect();
    let Some((first_external, _)) = external.first() else {
        checkpoint.verify_content(path)?;
        return Ok(checkpoint);
    };
    let has_external_data = checkpoint
        .module_state
        .as_ref()
        .is_some_and(|module| module.has_external_data);
    if !has_external_data {
        return Err(invalid(
            path,
            format!(
                "tensor {first_external} has an external data offset, but the module state does not declare external data"
            ),
        ));
    }
    let data_path = external_data_path(path);
    let data = MappedFile::open(&data_path)?;
    for (tensor, range) in external {
        if slice_range(data.bytes(), range).is_none() {
            return Err(Error::ExternalData {
                path: data_path,
                tensor,
                reason: format!(
                    "bytes {}..{} lie beyond the end of the file ({} bytes)",
                    range.offset,
                    range.offset.saturating_add(range.length),
                    data.bytes().len()
                ),
            });
        }
    }
    checkpoint.external_data = Some(data);
    checkpoint.verify_content(path)?;
    Ok(checkpoint)
}

pub(super) fn invalid(path: &Path, reason: impl Into<String>) -> Error {
    Error::InvalidCheckpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Limits for the FlatBuffers verifier: checkpoints of large models hold huge byte vectors and
/// many tables, so only nesting depth stays bounded (the schema nests 7 levels deep).
pub(super) fn verifier_options() -> flatbuffers::VerifierOptions {
    flatbuffers::VerifierOptions {
        max_depth: 64,
        max_tables: usize::MAX,
        max_apparent_size: usize::MAX,
        ignore_missing_null_terminator: false,
    }
}

/// Verifies and converts a checkpoint held in `bytes`; inline tensor bytes become slices of
/// `bytes`. External ranges are checked against dims and type but not against a data file.
pub(super) fn parse_checkpoint(bytes: &Bytes, path: &Path) -> Result<Checkpoint> {
    if bytes.is_empty() {
        return Err(invalid(path, "the file is empty"));
    }
    if bytes.len() < 8 {
        return Err(invalid(
            path,
            format!("the file has only {} bytes", bytes.len()),
        ));
    }
    if &bytes[4..8] != FILE_IDENTIFIER.as_bytes() {
        return Err(invalid(
            path,
            format!(
                "file identifier is {:?}, expected {FILE_IDENTIFIER:?}",
                String::from_utf8_lossy(&bytes[4..8])
            ),
        ));
    }
    verify::checkpoint(bytes, &verifier_options())
        .map_err(|e| invalid(path, format!("FlatBuffers verification failed: {e}")))?;
    // SAFETY: `verify::checkpoint` checked every table, vector and string the accessors below
    // reach, like the generated verifier does (see `verify` for its one relaxation).
    let root = unsafe { fbs::root_as_checkpoint_unchecked(bytes) };
    let reader = Reader {
        mapping: bytes,
        path,
    };

    let module_state = root
        .module_state()
        .map(|module| reader.module_state(module))
        .transpose()?;
    let optimizer_groups = reader.list(root.optimizer_groups(), |group| {
        reader.optimizer_group(group)
    })?;
    let property_bag = match root.property_bag() {
        Some(bag) => reader.property_bag(bag)?,
        None => PropertyBag::new(),
    };
    Ok(Checkpoint {
        version: root.version(),
        module_state,
        optimizer_groups,
        property_bag,
        empty_present: EmptyPresent::default()
            .with(OPTIMIZER_GROUPS_BIT, root.optimizer_groups().is_some())
            .with(PROPERTY_BAG_BIT, root.property_bag().is_some()),
        external_data: None,
        mapped: None,
        source: None,
    })
}

/// Converts verified FlatBuffers tables into the owned model.
pub(super) struct Reader<'a> {
    mapping: &'a Bytes,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn list<T: flatbuffers::Follow<'a>, U>(
        &self,
        vector: Option<Vector<'a, T>>,
        mut convert: impl FnMut(T::Inner) -> Result<U>,
    ) -> Result<Vec<U>> {
        vector
            .map(|vector| vector.iter().map(&mut convert).collect())
            .unwrap_or_else(|| Ok(Vec::new()))
    }

    fn required(&self, value: Option<&str>, what: &str) -> Result<String> {
        value
            .map(str::to_owned)
            .ok_or_else(|| invalid(self.path, format!("{what} is missing")))
    }

    fn module_state(&self, module: fbs::ModuleState<'a>) -> Result<ModuleState> {
        Ok(ModuleState {
            requires_grad_params: self.list(module.requires_grad_params(), |t| self.tensor(t))?,
            frozen_params: self.list(module.frozen_params(), |t| self.tensor(t))?,
            is_nominal_state: module.is_nominal_state(),
            has_external_data: module.has_external_data(),
            empty_present: EmptyPresent::default()
                .with(REQUIRES_GRAD_BIT, module.requires_grad_params().is_some())
                .with(FROZEN_BIT, module.frozen_params().is_some()),
        })
    }

    fn optimizer_group(&self, group: fbs::OptimizerGroup<'a>) -> Result<OptimizerGroup> {
        let group_name = self.required(group.group_name(), "an optimizer group name")?;
        let optimizer_states = self.list(group.optimizer_states(), |state| {
            let param_name = self.required(
                state.param_name(),
                &format!("a parameter name in optimizer group {group_name}"),
            )?;
            Ok(ParameterOptimizerState {
                momentums: self.list(state.momentums(), |t| self.tensor(t))?,
                empty_present: EmptyPresent::default()
                    .with(MOMENTUMS_BIT, state.momentums().is_some()),
                param_name,
            })
        })?;
        Ok(OptimizerGroup {
            step: group.step(),
            initial_learning_rate: group.initial_learning_rate(),
            optimizer_states,
            empty_present: EmptyPresent::default()
                .with(OPTIMIZER_STATES_BIT, group.optimizer_states().is_some()),
            group_name,
        })
    }

    fn property_bag(&self, bag: fbs::PropertyBag<'a>) -> Result<PropertyBag> {
        let ints = self.list(bag.ints(), |p| {
            Ok(Property {
                name: self.required(p.name(), "an int property name")?,
                value: p.value(),
            })
        })?;
        let floats = self.list(bag.floats(), |p| {
            Ok(Property {
                name: self.required(p.name(), "a float property name")?,
                value: p.value(),
            })
        })?;
        let strings = self.list(bag.strings(), |p| {
            let name = self.required(p.name(), "a string property name")?;
            let value =
                self.required(p.value(), &format!("the value of string property {name}"))?;
            Ok(Property { name, value })
        })?;
        Ok(PropertyBag {
            ints,
            floats,
            strings,
            empty_present: EmptyPresent::default()
                .with(INTS_BIT, bag.ints().is_some())
                .with(FLOATS_BIT, bag.floats().is_some())
                .with(STRINGS_BIT, bag.strings().is_some()),
        })
    }

    fn tensor(&self, tensor: fbs::Tensor<'a>) -> Result<CheckpointTensor> {
        let name = self.required(tensor.name(), "a tensor name")?;
        let dims: Vec<i64> = tensor
            .dims()
            .map(|dims| dims.iter().collect())
            .unwrap_or_default();
        let data_type = tensor.data_type().0;
        let offset = tensor.external_data_offset();
        let data = match (tensor.raw_data(), offset) {
            (Some(_), 0..) => {
                return Err(invalid(
                    self.path,
                    format!("tensor {name} has both inline bytes and an external data offset"),
                ));
            }
            (Some(raw), _) => TensorData::Inline(self.mapping.slice_ref(raw)),
            (None, -1) => TensorData::Absent,
            (None, 0..) => {
                let length =
                    tensor_byte_length(&dims, data_type).ok_or_else(|| Error::ExternalData {
                        path: self.path.to_path_buf(),
                        tensor: name.clone(),
                        reason: format!(
                            "cannot size external data of type {data_type} with dims {dims:?}"
                        ),
                    })?;
                TensorData::External(ExternalRange {
                    offset: offset as u64,
                    length,
                })
            }
            (None, _) => {
                return Err(invalid(
                    self.path,
                    format!("tensor {name} has a negative external data offset {offset}"),
                ));
            }
        };
        let string_data: Vec<String> = tensor
            .string_data()
            .map(|strings| strings.iter().map(str::to_owned).collect())
            .unwrap_or_default();
        Ok(CheckpointTensor {
            doc_string: tensor.doc_string().map(str::to_owned),
            empty_present: EmptyPresent::default()
                .with(DIMS_BIT, tensor.dims().is_some())
                .with(STRING_DATA_BIT, tensor.string_data().is_some()),
            name,
            dims,
            data_type,
            data,
            string_data,
        })
    }
}
