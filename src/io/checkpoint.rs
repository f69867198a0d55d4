//! ONNX Runtime's on-device training checkpoint: read it into an owned, editable model and write it
//! back, without copying tensor bytes on the way in.
//!
//! The file is a FlatBuffer with identifier "ODTC" (schema: proto/ort_training_checkpoint.fbs).
//! Reading memory-maps the file; inline tensor bytes stay slices of that mapping (`bytes::Bytes`).
//!
//! External data, as ONNX Runtime 1.19.2 writes and reads it. Established by experiment with the
//! onnxruntime-training-cpu 1.19.2 wheel (checkpoints of 1.8-1.9 GB written through
//! onnxblock.save_checkpoint and CheckpointState.save_checkpoint, then inspected). Sources that
//! agree: the review of microsoft/onnxruntime PR #20077 "Support >2GB of Tensor data in training
//! checkpoint" (adds ModuleState.has_external_data and an external-data size threshold to
//! orttraining/orttraining/training_api/checkpoint.cc), onnxruntime/core/graph/
//! graph_flatbuffers_utils.h (an external writer returns each tensor's offset; the minimum size
//! for external data of initializers is 64 bytes), and the messages in the 1.19.2 binary
//! ("Failed to create checkpoint's external data file: `<checkpoint>.data`").
//! - One data file per checkpoint, named by appending ".data" to the checkpoint path
//!   (`ckpt` -> `ckpt.data`); its name is not stored. `ModuleState.has_external_data` says it is
//!   there.
//! - `Tensor.external_data_offset` is the byte offset of the tensor's bytes in that file; -1 (the
//!   default) means the bytes are inline (`raw_data`, or `string_data` for STRING tensors). The
//!   length is not stored: it follows from dims and data type.
//! - Tensors are appended in checkpoint order from offset 0, each padded with zero bytes to start
//!   at a multiple of 8 for INT64 and DOUBLE and of 4 for every other type (UINT64 included); no
//!   trailing padding.
//! - When: checkpoints written from ONNX initializers (generate_artifacts, onnxblock
//!   save_checkpoint) use a data file once the initializers' serialized size, rounded up to whole
//!   MiB, reaches 1800 MiB; tensors under 64 bytes and STRING tensors then stay inline.
//!   CheckpointState.save_checkpoint uses a data file when the loaded checkpoint had one (not by
//!   size: an 1850 MiB inline checkpoint was saved inline again), and then puts EVERY parameter in
//!   it, whatever its size, and keeps the optimizer momentums inline.
//! - Only parameters were seen in data files; optimizer states and properties were always inline.
//!   Tensors sharing one region of the data file (written here for shared bytes) load correctly.
//!
//! This module keeps each tensor where it is (inline or external) unless told otherwise
//! ([`ExternalDataLayout`]) and lays the data file out by the same order and alignment rules: a
//! checkpoint written by ONNX Runtime round-trips to the same data file bytes.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, WIPOffset};

use crate::generated::ort_checkpoint::onnxruntime::fbs;
use crate::{Error, Result};

/// The FlatBuffers file identifier of a training checkpoint (bytes 4..8 of the file).
pub const FILE_IDENTIFIER: &str = "ODTC";

/// The checkpoint format version ONNX Runtime 1.19.2 writes (and the only one it reads).
pub const CHECKPOINT_VERSION: i32 = 2;

/// Inline tensor bytes from which ONNX Runtime writes parameters to an external data file
/// instead (1800 MiB, see the module comment); the rewrite follows the same rule when the slow
/// weights push a checkpoint over it.
pub const EXTERNAL_DATA_THRESHOLD: u64 = 1800 * 1024 * 1024;

/// Appended to the checkpoint path to name its external data file.
pub const EXTERNAL_DATA_SUFFIX: &str = ".data";

/// FlatBuffers use 32-bit signed offsets: no checkpoint file may exceed this many bytes.
pub const MAX_CHECKPOINT_SIZE: u64 = i32::MAX as u64;

/// ONNX element type numbers (TensorProto.DataType) this module needs by name.
pub mod data_type {
    pub const UNDEFINED: i32 = 0;
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT8: i32 = 3;
    pub const UINT16: i32 = 4;
    pub const INT16: i32 = 5;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const STRING: i32 = 8;
    pub const BOOL: i32 = 9;
    pub const FLOAT16: i32 = 10;
    pub const DOUBLE: i32 = 11;
    pub const UINT32: i32 = 12;
    pub const UINT64: i32 = 13;
    pub const COMPLEX64: i32 = 14;
    pub const COMPLEX128: i32 = 15;
    pub const BFLOAT16: i32 = 16;
}

