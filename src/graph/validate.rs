//! The structural rules every graph the tool writes must satisfy: static single assignment,
//! topological order, every read defined (graph input, initializer, earlier output or enclosing
//! scope), no name of an enclosing scope redefined in a subgraph, graph outputs defined.
//! Run on every output before anything is written; a failure means a bug in a pass.

use std::collections::{BTreeSet, HashSet};

use crate::error::Error;
use crate::generated::onnx::GraphProto;
use crate::graph::scope::subgraphs;

/// Validates `graph` (and its subgraphs) given the names visible from enclosing scopes.
pub fn validate_graph(
    graph: &GraphProto,
    outer: &BTreeSet<String>,
    label: &str,
) -> Result<(), Error> {
    let fail = |reason: String| Error::Validation {
        graph: label.to_string(),
        reason,
    };
    let mut visible: HashSet<String> = outer.iter().cloned().collect();
    let mut own: HashSet<String> = HashSet::new();
    let define =
        |name: &str, what: &str, own: &mut HashSet<String>, visible: &mut HashSet<String>| {
            if outer.contains(name) {
                return Err(fail(format!(
                    "{what} {name:?} shadows a name of an enclosing scope"
                )));
            }
            if !own.insert(name.to_string()) {
                return Err(fail(format!("{what} {name:?} is defined more than once")));
            }
            visible.insert(name.to_string());
            Ok(())
        };
    for input in &graph.input {
        define(input.name(), "graph input", &mut own, &mut visible)?;
    }
    let inputs: HashSet<&str> = graph.input.iter().map(|i| i.name()).collect();
    for init in &graph.initializer {
        // An initializer may also be listed as a graph input (its default value).
        if !inputs.contains(init.name()) {
            define(init.name(), "initializer", &mut own, &mut visible)?;
        }
    }
    for sparse in &graph.sparse_initializer {
        if let Some(values) = &sparse.values
            && !inputs.contains(values.name())
        {
            define(values.name(), "sparse initializer", &mut own, &mut visible)?;
        }
    }
    let produced_later: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    for (position, node) in graph.node.iter().enumerate() {
        let who = match node.name.as_deref() {
            Some(n) if !n.is_empty() => format!("node {n:?} ({})", node.op_type()),
            _ => format!("node #{position} ({})", node.op_type()),
        };
        for input in node.input.iter().filter(|i| !i.is_empty()) {
            if !visible.contains(input) {
                let reason = if produced_later.contains(input.as_str()) {
                    format!(
                        "{who} reads {input:?} before it is produced (not topologically sorted)"
                    )
                } else {
                    format!("{who} reads {input:?}, which is not defined")
                };
                return Err(fail(reason));
            }
        }
        // Only nodes with subgraphs need the visible names as a set of their own: building it
        // for every node made validation quadratic in the node count.
        let mut subs = subgraphs(node).peekable();
        if subs.peek().is_some() {
            let scope: BTreeSet<String> = visible.iter().cloned().collect();
            for (i, sub) in subs.enumerate() {
                let sub_label = format!("{label}/{}[{i}]", who);
                validate_graph(sub, &scope, &sub_label)?;
            }
        }
        for output in node.output.iter().filter(|o| !o.is_empty()) {
            define(output, &format!("output of {who}"), &mut own, &mut visible)?;
        }
    }
    for output in &graph.output {
        if !visible.contains(output.name()) {
            return Err(fail(format!(
                "graph output {:?} is not defined",
                output.name()
            )));
        }
    }
    Ok(())
}

/// Validates a whole model: the main graph, and for every training_info entry the concatenation
/// of the main graph and its algorithm (the graph a training runtime executes), its
/// initialization graph, and its bindings (training_info is never checked by onnx.checker).
pub fn validate_model(model: &crate::generated::onnx::ModelProto) -> Result<(), Error> {
    use std::collections::HashSet;
    let empty = GraphProto::default();
    let main = model.graph.as_ref().unwrap_or(&empty);
    validate_graph(main, &BTreeSet::new(), "graph")?;
    let main_inits: HashSet<&str> = main.initializer.iter().map(|t| t.name()).collect();
    let main_outputs: HashSet<&str> = main.output.iter().map(|o| o.name()).collect();
    let mut update_keys: HashSet<&str> = HashSet::new();
    for (i, info) in model.training_info.iter().enumerate() {
        let label = format!("training_info[{i}]");
        let fail = |reason: String| Error::Validation {
            graph: label.clone(),
            reason,
        };
        let algorithm = info.algorithm.as_ref().unwrap_or(&empty);
        let combined = concatenate(main, algorithm);
        validate_graph(
            &combined,
            &BTreeSet::new(),
            &format!("graph+algorithm[{i}]"),
        )?;
        let own_inits: HashSet<&str> = algorithm.initializer.iter().map(|t| t.name()).collect();
        let algo_outputs: HashSet<&str> = algorithm.output.iter().map(|o| o.name()).collect();
        for binding in &info.update_binding {
            let (key, value) = (binding.key(), binding.value());
            if !main_inits.contains(key) && !own_inits.contains(key) {
                return Err(fail(format!(
                    "update_binding key {key:?} is not an initializer"
                )));
            }
            if !algo_outputs.contains(value) && !main_outputs.contains(value) {
                return Err(fail(format!(
                    "update_binding value {value:?} is not a graph output"
                )));
            }
            if !update_keys.insert(key) {
                return Err(fail(format!(
                    "update_binding key {key:?} is bound more than once"
                )));
            }
        }
        if let Some(init) = &info.initialization {
            if !init.input.is_empty() {
                return Err(fail("the initialization graph has inputs".into()));
            }
            validate_graph(init, &BTreeSet::new(), &format!("initialization[{i}]"))?;
        }
        let init_outputs: HashSet<&str> = info
            .initialization
            .iter()
            .flat_map(|g| g.output.iter().map(|o| o.name()))
            .collect();
        let mut init_keys = HashSet::new();
        for binding in &info.initialization_binding {
            let (key, value) = (binding.key(), binding.value());
            if !main_inits.contains(key) && !own_inits.contains(key) {
                return Err(fail(format!(
                    "initialization_binding key {key:?} is not an initializer"
                )));
            }
            if !init_outputs.contains(value) {
                return Err(fail(format!(
                    "initialization_binding value {value:?} is not an initialization output"
                )));
            }
            if !init_keys.insert(key) {
                return Err(fail(format!(
                    "initialization_binding key {key:?} is bound more than once"
                )));
            }
        }
    }
    Ok(())
}

