//! Taking a rewrite back (`finalize`), the parts every format shares: the record an input must
//! carry, its models reverted from the record's undo, a tensor's values, and a parameter's final
//! values from the scheme (a pending sync folded in).

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::generated::onnx::{ModelProto, TensorProto, tensor_proto::DataLocation};
use crate::graph::revert::revert;
use crate::inject::NAME_PREFIX;
use crate::record::{META_PREFIX, Recorded, RewriteRecord};
use crate::scheme::{EvalWeights, Param, Scheme};

/// The record of the rewrite `path` holds, or why it cannot be taken back.
pub fn required_record<'r>(recorded: &'r Recorded, path: &Path) -> Result<&'r RewriteRecord> {
    match recorded {
        Recorded::Record(record) => Ok(record),
        Recorded::None => Err(Error::NotRewritten {
            path: path.to_path_buf(),
            reason: "its metadata holds no record of a rewrite".into(),
        }),
        Recorded::MarkerOnly { version, .. } => Err(Error::NotRewritten {
            path: path.to_path_buf(),
            reason: format!(
                "it was rewritten by onnx-lookahead {version}, which kept no record of how"
            ),
        }),
    }
}

/// The model as it was before the rewrite (weights as they are now).
pub fn reverted(model: &ModelProto) -> Result<ModelProto> {
    let mut out = model.clone();
    let Recorded::Record(record) = crate::record::recorded(model) else {
        return Ok(out); // a model the rewrite did not change (the optimizer model)
    };
    revert(&mut out, &record.undo, NAME_PREFIX, META_PREFIX);
    Ok(out)
}

/// The values of a floating-point tensor stored inline (raw_data or its typed field) or as
/// external data beside `model_path`.
pub fn tensor_values(tensor: &TensorProto, model_path: &Path) -> Result<Vec<f64>> {
    let data_type = tensor.data_type();
    let invalid = |reason: &str| Error::InvalidTensor {
        path: model_path.to_path_buf(),
        tensor: tensor.name().to_string(),
        reason: reason.to_string(),
    };
    let bytes = if tensor.data_location == Some(DataLocation::External as i32) {
        external_bytes(tensor, model_path)?
    } else if let Some(raw) = &tensor.raw_data {
        raw.clone()
    } else if !tensor.float_data.is_empty() {
        return Ok(tensor.float_data.iter().map(|&v| f64::from(v)).collect());
    } else if !tensor.double_data.is_empty() {
        return Ok(tensor.double_data.clone());
    } else if !tensor.int32_data.is_empty() {
        let bits: Vec<u8> = tensor
            .int32_data
            .iter()
            .flat_map(|&v| (v as u16).to_le_bytes())
            .collect();
        Bytes::from(bits)
    } else {
        Bytes::new()
    };
    crate::io::values::decode(data_type, &bytes)
        .ok_or_else(|| invalid("holds no floating-point values this tool can read"))
}

/// The bytes of an external tensor (its region of the data file beside the model).
fn external_bytes(tensor: &TensorProto, model_path: &Path) -> Result<Bytes> {
    let files = crate::io::external_data::check_external_data(
        model_path,
        &ModelProto {
            graph: Some(crate::generated::onnx::GraphProto {
                initializer: vec![tensor.clone()],
                ..Default::default()
            }),
            ..Default::default()
        },
    )?;
    let reference = crate::io::external_data::external_ref(tensor)
        .and_then(|r| r.ok())
        .ok_or_else(|| Error::InvalidTensor {
            path: model_path.to_path_buf(),
            tensor: tensor.name().to_string(),
            reason: "has an unreadable external data reference".into(),
        })?;
    let file = files.first().ok_or_else(|| Error::InvalidTensor {
        path: model_path.to_path_buf(),
        tensor: tensor.name().to_string(),
        reason: "has no external data file".into(),
    })?;
    let mapped = crate::io::fs::map_regular(&file.resolved)?;
    let start = reference.offset as usize;
    let end = file.needed as usize;
    Ok(mapped.slice(start.min(end)..end))
}

/// The values a wrapped parameter ends with when an update is pending, from the scheme.
pub fn final_values(
    scheme: &dyn Scheme,
    name: &str,
    data_type: i32,
    fast: &[f64],
    state: &[Vec<f64>],
    shared: &[f64],
    weights: EvalWeights,
) -> Result<Bytes> {
    let p = Param { name, data_type };
    let values = scheme.final_values(p, fast, state, shared, true, weights)?;
    crate::io::values::encode(data_type, &values)
        .map(Bytes::from)
        .ok_or_else(|| Error::InvalidOption(format!("parameter {name} is not floating-point")))
}

/// The initializers of a model's main graph by name (the first of each name).
pub fn initializers(model: &ModelProto) -> HashMap<&str, &TensorProto> {
    let mut by_name = HashMap::new();
    for t in model.graph.iter().flat_map(|g| &g.initializer) {
        by_name.entry(t.name()).or_insert(t);
    }
    by_name
}

/// Replaces a tensor's values with inline raw bytes (its type, dims and name kept).
pub fn set_raw(tensor: &mut TensorProto, raw: Bytes) {
    tensor.raw_data = Some(raw);
    tensor.float_data.clear();
    tensor.double_data.clear();
    tensor.int32_data.clear();
    tensor.external_data.clear();
    tensor.data_location = None;
}

/// Gives `tensor` the values of `source` as they are stored (inline or the same external region).
pub fn copy_values(tensor: &mut TensorProto, source: &TensorProto) {
    tensor.raw_data = source.raw_data.clone();
    tensor.float_data = source.float_data.clone();
    tensor.double_data = source.double_data.clone();
    tensor.int32_data = source.int32_data.clone();
    tensor.external_data = source.external_data.clone();
    tensor.data_location = source.data_location;
}
