//! Names and scopes: which names a graph defines, which outer-scope names its subgraphs read.
//! ONNX control-flow nodes (If, Loop, Scan, and any node with graph attributes) read outer-scope
//! values implicitly, by name; those reads are dependencies like explicit inputs.

use std::collections::BTreeSet;

use crate::generated::onnx::{AttributeProto, GraphProto, NodeProto};

/// The subgraphs held by a node's attributes (If branches, Loop/Scan bodies, ...).
pub fn subgraphs(node: &NodeProto) -> impl Iterator<Item = &GraphProto> {
    node.attribute.iter().flat_map(attribute_graphs)
}

/// Mutable access to the subgraphs of a node.
pub fn subgraphs_mut(node: &mut NodeProto) -> impl Iterator<Item = &mut GraphProto> {
    node.attribute
        .iter_mut()
        .flat_map(|a| a.g.iter_mut().chain(a.graphs.iter_mut()))
}

fn attribute_graphs(attr: &AttributeProto) -> impl Iterator<Item = &GraphProto> {
    attr.g.iter().chain(attr.graphs.iter())
}

/// Names a graph defines in its own scope: inputs, initializers (dense and sparse), node outputs.
pub fn defined_names(graph: &GraphProto) -> BTreeSet<&str> {
    let mut names = BTreeSet::new();
    names.extend(graph.input.iter().map(|v| v.name()));
    names.extend(graph.initializer.iter().map(|t| t.name()));
    names.extend(
        graph
            .sparse_initializer
            .iter()
            .filter_map(|s| s.values.as_ref().map(|v| v.name())),
    );
    for node in &graph.node {
        names.extend(
            node.output
                .iter()
                .map(String::as_str)
                .filter(|n| !n.is_empty()),
        );
    }
    names
}

/// Names a subgraph reads from enclosing scopes (recursively through nested subgraphs), i.e.
/// names its nodes and outputs use that it does not define itself.
pub fn outer_reads(graph: &GraphProto) -> BTreeSet<String> {
    let defined = defined_names(graph);
    let mut reads = BTreeSet::new();
    for node in &graph.node {
        for name in node_reads(node) {
            if !defined.contains(name.as_str()) {
                reads.insert(name);
            }
        }
    }
    for output in &graph.output {
        if !defined.contains(output.name()) {
            reads.insert(output.name().to_string());
        }
    }
    reads
}

/// Every name a node reads: its explicit inputs and its subgraphs' outer-scope reads.
pub fn node_reads(node: &NodeProto) -> BTreeSet<String> {
    let mut reads: BTreeSet<String> = node
        .input
        .iter()
        .filter(|n| !n.is_empty())
        .cloned()
        .collect();
    for sub in subgraphs(node) {
        reads.extend(outer_reads(sub));
    }
    reads
}

/// Every tensor and node name used anywhere in a graph and its subgraphs (any scope), so a new
/// name can be chosen that clashes with nothing.
pub fn collect_all_names(graph: &GraphProto, into: &mut BTreeSet<String>) {
    into.extend(graph.input.iter().map(|v| v.name().to_string()));
    into.extend(graph.output.iter().map(|v| v.name().to_string()));
    into.extend(graph.value_info.iter().map(|v| v.name().to_string()));
    into.extend(graph.initializer.iter().map(|t| t.name().to_string()));
    for sparse in &graph.sparse_initializer {
        into.extend(sparse.values.iter().map(|t| t.name().to_string()));
    }
    for node in &graph.node {
        if let Some(name) = &node.name {
            into.insert(name.clone());
        }
        into.extend(node.input.iter().filter(|n| !n.is_empty()).cloned());
        into.extend(node.output.iter().filter(|n| !n.is_empty()).cloned());
        for sub in subgraphs(node) {
            collect_all_names(sub, into);
        }
    }
}

/// Renames reads of tensors in `nodes` (explicit inputs, and outer-scope reads inside their
/// subgraphs unless a subgraph defines the name itself and so shadows it).
pub fn rename_reads(nodes: &mut [NodeProto], rename: &dyn Fn(&str) -> Option<String>) {
    for node in nodes {
        for input in node.input.iter_mut() {
            if let Some(new) = rename(input) {
                *input = new;
            }
        }
        for sub in subgraphs_mut(node) {
            rename_outer_reads(sub, rename);
        }
    }
}

fn rename_outer_reads(graph: &mut GraphProto, rename: &dyn Fn(&str) -> Option<String>) {
    let defined: BTreeSet<String> = defined_names(graph)
        .into_iter()
        .map(str::to_string)
        .collect();
    let outer_only = |name: &str| {
        if defined.contains(name) {
            None
        } else {
            rename(name)
        }
    };
    rename_reads(&mut graph.node, &outer_only);
    for output in graph.output.iter_mut() {
        if let Some(new) = outer_only(output.name()) {
            output.name = Some(new);
        }
    }
}