/// The graph a training runtime executes for one algorithm: ModelProto.graph's inputs,
/// initializers, outputs, nodes and value_info followed by the algorithm's.
pub fn concatenate(main: &GraphProto, algorithm: &GraphProto) -> GraphProto {
    let mut combined = main.clone();
    combined.input.extend(algorithm.input.iter().cloned());
    combined
        .initializer
        .extend(algorithm.initializer.iter().cloned());
    combined
        .sparse_initializer
        .extend(algorithm.sparse_initializer.iter().cloned());
    combined.output.extend(algorithm.output.iter().cloned());
    combined.node.extend(algorithm.node.iter().cloned());
    combined
        .value_info
        .extend(algorithm.value_info.iter().cloned());
    combined
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generated::onnx::{NodeProto, ValueInfoProto};

    fn vi(name: &str) -> ValueInfoProto {
        ValueInfoProto {
            name: Some(name.into()),
            ..Default::default()
        }
    }

    fn node(inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: Some("Relu".into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn graph(nodes: Vec<NodeProto>, outputs: &[&str]) -> GraphProto {
        GraphProto {
            input: vec![vi("x")],
            node: nodes,
            output: outputs.iter().map(|o| vi(o)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn valid_graph_passes() {
        let g = graph(vec![node(&["x"], &["a"]), node(&["a"], &["b"])], &["b"]);
        validate_graph(&g, &BTreeSet::new(), "main").unwrap();
    }

    #[test]
    fn long_chains_validate_in_linear_time() {
        // Seen while profiling fuzz/: every node copied all visible names into a new set, so a
        // 20000-node graph took minutes. Now it takes milliseconds (debug build included).
        let names: Vec<String> = (0..20_000).map(|i| format!("v{i}")).collect();
        let mut nodes = vec![node(&["x"], &[&names[0]])];
        nodes.extend(names.windows(2).map(|w| node(&[&w[0]], &[&w[1]])));
        let g = graph(nodes, &[names.last().unwrap()]);
        let start = std::time::Instant::now();
        validate_graph(&g, &BTreeSet::new(), "main").unwrap();
        assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
    }

    #[test]
    fn unsorted_graph_fails() {
        let g = graph(vec![node(&["a"], &["b"]), node(&["x"], &["a"])], &["b"]);
        let err = validate_graph(&g, &BTreeSet::new(), "main")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not topologically sorted"), "{err}");
    }

    #[test]
    fn double_assignment_fails() {
        let g = graph(vec![node(&["x"], &["a"]), node(&["x"], &["a"])], &["a"]);
        let err = validate_graph(&g, &BTreeSet::new(), "main")
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than once"), "{err}");
    }

    #[test]
    fn undefined_input_fails() {
        let g = graph(vec![node(&["nope"], &["a"])], &["a"]);
        let err = validate_graph(&g, &BTreeSet::new(), "main")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not defined"), "{err}");
    }

    #[test]
    fn shadowing_in_subgraph_fails() {
        let body = GraphProto {
            node: vec![node(&["x"], &["a"])],
            output: vec![vi("a")],
            ..Default::default()
        };
        let mut if_node = node(&["x"], &["y"]);
        if_node.op_type = Some("If".into());
        if_node
            .attribute
            .push(crate::generated::onnx::AttributeProto {
                name: Some("then_branch".into()),
                g: Some(body),
                ..Default::default()
            });
        let g = graph(vec![node(&["x"], &["a"]), if_node], &["y"]);
        let err = validate_graph(&g, &BTreeSet::new(), "main")
            .unwrap_err()
            .to_string();
        assert!(err.contains("shadows"), "{err}");
    }
}
