//! Where a recorded rewrite sits in one graph: the If it injected (and whether that If syncs or,
//! in an ORT eval graph, chooses the weights evaluation reads), the step counter, and per wrapped
//! parameter its state and how the parameter's readers were redirected. Read from the record of
//! the graph's model (parameters, state, counters, undo), so a drawing of the rewrite needs no
//! guess from node shapes; only the reader counts come from the graph itself.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::generated::onnx::{GraphProto, ModelProto, NodeProto};
use crate::inject::{EVAL_IF, NAME_PREFIX};
use crate::record::RewriteRecord;

/// The rewrite's wiring in one graph (`GraphReport.lookahead`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GraphLookahead {
    /// "sync": the If syncs every k steps (training graphs, training_info algorithms); "eval":
    /// the If chooses the weights evaluation reads (ORT eval graphs).
    pub role: String,
    /// The injected If (null if the graph holds state but no If, e.g. an edited model).
    pub if_node: Option<String>,
    /// The step counter the graph reads.
    pub counter: Option<String>,
    /// The wrapped parameters whose state this graph holds, in the record's order.
    pub parameters: Vec<WiredParameter>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WiredParameter {
    pub name: String,
    /// Its state tensors (Lookahead: the slow weight; then any cache of the inner state).
    pub state: Vec<String>,
    /// ORT: the tensor every original reader of the parameter reads instead (an alias that
    /// exists only after the If ran, or the eval view).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Nodes of the graph (subgraphs included) that read the alias.
    pub readers: usize,
    /// training_info: the parameter's update_binding now (the If's output) and before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_binding: Option<Rebinding>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rebinding {
    pub value: String,
    pub was: Option<String>,
}

/// The wiring of `record` in `graph` (the main graph, or `algorithm[info]`); None when the graph
/// holds none of the rewrite's state (the optimizer model, an initialization graph).
pub fn wiring(
    record: &RewriteRecord,
    model: &ModelProto,
    graph: &GraphProto,
    info: Option<usize>,
) -> Option<GraphLookahead> {
    let held: HashSet<&str> = graph
        .input
        .iter()
        .map(|i| i.name())
        .chain(graph.initializer.iter().map(|t| t.name()))
        .collect();
    let counter = record
        .counters
        .iter()
        .find(|c| held.contains(c.as_str()))
        .cloned();
    let wrapped: Vec<_> = record
        .parameters
        .iter()
        .filter(|p| p.state.iter().any(|s| held.contains(s.as_str())))
        .collect();
    if wrapped.is_empty() && counter.is_none() {
        return None;
    }
    // The injected If at the top level: the rewrite adds exactly one per graph it wires.
    let if_node = graph
        .node
        .iter()
        .find(|n| n.op_type() == "If" && n.name().starts_with(NAME_PREFIX))
        .map(|n| n.name().to_string());
    let role = match &if_node {
        Some(name) if name.starts_with(&format!("{NAME_PREFIX}{EVAL_IF}")) => "eval",
        _ => "sync",
    };
    let aliases: HashMap<&str, &str> = record
        .undo
        .reads
        .iter()
        .map(|(alias, original)| (original.as_str(), alias.as_str()))
        .collect();
    let bindings = info.and_then(|i| model.training_info.get(i)).map(|entry| {
        entry
            .update_binding
            .iter()
            .map(|b| (b.key(), b.value()))
            .collect::<HashMap<_, _>>()
    });
    let mut reads = HashMap::new();
    count_reads(&graph.node, &mut reads);
    let parameters = wrapped
        .into_iter()
        .map(|p| {
            let alias = aliases
                .get(p.name.as_str())
                .filter(|a| reads.contains_key(**a))
                .map(|a| a.to_string());
            let readers = alias
                .as_deref()
                .and_then(|a| reads.get(a))
                .copied()
                .unwrap_or(0);
            let update_binding =
                bindings
                    .as_ref()
                    .and_then(|b| b.get(p.name.as_str()))
                    .map(|value| Rebinding {
                        value: value.to_string(),
                        was: record
                            .undo
                            .update_bindings
                            .iter()
                            .find(|(i, key, _)| Some(*i) == info && *key == p.name)
                            .and_then(|(_, _, was)| was.clone()),
                    });
            WiredParameter {
                name: p.name.clone(),
                state: p.state.clone(),
                alias,
                readers,
                update_binding,
            }
        })
        .collect();
    Some(GraphLookahead {
        role: role.to_string(),
        if_node,
        counter,
        parameters,
    })
}

/// For every name, how many nodes (at any depth) read it; a node reading it twice counts once.
fn count_reads<'g>(nodes: &'g [NodeProto], into: &mut HashMap<&'g str, usize>) {
    for node in nodes {
        let mut seen = HashSet::new();
        for input in &node.input {
            if !input.is_empty() && seen.insert(input.as_str()) {
                *into.entry(input.as_str()).or_default() += 1;
            }
        }
        for sub in crate::graph::scope::subgraphs(node) {
            count_reads(&sub.node, into);
        }
    }
}
