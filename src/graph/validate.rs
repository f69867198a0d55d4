//! The structural rules every graph the tool writes must satisfy: static single assignment,
//! topological order, every read defined (graph input, initializer, earlier output or enclosing
//! scope), no name of an enclosing scope redefined in a subgraph, graph outputs defined.
//! Run on every output before anything is written; a failure means a bug in a pass.
//!
//! Linear in the size of the model: the names visible in a subgraph are a chain of scope frames
//! (one set per enclosing graph, borrowed, never copied), and a training_info algorithm is
//! validated on top of the main graph's names instead of a copy of the concatenated graph.

use std::collections::{BTreeSet, HashSet};

use crate::error::Error;
use crate::generated::onnx::{GraphProto, ModelProto, NodeProto};
use crate::graph::scope::subgraphs;

/// The names one graph defines, so far: its own, plus (for an algorithm validated on top of
/// the main graph) the main graph's, which are in the same scope.
struct Defined<'a, 'g> {
    own: HashSet<&'g str>,
    same_scope: Option<&'a HashSet<&'g str>>,
}

impl Defined<'_, '_> {
    fn contains(&self, name: &str) -> bool {
        self.own.contains(name) || self.same_scope.is_some_and(|s| s.contains(name))
    }
}

/// The names of the enclosing scopes: a chain of frames, innermost first.
enum Outer<'a, 'g> {
    Root(&'a BTreeSet<String>),
    Frame(&'a Defined<'a, 'g>, &'a Outer<'a, 'g>),
}

impl Outer<'_, '_> {
    fn contains(&self, name: &str) -> bool {
        let mut scope = self;
        loop {
            match scope {
                Outer::Root(names) => return names.contains(name),
                Outer::Frame(defined, parent) => {
                    if defined.contains(name) {
                        return true;
                    }
                    scope = parent;
                }
            }
        }
    }
}

/// Validates `graph` (and its subgraphs) given the names visible from enclosing scopes.
pub fn validate_graph(
    graph: &GraphProto,
    outer: &BTreeSet<String>,
    label: &str,
) -> Result<(), Error> {
    check(&[graph], None, 0, &Outer::Root(outer), label).map(|_| ())
}

fn describe(node: &NodeProto, position: usize) -> String {
    match node.name.as_deref() {
        Some(n) if !n.is_empty() => format!("node {n:?} ({})", node.op_type()),
        _ => format!("node #{position} ({})", node.op_type()),
    }
}

/// Validates the concatenation of `parts` (one graph, or the main graph and an algorithm) as one
/// scope, without copying them. `same_scope`: names already defined in this scope (checked
/// before); `first_position`: the position of the first node in messages. Returns the names the
/// parts define.
fn check<'a, 'g>(
    parts: &[&'g GraphProto],
    same_scope: Option<&'a HashSet<&'g str>>,
    first_position: usize,
    outer: &Outer<'a, 'g>,
    label: &str,
) -> Result<HashSet<&'g str>, Error> {
    let fail = |reason: String| Error::Validation {
        graph: label.to_string(),
        reason,
    };
    let mut defined = Defined {
        own: HashSet::new(),
        same_scope,
    };
    let define = |name: &'g str, what: &dyn Fn() -> String, defined: &mut Defined<'a, 'g>| {
        if outer.contains(name) {
            return Err(fail(format!(
                "{} {name:?} shadows a name of an enclosing scope",
                what()
            )));
        }
        if defined.same_scope.is_some_and(|s| s.contains(name)) || !defined.own.insert(name) {
            return Err(fail(format!(
                "{} {name:?} is defined more than once",
                what()
            )));
        }
        Ok(())
    };
    let inputs: HashSet<&str> = parts
        .iter()
        .flat_map(|g| g.input.iter().map(|i| i.name()))
        .collect();
    for input in parts.iter().flat_map(|g| &g.input) {
        define(input.name(), &|| "graph input".into(), &mut defined)?;
    }
    for init in parts.iter().flat_map(|g| &g.initializer) {
        // An initializer may also be listed as a graph input (its default value).
        if !inputs.contains(init.name()) {
            define(init.name(), &|| "initializer".into(), &mut defined)?;
        }
    }
    for sparse in parts.iter().flat_map(|g| &g.sparse_initializer) {
        if let Some(values) = &sparse.values
            && !inputs.contains(values.name())
        {
            define(values.name(), &|| "sparse initializer".into(), &mut defined)?;
        }
    }
    let produced_later: HashSet<&str> = parts
        .iter()
        .flat_map(|g| &g.node)
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    let nodes = parts.iter().flat_map(|g| &g.node);
    for (position, node) in (first_position..).zip(nodes) {
        for input in node.input.iter().filter(|i| !i.is_empty()) {
            if !defined.contains(input) && !outer.contains(input) {
                let who = describe(node, position);
                let reason = if produced_later.contains(input.as_str()) {
                    format!(
                        "{who} reads {input:?} before it is produced (not topologically sorted)"
                    )
                } else {
                    format!("{who} reads {input:?}, which is not defined")
                };
                return Err(fail(reason));
            }
        }
        let mut subs = subgraphs(node).enumerate().peekable();
        if subs.peek().is_some() {
            let who = describe(node, position);
            let scope = Outer::Frame(&defined, outer);
            for (i, sub) in subs {
                let sub_label = format!("{label}/{who}[{i}]");
                check(&[sub], None, 0, &scope, &sub_label)?;
            }
        }
        for output in node.output.iter().filter(|o| !o.is_empty()) {
            let what = || format!("output of {}", describe(node, position));
            define(output, &what, &mut defined)?;
        }
    }
    for output in parts.iter().flat_map(|g| &g.output) {
        if !defined.contains(output.name()) && !outer.contains(output.name()) {
            return Err(fail(format!(
                "graph output {:?} is not defined",
                output.name()
            )));
        }
    }
    Ok(defined.own)
}

