//! The lowest IR version a model's content is valid in: the newest feature it uses (a data type,
//! a field, a kind of type) by the IR version that introduced it (onnx.proto's `Version` notes).
//! A model may be written at any IR version from there up to the one it declares: nothing it
//! holds changes meaning, which is what makes lowering the declared version safe.

use crate::generated::onnx::{
    AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto, SparseTensorProto,
    TensorProto, TypeProto, ValueInfoProto, type_proto,
};

/// The newest feature of a model, by the IR version that introduced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrNeed {
    pub ir: i64,
    /// What needs it, for a message ("tensor \"w\" of type INT4").
    pub what: String,
}

/// The IR version that introduced a tensor element type (0 for the oldest ones).
pub fn data_type_ir(data_type: i32) -> i64 {
    match data_type {
        16 => 4,       // BFLOAT16
        17..=20 => 9,  // FLOAT8E4M3FN, FLOAT8E4M3FNUZ, FLOAT8E5M2, FLOAT8E5M2FNUZ
        21 | 22 => 10, // UINT4, INT4
        23 => 11,      // FLOAT4E2M1
        24 => 12,      // FLOAT8E8M0
        25 | 26 => 13, // UINT2, INT2
        27 | 28 => 14, // FLOAT6E2M3, FLOAT6E3M2
        _ => 0,
    }
}

/// Integer attributes that name an element type (Cast's `to`, the random ops' `dtype`, ...).
const DATA_TYPE_ATTRIBUTES: [&str; 4] = ["to", "dtype", "output_dtype", "stash_type"];

/// The newest feature `model` uses; None when it uses nothing past IR 3 (opset imports, which
/// every model this tool reads has).
pub fn ir_needed(model: &ModelProto) -> Option<IrNeed> {
    let mut walk = Walk { need: None };
    if let Some(graph) = &model.graph {
        walk.graph(graph);
    }
    if !model.training_info.is_empty() {
        walk.note(7, || "training_info".into());
        for info in &model.training_info {
            info.initialization.iter().for_each(|g| walk.graph(g));
            info.algorithm.iter().for_each(|g| walk.graph(g));
        }
    }
    if !model.functions.is_empty() {
        walk.note(8, || "model-local functions".into());
        model.functions.iter().for_each(|f| walk.function(f));
    }
    if !model.configuration.is_empty() {
        walk.note(11, || "multi-device configurations".into());
    }
    walk.need
}

struct Walk {
    need: Option<IrNeed>,
}

impl Walk {
    /// Keeps the newest need (the first one found at that version).
    fn note(&mut self, ir: i64, what: impl FnOnce() -> String) {
        if self.need.as_ref().is_none_or(|n| ir > n.ir) {
            self.need = Some(IrNeed { ir, what: what() });
        }
    }

    fn data_type(&mut self, data_type: i32, whose: impl FnOnce() -> String) {
        let ir = data_type_ir(data_type);
        if ir > 0 {
            self.note(ir, || {
                format!("{} of type {}", whose(), crate::io::dtype::name(data_type))
            });
        }
    }

    fn graph(&mut self, graph: &GraphProto) {
        let name = graph.name();
        let inputs: std::collections::HashSet<&str> =
            graph.input.iter().map(|i| i.name()).collect();
        for tensor in &graph.initializer {
            self.tensor(tensor);
            if !inputs.contains(tensor.name()) {
                self.note(4, || {
                    format!("initializer {:?} that is not a graph input", tensor.name())
                });
            }
        }
        for sparse in &graph.sparse_initializer {
            self.note(6, || format!("sparse initializer in graph {name:?}"));
            self.sparse(sparse);
        }
        if !graph.quantization_annotation.is_empty() {
            self.note(5, || format!("quantization annotations in graph {name:?}"));
        }
        if !graph.metadata_props.is_empty() {
            self.note(10, || format!("metadata_props of graph {name:?}"));
        }
        for value in graph
            .input
            .iter()
            .chain(&graph.output)
            .chain(&graph.value_info)
        {
            self.value_info(value);
        }
        graph.node.iter().for_each(|n| self.node(n));
    }

    fn function(&mut self, function: &FunctionProto) {
        let name = function.name();
        if !function.attribute_proto.is_empty() {
            self.note(9, || {
                format!("default attribute values of function {name:?}")
            });
        }
        if function.overload.as_deref().is_some_and(|o| !o.is_empty()) {
            self.note(10, || format!("the overload of function {name:?}"));
        }
        if !function.metadata_props.is_empty() {
            self.note(10, || format!("metadata_props of function {name:?}"));
        }
        function
            .attribute_proto
            .iter()
            .for_each(|a| self.attribute(a, name));
        function.value_info.iter().for_each(|v| self.value_info(v));
        function.node.iter().for_each(|n| self.node(n));
    }

