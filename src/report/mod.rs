//! The inspection report: what the tool found in an input (format, graphs, opsets, optimizer
//! update nodes, trainable parameters, what a rewrite would refuse) and, on a rewritten input,
//! what its record says and what it injected. One struct; the text and JSON outputs are two
//! renderings of it.

mod checkpoint;
pub mod compat;
pub mod draw;
mod text;
pub mod wiring;

pub use crate::io::human_bytes;

use std::collections::HashSet;

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
    /// Set when the input was rewritten for Lookahead: k and alpha, and where in the cycle the
    /// state was saved when the input holds it (artifacts, checkpoints, exports).
    pub lookahead: Option<LookaheadReport>,
    /// Set when the input was rewritten by this tool with a record: the averaging scheme, its
    /// settings, and where its schedule stands when the input holds the state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub averaging: Option<AveragingReport>,
    /// The tool version that rewrote the input (null when not rewritten).
    pub rewritten_by: Option<String>,
    /// How the input was rewritten, from its record (null when not rewritten, or rewritten by a
    /// version that kept no record).
    pub rewrite: Option<RewriteReport>,
    pub parameters: Vec<ParameterReport>,
    /// Bytes of all parameters.
    pub parameter_bytes: u64,
    pub optimizer_nodes: Vec<NodeRef>,
    pub injected_nodes: Vec<NodeRef>,
    /// Tensors the rewrite added as state (slow weights, the step counter).
    pub injected_state: Vec<String>,
    /// Bytes of that state (each tensor counted once, as the runtime holds it).
    pub state_bytes: u64,
    /// What a checkpoint holds (ORT artifacts and lone checkpoints).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<checkpoint::CheckpointReport>,
    /// Why `rewrite` would refuse this input (empty when it would not).
    pub refusals: Vec<String>,
    /// Artifacts and checkpoints: which ONNX Runtime releases load it (training 1.16-1.19,
    /// onnxruntime-web 1.17-1.19), and what `--target-ort` can do (empty for models).
    pub compatibility: Vec<compat::CompatibilityReport>,
    pub graphs: Vec<GraphReport>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LookaheadReport {
    pub k: u64,
    pub alpha: f64,
    /// Inner steps since the last sync (k: a sync is pending, done by the next training step).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_pending: Option<bool>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AveragingReport {
    /// The registry name ("lookahead", "ema", "swa").
    pub scheme: String,
    /// The scheme's name for people ("EMA").
    pub title: String,
    /// The scheme with its settings, for people ("EMA decay=0.999 every=1").
    pub description: String,
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// What an update does, one line per assignment.
    pub update: Vec<String>,
    /// The optimizer step of the first update, and the steps between updates after it.
    pub first_update: u64,
    pub period: u64,
    /// Whether an update writes the weights training continues from (Lookahead), not only the
    /// average.
    pub moves_weights: bool,
    /// The roles of each wrapped parameter's state tensors ("slow", "ema", "swa").
    pub state_roles: Vec<String>,
    /// Optimizer steps until the next update of the average (0: one is pending).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps_to_update: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_pending: Option<bool>,
    /// The scheme's set-wide state as saved (SWA: "samples", the number of samples averaged).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub shared: serde_json::Map<String, serde_json::Value>,
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
    /// What a sync does to the inner optimizer's state: "keep", "reset" or "pullback".
    pub inner_state: String,
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
    /// Bytes of its values (null for strings and unknown types).
    pub bytes: Option<u64>,
}

