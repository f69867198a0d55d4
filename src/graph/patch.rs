//! Declarative edits of a model. Passes describe what to change (add these tensors and nodes,
//! make these readers read that instead, rebind these training_info entries); `apply` performs
//! them in one place, re-sorts the touched graphs with the order-preserving sort, and leaves
//! every untouched field exactly as it was.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::error::{Error, Result};
use crate::generated::onnx::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TrainingInfoProto, ValueInfoProto,
};
use crate::graph::dataflow::same_domain;
use crate::graph::order::insert_in_order;
use crate::graph::scope::rename_reads;

/// Which graph of a model an edit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GraphId {
    Main,
    /// training_info[i].algorithm
    Algorithm(usize),
    /// training_info[i].initialization (created empty if missing)
    Initialization(usize),
}

#[derive(Debug, Clone)]
pub enum GraphEdit {
    AddInput(ValueInfoProto),
    AddInitializer(TensorProto),
    AddOutput(ValueInfoProto),
    /// Placed by the order-preserving sort: just before its first consumer, or at the end.
    AddNode(NodeProto),
    /// Every node that existed before this patch and reads `from` (explicitly or from a
    /// subgraph) reads `to` instead. Added nodes are not touched, so they can still read `from`.
    RedirectReads {
        from: String,
        to: String,
    },
    /// The existing node producing `from` produces `to` instead; an added node then produces
    /// `from`, so its readers (and a graph output of that name) get the added node's value.
    RenameProducedOutput {
        from: String,
        to: String,
    },
}

#[derive(Debug, Clone)]
pub enum BindingEdit {
    /// Set (replace or add) update_binding[key] = value in training_info[info].
    SetUpdate {
        info: usize,
        key: String,
        value: String,
    },
    /// Set (replace or add) initialization_binding[key] = value in training_info[info].
    SetInitialization {
        info: usize,
        key: String,
        value: String,
    },
}

/// A list of edits to one model.
#[derive(Debug, Clone, Default)]
pub struct ModelPatch {
    pub graph_edits: Vec<(GraphId, GraphEdit)>,
    pub binding_edits: Vec<BindingEdit>,
    /// Opset imports the added nodes need (domain, version); added only if the domain is absent.
    pub opsets: Vec<(String, i64)>,
}

/// What `apply` did that cannot be seen from the added parts alone, inverted: with it, and with
/// every added name carrying the caller's reserved prefix, a patched model can be taken back to
/// exactly what it was (`graph::revert`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Undo {
    /// (redirect target, original name): redirected readers read the original again.
    #[serde(default)]
    pub reads: Vec<(String, String)>,
    /// (new name, original name): a renamed node output gets its name back.
    #[serde(default)]
    pub outputs: Vec<(String, String)>,
    /// (training_info entry, key, value before the patch, or none where the binding was added).
    #[serde(default)]
    pub update_bindings: Vec<(usize, String, Option<String>)>,
    #[serde(default)]
    pub initialization_bindings: Vec<(usize, String, Option<String>)>,
    /// training_info entries whose initialization graph the patch created.
    #[serde(default)]
    pub created_initializations: Vec<usize>,
    /// Opset imports the patch added (domain, version).
    #[serde(default)]
    pub opsets: Vec<(String, i64)>,
}

impl ModelPatch {
    pub fn edit(&mut self, graph: GraphId, edit: GraphEdit) {
        self.graph_edits.push((graph, edit));
    }

    pub fn add_node(&mut self, graph: GraphId, node: NodeProto) {
        self.edit(graph, GraphEdit::AddNode(node));
    }

    /// The nodes this patch adds, per graph (for reports).
    pub fn added_nodes(&self) -> impl Iterator<Item = (GraphId, &NodeProto)> {
        self.graph_edits.iter().filter_map(|(g, e)| match e {
            GraphEdit::AddNode(n) => Some((*g, n)),
            _ => None,
        })
    }
}