/// Storage bits per element of an ONNX data type, for types stored as fixed-width elements packed
/// without gaps (sub-byte types pack two or four elements per byte). None for STRING, UNDEFINED and
/// types this module does not know.
pub fn element_bits(data_type: i32) -> Option<u64> {
    match data_type {
        // UINT8, INT8, BOOL, FLOAT8E4M3FN, FLOAT8E4M3FNUZ, FLOAT8E5M2, FLOAT8E5M2FNUZ, FLOAT8E8M0
        2 | 3 | 9 | 17..=20 | 24 => Some(8),
        // UINT16, INT16, FLOAT16, BFLOAT16
        4 | 5 | 10 | 16 => Some(16),
        // FLOAT, INT32, UINT32
        1 | 6 | 12 => Some(32),
        // INT64, DOUBLE, UINT64, COMPLEX64
        7 | 11 | 13 | 14 => Some(64),
        // COMPLEX128
        15 => Some(128),
        // UINT4, INT4, FLOAT4E2M1
        21..=23 => Some(4),
        // UINT2, INT2
        25 | 26 => Some(2),
        _ => None,
    }
}

/// Bytes per element of an ONNX data type; None for sub-byte types, STRING and unknown types.
pub fn element_size(data_type: i32) -> Option<usize> {
    element_bits(data_type)
        .filter(|bits| bits % 8 == 0)
        .map(|bits| (bits / 8) as usize)
}

/// Bytes a tensor of this shape and type occupies (sub-byte types rounded up to whole bytes).
/// None for negative dims, overflow, STRING and unknown types.
pub fn tensor_byte_length(dims: &[i64], data_type: i32) -> Option<u64> {
    let bits = element_bits(data_type)?;
    let mut elements: u64 = 1;
    for &dim in dims {
        elements = elements.checked_mul(u64::try_from(dim).ok()?)?;
    }
    Some(elements.checked_mul(bits)?.div_ceil(8))
}

/// The external data file of the checkpoint at `checkpoint_path` (`<checkpoint_path>.data`).
pub fn external_data_path(checkpoint_path: &Path) -> PathBuf {
    let mut name = checkpoint_path.as_os_str().to_owned();
    name.push(EXTERNAL_DATA_SUFFIX);
    PathBuf::from(name)
}

/// Which optional vectors (or tables) of one table are written even when empty. FlatBuffers tell
/// an absent vector from an empty one; ONNX Runtime treats both alike, but a faithful copy keeps
/// the difference: reading records which were present, writing writes those (and every non-empty
/// one). Bit numbers are local to each table type (see the `*_BIT` constants).
///
/// This is a detail of the serialized form, not of the checkpoint's content, so it never makes two
/// models unequal.
#[derive(Debug, Clone, Copy, Default)]
struct EmptyPresent(u8);

impl PartialEq for EmptyPresent {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl EmptyPresent {
    fn with(mut self, bit: u8, present: bool) -> Self {
        if present {
            self.0 |= 1 << bit;
        }
        self
    }

    fn has(self, bit: u8) -> bool {
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
    empty_present: EmptyPresent,
    /// The data file `TensorData::External` ranges point into, when read from a checkpoint with one.
    external_data: Option<ExternalDataFile>,
    /// Where this checkpoint was read from, for error messages.
    source: Option<PathBuf>,
}

const OPTIMIZER_GROUPS_BIT: u8 = 0;
const PROPERTY_BAG_BIT: u8 = 1;

impl PartialEq for Checkpoint {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
            && self.module_state == other.module_state
            && self.optimizer_groups == other.optimizer_groups
            && self.property_bag == other.property_bag
            && self.external_data.as_ref().map(|data| &data.bytes)
                == other.external_data.as_ref().map(|data| &data.bytes)
    }
}

/// A memory-mapped external data file.
#[derive(Clone)]
struct ExternalDataFile {
    path: PathBuf,
    bytes: Bytes,
}

impl std::fmt::Debug for ExternalDataFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} bytes)", self.path.display(), self.bytes.len())
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
    empty_present: EmptyPresent,
}

