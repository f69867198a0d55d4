//! The external data file of a checkpoint, as ONNX Runtime 1.19.2 writes and reads it, and its
//! layout when this crate writes one.
//!
//! Established by experiment with the onnxruntime-training-cpu 1.19.2 wheel (checkpoints of
//! 1.8-1.9 GB written through onnxblock.save_checkpoint and CheckpointState.save_checkpoint, then
//! inspected). Sources that agree: the review of microsoft/onnxruntime PR #20077 "Support >2GB of
//! Tensor data in training checkpoint" (adds ModuleState.has_external_data and an external-data
//! size threshold to orttraining/orttraining/training_api/checkpoint.cc),
//! onnxruntime/core/graph/graph_flatbuffers_utils.h (an external writer returns each tensor's
//! offset; the minimum size for external data of initializers is 64 bytes), and the messages in
//! the 1.19.2 binary ("Failed to create checkpoint's external data file: `<checkpoint>.data`").
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
//! The writer keeps each tensor where it is (inline or external) unless told otherwise
//! (`ExternalDataLayout`) and lays the data file out afresh by the same order and alignment
//! rules ([`DataFileLayout`]): a checkpoint written by ONNX Runtime round-trips to the same data
//! file bytes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::data_type;

/// Appended to the checkpoint path to name its external data file.
pub const EXTERNAL_DATA_SUFFIX: &str = ".data";

/// The external data file of the checkpoint at `checkpoint_path` (`<checkpoint_path>.data`).
pub fn external_data_path(checkpoint_path: &Path) -> PathBuf {
    let mut name = checkpoint_path.as_os_str().to_owned();
    name.push(EXTERNAL_DATA_SUFFIX);
    PathBuf::from(name)
}

/// Alignment ONNX Runtime 1.19.2 gives a tensor of this type in the external data file.
pub(super) fn alignment(data_type: i32) -> u64 {
    match data_type {
        data_type::INT64 | data_type::DOUBLE => 8,
        _ => 4,
    }
}

/// The data file to write: distinct byte runs in file order, each at its aligned offset.
#[derive(Default)]
pub(super) struct DataFileLayout {
    /// (offset, bytes) in file order.
    pub(super) runs: Vec<(u64, Bytes)>,
    /// Same memory and same alignment: one region of the file.
    shared: HashMap<(usize, usize, u64), u64>,
    pub(super) size: u64,
}

impl DataFileLayout {
    /// Appends the bytes of a tensor of `data_type` (padded to its alignment), or finds the region
    /// already holding the same memory; returns their offset in the file.
    pub(super) fn place(&mut self, bytes: Bytes, data_type: i32) -> u64 {
        let alignment = alignment(data_type);
        let key = (bytes.as_ptr() as usize, bytes.len(), alignment);
        if let Some(&offset) = self.shared.get(&key) {
            return offset;
        }
        let offset = self.size.next_multiple_of(alignment);
        self.size = offset + bytes.len() as u64;
        self.shared.insert(key, offset);
        self.runs.push((offset, bytes));
        offset
    }
}