fn graph_mut(model: &mut ModelProto, id: GraphId) -> Result<&mut GraphProto> {
    let missing = |what: String| Error::Validation {
        graph: format!("{id:?}"),
        reason: what,
    };
    match id {
        GraphId::Main => model
            .graph
            .as_mut()
            .ok_or_else(|| missing("no main graph".into())),
        GraphId::Algorithm(i) => model
            .training_info
            .get_mut(i)
            .and_then(|t| t.algorithm.as_mut())
            .ok_or_else(|| missing(format!("no training_info[{i}].algorithm"))),
        GraphId::Initialization(i) => {
            let info = model
                .training_info
                .get_mut(i)
                .ok_or_else(|| missing(format!("no training_info[{i}]")))?;
            Ok(info.initialization.get_or_insert_with(|| GraphProto {
                name: Some(format!("training_info_{i}_initialization")),
                ..Default::default()
            }))
        }
    }
}

/// Applies `patch` to `model`. Graph edits are grouped per graph and applied in order; each
/// touched graph is then re-sorted (untouched nodes keep their relative order). Returns what
/// undoes it.
pub fn apply(model: &mut ModelProto, patch: ModelPatch) -> Result<Undo> {
    let mut undo = Undo::default();
    let mut per_graph: BTreeMap<GraphId, Vec<GraphEdit>> = BTreeMap::new();
    for (id, edit) in patch.graph_edits {
        match &edit {
            GraphEdit::RedirectReads { from, to } => undo.reads.push((to.clone(), from.clone())),
            GraphEdit::RenameProducedOutput { from, to } => {
                undo.outputs.push((to.clone(), from.clone()))
            }
            _ => {}
        }
        per_graph.entry(id).or_default().push(edit);
    }
    for (id, edits) in per_graph {
        if let GraphId::Initialization(i) = id
            && model
                .training_info
                .get(i)
                .is_some_and(|t| t.initialization.is_none())
        {
            undo.created_initializations.push(i);
        }
        apply_graph_edits(graph_mut(model, id)?, edits, id)?;
    }
    apply_bindings(model, patch.binding_edits, &mut undo)?;
    for (domain, version) in patch.opsets {
        if !model
            .opset_import
            .iter()
            .any(|o| same_domain(o.domain(), &domain))
        {
            undo.opsets.push((domain.clone(), version));
            model.opset_import.push(OperatorSetIdProto {
                domain: Some(domain),
                version: Some(version),
            });
        }
    }
    Ok(undo)
}

/// Sets metadata_props entries (replacing an entry with the same key, appending otherwise).
pub fn set_metadata(model: &mut ModelProto, entries: Vec<(String, String)>) {
    for (key, value) in entries {
        match model.metadata_props.iter_mut().find(|p| p.key() == key) {
            Some(entry) => entry.value = Some(value),
            None => model.metadata_props.push(StringStringEntryProto {
                key: Some(key),
                value: Some(value),
            }),
        }
    }
}

/// Redirects not yet applied, applied together in one pass over the graph. Applying them at
/// once gives what applying them one after the other gives as long as no redirect reads what an
/// earlier one wrote (`from` of one is the `to` of an earlier one); such a redirect starts a
/// new batch.
#[derive(Default)]
struct RedirectBatch {
    renames: HashMap<String, String>,
    targets: HashSet<String>,
}

impl RedirectBatch {
    fn add(&mut self, from: String, to: String, nodes: &mut [NodeProto]) {
        if from == to {
            return; // renames nothing
        }
        if self.targets.contains(&from) {
            self.flush(nodes);
        }
        // A second redirect of the same name finds no reader left: the first one moved them all.
        if let Entry::Vacant(entry) = self.renames.entry(from) {
            self.targets.insert(to.clone());
            entry.insert(to);
        }
    }

    fn flush(&mut self, nodes: &mut [NodeProto]) {
        rename_reads(nodes, &self.renames);
        self.renames.clear();
        self.targets.clear();
    }
}

