//! Lookahead for ONNX Runtime on-device training artifacts (onnxruntime-training 1.19.2),
//! "design D without per-step cost" of the design notes. The optimizer model is not touched, so
//! any inner optimizer works and its state is kept as is.
//!
//! Checkpoint: a frozen parameter `lookahead__slow__<P>` (= P) per trainable P, and
//! `lookahead__step` (float[1] = 0), the position in the sync cycle: 0 before the first step,
//! then 1..k, wrapping. A sync is pending when it equals k. Keeping it bounded keeps the float
//! counter exact for any number of steps.
//!
//! Training graph, at the first forward after an optimizer step (lazy_reset_grad is true):
//! ```text
//! pending = lazy_reset_grad AND step == k                            (scalars only)
//! done0   = If(pending) then: for each P, flags chained so the writes run in a fixed order:
//!                               S += alpha * (P - S)   InPlaceAccumulatorV2(S, .., overwrite=false)
//!                               P <- S                 InPlaceAccumulatorV2(P, S', overwrite=true)
//!                       else: true                      (no per-element work)
//! (done, P1', .., Pn') = com.microsoft.PassThrough(done0, P1, .., Pn)
//!     zero-copy aliases of P that depend on the If, so no reader of P can run before the sync;
//!     every original reader of P reads P' instead
//! step    <- lazy_reset_grad ? (step mod k) + 1 : step                (in place)
//! <first accumulation flag output> = original AND done AND step-write flag
//!     side effects feed a graph output, so no runtime may prune them
//! ```
//! The optimizer kernels and InPlaceAccumulatorV2 write into the checkpoint's buffers (the
//! training API feeds non-owning views), so the writes persist, also inside the If.
//!
//! Eval graph: `P_eval = If(step == k) then S + alpha * (P - S) else P` (standard ops only, so
//! export_model_for_inferencing still gives an inference model), every reader of P reads
//! P_eval: evaluation right after a sync step sees the synced weights before the next forward
//! materialises them.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::generated::onnx::{ModelProto, ValueInfoProto, tensor_proto::DataType};
use crate::graph::build::{self, MS_DOMAIN, Node};
use crate::graph::names::NameGenerator;
use crate::graph::patch::{GraphEdit, GraphId, ModelPatch};
use crate::lookahead::{AlphaConstants, NAME_PREFIX, Options, fresh, slow_step};

/// The training graph's flag telling that this forward starts a new optimizer step.
pub const LAZY_RESET_GRAD: &str = "lazy_reset_grad";
/// Suffix of the per-parameter gradient accumulation flag outputs of ORT training graphs.
pub const ACCUMULATION_OUT_SUFFIX: &str = "_grad.accumulation.out";

/// The largest k whose cycle position a float32 counter holds exactly.
pub const MAX_K: u64 = 1 << 24;

/// How every reader of a parameter is made to wait for the sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AliasOp {
    /// One com.microsoft.PassThrough over all parameters: zero-copy, one kernel per step. ONNX
    /// Runtime's parallel executor (ExecutionMode.ORT_PARALLEL) rejects it.
    #[default]
    PassThrough,
    /// Reshape(P, Shape(P) from the If) per parameter: standard ops, works with every executor,
    /// a few microseconds per parameter per step.
    Reshape,
}

/// How a new frozen checkpoint parameter is initialised.
#[derive(Debug, Clone, PartialEq)]
pub enum NewParamValue {
    /// A copy of this existing parameter (type, shape and bytes).
    CopyOf(String),
    /// float32 zeros of this shape.
    ZerosF32(Vec<i64>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewParam {
    pub name: String,
    pub value: NewParamValue,
}

/// Everything the rewrite changes in an artifacts directory.
#[derive(Debug, Clone, Default)]
pub struct OrtPlan {
    pub training: ModelPatch,
    pub eval: Option<ModelPatch>,
    pub new_frozen_params: Vec<NewParam>,
    /// Trainable parameters that get slow weights, in the order used by the graphs.
    pub wrapped: Vec<String>,
}

/// The names of the Lookahead state of one parameter.
fn slow_name(names: &mut NameGenerator, param: &str) -> String {
    names.fresh(&format!("{NAME_PREFIX}slow__{param}"))
}

/// The graph inputs of a model by name (the first input of each name), built once per model so
/// that per-parameter lookups do not scan the inputs.
struct Inputs<'m> {
    by_name: HashMap<&'m str, &'m ValueInfoProto>,
}

impl<'m> Inputs<'m> {
    fn of(model: &'m ModelProto) -> Self {
        let mut by_name = HashMap::new();
        for input in model.graph.iter().flat_map(|g| &g.input) {
            by_name.entry(input.name()).or_insert(input);
        }
        Inputs { by_name }
    }

