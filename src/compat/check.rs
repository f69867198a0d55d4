//! Whether a runtime loads a set of artifacts, and if not, the first reason: the checkpoint's
//! format, a model's IR version, an opset import past what the release loads, an operator it
//! lacks (a contrib operator it does not register, an ONNX schema version with no CPU kernel),
//! or what onnxruntime-web alone refuses.

use std::collections::{HashMap, HashSet};

use super::releases::{Release, Resolved, SchemaHistory, domain_key, domain_name};
use crate::generated::onnx::{ModelProto, NodeProto, OperatorSetIdProto};

/// The runtimes a report covers: the Python training releases and the browser's.
#[derive(Debug, Clone, Copy)]
pub enum Runtime {
    /// onnxruntime-training(-cpu) in Python (and the native training API of the same release).
    Training(&'static Release),
    /// onnxruntime-web's training build (1.17 to 1.19; 1.16 had none).
    Web(&'static Release),
}

impl Runtime {
    pub fn release(self) -> &'static Release {
        match self {
            Runtime::Training(r) | Runtime::Web(r) => r,
        }
    }

    /// "onnxruntime-training 1.19" or "onnxruntime-web 1.19".
    pub fn name(self) -> String {
        match self {
            Runtime::Training(r) => format!("onnxruntime-training {}", r.id),
            Runtime::Web(r) => format!("onnxruntime-web {}", r.id),
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Runtime::Training(_) => "python",
            Runtime::Web(_) => "web",
        }
    }
}

/// Every runtime a report covers, oldest first: training 1.16-1.19, then web 1.17-1.19.
pub fn runtimes() -> Vec<Runtime> {
    let releases = super::releases::releases();
    let mut all: Vec<Runtime> = releases.iter().map(Runtime::Training).collect();
    all.extend(releases.iter().filter(|r| r.id != "1.16").map(Runtime::Web));
    all
}

/// The files of a set that decide whether it loads.
#[derive(Debug, Clone, Default)]
pub struct SetView<'a> {
    /// The models by file name, in the order they are loaded (training, eval, optimizer).
    pub models: Vec<(String, &'a ModelProto)>,
    /// The checkpoint's file name and format version, if the set has one.
    pub checkpoint: Option<(String, i32)>,
}

/// The first reason `runtime` would not load `set`; None when it would (as far as the tables
/// know: see releases.rs).
pub fn blocker(runtime: Runtime, set: &SetView) -> Option<String> {
    let release = runtime.release();
    if let Some((name, format)) = &set.checkpoint
        && let Some(reason) = checkpoint_blocker(release, name, *format)
    {
        return Some(reason);
    }
    for (label, model) in &set.models {
        let reason = ir_blocker(release, label, model)
            .or_else(|| opset_blocker(release, label, model))
            .or_else(|| operator_blocker(release, label, model))
            .or_else(|| match runtime {
                Runtime::Web(_) => web_blocker(label, model),
                Runtime::Training(_) => None,
            });
        if reason.is_some() {
            return reason;
        }
    }
    None
}

pub fn checkpoint_blocker(release: &Release, name: &str, format: i32) -> Option<String> {
    (format != release.checkpoint_format).then(|| {
        format!(
            "{name}: checkpoint format {format}; ONNX Runtime {} reads only format {}",
            release.id, release.checkpoint_format
        )
    })
}

pub fn ir_blocker(release: &Release, label: &str, model: &ModelProto) -> Option<String> {
    (model.ir_version() > release.max_ir).then(|| {
        format!(
            "{label} has IR version {}; ONNX Runtime {} loads up to IR {}",
            model.ir_version(),
            release.id,
            release.max_ir
        )
    })
}

/// An opset import (of the model or of one of its functions) past what the release loads.
pub fn opset_blocker(release: &Release, label: &str, model: &ModelProto) -> Option<String> {
    imports(model).find_map(|(scope, import)| {
        let max = release.max_opset(import.domain())?;
        (import.version() > max).then(|| {
            format!(
                "{label}{} imports {} opset {}; ONNX Runtime {} loads up to opset {max}",
                scope_label(model, scope),
                domain_name(domain_key(import.domain())),
                import.version(),
                release.id
            )
        })
    })
}

/// Every opset import of a model with its scope: its own, then each function's.
pub fn imports(model: &ModelProto) -> impl Iterator<Item = (Scope, &OperatorSetIdProto)> {
    let own = model.opset_import.iter().map(|o| (Scope::Model, o));
    let functions = model
        .functions
        .iter()
        .enumerate()
        .flat_map(|(i, f)| f.opset_import.iter().map(move |o| (Scope::Function(i), o)));
    own.chain(functions)
}

/// How messages name a scope after the model's file name: "" or " (function \"F\")".
pub fn scope_label(model: &ModelProto, scope: Scope) -> String {
    match scope {
        Scope::Model => String::new(),
        Scope::Function(i) => format!(
            " (function {:?})",
            model.functions.get(i).map_or("", |f| f.name())
        ),
    }
}

/// A node whose operator the release lacks.
pub fn operator_blocker(release: &Release, label: &str, model: &ModelProto) -> Option<String> {
    let local: HashSet<(&str, &str)> = model
        .functions
        .iter()
        .map(|f| (domain_key(f.domain()), f.name()))
        .collect();
    let mut found = None;
    for_each_node(model, &mut |_, opsets, node| {
        if found.is_none() {
            found = node_blocker(release, label, opsets, &local, node);
        }
    });
    found
}

fn node_blocker(
    release: &Release,
    label: &str,
    opsets: &HashMap<&str, i64>,
    local: &HashSet<(&str, &str)>,
    node: &NodeProto,
) -> Option<String> {
    let domain = domain_key(node.domain());
    let op = node.op_type();
    if local.contains(&(domain, op)) {
        return None;
    }
    if release.owns_domain(domain) {
        return (!release.has_contrib(domain, op)).then(|| {
            format!(
                "{label}: {} is an operator ONNX Runtime {} does not have",
                describe(node),
                release.id
            )
        });
    }
    let history = SchemaHistory::get();
    let opset = opsets.get(domain).copied()?;
    if !history.covers(domain) {
        return None;
    }
    match history.resolve(domain, op, opset) {
        Resolved::Since(since) if !release.has_kernel(domain, op, since) => Some(format!(
            "{label}: {} runs as {op}-{since} ({} opset {opset}), for which ONNX Runtime {} has no CPU kernel",
            describe(node),
            domain_name(domain),
            release.id
        )),
        _ => None,
    }
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

/// Where a node's operator is resolved: against the model's opset imports or a function's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Model,
    Function(usize),
}

type Visit<'v, 'm> = dyn FnMut(Scope, &HashMap<&'m str, i64>, &'m NodeProto) + 'v;

/// Visits every node of a model (main graph, training_info graphs, subgraphs at any depth, and
/// function bodies) with its scope and the opset imports it resolves against.
pub fn for_each_node<'m>(model: &'m ModelProto, visit: &mut Visit<'_, 'm>) {
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
pub fn web_blocker(label: &str, model: &ModelProto) -> Option<String> {
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
