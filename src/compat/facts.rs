//! What decides whether a release loads a model, gathered in one walk: its IR version and the
//! newest IR its content needs, its opset imports, which domains its nodes use, the distinct
//! operators it runs (each as the schema version it resolves to), and what onnxruntime-web alone
//! refuses. Every release is then judged on these facts (check.rs, target.rs), not on the model.

use std::collections::{HashMap, HashSet};

use super::ir::{IrNeed, ir_needed};
use super::releases::{Resolved, SchemaHistory, domain_key, domain_name};
use crate::generated::onnx::{ModelProto, NodeProto, OperatorSetIdProto};

/// Where a node's operator is resolved: against the model's opset imports or a function's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Model,
    Function(usize),
}

/// A distinct operator a model runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// The domain ("" for ai.onnx).
    pub domain: String,
    pub op: String,
    /// The opset of its domain in its scope (None when the scope does not import the domain).
    pub opset: Option<i64>,
    /// The ONNX schema version it runs as (ai.onnx, ai.onnx.ml, ai.onnx.preview.training).
    pub since: Option<i64>,
    /// A node that runs it, for messages.
    pub node: String,
}

/// The facts of one model of a set.
#[derive(Debug, Clone)]
pub struct ModelFacts {
    /// The model's file name in its set.
    pub label: String,
    pub ir_version: i64,
    /// The newest feature its content uses, by the IR that introduced it.
    pub ir_needed: Option<IrNeed>,
    /// Every opset import: (scope, domain, version).
    pub imports: Vec<(Scope, String, i64)>,
    /// The domains each scope's nodes use, with a node that does: the model's own rather than
    /// one the rewrite injected, where there is one.
    pub used: HashMap<(Scope, String), String>,
    /// The operators its nodes run (model-local functions excluded: their bodies count).
    pub operators: Vec<Operator>,
    /// Why onnxruntime-web refuses it where the Python releases load it.
    pub web_refusal: Option<String>,
    /// " (function \"F\")" per function, for messages.
    function_labels: Vec<String>,
}

impl ModelFacts {
    pub fn of(label: &str, model: &ModelProto) -> ModelFacts {
        let history = SchemaHistory::get();
        let local: HashSet<(&str, &str)> = model
            .functions
            .iter()
            .map(|f| (domain_key(f.domain()), f.name()))
            .collect();
        // Keys borrow from the model: one hash lookup per node, allocations only per distinct
        // domain and operator.
        let mut used: HashMap<(Scope, &str), (bool, String)> = HashMap::new();
        let mut seen: HashSet<(&str, &str, Option<i64>)> = HashSet::new();
        let mut operators = Vec::new();
        // Consecutive nodes mostly share a domain: the map is consulted when it changes, or
        // while its entry still names an injected node.
        let mut last: Option<(Scope, &str, bool)> = None;
        for_each_node(model, &mut |scope, opsets, node| {
            let domain = domain_key(node.domain());
            let injected = node.name().starts_with(crate::inject::NAME_PREFIX);
            if last.is_none_or(|(s, d, named_injected)| {
                s != scope || d != domain || named_injected && !injected
            }) {
                let entry = used
                    .entry((scope, domain))
                    .or_insert_with(|| (injected, describe(node)));
                if entry.0 && !injected {
                    *entry = (false, describe(node));
                }
                last = Some((scope, domain, entry.0));
            }
            if !local.is_empty() && local.contains(&(domain, node.op_type())) {
                return;
            }
            let opset = opsets.get(domain).copied();
            if !seen.insert((domain, node.op_type(), opset)) {
                return;
            }
            let since = match opset.map(|v| history.resolve(domain, node.op_type(), v)) {
                Some(Resolved::Since(since)) => Some(since),
                _ => None,
            };
            operators.push(Operator {
                domain: domain.to_string(),
                op: node.op_type().to_string(),
                opset,
                since,
                node: describe(node),
            });
        });
        ModelFacts {
            label: label.to_string(),
            ir_version: model.ir_version(),
            ir_needed: ir_needed(model),
            imports: imports(model)
                .map(|(scope, o)| (scope, domain_key(o.domain()).to_string(), o.version()))
                .collect(),
            used: used
                .into_iter()
                .map(|((scope, domain), (_, node))| ((scope, domain.to_string()), node))
                .collect(),
            operators,
            web_refusal: web_refusal(label, model),
            function_labels: model
                .functions
                .iter()
                .map(|f| format!(" (function {:?})", f.name()))
                .collect(),
        }
    }

