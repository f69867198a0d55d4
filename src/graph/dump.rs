//! A readable text rendering of graphs, stable enough for snapshot tests: one line per node
//! with op, inputs and outputs, attributes in short form, subgraphs indented under their node.
//! Tensor payloads are summarised (type, shape, a few values), never printed whole.

use std::fmt::Write;

use crate::generated::onnx::{
    AttributeProto, GraphProto, TensorProto, TypeProto, ValueInfoProto,
    attribute_proto::AttributeType, tensor_proto::DataType, type_proto,
};

pub fn dump_graph(graph: &GraphProto) -> String {
    let mut out = String::new();
    write_graph(&mut out, graph, 0);
    out
}

fn pad(depth: usize) -> String {
    "  ".repeat(depth)
}

fn write_graph(out: &mut String, graph: &GraphProto, depth: usize) {
    let p = pad(depth);
    let _ = writeln!(out, "{p}graph {:?}", graph.name());
    for input in &graph.input {
        let _ = writeln!(out, "{p}  input {}", value_info(input));
    }
    for init in &graph.initializer {
        let _ = writeln!(out, "{p}  initializer {}", tensor_summary(init));
    }
    for node in &graph.node {
        let domain = match node.domain() {
            "" => String::new(),
            d => format!("{d}."),
        };
        let name = match node.name() {
            "" => String::new(),
            n => format!(" [{n}]"),
        };
        let attrs: Vec<String> = node
            .attribute
            .iter()
            .filter(|a| a.g.is_none() && a.graphs.is_empty())
            .map(attribute_summary)
            .collect();
        let attrs = if attrs.is_empty() {
            String::new()
        } else {
            format!(" {{{}}}", attrs.join(", "))
        };
        let _ = writeln!(
            out,
            "{p}  {} = {domain}{}({}){attrs}{name}",
            node.output.join(", "),
            node.op_type(),
            node.input.join(", ")
        );
        for attr in &node.attribute {
            for g in attr.g.iter().chain(attr.graphs.iter()) {
                let _ = writeln!(out, "{p}    {}:", attr.name());
                write_graph(out, g, depth + 3);
            }
        }
    }
    for output in &graph.output {
        let _ = writeln!(out, "{p}  output {}", value_info(output));
    }
}

fn elem_type_name(elem: i32) -> String {
    DataType::try_from(elem)
        .map(|d| d.as_str_name().to_lowercase())
        .unwrap_or_else(|_| format!("type{elem}"))
}

fn type_summary(t: &TypeProto) -> String {
    match &t.value {
        Some(type_proto::Value::TensorType(tt)) => {
            let dims = tt.shape.as_ref().map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(
                            crate::generated::onnx::tensor_shape_proto::dimension::Value::DimValue(
                                v,
                            ),
                        ) => v.to_string(),
                        Some(
                            crate::generated::onnx::tensor_shape_proto::dimension::Value::DimParam(
                                p,
                            ),
                        ) => p.clone(),
                        None => "?".into(),
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            });
            match dims {
                Some(d) => format!("{}[{d}]", elem_type_name(tt.elem_type())),
                None => elem_type_name(tt.elem_type()),
            }
        }
        Some(type_proto::Value::SequenceType(s)) => match &s.elem_type {
            Some(inner) => format!("seq({})", type_summary(inner)),
            None => "seq(?)".into(),
        },
        Some(_) => "other".into(),
        None => "?".into(),
    }
}

fn value_info(v: &ValueInfoProto) -> String {
    match &v.r#type {
        Some(t) => format!("{}: {}", v.name(), type_summary(t)),
        None => v.name().to_string(),
    }
}

fn tensor_summary(t: &TensorProto) -> String {
    let dims: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
    let mut s = format!(
        "{}: {}[{}]",
        t.name(),
        elem_type_name(t.data_type()),
        dims.join(",")
    );
    if let Some(values) = small_values(t) {
        let _ = write!(s, " = {values}");
    }
    s
}