const REQUIRES_GRAD_BIT: u8 = 0;
const FROZEN_BIT: u8 = 1;

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
    empty_present: EmptyPresent,
}

const OPTIMIZER_STATES_BIT: u8 = 0;

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
    empty_present: EmptyPresent,
}

const MOMENTUMS_BIT: u8 = 0;

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
    empty_present: EmptyPresent,
}

const INTS_BIT: u8 = 0;
const FLOATS_BIT: u8 = 1;
const STRINGS_BIT: u8 = 2;

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
    empty_present: EmptyPresent,
}

const DIMS_BIT: u8 = 0;
const STRING_DATA_BIT: u8 = 1;

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
            source: None,
        }
    }

    /// The path this checkpoint was read from, if any.
    pub fn source_path(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// The external data file the `TensorData::External` ranges refer to, if one was read.
    pub fn external_data_path(&self) -> Option<&Path> {
        self.external_data.as_ref().map(|data| data.path.as_path())
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

    fn external_slice(&self, tensor: &str, range: ExternalRange) -> Result<Bytes> {
        let Some(data) = &self.external_data else {
            return Err(Error::ExternalData {
                path: self.error_path(),
                tensor: tensor.to_string(),
                reason: "refers to external data, but the checkpoint has no external data file"
                    .into(),
            });
        };
        slice_range(&data.bytes, range).ok_or_else(|| Error::ExternalData {
            path: data.path.clone(),
            tensor: tensor.to_string(),
            reason: format!(
                "bytes {}..{} lie beyond the end of the file ({} bytes)",
                range.offset,
                range.offset.saturating_add(range.length),
                data.bytes.len()
            ),
        })
    }

    fn error_path(&self) -> PathBuf {
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
        self.check_tensor_data(&tensor)?;
        let module = self.module_state.get_or_insert_with(ModuleState::new);
        module.frozen_params.push(tensor);
        Ok(module.frozen_params.last().expect("just pushed"))
    }

    /// Appends a frozen parameter `name` holding the same dims, type and bytes as the parameter
    /// `source` (shared, not copied).
    pub fn add_frozen_copy(&mut self, source: &str, name: &str) -> Result<&CheckpointTensor> {
        let original = self
            .parameter(source)
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
        self.add_frozen_parameter(copy)
    }

    /// Checks that a tensor's bytes fit its dims and type, and that an external range exists.
    fn check_tensor_data(&self, tensor: &CheckpointTensor) -> Result<()> {
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

    /// Bytes of tensor data stored inline in the FlatBuffer (what counts against its 2 GiB limit).
    pub fn inline_data_bytes(&self) -> u64 {
        self.tensors()
            .map(|t| match &t.data {
                TensorData::Inline(bytes) => bytes.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// Every tensor in file order: trainable and frozen parameters, then optimizer momentums.
    fn tensors(&self) -> impl Iterator<Item = &CheckpointTensor> {
        self.tensors_with_origin().map(|(tensor, _)| tensor)
    }
}

fn slice_range(bytes: &Bytes, range: ExternalRange) -> Option<Bytes> {
    let start = usize::try_from(range.offset).ok()?;
    let end = start.checked_add(usize::try_from(range.length).ok()?)?;
    (end <= bytes.len()).then(|| bytes.slice(start..end))
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// Reads the checkpoint at `path` (and its external data file, when it has one), memory-mapped.
///
/// The returned model keeps the mappings alive through `Bytes`; the files must not be modified
/// while it is in use.
pub fn read_checkpoint(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let bytes = map_file(path, "open checkpoint")?;
    let mut checkpoint = parse_checkpoint(&bytes, path)?;
    checkpoint.source = Some(path.to_path_buf());

    let external: Vec<(String, ExternalRange)> = checkpoint
        .tensors()
        .filter_map(|tensor| match tensor.data {
            TensorData::External(range) => Some((tensor.name.clone(), range)),
            _ => None,
        })
        .collect();
    let Some((first_external, _)) = external.first() else {
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
    let data = map_file(&data_path, "open external data of checkpoint")?;
    for (tensor, range) in external {
        if slice_range(&data, range).is_none() {
            return Err(Error::ExternalData {
                path: data_path,
                tensor,
                reason: format!(
                    "bytes {}..{} lie beyond the end of the file ({} bytes)",
                    range.offset,
                    range.offset.saturating_add(range.length),
                    data.len()
                ),
            });
        }
    }
    checkpoint.external_data = Some(ExternalDataFile {
        path: data_path,
        bytes: data,
    });
    Ok(checkpoint)
}

/// Maps a whole file read-only; empty files give empty `Bytes` (an empty mapping is an error).
fn map_file(path: &Path, action: &'static str) -> Result<Bytes> {
    let file = File::open(path).map_err(|e| Error::io(action, path, e))?;
    let length = file
        .metadata()
        .map_err(|e| Error::io(action, path, e))?
        .len();
    if length == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the mapping is read-only; like every memory-mapped reader, this relies on nobody
    // truncating or rewriting the file while it is mapped (writers here replace files by rename).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(action, path, e))?;
    Ok(Bytes::from_owner(map))
}

fn invalid(path: &Path, reason: impl Into<String>) -> Error {
    Error::InvalidCheckpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Limits for the FlatBuffers verifier: checkpoints of large models hold huge byte vectors and
/// many tables, so only nesting depth stays bounded (the schema nests 7 levels deep).
fn verifier_options() -> flatbuffers::VerifierOptions {
    flatbuffers::VerifierOptions {
        max_depth: 64,
        max_tables: usize::MAX,
        max_apparent_size: usize::MAX,
        ignore_missing_null_terminator: false,
    }
}

/// Verifies and converts a checkpoint held in `bytes`; inline tensor bytes become slices of
/// `bytes`. External ranges are checked against dims and type but not against a data file.
fn parse_checkpoint(bytes: &Bytes, path: &Path) -> Result<Checkpoint> {
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
        source: None,
    })
}

/// FlatBuffers verification of a checkpoint, field by field as the generated verifier does it,
/// with one relaxation: the elements of `Tensor.dims` need 4-byte alignment instead of 8.
///
/// ONNX Runtime's C++ builder skips alignment padding for EMPTY vectors, so the empty `dims` of a
/// scalar, or of every tensor of a nominal checkpoint, may start 4 bytes off an 8-byte boundary;
/// the Rust verifier of flatbuffers 2.1 rejects that, the C++ one (which ONNX Runtime uses) does
/// not. Reading an int64 element copies its bytes (no aligned load), so the relaxation is safe;
/// `Vector::safe_slice` must never be called on `dims`.
mod verify {
    use flatbuffers::{
        ForwardsUOffset, InvalidFlatbuffer, SimpleToVerifyInSlice, Vector, Verifiable, Verifier,
        VerifierOptions,
    };

    use super::fbs;

    /// An int64 vector element as the verifier sees it: 8 bytes at a 4-byte boundary.
    #[allow(dead_code)] // only its size and alignment matter
    struct Int64At4([u32; 2]);
    impl SimpleToVerifyInSlice for Int64At4 {}

    type Tables<'a, T> = ForwardsUOffset<Vector<'a, ForwardsUOffset<T>>>;
    type Text<'a> = ForwardsUOffset<&'a str>;

    struct Tensor;
    struct ModuleState;
    struct ParameterOptimizerState;
    struct OptimizerGroup;
    struct Checkpoint;

    impl Verifiable for Tensor {
        fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
            use fbs::Tensor as T;
            v.visit_table(pos)?
                .visit_field::<Text>("name", T::VT_NAME, false)?
                .visit_field::<Text>("doc_string", T::VT_DOC_STRING, false)?
                .visit_field::<ForwardsUOffset<Vector<Int64At4>>>("dims", T::VT_DIMS, false)?
                .visit_field::<fbs::TensorDataType>("data_type", T::VT_DATA_TYPE, false)?
                .visit_field::<ForwardsUOffset<Vector<u8>>>("raw_data", T::VT_RAW_DATA, false)?
                .visit_field::<ForwardsUOffset<Vector<Text>>>(
                    "string_data",
                    T::VT_STRING_DATA,
                    false,
                )?
                .visit_field::<i64>("external_data_offset", T::VT_EXTERNAL_DATA_OFFSET, false)?
                .finish();
            Ok(())
        }
    }

    impl Verifiable for ModuleState {
        fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
            use fbs::ModuleState as M;
            v.visit_table(pos)?
                .visit_field::<Tables<Tensor>>(
                    "requires_grad_params",
                    M::VT_REQUIRES_GRAD_PARAMS,
                    false,
                )?
                .visit_field::<Tables<Tensor>>("frozen_params", M::VT_FROZEN_PARAMS, false)?
                .visit_field::<bool>("is_nominal_state", M::VT_IS_NOMINAL_STATE, false)?
                .visit_field::<bool>("has_external_data", M::VT_HAS_EXTERNAL_DATA, false)?
                .finish();
            Ok(())
        }
    }

    impl Verifiable for ParameterOptimizerState {
        fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
            use fbs::ParameterOptimizerState as P;
            v.visit_table(pos)?
                .visit_field::<Text>("param_name", P::VT_PARAM_NAME, false)?
                .visit_field::<Tables<Tensor>>("momentums", P::VT_MOMENTUMS, false)?
                .finish();
            Ok(())
        }
    }

    impl Verifiable for OptimizerGroup {
        fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
            use fbs::OptimizerGroup as G;
            v.visit_table(pos)?
                .visit_field::<Text>("group_name", G::VT_GROUP_NAME, false)?
                .visit_field::<i64>("step", G::VT_STEP, false)?
                .visit_field::<f32>("initial_learning_rate", G::VT_INITIAL_LEARNING_RATE, false)?
                .visit_field::<Tables<ParameterOptimizerState>>(
                    "optimizer_states",
                    G::VT_OPTIMIZER_STATES,
                    false,
                )?
                .finish();
            Ok(())
        }
    }

    impl Verifiable for Checkpoint {
        fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
            use fbs::Checkpoint as C;
            v.visit_table(pos)?
                .visit_field::<i32>("version", C::VT_VERSION, false)?
                .visit_field::<ForwardsUOffset<ModuleState>>(
                    "module_state",
                    C::VT_MODULE_STATE,
                    false,
                )?
                .visit_field::<Tables<OptimizerGroup>>(
                    "optimizer_groups",
                    C::VT_OPTIMIZER_GROUPS,
                    false,
                )?
                // The property tables hold no int64 vectors: their generated verifier applies.
                .visit_field::<ForwardsUOffset<fbs::PropertyBag>>(
                    "property_bag",
                    C::VT_PROPERTY_BAG,
                    false,
                )?
                .finish();
            Ok(())
        }
    }

    /// Verifies a whole checkpoint buffer, starting from its root offset.
    pub(super) fn checkpoint(
        buffer: &[u8],
        options: &VerifierOptions,
    ) -> Result<(), InvalidFlatbuffer> {
        let mut verifier = Verifier::new(options, buffer);
        <ForwardsUOffset<Checkpoint>>::run_verifier(&mut verifier, 0)
    }
}

/// Converts verified FlatBuffers tables into the owned model.
struct Reader<'a> {
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
struct Plan {
    /// Keyed by the tensor's address in the model being written.
    placements: HashMap<*const CheckpointTensor, Placement>,
    /// Distinct external byte runs in data file order, with their alignment.
    external: Vec<(Bytes, u64)>,
    external_data_file: bool,
    has_external_data: bool,
    estimated_size: u64,
}

impl Plan {
    fn new(checkpoint: &Checkpoint, layout: ExternalDataLayout, path: &Path) -> Result<Plan> {
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
                                tensor.data_type
                            ),
                        });
                    }
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

