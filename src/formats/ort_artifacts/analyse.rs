//! What the ORT adapter finds in an artifacts set: the optimizer, which parameters are trained,
//! the facts the injection needs, and every reason a rewrite would be refused.
//!
//! The optimizer model holds ONE com.microsoft optimizer node (AdamWOptimizer or SGDOptimizerV2)
//! over tensor sequences whose order is decided at run time, so it cannot tell which tensor is
//! which parameter. The trainable parameters are the checkpoint's requires-grad parameters that
//! the training graph takes together with a gradient accumulation buffer
//! (`<P>_grad.accumulation.buffer`) accumulated by an InPlaceAccumulatorV2 node; frozen
//! parameters are the checkpoint's other parameters.

use std::collections::{HashMap, HashSet};

use super::consistency::disagreement;
use super::{ArtifactSet, OrtFacts};
use crate::error::{Error, Result};
use crate::formats::ort_checkpoint::counter_position;
use crate::formats::{Analysis, Format, Parameter, model_refusals};
use crate::generated::onnx::GraphProto;
use crate::graph::NodeRef;
use crate::graph::build::MS_DOMAIN;
use crate::graph::dataflow::{Dataflow, nodes_of_type};
use crate::graph::names::NameGenerator;
use crate::graph::validate::validate_model;
use crate::inject::NAME_PREFIX;
use crate::inject::ort::{ACCUMULATION_OUT_SUFFIX, LAZY_RESET_GRAD, TrainableInput};
use crate::io::external_data::check_external_data;
use crate::io::tensor_check::check_model_tensors;
use crate::record::Recorded;

/// Optimizer operators the ORT training API runs, and the names users know them by.
const OPTIMIZERS: [(&str, &str); 2] = [("AdamWOptimizer", "AdamW"), ("SGDOptimizerV2", "SGD")];

/// Suffix of the training graph input holding a trainable parameter's gradient accumulator.
pub const ACCUMULATION_BUFFER_SUFFIX: &str = "_grad.accumulation.buffer";

/// The lowest ai.onnx opset with every standard operator the injected nodes use (Equal on
/// floats needs 11).
pub const MIN_DEFAULT_OPSET: i64 = 11;

pub(super) fn analyse(set: &ArtifactSet, names: &NameGenerator) -> (Analysis, OrtFacts) {
    let mut refusals = Vec::new();
    for (label, file) in set.models() {
        model_refusals(file, names, &mut refusals);
        let path = set.dir.join(&label);
        for check in [
            check_model_tensors(&file.model, &path),
            check_external_data(&path, &file.model).map(drop),
            validate_model(&file.model).map_err(|e| Error::Unsupported {
                path: path.clone(),
                reason: format!("the input breaks an ONNX rule: {e}"),
            }),
            if label == set.files.optimizer() {
                Ok(()) // copied byte for byte, nothing injected
            } else {
                default_opset_refusal(file)
            },
        ] {
            if let Err(e) = check {
                refusals.push(e);
            }
        }
    }
    let checkpoint_path = set.dir.join(set.files.checkpoint());
    if let Some(disagreement) = disagreement(set, &set.checkpoint, &checkpoint_path) {
        refusals.push(disagreement);
    }
    if set
        .checkpoint
        .module_state
        .as_ref()
        .is_some_and(|m| m.is_nominal_state)
    {
        refusals.push(Error::Unsupported {
            path: set.dir.join(set.files.checkpoint()),
            reason: "a nominal checkpoint holds no parameter values to start the slow weights from"
                .into(),
        });
    }
    let (optimizer, optimizer_nodes) = match find_optimizer(set) {
        Ok((name, node)) => (Some(name), vec![node]),
        Err(e) => {
            refusals.push(e);
            (None, Vec::new())
        }
    };
    let facts = match training_facts(set) {
        Ok(facts) => facts,
        Err(e) => {
            refusals.push(e);
            OrtFacts::default()
        }
    };
    if refusals.is_empty() && facts.trainable.is_empty() {
        refusals.push(Error::NoOptimizer {
            path: set.dir.join(set.files.checkpoint()),
            reason: "no requires-grad parameter of the checkpoint has a gradient accumulator in the training graph".into(),
        });
    }
    let trainable: HashSet<&str> = facts.trainable.iter().map(|t| t.name.as_str()).collect();
    let recorded = crate::record::recorded(&set.training.model);
    if let Recorded::Record(record) = &recorded
        && let Err(e) = counter_position(&set.checkpoint, record, &checkpoint_path)
    {
        refusals.push(e);
    }
    let state: HashSet<String> = match &recorded {
        Recorded::Record(r) => r.state_names().into_iter().collect(),
        _ => HashSet::new(),
    };
    let module = set.checkpoint.module_state.as_ref();
    let parameters = module
        .into_iter()
        .flat_map(|m| m.requires_grad_params.iter().chain(&m.frozen_params))
        .filter(|t| !state.contains(&t.name))
        .map(|t| Parameter {
            name: t.name.clone(),
            trainable: trainable.contains(t.name.as_str()),
            data_type: t.data_type,
            dims: t.dims.clone(),
        })
        .collect();
    let analysis = Analysis {
        format: Format::OrtArtifacts,
        optimizer,
        optimizer_nodes,
        parameters,
        recorded,
        refusals,
    };
    (analysis, facts)
}

