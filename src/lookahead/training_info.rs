//! Lookahead for ModelProto.training_info models.
//!
//! The existing algorithm is extended rather than a TrainingInfoProto added: a separate entry
//! could not read the weights' initial values in its initialization (which has no inputs) and
//! may only bind its own or the main graph's initializers. Per training_info entry with weights:
//!
//! ```text
//! algorithm.initializer += slow_W (= initial W) for each weight, step (int64 0), k, 1, 0, alpha
//! step'  = step + 1
//! sync   = (step' mod k == 0)
//! fast'', slow' = If(sync) then: slow' = slow + alpha * (W_new - slow); fast'' = slow'
//!                          else: fast'' = W_new;  slow' = slow
//! update_binding: W <- fast'', slow_W <- slow', step <- step'   (optimizer state untouched)
//! initialization (if the entry has one): slow_W <- W's initial value, step <- 0
//! ```
//! Only the If's then-branch does per-element arithmetic, so non-sync steps cost copies at most.
//! With alpha = 1 the branch binds W_new itself (no a + (b - a) rounding), so k=1, alpha=1
//! reproduces the original training exactly.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::error::{Error, Result};
use crate::formats::training_info::{TrainedWeight, TrainingInfoAnalysis};
use crate::generated::onnx::{ModelProto, TensorProto, tensor_proto::DataType};
use crate::graph::build::{self, Node};
use crate::graph::names::NameGenerator;
use crate::graph::patch::{BindingEdit, GraphEdit, GraphId, ModelPatch};
use crate::lookahead::{AlphaConstants, NAME_PREFIX, Options, fresh, slow_step};

/// Lowest default-domain opset with every operator the pass emits (Mod needs 10).
const MIN_OPSET: i64 = 10;

