//! Whether the files of a set describe the same model. The training API feeds every checkpoint
//! parameter to the training and eval graphs by name, so each graph input named after a parameter (and each
//! gradient accumulation buffer of one) must have that parameter's type and shape, and the
//! checkpoint's optimizer state must have its parameters'. A file from another set (an eval model
//! of another size, a checkpoint of another model) breaks that; rewritten, it fails to load where
//! the input loaded, so it is refused with the file and the tensor named.

use std::collections::HashMap;
use std::path::Path;

use super::{ACCUMULATION_BUFFER_SUFFIX, ArtifactSet};
use crate::error::Error;
use crate::generated::onnx::{ValueInfoProto, tensor_shape_proto::dimension, type_proto};
use crate::io::checkpoint::{Checkpoint, CheckpointTensor};
use crate::io::dtype;

/// The first disagreement between the set's models and `checkpoint` (the set's own, or one
/// given to finalize), read from `checkpoint_path`.
pub(crate) fn disagreement(
    set: &ArtifactSet,
    checkpoint: &Checkpoint,
    checkpoint_path: &Path,
) -> Option<Error> {
    let module = checkpoint.module_state.as_ref()?;
    let nominal = module.is_nominal_state;
    let parameters: HashMap<&str, &CheckpointTensor> = module
        .requires_grad_params
        .iter()
        .chain(&module.frozen_params)
        .map(|t| (t.name.as_str(), t))
        .collect();
    let differ = |path: &Path, reason: String| Error::InconsistentSet {
        path: path.to_path_buf(),
        reason,
    };
    // The training API feeds parameters by name to the training and eval graphs only; the
    // optimizer model's inputs (learning_rate, step, the sequences) are its own, whatever the
    // parameters are called.
    let fed = std::iter::once(&set.training).chain(set.eval.as_ref());
    for file in fed {
        let Some(graph) = &file.model.graph else {
            continue;
        };
        for input in &graph.input {
            let name = input.name();
            let parameter = parameters.get(name).or_else(|| {
                name.strip_suffix(ACCUMULATION_BUFFER_SUFFIX)
                    .and_then(|p| parameters.get(p))
            });
            if let Some(parameter) = parameter
                && let Some(reason) = mismatch(input, parameter, nominal)
            {
                return Some(differ(
                    &file.path,
                    format!(
                        "input {name:?} is {reason}, but {} holds {:?} as {}: the files come from different sets",
                        file_name(checkpoint_path),
                        parameter.name,
                        describe(parameter.data_type, Some(&parameter.dims), nominal)
                    ),
                ));
            }
        }
    }
    for group in &checkpoint.optimizer_groups {
        for state in &group.optimizer_states {
            let Some(parameter) = parameters.get(state.param_name.as_str()) else {
                return Some(differ(
                    checkpoint_path,
                    format!(
                        "optimizer group {:?} holds state of {:?}, which is not one of its parameters",
                        group.group_name, state.param_name
                    ),
                ));
            };
            let wrong = state.momentums.iter().find(|m| {
                m.data_type != parameter.data_type || (!nominal && m.dims != parameter.dims)
            });
            if let Some(momentum) = wrong {
                return Some(differ(
                    checkpoint_path,
                    format!(
                        "the optimizer state {:?} of {:?} is {}, the parameter {}",
                        momentum.name,
                        parameter.name,
                        describe(momentum.data_type, Some(&momentum.dims), nominal),
                        describe(parameter.data_type, Some(&parameter.dims), nominal)
                    ),
                ));
            }
        }
    }
    None
}

/// How a graph input differs from the parameter it is fed (None when it does not): its element
/// type, or a fixed dimension or rank (symbolic dimensions take any size).
fn mismatch(input: &ValueInfoProto, parameter: &CheckpointTensor, nominal: bool) -> Option<String> {
    let Some(type_proto::Value::TensorType(tensor)) = input.r#type.as_ref()?.value.as_ref() else {
        return Some("not a tensor".into());
    };
    let dims: Option<Vec<Option<i64>>> = tensor.shape.as_ref().map(|shape| {
        shape
            .dim
            .iter()
            .map(|d| match d.value {
                Some(dimension::Value::DimValue(v)) => Some(v),
                _ => None,
            })
            .collect()
    });
    let type_differs = tensor.elem_type() != parameter.data_type;
    let shape_differs = !nominal
        && dims.as_ref().is_some_and(|dims| {
            dims.len() != parameter.dims.len()
                || dims
                    .iter()
                    .zip(&parameter.dims)
                    .any(|(d, p)| d.is_some_and(|d| d != *p))
        });
    (type_differs || shape_differs).then(|| {
        let shown: Option<Vec<i64>> = dims
            .as_ref()
            .map(|dims| dims.iter().map(|d| d.unwrap_or(-1)).collect());
        describe(tensor.elem_type(), shown.as_ref(), false)
    })
}

/// "float[4,8]" (a symbolic dimension as ?), "float" without a shape.
fn describe(data_type: i32, dims: Option<&Vec<i64>>, nominal: bool) -> String {
    let name = dtype::name(data_type);
    match dims {
        Some(dims) if !nominal => {
            let dims: Vec<String> = dims
                .iter()
                .map(|d| if *d < 0 { "?".into() } else { d.to_string() })
                .collect();
            format!("{name}[{}]", dims.join(","))
        }
        _ => name,
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
