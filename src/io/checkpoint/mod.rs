//! ONNX Runtime's on-device training checkpoint: read it into an owned, editable model and write it
//! back, without copying tensor bytes on the way in or holding them on the way out.
//!
//! The file is a FlatBuffer with identifier "ODTC" (schema: proto/ort_training_checkpoint.fbs).
//! By concern:
//! - `model`: the owned model (every table and field of the schema, which optional vectors were
//!   present but empty, and the mapped files its bytes are slices of);
//! - `read` and `verify`: memory-mapped reading; inline tensor bytes stay slices of the mapping
//!   (`bytes::Bytes`); FlatBuffers verification, then the content rules ONNX Runtime relies on;
//! - `write`: a two-pass serializer of our own. Pass 1 lays every object out front to back
//!   (FlatBuffers offsets point forward) with the tensor bytes at the end, so the exact size is
//!   known (and the 2 GiB limit refused) before anything is created; pass 2 writes the small
//!   metadata region and streams the tensor bytes after it, copied by the kernel from the input
//!   file when they are a slice of its mapping;
//! - `external`: the external data file (`<checkpoint>.data`): ONNX Runtime's rules and our
//!   layout of it.
//!
//! Element types (`data_type`, sizes) come from `io::dtype`, shared with the ONNX side; files are
//! opened and mapped by `io::fs`, staged and renamed by `io::atomic`, streamed by `io::sink`.

mod external;
mod model;
mod presence;
mod read;
#[cfg(test)]
mod tests;
mod verify;
mod write;

pub use external::{EXTERNAL_DATA_SUFFIX, external_data_path};
pub use model::*;
pub use presence::optional_fields_present;
pub use read::read_checkpoint;
pub use write::{ExternalDataLayout, write_checkpoint, write_checkpoint_with};

/// The FlatBuffers file identifier of a training checkpoint (bytes 4..8 of the file).
pub const FILE_IDENTIFIER: &str = "ODTC";

/// The checkpoint format version ONNX Runtime 1.19.2 writes (and the only one it reads).
pub const CHECKPOINT_VERSION: i32 = 2;

/// Inline tensor bytes from which ONNX Runtime writes parameters to an external data file
/// instead (1800 MiB, see `external`); the rewrite follows the same rule when the slow weights
/// push a checkpoint over it.
pub const EXTERNAL_DATA_THRESHOLD: u64 = 1800 * 1024 * 1024;

/// FlatBuffers use 32-bit signed offsets: no checkpoint file may exceed this many bytes.
pub const MAX_CHECKPOINT_SIZE: u64 = i32::MAX as u64;

/// ONNX element type numbers, shared with the ONNX side.
pub use crate::io::dtype::code as data_type;
pub use crate::io::dtype::{element_bits, element_size, tensor_byte_length};