pub fn plan(
    model: &ModelProto,
    analysis: &TrainingInfoAnalysis,
    options: Options,
    path: &Path,
) -> Result<ModelPatch> {
    let opset = model
        .opset_import
        .iter()
        .find(|o| crate::graph::dataflow::same_domain(o.domain(), ""))
        .map(|o| o.version())
        .unwrap_or(0);
    if opset < MIN_OPSET {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            reason: format!(
                "the model imports ai.onnx opset {opset}; the rewrite needs opset >= {MIN_OPSET}"
            ),
        });
    }
    let main = model.graph.as_ref().ok_or_else(|| Error::InvalidModel {
        path: path.to_path_buf(),
        reason: "the main graph is missing".into(),
    })?;
    // The first initializer of each name, as a search of the list would find it.
    let mut main_inits: HashMap<&str, &TensorProto> = HashMap::new();
    for tensor in &main.initializer {
        main_inits.entry(tensor.name()).or_insert(tensor);
    }
    let mut names = NameGenerator::for_model(model);
    let mut patch = ModelPatch::default();
    let mut by_info: BTreeMap<usize, Vec<&TrainedWeight>> = BTreeMap::new();
    for weight in &analysis.weights {
        by_info.entry(weight.info).or_default().push(weight);
    }
    for (info, weights) in by_info {
        let algorithm = GraphId::Algorithm(info);

        let step = fresh(&mut names, "step");
        let step_next = fresh(&mut names, "step_next");
        let one = fresh(&mut names, "one");
        let period = fresh(&mut names, "k");
        let zero = fresh(&mut names, "zero");
        let phase = fresh(&mut names, "phase");
        let sync = fresh(&mut names, "sync");
        for t in [
            build::scalar_i64(&step, 0),
            build::scalar_i64(&one, 1),
            build::scalar_i64(&period, options.k as i64),
            build::scalar_i64(&zero, 0),
        ] {
            patch.edit(algorithm, GraphEdit::AddInitializer(t));
        }
        patch.add_node(
            algorithm,
            Node::new("Add")
                .inputs([&step, &one])
                .outputs([&step_next])
                .name(fresh(&mut names, "count"))
                .build(),
        );
        patch.add_node(
            algorithm,
            Node::new("Mod")
                .inputs([&step_next, &period])
                .outputs([&phase])
                .name(fresh(&mut names, "phase"))
                .build(),
        );
        patch.add_node(
            algorithm,
            Node::new("Equal")
                .inputs([&phase, &zero])
                .outputs([&sync])
                .name(fresh(&mut names, "is_sync"))
                .build(),
        );

        let mut alphas = AlphaConstants::new(options.alpha, algorithm);
        let (mut then_nodes, mut else_nodes) = (Vec::new(), Vec::new());
        // Branch and If outputs: every fast value first, then every slow value.
        let (mut then_fast, mut then_slow, mut else_fast, mut else_slow) =
            (vec![], vec![], vec![], vec![]);
        let mut synced = Vec::new();
        for weight in &weights {
            let init = main_inits
                .get(weight.name.as_str())
                .copied()
                .ok_or_else(|| Error::Validation {
                    graph: "main".into(),
                    reason: format!("weight {} has no initializer", weight.name),
                })?;
            let slow = fresh(&mut names, &format!("slow__{}", weight.name));
            patch.edit(
                algorithm,
                GraphEdit::AddInitializer(renamed_tensor(init, &slow)),
            );
            let vi = |name: &str| {
                build::value_info(name, weight.data_type, Some(weight.dims.as_slice()))
            };

            // then-branch: slow' = slow + alpha * (W_new - slow); fast'' = slow'.
            let t_fast = fresh(&mut names, &format!("then_fast__{}", weight.name));
            let t_slow = fresh(&mut names, &format!("then_slow__{}", weight.name));
            if options.alpha == 1.0 {
                then_nodes.push(
                    Node::new("Identity")
                        .inputs([&weight.update_value])
                        .outputs([&t_slow])
                        .build(),
                );
            } else {
                let alpha =
                    alphas.get(weight.data_type, &mut names, &mut patch, path, &weight.name)?;
                let (step_nodes, scaled) = slow_step(
                    &weight.update_value,
                    &slow,
                    &alpha,
                    &weight.name,
                    &mut names,
                );
                then_nodes.extend(step_nodes);
                then_nodes.push(
                    Node::new("Add")
                        .inputs([&slow, &scaled])
                        .outputs([&t_slow])
                        .build(),
                );
            }
            then_nodes.push(
                Node::new("Identity")
                    .inputs([&t_slow])
                    .outputs([&t_fast])
                    .build(),
            );
            then_fast.push(vi(&t_fast));
            then_slow.push(vi(&t_slow));

            // else-branch: the inner optimizer's result and the unchanged slow weight.
            let e_fast = fresh(&mut names, &format!("else_fast__{}", weight.name));
            let e_slow = fresh(&mut names, &format!("else_slow__{}", weight.name));
            else_nodes.push(
                Node::new("Identity")
                    .inputs([&weight.update_value])
                    .outputs([&e_fast])
                    .build(),
            );
            else_nodes.push(
                Node::new("Identity")
                    .inputs([&slow])
                    .outputs([&e_slow])
                    .build(),
            );
            else_fast.push(vi(&e_fast));
            else_slow.push(vi(&e_slow));

            let fast_next = fresh(&mut names, &format!("fast_next__{}", weight.name));
            let slow_next = fresh(&mut names, &format!("slow_next__{}", weight.name));
            synced.push(SyncedWeight {
                weight,
                slow,
                fast_next,
                slow_next,
            });
        }
        then_fast.extend(then_slow);
        else_fast.extend(else_slow);
        build::name_nodes(&mut then_nodes, &mut names, NAME_PREFIX);
        build::name_nodes(&mut else_nodes, &mut names, NAME_PREFIX);
        let then_branch = build::branch(&fresh(&mut names, "sync_then"), then_nodes, then_fast);
        let else_branch = build::branch(&fresh(&mut names, "sync_else"), else_nodes, else_fast);
        let if_outputs = synced
            .iter()
            .map(|s| s.fast_next.clone())
            .chain(synced.iter().map(|s| s.slow_next.clone()));
        patch.add_node(
            algorithm,
            Node::new("If")
                .inputs([&sync])
                .outputs(if_outputs)
                .name(fresh(&mut names, "sync"))
                .attr_graph("then_branch", then_branch)
                .attr_graph("else_branch", else_branch)
                .build(),
        );

        // New algorithm outputs and bindings.
        patch.edit(
            algorithm,
            GraphEdit::AddOutput(build::value_info(
                &step_next,
                DataType::Int64 as i32,
                Some(&[]),
            )),
        );
        patch.binding_edits.push(BindingEdit::SetUpdate {
            info,
            key: step.clone(),
            value: step_next.clone(),
        });
        for s in &synced {
            let dims = Some(s.weight.dims.as_slice());
            for output in [&s.fast_next, &s.slow_next] {
                let vi = build::value_info(output, s.weight.data_type, dims);
                patch.edit(algorithm, GraphEdit::AddOutput(vi));
            }
            patch.binding_edits.push(BindingEdit::SetUpdate {
                info,
                key: s.weight.name.clone(),
                value: s.fast_next.clone(),
            });
            patch.binding_edits.push(BindingEdit::SetUpdate {
                info,
                key: s.slow.clone(),
                value: s.slow_next.clone(),
            });
        }

        // Re-initialisation resets the slow weights with their fast weights, and the step.
        let entry = &model.training_info[info];
        if entry.initialization.is_some() || !entry.initialization_binding.is_empty() {
            let init_graph = GraphId::Initialization(info);
            let step_zero = fresh(&mut names, "step_initial");
            patch.add_node(
                init_graph,
                Node::new("Constant")
                    .outputs([&step_zero])
                    .name(fresh(&mut names, "step_initial"))
                    .attr_tensor(
                        "value",
                        build::scalar_i64(&fresh(&mut names, "step_initial_value"), 0),
                    )
                    .build(),
            );
            patch.edit(
                init_graph,
                GraphEdit::AddOutput(build::value_info(
                    &step_zero,
                    DataType::Int64 as i32,
                    Some(&[]),
                )),
            );
            patch.binding_edits.push(BindingEdit::SetInitialization {
                info,
                key: step.clone(),
                value: step_zero,
            });
            let mut init_values: HashMap<&str, &str> = HashMap::new();
            for binding in &entry.initialization_binding {
                init_values.entry(binding.key()).or_insert(binding.value());
            }
            for s in &synced {
                if let Some(value) = init_values.get(s.weight.name.as_str()) {
                    patch.binding_edits.push(BindingEdit::SetInitialization {
                        info,
                        key: s.slow.clone(),
                        value: value.to_string(),
                    });
                }
            }
        }
    }
    patch.metadata = options.metadata();
    Ok(patch)
}

/// One weight's names in the sync subgraph.
struct SyncedWeight<'a> {
    weight: &'a TrainedWeight,
    /// The slow-weight state variable.
    slow: String,
    /// The If outputs bound to the weight and to the slow weight.
    fast_next: String,
    slow_next: String,
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
