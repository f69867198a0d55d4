//! `--inner-state reset` for ONNX Runtime AdamW artifacts: the optimizer model's patch that zeroes
//! AdamW's moments right after the optimizer step that precedes each Lookahead sync, and restarts
//! AdamW's bias-correction count (optax `lookahead(reset_state=True)`).
//!
//! Why the optimizer model, and why this way (experiments: docs/experiments/ort_inner_state/):
//! the moments reach no graph but the optimizer model, whose inputs ONNX Runtime fixes; a copy
//! taken out of a sequence is a copy, but the CPU `AdamWOptimizer` kernel writes the tensors of
//! its input sequences in place, also inside an `If` (ORT counts optimizer nodes in the main graph
//! only). With `lr = 1, weight_decay = 1, alpha = beta = 1, correct_bias = 0, adam_mode = 1` the
//! kernel sets its weights slot to exactly 0 (`w - 1*1*w`, decay applied last) and leaves its
//! moment slots as they are (`1*x + 0*g`). So:
//!
//! ```text
//! s     = step - s0                      s0: the optimizer step of the input checkpoint
//! sync  = (s mod k) == 0                 this optimizer step precedes a Lookahead sync
//! local = s > k ? ((s - 1) mod k) + 1    AdamW's step since its last reset: 1..k,
//!               : step                   or its own count before the first one
//! flag  = AdamWOptimizer(lr, local, params, gradients, m, v)      the original node, step redirected
//! done  = If(flag AND sync)
//!           then: z1 = AdamW0(1, step, m, gradients, v, v)          m <- 0
//!                 z2 = AdamW0(1, step, v, gradients, m, m, z1)      v <- 0, after z1
//!           else: flag
//! <output> = flag AND done                                          the original output name
//! ```
//! Non-sync steps do scalar work only; a sync step two in-place passes over the moments. The
//! element order of the sequences (random per process) does not matter: every moment is zeroed.
//! The optimizer model's inputs, its node's attributes and its output name stay as generated.

use crate::error::{Error, Result};
use crate::generated::onnx::{ModelProto, NodeProto, tensor_proto::DataType};
use crate::graph::build::{self, MS_DOMAIN, Node};
use crate::graph::emit::Emitter;
use crate::graph::names::NameGenerator;
use crate::graph::patch::{GraphEdit, GraphId, ModelPatch};

use super::{NAME_PREFIX, if_node};

/// The optimizer node this patch works with.
pub const ADAMW: &str = "AdamWOptimizer";

