//! The owned, editable checkpoint model.

use std::fs::File;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::*;
use crate::io::fs::MappedFile;
use crate::{Error, Result};

/// Which optional vectors (or tables) of one table are written even when empty. FlatBuffers tell
/// an absent vector from an empty one; ONNX Runtime treats both alike, but a faithful copy keeps
/// the difference: reading records which were present, writing writes those (and every non-empty
/// one). Bit numbers are local to each table type (see the `*_BIT` constants).
///
/// This is a detail of the serialized form, not of the checkpoint's content, so it never makes two
/// models unequal.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct EmptyPresent(u8);

impl PartialEq for EmptyPresent {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl EmptyPresent {
    pub(super) fn with(mut self, bit: u8, present: bool) -> Self {
        if present {
            self.0 |= 1 << bit;
        }
        self
    }

    pub(super) fn has(self, bit: u8) -> bool {
        self.0 & (1 << bit) != 0
    }
}

/// A whole checkpoint, owned and editable.
///
/// Equality compares the content (including tensor placement and the bytes of the external data
/// file) but not the path it was read from.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub version: i32,
    pub module_state: Option<ModuleState>,
    pub optimizer_groups: Vec<OptimizerGroup>,
    pub property_bag: PropertyBag,
    pub(super) empty_present: EmptyPresent,
    /// The data file `TensorData::External` ranges point into, when read from a checkpoint with one.
    pub(super) external_data: Option<MappedFile>,
    /// The checkpoint file this was read from: inline tensor bytes are slices of its mapping, which
    /// the writer copies from the file itself (see [`Checkpoint::origin`]).
    pub(super) mapped: Option<MappedFile>,
    /// Where this checkpoint was read from, for error messages.
    pub(super) source: Option<PathBuf>,
}

pub(super) const OPTIMIZER_GROUPS_BIT: u8 = 0;
pub(super) const PROPERTY_BAG_BIT: u8 = 1;

impl PartialEq for Checkpoint {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
            && self.module_state == other.module_state
            && self.optimizer_groups == other.optimizer_groups
            && self.property_bag == other.property_bag
            && self.external_data.as_ref().map(MappedFile::bytes)
                == other.external_data.as_ref().map(MappedFile::bytes)
    }
}

/// The model's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleState {
    /// Parameters the optimizer updates, in file order.
    pub requires_grad_params: Vec<CheckpointTensor>,
    /// Parameters fed to the graphs but not trained, in file order.
    pub frozen_params: Vec<CheckpointTensor>,
    /// Parameters have names, types and shapes but no bytes.
    pub is_nominal_state: bool,
    /// Some tensor bytes live in the external data file (see the module documentation).
    pub has_external_data: bool,
    pub(super) empty_present: EmptyPresent,
}

pub(super) const REQUIRES_GRAD_BIT: u8 = 0;
pub(super) const FROZEN_BIT: u8 = 1;

impl ModuleState {
    /// An empty module state that writes both parameter lists even when empty, as ONNX Runtime does.
    pub fn new() -> Self {
        ModuleState {
            requires_grad_params: Vec::new(),
            frozen_params: Vec::new(),
            is_nominal_state: false,
            has_external_data: false,
            empty_present: EmptyPresent::default()
                .with(REQUIRES_GRAD_BIT, true)
                .with(FROZEN_BIT, true),
        }
    }
}

impl Default for ModuleState {
    fn default() -> Self {
        Self::new()
    }
}

/// Optimizer state of one parameter group (ONNX Runtime 1.19.2 uses one group, "group0").
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerGroup {
    pub group_name: String,
    /// Optimizer steps taken so far.
    pub step: i64,
    pub initial_learning_rate: f32,
    pub optimizer_states: Vec<ParameterOptimizerState>,
    pub(super) empty_present: EmptyPresent,
}

pub(super) const OPTIMIZER_STATES_BIT: u8 = 0;

