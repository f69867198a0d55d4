//! The checkpoint part of a report (what an ORT checkpoint holds), and the sizes and scalar values
//! of the tensors a report mentions, wherever the input keeps them (checkpoint parameters, model
//! initializers, training_info initializers).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::formats::Adapter;
use crate::generated::onnx::TensorProto;
use crate::io::checkpoint::{Checkpoint, TensorData};
use crate::io::dtype;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CheckpointReport {
    /// The checkpoint format version (1: ORT 1.16-1.17, 2: ORT 1.18-1.19).
    pub version: i32,
    pub optimizer_groups: Vec<GroupReport>,
    /// The property bag: ints, floats and strings by name.
    pub properties: BTreeMap<String, serde_json::Value>,
    /// The external data file, when tensors live in one.
    pub external_data: Option<String>,
    /// Whether the checkpoint holds names and types only.
    pub nominal: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupReport {
    pub name: String,
    /// Optimizer steps taken.
    pub step: i64,
    pub learning_rate: f32,
    /// The optimizer state each parameter has ("momentum0", "momentum1").
    pub states: Vec<String>,
    /// How many parameters have optimizer state.
    pub parameters: usize,
}

pub fn report(checkpoint: &Checkpoint) -> CheckpointReport {
    let mut properties = BTreeMap::new();
    let bag = &checkpoint.property_bag;
    for p in &bag.ints {
        properties.insert(p.name.clone(), serde_json::json!(p.value));
    }
    for p in &bag.floats {
        properties.insert(p.name.clone(), serde_json::json!(p.value));
    }
    for p in &bag.strings {
        properties.insert(p.name.clone(), serde_json::json!(p.value));
    }
    CheckpointReport {
        version: checkpoint.version,
        optimizer_groups: checkpoint
            .optimizer_groups
            .iter()
            .map(|g| {
                let mut states: Vec<String> = Vec::new();
                for m in g.optimizer_states.iter().flat_map(|s| &s.momentums) {
                    if !states.contains(&m.name) {
                        states.push(m.name.clone());
                    }
                }
                GroupReport {
                    name: g.group_name.clone(),
                    step: g.step,
                    learning_rate: g.initial_learning_rate,
                    states,
                    parameters: g.optimizer_states.len(),
                }
            })
            .collect(),
        properties,
        external_data: checkpoint
            .external_data_path()
            .map(|p| p.display().to_string()),
        nominal: checkpoint
            .module_state
            .as_ref()
            .is_some_and(|m| m.is_nominal_state),
    }
}

/// Where a named tensor of the input is, to size it and read a scalar.
enum Found<'i> {
    Checkpoint(&'i Checkpoint, &'i crate::io::checkpoint::CheckpointTensor),
    Initializer(&'i TensorProto),
}

pub struct TensorSizes<'i> {
    by_name: HashMap<&'i str, Found<'i>>,
}

impl<'i> TensorSizes<'i> {
    pub fn of(input: &'i dyn Adapter) -> Self {
        let mut by_name = HashMap::new();
        if let Some(checkpoint) = input.checkpoint()
            && let Some(module) = &checkpoint.module_state
        {
            for t in module
                .requires_grad_params
                .iter()
                .chain(&module.frozen_params)
            {
                by_name.insert(t.name.as_str(), Found::Checkpoint(checkpoint, t));
            }
        }
        for (_, file) in input.models() {
            let model = &file.model;
            let graphs = model.graph.iter().chain(
                model
                    .training_info
                    .iter()
                    .flat_map(|i| i.initialization.iter().chain(i.algorithm.iter())),
            );
            for t in graphs.flat_map(|g| &g.initializer) {
                by_name.entry(t.name()).or_insert(Found::Initializer(t));
            }
        }
        TensorSizes { by_name }
    }

    pub fn bytes(&self, name: &str) -> Option<u64> {
        match self.by_name.get(name)? {
            Found::Checkpoint(_, t) => dtype::tensor_byte_length(&t.dims, t.data_type),
            Found::Initializer(t) => dtype::tensor_byte_length(&t.dims, t.data_type()),
        }
    }

    /// The first value of a numeric tensor (a counter), if readable.
    pub fn value(&self, name: &str) -> Option<f64> {
        let (data_type, bytes) = match self.by_name.get(name)? {
            Found::Checkpoint(checkpoint, t) => match &t.data {
                TensorData::Absent => return None,
                _ => (t.data_type, checkpoint.tensor_bytes(t).ok()??),
            },
            Found::Initializer(t) => {
                if let Some(&v) = t.int64_data.first() {
                    return Some(v as f64);
                }
                if let Some(&v) = t.float_data.first() {
                    return Some(f64::from(v));
                }
                (t.data_type(), t.raw_data.clone()?)
            }
        };
        if data_type == dtype::code::INT64 {
            let first: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
            return Some(i64::from_le_bytes(first) as f64);
        }
        let size = dtype::element_size(data_type)?;
        crate::io::values::decode(data_type, bytes.get(..size)?)?
            .first()
            .copied()
    }
}
