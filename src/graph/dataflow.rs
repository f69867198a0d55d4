//! A dataflow view of one ONNX graph on petgraph: a node per ONNX node, an edge per tensor from
//! its producer to each consumer (explicit inputs and names read by subgraphs). Graph inputs and
//! initializers have no producer. Built once per graph; passes query it, they do not edit it.

use std::collections::{BTreeSet, HashMap};

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
        let mut subgraph_reads = scope::SubgraphReads::default();
        let mut reads = Vec::new();
        for (i, node) in graph.node.iter().enumerate() {
            subgraph_reads.node(node, &mut reads);
            for &name in &reads {
                if let Some(Source::Node { node: producer, .. }) = sources.get(name) {
                    dag.add_edge(index[*producer], index[i], name.to_string());
                }
                match consumers.get_mut(name) {
                    Some(list) => list.push(i),
                    None => {
                        consumers.insert(name.to_string(), vec![i]);
                    }
                }
            }
        }
        Ok(Dataflow {
            dag,
            index,
            sources,
            consumers,
        })
    }

    pub fn source(&self, name: &str) -> Source {
        self.sources.get(name).copied().unwrap_or(Source::Outer)
    }

    /// The node (position in GraphProto.node) and output slot producing `name`, if a node does.
    pub fn produced_by(&self, name: &str) -> Option<(usize, usize)> {
        match self.source(name) {
            Source::Node { node, slot } => Some((node, slot)),
            _ => None,
        }
    }

    /// Nodes reading `name` (explicitly or from a subgraph), in graph order, each once.
    pub fn consumers(&self, name: &str) -> &[usize] {
        self.consumers.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The distinct nodes whose results `node` reads (directly), in graph order.
    pub fn dependencies(&self, node: usize) -> BTreeSet<usize> {
        self.dag
            .edges_directed(self.index[node], Direction::Incoming)
            .map(|e| self.dag[e.source()])
            .filter(|&p| p != node)
            .collect()
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
