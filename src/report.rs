//! The inspection report: what the tool found in an input (format, graphs, opsets, optimizer
//! update nodes, trainable parameters, what a rewrite would refuse) and, on a rewritten input,
//! what its record says and what it injected. One struct; the text and JSON outputs are two
//! renderings of it.

use std::collections::HashSet;
use std::fmt::Write;

use serde::Serialize;

use crate::formats::Adapter;
use crate::generated::onnx::{GraphProto, ModelProto, NodeProto};
use crate::inject::NAME_PREFIX;
use crate::record::Recorded;

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
    /// How the input was rewritten, from its record (null when not rewritten, or rewritten by a
    /// version that kept no record).
    pub rewrite: Option<RewriteReport>,
    pub parameters: Vec<ParameterReport>,
    pub optimizer_nodes: Vec<NodeRef>,
    pub injected_nodes: Vec<NodeRef>,
    /// Tensors the rewrite added as state (slow weights, the step counter).
    pub injected_state: Vec<String>,
    /// Why `rewrite` would refuse this input (empty when it would not).
    pub refusals: Vec<String>,
    pub graphs: Vec<GraphReport>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LookaheadReport {
    pub k: u64,
    pub alpha: f64,
}

/// How a recorded rewrite was made.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RewriteReport {
    /// The averaging scheme ("lookahead").
    pub scheme: String,
    /// How it was wired: "passthrough", "reshape", "training-info".
    pub mode: String,
    /// Which weights evaluation reads: "lookahead" or "slow".
    pub eval_weights: String,
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

/// The report of an opened input: the adapter's analysis, the record of an earlier rewrite, the
/// graphs and what was injected into them.
pub fn build(input: &dyn Adapter) -> Report {
    let analysis = input.analysis();
    let mut graphs = Vec::new();
    let mut injected = Vec::new();
    for (label, file) in input.models() {
        let model = &file.model;
        let prefix = |inner: &str| {
            if label.is_empty() {
                inner.to_string()
            } else if inner == "graph" {
                label.clone()
            } else {
                format!("{label}/{inner}")
            }
        };
        if let Some(g) = &model.graph {
            graphs.push(graph_report(&prefix("graph"), model, g));
            injected_nodes(&prefix("graph"), &g.node, &mut injected);
        }
        for (i, info) in model.training_info.iter().enumerate() {
            for (what, graph) in [
                ("initialization", &info.initialization),
                ("algorithm", &info.algorithm),
            ] {
                if let Some(g) = graph {
                    let name = prefix(&format!("{what}[{i}]"));
                    graphs.push(graph_report(&name, model, g));
                    injected_nodes(&name, &g.node, &mut injected);
                }
            }
        }
    }
    let (lookahead, rewritten_by, rewrite, wrapped, state) = match &analysis.recorded {
        Recorded::None => (None, None, None, HashSet::new(), Vec::new()),
        Recorded::Record(r) => (
            Some(LookaheadReport {
                k: r.setting_u64("k").unwrap_or(0),
                alpha: r.setting_f64("alpha").unwrap_or(f64::NAN),
            }),
            Some(r.version.clone()),
            Some(RewriteReport {
                scheme: r.scheme.clone(),
                mode: r.mode.id().to_string(),
                eval_weights: r.eval_weights.id().to_string(),
            }),
            r.parameters.iter().map(|p| p.name.clone()).collect(),
            r.state_names(),
        ),
        Recorded::MarkerOnly { version, k, alpha } => (
            Some(LookaheadReport {
                k: k.parse().unwrap_or(0),
                alpha: alpha.parse().unwrap_or(f64::NAN),
            }),
            Some(version.clone()),
            None,
            HashSet::new(),
            Vec::new(),
        ),
    };
    Report {
        format: analysis.format.id().to_string(),
        input: input.path().display().to_string(),
        optimizer: analysis.optimizer.clone(),
        lookahead,
        rewritten_by,
        rewrite,
        parameters: analysis
            .parameters
            .iter()
            .map(|p| ParameterReport {
                name: p.name.clone(),
                trainable: p.trainable,
                lookahead: wrapped.contains(&p.name),
                data_type: crate::io::dtype::name(p.data_type),
                shape: p.dims.clone(),
            })
            .collect(),
        optimizer_nodes: analysis.optimizer_nodes.clone(),
        injected_nodes: injected,
        injected_state: state,
        refusals: analysis.refusals.iter().map(|e| e.to_string()).collect(),
        graphs,
    }
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

/// Nodes the rewrite injected (named with the reserved prefix), each with every node of its
/// subgraphs at any depth (an injected node's subgraphs are injected as a whole).
pub fn injected_nodes(label: &str, nodes: &[NodeProto], into: &mut Vec<NodeRef>) {
    for node in nodes.iter().filter(|n| n.name().starts_with(NAME_PREFIX)) {
        push_with_subgraphs(label, node, into);
    }
}

fn push_with_subgraphs(label: &str, node: &NodeProto, into: &mut Vec<NodeRef>) {
    into.push(NodeRef {
        graph: label.to_string(),
        name: node.name().to_string(),
        op_type: node.op_type().to_string(),
    });
    for attr in &node.attribute {
        for sub in attr.g.iter().chain(attr.graphs.iter()) {
            let sub_label = format!("{label}/{}/{}", node.name(), attr.name());
            for inner in &sub.node {
                push_with_subgraphs(&sub_label, inner, into);
            }
        }
    }
}

/// The number of nodes a list of added nodes brings, subgraphs included (what `inspect` counts as
/// injected).
pub fn count_with_subgraphs<'n>(nodes: impl IntoIterator<Item = &'n NodeProto>) -> usize {
    nodes
        .into_iter()
        .map(|node| {
            1 + crate::graph::scope::subgraphs(node)
                .map(|g| count_with_subgraphs(&g.node))
                .sum::<usize>()
        })
        .sum()
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
        if !self.refusals.is_empty() {
            let _ = writeln!(s, "\nrewrite would refuse:");
            for r in &self.refusals {
                let _ = writeln!(s, "  {r}");
            }
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
