//! Every TensorProto the tool reads, copies or carries over must describe itself consistently:
//! a known element type, dims that are non-negative with a product that fits, and exactly one
//! source of values (raw_data, the one typed field its type allows, or external data) holding
//! exactly as many bytes or elements as the dims call for. A tensor that breaks this would be
//! copied into slow weights or into the output, which ONNX tooling then refuses (or misreads).

use std::path::Path;

use crate::error::{Error, Result};
use crate::generated::onnx::{ModelProto, TensorProto, tensor_proto::DataLocation};
use crate::io::dtype::{self, code};
use crate::io::external_data::for_each_tensor;

/// The typed value fields, by the name ONNX gives them.
fn typed_fields(t: &TensorProto) -> [(&'static str, usize); 6] {
    [
        ("float_data", t.float_data.len()),
        ("int32_data", t.int32_data.len()),
        ("string_data", t.string_data.len()),
        ("int64_data", t.int64_data.len()),
        ("double_data", t.double_data.len()),
        ("uint64_data", t.uint64_data.len()),
    ]
}

/// How many entries `field` needs for `count` elements of `data_type`; None when the field may
/// not hold that type.
fn typed_count(field: &str, data_type: i32, count: u64) -> Option<u64> {
    let bits = dtype::element_bits(data_type);
    match field {
        "float_data" => match data_type {
            code::FLOAT => Some(count),
            code::COMPLEX64 => count.checked_mul(2),
            _ => None,
        },
        "double_data" => match data_type {
            code::DOUBLE => Some(count),
            code::COMPLEX128 => count.checked_mul(2),
            _ => None,
        },
        "int64_data" => (data_type == code::INT64).then_some(count),
        "uint64_data" => matches!(data_type, code::UINT32 | code::UINT64).then_some(count),
        "string_data" => (data_type == code::STRING).then_some(count),
        "int32_data" => match bits {
            Some(4) => Some(count.div_ceil(2)),
            Some(2) => Some(count.div_ceil(4)),
            Some(6 | 8 | 16) => Some(count),
            Some(32) if data_type == code::INT32 => Some(count),
            _ => None,
        },
        _ => None,
    }
}

/// Checks one tensor; Err(reason) names what is wrong (the caller names the tensor and file).
pub fn check_tensor(t: &TensorProto) -> std::result::Result<(), String> {
    let data_type = t.data_type();
    if data_type == code::UNDEFINED {
        return Err("has no data type".into());
    }
    if dtype::element_bits(data_type).is_none() && data_type != code::STRING {
        return Err(format!("has the unknown data type {data_type}"));
    }
    let count = dtype::element_count(&t.dims).ok_or_else(|| {
        format!(
            "has dims {:?}: negative, or their product overflows",
            t.dims
        )
    })?;
    let typed: Vec<(&str, usize)> = typed_fields(t)
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    let external = t.data_location == Some(DataLocation::External as i32);
    let mut sources: Vec<&str> = typed.iter().map(|(f, _)| *f).collect();
    if t.raw_data.is_some() {
        sources.push("raw_data");
    }
    if external {
        sources.push("external data");
    }
    if sources.len() > 1 {
        return Err(format!(
            "has values in both {} and {}",
            sources[0], sources[1]
        ));
    }
    if t.segment.is_some() {
        // A segment of a split tensor: its values cover only part of the dims.
        return Ok(());
    }
    let type_name = dtype::name(data_type);
    if let Some(raw) = &t.raw_data {
        if data_type == code::STRING {
            return Err("is a STRING tensor with raw_data (strings go in string_data)".into());
        }
        let needed = dtype::tensor_byte_length(&t.dims, data_type)
            .ok_or_else(|| format!("dims {:?} of type {type_name} cannot be sized", t.dims))?;
        if raw.len() as u64 != needed {
            return Err(format!(
                "raw_data holds {} bytes, but dims {:?} of type {type_name} need {needed}",
                raw.len(),
                t.dims
            ));
        }
        return Ok(());
    }
    if external {
        // Its length and location are checked against the data file (io::external_data).
        return Ok(());
    }
    match typed.first() {
        None if count == 0 => Ok(()),
        None => Err(format!(
            "has dims {:?} ({count} elements) but no values",
            t.dims
        )),
        Some((field, have)) => {
            let needed = typed_count(field, data_type, count)
                .ok_or_else(|| format!("stores type {type_name} in {field}"))?;
            if *have as u64 != needed {
                return Err(format!(
                    "{field} holds {have} values, but dims {:?} of type {type_name} need {needed}",
                    t.dims
                ));
            }
            Ok(())
        }
    }
}

/// Checks every tensor of a model (initializers, sparse initializers, tensor attributes, in every
/// graph, subgraph, training_info graph and function).
pub fn check_model_tensors(model: &ModelProto, path: &Path) -> Result<()> {
    let mut first_error = None;
    for_each_tensor(model, &mut |tensor| {
        if first_error.is_some() {
            return;
        }
        if let Err(reason) = check_tensor(tensor) {
            first_error = Some(Error::InvalidTensor {
                path: path.to_path_buf(),
                tensor: tensor.name().to_string(),
                reason,
            });
        }
    });
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn tensor(data_type: i32, dims: &[i64]) -> TensorProto {
        TensorProto {
            name: Some("t".into()),
            data_type: Some(data_type),
            dims: dims.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn consistent_tensors_pass() {
        let mut t = tensor(code::FLOAT, &[2, 3]);
        t.raw_data = Some(Bytes::from(vec![0u8; 24]));
        check_tensor(&t).unwrap();
        let mut t = tensor(code::FLOAT16, &[3]);
        t.int32_data = vec![1, 2, 3];
        check_tensor(&t).unwrap();
        let mut t = tensor(22, &[3]); // INT4: two per int32 entry
        t.int32_data = vec![1, 2];
        check_tensor(&t).unwrap();
        let mut t = tensor(code::STRING, &[2]);
        t.string_data = vec![Bytes::from_static(b"a"), Bytes::new()];
        check_tensor(&t).unwrap();
        check_tensor(&tensor(code::FLOAT, &[0, 4])).unwrap();
        let mut t = tensor(code::COMPLEX64, &[2]);
        t.float_data = vec![0.0; 4];
        check_tensor(&t).unwrap();
    }

    #[test]
    fn inconsistent_tensors_fail() {
        let mut short = tensor(code::FLOAT, &[2, 3]);
        short.raw_data = Some(Bytes::from(vec![0u8; 20]));
        let mut both = tensor(code::FLOAT, &[1]);
        both.raw_data = Some(Bytes::from(vec![0u8; 4]));
        both.float_data = vec![1.0];
        let mut overflow = tensor(code::FLOAT, &[i64::MAX, 3]);
        overflow.raw_data = Some(Bytes::new());
        let mut negative = tensor(code::FLOAT, &[-1]);
        negative.raw_data = Some(Bytes::new());
        let mut wrong_field = tensor(code::FLOAT, &[1]);
        wrong_field.int64_data = vec![1];
        let mut undefined = tensor(code::UNDEFINED, &[1]);
        undefined.raw_data = Some(Bytes::from(vec![0u8; 4]));
        let mut string_raw = tensor(code::STRING, &[1]);
        string_raw.raw_data = Some(Bytes::from(vec![0u8; 4]));
        let empty = tensor(code::FLOAT, &[2]);
        for (what, t) in [
            ("short", short),
            ("both", both),
            ("overflow", overflow),
            ("negative", negative),
            ("wrong field", wrong_field),
            ("undefined", undefined),
            ("string raw", string_raw),
            ("no values", empty),
        ] {
            assert!(check_tensor(&t).is_err(), "{what}");
        }
    }
}
