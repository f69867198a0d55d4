//! ONNX model files: memory-mapped, zero-copy decode; exact-size encode; atomic write.
//!
//! Decoding goes through `bytes::Bytes` that owns the memory map, and the generated types keep
//! `bytes` fields (TensorProto.raw_data above all) as `Bytes`, so they point into the mapping:
//! a multi-GiB model costs a mapping, not a copy. The mapping stays valid because the input is
//! never written by this tool (and ONNX tooling replaces files rather than editing them in place).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;

use crate::error::{Error, Result};
use crate::generated::onnx::ModelProto;
use crate::io::lossless::{self, UnknownField};

/// Protobuf's hard limit for one serialized message (ONNX tools refuse larger models).
pub const PROTOBUF_LIMIT: u64 = i32::MAX as u64;

/// A decoded model together with the bytes it came from.
#[derive(Debug, Clone)]
pub struct ModelFile {
    pub path: PathBuf,
    pub model: ModelProto,
    /// The whole input file (memory-mapped). `model`'s bytes fields point into it.
    pub source: Bytes,
    /// Fields of the input that the vendored schema does not know; writing would drop them.
    pub unknown_fields: Vec<UnknownField>,
}

/// Reads and decodes an ONNX model, checking that it is complete enough to be a model.
pub fn load_model(path: &Path) -> Result<ModelFile> {
    let source = crate::io::fs::map_regular(path)?;
    let invalid = |reason: String| Error::InvalidModel {
        path: path.to_path_buf(),
        reason,
    };
    if source.is_empty() {
        return Err(invalid("the file is empty".into()));
    }
    let model = ModelProto::decode(source.clone())
        .map_err(|e| invalid(format!("protobuf decode failed ({e})")))?;
    // Protobuf has no framing at the top level: random or truncated bytes can decode "successfully"
    // into a message that is not a model. Ask for what every ONNX model has.
    if model.ir_version.is_none() {
        return Err(invalid("ir_version is missing".into()));
    }
    if model.graph.is_none() {
        return Err(invalid("the main graph is missing".into()));
    }
    if model.ir_version() >= 3 && model.opset_import.is_empty() {
        return Err(invalid("opset_import is missing (truncated file?)".into()));
    }
    let unknown_fields = lossless::unknown_fields(&source)
        .map_err(|reason| invalid(format!("malformed protobuf ({reason})")))?;
    Ok(ModelFile {
        path: path.to_path_buf(),
        model,
        source,
        unknown_fields,
    })
}

impl ModelFile {
    /// Refuses (typed error) when writing would lose fields, unless the caller allows it.
    pub fn ensure_lossless(&self, allow_lossy: bool) -> Result<()> {
        if self.unknown_fields.is_empty() || allow_lossy {
            return Ok(());
        }
        Err(Error::UnknownFields {
            path: self.path.clone(),
            count: self.unknown_fields.len(),
            first: self.unknown_fields[0].to_string(),
            ir: crate::generated::onnx::Version::IrVersion as i64,
        })
    }
}

/// Serializes a model into `out` (exactly `encoded_len` bytes). Fails before allocating anything
/// when the result would exceed protobuf's 2 GiB limit.
pub fn encoded_len_checked(model: &ModelProto, path: &Path) -> Result<usize> {
    let len = model.encoded_len() as u64;
    if len > PROTOBUF_LIMIT {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            size: len,
        });
    }
    Ok(len as usize)
}

/// Encodes a model to bytes (for small models and tests; files go through `write_model`).
pub fn encode_model(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Writes `model` to `path` through a temporary file in the same directory, renamed into place
/// only when complete. The encoding is streamed with ordinary writes (`io::sink`): a large model
/// is not staged in memory, and a full disk is an error, not a signal.
pub fn write_model(model: &ModelProto, path: &Path, overwrite: bool) -> Result<()> {
    let len = encoded_len_checked(model, path)?;
    crate::io::atomic::write_file_with(path, overwrite, |file| {
        let mut sink = crate::io::sink::FileSink::new(file);
        model
            .encode(&mut sink)
            .map_err(|e| std::io::Error::other(format!("protobuf encode: {e}")))?;
        let written = sink.finish()?;
        if written != len as u64 {
            return Err(std::io::Error::other(format!(
                "encoded {written} bytes, expected {len}"
            )));
        }
        Ok(())
    })
}
