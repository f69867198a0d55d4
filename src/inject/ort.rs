//! Wiring an averaging scheme into ONNX Runtime on-device training artifacts (onnxruntime-training
//! 1.19.2), "design D without per-step cost" of README. The optimizer model is not touched, so any
//! inner optimizer works and its state is kept as is (`--inner-state reset` patches it on its
//! own: `ort_optimizer.rs`).
//!
//! Checkpoint: per wrapped parameter P one frozen parameter per state slot of the scheme
//! (`lookahead__slow__P`, starting equal to P), the scheme's set-wide state (float[1] = 0 each,
//! SWA's sample count), and `lookahead__step` (float[1] = 0), the bounded counter of
//! `scheme::Schedule`: an update is pending when it equals the schedule's `first` step.
//!
//! Training graph, at the first forward after an optimizer step (lazy_reset_grad is true):
//! ```text
//! pending = lazy_reset_grad AND step == first                       (scalars only)
//! done0   = If(pending) then: per P, the scheme's sync arithmetic out of place, then the new
//!                             values written into the state and into P with
//!                             InPlaceAccumulatorV2(.., overwrite), flags chained in a fixed order,
//!                             the set-wide state written last
//!                       else: true                                  (no per-element work)
//! (done, P1', .., Pn') = com.microsoft.PassThrough(done0, P1, .., Pn)
//!     zero-copy aliases of P that depend on the If, so no reader of P runs before the sync;
//!     every original reader of P reads P' instead (or one Reshape per P: `--parallel-safe`)
//! step    <- lazy_reset_grad ? step + 1 - (step == first ? period : 0) : step     (in place)
//! <first accumulation flag output> = original AND done AND step-write flag
//!     side effects feed a graph output, so no runtime may prune them
//! ```
//! The optimizer kernels and InPlaceAccumulatorV2 write into the checkpoint's buffers (the
//! training API feeds non-owning views), so the writes persist, also inside the If.
//!
//! Eval graph: `P_eval = If(step == first) then <view at a sync> else <view between syncs>` with
//! standard ops only (export_model_for_inferencing keeps working); every reader of P reads P_eval.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::generated::onnx::{ModelProto, ValueInfoProto, tensor_proto::DataType};
use crate::graph::build::{self, MS_DOMAIN, Node};
use crate::graph::emit::Emitter;
use crate::graph::names::NameGenerator;
use crate::graph::patch::{GraphEdit, GraphId, ModelPatch};
use crate::record::WrappedParameter;
use crate::scheme::{EvalWeights, InPlace, Param, Schedule, Scheme};

use super::{NAME_PREFIX, branch_output, if_node};

mod eval;

use eval::inject_eval;

/// The training graph's flag telling that this forward starts a new optimizer step.
pub const LAZY_RESET_GRAD: &str = "lazy_reset_grad";
/// Suffix of the per-parameter gradient accumulation flag outputs of ORT training graphs.
pub const ACCUMULATION_OUT_SUFFIX: &str = "_grad.accumulation.out";
/// The largest period whose cycle position a float32 counter holds exactly.
pub const MAX_PERIOD: u64 = 1 << 24;

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

/// How a new frozen checkpoint parameter starts.
#[derive(Debug, Clone, PartialEq)]
pub enum NewStateValue {
    /// A copy of this existing parameter (type, shape and bytes).
    CopyOf(String),
    /// float32 zeros of this shape.
    ZerosF32(Vec<i64>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewState {
    pub name: String,
    pub value: NewStateValue,
}

/// A trainable parameter as the training graph takes it (its graph input gives type and shape).
#[derive(Debug, Clone)]
pub struct TrainableInput {
    pub name: String,
    pub input: ValueInfoProto,
}

/// What the adapter's analysis established about the training graph.
#[derive(Debug, Clone)]
pub struct TrainingGraph<'m> {
    pub model: &'m ModelProto,
    /// The trainable parameters to wrap, in checkpoint order.
    pub trainable: Vec<TrainableInput>,
    /// The `*_grad.accumulation.out` output the side effects are folded into.
    pub flag_output: String,
}

/// Everything the rewrite changes in an artifacts directory.
#[derive(Debug, Clone, Default)]
pub struct OrtInjection {
    pub training: ModelPatch,
    pub eval: Option<ModelPatch>,
    pub new_state: Vec<NewState>,
    pub wrapped: Vec<WrappedParameter>,
    pub counter: String,
    /// The scheme's set-wide state tensors.
    pub shared: Vec<String>,
}

/// One wrapped parameter's names and type.
struct Slots {
    param: String,
    data_type: i32,
    input: ValueInfoProto,
    state: Vec<String>,
}

impl Slots {
    fn param(&self) -> Param<'_> {
        Param {
            name: &self.param,
            data_type: self.data_type,
        }
    }
}