    fn node(&mut self, node: &NodeProto) {
        let name = node.name();
        if node.overload.as_deref().is_some_and(|o| !o.is_empty()) {
            self.note(10, || format!("the overload of node {name:?}"));
        }
        if !node.metadata_props.is_empty() {
            self.note(10, || format!("metadata_props of node {name:?}"));
        }
        if !node.device_configurations.is_empty() {
            self.note(11, || format!("device configurations of node {name:?}"));
        }
        for attribute in &node.attribute {
            self.attribute(attribute, name);
            if DATA_TYPE_ATTRIBUTES.contains(&attribute.name())
                && let Some(code) = attribute.i.and_then(|i| i32::try_from(i).ok())
            {
                self.data_type(code, || {
                    format!("attribute {:?} of node {name:?}", attribute.name())
                });
            }
        }
    }

    fn attribute(&mut self, attribute: &AttributeProto, node: &str) {
        attribute
            .t
            .iter()
            .chain(&attribute.tensors)
            .for_each(|t| self.tensor(t));
        attribute
            .sparse_tensor
            .iter()
            .chain(&attribute.sparse_tensors)
            .for_each(|s| self.sparse(s));
        attribute
            .g
            .iter()
            .chain(&attribute.graphs)
            .for_each(|g| self.graph(g));
        for tp in attribute.tp.iter().chain(&attribute.type_protos) {
            self.type_proto(tp, &|| {
                format!("attribute {:?} of node {node:?}", attribute.name())
            });
        }
    }

    fn tensor(&mut self, tensor: &TensorProto) {
        self.data_type(tensor.data_type(), || format!("tensor {:?}", tensor.name()));
        if !tensor.metadata_props.is_empty() {
            self.note(10, || {
                format!("metadata_props of tensor {:?}", tensor.name())
            });
        }
    }

    fn sparse(&mut self, sparse: &SparseTensorProto) {
        sparse
            .values
            .iter()
            .chain(&sparse.indices)
            .for_each(|t| self.tensor(t));
    }

    fn value_info(&mut self, value: &ValueInfoProto) {
        if !value.metadata_props.is_empty() {
            self.note(10, || format!("metadata_props of value {:?}", value.name()));
        }
        if let Some(tp) = &value.r#type {
            self.type_proto(tp, &|| format!("value {:?}", value.name()));
        }
    }

    fn type_proto(&mut self, tp: &TypeProto, whose: &dyn Fn() -> String) {
        use type_proto::Value;
        match &tp.value {
            Some(Value::TensorType(t)) => self.data_type(t.elem_type(), whose),
            Some(Value::SparseTensorType(t)) => {
                self.note(8, || format!("{} (a sparse tensor type)", whose()));
                self.data_type(t.elem_type(), whose);
            }
            Some(Value::OptionalType(o)) => {
                self.note(8, || format!("{} (an optional type)", whose()));
                if let Some(inner) = &o.elem_type {
                    self.type_proto(inner, whose);
                }
            }
            Some(Value::SequenceType(s)) => {
                if let Some(inner) = &s.elem_type {
                    self.type_proto(inner, whose);
                }
            }
            Some(Value::MapType(m)) => {
                self.data_type(m.key_type(), whose);
                if let Some(inner) = &m.value_type {
                    self.type_proto(inner, whose);
                }
            }
            Some(Value::OpaqueType(_)) | None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generated::onnx::{OperatorSetIdProto, StringStringEntryProto};

    fn model_with(graph: GraphProto) -> ModelProto {
        ModelProto {
            ir_version: Some(14),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(17),
            }],
            graph: Some(graph),
            ..Default::default()
        }
    }

    fn input(name: &str, elem_type: i32) -> ValueInfoProto {
        ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(elem_type),
                    shape: None,
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_plain_float_model_needs_nothing_new() {
        let graph = GraphProto {
            input: vec![input("x", 1)],
            initializer: vec![TensorProto {
                name: Some("x".into()),
                data_type: Some(1),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(ir_needed(&model_with(graph)), None);
    }

    #[test]
    fn the_newest_feature_wins_and_is_named() {
        let cast = NodeProto {
            name: Some("cast".into()),
            op_type: Some("Cast".into()),
            attribute: vec![AttributeProto {
                name: Some("to".into()),
                i: Some(22),
                ..Default::default()
            }],
            ..Default::default()
        };
        let graph = GraphProto {
            input: vec![input("x", 17)],
            node: vec![cast],
            ..Default::default()
        };
        let need = ir_needed(&model_with(graph)).unwrap();
        assert_eq!(need.ir, 10);
        assert!(
            need.what.contains("\"to\"") && need.what.contains("cast"),
            "{}",
            need.what
        );
    }

    #[test]
    fn fields_by_their_ir_version() {
        let meta = vec![StringStringEntryProto {
            key: Some("k".into()),
            value: Some("v".into()),
        }];
        let node = NodeProto {
            name: Some("n".into()),
            metadata_props: meta,
            ..Default::default()
        };
        let graph = GraphProto {
            node: vec![node],
            initializer: vec![TensorProto {
                name: Some("not_an_input".into()),
                data_type: Some(1),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut model = model_with(graph);
        assert_eq!(ir_needed(&model).map(|n| n.ir), Some(10));
        model.functions.push(FunctionProto::default());
        model.configuration.push(Default::default());
        assert_eq!(ir_needed(&model).map(|n| n.ir), Some(11));
        assert_eq!(data_type_ir(1), 0);
        assert_eq!(data_type_ir(26), 13);
    }
}
