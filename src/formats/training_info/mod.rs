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
use crate::formats::unwind::{copy_values, required_record, reverted};
use crate::formats::{
    Adapter, Analysis, Format, Parameter, Plan, Unwound, model_refusals, only_model,
    write_model_file,
};
use crate::generated::onnx::{GraphProto, ModelProto, NodeProto, TensorProto};
use crate::graph::NodeRef;
use crate::graph::dataflow::{Dataflow, same_domain};
use crate::graph::names::NameGenerator;
use crate::graph::validate::{Validated, validate_model};
use crate::inject::training_info::{Weight, inject};
use crate::io::external_data::{DataFile, check_external_data};
use crate::io::model::ModelFile;
use crate::io::tensor_check::check_model_tensors;
use crate::options::{FinalizeOptions, RewriteOptions};
use crate::record::{Mode, Recorded, RewriteRecord};
use crate::scheme::{EvalWeights, Scheme};

mod inner_state;

pub use inner_state::InnerBinding;
use inner_state::{inner_bindings, synced_inner_state};

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
    /// The optimizer node's state for this weight (and its update count), where update_binding
    /// carries it from one run to the next.
    pub inner: Vec<InnerBinding>,
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

/// Finds the weights and their update nodes in every training_info entry. `original_values`
/// gives, for a rewritten model, the update_binding values before the rewrite ((entry, key) ->
/// value, from its record).
pub fn analyze(
    model: &ModelProto,
    path: &Path,
    original_values: &HashMap<(usize, &str), &str>,
) -> Result<TrainingInfoAnalysis> {
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
        let bound: HashMap<&str, &str> = info
            .update_binding
            .iter()
            .map(|b| {
                let key = b.key();
                let value = original_values.get(&(info_index, key)).copied();
                (key, value.unwrap_or(b.value()))
            })
            .collect();
        let algo_inits: HashMap<&str, &TensorProto> = algorithm
            .initializer
            .iter()
            .map(|t| (t.name(), t))
            .collect();
        let typed = |name: &str| {
            main_inits
                .get(name)
                .or_else(|| algo_inits.get(name))
                .map(|t| (t.data_type(), t.dims.clone()))
        };
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
        for binding in &info.update_binding {
            let key = binding.key();
            // On a rewritten model the record says what each key was bound to before.
            let value = original_values
                .get(&(info_index, key))
                .copied()
                .unwrap_or(binding.value());
            let init = main_inits
                .get(key)
                .filter(|t| crate::io::dtype::is_float(t.data_type()));
            let from_algorithm = algo_flow
                .produced_by(value)
                .map(|(i, slot)| (&algorithm.node[i], i, slot));
            let mut inner = Vec::new();
            let update = match from_algorithm {
                Some((node, i, slot)) => match optimizer_layout(node) {
                    Some((kind, n)) if slot < n => {
                        inner = inner_bindings(node, kind, (n, slot), &bound, &typed);
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
                        info: info_index,
                        name: key.to_string(),
                        update_value: value.to_string(),
                        kind,
                        update_node,
                        data_type: init.data_type(),
                        dims: init.dims.clone(),
                        inner,
                    });
                }
                _ => analysis.state_keys.push(key.to_string()),
            }
        }
    }
    Ok(analysis)
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

/// The adapter for a model with training_info.
pub struct TrainingInfoModel {
    file: ModelFile,
    analysis: Analysis,
    weights: Vec<TrainedWeight>,
    data_files: Vec<DataFile>,
}

/// Lowest ai.onnx opset with every operator the injection emits (Mod needs 10).
const MIN_OPSET: i64 = 10;

impl TrainingInfoModel {
    pub fn open(file: ModelFile) -> Result<Self> {
        let path = file.path.clone();
        let names = NameGenerator::for_model(&file.model);
        let mut refusals = Vec::new();
        model_refusals(&file, &names, &mut refusals);
        let data_files = match check_model_tensors(&file.model, &path)
            .and_then(|()| check_external_data(&path, &file.model))
        {
            Ok(files) => files,
            Err(e) => {
                refusals.push(e);
                Vec::new()
            }
        };
        if let Err(e) = validate_model(&file.model) {
            refusals.push(Error::Unsupported {
                path: path.clone(),
                reason: format!("the input breaks an ONNX rule: {e}"),
            });
        }
        let opset = file
            .model
            .opset_import
            .iter()
            .find(|o| same_domain(o.domain(), ""))
            .map(|o| o.version())
            .unwrap_or(0);
        if opset < MIN_OPSET {
            refusals.push(Error::Unsupported {
                path: path.clone(),
                reason: format!(
                    "the model imports ai.onnx opset {opset}; the rewrite needs opset >= {MIN_OPSET}"
                ),
            });
        }
        let recorded = crate::record::recorded(&file.model);
        let mut original_values: HashMap<(usize, &str), &str> = HashMap::new();
        if let Recorded::Record(record) = &recorded {
            for (info, key, value) in &record.undo.update_bindings {
                if let Some(value) = value {
                    original_values.insert((*info, key.as_str()), value.as_str());
                }
            }
        }
        let found = match analyze(&file.model, &path, &original_values) {
            Ok(found) => found,
            Err(e) => {
                refusals.push(e);
                TrainingInfoAnalysis::default()
            }
        };
        if refusals.is_empty() && found.weights.is_empty() {
            refusals.push(Error::NoOptimizer {
                path: path.clone(),
                reason:
                    "no update_binding assigns a new value to a floating-point weight of the main graph"
                        .into(),
            });
        }
        let trained: HashSet<&str> = found.weights.iter().map(|w| w.name.as_str()).collect();
        // Trained weights, then the main graph's other floating-point initializers (frozen).
        let mut parameters: Vec<Parameter> = found
            .weights
            .iter()
            .map(|w| Parameter {
                name: w.name.clone(),
                trainable: true,
                data_type: w.data_type,
                dims: w.dims.clone(),
            })
            .collect();
        parameters.extend(
            file.model
                .graph
                .iter()
                .flat_map(|g| g.initializer.iter())
                .filter(|t| {
                    crate::io::dtype::is_float(t.data_type()) && !trained.contains(t.name())
                })
                .map(|t| Parameter {
                    name: t.name().to_string(),
                    trainable: false,
                    data_type: t.data_type(),
                    dims: t.dims.clone(),
                }),
        );
        let analysis = Analysis {
            format: Format::TrainingInfo,
            optimizer: found.optimizer_name(),
            optimizer_nodes: found
                .update_nodes
                .iter()
                .map(|n| NodeRef {
                    graph: n.graph.clone(),
                    name: n.name.clone(),
                    op_type: n.op_type.clone(),
                })
                .collect(),
            parameters,
            recorded,
            refusals,
        };
        Ok(TrainingInfoModel {
            weights: found.weights,
            file,
            analysis,
            data_files,
        })
    }
}