pub fn inject(
    scheme: &dyn Scheme,
    training: &TrainingGraph,
    eval: Option<&ModelProto>,
    alias: AliasOp,
    eval_weights: EvalWeights,
    names: &mut NameGenerator,
) -> Result<OrtInjection> {
    let schedule = scheme.schedule();
    if schedule.first.max(schedule.period) > MAX_PERIOD {
        return Err(Error::InvalidOption(format!(
            "the update steps of {} must be at most {MAX_PERIOD} for ONNX Runtime artifacts (the step counter is float32)",
            scheme.describe()
        )));
    }
    let slots: Vec<Slots> = training
        .trainable
        .iter()
        .map(|t| Slots {
            param: t.name.clone(),
            data_type: elem_type(&t.input).unwrap_or(DataType::Float as i32),
            input: t.input.clone(),
            state: scheme
                .state_slots()
                .iter()
                .map(|role| names.fresh(&format!("{NAME_PREFIX}{role}__{}", t.name)))
                .collect(),
        })
        .collect();
    let counter = names.fresh(&format!("{NAME_PREFIX}step"));
    let shared: Vec<String> = scheme
        .shared_slots()
        .iter()
        .map(|role| names.fresh(&format!("{NAME_PREFIX}{role}")))
        .collect();
    let state = State {
        counter: &counter,
        shared: &shared,
    };
    let mut new_state: Vec<NewState> = slots
        .iter()
        .flat_map(|s| {
            s.state.iter().map(|name| NewState {
                name: name.clone(),
                value: NewStateValue::CopyOf(s.param.clone()),
            })
        })
        .collect();
    for name in std::iter::once(&counter).chain(&shared) {
        new_state.push(NewState {
            name: name.clone(),
            value: NewStateValue::ZerosF32(vec![1]),
        });
    }
    let training_patch = inject_training(scheme, training, &slots, state, alias, names)?;
    let eval_patch = match eval {
        Some(model) => Some(inject_eval(
            scheme,
            model,
            &slots,
            state,
            eval_weights,
            names,
        )?),
        None => None,
    };
    Ok(OrtInjection {
        training: training_patch,
        eval: eval_patch,
        new_state,
        wrapped: slots
            .into_iter()
            .map(|s| WrappedParameter {
                name: s.param,
                state: s.state,
            })
            .collect(),
        counter,
        shared,
    })
}

/// The set-wide tensors the graphs read: the step counter and the scheme's shared state.
#[derive(Clone, Copy)]
struct State<'a> {
    counter: &'a str,
    shared: &'a [String],
}

