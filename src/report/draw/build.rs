//! What to draw, from a report: the wiring each rewritten graph records (`GraphLookahead`), or
//! for an input not rewritten what a rewrite would wrap.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{
    Cluster, Drawing, Edge, EdgeKind, Kind, Node, SHOWN_OPTIMIZER_NODES, SHOWN_PARAMETERS,
    printable, shown,
};
use crate::error::{Error, Result};
use crate::formats::Format;
use crate::report::wiring::{GraphLookahead, WiredParameter};
use crate::report::{AveragingReport, GraphReport, NodeRef, ParameterReport, Report};

mod not_rewritten;

use not_rewritten::not_rewritten;

/// Generated identifiers, so that no name of the input ever becomes one.
#[derive(Default)]
struct Ids {
    nodes: usize,
    clusters: usize,
}

impl Ids {
    fn node(&mut self, kind: Kind, lines: Vec<String>) -> Node {
        self.nodes += 1;
        Node {
            id: format!("n{}", self.nodes - 1),
            kind,
            lines,
        }
    }

    fn cluster(&mut self, label: Vec<String>) -> Cluster {
        self.clusters += 1;
        Cluster {
            id: format!("c{}", self.clusters - 1),
            label,
            nodes: Vec::new(),
            clusters: Vec::new(),
        }
    }
}

fn edge(from: &Node, to: &Node, kind: EdgeKind, label: Option<String>) -> Edge {
    Edge {
        from: from.id.clone(),
        to: to.id.clone(),
        label,
        kind,
    }
}

pub(super) fn drawing(report: &Report) -> Result<Drawing> {
    let path = PathBuf::from(&report.input);
    if report.graphs.is_empty() {
        let reason = if report.format == Format::OrtCheckpoint.id() {
            "an ONNX Runtime checkpoint holds no graphs; draw the artifacts directory it belongs to"
        } else {
            "the input has no graphs"
        };
        return Err(Error::NothingToDraw {
            path,
            reason: reason.into(),
        });
    }
    let input_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| report.input.clone());
    let mut d = Drawing::default();
    let mut ids = Ids::default();
    let optimizer = report
        .optimizer
        .as_deref()
        .unwrap_or("no recognised optimizer");
    if report.graphs.iter().any(|g| g.lookahead.is_some()) {
        rewritten(report, &mut d, &mut ids);
        if let Some(a) = &report.averaging {
            d.title.push(format!(
                "{} around {}",
                shown(&a.description),
                shown(optimizer)
            ));
        }
        if let Some(r) = &report.rewrite {
            // A training_info model has no eval graph: its mode is its format.
            let mut how = if r.mode == report.format {
                report.format.clone()
            } else {
                format!(
                    "{}, {}, evaluates at the {} weights",
                    report.format, r.mode, r.eval_weights
                )
            };
            if r.inner_state != "keep" {
                how.push_str(&format!(", inner state: {} at a sync", r.inner_state));
            }
            d.title.push(how);
        }
    } else if report.lookahead.is_some() {
        d.title.push("Lookahead rewrite without a record".into());
        let by = report.rewritten_by.as_deref().unwrap_or("?");
        d.nodes.push(ids.node(
            Kind::Note,
            vec![
                format!("rewritten by onnx-lookahead {}", shown(by)),
                "but no record of the rewrite to draw from".into(),
            ],
        ));
    } else {
        d.title
            .push("No Lookahead rewrite: what a rewrite would wrap".into());
        d.title
            .push(format!("{}, {}", report.format, shown(optimizer)));
        not_rewritten(report, &mut d, &mut ids);
    }
    d.title.push(shown(&input_name));
    Ok(d)
}

fn parameter_lines(name: &str, p: Option<&ParameterReport>) -> Vec<String> {
    let mut lines = vec![shown(name)];
    if let Some(p) = p {
        let dims: Vec<String> = p.shape.iter().map(|d| d.to_string()).collect();
        lines.push(format!("{} [{}]", shown(&p.data_type), dims.join(", ")));
    }
    lines
}

/// "Add 6, Mul 6, Sub 6": op types of `nodes`, counted.
fn op_counts<'n>(nodes: impl Iterator<Item = &'n NodeRef>) -> (usize, String) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for n in nodes {
        *counts.entry(n.op_type.as_str()).or_default() += 1;
    }
    let total = counts.values().sum();
    let list: Vec<String> = counts
        .iter()
        .map(|(op, n)| format!("{} {n}", shown(op)))
        .collect();
    (total, list.join(", "))
}

