//! A dataflow view of one ONNX graph on petgraph: a node per ONNX node, an edge per tensor from
//! its producer to each consumer (explicit inputs and names read by subgraphs). Graph inputs and
//! initializers have no producer. Built once per graph; passes query it, they do not edit it.

use std::collections::{BTreeSet, HashMap, HashSet};

use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;

use crate::generated::onnx::{GraphProto, NodeProto};
use crate::graph::scope;

/// Where a tensor name comes from within one graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    GraphInput,
    Initializer,
    /// Output `slot` of the node at this position in GraphProto.node.
    Node {
        node: usize,
        slot: usize,
    },
    /// Not defined in this graph: an outer-scope value (or undefined, which validation reports).
    Outer,
}

/// A tensor name produced more than once (violates static single assignment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateDefinition {
    pub name: String,
}

pub struct Dataflow {
    /// Node weight: position in GraphProto.node. Edge weight: the tensor name.
    pub dag: StableDiGraph<usize, String>,
    index: Vec<NodeIndex>,
    sources: HashMap<String, Source>,
    consumers: HashMap<String, Vec<usize>>,
    graph_outputs: HashSet<String>,
}

impl Dataflow {
    /// Builds the view. Fails when a name is defined twice in this graph's scope.
    pub fn build(graph: &GraphProto) -> Result<Self, DuplicateDefinition> {
        let mut sources = HashMap::new();
        for input in &graph.input {
            sources.insert(input.name().to_string(), Source::GraphInput);
        }
        // IR < 4 lists initializers among the inputs too; that is not a second definition.
        for init in &graph.initializer {
            sources
                .entry(init.name().to_string())
                .or_insert(Source::Initializer);
        }
        for sparse in &graph.sparse_initializer {
            if let Some(values) = &sparse.values {
                sources
                    .entry(values.name().to_string())
                    .or_insert(Source::Initializer);
            }
        }
        let mut dag = StableDiGraph::with_capacity(graph.node.len(), graph.node.len() * 2);
        let index: Vec<NodeIndex> = (0..graph.node.len()).map(|i| dag.add_node(i)).collect();
        for (i, node) in graph.node.iter().enumerate() {
            for (slot, output) in node.output.iter().enumerate() {
                if output.is_empty() {
                    continue;
                }
                if sources
                    .insert(output.clone(), Source::Node { node: i, slot })
                    .is_some()
                {
                    return Err(DuplicateDefinition {
                        name: output.clone(),
                    });
                }
            }
        }
        let mut consumers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, node) in graph.node.iter().enumerate() {
            for name in scope::node_reads(node) {
                if let Some(Source::Node { node: producer, .. }) = sources.get(&name) {
                    dag.add_edge(index[*producer], index[i], name.clone());
                }
                consumers.entry(name).or_default().push(i);
            }
        }
        let graph_outputs = graph.output.iter().map(|o| o.name().to_string()).collect();
        Ok(Dataflow {
            dag,
            index,
            sources,
            consumers,
            graph_outputs,
        })
    }

    pub fn source(&self, name: &str) -> Source {
        self.sources.get(name).copied().unwrap_or(Source::Outer)
    }

    /// The node producing `name`, if a node does.
    pub fn producer(&self, name: &str) -> Option<usize> {
        match self.source(name) {
            Source::Node { node, .. } => Some(node),
            _ => None,
        }
    }

    /// Nodes reading `name` (explicitly or from a subgraph), in graph order, each once.
    pub fn consumers(&self, name: &str) -> &[usize] {
        self.consumers.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn is_graph_output(&self, name: &str) -> bool {
        self.graph_outputs.contains(name)
    }

    /// Nodes whose results `node` depends on, directly.
    pub fn predecessors(&self, node: usize) -> impl Iterator<Item = usize> + '_ {
        self.dag
            .edges_directed(self.index[node], Direction::Incoming)
            .map(|e| self.dag[e.source()])
    }

    /// Every node that (transitively) depends on one of the `seeds` tensor names.
    pub fn downstream_of(&self, seeds: &[&str]) -> BTreeSet<usize> {
        let mut stack: Vec<usize> = seeds
            .iter()
            .flat_map(|s| self.consumers(s).iter().copied())
            .collect();
        let mut seen = BTreeSet::new();
        while let Some(n) = stack.pop() {
            if seen.insert(n) {
                stack.extend(
                    self.dag
                        .neighbors_directed(self.index[n], Direction::Outgoing)
                        .map(|ix| self.dag[ix]),
                );
            }
        }
        seen
    }

    /// Every node that `targets` (transitively) depend on, including the targets' producers.
    pub fn upstream_of(&self, targets: &[&str]) -> BTreeSet<usize> {
        let mut stack: Vec<usize> = targets.iter().filter_map(|t| self.producer(t)).collect();
        let mut seen = BTreeSet::new();
        while let Some(n) = stack.pop() {
            if seen.insert(n) {
                stack.extend(self.predecessors(n));
            }
        }
        seen
    }
}

/// Nodes of `graph` with the given op type (and domain: "" and "ai.onnx" are the same domain).
pub fn nodes_of_type<'g>(
    graph: &'g GraphProto,
    domain: &'g str,
    op_type: &'g str,
) -> impl Iterator<Item = (usize, &'g NodeProto)> + 'g {
    graph
        .node
        .iter()
        .enumerate()
        .filter(move |(_, n)| n.op_type() == op_type && same_domain(n.domain(), domain))
}

pub fn same_domain(a: &str, b: &str) -> bool {
    fn norm(d: &str) -> &str {
        if d == "ai.onnx" { "" } else { d }
    }
    norm(a) == norm(b)
}