    fn get(&self, name: &str) -> Option<&'m ValueInfoProto> {
        self.by_name.get(name).copied()
    }
}

fn rank(info: &ValueInfoProto) -> Option<usize> {
    match info.r#type.as_ref()?.value.as_ref()? {
        crate::generated::onnx::type_proto::Value::TensorType(t) => {
            Some(t.shape.as_ref()?.dim.len())
        }
        _ => None,
    }
}

fn elem_type(info: &ValueInfoProto) -> Option<i32> {
    match info.r#type.as_ref()?.value.as_ref()? {
        crate::generated::onnx::type_proto::Value::TensorType(t) => t.elem_type,
        _ => None,
    }
}

/// Plans the rewrite of the training graph and, when there is one, the eval graph (each given
/// with its path, for messages).
pub fn plan(
    training: (&ModelProto, &Path),
    eval: Option<(&ModelProto, &Path)>,
    trainable: &[String],
    options: Options,
    alias: AliasOp,
    names: &mut NameGenerator,
) -> Result<OrtPlan> {
    let (training, training_path) = training;
    if options.k > MAX_K {
        return Err(Error::InvalidOption(format!(
            "k must be at most {MAX_K} for ONNX Runtime artifacts (the cycle counter is float32), got {}",
            options.k
        )));
    }
    let training_inputs = Inputs::of(training);
    if training_inputs.get(LAZY_RESET_GRAD).is_none() {
        return Err(Error::Unsupported {
            path: training_path.to_path_buf(),
            reason: format!(
                "the training graph has no `{LAZY_RESET_GRAD}` input (not from generate_artifacts?)"
            ),
        });
    }
    let wrapped: Vec<String> = trainable
        .iter()
        .filter(|p| training_inputs.get(p).is_some())
        .cloned()
        .collect();
    if wrapped.is_empty() {
        return Err(Error::NoOptimizer {
            path: training_path.to_path_buf(),
            reason: "no trainable parameter is an input of the training graph".into(),
        });
    }
    let slow: Vec<String> = wrapped.iter().map(|p| slow_name(names, p)).collect();
    let step = names.fresh(&format!("{NAME_PREFIX}step"));
    let mut new_frozen_params: Vec<NewParam> = wrapped
        .iter()
        .zip(&slow)
        .map(|(p, s)| NewParam {
            name: s.clone(),
            value: NewParamValue::CopyOf(p.clone()),
        })
        .collect();
    new_frozen_params.push(NewParam {
        name: step.clone(),
        value: NewParamValue::ZerosF32(vec![1]),
    });

    let state = LookaheadState {
        wrapped: &wrapped,
        slow: &slow,
        step: &step,
    };
    let training_patch = plan_training(training, &state, options, alias, names, training_path)?;
    let eval_patch = match eval {
        Some((eval, eval_path)) => Some(plan_eval(eval, &state, options, names, eval_path)?),
        None => None,
    };
    Ok(OrtPlan {
        training: training_patch,
        eval: eval_patch,
        new_frozen_params,
        wrapped,
    })
}

/// Adds the slow-weight and step inputs and the `step == k` test; returns the test's output.
fn add_state_inputs(
    inputs: &Inputs,
    patch: &mut ModelPatch,
    params: &[(String, String)],
    step: &str,
    options: Options,
    names: &mut NameGenerator,
) -> (String, String) {
    let g = GraphId::Main;
    for (param, slow) in params {
        if let Some(info) = inputs.get(param) {
            patch.edit(
                g,
                GraphEdit::AddInput(build::value_info_renamed(info, slow)),
            );
        }
    }
    patch.edit(
        g,
        GraphEdit::AddInput(build::value_info(step, DataType::Float as i32, Some(&[1]))),
    );
    let period = fresh(names, "k");
    patch.edit(
        g,
        GraphEdit::AddInitializer(build::scalar_f32(&period, options.k as f32)),
    );
    let at_boundary = fresh(names, "sync_pending");
    patch.add_node(
        g,
        Node::new("Equal")
            .inputs([step, period.as_str()])
            .outputs([&at_boundary])
            .name(fresh(names, "sync_pending"))
            .build(),
    );
    (at_boundary, period)
}

