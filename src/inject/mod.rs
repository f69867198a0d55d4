//! How an averaging scheme is wired into each format: which state tensors it gets, where the
//! counter lives, how the sync is triggered and made durable. One file per format, generic over
//! the scheme (`scheme::Scheme`); each returns declarative patches (`graph::patch`), nothing here
//! edits a model.

pub mod ort;
pub mod ort_optimizer;
pub mod training_info;

use std::collections::HashSet;

use crate::generated::onnx::{NodeProto, ValueInfoProto};
use crate::graph::build::{self, Node};
use crate::graph::emit::Emitter;
use crate::graph::names::NameGenerator;

/// Every name (tensor, node, checkpoint parameter) the rewrite creates starts with this, so a
/// rewrite's parts can be told from the model's own (inputs using it are refused).
pub const NAME_PREFIX: &str = "lookahead__";

/// The name hint of the If that syncs (training graphs, training_info algorithms): the node is
/// named `<NAME_PREFIX>sync`, with a suffix if that name was taken. `inspect` tells the If's role
/// by it.
pub const SYNC_IF: &str = "sync";
/// The name hint of the If of an ORT eval graph that chooses the weights evaluation reads.
pub const EVAL_IF: &str = "eval_weights";

/// The name to list as a branch output for `value`: `value` itself when the branch computes it
/// and no other output of the branch (`used`) is listed under it, else an Identity of it (an If
/// branch cannot return an outer-scope name directly, nor one name twice).
pub(crate) fn branch_output(e: &mut Emitter, used: &mut HashSet<String>, value: &str) -> String {
    let name = if e.produced(value) && !used.contains(value) {
        value.to_string()
    } else {
        let copy = e.fresh(&format!("copy__{value}"));
        e.node(
            Node::new("Identity")
                .inputs([value])
                .outputs([&copy])
                .build(),
        );
        copy
    };
    used.insert(name.clone());
    name
}

/// One branch of an If: its nodes and outputs.
pub(crate) type Branch = (Vec<NodeProto>, Vec<ValueInfoProto>);

/// `If(condition)` with the two branches, named `<prefix><hint>` (branches `..._then`/`_else`).
pub(crate) fn if_node(
    names: &mut NameGenerator,
    hint: &str,
    condition: &str,
    outputs: Vec<String>,
    then: Branch,
    otherwise: Branch,
) -> NodeProto {
    let then_name = names.fresh(&format!("{NAME_PREFIX}{hint}_then"));
    let else_name = names.fresh(&format!("{NAME_PREFIX}{hint}_else"));
    Node::new("If")
        .inputs([condition])
        .outputs(outputs)
        .name(names.fresh(&format!("{NAME_PREFIX}{hint}")))
        .attr_graph("then_branch", build::branch(&then_name, then.0, then.1))
        .attr_graph(
            "else_branch",
            build::branch(&else_name, otherwise.0, otherwise.1),
        )
        .build()
}