/// The patch of `model` (an ORT AdamW optimizer model, found at `path`) that resets AdamW's state
/// every `period` optimizer steps counted from `step0`.
pub fn reset_adamw_state(
    model: &ModelProto,
    path: &std::path::Path,
    period: u64,
    step0: i64,
    names: &mut NameGenerator,
) -> Result<ModelPatch> {
    let refuse = |reason: String| Error::Unsupported {
        path: path.to_path_buf(),
        reason,
    };
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| refuse("the main graph is missing".into()))?;
    let adamw: Vec<&NodeProto> = graph
        .node
        .iter()
        .filter(|n| n.op_type() == ADAMW && n.domain() == MS_DOMAIN)
        .collect();
    let [node] = adamw.as_slice() else {
        return Err(refuse(format!(
            "--inner-state reset needs exactly one {ADAMW} node in the optimizer model's main graph, found {}",
            adamw.len()
        )));
    };
    // AdamWOptimizer(lr, step, weights, gradients, m, v[, update_signal]) -> (updated_flag, ..)
    let input = |i: usize| node.input.get(i).map(String::as_str).unwrap_or("");
    let (lr, step, gradients, m, v) = (input(0), input(1), input(3), input(4), input(5));
    let flag_out = node.output.first().map(String::as_str).unwrap_or("");
    if [lr, step, gradients, m, v, flag_out].contains(&"") {
        return Err(refuse(format!(
            "its {ADAMW} node lacks an input or its updated_flag output"
        )));
    }
    let step_readers = graph
        .node
        .iter()
        .filter(|n| n.input.iter().any(|i| i == step))
        .count();
    if step_readers != 1 {
        return Err(refuse(format!(
            "--inner-state reset restarts the step {ADAMW} reads, but {step:?} has {step_readers} readers in the optimizer model"
        )));
    }
    let k = i64::try_from(period)
        .map_err(|_| Error::InvalidOption(format!("k = {period} does not fit int64")))?;
    let epsilon = node
        .attribute
        .iter()
        .find(|a| a.name() == "epsilon")
        .and_then(|a| a.f)
        .unwrap_or(1e-8);
    let lr_type = graph
        .input
        .iter()
        .chain(&graph.value_info)
        .find(|vi| vi.name() == lr)
        .and_then(super::ort::elem_type)
        .unwrap_or(DataType::Float as i32);
    if lr_type != DataType::Float as i32 {
        return Err(refuse(format!(
            "its learning rate {lr:?} is not float; --inner-state reset supports the float AdamW of generate_artifacts"
        )));
    }

    let mut e = Emitter::new(names, NAME_PREFIX);
    let mut constants = Vec::new();
    let mut int64 = |e: &mut Emitter, hint: &str, value: i64| {
        let name = e.fresh(hint);
        constants.push(build::tensor_raw(
            &name,
            DataType::Int64,
            &[1],
            raw(&value.to_le_bytes()),
        ));
        name
    };
    let k_name = int64(&mut e, "period", k);
    let one = int64(&mut e, "one", 1);
    let zero = int64(&mut e, "zero", 0);
    let since = if step0 == 0 {
        step.to_string()
    } else {
        let s0 = int64(&mut e, "step0", step0);
        e.op("Sub", &[step, &s0], "steps_since_rewrite")
    };
    let position = e.op("Mod", &[&since, &k_name], "cycle_position");
    let sync = e.op("Equal", &[&position, &zero], "sync_follows");
    let before = e.op("Sub", &[&since, &one], "steps_before");
    let in_cycle0 = e.op("Mod", &[&before, &k_name], "step_in_cycle0");
    let in_cycle = e.op("Add", &[&in_cycle0, &one], "step_in_cycle");
    // Until the first reset AdamW keeps its own count (the input checkpoint's state is warm);
    // after it, the count restarts with every cycle.
    let was_reset = e.op("Greater", &[&since, &k_name], "was_reset");
    let local = e.op("Where", &[&was_reset, &in_cycle, step], "local_step");
    let flag = e.fresh("inner_step_flag");
    let reset_now = e.op("And", &[&flag, &sync], "reset_now");

    // The then-branch: z1 as z2's update_signal orders the two in-place passes.
    let lr_one = e.fresh("reset_lr");
    constants.push(build::tensor_raw(
        &lr_one,
        DataType::Float,
        &[1],
        raw(&1f32.to_le_bytes()),
    ));
    let mut branch = Emitter::new(e.names(), NAME_PREFIX);
    let m_done = zeroing(
        &mut branch,
        &[&lr_one, step, m, gradients, v, v],
        epsilon,
        "m_zeroed",
    );
    let v_done = zeroing(
        &mut branch,
        &[&lr_one, step, v, gradients, m, m, &m_done],
        epsilon,
        "v_zeroed",
    );
    let then_nodes = branch.take_nodes();
    let kept = branch.op("Identity", &[&flag], "moments_kept");
    let else_nodes = branch.take_nodes();
    let bool_out = |name: &str| build::value_info(name, DataType::Bool as i32, Some(&[1]));
    let done = e.fresh("reset_done");
    let reset = if_node(
        e.names(),
        "reset_inner_state",
        &reset_now,
        vec![done.clone()],
        (then_nodes, vec![bool_out(&v_done)]),
        (else_nodes, vec![bool_out(&kept)]),
    );
    e.node(reset);
    let and = Node::new("And")
        .inputs([flag.as_str(), done.as_str()])
        .outputs([flag_out])
        .build();
    e.node(and);

    let mut patch = ModelPatch::default();
    for tensor in constants {
        patch.edit(GraphId::Main, GraphEdit::AddInitializer(tensor));
    }
    for node in e.take_nodes() {
        patch.add_node(GraphId::Main, node);
    }
    // The original node reads the step AdamW counts and its flag gets a new name; the original
    // output name is produced by the last added node, so the graph output keeps it.
    patch.edit(
        GraphId::Main,
        GraphEdit::RedirectReads {
            from: step.to_string(),
            to: local,
        },
    );
    patch.edit(
        GraphId::Main,
        GraphEdit::RenameProducedOutput {
            from: flag_out.to_string(),
            to: flag,
        },
    );
    Ok(patch)
}

fn raw(bytes: &[u8]) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(bytes)
}

/// Emits an AdamWOptimizer that sets its weights slot (`inputs[2]`) to exactly 0 and leaves its
/// moment slots as they are; returns its flag output.
fn zeroing(e: &mut Emitter, inputs: &[&str], epsilon: f32, hint: &str) -> String {
    let output = e.fresh(hint);
    let node = Node::new(ADAMW)
        .domain(MS_DOMAIN)
        .name(e.fresh("zero_moments"))
        .inputs(inputs.iter().copied())
        .outputs([output.as_str()])
        .attr_float("alpha", 1.0)
        .attr_float("beta", 1.0)
        .attr_float("weight_decay", 1.0)
        .attr_float("epsilon", epsilon)
        .attr_int("correct_bias", 0)
        .attr_int("adam_mode", 1)
        .build();
    e.node(node);
    output
}