/// The names of the Lookahead state, shared by the training and eval graphs.
struct LookaheadState<'a> {
    /// Trainable parameters with slow weights.
    wrapped: &'a [String],
    /// Their slow weights, in the same order.
    slow: &'a [String],
    /// The cycle position.
    step: &'a str,
}

impl LookaheadState<'_> {
    /// (parameter, slow weight) for the parameters that are inputs of `model`.
    fn pairs_in(&self, inputs: &Inputs) -> Vec<(String, String)> {
        self.wrapped
            .iter()
            .zip(self.slow)
            .filter(|(p, _)| inputs.get(p).is_some())
            .map(|(p, s)| (p.clone(), s.clone()))
            .collect()
    }
}

fn plan_training(
    model: &ModelProto,
    state: &LookaheadState,
    options: Options,
    alias: AliasOp,
    names: &mut NameGenerator,
    path: &Path,
) -> Result<ModelPatch> {
    let (wrapped, step) = (state.wrapped, state.step);
    let g = GraphId::Main;
    let mut patch = ModelPatch::default();
    let inputs = Inputs::of(model);
    let pairs = state.pairs_in(&inputs);
    let (at_boundary, period) = add_state_inputs(&inputs, &mut patch, &pairs, step, options, names);

    let flag_true = fresh(names, "true");
    let flag_false = fresh(names, "false");
    patch.edit(
        g,
        GraphEdit::AddInitializer(build::tensor_bool(&flag_true, &[1], &[true])),
    );
    patch.edit(
        g,
        GraphEdit::AddInitializer(build::tensor_bool(&flag_false, &[1], &[false])),
    );
    let pending = fresh(names, "sync_now");
    patch.add_node(
        g,
        Node::new("And")
            .inputs([LAZY_RESET_GRAD, at_boundary.as_str()])
            .outputs([&pending])
            .name(fresh(names, "sync_now"))
            .build(),
    );

    // The sync, all per-element work inside the then-branch.
    let mut alphas = AlphaConstants::new(options.alpha, g);
    let mut then_nodes = Vec::new();
    let mut previous_flag = flag_true.clone();
    for (param, slow) in &pairs {
        let elem = inputs
            .get(param)
            .and_then(elem_type)
            .unwrap_or(DataType::Float as i32);
        let written = fresh(names, &format!("synced__{param}"));
        if options.alpha == 1.0 {
            // slow = P, and P = slow is then a no-op.
            then_nodes.push(
                Node::new("InPlaceAccumulatorV2")
                    .domain(MS_DOMAIN)
                    .inputs([slow.as_str(), param.as_str(), previous_flag.as_str()])
                    .outputs([&written])
                    .build(),
            );
        } else {
            let alpha = alphas.get(elem, names, &mut patch, path, param)?;
            let (step_nodes, scaled) = slow_step(param, slow, &alpha, param, names);
            then_nodes.extend(step_nodes);
            let slow_done = fresh(names, &format!("slow_written__{param}"));
            let slow_new = fresh(names, &format!("slow_new__{param}"));
            // S += alpha * (P - S), in place; the second output aliases the updated S.
            then_nodes.push(
                Node::new("InPlaceAccumulatorV2")
                    .domain(MS_DOMAIN)
                    .inputs([slow.as_str(), scaled.as_str(), flag_false.as_str()])
                    .outputs([&slow_done, &slow_new])
                    .build(),
            );
            // P <- S (overwrite: the previous flag is true), after the accumulation above.
            then_nodes.push(
                Node::new("InPlaceAccumulatorV2")
                    .domain(MS_DOMAIN)
                    .inputs([param.as_str(), slow_new.as_str(), previous_flag.as_str()])
                    .outputs([&written])
                    .build(),
            );
        }
        previous_flag = written;
    }
    let else_done = fresh(names, "no_sync");
    let mut else_nodes = vec![
        Node::new("Constant")
            .outputs([&else_done])
            .attr_tensor(
                "value",
                build::tensor_bool(&fresh(names, "no_sync_value"), &[1], &[true]),
            )
            .build(),
    ];
    let bool_vi = |name: &str| build::value_info(name, DataType::Bool as i32, Some(&[1]));
    let (mut then_outputs, mut else_outputs) =
        (vec![bool_vi(&previous_flag)], vec![bool_vi(&else_done)]);
    let mut if_outputs = vec![fresh(names, "synced")];
    if alias == AliasOp::Reshape {
        // Each branch also returns Shape(P), so Reshape(P, shape) depends on the If.
        for param in wrapped {
            let rank = inputs.get(param).and_then(rank).map(|r| vec![r as i64]);
            for (nodes, outputs, side) in [
                (&mut then_nodes, &mut then_outputs, "then"),
                (&mut else_nodes, &mut else_outputs, "else"),
            ] {
                let shape = fresh(names, &format!("{side}_shape__{param}"));
                nodes.push(Node::new("Shape").inputs([param]).outputs([&shape]).build());
                outputs.push(build::value_info(
                    &shape,
                    DataType::Int64 as i32,
                    rank.as_deref(),
                ));
            }
            if_outputs.push(fresh(names, &format!("shape__{param}")));
        }
    }
    build::name_nodes(&mut then_nodes, names, NAME_PREFIX);
    build::name_nodes(&mut else_nodes, names, NAME_PREFIX);
    let then_branch = build::branch(&fresh(names, "sync_then"), then_nodes, then_outputs);
    let else_branch = build::branch(&fresh(names, "sync_else"), else_nodes, else_outputs);
    let synced = if_outputs[0].clone();
    patch.add_node(
        g,
        Node::new("If")
            .inputs([&pending])
            .outputs(if_outputs.iter().cloned())
            .name(fresh(names, "sync"))
            .attr_graph("then_branch", then_branch)
            .attr_graph("else_branch", else_branch)
            .build(),
    );

    // Aliases of the parameters that exist only after the If ran; every reader of P reads them.
    let mut aliases = Vec::new();
    for param in wrapped {
        let alias = fresh(names, &format!("after_sync__{param}"));
        patch.edit(
            g,
            GraphEdit::RedirectReads {
                from: param.clone(),
                to: alias.clone(),
            },
        );
        aliases.push(alias);
    }
    let done = match alias {
        AliasOp::PassThrough => {
            // One kernel for all parameters; its CPU kernel makes output i the buffer of input i
            // and fails rather than copy.
            let done = fresh(names, "sync_done");
            let mut outputs = vec![done.clone()];
            outputs.extend(aliases.iter().cloned());
            let mut inputs = vec![synced.clone()];
            inputs.extend(wrapped.iter().cloned());
            patch.add_node(
                g,
                Node::new("PassThrough")
                    .domain(MS_DOMAIN)
                    .inputs(inputs)
                    .outputs(outputs)
                    .name(fresh(names, "after_sync"))
                    .build(),
            );
            done
        }
        AliasOp::Reshape => {
            // Reshape to its own shape: a view where the planner allows it, a copy otherwise
            // (ORT_PARALLEL), correct either way.
            for ((param, alias), shape) in wrapped.iter().zip(&aliases).zip(&if_outputs[1..]) {
                patch.add_node(
                    g,
                    Node::new("Reshape")
                        .inputs([param, shape])
                        .outputs([alias])
                        .name(fresh(names, "after_sync"))
                        .build(),
                );
            }
            synced
        }
    };

    // step <- lazy_reset_grad ? (step mod k) + 1 : step. Tied to the boundary test so the write
    // cannot run before the test read the old value.
    let one = fresh(names, "one");
    patch.edit(g, GraphEdit::AddInitializer(build::scalar_f32(&one, 1.0)));
    let not_boundary = fresh(names, "not_sync_pending");
    let tie = fresh(names, "step_test_done");
    let advance = fresh(names, "advance");
    let phase = fresh(names, "phase");
    let next = fresh(names, "step_next");
    let value = fresh(names, "step_value");
    let step_written = fresh(names, "step_written");
    for node in [
        Node::new("Not")
            .inputs([&at_boundary])
            .outputs([&not_boundary]),
        Node::new("Or")
            .inputs([&at_boundary, &not_boundary])
            .outputs([&tie]),
        Node::new("And")
            .inputs([LAZY_RESET_GRAD, tie.as_str()])
            .outputs([&advance]),
        Node::new("Mod")
            .inputs([step, period.as_str()])
            .outputs([&phase])
            .attr_int("fmod", 1),
        Node::new("Add").inputs([&phase, &one]).outputs([&next]),
        Node::new("Where")
            .inputs([advance.as_str(), next.as_str(), step])
            .outputs([&value]),
        Node::new("InPlaceAccumulatorV2")
            .domain(MS_DOMAIN)
            .inputs([step, value.as_str(), flag_true.as_str()])
            .outputs([&step_written]),
    ] {
        let name = fresh(names, "step");
        patch.add_node(g, node.name(name).build());
    }

    // Fold the side effects into an existing graph output.
    let graph = model.graph.as_ref().ok_or_else(|| Error::InvalidModel {
        path: path.to_path_buf(),
        reason: "the main graph is missing".into(),
    })?;
    let produced: std::collections::HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    let flag_output = graph
        .output
        .iter()
        .map(|o| o.name())
        .find(|o| o.ends_with(ACCUMULATION_OUT_SUFFIX) && produced.contains(o))
        .ok_or_else(|| Error::Unsupported {
            path: path.to_path_buf(),
            reason: format!("the training graph has no `*{ACCUMULATION_OUT_SUFFIX}` output to attach the sync to"),
        })?
        .to_string();
    let original_flag = fresh(names, &format!("original__{flag_output}"));
    let both = fresh(names, "sync_and_accumulation_done");
    patch.edit(
        g,
        GraphEdit::RenameProducedOutput {
            from: flag_output.clone(),
            to: original_flag.clone(),
        },
    );
    patch.add_node(
        g,
        Node::new("And")
            .inputs([&original_flag, &done])
            .outputs([&both])
            .name(fresh(names, "join_sync"))
            .build(),
    );
    patch.add_node(
        g,
        Node::new("And")
            .inputs([&both, &step_written])
            .outputs([&flag_output])
            .name(fresh(names, "join_step"))
            .build(),
    );
    patch.metadata = options.metadata();
    Ok(patch)
}

