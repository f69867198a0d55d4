//! ONNX's own training representation (ModelProto.training_info): which tensors are trainable
//! weights and which nodes update them.
//!
//! A weight is an update_binding key that is a floating-point initializer of ModelProto.graph
//! and is bound to a new value of the weight itself: an X_new output of an
//! ai.onnx.preview.training optimizer node (Momentum, Adam, Adagrad), or the result of plain
//! arithmetic (W_new = W - lr * G). Keys bound to optimizer state outputs (V_new, H_new) and
//! integer counters are optimizer state, not weights.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use crate::error::{Error, Result};
use crate::generated::onnx::{
    GraphProto, ModelProto, NodeProto, TensorProto, tensor_proto::DataType,
};
use crate::graph::dataflow::{Dataflow, same_domain};

pub const PREVIEW_TRAINING_DOMAIN: &str = "ai.onnx.preview.training";

/// How a weight is updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    Momentum,
    Adam,
    Adagrad,
    /// Not a recognised optimizer operator: the update is computed by ordinary nodes.
    Arithmetic,
}

impl UpdateKind {
    pub fn name(self) -> &'static str {
        match self {
            UpdateKind::Momentum => "Momentum",
            UpdateKind::Adam => "Adam",
            UpdateKind::Adagrad => "Adagrad",
            UpdateKind::Arithmetic => "SGD",
        }
    }
}

/// The layout of an optimizer operator's variadic inputs: R, T, then `groups` groups of n
/// tensors (X, G, states...); outputs are X_new then the new states, n each.
fn optimizer_layout(node: &NodeProto) -> Option<(UpdateKind, usize)> {
    if !same_domain(node.domain(), PREVIEW_TRAINING_DOMAIN) {
        return None;
    }
    let (kind, groups) = match node.op_type() {
        "Momentum" => (UpdateKind::Momentum, 3),
        "Adam" => (UpdateKind::Adam, 4),
        "Adagrad" => (UpdateKind::Adagrad, 3),
        _ => return None,
    };
    let variadic = node.input.len().checked_sub(2)?;
    if variadic == 0 || variadic % groups != 0 {
        return None;
    }
    Some((kind, variadic / groups))
}

