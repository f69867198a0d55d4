//! Unit tests of the validator (scope frames, the algorithm on top of the main graph).
use super::*;
use crate::generated::onnx::{NodeProto, ValueInfoProto};

fn vi(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        ..Default::default()
    }
}

fn node(inputs: &[&str], outputs: &[&str]) -> NodeProto {
    crate::graph::build::Node::new("Relu")
        .inputs(inputs.iter().copied())
        .outputs(outputs.iter().copied())
        .build()
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

fn if_node(cond: &str, output: &str, then_branch: GraphProto) -> NodeProto {
    let mut n = node(&[cond], &[output]);
    n.op_type = Some("If".into());
    n.attribute.push(crate::generated::onnx::AttributeProto {
        name: Some("then_branch".into()),
        g: Some(then_branch),
        ..Default::default()
    });
    n
}

/// If nodes nested `depth` deep; the innermost branch runs `innermost` (its last output is
/// the branch output), every level reads the top-level input `x`.
fn nested(depth: usize, innermost: Vec<NodeProto>) -> GraphProto {
    let last = innermost
        .last()
        .and_then(|n| n.output.first().cloned())
        .unwrap_or_default();
    let mut branch = GraphProto {
        node: innermost,
        output: vec![vi(&last)],
        ..Default::default()
    };
    for level in (1..depth).rev() {
        let read = format!("read{level}");
        let out = format!("if{level}");
        branch = GraphProto {
            node: vec![node(&["x"], &[&read]), if_node(&read, &out, branch)],
            output: vec![vi(&out)],
            ..Default::default()
        };
    }
    graph(
        vec![node(&["x"], &["c"]), if_node("c", "y", branch)],
        &["y"],
    )
}

#[test]
fn deep_nesting_sees_every_enclosing_scope() {
    // The innermost branch, 50 levels down, reads the top level and its parent levels, not the
    // output of the If that holds it.
    let g = nested(50, vec![node(&["x", "c", "read48"], &["deep"])]);
    validate_graph(&g, &BTreeSet::new(), "main").unwrap();
    let g = nested(50, vec![node(&["if49"], &["deep"])]);
    let err = validate_graph(&g, &BTreeSet::new(), "main")
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"if49\", which is not defined"), "{err}");
    let g = nested(50, vec![node(&["x"], &["read3"])]);
    let err = validate_graph(&g, &BTreeSet::new(), "main")
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"read3\" shadows"), "{err}");
    assert_eq!(err.matches("node #1 (If)[0]").count(), 50, "{err}");
}

#[test]
fn a_subgraph_sees_only_what_its_node_sees() {
    // The branch reads "late", defined after the If in the enclosing graph.
    let branch = GraphProto {
        node: vec![node(&["late"], &["b"])],
        output: vec![vi("b")],
        ..Default::default()
    };
    let g = graph(
        vec![if_node("x", "y", branch), node(&["x"], &["late"])],
        &["y"],
    );
    let err = validate_graph(&g, &BTreeSet::new(), "main")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("reads \"late\", which is not defined"),
        "{err}"
    );
}

fn model(main: GraphProto, algorithm: GraphProto) -> ModelProto {
    ModelProto {
        graph: Some(main),
        training_info: vec![crate::generated::onnx::TrainingInfoProto {
            algorithm: Some(algorithm),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// validate_model checks an algorithm without building graph ++ algorithm; its verdict must
/// be the one on the concatenated graph.
fn agrees_with_concatenation(main: GraphProto, algorithm: GraphProto) {
    let expected = validate_graph(
        &concatenate(&main, &algorithm),
        &BTreeSet::new(),
        "graph+algorithm[0]",
    )
    .map_err(|e| e.to_string());
    let actual = validate_model(&model(main, algorithm)).map_err(|e| e.to_string());
    assert_eq!(actual, expected);
}

#[test]
fn algorithm_is_validated_as_concatenated_to_the_main_graph() {
    let main = || {
        let branch = GraphProto {
            node: vec![node(&["x"], &["inner"])],
            output: vec![vi("inner")],
            ..Default::default()
        };
        let mut g = graph(
            vec![
                node(&["x"], &["a"]),
                if_node("a", "b", branch),
                node(&["b"], &["m1"]),
            ],
            &["m1"],
        );
        g.initializer.push(crate::generated::onnx::TensorProto {
            name: Some("w".into()),
            ..Default::default()
        });
        g
    };
    let algo =
        |inputs: &[&str], inits: &[&str], nodes: Vec<NodeProto>, outputs: &[&str]| GraphProto {
            input: inputs.iter().map(|n| vi(n)).collect(),
            initializer: inits
                .iter()
                .map(|n| crate::generated::onnx::TensorProto {
                    name: Some(n.to_string()),
                    ..Default::default()
                })
                .collect(),
            node: nodes,
            output: outputs.iter().map(|o| vi(o)).collect(),
            ..Default::default()
        };
    let cases = [
        // Valid: reads the main graph's names, its own input and initializer.
        algo(
            &["t"],
            &["lr"],
            vec![node(&["m1", "t", "lr", "w"], &["n"])],
            &["n"],
        ),
        // An input named like a main graph node output (reported at that node).
        algo(&["a"], &[], vec![node(&["m1"], &["n"])], &["n"]),
        // An input named like a main initializer: the initializer becomes its default.
        algo(&["w"], &[], vec![node(&["w"], &["n"])], &["n"]),
        // An initializer named like a main input.
        algo(&[], &["x"], vec![node(&["x"], &["n"])], &["n"]),
        // An input that a subgraph of the main graph defines (shadowed there).
        algo(&["inner"], &[], vec![node(&["m1"], &["n"])], &["n"]),
        // Node outputs clashing with the main graph's names and with each other.
        algo(&[], &[], vec![node(&["m1"], &["b"])], &["b"]),
        algo(
            &[],
            &[],
            vec![node(&["m1"], &["n"]), node(&["m1"], &["n"])],
            &["n"],
        ),
        // Unsorted, undefined, and reads of the main graph's subgraph names.
        algo(
            &[],
            &[],
            vec![node(&["n2"], &["n"]), node(&["m1"], &["n2"])],
            &["n"],
        ),
        algo(&[], &[], vec![node(&["inner"], &["n"])], &["n"]),
        algo(&[], &[], vec![node(&["m1"], &["n"])], &["missing"]),
        // Duplicate inputs and initializers within the algorithm.
        algo(&["t", "t"], &[], vec![], &[]),
        algo(&[], &["lr", "lr"], vec![], &[]),
        // A subgraph in the algorithm reading and redefining the main graph's names.
        algo(
            &[],
            &[],
            vec![if_node(
                "m1",
                "n",
                graph(vec![node(&["w"], &["z"])], &["z"]),
            )],
            &["n"],
        ),
        algo(
            &[],
            &[],
            vec![if_node(
                "m1",
                "n",
                GraphProto {
                    node: vec![node(&["w"], &["a"])],
                    output: vec![vi("a")],
                    ..Default::default()
                },
            )],
            &["n"],
        ),
    ];
    for algorithm in cases {
        agrees_with_concatenation(main(), algorithm);
    }
}
