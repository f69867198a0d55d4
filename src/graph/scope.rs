//! Names and scopes: which names a graph defines, which outer-scope names its subgraphs read.
//! ONNX control-flow nodes (If, Loop, Scan, and any node with graph attributes) read outer-scope
//! values implicitly, by name; those reads are dependencies like explicit inputs.

use std::collections::{BTreeSet, HashMap};

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
    defined_iter(graph).collect()
}

/// The names `defined_names` returns, unsorted, a name defined twice listed twice.
fn defined_iter(graph: &GraphProto) -> impl Iterator<Item = &str> {
    let sparse = graph
        .sparse_initializer
        .iter()
        .filter_map(|s| s.values.as_ref().map(|v| v.name()));
    let outputs = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .filter(|n| !n.is_empty());
    graph
        .input
        .iter()
        .map(|v| v.name())
        .chain(graph.initializer.iter().map(|t| t.name()))
        .chain(sparse)
        .chain(outputs)
}

/// Names a subgraph reads from enclosing scopes (recursively through nested subgraphs), i.e.
/// names its nodes and outputs use that it does not define itself.
pub fn outer_reads(graph: &GraphProto) -> BTreeSet<String> {
    let mut reads = BTreeSet::new();
    SubgraphReads::default().walk(graph, &mut |name| {
        reads.insert(name.to_string());
    });
    reads
}

/// Every name a node reads: its explicit inputs and its subgraphs' outer-scope reads.
pub fn node_reads(node: &NodeProto) -> BTreeSet<String> {
    let mut reads = SubgraphReads::default();
    let mut names = Vec::new();
    reads.node(node, &mut names);
    names.into_iter().map(str::to_string).collect()
}

/// Finds the outer-scope reads of subgraphs in one pass over them: the names defined by the
/// subgraphs on the current path are counted, so a read is an outer read when its count is
/// zero (no copy of a scope, no second visit of a nested subgraph). Reusable across nodes.
#[derive(Default)]
pub struct SubgraphReads<'g> {
    defined_on_path: HashMap<&'g str, usize>,
}

impl<'g> SubgraphReads<'g> {
    /// The distinct names `node` reads (explicit inputs and its subgraphs' outer-scope reads),
    /// in no particular order, into `names` (cleared first).
    pub fn node(&mut self, node: &'g NodeProto, names: &mut Vec<&'g str>) {
        names.clear();
        names.extend(
            node.input
                .iter()
                .map(String::as_str)
                .filter(|n| !n.is_empty()),
        );
        for sub in subgraphs(node) {
            self.walk(sub, &mut |name| names.push(name));
        }
        names.sort_unstable();
        names.dedup();
    }

    /// Calls `read` with every outer-scope read of `graph` (repeats included).
    fn walk(&mut self, graph: &'g GraphProto, read: &mut dyn FnMut(&'g str)) {
        for name in defined_iter(graph) {
            *self.defined_on_path.entry(name).or_default() += 1;
        }
        for node in &graph.node {
            for input in node.input.iter().filter(|n| !n.is_empty()) {
                if !self.defined_on_path.contains_key(input.as_str()) {
                    read(input);
                }
            }
            for sub in subgraphs(node) {
                self.walk(sub, read);
            }
        }
        for output in &graph.output {
            if !self.defined_on_path.contains_key(output.name()) {
                read(output.name());
            }
        }
        for name in defined_iter(graph) {
            if let Some(count) = self.defined_on_path.get_mut(name) {
                *count -= 1;
                if *count == 0 {
                    self.defined_on_path.remove(name);
                }
            }
        }
    }
}

/// Every tensor and node name used anywhere in a graph and its subgraphs (any scope), so a new
/// name can be chosen that clashes with nothing. `visit` sees each use (a name can repeat).
pub fn visit_all_names<'g>(graph: &'g GraphProto, visit: &mut dyn FnMut(&'g str)) {
    let value_infos = graph
        .input
        .iter()
        .chain(&graph.output)
        .chain(&graph.value_info);
    for name in value_infos.map(|v| v.name()) {
        visit(name);
    }
    for name in graph.initializer.iter().map(|t| t.name()) {
        visit(name);
    }
    for sparse in &graph.sparse_initializer {
        if let Some(values) = &sparse.values {
            visit(values.name());
        }
    }
    for node in &graph.node {
        if let Some(name) = &node.name {
            visit(name);
        }
        let tensors = node.input.iter().chain(&node.output);
        for name in tensors.filter(|n| !n.is_empty()) {
            visit(name);
        }
        for sub in subgraphs(node) {
            visit_all_names(sub, visit);
        }
    }
}