/// A trainable weight and where its update comes from.
#[derive(Debug, Clone)]
pub struct TrainedWeight {
    /// True when the update already goes through an injected Lookahead sync (rewritten input).
    pub has_lookahead: bool,
    /// Index into ModelProto.training_info.
    pub info: usize,
    pub name: String,
    /// The update_binding value (the weight's new value after one algorithm run).
    pub update_value: String,
    pub kind: UpdateKind,
    /// Name of the node producing the update (or its op type when unnamed).
    pub update_node: UpdateNode,
    pub data_type: i32,
    pub dims: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpdateNode {
    /// "algorithm[i]" or "graph".
    pub graph: String,
    pub name: String,
    pub op_type: String,
}

#[derive(Debug, Clone, Default)]
pub struct TrainingInfoAnalysis {
    pub weights: Vec<TrainedWeight>,
    /// Each update node once, in discovery order.
    pub update_nodes: Vec<UpdateNode>,
    /// Every update_binding key that is not a weight (optimizer state, counters).
    pub state_keys: Vec<String>,
}

pub fn is_float_type(data_type: i32) -> bool {
    matches!(
        DataType::try_from(data_type),
        Ok(DataType::Float | DataType::Double | DataType::Float16 | DataType::Bfloat16)
    )
}

fn node_label(node: &NodeProto, position: usize) -> String {
    match node.name() {
        "" => format!("#{position}"),
        name => name.to_string(),
    }
}

/// The dataflow view of one graph of the model; a name defined twice is an input defect.
fn dataflow(graph: &GraphProto, label: &str, path: &Path) -> Result<Dataflow> {
    Dataflow::build(graph).map_err(|d| Error::Unsupported {
        path: path.to_path_buf(),
        reason: format!("{label}: {:?} is defined more than once", d.name),
    })
}

/// Finds the weights and their update nodes in every training_info entry.
pub fn analyze(model: &ModelProto, path: &Path) -> Result<TrainingInfoAnalysis> {
    let Some(main) = &model.graph else {
        return Err(Error::InvalidModel {
            path: path.to_path_buf(),
            reason: "the main graph is missing".into(),
        });
    };
    let main_inits: HashMap<&str, &TensorProto> =
        main.initializer.iter().map(|t| (t.name(), t)).collect();
    let main_flow = dataflow(main, "graph", path)?;
    let mut analysis = TrainingInfoAnalysis::default();
    let mut seen_update_nodes: HashSet<UpdateNode> = HashSet::new();
    for (info_index, info) in model.training_info.iter().enumerate() {
        let empty = GraphProto::default();
        let algorithm = info.algorithm.as_ref().unwrap_or(&empty);
        let algo_flow = dataflow(algorithm, &format!("algorithm[{info_index}]"), path)?;
        // Inputs in optimizer state slots: keys bound there are state even if they are floats
        // in the main graph (unusual, but then they are still not weights).
        let mut state_inputs: BTreeMap<&str, ()> = BTreeMap::new();
        for node in &algorithm.node {
            if let Some((_, n)) = optimizer_layout(node) {
                for name in &node.input[2 + 2 * n..] {
                    state_inputs.insert(name.as_str(), ());
                }
            }
        }
        let mut sync = SyncBranches::default();
        for binding in &info.update_binding {
            let key = binding.key();
            let (value, has_lookahead) = sync.see_through(algorithm, &algo_flow, binding.value());
            let init = main_inits.get(key).filter(|t| is_float_type(t.data_type()));
            let from_algorithm = algo_flow
                .produced_by(value)
                .map(|(i, slot)| (&algorithm.node[i], i, slot));
            let update = match from_algorithm {
                Some((node, i, slot)) => match optimizer_layout(node) {
                    Some((kind, n)) if slot < n => {
                        Some((kind, node, i, format!("algorithm[{info_index}]")))
                    }
                    Some(_) => None, // a state output
                    None => Some((
                        UpdateKind::Arithmetic,
                        node,
                        i,
                        format!("algorithm[{info_index}]"),
                    )),
                },
                None => main_flow.produced_by(value).map(|(i, _)| {
                    (
                        UpdateKind::Arithmetic,
                        &main.node[i],
                        i,
                        "graph".to_string(),
                    )
                }),
            };
            match (init, update) {
                (Some(init), Some((kind, node, position, graph)))
                    if !state_inputs.contains_key(key) =>
                {
                    let update_node = UpdateNode {
                        graph,
                        name: node_label(node, position),
                        op_type: node.op_type().to_string(),
                    };
                    if seen_update_nodes.insert(update_node.clone()) {
                        analysis.update_nodes.push(update_node.clone());
                    }
                    analysis.weights.push(TrainedWeight {
                        has_lookahead,
                        info: info_index,
                        name: key.to_string(),
                        update_value: value.to_string(),
                        kind,
                        update_node,
                        data_type: init.data_type(),
                        dims: init.dims.clone(),
                    });
                }
                _ => analysis.state_keys.push(key.to_string()),
            }
        }
    }
    Ok(analysis)
}

/// On a rewritten model a weight is bound to an output of the injected sync If; its else-branch
/// passes the inner optimizer's value through an Identity. Follow that back so the analysis of
/// a rewritten model reports the original update (and that Lookahead wraps it). The branch of
/// each If is indexed once (by the first output of its nodes), not searched per weight.
#[derive(Default)]
struct SyncBranches<'g> {
    /// Per injected If (node position): the else-branch's output names and its nodes by first
    /// output (the first such node), or None without an else-branch.
    by_if: HashMap<usize, Option<ElseBranch<'g>>>,
}

struct ElseBranch<'g> {
    graph: &'g GraphProto,
    by_first_output: HashMap<&'g str, &'g NodeProto>,
}

impl<'g> SyncBranches<'g> {
    fn see_through(
        &mut self,
        algorithm: &'g GraphProto,
        flow: &Dataflow,
        value: &'g str,
    ) -> (&'g str, bool) {
        let Some((i, slot)) = flow.produced_by(value) else {
            return (value, false);
        };
        let Some(node) = algorithm.node.get(i) else {
            return (value, false);
        };
        if node.op_type() != "If" || !node.name().starts_with(crate::lookahead::NAME_PREFIX) {
            return (value, false);
        }
        let branch = self.by_if.entry(i).or_insert_with(|| {
            let graph = node
                .attribute
                .iter()
                .find(|a| a.name() == "else_branch")
                .and_then(|a| a.g.as_ref())?;
            let mut by_first_output = HashMap::new();
            for n in &graph.node {
                if let Some(first) = n.output.first() {
                    by_first_output.entry(first.as_str()).or_insert(n);
                }
            }
            Some(ElseBranch {
                graph,
                by_first_output,
            })
        });
        let passed = branch.as_ref().and_then(|b| {
            let output = b.graph.output.get(slot)?;
            let identity = b.by_first_output.get(output.name())?;
            (identity.op_type() == "Identity")
                .then(|| identity.input.first().map(String::as_str))
                .flatten()
        });
        match passed {
            Some(original) => (original, true),
            None => (value, false),
        }
    }
}

impl TrainingInfoAnalysis {
    /// The optimizer name for reports: the kinds in use, e.g. "Adam" or "Momentum+Adam".
    pub fn optimizer_name(&self) -> Option<String> {
        let mut kinds: Vec<&str> = Vec::new();
        for w in &self.weights {
            if !kinds.contains(&w.kind.name()) {
                kinds.push(w.kind.name());
            }
        }
        (!kinds.is_empty()).then(|| kinds.join("+"))
    }
}