impl Adapter for TrainingInfoModel {
    fn format(&self) -> Format {
        Format::TrainingInfo
    }

    fn path(&self) -> &Path {
        &self.file.path
    }

    fn models(&self) -> Vec<(String, &ModelFile)> {
        vec![(String::new(), &self.file)]
    }

    fn analysis(&self) -> &Analysis {
        &self.analysis
    }

    fn analysis_mut(&mut self) -> &mut Analysis {
        &mut self.analysis
    }

    fn reserved_names(&self) -> NameGenerator {
        NameGenerator::for_model(&self.file.model)
    }

    fn plan(
        &self,
        scheme: &dyn Scheme,
        options: &RewriteOptions,
        names: &mut NameGenerator,
    ) -> Result<Plan> {
        let mut initializers: HashMap<&str, &TensorProto> = HashMap::new();
        for t in self.file.model.graph.iter().flat_map(|g| &g.initializer) {
            initializers.entry(t.name()).or_insert(t);
        }
        let names_of: Vec<String> = self.weights.iter().map(|w| w.name.clone()).collect();
        let selected: HashSet<String> =
            crate::formats::select::select(&names_of, &options.include, &options.exclude)?
                .into_iter()
                .collect();
        let weights = self
            .weights
            .iter()
            .filter(|w| selected.contains(&w.name))
            .map(|w| {
                let initializer = initializers.get(w.name.as_str()).copied().ok_or_else(|| {
                    Error::Validation {
                        graph: "graph".into(),
                        reason: format!("weight {} has no initializer", w.name),
                    }
                })?;
                Ok(Weight {
                    info: w.info,
                    name: w.name.clone(),
                    update_value: w.update_value.clone(),
                    initializer,
                    inner: synced_inner_state(scheme, w, &self.weights, &selected)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let injection = inject(scheme, &self.file.model, &weights, names)?;
        Ok(Plan {
            patches: vec![(String::new(), injection.patch)],
            mode: Some(Mode::TrainingInfo),
            wrapped: injection.wrapped,
            counters: injection.counters,
            shared: injection.shared,
            new_state: Vec::new(),
        })
    }

    fn write(
        &self,
        models: Validated<Vec<(String, ModelProto)>>,
        _plan: &Plan,
        _record: &RewriteRecord,
        output: &Path,
        options: &RewriteOptions,
    ) -> Result<crate::formats::Written> {
        let model = only_model(models.get())?;
        write_model_file(&self.file, &self.data_files, model, output, options.force)?;
        Ok(crate::formats::Written::default())
    }

    fn unwind(&self, options: &FinalizeOptions) -> Result<Unwound> {
        let record = required_record(&self.analysis.recorded, &self.file.path)?;
        // The sync happens inside the algorithm's step: no sync is ever pending, and the
        // Lookahead weights are the weights. The slow weights are the state tensors.
        let mut model = reverted(&self.file.model)?;
        let mut changed = Vec::new();
        if options.weights.unwrap_or(record.eval_weights) == EvalWeights::Averaged {
            let mut state: HashMap<&str, &TensorProto> = HashMap::new();
            for info in &self.file.model.training_info {
                for t in info.algorithm.iter().flat_map(|g| &g.initializer) {
                    state.entry(t.name()).or_insert(t);
                }
            }
            let graph = model.graph.get_or_insert_with(Default::default);
            for p in &record.parameters {
                let slow = p.state.first().and_then(|s| state.get(s.as_str()));
                let weight = graph.initializer.iter_mut().find(|t| t.name() == p.name);
                if let (Some(slow), Some(weight)) = (slow, weight) {
                    copy_values(weight, slow);
                    changed.push(p.name.clone());
                }
            }
        }
        Ok(Unwound {
            models: vec![(String::new(), model)],
            changed,
            weights: options.weights.unwrap_or(record.eval_weights),
            ..Unwound::default()
        })
    }

    fn write_unwound(
        &self,
        models: Validated<Vec<(String, ModelProto)>>,
        _unwound: Unwound,
        output: &Path,
        options: &FinalizeOptions,
    ) -> Result<crate::formats::Written> {
        let model = only_model(models.get())?;
        // The data files the plain model still references (the state's regions went with it).
        let data_files = check_external_data(&self.file.path, model)?;
        write_model_file(&self.file, &data_files, model, output, options.force)?;
        Ok(crate::formats::Written::default())
    }
}