/// One box for optimizer update nodes, the first few listed.
fn optimizer_node(ids: &mut Ids, heading: String, nodes: &[&NodeRef]) -> Node {
    let mut lines = vec![heading];
    for n in nodes.iter().take(SHOWN_OPTIMIZER_NODES) {
        lines.push(format!("{} {}", shown(&n.op_type), shown(&n.name)));
    }
    if nodes.len() > SHOWN_OPTIMIZER_NODES {
        lines.push(format!(
            "+ {} more nodes",
            nodes.len() - SHOWN_OPTIMIZER_NODES
        ));
    }
    ids.node(Kind::Optimizer, lines)
}

fn rewritten(report: &Report, d: &mut Drawing, ids: &mut Ids) {
    let mut sync_ifs = Vec::new();
    for g in &report.graphs {
        if let Some(w) = &g.lookahead {
            let (cluster, if_node) = wired_graph(report, g, w, ids, &mut d.edges);
            if w.role == "sync" {
                sync_ifs.push(if_node);
            }
            d.clusters.push(cluster);
        }
    }
    // Optimizer nodes of graphs the rewrite left alone (ORT's optimizer model): one box, tied
    // to the sync it works with.
    let optimizer = report.optimizer.as_deref().unwrap_or("optimizer");
    for g in report.graphs.iter().filter(|g| g.lookahead.is_none()) {
        let nodes = optimizer_nodes_in(report, &g.graph);
        if nodes.is_empty() {
            continue;
        }
        // Patched only by --inner-state reset (ORT AdamW): its own If zeroes the moments.
        let patched = report.injected_nodes.iter().any(|n| n.graph == g.graph);
        let state = if patched { "patched" } else { "untouched" };
        let mut node = optimizer_node(
            ids,
            format!("{}: {} ({state})", shown(&g.graph), shown(optimizer)),
            &nodes,
        );
        node.lines.push("steps the fast weights in place".into());
        if patched {
            node.lines
                .push("after the step before each sync: If zeroes the moments in place".into());
            node.lines
                .push("AdamW's step restarts at 1 after each reset".into());
        }
        let when = report.averaging.as_ref().map_or_else(String::new, |a| {
            if a.first_update == a.period {
                format!("a sync every {} steps", a.period)
            } else {
                format!(
                    "synced after step {}, then every {}",
                    a.first_update, a.period
                )
            }
        });
        for if_node in &sync_ifs {
            d.edges
                .push(edge(&node, if_node, EdgeKind::Loose, Some(when.clone())));
        }
        d.nodes.push(node);
    }
    let plain: Vec<&ParameterReport> = report
        .parameters
        .iter()
        .filter(|p| p.trainable && !p.lookahead)
        .collect();
    if !plain.is_empty() {
        let mut lines = vec![format!(
            "{} without Lookahead (plain {})",
            count(plain.len(), "trainable parameter"),
            shown(optimizer)
        )];
        lines.extend(plain.iter().take(3).map(|p| shown(&p.name)));
        if plain.len() > 3 {
            lines.push(format!("+ {} more", plain.len() - 3));
        }
        d.nodes.push(ids.node(Kind::Note, lines));
    }
}

