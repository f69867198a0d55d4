//! Wiring an averaging scheme into ModelProto.training_info models.
//!
//! The existing algorithm is extended rather than a TrainingInfoProto added: a separate entry
//! could not read the weights' initial values in its initialization (which has no inputs) and
//! may only bind its own or the main graph's initializers. Per training_info entry with weights:
//!
//! ```text
//! algorithm.initializer += per weight W one tensor per state slot (= initial W), step (int64 0),
//!                          the scheme's set-wide state (float[1] 0 each: SWA's sample count)
//! step'  = step + 1
//! sync   = step' >= first AND (step' - first) mod period == 0      (scheme::Schedule)
//! fast'', state' = If(sync) then: the scheme's sync of (W_new, state)
//!                           else: fast'' = W_new; state' = state
//! update_binding: W <- fast'', state <- state', step <- step', shared <- shared'
//! initialization (if the entry has one): state <- W's initial value, step <- 0, shared <- 0
//! ```
//! With `--inner-state reset|pullback` the optimizer's own state (moments, accumulators, update
//! count) rides through the same If: the then-branch applies the scheme's `sync_inner`, the
//! else-branch passes the optimizer's new state on; the scheme's caches (pullback: the momentum
//! at the last sync) start at zero and are reset to zero by the initialization.
//! Only the If's then-branch does per-element arithmetic, so non-sync steps cost copies at most.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::error::{Error, Result};
use crate::generated::onnx::{ModelProto, TensorProto, ValueInfoProto, tensor_proto::DataType};
use crate::graph::build::{self, Node};
use crate::graph::emit::Emitter;
use crate::graph::names::NameGenerator;
use crate::graph::patch::{BindingEdit, GraphEdit, GraphId, ModelPatch};
use crate::record::WrappedParameter;
use crate::scheme::inner_state::zeros_of_shape;
use crate::scheme::{InnerSlot, Param, Scheme};

use super::{NAME_PREFIX, branch_output, if_node};

/// An inner-optimizer state tensor bound back by update_binding: `key` is the optimizer's state
/// input, `update_value` its new value (as before any rewrite).
#[derive(Debug, Clone)]
pub struct InnerBinding {
    pub slot: InnerSlot,
    pub key: String,
    pub update_value: String,
    pub data_type: i32,
    pub dims: Vec<i64>,
}

/// A weight to wrap, as the adapter's analysis found it.
#[derive(Debug, Clone)]
pub struct Weight<'m> {
    /// Index into ModelProto.training_info.
    pub info: usize,
    pub name: String,
    /// The update_binding value: the weight's new value after one algorithm run.
    pub update_value: String,
    /// The weight's initializer in ModelProto.graph (its bytes or external region are shared by
    /// the state tensors).
    pub initializer: &'m TensorProto,
    /// The optimizer state a sync changes (the scheme's `inner_state().synced_slots()`).
    pub inner: Vec<InnerBinding>,
}

fn inner_param(b: &InnerBinding) -> Param<'_> {
    Param {
        name: &b.key,
        data_type: b.data_type,
    }
}

fn inner_value_info(b: &InnerBinding, name: &str) -> ValueInfoProto {
    build::value_info(name, b.data_type, Some(&b.dims))
}

/// A scheme cache of one inner-optimizer state tensor: its name, and the tensor it shadows.
struct Cache<'w> {
    name: String,
    of: &'w InnerBinding,
}

impl Weight<'_> {
    fn param(&self) -> Param<'_> {
        Param {
            name: &self.name,
            data_type: self.initializer.data_type(),
        }
    }

    fn value_info(&self, name: &str) -> ValueInfoProto {
        build::value_info(
            name,
            self.initializer.data_type(),
            Some(&self.initializer.dims),
        )
    }
}

#[derive(Debug, Clone, Default)]
pub struct TrainingInfoInjection {
    pub patch: ModelPatch,
    pub wrapped: Vec<WrappedParameter>,
    pub counters: Vec<String>,
    /// The scheme's set-wide state, per entry.
    pub shared: Vec<String>,
}