    /// The model's label with the scope: "training_model.onnx" or "m.onnx (function \"F\")".
    pub fn whose(&self, scope: Scope) -> String {
        match scope {
            Scope::Model => self.label.clone(),
            Scope::Function(i) => format!(
                "{}{}",
                self.label,
                self.function_labels.get(i).map_or("", String::as_str)
            ),
        }
    }
}

/// Every opset import of a model with its scope: its own, then each function's.
fn imports(model: &ModelProto) -> impl Iterator<Item = (Scope, &OperatorSetIdProto)> {
    let own = model.opset_import.iter().map(|o| (Scope::Model, o));
    let functions = model
        .functions
        .iter()
        .enumerate()
        .flat_map(|(i, f)| f.opset_import.iter().map(move |o| (Scope::Function(i), o)));
    own.chain(functions)
}

/// How messages name a node: `node "name" (domain:Op)`, or `a domain:Op node` without a name.
pub fn describe(node: &NodeProto) -> String {
    let op = format!(
        "{}:{}",
        domain_name(domain_key(node.domain())),
        node.op_type()
    );
    match node.name() {
        "" => format!("a {op} node"),
        name => format!("node {name:?} ({op})"),
    }
}

type Visit<'v, 'm> = dyn FnMut(Scope, &HashMap<&'m str, i64>, &'m NodeProto) + 'v;

/// Visits every node of a model (main graph, training_info graphs, subgraphs at any depth, and
/// function bodies) with its scope and the opset imports it resolves against.
fn for_each_node<'m>(model: &'m ModelProto, visit: &mut Visit<'_, 'm>) {
    fn nodes<'m>(
        list: &'m [NodeProto],
        scope: Scope,
        opsets: &HashMap<&'m str, i64>,
        visit: &mut Visit<'_, 'm>,
    ) {
        for node in list {
            visit(scope, opsets, node);
            for graph in crate::graph::scope::subgraphs(node) {
                nodes(&graph.node, scope, opsets, visit);
            }
        }
    }
    let table = |list: &'m [OperatorSetIdProto]| -> HashMap<&'m str, i64> {
        list.iter()
            .map(|o| (domain_key(o.domain()), o.version()))
            .collect()
    };
    let own = table(&model.opset_import);
    let graphs = model.graph.iter().chain(
        model
            .training_info
            .iter()
            .flat_map(|t| t.initialization.iter().chain(&t.algorithm)),
    );
    for graph in graphs {
        nodes(&graph.node, Scope::Model, &own, visit);
    }
    for (i, function) in model.functions.iter().enumerate() {
        let opsets = table(&function.opset_import);
        nodes(&function.node, Scope::Function(i), &opsets, visit);
    }
}

/// What onnxruntime-web refuses that the Python releases load (experiments, runtimes.md): ONNX
/// Runtime's own SGD optimizer model declares its update flag with shape [1], and web's stricter
/// shape inference rejects the scalar SGDOptimizerV2 produces.
fn web_refusal(label: &str, model: &ModelProto) -> Option<String> {
    let graph = model.graph.as_ref()?;
    let node = graph
        .node
        .iter()
        .find(|n| n.op_type() == "SGDOptimizerV2" && domain_key(n.domain()) == "com.microsoft")?;
    let flag = node.output.first()?;
    let declared = graph.output.iter().find(|o| o.name() == flag)?;
    let rank = match &declared.r#type.as_ref()?.value {
        Some(crate::generated::onnx::type_proto::Value::TensorType(t)) => {
            t.shape.as_ref()?.dim.len()
        }
        _ => return None,
    };
    (rank != 0).then(|| {
        format!(
            "{label}: onnxruntime-web refuses ONNX Runtime's SGD optimizer model (its output {flag:?} is declared with rank {rank}, SGDOptimizerV2 gives a scalar)"
        )
    })
}