/// One rewritten graph: its counter, the scalar step logic, the If, the parameter groups.
/// Returns the cluster and its If node.
fn wired_graph(
    report: &Report,
    g: &GraphReport,
    w: &GraphLookahead,
    ids: &mut Ids,
    edges: &mut Vec<Edge>,
) -> (Cluster, Node) {
    let (first, period) = report
        .averaging
        .as_ref()
        .map_or((0, 0), |a| (a.first_update, a.period));
    let training_info = report
        .rewrite
        .as_ref()
        .is_some_and(|r| r.mode == "training-info");
    let eval = w.role == "eval";
    let readers: usize = w.parameters.iter().map(|p| p.readers).sum();
    let mut summary = format!("{} wired", count(w.parameters.len(), "parameter"));
    if readers > 0 {
        summary.push_str(&format!(", {} redirected", count(readers, "reader")));
    }
    let role = if eval {
        "evaluation: reads the weights of the cycle's position".to_string()
    } else if first == period {
        format!("training: syncs every {period} steps")
    } else {
        format!("training: syncs after step {first}, then every {period}")
    };
    let mut cluster = ids.cluster(vec![format!("{} ({role})", shown(&g.graph)), summary]);

    // Created in reading order, so the generated ids follow the picture.
    let counter = w
        .counter
        .as_ref()
        .map(|c| ids.node(Kind::Counter, vec!["step counter".into(), shown(c)]));
    let step_lines = match (eval, training_info) {
        (true, _) => vec![format!("at_sync = (step == {first})")],
        (false, true) if first == period => vec![
            "step ← step + 1".into(),
            format!("sync = (step mod {period} == 0)"),
        ],
        (false, true) => vec![
            "step ← step + 1".into(),
            format!("sync = step ≥ {first} and (step − {first}) mod {period} == 0"),
        ],
        (false, false) => vec![
            format!("sync_now = lazy_reset_grad and step == {first}"),
            format!(
                "step ← step + 1 per optimizer step, {} after a sync",
                first as i128 - period as i128 + 1
            ),
        ],
    };
    let step = ids.node(Kind::Step, step_lines);
    let if_node = ids.node(Kind::If, if_lines(report, g, w, training_info));
    if let Some(node) = counter {
        let kind = if eval {
            EdgeKind::Flow
        } else {
            EdgeKind::InPlace
        };
        edges.push(edge(&node, &step, kind, None));
        cluster.nodes.push(node);
    }
    cluster.nodes.push(step.clone());
    cluster.nodes.push(if_node.clone());
    edges.push(edge(
        &step,
        &if_node,
        EdgeKind::Flow,
        Some("condition".into()),
    ));
    let nodes: Vec<&NodeRef> = report
        .optimizer_nodes
        .iter()
        .filter(|n| n.graph == g.graph)
        .collect();
    if !nodes.is_empty() {
        let optimizer = report.optimizer.as_deref().unwrap_or("optimizer");
        let node = optimizer_node(ids, format!("{} update", shown(optimizer)), &nodes);
        edges.push(edge(
            &node,
            &if_node,
            EdgeKind::Flow,
            Some("new fast weights".into()),
        ));
        cluster.nodes.push(node);
    }
    for (i, p) in w.parameters.iter().take(SHOWN_PARAMETERS).enumerate() {
        // Edge labels on the first group only: the others are wired the same.
        let group = parameter_group(report, p, &if_node, eval, i == 0, ids, edges);
        cluster.clusters.push(group);
    }
    if w.parameters.len() > SHOWN_PARAMETERS {
        let rest = &w.parameters[SHOWN_PARAMETERS..];
        let state: usize = rest.iter().map(|p| p.state.len()).sum();
        let mut lines = vec![
            format!("+ {} more parameters", rest.len()),
            format!("wired the same ({state} state tensors)"),
        ];
        let readers: usize = rest.iter().map(|p| p.readers).sum();
        if readers > 0 {
            lines.push(format!(
                "{} redirected to their aliases",
                count(readers, "reader")
            ));
        }
        if rest.iter().any(|p| p.update_binding.is_some()) {
            lines.push("update bindings redirected to the If".into());
        }
        let more = ids.node(Kind::More, lines);
        let kind = if eval {
            EdgeKind::ReadBy
        } else {
            EdgeKind::InPlace
        };
        edges.push(edge(&if_node, &more, kind, None));
        cluster.nodes.push(more);
    }
    (cluster, if_node)
}

fn if_lines(
    report: &Report,
    g: &GraphReport,
    w: &GraphLookahead,
    training_info: bool,
) -> Vec<String> {
    let name = w.if_node.as_deref().unwrap_or("(no If found)");
    let mut lines = vec![format!("If {}", shown(name))];
    let rewrite = report.rewrite.as_ref();
    let update: &[String] = report.averaging.as_ref().map_or(&[], |a| &a.update);
    if w.role == "eval" {
        let weights = rewrite
            .map(|r| r.eval_weights.as_str())
            .unwrap_or("lookahead");
        lines.push("then (a sync is pending): the weights after it".into());
        lines.push(format!("else: the {} weights", shown(weights)));
    } else {
        for (i, line) in update.iter().enumerate() {
            let then = if i == 0 { "then: " } else { "" };
            lines.push(format!("{then}{}", shown(line)));
        }
        // ORT artifacts reset the inner state in the optimizer model, drawn on its own.
        if let Some(r) = rewrite.filter(|r| r.inner_state != "keep" && training_info) {
            lines.push(format!("optimizer state: {}", shown(&r.inner_state)));
        }
        lines.push(if training_info {
            "else: weights and state passed on".into()
        } else {
            "else: nothing (written in place at a sync)".into()
        });
    }
    if let Some(if_name) = &w.if_node {
        for branch in ["then_branch", "else_branch"] {
            let label = format!("{}/{}/{branch}", g.graph, if_name);
            let nested = format!("{label}/");
            let (total, list) = op_counts(
                report
                    .injected_nodes
                    .iter()
                    .filter(|n| n.graph == label || n.graph.starts_with(&nested)),
            );
            if total > 0 {
                lines.push(format!(
                    "{}: {} ({list})",
                    &branch[..4],
                    count(total, "node")
                ));
            }
        }
    }
    lines
}

