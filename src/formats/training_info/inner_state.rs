//! The optimizer state a training_info sync can change (`rewrite --inner-state`): which tensors
//! of an ai.onnx.preview.training optimizer node belong to a weight, and whether update_binding
//! carries them from one run to the next (only then can a rewrite change them).

use std::collections::{HashMap, HashSet};

use super::{TrainedWeight, UpdateKind};
use crate::error::{Error, Result};
use crate::generated::onnx::NodeProto;
use crate::scheme::{InnerSlot, Scheme};

/// A tensor's element type and shape, by name (None: unknown).
pub(super) type TypeOf<'a> = dyn Fn(&str) -> Option<(i32, Vec<i64>)> + 'a;

pub use crate::inject::training_info::InnerBinding;

/// The state slots of an optimizer operator for its `j`-th of `n` weights: (slot, input index,
/// output index).
fn inner_slots(kind: UpdateKind, n: usize, j: usize) -> Vec<(InnerSlot, usize, usize)> {
    match kind {
        UpdateKind::Momentum => vec![(InnerSlot::Momentum, 2 + 2 * n + j, n + j)],
        UpdateKind::Adam => vec![
            (InnerSlot::Momentum, 2 + 2 * n + j, n + j),
            (InnerSlot::SecondMoment, 2 + 3 * n + j, 2 * n + j),
        ],
        UpdateKind::Adagrad => vec![(InnerSlot::Accumulator, 2 + 2 * n + j, n + j)],
        UpdateKind::Arithmetic => vec![],
    }
}

/// The bound state of the optimizer `node` for its `j`-th of `n` weights. `bound` maps each
/// update_binding key to its (original) value, `typed` gives a tensor's type and shape.
pub(super) fn inner_bindings(
    node: &NodeProto,
    kind: UpdateKind,
    (n, j): (usize, usize),
    bound: &HashMap<&str, &str>,
    typed: &TypeOf,
) -> Vec<InnerBinding> {
    let mut found = Vec::new();
    let slots = inner_slots(kind, n, j)
        .into_iter()
        .map(|(slot, i, o)| (slot, i, Some(o)));
    // The update count is the node's second input; it is state when update_binding advances it.
    let count = (kind != UpdateKind::Arithmetic).then_some((InnerSlot::Count, 1, None));
    for (slot, input, output) in slots.chain(count) {
        let Some(key) = node.input.get(input).filter(|k| !k.is_empty()) else {
            continue;
        };
        let Some(&value) = bound.get(key.as_str()) else {
            continue;
        };
        if output.is_some_and(|o| node.output.get(o).map(String::as_str) != Some(value)) {
            continue;
        }
        if let Some((data_type, dims)) = typed(key) {
            found.push(InnerBinding {
                slot,
                key: key.clone(),
                update_value: value.to_string(),
                data_type,
                dims,
            });
        }
    }
    found
}

/// The optimizer state of `w` that a sync changes under the scheme's `--inner-state`; refused
/// when there is none to change, or when resetting the update count of `w`'s optimizer node would
/// also restart the optimizer of weights the selection leaves out.
pub(super) fn synced_inner_state(
    scheme: &dyn Scheme,
    w: &TrainedWeight,
    all: &[TrainedWeight],
    selected: &HashSet<String>,
) -> Result<Vec<InnerBinding>> {
    let policy = scheme.inner_state();
    let slots = policy.synced_slots();
    if slots.is_empty() {
        return Ok(Vec::new());
    }
    let inner: Vec<InnerBinding> = w
        .inner
        .iter()
        .filter(|b| slots.contains(&b.slot))
        .cloned()
        .collect();
    if !inner.iter().any(|b| b.slot != InnerSlot::Count) {
        return Err(Error::InvalidOption(format!(
            "--inner-state {}: weight {} ({}) has no {}; use --inner-state keep or --exclude it",
            policy.id(),
            w.name,
            w.kind.name(),
            policy.requirement()
        )));
    }
    if let Some(count) = inner.iter().find(|b| b.slot == InnerSlot::Count) {
        let left_out: Vec<&str> = all
            .iter()
            .filter(|o| o.update_node == w.update_node && !selected.contains(&o.name))
            .map(|o| o.name.as_str())
            .collect();
        if !left_out.is_empty() {
            return Err(Error::InvalidOption(format!(
                "--inner-state {} restarts the update count {} of optimizer node {}, which also updates {} (left out by --include/--exclude); select all of its weights or use --inner-state keep",
                policy.id(),
                count.key,
                w.update_node.name,
                left_out.join(", ")
            )));
        }
    }
    Ok(inner)
}