pub fn inject(
    scheme: &dyn Scheme,
    model: &ModelProto,
    weights: &[Weight],
    names: &mut NameGenerator,
) -> Result<TrainingInfoInjection> {
    let schedule = scheme.schedule();
    let steps = i64::try_from(schedule.first)
        .and_then(|first| Ok((first, i64::try_from(schedule.period)?)))
        .map_err(|_| {
            Error::InvalidOption(format!(
                "the update steps of {} must be at most {} for training_info models (the step counter is int64)",
                scheme.describe(),
                i64::MAX
            ))
        })?;
    let mut injection = TrainingInfoInjection::default();
    let mut by_info: BTreeMap<usize, Vec<&Weight>> = BTreeMap::new();
    for weight in weights {
        by_info.entry(weight.info).or_default().push(weight);
    }
    for (info, weights) in by_info {
        inject_entry(scheme, model, info, &weights, steps, names, &mut injection)?;
    }
    Ok(injection)
}

fn inject_entry(
    scheme: &dyn Scheme,
    model: &ModelProto,
    info: usize,
    weights: &[&Weight],
    (first, period): (i64, i64),
    names: &mut NameGenerator,
    injection: &mut TrainingInfoInjection,
) -> Result<()> {
    let g = GraphId::Algorithm(info);
    let patch = &mut injection.patch;
    let mut e = Emitter::new(names, NAME_PREFIX);
    let step = e.fresh("step");
    let (one, first_name, period_name, zero) = (
        e.fresh("one"),
        e.fresh("first"),
        e.fresh("k"),
        e.fresh("zero"),
    );
    for t in [
        build::scalar_i64(&step, 0),
        build::scalar_i64(&one, 1),
        build::scalar_i64(&first_name, first),
        build::scalar_i64(&period_name, period),
        build::scalar_i64(&zero, 0),
    ] {
        patch.edit(g, GraphEdit::AddInitializer(t));
    }
    let step_next = e.op("Add", &[&step, &one], "step_next");
    let since_first = e.op("Sub", &[&step_next, &first_name], "since_first");
    let phase = e.op("Mod", &[&since_first, &period_name], "phase");
    let on_beat = e.op("Equal", &[&phase, &zero], "on_beat");
    let early = e.op("Less", &[&step_next, &first_name], "before_first");
    let started = e.op("Not", &[&early], "started");
    let sync = e.op("And", &[&started, &on_beat], "sync");
    for node in e.take_nodes() {
        patch.add_node(g, node);
    }
    // The scheme's set-wide state: float[1] zeros.
    let shared: Vec<String> = scheme
        .shared_slots()
        .iter()
        .map(|role| names.fresh(&format!("{NAME_PREFIX}{role}")))
        .collect();
    for name in &shared {
        patch.edit(
            g,
            GraphEdit::AddInitializer(build::tensor_f32(name, &[1], &[0.0])),
        );
    }

    // Per weight: its state tensors, starting as copies of the weight.
    let wrapped: Vec<WrappedParameter> = weights
        .iter()
        .map(|w| WrappedParameter {
            name: w.name.clone(),
            state: scheme
                .state_slots()
                .iter()
                .map(|role| names.fresh(&format!("{NAME_PREFIX}{role}__{}", w.name)))
                .collect(),
        })
        .collect();
    for (w, p) in weights.iter().zip(&wrapped) {
        for s in &p.state {
            patch.edit(
                g,
                GraphEdit::AddInitializer(renamed_tensor(w.initializer, s)),
            );
        }
    }
    // The optimizer's per-weight state the sync changes, with the scheme's caches of it (zeros),
    // and the update counts (one per optimizer node, shared by its weights).
    let mut inner: Vec<(usize, &InnerBinding, Vec<Cache>)> = Vec::new();
    let mut counts: Vec<&InnerBinding> = Vec::new();
    for (index, w) in weights.iter().enumerate() {
        for b in &w.inner {
            if b.slot == InnerSlot::Count {
                if !counts.iter().any(|c| c.key == b.key) {
                    counts.push(b);
                }
                continue;
            }
            let mut caches = Vec::new();
            for role in scheme.inner_state_slots(b.slot) {
                let name = names.fresh(&format!("{NAME_PREFIX}{role}__{}", b.key));
                patch.edit(g, GraphEdit::AddInitializer(zeros(b, &name)?));
                caches.push(Cache { name, of: b });
            }
            inner.push((index, b, caches));
        }
    }
    let cache_names =
        |caches: &[Cache]| -> Vec<String> { caches.iter().map(|c| c.name.clone()).collect() };
    // The branches' outputs: every fast value first, then every state value.
    let (then_nodes, then_outputs) = {
        let mut then = Emitter::new(names, NAME_PREFIX);
        let mut used = HashSet::new();
        let (mut fast, mut state) = (Vec::new(), Vec::new());
        let prepared = scheme.prepare(&mut then, &shared)?;
        for (w, p) in weights.iter().zip(&wrapped) {
            let synced = scheme.sync(
                &mut then,
                w.param(),
                &w.update_value,
                &p.state,
                &prepared.scalars,
            )?;
            fast.push(w.value_info(&branch_output(&mut then, &mut used, &synced.fast)));
            for new in &synced.state {
                state.push(w.value_info(&branch_output(&mut then, &mut used, new)));
            }
        }
        let (mut inner_new, mut caches_new) = (Vec::new(), Vec::new());
        for (_, b, caches) in &inner {
            let synced = scheme.sync_inner(
                &mut then,
                inner_param(b),
                b.slot,
                &b.update_value,
                &cache_names(caches),
            )?;
            inner_new.push(inner_value_info(
                b,
                &branch_output(&mut then, &mut used, &synced.fast),
            ));
            for (cache, new) in caches.iter().zip(&synced.state) {
                caches_new.push(inner_value_info(
                    cache.of,
                    &branch_output(&mut then, &mut used, new),
                ));
            }
        }
        for b in &counts {
            let synced =
                scheme.sync_inner(&mut then, inner_param(b), b.slot, &b.update_value, &[])?;
            inner_new.push(inner_value_info(
                b,
                &branch_output(&mut then, &mut used, &synced.fast),
            ));
        }
        for c in then.take_constants() {
            patch.edit(g, GraphEdit::AddInitializer(c));
        }
        let shared_new = prepared
            .shared
            .iter()
            .map(|new| shared_info(&branch_output(&mut then, &mut used, new)))
            .collect::<Vec<_>>();
        fast.extend(state);
        fast.extend(inner_new);
        fast.extend(caches_new);
        fast.extend(shared_new);
        (then.take_nodes(), fast)
    };
    let (else_nodes, else_outputs) = {
        let mut els = Emitter::new(names, NAME_PREFIX);
        let mut used = HashSet::new();
        let (mut fast, mut state) = (Vec::new(), Vec::new());
        for (w, p) in weights.iter().zip(&wrapped) {
            fast.push(w.value_info(&branch_output(&mut els, &mut used, &w.update_value)));
            for old in &p.state {
                state.push(w.value_info(&branch_output(&mut els, &mut used, old)));
            }
        }
        let (mut inner_old, mut caches_old) = (Vec::new(), Vec::new());
        for (_, b, caches) in &inner {
            inner_old.push(inner_value_info(
                b,
                &branch_output(&mut els, &mut used, &b.update_value),
            ));
            for cache in caches {
                caches_old.push(inner_value_info(
                    cache.of,
                    &branch_output(&mut els, &mut used, &cache.name),
                ));
            }
        }
        for b in &counts {
            inner_old.push(inner_value_info(
                b,
                &branch_output(&mut els, &mut used, &b.update_value),
            ));
        }
        let shared_old = shared
            .iter()
            .map(|old| shared_info(&branch_output(&mut els, &mut used, old)))
            .collect::<Vec<_>>();
        fast.extend(state);
        fast.extend(inner_old);
        fast.extend(caches_old);
        fast.extend(shared_old);
        (els.take_nodes(), fast)
    };
    let mut if_outputs = Vec::new();
    let mut bindings = Vec::new();
    for w in weights {
        let fast_next = names.fresh(&format!("{NAME_PREFIX}fast_next__{}", w.name));
        bindings.push((w.name.clone(), fast_next.clone(), w.value_info(&fast_next)));
        if_outputs.push(fast_next);
    }
    for (w, p) in weights.iter().zip(&wrapped) {
        for s in &p.state {
            let next = names.fresh(&format!(
                "{NAME_PREFIX}{}_next",
                s.trim_start_matches(NAME_PREFIX)
            ));
            bindings.push((s.clone(), next.clone(), w.value_info(&next)));
            if_outputs.push(next);
        }
    }
    // Same order as the branches: inner state (and counts), then caches.
    let inner_keys = inner
        .iter()
        .map(|(_, b, _)| *b)
        .chain(counts.iter().copied());
    let cache_keys = inner
        .iter()
        .flat_map(|(_, _, caches)| caches.iter().map(|c| (c.name.as_str(), c.of)));
    for (key, b) in inner_keys.map(|b| (b.key.as_str(), b)).chain(cache_keys) {
        let next = names.fresh(&format!(
            "{NAME_PREFIX}{}_next",
            key.trim_start_matches(NAME_PREFIX)
        ));
        bindings.push((key.to_string(), next.clone(), inner_value_info(b, &next)));
        if_outputs.push(next);
    }
    for key in &shared {
        let next = names.fresh(&format!(
            "{NAME_PREFIX}{}_next",
            key.trim_start_matches(NAME_PREFIX)
        ));
        bindings.push((key.clone(), next.clone(), shared_info(&next)));
        if_outputs.push(next);
    }
    let sync_node = if_node(
        names,
        super::SYNC_IF,
        &sync,
        if_outputs,
        (then_nodes, then_outputs),
        (else_nodes, else_outputs),
    );
    patch.add_node(g, sync_node);

    // New algorithm outputs and bindings.
    patch.edit(
        g,
        GraphEdit::AddOutput(build::value_info(
            &step_next,
            DataType::Int64 as i32,
            Some(&[]),
        )),
    );
    patch.binding_edits.push(BindingEdit::SetUpdate {
        info,
        key: step.clone(),
        value: step_next,
    });
    for (key, value, vi) in bindings {
        patch.edit(g, GraphEdit::AddOutput(vi));
        patch
            .binding_edits
            .push(BindingEdit::SetUpdate { info, key, value });
    }
    let caches: Vec<&Cache> = inner.iter().flat_map(|(_, _, c)| c).collect();
    reset_on_initialization(
        model,
        info,
        (&step, &shared),
        &wrapped,
        &caches,
        names,
        patch,
    )?;
    // The record lists each weight's caches after its own state.
    let mut wrapped = wrapped;
    for (index, _, caches) in &inner {
        wrapped[*index].state.extend(cache_names(caches));
    }
    injection.wrapped.extend(wrapped);
    injection.counters.push(step);
    injection.shared.extend(shared);
    Ok(())
}