/// One parameter: the weight, its state, where its readers went; tied to the If.
fn parameter_group(
    report: &Report,
    p: &WiredParameter,
    if_node: &Node,
    eval: bool,
    labelled: bool,
    ids: &mut Ids,
    edges: &mut Vec<Edge>,
) -> Cluster {
    let label = |text: &str| labelled.then(|| text.to_string());
    let averaging = report.averaging.as_ref();
    let roles: &[String] = averaging.map_or(&[], |a| &a.state_roles);
    let moves_weights = averaging.is_none_or(|a| a.moves_weights);
    let mut group = ids.cluster(vec![shown(&p.name)]);
    let info = report.parameters.iter().find(|r| r.name == p.name);
    let weight = ids.node(Kind::Parameter, parameter_lines(&p.name, info));
    for (i, s) in p.state.iter().enumerate() {
        let role = match roles.get(i) {
            Some(role) => format!("{role} weight"),
            None => "optimizer-state cache".into(),
        };
        let node = ids.node(Kind::State, vec![role, shown(s)]);
        let (kind, text) = match (eval, roles.get(i)) {
            (true, _) => (EdgeKind::ReadBy, None),
            (false, Some(role)) => (
                EdgeKind::InPlace,
                averaging
                    .and_then(|a| update_of(a, role))
                    .and_then(|line| label(&shown(line))),
            ),
            (false, None) => (EdgeKind::InPlace, None),
        };
        edges.push(edge(if_node, &node, kind, text));
        group.nodes.push(node);
    }
    if let Some(alias) = &p.alias {
        let verb = if eval {
            "read this view"
        } else {
            "now read this"
        };
        let node = ids.node(
            Kind::Redirect,
            vec![
                shown(alias),
                format!(
                    "{} of {} {verb}",
                    count(p.readers, "reader"),
                    shown(&p.name)
                ),
            ],
        );
        if eval {
            edges.push(edge(if_node, &weight, EdgeKind::ReadBy, None));
            edges.push(edge(if_node, &node, EdgeKind::Flow, label("view")));
            // Keeps the view right of its weight (a row per parameter, not a column).
            edges.push(edge(&weight, &node, EdgeKind::Layout, None));
        } else if moves_weights {
            let text = averaging
                .and_then(|a| update_of(a, "fast"))
                .map_or_else(|| "fast ← slow".to_string(), shown);
            edges.push(edge(if_node, &weight, EdgeKind::InPlace, label(&text)));
        } else {
            edges.push(edge(if_node, &weight, EdgeKind::ReadBy, label("reads")));
        }
        if !eval {
            // The alias is the weight's buffer, readable once the If ran.
            edges.push(edge(
                &weight,
                &node,
                EdgeKind::Flow,
                label("alias after the sync"),
            ));
        }
        group.nodes.push(node);
    } else if let Some(b) = &p.update_binding {
        let mut lines = vec![
            "update_binding".into(),
            format!("{} ← {}", shown(&p.name), shown(&b.value)),
        ];
        if let Some(was) = &b.was {
            lines.push(format!("(was {})", shown(was)));
        }
        let node = ids.node(Kind::Redirect, lines);
        let text = if moves_weights {
            "new fast"
        } else {
            "the weight, unchanged"
        };
        edges.push(edge(if_node, &node, EdgeKind::Flow, label(text)));
        edges.push(edge(&node, &weight, EdgeKind::Flow, None));
        group.nodes.push(node);
    } else {
        let kind = if eval {
            EdgeKind::ReadBy
        } else {
            EdgeKind::InPlace
        };
        edges.push(edge(if_node, &weight, kind, None));
    }
    // Written after its state: dot then stacks the weight above it.
    group.nodes.push(weight);
    group
}

/// A message in lines of about `width` characters, broken at spaces.
fn wrapped(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in printable(text).split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines
}

/// "1 reader", "3 readers".
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The optimizer update nodes the report found in one graph.
fn optimizer_nodes_in<'r>(report: &'r Report, graph: &str) -> Vec<&'r NodeRef> {
    report
        .optimizer_nodes
        .iter()
        .filter(|n| n.graph == graph)
        .collect()
}

/// The update line that assigns `role` ("slow ← ...").
fn update_of<'a>(a: &'a AveragingReport, role: &str) -> Option<&'a str> {
    a.update
        .iter()
        .find(|line| line.starts_with(&format!("{role} ←")))
        .map(String::as_str)
}