impl OptimizerGroup {
    pub fn new(group_name: impl Into<String>, step: i64, initial_learning_rate: f32) -> Self {
        OptimizerGroup {
            group_name: group_name.into(),
            step,
            initial_learning_rate,
            optimizer_states: Vec::new(),
            empty_present: EmptyPresent::default().with(OPTIMIZER_STATES_BIT, true),
        }
    }
}

/// Optimizer buffers of one parameter (AdamW: momentum0, momentum1).
#[derive(Debug, Clone, PartialEq)]
pub struct ParameterOptimizerState {
    pub param_name: String,
    pub momentums: Vec<CheckpointTensor>,
    pub(super) empty_present: EmptyPresent,
}

pub(super) const MOMENTUMS_BIT: u8 = 0;

impl ParameterOptimizerState {
    pub fn new(param_name: impl Into<String>, momentums: Vec<CheckpointTensor>) -> Self {
        ParameterOptimizerState {
            param_name: param_name.into(),
            momentums,
            empty_present: EmptyPresent::default().with(MOMENTUMS_BIT, true),
        }
    }
}

/// A named user property.
#[derive(Debug, Clone, PartialEq)]
pub struct Property<T> {
    pub name: String,
    pub value: T,
}

/// User properties by value type, each list in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyBag {
    pub ints: Vec<Property<i64>>,
    pub floats: Vec<Property<f32>>,
    pub strings: Vec<Property<String>>,
    pub(super) empty_present: EmptyPresent,
}

pub(super) const INTS_BIT: u8 = 0;
pub(super) const FLOATS_BIT: u8 = 1;
pub(super) const STRINGS_BIT: u8 = 2;

impl PropertyBag {
    /// An empty bag that, once it holds a property, writes all three lists, as ONNX Runtime does.
    pub fn new() -> Self {
        PropertyBag {
            ints: Vec::new(),
            floats: Vec::new(),
            strings: Vec::new(),
            empty_present: EmptyPresent::default()
                .with(INTS_BIT, true)
                .with(FLOATS_BIT, true)
                .with(STRINGS_BIT, true),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ints.is_empty() && self.floats.is_empty() && self.strings.is_empty()
    }
}

impl Default for PropertyBag {
    fn default() -> Self {
        Self::new()
    }
}

/// A named tensor of the checkpoint: a parameter or an optimizer buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointTensor {
    pub name: String,
    pub doc_string: Option<String>,
    pub dims: Vec<i64>,
    /// ONNX TensorProto.DataType number (see [`data_type`]); unknown numbers are kept as they are.
    pub data_type: i32,
    pub data: TensorData,
    /// Elements of a STRING tensor.
    pub string_data: Vec<String>,
    pub(super) empty_present: EmptyPresent,
}

pub(super) const DIMS_BIT: u8 = 0;
pub(super) const STRING_DATA_BIT: u8 = 1;

/// Where a tensor's bytes are.
#[derive(Clone, PartialEq, Eq)]
pub enum TensorData {
    /// No bytes: a nominal checkpoint, or a STRING tensor (its elements are in `string_data`).
    Absent,
    /// Bytes stored in the checkpoint file itself (usually a slice of its memory map).
    Inline(Bytes),
    /// Bytes in the checkpoint's external data file.
    External(ExternalRange),
}

// Tensors can be gigabytes: debug output shows their size, not their bytes.
impl std::fmt::Debug for TensorData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TensorData::Absent => write!(f, "Absent"),
            TensorData::Inline(bytes) => write!(f, "Inline({} bytes)", bytes.len()),
            TensorData::External(range) => write!(f, "External({range:?})"),
        }
    }
}

/// A byte range of the external data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExternalRange {
    pub offset: u64,
    pub length: u64,
}