fn shared_info(name: &str) -> ValueInfoProto {
    build::value_info(name, DataType::Float as i32, Some(&[1]))
}

/// Re-initialisation (when the entry has an initialization) resets each state tensor to its
/// weight's initial value, the scheme's caches and set-wide state to zero and the step to 0.
fn reset_on_initialization(
    model: &ModelProto,
    info: usize,
    (step, shared): (&str, &[String]),
    wrapped: &[WrappedParameter],
    caches: &[&Cache],
    names: &mut NameGenerator,
    patch: &mut ModelPatch,
) -> Result<()> {
    let Some(entry) = model.training_info.get(info) else {
        return Ok(());
    };
    if entry.initialization.is_none() && entry.initialization_binding.is_empty() {
        return Ok(());
    }
    let g = GraphId::Initialization(info);
    let mut e = Emitter::new(names, NAME_PREFIX);
    let step_zero = e.fresh("step_initial");
    let value = build::scalar_i64(&e.fresh("step_initial_value"), 0);
    e.node(
        Node::new("Constant")
            .outputs([&step_zero])
            .attr_tensor("value", value)
            .build(),
    );
    let mut shared_zeros = Vec::new();
    for name in shared {
        let zero = e.fresh(&format!("{}_initial", name.trim_start_matches(NAME_PREFIX)));
        let value = build::tensor_f32(
            &e.fresh(&format!(
                "{}_initial_value",
                name.trim_start_matches(NAME_PREFIX)
            )),
            &[1],
            &[0.0],
        );
        e.node(
            Node::new("Constant")
                .outputs([&zero])
                .attr_tensor("value", value)
                .build(),
        );
        shared_zeros.push((name, zero));
    }
    let mut cache_zeros = Vec::new();
    for cache in caches {
        let dims: Vec<u8> = cache.of.dims.iter().flat_map(|d| d.to_le_bytes()).collect();
        let shape = e.fresh(&format!("shape__{}", cache.name));
        let shape_value = build::tensor_raw(
            &shape,
            DataType::Int64,
            &[cache.of.dims.len() as i64],
            bytes::Bytes::from(dims),
        );
        e.node(
            Node::new("Constant")
                .outputs([&shape])
                .attr_tensor("value", shape_value)
                .build(),
        );
        let zero = zeros_of_shape(&mut e, &shape, cache.of.data_type, &cache.name)?;
        cache_zeros.push((cache, zero));
    }
    for node in e.take_nodes() {
        patch.add_node(g, node);
    }
    patch.edit(
        g,
        GraphEdit::AddOutput(build::value_info(
            &step_zero,
            DataType::Int64 as i32,
            Some(&[]),
        )),
    );
    patch.binding_edits.push(BindingEdit::SetInitialization {
        info,
        key: step.to_string(),
        value: step_zero,
    });
    let mut init_values: HashMap<&str, &str> = HashMap::new();
    for binding in &entry.initialization_binding {
        init_values.entry(binding.key()).or_insert(binding.value());
    }
    for w in wrapped {
        if let Some(value) = init_values.get(w.name.as_str()) {
            for s in &w.state {
                patch.binding_edits.push(BindingEdit::SetInitialization {
                    info,
                    key: s.clone(),
                    value: value.to_string(),
                });
            }
        }
    }
    for (name, zero) in shared_zeros {
        patch.edit(g, GraphEdit::AddOutput(shared_info(&zero)));
        patch.binding_edits.push(BindingEdit::SetInitialization {
            info,
            key: name.clone(),
            value: zero,
        });
    }
    for (cache, zero) in cache_zeros {
        patch.edit(g, GraphEdit::AddOutput(inner_value_info(cache.of, &zero)));
        patch.binding_edits.push(BindingEdit::SetInitialization {
            info,
            key: cache.name.clone(),
            value: zero,
        });
    }
    Ok(())
}

/// A zero tensor with the type and shape of `b`, named `name`.
fn zeros(b: &InnerBinding, name: &str) -> Result<TensorProto> {
    let dtype = DataType::try_from(b.data_type).ok();
    let bytes = crate::io::dtype::tensor_byte_length(&b.dims, b.data_type)
        .and_then(|n| usize::try_from(n).ok());
    match (dtype, bytes) {
        (Some(dtype), Some(bytes)) => Ok(build::tensor_raw(
            name,
            dtype,
            &b.dims,
            bytes::Bytes::from(vec![0u8; bytes]),
        )),
        _ => Err(Error::InvalidOption(format!(
            "optimizer state {} has type {} and shape {:?}, which --inner-state cannot hold",
            b.key,
            crate::io::dtype::name(b.data_type),
            b.dims
        ))),
    }
}

/// The same tensor (type, shape, bytes or external reference) under another name. Raw bytes
/// are shared (`Bytes` clone), so a copy of a large weight costs nothing until it is written.
fn renamed_tensor(tensor: &TensorProto, name: &str) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        doc_string: None,
        ..tensor.clone()
    }
}
