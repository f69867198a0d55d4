//! An emitter for injected nodes, in the manner of tract's `wire_node`: `op` adds a node and
//! returns the fresh name of its output, so arithmetic reads like the formula it builds.
//! Scalar constants are collected once per type and value, for the caller to place as
//! initializers of the enclosing graph (subgraph nodes read them from the outer scope).

use std::collections::{BTreeMap, HashSet};

use crate::generated::onnx::{NodeProto, TensorProto, tensor_proto::DataType};
use crate::graph::build::{self, Node};
use crate::graph::names::NameGenerator;

pub struct Emitter<'n> {
    names: &'n mut NameGenerator,
    prefix: &'static str,
    nodes: Vec<NodeProto>,
    /// The outputs of `nodes`.
    produced: HashSet<String>,
    constants: Vec<TensorProto>,
    by_value: BTreeMap<(i32, u64), String>,
}

impl<'n> Emitter<'n> {
    /// Every name the emitter creates starts with `prefix`.
    pub fn new(names: &'n mut NameGenerator, prefix: &'static str) -> Self {
        Emitter {
            names,
            prefix,
            nodes: Vec::new(),
            produced: HashSet::new(),
            constants: Vec::new(),
            by_value: BTreeMap::new(),
        }
    }

    /// A fresh name `<prefix><hint>`.
    pub fn fresh(&mut self, hint: &str) -> String {
        self.names.fresh(&format!("{}{hint}", self.prefix))
    }

    /// Adds `op_type(inputs)` with one output named after `hint`; returns the output.
    pub fn op(&mut self, op_type: &str, inputs: &[&str], hint: &str) -> String {
        let output = self.fresh(hint);
        let name = self.fresh(&op_type.to_lowercase());
        self.node(
            Node::new(op_type)
                .inputs(inputs.iter().copied())
                .outputs([output.as_str()])
                .name(name)
                .build(),
        );
        output
    }

    /// Adds a node built by the caller (several outputs, attributes, another domain); it gets a
    /// fresh name if it has none.
    pub fn node(&mut self, mut node: NodeProto) {
        if node.name().is_empty() {
            node.name = Some(self.fresh(&node.op_type().to_lowercase()));
        }
        self.produced.extend(node.output.iter().cloned());
        self.nodes.push(node);
    }

    /// The name of a scalar constant of a floating-point `data_type` holding `value` (rounded to
    /// the type), created on first use. None when the type is not floating-point.
    pub fn scalar(&mut self, data_type: i32, value: f64, hint: &str) -> Option<String> {
        let key = (data_type, value.to_bits());
        if let Some(name) = self.by_value.get(&key) {
            return Some(name.clone());
        }
        let name = self.fresh(hint);
        let tensor =
            build::scalar_float_of_type(&name, DataType::try_from(data_type).ok()?, value)?;
        self.constants.push(tensor);
        self.by_value.insert(key, name.clone());
        Some(name)
    }

    /// Whether a node emitted so far produces `name`.
    pub fn produced(&self, name: &str) -> bool {
        self.produced.contains(name)
    }

    /// The nodes emitted so far, leaving the emitter empty of nodes (constants stay collected).
    pub fn take_nodes(&mut self) -> Vec<NodeProto> {
        self.produced.clear();
        std::mem::take(&mut self.nodes)
    }

    /// The constants collected, to be added as initializers of the enclosing graph.
    pub fn take_constants(&mut self) -> Vec<TensorProto> {
        std::mem::take(&mut self.constants)
    }

    /// The name generator, for names the caller makes itself.
    pub fn names(&mut self) -> &mut NameGenerator {
        self.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::dtype::code;

    #[test]
    fn ops_get_fresh_names_and_constants_are_shared() {
        let mut names = NameGenerator::empty();
        names.reserve(["p__d"]);
        let mut e = Emitter::new(&mut names, "p__");
        let d = e.op("Sub", &["a", "b"], "d");
        assert_eq!(d, "p__d_1");
        let alpha = e.scalar(code::FLOAT, 0.5, "alpha").unwrap();
        assert_eq!(e.scalar(code::FLOAT, 0.5, "alpha").unwrap(), alpha);
        assert_ne!(e.scalar(code::DOUBLE, 0.5, "alpha").unwrap(), alpha);
        assert!(e.scalar(code::INT64, 0.5, "alpha").is_none());
        let nodes = e.take_nodes();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].name(), "p__sub");
        assert_eq!(e.take_constants().len(), 2);
    }
}
