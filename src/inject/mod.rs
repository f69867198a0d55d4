//! How an averaging scheme is wired into each format: which state tensors it gets, where the
//! counter lives, how the sync is triggered and made durable. One file per format, generic over
//! the scheme (`scheme::Scheme`); each returns declarative patches (`graph::patch`), nothing here
//! edits a model.

pub mod ort;
pub mod training_info;

use crate::graph::build::Node;
use crate::graph::emit::Emitter;

/// Every name (tensor, node, checkpoint parameter) the rewrite creates starts with this, so a
/// rewrite's parts can be told from the model's own (inputs using it are refused).
pub const NAME_PREFIX: &str = "lookahead__";

/// The name to list as a subgraph output for `value`: `value` itself when the branch computes
/// it, else an Identity of it (an If branch cannot return an outer-scope name directly).
pub(crate) fn branch_output(e: &mut Emitter, value: &str) -> String {
    if e.produced(value) {
        return value.to_string();
    }
    let copy = e.fresh(&format!("copy__{value}"));
    e.node(
        Node::new("Identity")
            .inputs([value])
            .outputs([&copy])
            .build(),
    );
    copy
}
