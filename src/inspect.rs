//! The inspection report: what the tool found in an input (format, graphs, opsets, optimizer
//! update nodes, trainable parameters) and, on a rewritten input, what it injected. One struct;
//! the text and JSON outputs are two renderings of it.

use std::fmt::Write;

use serde::Serialize;

use crate::generated::onnx::{GraphProto, ModelProto};
use crate::lookahead::NAME_PREFIX;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub format: String,
    pub input: String,
    /// The inner optimizer ("AdamW", "SGD", "Momentum", "Adam", "Adagrad", ...), if recognised.
    pub optimizer: Option<String>,
    /// Set when the input was rewritten by this tool: exactly {"k", "alpha"}.
    pub lookahead: Option<LookaheadReport>,
    /// The tool version that rewrote the input (null when not rewritten).
    pub rewritten_by: Option<String>,
    pub parameters: Vec<ParameterReport>,
    pub optimizer_nodes: Vec<NodeRef>,
    pub injected_nodes: Vec<NodeRef>,
    /// Tensors the rewrite added as state (slow weights, the step counter).
    pub injected_state: Vec<String>,
    pub graphs: Vec<GraphReport>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LookaheadReport {
    pub k: u64,
    pub alpha: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ParameterReport {
    pub name: String,
    /// Whether the optimizer updates it.
    pub trainable: bool,
    /// Whether it has Lookahead slow weights (only on rewritten input).
    pub lookahead: bool,
    pub data_type: String,
    pub shape: Vec<i64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeRef {
    pub graph: String,
    pub name: String,
    pub op_type: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GraphReport {
    /// Where the graph is: a file of an artifacts directory, "graph", "algorithm[i]", ...
    pub graph: String,
    pub name: String,
    pub ir_version: i64,
    pub opsets: Vec<OpsetReport>,
    pub nodes: usize,
    pub inputs: usize,
    pub outputs: usize,
    pub initializers: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OpsetReport {
    pub domain: String,
    pub version: i64,
}

pub fn data_type_name(data_type: i32) -> String {
    crate::generated::onnx::tensor_proto::DataType::try_from(data_type)
        .map(|d| d.as_str_name().to_lowercase())
        .unwrap_or_else(|_| format!("type{data_type}"))
}

/// Summary of one graph of a model.
pub fn graph_report(label: &str, model: &ModelProto, graph: &GraphProto) -> GraphReport {
    GraphReport {
        graph: label.to_string(),
        name: graph.name().to_string(),
        ir_version: model.ir_version(),
        opsets: model
            .opset_import
            .iter()
            .map(|o| OpsetReport {
                domain: match o.domain() {
                    "" => "ai.onnx".to_string(),
                    d => d.to_string(),
                },
                version: o.version(),
            })
            .collect(),
        nodes: graph.node.len(),
        inputs: graph.input.len(),
        outputs: graph.output.len(),
        initializers: graph.initializer.len(),
    }
}

/// Nodes the rewrite injected (recognised by the name prefix), including every node of their
/// subgraphs (an injected node's subgraphs are injected as a whole).
pub fn injected_nodes(label: &str, graph: &GraphProto, into: &mut Vec<NodeRef>) {
    for node in &graph.node {
        if !node.name().starts_with(NAME_PREFIX) {
            continue;
        }
        into.push(NodeRef {
            graph: label.to_string(),
            name: node.name().to_string(),
            op_type: node.op_type().to_string(),
        });
        for attr in &node.attribute {
            for sub in attr.g.iter().chain(attr.graphs.iter()) {
                let sub_label = format!("{label}/{}/{}", node.name(), attr.name());
                for inner in &sub.node {
                    into.push(NodeRef {
                        graph: sub_label.clone(),
                        name: inner.name().to_string(),
                        op_type: inner.op_type().to_string(),
                    });
                }
            }
        }
    }
}

impl Report {
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "input:     {}", self.input);
        let _ = writeln!(s, "format:    {}", self.format);
        let _ = writeln!(
            s,
            "optimizer: {}",
            self.optimizer.as_deref().unwrap_or("(none recognised)")
        );
        match &self.lookahead {
            Some(l) => {
                let by = self.rewritten_by.as_deref().unwrap_or("?");
                let _ = writeln!(
                    s,
                    "lookahead: k={} alpha={} (rewritten by onnx-lookahead {by})",
                    l.k, l.alpha
                );
            }
            None => {
                let _ = writeln!(s, "lookahead: not rewritten");
            }
        }
        let _ = writeln!(s, "\ngraphs:");
        for g in &self.graphs {
            let opsets: Vec<String> = g
                .opsets
                .iter()
                .map(|o| format!("{} {}", o.domain, o.version))
                .collect();
            let _ = writeln!(
                s,
                "  {:<24} {:>6} nodes {:>4} inputs {:>4} outputs  ir {}  opsets: {}",
                g.graph,
                g.nodes,
                g.inputs,
                g.outputs,
                g.ir_version,
                opsets.join(", ")
            );
        }
        let _ = writeln!(s, "\noptimizer update nodes:");
        if self.optimizer_nodes.is_empty() {
            let _ = writeln!(s, "  (none)");
        }
        for n in &self.optimizer_nodes {
            let _ = writeln!(s, "  {:<24} {} [{}]", n.graph, n.op_type, n.name);
        }
        let _ = writeln!(s, "\nparameters ({}):", self.parameters.len());
        let width = self
            .parameters
            .iter()
            .map(|p| p.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let _ = writeln!(
            s,
            "  {:<width$}  {:<9}  {:<9}  {:<8}  shape",
            "name", "trainable", "lookahead", "type"
        );
        for p in &self.parameters {
            let shape: Vec<String> = p.shape.iter().map(|d| d.to_string()).collect();
            let _ = writeln!(
                s,
                "  {:<width$}  {:<9}  {:<9}  {:<8}  [{}]",
                p.name,
                if p.trainable { "yes" } else { "no" },
                if p.lookahead { "yes" } else { "no" },
                p.data_type,
                shape.join(", ")
            );
        }
        if !self.injected_nodes.is_empty() || !self.injected_state.is_empty() {
            let _ = writeln!(s, "\ninjected state ({}):", self.injected_state.len());
            for t in &self.injected_state {
                let _ = writeln!(s, "  {t}");
            }
            let mut current = None;
            let _ = writeln!(s, "\ninjected nodes ({}):", self.injected_nodes.len());
            for n in &self.injected_nodes {
                if current != Some(&n.graph) {
                    let _ = writeln!(s, "  {}:", n.graph);
                    current = Some(&n.graph);
                }
                let _ = writeln!(s, "    {:<22} {}", n.op_type, n.name);
            }
        }
        s
    }
}