fn plan_eval(
    model: &ModelProto,
    state: &LookaheadState,
    options: Options,
    names: &mut NameGenerator,
    path: &Path,
) -> Result<ModelPatch> {
    let step = state.step;
    let g = GraphId::Main;
    let mut patch = ModelPatch::default();
    // Parameters the eval graph reads (a parameter used only by the loss's backward may not be).
    let inputs = Inputs::of(model);
    let pairs = state.pairs_in(&inputs);
    patch.metadata = options.metadata();
    if pairs.is_empty() {
        return Ok(patch);
    }
    let (at_boundary, _) = add_state_inputs(&inputs, &mut patch, &pairs, step, options, names);
    let mut alphas = AlphaConstants::new(options.alpha, g);
    let (mut then_nodes, mut else_nodes) = (Vec::new(), Vec::new());
    let (mut then_outputs, mut else_outputs, mut if_outputs) = (Vec::new(), Vec::new(), Vec::new());
    for (param, slow) in &pairs {
        let info = inputs.get(param).cloned().unwrap_or_default();
        let elem = elem_type(&info).unwrap_or(DataType::Float as i32);
        let synced = fresh(names, &format!("synced__{param}"));
        if options.alpha == 1.0 {
            then_nodes.push(
                Node::new("Identity")
                    .inputs([param])
                    .outputs([&synced])
                    .build(),
            );
        } else {
            let alpha = alphas.get(elem, names, &mut patch, path, param)?;
            let (step_nodes, scaled) = slow_step(param, slow, &alpha, param, names);
            then_nodes.extend(step_nodes);
            then_nodes.push(
                Node::new("Add")
                    .inputs([slow, &scaled])
                    .outputs([&synced])
                    .build(),
            );
        }
        let unchanged = fresh(names, &format!("unchanged__{param}"));
        else_nodes.push(
            Node::new("Identity")
                .inputs([param])
                .outputs([&unchanged])
                .build(),
        );
        then_outputs.push(build::value_info_renamed(&info, &synced));
        else_outputs.push(build::value_info_renamed(&info, &unchanged));
        let effective = fresh(names, &format!("eval__{param}"));
        patch.edit(
            g,
            GraphEdit::RedirectReads {
                from: param.clone(),
                to: effective.clone(),
            },
        );
        if_outputs.push(effective);
    }
    build::name_nodes(&mut then_nodes, names, NAME_PREFIX);
    build::name_nodes(&mut else_nodes, names, NAME_PREFIX);
    let then_branch = build::branch(&fresh(names, "eval_sync_then"), then_nodes, then_outputs);
    let else_branch = build::branch(&fresh(names, "eval_sync_else"), else_nodes, else_outputs);
    patch.add_node(
        g,
        Node::new("If")
            .inputs([&at_boundary])
            .outputs(if_outputs)
            .name(fresh(names, "eval_weights"))
            .attr_graph("then_branch", then_branch)
            .attr_graph("else_branch", else_branch)
            .build(),
    );
    Ok(patch)
}