pub(crate) fn elem_type(info: &ValueInfoProto) -> Option<i32> {
    match info.r#type.as_ref()?.value.as_ref()? {
        crate::generated::onnx::type_proto::Value::TensorType(t) => t.elem_type,
        _ => None,
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

/// The graph inputs of `model` by name.
fn inputs_of(model: &ModelProto) -> std::collections::HashMap<&str, &ValueInfoProto> {
    let mut by_name = std::collections::HashMap::new();
    for input in model.graph.iter().flat_map(|g| &g.input) {
        by_name.entry(input.name()).or_insert(input);
    }
    by_name
}

/// Adds the state inputs of `slots`, the counter and shared-state inputs, the first-update
/// constant and the `step == first` test; returns the test's output and the constant's name.
fn add_state_inputs(
    patch: &mut ModelPatch,
    slots: &[&Slots],
    state: State,
    first: u64,
    e: &mut Emitter,
) -> (String, String) {
    let g = GraphId::Main;
    for s in slots {
        for state in &s.state {
            patch.edit(
                g,
                GraphEdit::AddInput(build::value_info_renamed(&s.input, state)),
            );
        }
    }
    for name in std::iter::once(state.counter).chain(state.shared.iter().map(String::as_str)) {
        patch.edit(
            g,
            GraphEdit::AddInput(build::value_info(name, DataType::Float as i32, Some(&[1]))),
        );
    }
    let first_name = e.fresh("k");
    patch.edit(
        g,
        GraphEdit::AddInitializer(build::scalar_f32(&first_name, first as f32)),
    );
    let at_boundary = e.op("Equal", &[state.counter, &first_name], "sync_pending");
    (at_boundary, first_name)
}

fn inject_training(
    scheme: &dyn Scheme,
    training: &TrainingGraph,
    slots: &[Slots],
    state: State,
    alias: AliasOp,
    names: &mut NameGenerator,
) -> Result<ModelPatch> {
    let g = GraphId::Main;
    let schedule = scheme.schedule();
    let mut patch = ModelPatch::default();
    let mut main = Emitter::new(names, NAME_PREFIX);
    let all: Vec<&Slots> = slots.iter().collect();
    let (at_boundary, _) = add_state_inputs(&mut patch, &all, state, schedule.first, &mut main);
    let flag_true = main.fresh("true");
    patch.edit(
        g,
        GraphEdit::AddInitializer(build::tensor_bool(&flag_true, &[1], &[true])),
    );
    let pending = main.op("And", &[LAZY_RESET_GRAD, &at_boundary], "sync_now");
    let main_nodes = main.take_nodes();
    let main_constants = main.take_constants();

    // The sync: every per-element operation inside the then-branch.
    let (then_nodes, then_outputs, then_constants) = {
        let mut then = Emitter::new(names, NAME_PREFIX);
        let mut previous_flag = flag_true.clone();
        let prepared = scheme.prepare(&mut then, state.shared)?;
        // Each parameter's new values are written right after they are computed, so its
        // temporaries can be freed before the next parameter's.
        // The third input of InPlaceAccumulatorV2 is its overwrite flag: the previous write's
        // (true) flag chains the writes in a fixed order; its negation both adds instead and
        // keeps the order.
        let mut write = |then: &mut Emitter, target: &str, how: &InPlace| {
            let (value, overwrite) = match how {
                InPlace::Set(value) if value == target => return, // unchanged
                InPlace::Set(value) => (value.as_str(), previous_flag.clone()),
                InPlace::Add(step) => (
                    step.as_str(),
                    then.op("Not", &[&previous_flag], &format!("add_to__{target}")),
                ),
            };
            let written = then.fresh(&format!("written__{target}"));
            then.node(
                Node::new("InPlaceAccumulatorV2")
                    .domain(MS_DOMAIN)
                    .inputs([target, value, overwrite.as_str()])
                    .outputs([&written])
                    .build(),
            );
            previous_flag = written;
        };
        for s in slots {
            let (fast, writes) = scheme.sync_in_place(
                &mut then,
                s.param(),
                &s.param,
                &s.state,
                &prepared.scalars,
            )?;
            for (target, how) in s.state.iter().zip(&writes) {
                write(&mut then, target, how);
            }
            write(&mut then, &s.param, &InPlace::Set(fast));
        }
        // The set-wide state last: every parameter's arithmetic has read it by then.
        for (target, value) in state.shared.iter().zip(&prepared.shared) {
            write(&mut then, target, &InPlace::Set(value.clone()));
        }
        let done = branch_output(&mut then, &mut HashSet::new(), &previous_flag);
        let mut outputs = vec![bool_info(&done)];
        if alias == AliasOp::Reshape {
            outputs.extend(shapes(&mut then, slots));
        }
        (then.take_nodes(), outputs, then.take_constants())
    };
    let (else_nodes, else_outputs) = {
        let mut els = Emitter::new(names, NAME_PREFIX);
        let done = els.fresh("no_sync");
        let value = build::tensor_bool(&els.fresh("no_sync_value"), &[1], &[true]);
        els.node(
            Node::new("Constant")
                .outputs([&done])
                .attr_tensor("value", value)
                .build(),
        );
        let mut outputs = vec![bool_info(&done)];
        if alias == AliasOp::Reshape {
            outputs.extend(shapes(&mut els, slots));
        }
        (els.take_nodes(), outputs)
    };
    let mut if_outputs = vec![names.fresh(&format!("{NAME_PREFIX}synced"))];
    if alias == AliasOp::Reshape {
        for s in slots {
            if_outputs.push(names.fresh(&format!("{NAME_PREFIX}shape__{}", s.param)));
        }
    }
    for c in then_constants.into_iter().chain(main_constants) {
        patch.edit(g, GraphEdit::AddInitializer(c));
    }
    for node in main_nodes {
        patch.add_node(g, node);
    }
    let synced = if_outputs[0].clone();
    let sync_node = if_node(
        names,
        super::SYNC_IF,
        &pending,
        if_outputs.clone(),
        (then_nodes, then_outputs),
        (else_nodes, else_outputs),
    );
    patch.add_node(g, sync_node);

    // Aliases of the parameters that exist only after the If ran; every reader of P reads them.
    let aliases: Vec<String> = slots
        .iter()
        .map(|s| names.fresh(&format!("{NAME_PREFIX}after_sync__{}", s.param)))
        .collect();
    for (s, alias_name) in slots.iter().zip(&aliases) {
        patch.edit(
            g,
            GraphEdit::RedirectReads {
                from: s.param.clone(),
                to: alias_name.clone(),
            },
        );
    }
    let done = match alias {
        AliasOp::PassThrough => {
            // One kernel for all parameters; its CPU kernel makes output i the buffer of input i
            // and fails rather than copy.
            let done = names.fresh(&format!("{NAME_PREFIX}sync_done"));
            let outputs = std::iter::once(done.clone()).chain(aliases.iter().cloned());
            let inputs =
                std::iter::once(synced.clone()).chain(slots.iter().map(|s| s.param.clone()));
            patch.add_node(
                g,
                Node::new("PassThrough")
                    .domain(MS_DOMAIN)
                    .inputs(inputs)
                    .outputs(outputs)
                    .name(names.fresh(&format!("{NAME_PREFIX}after_sync")))
                    .build(),
            );
            done
        }
        AliasOp::Reshape => {
            // Reshape to its own shape: a view where the planner allows it, a copy otherwise
            // (ORT_PARALLEL), correct either way.
            for ((s, alias_name), shape) in slots.iter().zip(&aliases).zip(&if_outputs[1..]) {
                patch.add_node(
                    g,
                    Node::new("Reshape")
                        .inputs([&s.param, shape])
                        .outputs([alias_name])
                        .name(names.fresh(&format!("{NAME_PREFIX}after_sync")))
                        .build(),
                );
            }
            synced
        }
    };
    let step_written = advance_counter(
        &mut patch,
        state.counter,
        &at_boundary,
        schedule,
        &flag_true,
        names,
    );
    fold_side_effects(
        &mut patch,
        &training.flag_output,
        &done,
        &step_written,
        names,
    );
    Ok(patch)
}

/// Shape(P) of every parameter, as branch outputs: with them the If's results tell each
/// parameter's Reshape alias to wait for the sync.
fn shapes(e: &mut Emitter, slots: &[Slots]) -> Vec<ValueInfoProto> {
    slots
        .iter()
        .map(|s| {
            let rank = rank(&s.input).map(|r| vec![r as i64]);
            let shape = e.op("Shape", &[&s.param], &format!("shape__{}", s.param));
            build::value_info(&shape, DataType::Int64 as i32, rank.as_deref())
        })
        .collect()
}

fn bool_info(name: &str) -> ValueInfoProto {
    build::value_info(name, DataType::Bool as i32, Some(&[1]))
}

/// step <- lazy_reset_grad ? step + 1 - (step == first ? period : 0) : step, in place (after
/// the update at `first` the count continues at `first - period + 1`). Tied to the boundary test
/// so the write cannot run before the test read the old value. Returns the write's flag.
fn advance_counter(
    patch: &mut ModelPatch,
    counter: &str,
    at_boundary: &str,
    schedule: Schedule,
    flag_true: &str,
    names: &mut NameGenerator,
) -> String {
    let g = GraphId::Main;
    let mut e = Emitter::new(names, NAME_PREFIX);
    let after_update = e.fresh("step_after_update");
    patch.edit(
        g,
        GraphEdit::AddInitializer(build::scalar_f32(
            &after_update,
            (schedule.ort_after_update() + 1.0) as f32,
        )),
    );
    let one = e.fresh("one");
    patch.edit(g, GraphEdit::AddInitializer(build::scalar_f32(&one, 1.0)));
    let not_boundary = e.op("Not", &[at_boundary], "not_sync_pending");
    let tie = e.op("Or", &[at_boundary, &not_boundary], "step_test_done");
    let advance = e.op("And", &[LAZY_RESET_GRAD, &tie], "advance");
    let counted = e.op("Add", &[counter, &one], "step_counted");
    let next = e.op(
        "Where",
        &[at_boundary, &after_update, &counted],
        "step_next",
    );
    let value = e.op("Where", &[&advance, &next, counter], "step_value");
    let written = e.fresh("step_written");
    e.node(
        Node::new("InPlaceAccumulatorV2")
            .domain(MS_DOMAIN)
            .inputs([counter, value.as_str(), flag_true])
            .outputs([&written])
            .build(),
    );
    for node in e.take_nodes() {
        patch.add_node(g, node);
    }
    written
}

/// The side effects (sync done, counter written) are folded into an existing graph output, so no
/// runtime can prune them: `flag_output` is produced by an And of its original value and both.
fn fold_side_effects(
    patch: &mut ModelPatch,
    flag_output: &str,
    done: &str,
    step_written: &str,
    names: &mut NameGenerator,
) {
    let g = GraphId::Main;
    let original = names.fresh(&format!("{NAME_PREFIX}original__{flag_output}"));
    patch.edit(
        g,
        GraphEdit::RenameProducedOutput {
            from: flag_output.to_string(),
            to: original.clone(),
        },
    );
    let mut e = Emitter::new(names, NAME_PREFIX);
    let both = e.op("And", &[&original, done], "sync_and_accumulation_done");
    let join = e.fresh("join_step");
    e.node(
        Node::new("And")
            .inputs([both.as_str(), step_written])
            .outputs([flag_output])
            .name(join)
            .build(),
    );
    for node in e.take_nodes() {
        patch.add_node(g, node);
    }
}