pub use crate::graph::NodeRef;

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
    /// On rewritten input, where the rewrite sits in this graph (absent for graphs it left
    /// alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lookahead: Option<wiring::GraphLookahead>,
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
        // Each model carries its own record (its own undo: the aliases of its graph).
        let record = match crate::record::recorded(model) {
            Recorded::Record(r) => Some(r),
            _ => None,
        };
        let wired = |g: &GraphProto, info: Option<usize>| {
            record
                .as_ref()
                .and_then(|r| wiring::wiring(r, model, g, info))
        };
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
            let mut report = graph_report(&prefix("graph"), model, g);
            report.lookahead = wired(g, None);
            graphs.push(report);
            injected_nodes(&prefix("graph"), &g.node, &mut injected);
        }
        for (i, info) in model.training_info.iter().enumerate() {
            for (what, graph) in [
                ("initialization", &info.initialization),
                ("algorithm", &info.algorithm),
            ] {
                if let Some(g) = graph {
                    let name = prefix(&format!("{what}[{i}]"));
                    let mut report = graph_report(&name, model, g);
                    if what == "algorithm" {
                        report.lookahead = wired(g, Some(i));
                    }
                    graphs.push(report);
                    injected_nodes(&name, &g.node, &mut injected);
                }
            }
        }
    }
    let (lookahead, rewritten_by, rewrite, wrapped, state) = match &analysis.recorded {
        Recorded::None => (None, None, None, HashSet::new(), Vec::new()),
        Recorded::Record(r) => (
            // Lookahead's own settings, kept under this key for the readers of earlier reports.
            match (
                r.settings.get("k").and_then(serde_json::Value::as_u64),
                r.settings.get("alpha").and_then(serde_json::Value::as_f64),
            ) {
                (Some(k), Some(alpha)) => Some(LookaheadReport {
                    k,
                    alpha,
                    position: None,
                    sync_pending: None,
                }),
                _ => None,
            },
            Some(r.version.clone()),
            Some(RewriteReport {
                scheme: r.scheme.clone(),
                mode: r.mode.id().to_string(),
                eval_weights: r.eval_weights.id().to_string(),
                inner_state: r
                    .settings
                    .get("inner_state")
                    .and_then(|v| v.as_str())
                    .unwrap_or("keep")
                    .to_string(),
            }),
            r.parameters.iter().map(|p| p.name.clone()).collect(),
            r.state_names(),
        ),
        Recorded::MarkerOnly { version, k, alpha } => (
            Some(LookaheadReport {
                k: k.parse().unwrap_or(0),
                alpha: alpha.parse().unwrap_or(f64::NAN),
                position: None,
                sync_pending: None,
            }),
            Some(version.clone()),
            None,
            HashSet::new(),
            Vec::new(),
        ),
    };
    let sizes = checkpoint::TensorSizes::of(input);
    let state_bytes = state.iter().filter_map(|s| sizes.bytes(s)).sum();
    let mut lookahead = lookahead;
    let averaging = match &analysis.recorded {
        Recorded::Record(r) => averaging(r, &sizes),
        _ => None,
    };
    if let (Some(l), Some(a)) = (lookahead.as_mut(), &averaging)
        && let Some(to_update) = a.steps_to_update
    {
        l.position = Some(l.k.saturating_sub(to_update));
        l.sync_pending = a.update_pending;
    }
    let parameters: Vec<ParameterReport> = analysis
        .parameters
        .iter()
        .map(|p| ParameterReport {
            name: p.name.clone(),
            trainable: p.trainable,
            lookahead: wrapped.contains(&p.name),
            data_type: crate::io::dtype::name(p.data_type),
            shape: p.dims.clone(),
            bytes: crate::io::dtype::tensor_byte_length(&p.dims, p.data_type),
        })
        .collect();
    Report {
        format: analysis.format.id().to_string(),
        input: input.path().display().to_string(),
        optimizer: analysis.optimizer.clone(),
        lookahead,
        averaging,
        rewritten_by,
        rewrite,
        parameter_bytes: parameters.iter().filter_map(|p| p.bytes).sum(),
        parameters,
        optimizer_nodes: analysis.optimizer_nodes.clone(),
        injected_nodes: injected,
        injected_state: state,
        state_bytes,
        checkpoint: input.checkpoint().map(checkpoint::report),
        refusals: analysis.refusals.iter().map(|e| e.to_string()).collect(),
        compatibility: compat::build(input),
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
        lookahead: None,
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

/// The scheme of a record, and where its schedule stands in the saved state.
fn averaging(
    r: &crate::record::RewriteRecord,
    sizes: &checkpoint::TensorSizes,
) -> Option<AveragingReport> {
    let scheme = r.scheme().ok()?;
    let mut report = AveragingReport {
        scheme: r.scheme.clone(),
        title: scheme.title().to_string(),
        description: scheme.describe(),
        settings: r.settings.clone(),
        update: scheme.update_lines(),
        first_update: scheme.schedule().first,
        period: scheme.schedule().period,
        moves_weights: scheme.moves_weights(),
        state_roles: scheme.state_slots().iter().map(|s| s.to_string()).collect(),
        steps_to_update: None,
        update_pending: None,
        shared: serde_json::Map::new(),
    };
    // A value training never writes has no position (the analysis lists it as a refusal).
    if let Some(position) = r
        .counters
        .first()
        .and_then(|c| sizes.value(c))
        .and_then(|value| r.position(value).ok())
    {
        report.steps_to_update = Some(position.steps_to_update);
        report.update_pending = Some(position.pending);
    }
    for (role, name) in scheme.shared_slots().iter().zip(&r.shared) {
        if let Some(value) = sizes.value(name) {
            // Counts are whole numbers; show them as such.
            let shown = if value.fract() == 0.0 && (0.0..9e15).contains(&value) {
                serde_json::json!(value as u64)
            } else {
                serde_json::json!(value)
            };
            report.shared.insert(role.to_string(), shown);
        }
    }
    Some(report)
}
