//! The picture of input not rewritten: what a rewrite would wrap.

use super::super::{Drawing, EdgeKind, Kind, SHOWN_PARAMETERS, shown};
use super::{Ids, count, edge, optimizer_node, optimizer_nodes_in, parameter_lines, wrapped};
use crate::report::{ParameterReport, Report};

/// Not rewritten: the optimizer's update nodes per graph and the trainable parameters, each with
/// the slow weight a rewrite would give it.
pub(super) fn not_rewritten(report: &Report, d: &mut Drawing, ids: &mut Ids) {
    let trainable: Vec<&ParameterReport> =
        report.parameters.iter().filter(|p| p.trainable).collect();
    let frozen = report.parameters.len() - trainable.len();
    let optimizer = report.optimizer.as_deref().unwrap_or("optimizer");
    let mut optimizers = Vec::new();
    for g in &report.graphs {
        let nodes = optimizer_nodes_in(report, &g.graph);
        if nodes.is_empty() {
            continue;
        }
        let mut cluster = ids.cluster(vec![shown(&g.graph)]);
        let node = optimizer_node(ids, format!("{} update", shown(optimizer)), &nodes);
        optimizers.push(node.clone());
        cluster.nodes.push(node);
        d.clusters.push(cluster);
    }
    if trainable.is_empty() && optimizers.is_empty() {
        d.nodes.push(ids.node(
            Kind::Note,
            vec![
                "no Lookahead rewrite, and nothing a rewrite would wrap".into(),
                "(no optimizer update, no trainable parameter found)".into(),
            ],
        ));
    } else {
        let mut label = vec![format!(
            "{}: a rewrite gives each a slow weight",
            count(trainable.len(), "trainable parameter")
        )];
        if frozen > 0 {
            label.push(format!("{} not drawn", count(frozen, "frozen parameter")));
        }
        let mut cluster = ids.cluster(label);
        for (i, p) in trainable.iter().take(SHOWN_PARAMETERS).enumerate() {
            let mut lines = parameter_lines(&p.name, Some(p));
            lines.push(format!("→ lookahead__slow__{}", shown(&p.name)));
            let node = ids.node(Kind::Parameter, lines);
            for o in &optimizers {
                let text = (i == 0).then(|| "updates".to_string());
                d.edges.push(edge(o, &node, EdgeKind::Flow, text));
            }
            cluster.nodes.push(node);
        }
        if trainable.len() > SHOWN_PARAMETERS {
            let more = ids.node(
                Kind::More,
                vec![format!(
                    "+ {} more trainable parameters",
                    trainable.len() - SHOWN_PARAMETERS
                )],
            );
            for o in &optimizers {
                d.edges.push(edge(o, &more, EdgeKind::Flow, None));
            }
            cluster.nodes.push(more);
        }
        d.clusters.push(cluster);
    }
    if !report.refusals.is_empty() {
        let mut lines = vec!["rewrite would refuse:".to_string()];
        for r in report.refusals.iter().take(3) {
            // Refusals name the input's path; the title already does.
            let text = r.strip_prefix(&format!("{}: ", report.input)).unwrap_or(r);
            lines.extend(wrapped(text, 64));
        }
        if report.refusals.len() > 3 {
            lines.push(format!("+ {} more", report.refusals.len() - 3));
        }
        d.nodes.push(ids.node(Kind::Note, lines));
    }
}