/// Renames reads of tensors in `nodes` (explicit inputs, and outer-scope reads inside their
/// subgraphs unless a subgraph defines the name itself and so shadows it): a read of a key of
/// `renames` becomes a read of its value. One pass, whatever the number of renames.
pub fn rename_reads(nodes: &mut [NodeProto], renames: &HashMap<String, String>) {
    if renames.is_empty() {
        return;
    }
    rename_in_nodes(nodes, renames, &mut HashMap::new());
}

/// `shadowed`: how many subgraphs on the current path define each renamed name.
fn rename_in_nodes(
    nodes: &mut [NodeProto],
    renames: &HashMap<String, String>,
    shadowed: &mut HashMap<String, usize>,
) {
    for node in nodes {
        for input in node.input.iter_mut() {
            if let Some(new) = renamed(input, renames, shadowed) {
                *input = new;
            }
        }
        for sub in subgraphs_mut(node) {
            rename_outer_reads(sub, renames, shadowed);
        }
    }
}

fn renamed(
    name: &str,
    renames: &HashMap<String, String>,
    shadowed: &HashMap<String, usize>,
) -> Option<String> {
    renames
        .get(name)
        .filter(|_| !shadowed.contains_key(name))
        .cloned()
}

fn rename_outer_reads(
    graph: &mut GraphProto,
    renames: &HashMap<String, String>,
    shadowed: &mut HashMap<String, usize>,
) {
    // Only names that are renamed can be shadowed in a way that matters.
    let hides: Vec<String> = defined_names(graph)
        .into_iter()
        .filter(|n| renames.contains_key(*n))
        .map(str::to_string)
        .collect();
    for name in &hides {
        *shadowed.entry(name.clone()).or_default() += 1;
    }
    rename_in_nodes(&mut graph.node, renames, shadowed);
    for output in graph.output.iter_mut() {
        if let Some(new) = renamed(output.name(), renames, shadowed) {
            output.name = Some(new);
        }
    }
    for name in hides {
        if let Some(count) = shadowed.get_mut(&name) {
            *count -= 1;
            if *count == 0 {
                shadowed.remove(&name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generated::onnx::ValueInfoProto;

    fn node(inputs: &[&str], outputs: &[&str]) -> NodeProto {
        crate::graph::build::Node::new("Op")
            .inputs(inputs.iter().copied())
            .outputs(outputs.iter().copied())
            .build()
    }

    fn with_branch(mut n: NodeProto, nodes: Vec<NodeProto>, outputs: &[&str]) -> NodeProto {
        n.attribute.push(AttributeProto {
            name: Some("then_branch".into()),
            g: Some(GraphProto {
                node: nodes,
                output: outputs
                    .iter()
                    .map(|o| ValueInfoProto {
                        name: Some(o.to_string()),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        });
        n
    }

    /// If(c) whose branch defines `a`, reads `x`, and holds another If whose branch reads `a`
    /// (defined one level up), `y` and `x` again, and outputs `z` (defined nowhere).
    fn nested_if() -> NodeProto {
        let inner = with_branch(
            node(&["a"], &["i"]),
            vec![node(&["a", "y", "x"], &["j"])],
            &["j", "z"],
        );
        with_branch(
            node(&["c", "c"], &["o"]),
            vec![node(&["x"], &["a"]), inner],
            &["i"],
        )
    }

    fn strings(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reads_through_nested_subgraphs() {
        let n = nested_if();
        assert_eq!(node_reads(&n), strings(&["c", "x", "y", "z"]));
        let mut names = Vec::new();
        SubgraphReads::default().node(&n, &mut names);
        assert_eq!(names, ["c", "x", "y", "z"]);
        let branch = subgraphs(&n).next().cloned().unwrap_or_default();
        assert_eq!(outer_reads(&branch), strings(&["x", "y", "z"]));
    }

    #[test]
    fn renames_every_read_in_one_pass_except_shadowed_ones() {
        let mut nodes = vec![nested_if(), node(&["a", "x", "c"], &["p"])];
        let renames: HashMap<String, String> = [("a", "A"), ("x", "X"), ("z", "Z"), ("c", "C")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        rename_reads(&mut nodes, &renames);
        let expected = {
            let inner = with_branch(
                node(&["a"], &["i"]),
                vec![node(&["a", "y", "X"], &["j"])],
                &["j", "Z"],
            );
            let outer = with_branch(
                node(&["C", "C"], &["o"]),
                vec![node(&["X"], &["a"]), inner],
                &["i"],
            );
            vec![outer, node(&["A", "X", "C"], &["p"])]
        };
        assert_eq!(nodes, expected);
    }
}
