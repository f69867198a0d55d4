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

mod model;
mod read;
#[cfg(test)]
mod tests;
mod verify;
mod write;

use std::path::{Path, PathBuf};

pub use model::*;
pub use read::read_checkpoint;
pub use write::{ExternalDataLayout, write_checkpoint, write_checkpoint_with};

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

/// ONNX element type numbers, shared with the ONNX side.
pub use crate::io::dtype::code as data_type;
pub use crate::io::dtype::{element_bits, element_size, tensor_byte_length};

/// The external data file of the checkpoint at `checkpoint_path` (`<checkpoint_path>.data`).
pub fn external_data_path(checkpoint_path: &Path) -> PathBuf {
    let mut name = checkpoint_path.as_os_str().to_owned();
    name.push(EXTERNAL_DATA_SUFFIX);
    PathBuf::from(name)
}