fn apply_graph_edits(graph: &mut GraphProto, edits: Vec<GraphEdit>, id: GraphId) -> Result<()> {
    let original_count = graph.node.len();
    let mut added = Vec::new();
    let mut redirects = RedirectBatch::default();
    // Where each output name is produced among the original nodes (node, slot), built on the
    // first RenameProducedOutput; every occurrence is kept, so a rename takes the first one.
    let mut producers: Option<HashMap<String, BTreeSet<(usize, usize)>>> = None;
    for edit in edits {
        match edit {
            GraphEdit::AddInput(v) => graph.input.push(v),
            GraphEdit::AddInitializer(t) => graph.initializer.push(t),
            GraphEdit::AddOutput(v) => graph.output.push(v),
            GraphEdit::AddNode(n) => added.push(n),
            GraphEdit::RedirectReads { from, to } => {
                redirects.add(from, to, &mut graph.node[..original_count]);
            }
            GraphEdit::RenameProducedOutput { from, to } => {
                let producers = producers
                    .get_or_insert_with(|| output_positions(&graph.node[..original_count]));
                let missing = || Error::Validation {
                    graph: format!("{id:?}"),
                    reason: format!("no node produces {from:?}"),
                };
                let positions = producers.get_mut(&from).ok_or_else(missing)?;
                let (node, slot) = positions.pop_first().ok_or_else(missing)?;
                if positions.is_empty() {
                    producers.remove(&from);
                }
                let output = graph.node[node].output.get_mut(slot).ok_or_else(missing)?;
                producers
                    .entry(to.clone())
                    .or_default()
                    .insert((node, slot));
                *output = to;
            }
        }
    }
    redirects.flush(&mut graph.node[..original_count]);
    if added.is_empty() {
        return Ok(());
    }
    let mut nodes = std::mem::take(&mut graph.node);
    let original = nodes.len();
    nodes.extend(added);
    graph.node = insert_in_order(nodes, original).map_err(|e| Error::Validation {
        graph: format!("{id:?}"),
        reason: format!("the patched graph cannot be ordered: {e}"),
    })?;
    Ok(())
}

/// Every output name of `nodes` with where it is produced (node, slot), in node order.
fn output_positions(nodes: &[NodeProto]) -> HashMap<String, BTreeSet<(usize, usize)>> {
    let mut positions: HashMap<String, BTreeSet<(usize, usize)>> = HashMap::new();
    for (i, node) in nodes.iter().enumerate() {
        for (slot, output) in node.output.iter().enumerate() {
            positions
                .entry(output.clone())
                .or_default()
                .insert((i, slot));
        }
    }
    positions
}