/// The values of scalars and tiny tensors (e.g. k, alpha, flags), to make constants reviewable.
fn small_values(t: &TensorProto) -> Option<String> {
    // Checked: dims come from the input and their product can overflow.
    let n = t.dims.iter().try_fold(1i64, |n, &d| n.checked_mul(d));
    if n.is_none_or(|n| n > 4) {
        return None;
    }
    let raw = t.raw_data.as_deref().unwrap_or(&[]);
    let values: Vec<String> = match DataType::try_from(t.data_type()).ok()? {
        DataType::Float if !t.float_data.is_empty() => {
            t.float_data.iter().map(|v| format!("{v:?}")).collect()
        }
        DataType::Float => raw
            .chunks_exact(4)
            .map(|c| format!("{:?}", f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        DataType::Int64 if !t.int64_data.is_empty() => {
            t.int64_data.iter().map(|v| v.to_string()).collect()
        }
        DataType::Int64 => raw
            .chunks_exact(8)
            .map(|c| {
                i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]).to_string()
            })
            .collect(),
        DataType::Bool if !t.int32_data.is_empty() => {
            t.int32_data.iter().map(|v| (*v != 0).to_string()).collect()
        }
        DataType::Bool => raw.iter().map(|v| (*v != 0).to_string()).collect(),
        _ => return None,
    };
    Some(format!("[{}]", values.join(", ")))
}

fn attribute_summary(a: &AttributeProto) -> String {
    let value = match a.r#type() {
        AttributeType::Float => format!("{:?}", a.f()),
        AttributeType::Int => a.i().to_string(),
        AttributeType::String => format!("{:?}", String::from_utf8_lossy(a.s())),
        AttributeType::Tensor => a.t.as_ref().map(tensor_summary).unwrap_or_default(),
        AttributeType::Floats => format!("{:?}", a.floats),
        AttributeType::Ints => format!("{:?}", a.ints),
        AttributeType::Strings => format!(
            "{:?}",
            a.strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
        ),
        other => format!("<{}>", other.as_str_name()),
    };
    format!("{}={value}", a.name())
}

/// The main graph, then every training_info graph, with the model's metadata.
pub fn dump_model(model: &crate::generated::onnx::ModelProto) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "ir_version {}", model.ir_version());
    for o in &model.opset_import {
        let _ = writeln!(out, "opset {:?} {}", o.domain(), o.version());
    }
    for p in &model.metadata_props {
        let _ = writeln!(out, "metadata {:?} = {:?}", p.key(), p.value());
    }
    if let Some(g) = &model.graph {
        write_graph(&mut out, g, 0);
    }
    for (i, info) in model.training_info.iter().enumerate() {
        let _ = writeln!(out, "training_info[{i}]");
        if let Some(g) = &info.initialization {
            let _ = writeln!(out, "  initialization:");
            write_graph(&mut out, g, 2);
        }
        for b in &info.initialization_binding {
            let _ = writeln!(out, "  initialization_binding {} <- {}", b.key(), b.value());
        }
        if let Some(g) = &info.algorithm {
            let _ = writeln!(out, "  algorithm:");
            write_graph(&mut out, g, 2);
        }
        for b in &info.update_binding {
            let _ = writeln!(out, "  update_binding {} <- {}", b.key(), b.value());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_dims_are_not_multiplied_out() {
        // Found by fuzz/ (fuzz/findings/onnx_model/dump-dims-product-overflow): the product of
        // dims overflowed i64, a panic with overflow checks.
        let t = TensorProto {
            dims: vec![i64::MAX, 3],
            data_type: Some(DataType::Float as i32),
            ..Default::default()
        };
        assert_eq!(small_values(&t), None);
        let scalar = TensorProto {
            data_type: Some(DataType::Float as i32),
            float_data: vec![0.5],
            ..Default::default()
        };
        assert_eq!(small_values(&scalar).as_deref(), Some("[0.5]"));
    }
}