/// Validates a whole model: the main graph, and for every training_info entry the concatenation
/// of the main graph and its algorithm (the graph a training runtime executes), its
/// initialization graph, and its bindings (training_info is never checked by onnx.checker).
/// Models that passed `validate_model`, named by label: the only form in which adapters accept
/// models to write (naga's habit), so nothing unvalidated is written.
pub struct Validated<T>(T);

impl<T> Validated<T> {
    pub fn get(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

/// Validates each model (see `validate_model`); the token the writers require.
pub fn validate_models(
    models: Vec<(String, ModelProto)>,
) -> Result<Validated<Vec<(String, ModelProto)>>, Error> {
    for (_, model) in &models {
        validate_model(model)?;
    }
    Ok(Validated(models))
}

pub fn validate_model(model: &ModelProto) -> Result<(), Error> {
    let empty = GraphProto::default();
    let no_names = BTreeSet::new();
    let root = Outer::Root(&no_names);
    let main = model.graph.as_ref().unwrap_or(&empty);
    let main_names = check(&[main], None, 0, &root, "graph")?;
    // Names any subgraph of the main graph defines: an algorithm input or initializer of such a
    // name would be shadowed there once the graphs are concatenated.
    let mut main_subgraph_names = HashSet::new();
    for node in &main.node {
        for sub in subgraphs(node) {
            names_defined_anywhere(sub, &mut main_subgraph_names);
        }
    }
    let main_inits: HashSet<&str> = main.initializer.iter().map(|t| t.name()).collect();
    let main_outputs: HashSet<&str> = main.output.iter().map(|o| o.name()).collect();
    let mut update_keys: HashSet<&str> = HashSet::new();
    for (i, info) in model.training_info.iter().enumerate() {
        let label = format!("training_info[{i}]");
        let fail = |reason: String| Error::Validation {
            graph: label.clone(),
            reason,
        };
        let algorithm = info.algorithm.as_ref().unwrap_or(&empty);
        let combined_label = format!("graph+algorithm[{i}]");
        // The main graph is valid on its own. When the algorithm's inputs and initializers do
        // not meet any name of the main graph, the concatenation can only fail in the
        // algorithm's part, so that part is checked on top of the main graph's names; otherwise
        // the concatenation is checked as a whole (still without copying it).
        let mut declared = algorithm
            .input
            .iter()
            .map(|v| v.name())
            .chain(algorithm.initializer.iter().map(|t| t.name()))
            .chain(
                algorithm
                    .sparse_initializer
                    .iter()
                    .filter_map(|s| s.values.as_ref().map(|v| v.name())),
            );
        let meets_main =
            declared.any(|n| main_names.contains(n) || main_subgraph_names.contains(n));
        if meets_main {
            check(&[main, algorithm], None, 0, &root, &combined_label)?;
        } else {
            check(
                &[algorithm],
                Some(&main_names),
                main.node.len(),
                &root,
                &combined_label,
            )?;
        }
        let own_inits: HashSet<&str> = algorithm.initializer.iter().map(|t| t.name()).collect();
        let algo_outputs: HashSet<&str> = algorithm.output.iter().map(|o| o.name()).collect();
        for binding in &info.update_binding {
            let (key, value) = (binding.key(), binding.value());
            if !main_inits.contains(key) && !own_inits.contains(key) {
                return Err(fail(format!(
                    "update_binding key {key:?} is not an initializer"
                )));
            }
            if !algo_outputs.contains(value) && !main_outputs.contains(value) {
                return Err(fail(format!(
                    "update_binding value {value:?} is not a graph output"
                )));
            }
            if !update_keys.insert(key) {
                return Err(fail(format!(
                    "update_binding key {key:?} is bound more than once"
                )));
            }
        }
        if let Some(init) = &info.initialization {
            if !init.input.is_empty() {
                return Err(fail("the initialization graph has inputs".into()));
            }
            validate_graph(init, &BTreeSet::new(), &format!("initialization[{i}]"))?;
        }
        let init_outputs: HashSet<&str> = info
            .initialization
            .iter()
            .flat_map(|g| g.output.iter().map(|o| o.name()))
            .collect();
        let mut init_keys = HashSet::new();
        for binding in &info.initialization_binding {
            let (key, value) = (binding.key(), binding.value());
            if !main_inits.contains(key) && !own_inits.contains(key) {
                return Err(fail(format!(
                    "initialization_binding key {key:?} is not an initializer"
                )));
            }
            if !init_outputs.contains(value) {
                return Err(fail(format!(
                    "initialization_binding value {value:?} is not an initialization output"
                )));
            }
            if !init_keys.insert(key) {
                return Err(fail(format!(
                    "initialization_binding key {key:?} is bound more than once"
                )));
            }
        }
    }
    Ok(())
}

/// Every name any scope of `graph` defines (inputs, initializers, node outputs), subgraphs
/// included.
fn names_defined_anywhere<'g>(graph: &'g GraphProto, into: &mut HashSet<&'g str>) {
    into.extend(graph.input.iter().map(|v| v.name()));
    into.extend(graph.initializer.iter().map(|t| t.name()));
    into.extend(
        graph
            .sparse_initializer
            .iter()
            .filter_map(|s| s.values.as_ref().map(|v| v.name())),
    );
    for node in &graph.node {
        into.extend(node.output.iter().map(String::as_str));
        for sub in subgraphs(node) {
            names_defined_anywhere(sub, into);
        }
    }
}

/// The graph a training runtime executes for one algorithm: ModelProto.graph's inputs,
/// initializers, outputs, nodes and value_info followed by the algorithm's.
pub fn concatenate(main: &GraphProto, algorithm: &GraphProto) -> GraphProto {
    let mut combined = main.clone();
    combined.input.extend(algorithm.input.iter().cloned());
    combined
        .initializer
        .extend(algorithm.initializer.iter().cloned());
    combined
        .sparse_initializer
        .extend(algorithm.sparse_initializer.iter().cloned());
    combined.output.extend(algorithm.output.iter().cloned());
    combined.node.extend(algorithm.node.iter().cloned());
    combined
        .value_info
        .extend(algorithm.value_info.iter().cloned());
    combined
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