/// Sets the bindings: each edit replaces the value of the first binding with its key, or appends
/// one. One index per binding list, so the cost does not grow with the list per edit.
fn apply_bindings(model: &mut ModelProto, edits: Vec<BindingEdit>, undo: &mut Undo) -> Result<()> {
    // (training_info index, update?) -> key -> position of the first binding with that key.
    let mut indexes: HashMap<(usize, bool), HashMap<String, usize>> = HashMap::new();
    for edit in edits {
        let (info, key, value, update) = match edit {
            BindingEdit::SetUpdate { info, key, value } => (info, key, value, true),
            BindingEdit::SetInitialization { info, key, value } => (info, key, value, false),
        };
        let entry: &mut TrainingInfoProto =
            model
                .training_info
                .get_mut(info)
                .ok_or_else(|| Error::Validation {
                    graph: format!("training_info[{info}]"),
                    reason: "does not exist".into(),
                })?;
        let bindings = if update {
            &mut entry.update_binding
        } else {
            &mut entry.initialization_binding
        };
        let index = indexes.entry((info, update)).or_insert_with(|| {
            let mut index = HashMap::new();
            for (position, binding) in bindings.iter().enumerate() {
                index.entry(binding.key().to_string()).or_insert(position);
            }
            index
        });
        let undone = if update {
            &mut undo.update_bindings
        } else {
            &mut undo.initialization_bindings
        };
        match index.get(&key).and_then(|&p| bindings.get_mut(p)) {
            Some(binding) => {
                undone.push((info, key.clone(), Some(binding.value().to_string())));
                binding.value = Some(value);
            }
            None => {
                undone.push((info, key.clone(), None));
                index.insert(key.clone(), bindings.len());
                bindings.push(StringStringEntryProto {
                    key: Some(key),
                    value: Some(value),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generated::onnx::AttributeProto;

    fn node(inputs: &[&str], outputs: &[&str]) -> NodeProto {
        crate::graph::build::Node::new("Op")
            .inputs(inputs.iter().copied())
            .outputs(outputs.iter().copied())
            .build()
    }

    fn binding(key: &str, value: &str) -> StringStringEntryProto {
        StringStringEntryProto {
            key: Some(key.into()),
            value: Some(value.into()),
        }
    }

    /// Main graph: reads of a, b, c, one in a subgraph that defines b itself.
    fn model() -> ModelProto {
        let mut with_branch = node(&["a"], &["o"]);
        with_branch.attribute.push(AttributeProto {
            name: Some("then_branch".into()),
            g: Some(GraphProto {
                node: vec![node(&["a"], &["b"]), node(&["b", "c"], &["r"])],
                ..Default::default()
            }),
            ..Default::default()
        });
        ModelProto {
            graph: Some(GraphProto {
                node: vec![
                    node(&["a", "b"], &["x"]),
                    with_branch,
                    node(&["c", "a"], &["y", "z"]),
                ],
                ..Default::default()
            }),
            training_info: vec![TrainingInfoProto {
                update_binding: vec![binding("k", "1"), binding("j", "2"), binding("k", "3")],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// Applying the edits in one patch gives what applying them one patch each gives.
    fn same_as_one_by_one(graph_edits: Vec<GraphEdit>, binding_edits: Vec<BindingEdit>) {
        let mut together = model();
        let patch = ModelPatch {
            graph_edits: graph_edits
                .iter()
                .map(|e| (GraphId::Main, e.clone()))
                .collect(),
            binding_edits: binding_edits.clone(),
            ..Default::default()
        };
        apply(&mut together, patch).unwrap();
        let mut one_by_one = model();
        for edit in graph_edits {
            let mut patch = ModelPatch::default();
            patch.edit(GraphId::Main, edit);
            apply(&mut one_by_one, patch).unwrap();
        }
        for edit in binding_edits {
            let patch = ModelPatch {
                binding_edits: vec![edit],
                ..Default::default()
            };
            apply(&mut one_by_one, patch).unwrap();
        }
        assert_eq!(together, one_by_one);
        assert_ne!(together, model());
    }

    fn redirect(from: &str, to: &str) -> GraphEdit {
        GraphEdit::RedirectReads {
            from: from.into(),
            to: to.into(),
        }
    }

    fn rename_output(from: &str, to: &str) -> GraphEdit {
        GraphEdit::RenameProducedOutput {
            from: from.into(),
            to: to.into(),
        }
    }

    #[test]
    fn redirects_in_one_pass_match_redirects_one_by_one() {
        same_as_one_by_one(vec![redirect("a", "a2"), redirect("c", "c2")], vec![]);
        // Chained: the second reads what the first wrote (and b is shadowed in the subgraph).
        same_as_one_by_one(vec![redirect("a", "b"), redirect("b", "d")], vec![]);
        // The same name twice, a no-op redirect, a redirect onto a redirected name.
        same_as_one_by_one(
            vec![
                redirect("a", "a2"),
                redirect("c", "c"),
                redirect("a", "a3"),
                redirect("c", "a"),
            ],
            vec![],
        );
    }

    #[test]
    fn output_renames_and_bindings_match_one_by_one() {
        same_as_one_by_one(
            vec![
                rename_output("z", "z2"),
                rename_output("x", "x2"),
                rename_output("z2", "z3"),
                rename_output("y", "x"),
            ],
            vec![],
        );
        let update = |key: &str, value: &str| BindingEdit::SetUpdate {
            info: 0,
            key: key.into(),
            value: value.into(),
        };
        let init = |key: &str, value: &str| BindingEdit::SetInitialization {
            info: 0,
            key: key.into(),
            value: value.into(),
        };
        same_as_one_by_one(
            vec![],
            vec![
                update("k", "4"),
                update("new", "5"),
                init("k", "6"),
                update("new", "7"),
                update("j", "8"),
                init("k", "9"),
            ],
        );
    }

    #[test]
    fn renaming_an_output_nobody_produces_fails() {
        let mut m = model();
        let mut patch = ModelPatch::default();
        patch.edit(GraphId::Main, rename_output("x", "x2"));
        patch.edit(GraphId::Main, rename_output("x", "x3"));
        let err = apply(&mut m, patch).unwrap_err().to_string();
        assert!(err.contains("no node produces \"x\""), "{err}");
    }
}
