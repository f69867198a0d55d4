//! Exact detection of protobuf fields the vendored ONNX schema does not know.
//!
//! prost silently drops unknown fields on decode, so a model written by a newer ONNX would lose
//! data on re-encode. Comparing lengths is only a hint (packed vs unpacked repeated fields change
//! the length without loss), so this walks the wire format against the schema's descriptors and
//! reports every field number the schema lacks. It reads tags only and skips payloads, so it is
//! cheap even for multi-GiB models, and it never copies tensor bytes.

use std::fmt;
use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};

static DESCRIPTOR_SET: &[u8] = include_bytes!("../generated/onnx_descriptor_set.bin");

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // The descriptor set is generated from proto/onnx.proto at build time of the repository
        // and checked by tests/generated_code.rs; failing to decode it is a build defect.
        DescriptorPool::decode(DESCRIPTOR_SET).expect("embedded ONNX descriptor set is valid")
    })
}

/// The message descriptor of an ONNX message, e.g. "ModelProto".
pub fn message(name: &str) -> MessageDescriptor {
    pool()
        .get_message_by_name(&format!("onnx.{name}"))
        .unwrap_or_else(|| panic!("onnx.{name} is in the embedded schema"))
}

/// One field the schema does not know, located by the path of field names leading to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownField {
    pub path: String,
    pub number: u32,
    pub byte_offset: usize,
}

impl fmt::Display for UnknownField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "field {} in {} at byte {}",
            self.number, self.path, self.byte_offset
        )
    }
}

/// All unknown fields of a serialized ModelProto. Err when the bytes are not well-formed
/// protobuf (which the decoder would have rejected already).
pub fn unknown_fields(bytes: &[u8]) -> Result<Vec<UnknownField>, String> {
    let mut found = Vec::new();
    walk(
        bytes,
        0,
        &message("ModelProto"),
        "ModelProto",
        &mut found,
        0,
    )?;
    Ok(found)
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint longer than 10 bytes".into())
}

fn skip(bytes: &[u8], pos: &mut usize, len: usize) -> Result<(), String> {
    let end = pos
        .checked_add(len)
        .filter(|&e| e <= bytes.len())
        .ok_or("field runs past the end")?;
    *pos = end;
    Ok(())
}

const MAX_DEPTH: usize = 100;

fn walk(
    bytes: &[u8],
    base: usize,
    desc: &MessageDescriptor,
    path: &str,
    found: &mut Vec<UnknownField>,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("messages nested more than 100 deep".into());
    }
    let mut pos = 0;
    while pos < bytes.len() {
        let field_start = pos;
        let key = read_varint(bytes, &mut pos)?;
        let number = (key >> 3) as u32;
        let wire_type = (key & 7) as u8;
        if number == 0 {
            return Err("field number 0".into());
        }
        let mut payload = None;
        match wire_type {
            0 => {
                read_varint(bytes, &mut pos)?;
            }
            1 => skip(bytes, &mut pos, 8)?,
            5 => skip(bytes, &mut pos, 4)?,
            2 => {
                let len = usize::try_from(read_varint(bytes, &mut pos)?)
                    .map_err(|_| "length overflow")?;
                let start = pos;
                skip(bytes, &mut pos, len)?;
                payload = Some(start..pos);
            }
            // Groups (3, 4) do not occur in ONNX; treat them as malformed.
            other => return Err(format!("unsupported wire type {other}")),
        }
        match desc.get_field(number) {
            None => found.push(UnknownField {
                path: path.to_string(),
                number,
                byte_offset: base + field_start,
            }),
            Some(field) => {
                if let (Kind::Message(sub), Some(range)) = (field.kind(), payload) {
                    let sub_path = format!("{path}.{}", field.name());
                    walk(
                        &bytes[range.clone()],
                        base + range.start,
                        &sub,
                        &sub_path,
                        found,
                        depth + 1,
                    )?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generated::onnx::{GraphProto, ModelProto, NodeProto};
    use prost::Message;

    fn sample() -> Vec<u8> {
        ModelProto {
            ir_version: Some(10),
            graph: Some(GraphProto {
                node: vec![NodeProto {
                    op_type: Some("Relu".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn known_model_has_no_unknown_fields() {
        assert_eq!(unknown_fields(&sample()).unwrap(), vec![]);
    }

    #[test]
    fn unknown_top_level_field_is_found() {
        let mut bytes = sample();
        bytes.extend_from_slice(&[0xb8, 0x3e, 0x01]); // field 999, varint 1
        let found = unknown_fields(&bytes).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].number, 999);
        assert_eq!(found[0].path, "ModelProto");
    }

    #[test]
    fn unknown_nested_field_is_found() {
        // A NodeProto with an extra field 77 (string), inside the graph.
        let mut node = NodeProto {
            op_type: Some("Relu".into()),
            ..Default::default()
        }
        .encode_to_vec();
        node.extend_from_slice(&[0xea, 0x04, 0x01, b'x']); // field 77, LEN 1
        let mut graph = Vec::new();
        graph.push(0x0a); // GraphProto.node = 1, LEN
        graph.push(node.len() as u8);
        graph.extend_from_slice(&node);
        let mut model = vec![0x08, 0x0a, 0x3a, graph.len() as u8]; // ir_version 10, graph (7)
        model.extend_from_slice(&graph);
        let found = unknown_fields(&model).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, "ModelProto.graph.node");
        assert_eq!(found[0].number, 77);
    }

    #[test]
    fn truncated_input_is_an_error() {
        let bytes = sample();
        assert!(unknown_fields(&bytes[..bytes.len() - 1]).is_err());
    }
}