impl Checkpoint {
    /// Every tensor in file order (trainable and frozen parameters, then optimizer momentums), with
    /// whether it belongs to the module state.
    fn tensors_with_origin(&self) -> impl Iterator<Item = (&CheckpointTensor, bool)> {
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

/// An upper bound of the FlatBuffer's size without inline tensor bytes (the plan adds those):
/// strings plus generous per-table, per-vector and per-string overheads (headers, vtables,
/// alignment padding).
fn estimated_flatbuffer_size(checkpoint: &Checkpoint) -> u64 {
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
fn external_alignment(data_type: i32) -> u64 {
    match data_type {
        data_type::INT64 | data_type::DOUBLE => 8,
        _ => 4,
    }
}

/// Streams the plan's external byte runs into a temporary file beside `data_path`.
/// Returns the file and the offset of each run.
fn write_external_data(
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

fn new_temp_file(folder: &Path, destination: &Path) -> Result<tempfile::NamedTempFile> {
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

fn persist(file: tempfile::NamedTempFile, destination: &Path) -> Result<()> {
    file.persist(destination)
        .map(drop)
        .map_err(|e| Error::io("rename temporary file to", destination, e.error))
}

/// Serializes the model with the plan's placements.
fn build_flatbuffer(
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

struct Writer<'w, 'b> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Bytes {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name);
        Bytes::from(std::fs::read(path).expect("fixture"))
    }

    /// Serializes a parsed checkpoint in memory, as `write_checkpoint` would (no external data).
    fn serialize(checkpoint: &Checkpoint) -> Result<Vec<u8>> {
        let plan = Plan::new(checkpoint, ExternalDataLayout::Keep, Path::new("mem"))?;
        Ok(build_flatbuffer(checkpoint, &plan, &[])
            .finished_data()
            .to_vec())
    }

    /// Every single-bit corruption of a real checkpoint is either rejected or read into a model
    /// that serializes to a fixed point; nothing panics.
    #[test]
    fn bit_flips_never_panic() {
        for name in [
            "checkpoint_adamw",
            "checkpoint_adamw_optimizer_state",
            "checkpoint_adamw_properties",
            "checkpoint_adamw_nominal",
        ] {
            let original = fixture(name).to_vec();
            for position in 0..original.len() {
                for bit in 0..8 {
                    let mut bytes = original.clone();
                    bytes[position] ^= 1 << bit;
                    let bytes = Bytes::from(bytes);
                    let Ok(checkpoint) = parse_checkpoint(&bytes, Path::new(name)) else {
                        continue;
                    };
                    let Ok(first) = serialize(&checkpoint) else {
                        continue;
                    };
                    let again = parse_checkpoint(&Bytes::from(first.clone()), Path::new(name))
                        .expect("our own output reads");
                    let second = serialize(&again).expect("serializes again");
                    assert_eq!(first, second, "{name} byte {position} bit {bit}");
                }
            }
        }
    }

    #[test]
    fn fixtures_serialize_in_memory_to_equal_models_within_the_estimate() {
        for name in [
            "checkpoint_adamw",
            "checkpoint_adamw_optimizer_state",
            "checkpoint_adamw_properties",
            "checkpoint_adamw_frozen",
            "checkpoint_adamw_nominal",
        ] {
            let checkpoint = parse_checkpoint(&fixture(name), Path::new(name)).unwrap();
            let plan = Plan::new(&checkpoint, ExternalDataLayout::Keep, Path::new(name)).unwrap();
            let written = Bytes::from(serialize(&checkpoint).unwrap());
            assert_eq!(
                parse_checkpoint(&written, Path::new(name)).unwrap(),
                checkpoint
            );
            assert!(
                plan.estimated_size >= written.len() as u64,
                "{name}: estimate {} < {}",
                plan.estimated_size,
                written.len()
            );
        }
    }

    #[test]
    fn byte_lengths_follow_element_bits() {
        assert_eq!(tensor_byte_length(&[4, 8], data_type::FLOAT), Some(128));
        assert_eq!(tensor_byte_length(&[], data_type::DOUBLE), Some(8));
        assert_eq!(tensor_byte_length(&[0, 5], data_type::INT64), Some(0));
        assert_eq!(tensor_byte_length(&[3], 22), Some(2)); // INT4: two per byte, rounded up
        assert_eq!(tensor_byte_length(&[5], 25), Some(2)); // UINT2: four per byte
        assert_eq!(tensor_byte_length(&[-1], data_type::FLOAT), None);
        assert_eq!(tensor_byte_length(&[i64::MAX, 4], data_type::FLOAT), None);
        assert_eq!(tensor_byte_length(&[2], data_type::STRING), None);
        assert_eq!(tensor_byte_length(&[2], 1000), None);
        assert_eq!(element_size(data_type::BFLOAT16), Some(2));
        assert_eq!(element_size(data_type::COMPLEX128), Some(16));
        assert_eq!(element_size(22), None);
    }

    #[test]
    fn data_file_name_appends_suffix() {
        assert_eq!(
            external_data_path(Path::new("dir/checkpoint")),
            PathBuf::from("dir/checkpoint.data")
        );
        assert_eq!(
            external_data_path(Path::new("ck.v1")),
            PathBuf::from("ck.v1.data")
        );
    }
}
