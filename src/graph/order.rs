//! Order-preserving topological sort. GraphProto.node must be topologically sorted; a generic
//! toposort would reshuffle untouched nodes and make diffs unreadable. Kahn's algorithm with a
//! min-heap keyed by each node's rank keeps the existing order wherever the dependencies allow,
//! and a node with a larger rank (new nodes) is emitted only once nothing smaller is ready, i.e.
//! just before its first consumer needs it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::generated::onnx::{GraphProto, NodeProto};
use crate::graph::dataflow::Dataflow;

/// Why nodes cannot be ordered: a cycle (the nodes stuck in it), or a name produced twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderError {
    Cycle(Vec<String>),
    DefinedTwice(String),
}

impl std::fmt::Display for OrderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OrderError::Cycle(nodes) => write!(f, "a cycle through {}", nodes.join(", ")),
            OrderError::DefinedTwice(name) => write!(f, "{name:?} is produced by two nodes"),
        }
    }
}

/// Sorts `nodes` topologically; among ready nodes the smallest `rank` goes first. Names not
/// produced by any node of the list (graph inputs, initializers, outer scope) impose no order.
/// Dependencies come from the dataflow view, so subgraph reads order nodes too.
pub fn sort_preserving(nodes: Vec<NodeProto>, ranks: &[u64]) -> Result<Vec<NodeProto>, OrderError> {
    assert_eq!(nodes.len(), ranks.len(), "one rank per node");
    let graph = GraphProto {
        node: nodes,
        ..Default::default()
    };
    let dataflow = Dataflow::build(&graph).map_err(|d| OrderError::DefinedTwice(d.name))?;
    let count = graph.node.len();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); count];
    let mut missing: Vec<usize> = vec![0; count];
    for (i, pending) in missing.iter_mut().enumerate() {
        let deps = dataflow.dependencies(i);
        *pending = deps.len();
        for p in deps {
            dependents[p].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<(u64, usize)>> = (0..count)
        .filter(|&i| missing[i] == 0)
        .map(|i| Reverse((ranks[i], i)))
        .collect();
    let mut order = Vec::with_capacity(count);
    while let Some(Reverse((_, i))) = ready.pop() {
        order.push(i);
        for &d in &dependents[i] {
            missing[d] -= 1;
            if missing[d] == 0 {
                ready.push(Reverse((ranks[d], d)));
            }
        }
    }
    if order.len() != count {
        let stuck = (0..count)
            .filter(|&i| missing[i] > 0)
            .map(|i| describe(&graph.node[i]))
            .collect();
        return Err(OrderError::Cycle(stuck));
    }
    let mut slots: Vec<Option<NodeProto>> = graph.node.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

/// Orders `nodes`, of which the first `original_count` are a graph's nodes in their (sorted)
/// order and the rest are added, so that the original nodes keep exactly their order and each
/// added node comes just before the first node that needs it (added nodes nobody reads go last).
/// A model so patched can be taken back to its exact original by removing the added nodes.
/// When that is impossible (an added node reads an original node's output and an earlier
/// original node reads the added one), this falls back to the order-preserving sort.
pub fn insert_in_order(
    nodes: Vec<NodeProto>,
    original_count: usize,
) -> Result<Vec<NodeProto>, OrderError> {
    let graph = GraphProto {
        node: nodes,
        ..Default::default()
    };
    let flow = Dataflow::build(&graph).map_err(|d| OrderError::DefinedTwice(d.name))?;
    let count = graph.node.len();
    let mut state = vec![Mark::New; count];
    let mut order = Vec::with_capacity(count);
    let mut placed = true;
    'originals: for i in (0..original_count).chain(original_count..count) {
        if state[i] == Mark::Done {
            continue;
        }
        // Depth first over dependencies, each emitted after what it reads.
        let mut stack = vec![(i, false)];
        while let Some((n, expanded)) = stack.pop() {
            if state[n] == Mark::Done {
                continue;
            }
            if expanded {
                state[n] = Mark::Done;
                order.push(n);
                continue;
            }
            if state[n] == Mark::Open || (n < original_count && n != i) {
                // A cycle, or an original node needed before its turn: not possible in place.
                placed = false;
                break 'originals;
            }
            state[n] = Mark::Open;
            stack.push((n, true));
            for d in flow.dependencies(n).into_iter().rev() {
                if state[d] != Mark::Done {
                    stack.push((d, false));
                }
            }
        }
    }
    if !placed {
        let ranks: Vec<u64> = (0..count as u64)
            .map(|i| {
                if (i as usize) < original_count {
                    i
                } else {
                    u64::MAX / 2 + i
                }
            })
            .collect();
        return sort_preserving(graph.node, &ranks);
    }
    let mut slots: Vec<Option<NodeProto>> = graph.node.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    New,
    Open,
    Done,
}

fn describe(node: &NodeProto) -> String {
    match node.name.as_deref() {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => format!("{} -> {}", node.op_type(), node.output.join(",")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        crate::graph::build::Node::new("Op")
            .name(name)
            .inputs(inputs.iter().copied())
            .outputs(outputs.iter().copied())
            .build()
    }

    fn names(nodes: &[NodeProto]) -> Vec<&str> {
        nodes.iter().map(|n| n.name()).collect()
    }

    #[test]
    fn sorted_input_keeps_its_order() {
        let nodes = vec![
            node("a", &["x"], &["a"]),
            node("c", &["x"], &["c"]),
            node("b", &["a"], &["b"]),
        ];
        let sorted = sort_preserving(nodes, &[0, 1, 2]).unwrap();
        assert_eq!(names(&sorted), ["a", "c", "b"]);
    }

    #[test]
    fn new_node_goes_just_before_its_first_consumer() {
        let nodes = vec![
            node("a", &["x"], &["a"]),
            node("b", &["a", "n"], &["b"]),
            node("c", &["b"], &["c"]),
            node("new", &["x"], &["n"]),
        ];
        let sorted = sort_preserving(nodes, &[0, 1, 2, 1000]).unwrap();
        assert_eq!(names(&sorted), ["a", "new", "b", "c"]);
    }

    #[test]
    fn added_nodes_go_before_their_first_reader_and_originals_keep_their_order() {
        // b reads the added n; c does not: the Kahn sort would move c before b, this does not.
        let nodes = vec![
            node("a", &["x"], &["a"]),
            node("b", &["a", "n"], &["b"]),
            node("c", &["x"], &["c"]),
            node("n2", &["m"], &["n"]),
            node("n1", &["x"], &["m"]),
            node("tail", &["c"], &["t"]),
        ];
        let sorted = insert_in_order(nodes, 3).unwrap();
        assert_eq!(names(&sorted), ["a", "n1", "n2", "b", "c", "tail"]);
    }

    #[test]
    fn impossible_in_place_falls_back_to_the_sort() {
        // The added node reads c's output and b (before c) reads the added node.
        let nodes = vec![
            node("b", &["n"], &["b"]),
            node("c", &["x"], &["c"]),
            node("n", &["c"], &["n"]),
        ];
        let sorted = insert_in_order(nodes, 2).unwrap();
        assert_eq!(names(&sorted), ["c", "n", "b"]);
    }

    #[test]
    fn cycle_is_reported() {
        let nodes = vec![node("a", &["b"], &["a"]), node("b", &["a"], &["b"])];
        let err = sort_preserving(nodes, &[0, 1]).unwrap_err();
        assert_eq!(err, OrderError::Cycle(vec!["a".into(), "b".into()]));
    }
}