/// An ai.onnx import too old for the injected nodes cannot be raised without changing what the
/// model's own nodes mean.
fn default_opset_refusal(file: &crate::io::model::ModelFile) -> Result<()> {
    let version = file
        .model
        .opset_import
        .iter()
        .find(|o| crate::graph::dataflow::same_domain(o.domain(), ""))
        .map(|o| o.version());
    match version {
        Some(v) if v < MIN_DEFAULT_OPSET => Err(Error::Unsupported {
            path: file.path.clone(),
            reason: format!(
                "the model imports ai.onnx opset {v}; the injected nodes need opset >= {MIN_DEFAULT_OPSET}"
            ),
        }),
        _ => Ok(()),
    }
}

fn main_graph(file: &crate::io::model::ModelFile) -> Result<&GraphProto> {
    file.model
        .graph
        .as_ref()
        .ok_or_else(|| Error::InvalidModel {
            path: file.path.clone(),
            reason: "the main graph is missing".into(),
        })
}

/// The optimizer node of the optimizer model's main graph (like ORT, nodes inside subgraphs do
/// not count), and the name users know it by.
fn find_optimizer(set: &ArtifactSet) -> Result<(String, NodeRef)> {
    let path = set.optimizer.path.clone();
    let graph = main_graph(&set.optimizer)?;
    let found: Vec<(usize, &str, &str)> = OPTIMIZERS
        .iter()
        .flat_map(|&(op, user_name)| {
            nodes_of_type(graph, MS_DOMAIN, op).map(move |(i, _)| (i, op, user_name))
        })
        .collect();
    let (position, op_type, optimizer) = match found.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::NoOptimizer {
                path,
                reason: "no com.microsoft AdamWOptimizer or SGDOptimizerV2 node in the main graph"
                    .into(),
            });
        }
        _ => {
            return Err(Error::Unsupported {
                path,
                reason: format!(
                    "{} optimizer nodes; ONNX Runtime accepts exactly one",
                    found.len()
                ),
            });
        }
    };
    let node = &graph.node[position];
    let node_ref = NodeRef {
        graph: set.files.optimizer(),
        name: match node.name() {
            "" => format!("#{position}"),
            name => name.to_string(),
        },
        op_type: op_type.to_string(),
    };
    Ok((optimizer.to_string(), node_ref))
}

/// The trainable parameters the training graph takes with a gradient accumulator, the flag
/// output the injection folds its side effects into, and the training graph's own refusals.
fn training_facts(set: &ArtifactSet) -> Result<OrtFacts> {
    let path = set.training.path.clone();
    let graph = main_graph(&set.training)?;
    let flow = Dataflow::build(graph).map_err(|d| Error::Unsupported {
        path: path.clone(),
        reason: format!("{:?} is defined more than once", d.name),
    })?;
    let mut inputs = HashMap::new();
    for input in &graph.input {
        inputs.entry(input.name()).or_insert(input);
    }
    if !inputs.contains_key(LAZY_RESET_GRAD) {
        return Err(Error::Unsupported {
            path,
            reason: format!(
                "the training graph has no `{LAZY_RESET_GRAD}` input (not from generate_artifacts?)"
            ),
        });
    }
    let accumulated = |param: &str| {
        let buffer = format!("{param}{ACCUMULATION_BUFFER_SUFFIX}");
        inputs.contains_key(buffer.as_str())
            && flow
                .consumers(&buffer)
                .iter()
                .any(|&n| graph.node[n].op_type() == "InPlaceAccumulatorV2")
    };
    let requires_grad = set
        .checkpoint
        .module_state
        .as_ref()
        .map(|m| m.requires_grad_params.as_slice())
        .unwrap_or(&[]);
    let trainable: Vec<TrainableInput> = requires_grad
        .iter()
        .filter(|t| accumulated(&t.name) && !t.name.starts_with(NAME_PREFIX))
        .filter_map(|t| {
            inputs.get(t.name.as_str()).map(|input| TrainableInput {
                name: t.name.clone(),
                input: (*input).clone(),
            })
        })
        .collect();
    let produced: HashSet<&str> = graph
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
            path: path.clone(),
            reason: format!(
                "the training graph has no `*{ACCUMULATION_OUT_SUFFIX}` output to attach the sync to"
            ),
        })?
        .to_string();
    Ok(OrtFacts {
        trainable,
        flag_output,
    })
}