impl CheckpointTensor {
    /// A tensor as ONNX Runtime would write it: dims always present; `string_data` present for
    /// STRING tensors.
    pub fn new(name: impl Into<String>, dims: Vec<i64>, data_type: i32, data: TensorData) -> Self {
        CheckpointTensor {
            name: name.into(),
            doc_string: None,
            dims,
            data_type,
            data,
            string_data: Vec::new(),
            empty_present: EmptyPresent::default()
                .with(DIMS_BIT, true)
                .with(STRING_DATA_BIT, data_type == data_type::STRING),
        }
    }

    /// The number of data bytes dims and data type call for (None for STRING and unknown types).
    pub fn expected_byte_length(&self) -> Option<u64> {
        tensor_byte_length(&self.dims, self.data_type)
    }
}

impl Checkpoint {
    /// An empty checkpoint of the given format version, with no module state.
    pub fn new(version: i32) -> Self {
        Checkpoint {
            version,
            module_state: None,
            optimizer_groups: Vec::new(),
            property_bag: PropertyBag::new(),
            empty_present: EmptyPresent::default(),
            external_data: None,
            mapped: None,
            source: None,
        }
    }

    /// The path this checkpoint was read from, if any.
    pub fn source_path(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// The external data file the `TensorData::External` ranges refer to, if one was read.
    pub fn external_data_path(&self) -> Option<&Path> {
        self.external_data.as_ref().map(MappedFile::path)
    }

    /// Where `bytes` lie in a file this checkpoint was read from (the checkpoint or its data
    /// file), when they are a slice of its mapping: the writer then copies them from that file.
    pub(super) fn origin(&self, bytes: &[u8]) -> Option<(&File, u64)> {
        [self.mapped.as_ref(), self.external_data.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|file| Some((file.file(), file.offset_of(bytes)?)))
    }

    /// The parameter (trainable or frozen) named `name`.
    pub fn parameter(&self, name: &str) -> Option<&CheckpointTensor> {
        let module = self.module_state.as_ref()?;
        module
            .requires_grad_params
            .iter()
            .chain(&module.frozen_params)
            .find(|tensor| tensor.name == name)
    }

    /// The parameter (trainable or frozen) named `name`, for editing in place.
    pub fn parameter_mut(&mut self, name: &str) -> Option<&mut CheckpointTensor> {
        let module = self.module_state.as_mut()?;
        module
            .requires_grad_params
            .iter_mut()
            .chain(&mut module.frozen_params)
            .find(|tensor| tensor.name == name)
    }

    /// Whether `name` is a trainable parameter (Some(true)), a frozen one (Some(false)), or neither.
    pub fn is_trainable(&self, name: &str) -> Option<bool> {
        let module = self.module_state.as_ref()?;
        if module.requires_grad_params.iter().any(|t| t.name == name) {
            Some(true)
        } else if module.frozen_params.iter().any(|t| t.name == name) {
            Some(false)
        } else {
            None
        }
    }

    /// The bytes of `tensor` wherever they are: inline, or a slice of the mapped external data file.
    /// None for tensors without bytes (nominal, STRING).
    pub fn tensor_bytes(&self, tensor: &CheckpointTensor) -> Result<Option<Bytes>> {
        match &tensor.data {
            TensorData::Absent => Ok(None),
            TensorData::Inline(bytes) => Ok(Some(bytes.clone())),
            TensorData::External(range) => self.external_slice(&tensor.name, *range).map(Some),
        }
    }

    pub(super) fn external_slice(&self, tensor: &str, range: ExternalRange) -> Result<Bytes> {
        let Some(data) = &self.external_data else {
            return Err(Error::ExternalData {
                path: self.error_path(),
                tensor: tensor.to_string(),
                reason: "refers to external data, but the checkpoint has no external data file"
                    .into(),
            });
        };
        slice_range(data.bytes(), range).ok_or_else(|| Error::ExternalData {
            path: data.path().to_path_buf(),
            tensor: tensor.to_string(),
            reason: format!(
                "bytes {}..{} lie beyond the end of the file ({} bytes)",
                range.offset,
                range.offset.saturating_add(range.length),
                data.bytes().len()
            ),
        })
    }

    pub(super) fn error_path(&self) -> PathBuf {
        self.source
            .clone()
            .unwrap_or_else(|| PathBuf::from("<checkpoint>"))
    }

    /// Appends a frozen parameter. Its name must not be used by any parameter yet; its bytes may be
    /// shared with another tensor (a `Bytes` clone, or the same external range).
    pub fn add_frozen_parameter(&mut self, tensor: CheckpointTensor) -> Result<&CheckpointTensor> {
        if let Some(trainable) = self.is_trainable(&tensor.name) {
            return Err(Error::NameClash {
                path: self.error_path(),
                name: tensor.name,
                where_used: if trainable {
                    "a trainable checkpoint parameter".into()
                } else {
                    "a frozen checkpoint parameter".into()
                },
            });
        }
        // A nominal checkpoint holds names and types only: its tensors have no bytes to check.
        if !self
            .module_state
            .as_ref()
            .is_some_and(|m| m.is_nominal_state)
        {
            self.check_tensor_data(&tensor)?;
        }
        let module = self.module_state.get_or_insert_with(ModuleState::new);
        module.frozen_params.push(tensor);
        Ok(module.frozen_params.last().expect("just pushed"))
    }

    /// Appends a frozen parameter `name` holding the same dims, type and bytes as the parameter
    /// `source` (shared, not copied).
    pub fn add_frozen_copy(&mut self, source: &str, name: &str) -> Result<&CheckpointTensor> {
        self.add_frozen_copies(&[(source, name)])?;
        self.parameter(name)
            .ok_or_else(|| Error::InvalidCheckpoint {
                path: self.error_path(),
                reason: format!("no parameter named {name}"),
            })
    }

    /// Appends frozen copies of parameters at once: each `(source, name)` gets the same dims,
    /// type and bytes as the parameter `source` (shared, not copied). Names are checked against an
    /// index of every parameter, so adding n copies costs O(n + parameters).
    pub fn add_frozen_copies(&mut self, copies: &[(&str, &str)]) -> Result<()> {
        let nominal = self
            .module_state
            .as_ref()
            .is_some_and(|m| m.is_nominal_state);
        let mut made = Vec::with_capacity(copies.len());
        {
            let mut by_name: std::collections::HashMap<&str, (&CheckpointTensor, bool)> =
                std::collections::HashMap::new();
            if let Some(module) = &self.module_state {
                for t in &module.requires_grad_params {
                    by_name.entry(t.name.as_str()).or_insert((t, true));
                }
                for t in &module.frozen_params {
                    by_name.entry(t.name.as_str()).or_insert((t, false));
                }
            }
            let mut new_names = std::collections::HashSet::new();
            for &(source, name) in copies {
                if let Some((_, trainable)) = by_name.get(name) {
                    return Err(Error::NameClash {
                        path: self.error_path(),
                        name: name.to_string(),
                        where_used: if *trainable {
                            "a trainable checkpoint parameter".into()
                        } else {
                            "a frozen checkpoint parameter".into()
                        },
                    });
                }
                if !new_names.insert(name) {
                    return Err(Error::NameClash {
                        path: self.error_path(),
                        name: name.to_string(),
                        where_used: "another new frozen parameter".into(),
                    });
                }
                let (original, _) =
                    by_name
                        .get(source)
                        .copied()
                        .ok_or_else(|| Error::InvalidCheckpoint {
                            path: self.error_path(),
                            reason: format!("no parameter named {source}"),
                        })?;
                let mut copy = CheckpointTensor::new(
                    name,
                    original.dims.clone(),
                    original.data_type,
                    original.data.clone(),
                );
                copy.string_data = original.string_data.clone();
                copy.empty_present = original.empty_present;
                if !nominal {
                    self.check_tensor_data(&copy)?;
                }
                made.push(copy);
            }
        }
        let module = self.module_state.get_or_insert_with(ModuleState::new);
        module.frozen_params.extend(made);
        Ok(())
    }

    /// Checks that a tensor's bytes fit its dims and type, and that an external range exists.
    pub(super) fn check_tensor_data(&self, tensor: &CheckpointTensor) -> Result<()> {
        let invalid = |reason: String| Error::InvalidCheckpoint {
            path: self.error_path(),
            reason: format!("tensor {}: {reason}", tensor.name),
        };
        let length = match &tensor.data {
            TensorData::Absent => return Ok(()),
            TensorData::Inline(bytes) => bytes.len() as u64,
            TensorData::External(range) => {
                self.external_slice(&tensor.name, *range)?;
                range.length
            }
        };
        match tensor.expected_byte_length() {
            Some(expected) if expected == length => Ok(()),
            Some(expected) => Err(invalid(format!(
                "{length} data bytes, but dims {:?} of type {} need {expected}",
                tensor.dims, tensor.data_type
            ))),
            None => Err(invalid(format!(
                "cannot size data type {} with dims {:?}",
                tensor.data_type, tensor.dims
            ))),
        }
    }

    /// Removes the parameters (trainable or frozen) named in `names`; returns how many went.
    pub fn remove_parameters(&mut self, names: &std::collections::HashSet<String>) -> usize {
        let Some(module) = self.module_state.as_mut() else {
            return 0;
        };
        let before = module.requires_grad_params.len() + module.frozen_params.len();
        module
            .requires_grad_params
            .retain(|t| !names.contains(&t.name));
        module.frozen_params.retain(|t| !names.contains(&t.name));
        before - module.requires_grad_params.len() - module.frozen_params.len()
    }

    /// Bytes of tensor data stored inline in the FlatBuffer (what counts against its 2 GiB limit).
    pub fn inline_data_bytes(&self) -> u64 {
        self.tensors()
            .map(|t| match &t.data {
                TensorData::Inline(bytes) => bytes.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// The values of a floating-point or integer parameter, as numbers.
    pub fn values_of(&self, name: &str) -> Result<Vec<f64>> {
        let tensor = self
            .parameter(name)
            .ok_or_else(|| Error::InvalidOption(format!("no {name}")))?;
        let bytes = self.tensor_bytes(tensor)?.unwrap_or_default();
        crate::io::values::decode(tensor.data_type, &bytes)
            .ok_or_else(|| Error::InvalidOption(format!("{name} holds no numeric values")))
    }

    /// Whether any tensor's bytes live in the external data file, or the module state says so
    /// (format 2; format 1 has neither).
    pub fn uses_external_data(&self) -> bool {
        self.module_state
            .as_ref()
            .is_some_and(|m| m.has_external_data)
            || self
                .tensors()
                .any(|t| matches!(t.data, TensorData::External(_)))
    }

    /// Every tensor in file order: trainable and frozen parameters, then optimizer momentums.
    pub(super) fn tensors(&self) -> impl Iterator<Item = &CheckpointTensor> {
        self.tensors_with_origin().map(|(tensor, _)| tensor)
    }
}

pub(super) fn slice_range(bytes: &Bytes, range: ExternalRange) -> Option<Bytes> {
    let start = usize::try_from(range.offset).ok()?;
    let end = start.checked_add(usize::try_from(range.length).ok()?)?;
    (end <= bytes.len()).then(|| bytes.slice(start..end))
}

impl Checkpoint {
    /// Every tensor in file order (trainable and frozen parameters, then optimizer momentums), with
    /// whether it belongs to the module state.
    pub(super) fn tensors_with_origin(&self) -> impl Iterator<Item = (&CheckpointTensor, bool)> {
        let params = self.module_state.iter().flat_map(|module| {
            module
                .requires_grad_params
                .iter()
                .chain(&module.frozen_params)
                .map(|tensor| (tensor, true))
        });
        let momentums = self.optimizer_groups.iter().flat_map(|group| {
            group
                .optimizer_states
                .iter()
                .flat_map(|state| state.momentums.iter().map(|tensor| (tensor, false)))
        });
        params.chain(momentums)
    }
}
