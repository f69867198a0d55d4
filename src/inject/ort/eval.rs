//! The eval graph of ONNX Runtime artifacts: every reader of a wrapped parameter reads what the
//! scheme's evaluation view gives, chosen by `If(step == first)` (an update pending or not), with
//! standard operators only, so `export_model_for_inferencing` keeps working.

use std::collections::HashSet;

use super::{Slots, State, add_state_inputs, inputs_of};
use crate::error::Result;
use crate::generated::onnx::ModelProto;
use crate::graph::build;
use crate::graph::emit::Emitter;
use crate::graph::names::NameGenerator;
use crate::graph::patch::{GraphEdit, GraphId, ModelPatch};
use crate::inject::{NAME_PREFIX, branch_output, if_node};
use crate::scheme::{EvalWeights, Scheme};

pub(super) fn inject_eval(
    scheme: &dyn Scheme,
    model: &ModelProto,
    slots: &[Slots],
    state: State,
    weights: EvalWeights,
    names: &mut NameGenerator,
) -> Result<ModelPatch> {
    let g = GraphId::Main;
    let mut patch = ModelPatch::default();
    // Parameters the eval graph reads (a parameter used only by the loss's backward may not be).
    let inputs = inputs_of(model);
    let read: Vec<&Slots> = slots
        .iter()
        .filter(|s| inputs.contains_key(s.param.as_str()))
        .collect();
    if read.is_empty() {
        return Ok(patch);
    }
    let mut main = Emitter::new(names, NAME_PREFIX);
    let (at_boundary, _) =
        add_state_inputs(&mut patch, &read, state, scheme.schedule().first, &mut main);
    for node in main.take_nodes() {
        patch.add_node(g, node);
    }
    // What evaluation reads: one branch at a pending sync, the other between syncs.
    let mut branch = |at_sync: bool| -> Result<_> {
        let mut e = Emitter::new(names, NAME_PREFIX);
        let mut outputs = Vec::new();
        let mut used = HashSet::new();
        let scalars = if at_sync {
            scheme.prepare(&mut e, state.shared)?.scalars
        } else {
            Vec::new()
        };
        for s in &read {
            let info = inputs
                .get(s.param.as_str())
                .copied()
                .cloned()
                .unwrap_or_default();
            let view = scheme.eval_view(
                &mut e,
                s.param(),
                &s.param,
                &s.state,
                &scalars,
                weights,
                at_sync,
            )?;
            let view = branch_output(&mut e, &mut used, &view);
            outputs.push(build::value_info_renamed(&info, &view));
        }
        Ok((e.take_nodes(), outputs, e.take_constants()))
    };
    let (then_nodes, then_outputs, then_constants) = branch(true)?;
    let (else_nodes, else_outputs, else_constants) = branch(false)?;
    let mut if_outputs = Vec::new();
    for s in &read {
        let effective = names.fresh(&format!("{NAME_PREFIX}eval__{}", s.param));
        patch.edit(
            g,
            GraphEdit::RedirectReads {
                from: s.param.clone(),
                to: effective.clone(),
            },
        );
        if_outputs.push(effective);
    }
    for c in then_constants.into_iter().chain(else_constants) {
        patch.edit(g, GraphEdit::AddInitializer(c));
    }
    let node = if_node(
        names,
        crate::inject::EVAL_IF,
        &at_boundary,
        if_outputs,
        (then_nodes, then_outputs),
        (else_nodes, else_outputs),
    );
    patch.add_node(g, node);
    Ok(patch)
}
