//! Small constructors for the nodes, tensors and value infos passes inject. They only build
//! values; where they go is decided by the plan that applies them.

use bytes::Bytes;

use crate::generated::onnx::{
    AttributeProto, GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto,
    type_proto,
};

pub const MS_DOMAIN: &str = "com.microsoft";

/// A node builder: `Node::new("Add").inputs([a, b]).outputs([c]).name(n).build()`.
#[derive(Debug, Clone, Default)]
pub struct Node {
    proto: NodeProto,
}

impl Node {
    pub fn new(op_type: &str) -> Self {
        Node {
            proto: NodeProto {
                op_type: Some(op_type.to_string()),
                ..Default::default()
            },
        }
    }

    pub fn domain(mut self, domain: &str) -> Self {
        if !domain.is_empty() {
            self.proto.domain = Some(domain.to_string());
        }
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.proto.name = Some(name.into());
        self
    }

    pub fn inputs<I: IntoIterator<Item = S>, S: Into<String>>(mut self, inputs: I) -> Self {
        self.proto.input = inputs.into_iter().map(Into::into).collect();
        self
    }

    pub fn outputs<I: IntoIterator<Item = S>, S: Into<String>>(mut self, outputs: I) -> Self {
        self.proto.output = outputs.into_iter().map(Into::into).collect();
        self
    }

    pub fn attr_int(mut self, name: &str, value: i64) -> Self {
        self.proto.attribute.push(AttributeProto {
            name: Some(name.to_string()),
            r#type: Some(AttributeType::Int as i32),
            i: Some(value),
            ..Default::default()
        });
        self
    }

    pub fn attr_float(mut self, name: &str, value: f32) -> Self {
        self.proto.attribute.push(AttributeProto {
            name: Some(name.to_string()),
            r#type: Some(AttributeType::Float as i32),
            f: Some(value),
            ..Default::default()
        });
        self
    }

    pub fn attr_tensor(mut self, name: &str, value: TensorProto) -> Self {
        self.proto.attribute.push(AttributeProto {
            name: Some(name.to_string()),
            r#type: Some(AttributeType::Tensor as i32),
            t: Some(value),
            ..Default::default()
        });
        self
    }

    pub fn attr_graph(mut self, name: &str, value: GraphProto) -> Self {
        self.proto.attribute.push(AttributeProto {
            name: Some(name.to_string()),
            r#type: Some(AttributeType::Graph as i32),
            g: Some(value),
            ..Default::default()
        });
        self
    }

    pub fn build(self) -> NodeProto {
        self.proto
    }
}

/// A tensor from raw little-endian bytes.
pub fn tensor_raw(name: &str, data_type: DataType, dims: &[i64], raw: Bytes) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        data_type: Some(data_type as i32),
        dims: dims.to_vec(),
        raw_data: Some(raw),
        ..Default::default()
    }
}

pub fn scalar_f32(name: &str, value: f32) -> TensorProto {
    tensor_raw(
        name,
        DataType::Float,
        &[],
        Bytes::copy_from_slice(&value.to_le_bytes()),
    )
}

pub fn tensor_f32(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    tensor_raw(name, DataType::Float, dims, Bytes::from(raw))
}

pub fn scalar_i64(name: &str, value: i64) -> TensorProto {
    tensor_raw(
        name,
        DataType::Int64,
        &[],
        Bytes::copy_from_slice(&value.to_le_bytes()),
    )
}

pub fn tensor_bool(name: &str, dims: &[i64], values: &[bool]) -> TensorProto {
    let raw: Vec<u8> = values.iter().map(|&v| u8::from(v)).collect();
    tensor_raw(name, DataType::Bool, dims, Bytes::from(raw))
}

/// A floating-point scalar of the given element type (float, double, float16, bfloat16), the
/// value rounded to the type.
pub fn scalar_float_of_type(name: &str, data_type: DataType, value: f64) -> Option<TensorProto> {
    let raw = crate::io::values::encode(data_type as i32, &[value])?;
    Some(tensor_raw(name, data_type, &[], Bytes::from(raw)))
}

/// A tensor value info with a fixed shape (None: rank unknown).
pub fn value_info(name: &str, elem_type: i32, dims: Option<&[i64]>) -> ValueInfoProto {
    let shape = dims.map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .map(|&d| tensor_shape_proto::Dimension {
                value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                ..Default::default()
            })
            .collect(),
    });
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem_type),
                shape,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A copy of `other`'s value info under a new name (same type and shape).
pub fn value_info_renamed(other: &ValueInfoProto, name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: other.r#type.clone(),
        ..Default::default()
    }
}

/// A subgraph (If branch) with no inputs.
pub fn branch(name: &str, nodes: Vec<NodeProto>, outputs: Vec<ValueInfoProto>) -> GraphProto {
    GraphProto {
        name: Some(name.to_string()),
        node: nodes,
        output: outputs,
        ..Default::default()
    }
}
