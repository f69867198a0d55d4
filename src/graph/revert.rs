//! Taking a patched model back to what it was: the inverse of `patch::apply`, from the `Undo` it
//! returned and the reserved prefix every added name carries. Added nodes, inputs, initializers,
//! outputs and value infos are removed; redirected readers and renamed outputs get their names
//! back; bindings get their earlier values (or go, when the patch added them); a created
//! initialization graph and added opset imports go; metadata entries under `meta_prefix` go.
//! Untouched nodes kept their relative order through `apply`, so the result is the original.

use std::collections::{HashMap, HashSet};

use crate::generated::onnx::{GraphProto, ModelProto, StringStringEntryProto};
use crate::graph::patch::Undo;
use crate::graph::scope::rename_reads;

pub fn revert(model: &mut ModelProto, undo: &Undo, prefix: &str, meta_prefix: &str) {
    let reads: HashMap<String, String> = undo.reads.iter().cloned().collect();
    let outputs: HashMap<&str, &str> = undo
        .outputs
        .iter()
        .map(|(new, original)| (new.as_str(), original.as_str()))
        .collect();
    let mut graphs: Vec<&mut GraphProto> = model.graph.iter_mut().collect();
    for info in &mut model.training_info {
        graphs.extend(info.initialization.iter_mut());
        graphs.extend(info.algorithm.iter_mut());
    }
    for graph in graphs {
        remove_added(graph, prefix);
        rename_reads(&mut graph.node, &reads);
        for output in graph.node.iter_mut().flat_map(|n| n.output.iter_mut()) {
            if let Some(original) = outputs.get(output.as_str()) {
                *output = original.to_string();
            }
        }
    }
    for (entry, bindings, update) in undo
        .update_bindings
        .iter()
        .map(|b| (b, true))
        .chain(undo.initialization_bindings.iter().map(|b| (b, false)))
        .map(|((info, key, value), update)| (*info, (key, value), update))
    {
        let Some(info) = model.training_info.get_mut(entry) else {
            continue;
        };
        let list = if update {
            &mut info.update_binding
        } else {
            &mut info.initialization_binding
        };
        restore_binding(list, bindings.0, bindings.1.as_deref());
    }
    for &entry in &undo.created_initializations {
        if let Some(info) = model.training_info.get_mut(entry) {
            info.initialization = None;
        }
    }
    let added: HashSet<(&str, i64)> = undo.opsets.iter().map(|(d, v)| (d.as_str(), *v)).collect();
    model
        .opset_import
        .retain(|o| !added.contains(&(o.domain(), o.version())));
    model
        .metadata_props
        .retain(|p| !p.key().starts_with(meta_prefix));
}

/// Removes everything of `graph` named with `prefix`: nodes (their subgraphs with them), inputs,
/// initializers, outputs, value infos.
fn remove_added(graph: &mut GraphProto, prefix: &str) {
    graph.node.retain(|n| !n.name().starts_with(prefix));
    graph.input.retain(|v| !v.name().starts_with(prefix));
    graph.output.retain(|v| !v.name().starts_with(prefix));
    graph.value_info.retain(|v| !v.name().starts_with(prefix));
    graph.initializer.retain(|t| !t.name().starts_with(prefix));
}

/// Gives the first binding of `key` its earlier value, or removes it when there was none.
fn restore_binding(list: &mut Vec<StringStringEntryProto>, key: &str, value: Option<&str>) {
    let Some(position) = list.iter().position(|b| b.key() == key) else {
        return;
    };
    match value {
        Some(value) => list[position].value = Some(value.to_string()),
        None => {
            list.remove(position);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generated::onnx::{NodeProto, TrainingInfoProto, ValueInfoProto};
    use crate::graph::patch::{BindingEdit, GraphEdit, GraphId, ModelPatch, apply};

    fn node(name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        crate::graph::build::Node::new("Op")
            .name(name)
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

    #[test]
    fn revert_undoes_apply_exactly() {
        let original = ModelProto {
            graph: Some(GraphProto {
                input: vec![ValueInfoProto {
                    name: Some("x".into()),
                    ..Default::default()
                }],
                node: vec![node("a", &["x"], &["y"]), node("b", &["y"], &["z"])],
                output: vec![ValueInfoProto {
                    name: Some("z".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            training_info: vec![TrainingInfoProto {
                algorithm: Some(GraphProto::default()),
                update_binding: vec![binding("w", "w_new")],
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut patch = ModelPatch::default();
        patch.add_node(GraphId::Main, node("p__n", &["x"], &["p__x2"]));
        patch.edit(
            GraphId::Main,
            GraphEdit::RedirectReads {
                from: "x".into(),
                to: "p__x2".into(),
            },
        );
        patch.edit(
            GraphId::Main,
            GraphEdit::RenameProducedOutput {
                from: "z".into(),
                to: "p__z0".into(),
            },
        );
        patch.add_node(GraphId::Main, node("p__z", &["p__z0"], &["z"]));
        patch.add_node(GraphId::Initialization(0), node("p__i", &[], &["p__zero"]));
        patch.binding_edits.push(BindingEdit::SetUpdate {
            info: 0,
            key: "w".into(),
            value: "p__w2".into(),
        });
        patch.binding_edits.push(BindingEdit::SetUpdate {
            info: 0,
            key: "p__s".into(),
            value: "p__s2".into(),
        });
        patch.opsets.push(("p.domain".into(), 1));
        let mut model = original.clone();
        let undo = apply(&mut model, patch).unwrap();
        crate::graph::patch::set_metadata(&mut model, vec![("meta.k".into(), "3".into())]);
        assert_ne!(model, original);
        revert(&mut model, &undo, "p__", "meta.");
        assert_eq!(model, original);
    }
}
