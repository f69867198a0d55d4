//! The text rendering of a report: short for any model (graphs, parameters up to a screenful,
//! injected nodes counted per op type, the state and its bytes); `verbose` lists everything.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::Report;
use crate::io::human_bytes;

/// Parameter rows shown before the table is cut short.
const SCREENFUL: usize = 20;

impl Report {
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The short text report.
    pub fn to_text(&self) -> String {
        self.render(false)
    }

    /// The text report with every parameter, injected node and state tensor listed.
    pub fn to_text_verbose(&self) -> String {
        self.render(true)
    }

    fn render(&self, verbose: bool) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "input:     {}", self.input);
        let _ = writeln!(s, "format:    {}", self.format);
        let _ = writeln!(
            s,
            "optimizer: {}",
            self.optimizer.as_deref().unwrap_or("(none recognised)")
        );
        self.render_lookahead(&mut s);
        if !self.graphs.is_empty() {
            let _ = writeln!(s, "\ngraphs:");
        }
        for g in &self.graphs {
            let opsets: Vec<String> = g
                .opsets
                .iter()
                .map(|o| format!("{} {}", o.domain, o.version))
                .collect();
            let _ = writeln!(
                s,
                "  {:<24} {:>6} nodes {:>4} inputs {:>4} outputs  ir {}  opsets: {}",
                g.graph,
                g.nodes,
                g.inputs,
                g.outputs,
                g.ir_version,
                opsets.join(", ")
            );
        }
        if !self.graphs.is_empty() {
            let _ = writeln!(s, "\noptimizer update nodes:");
            if self.optimizer_nodes.is_empty() {
                let _ = writeln!(s, "  (none)");
            }
            for n in &self.optimizer_nodes {
                let _ = writeln!(s, "  {:<24} {} [{}]", n.graph, n.op_type, n.name);
            }
        }
        self.render_parameters(&mut s, verbose);
        self.render_checkpoint(&mut s);
        self.render_injected(&mut s, verbose);
        if !self.refusals.is_empty() {
            let _ = writeln!(s, "\nrewrite would refuse:");
            for r in &self.refusals {
                let _ = writeln!(s, "  {r}");
            }
        }
        self.render_compatibility(&mut s);
        s
    }

    fn render_lookahead(&self, s: &mut String) {
        let by = self.rewritten_by.as_deref().unwrap_or("?");
        let mut how = format!("rewritten by onnx-lookahead {by}");
        if let Some(r) = &self.rewrite {
            let _ = write!(
                how,
                ", {}, evaluates at the {} weights",
                r.mode, r.eval_weights
            );
            if r.inner_state != "keep" {
                let _ = write!(how, ", inner optimizer state: {} at a sync", r.inner_state);
            }
        }
        let Some(l) = &self.lookahead else {
            match &self.averaging {
                Some(a) => render_averaging(s, a, &how),
                None => {
                    let _ = writeln!(s, "lookahead: not rewritten");
                }
            }
            return;
        };
        let _ = writeln!(s, "lookahead: k={} alpha={} ({how})", l.k, l.alpha);
        if let Some(position) = l.position {
            let pending = if l.sync_pending == Some(true) {
                ": a sync is pending (the next training step applies it)"
            } else {
                ""
            };
            let _ = writeln!(s, "cycle:     {position} of {} steps{pending}", l.k);
        }
    }

    fn render_parameters(&self, s: &mut String, verbose: bool) {
        let trainable = self.parameters.iter().filter(|p| p.trainable).count();
        let wrapped = self.parameters.iter().filter(|p| p.lookahead).count();
        let _ = writeln!(
            s,
            "\nparameters: {} ({trainable} trainable, {wrapped} with {}), {}",
            self.parameters.len(),
            self.averaging
                .as_ref()
                .map_or("Lookahead", |a| a.title.as_str()),
            human_bytes(self.parameter_bytes)
        );
        let shown = if verbose {
            self.parameters.len()
        } else {
            self.parameters.len().min(SCREENFUL)
        };
        if shown == 0 {
            return;
        }
        let width = self.parameters[..shown]
            .iter()
            .map(|p| p.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let _ = writeln!(
            s,
            "  {:<width$}  {:<9}  {:<9}  {:<8}  shape",
            "name", "trainable", "lookahead", "type"
        );
        for p in &self.parameters[..shown] {
            let shape: Vec<String> = p.shape.iter().map(|d| d.to_string()).collect();
            let _ = writeln!(
                s,
                "  {:<width$}  {:<9}  {:<9}  {:<8}  [{}]",
                p.name,
                if p.trainable { "yes" } else { "no" },
                if p.lookahead { "yes" } else { "no" },
                p.data_type,
                shape.join(", ")
            );
        }
        if shown < self.parameters.len() {
            let _ = writeln!(
                s,
                "  ... {} more (--verbose lists all)",
                self.parameters.len() - shown
            );
        }
    }

    fn render_checkpoint(&self, s: &mut String) {
        let Some(c) = &self.checkpoint else {
            return;
        };
        let nominal = if c.nominal {
            ", nominal (names only)"
        } else {
            ""
        };
        let _ = writeln!(s, "\ncheckpoint: format version {}{nominal}", c.version);
        for g in &c.optimizer_groups {
            let states = if g.states.is_empty() {
                "no optimizer state".to_string()
            } else {
                format!("{} on {} parameters", g.states.join(", "), g.parameters)
            };
            let _ = writeln!(
                s,
                "  optimizer group {}: step {}, learning rate {}, {states}",
                g.name, g.step, g.learning_rate
            );
        }
        if !c.properties.is_empty() {
            let shown: Vec<String> = c
                .properties
                .iter()
                .map(|(k, v)| {
                    let v = v.to_string();
                    if v.len() > 40 {
                        format!("{k}=({} characters)", v.len())
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect();
            let _ = writeln!(s, "  properties: {}", shown.join(", "));
        }
        if let Some(data) = &c.external_data {
            let _ = writeln!(s, "  external data: {data}");
        }
    }

    fn render_injected(&self, s: &mut String, verbose: bool) {
        if self.injected_nodes.is_empty() && self.injected_state.is_empty() {
            return;
        }
        let _ = writeln!(s, "\ninjected ({} nodes):", self.injected_nodes.len());
        // Per top-level graph: nodes by op type (subgraph nodes count with their graph).
        let mut per_graph: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
        let mut order: Vec<&str> = Vec::new();
        for n in &self.injected_nodes {
            let graph = n.graph.split('/').next().unwrap_or(&n.graph);
            if !order.contains(&graph) {
                order.push(graph);
            }
            *per_graph
                .entry(graph)
                .or_default()
                .entry(n.op_type.as_str())
                .or_default() += 1;
        }
        for graph in order {
            let ops = &per_graph[graph];
            let total: usize = ops.values().sum();
            let counts: Vec<String> = ops.iter().map(|(op, n)| format!("{op} {n}")).collect();
            let _ = writeln!(s, "  {graph}: {total} nodes ({})", counts.join(", "));
        }
        let share = if self.parameter_bytes > 0 {
            format!(
                ", {:.0}% of the parameters",
                100.0 * self.state_bytes as f64 / self.parameter_bytes as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "  state: {} tensors, {}{share}",
            self.injected_state.len(),
            human_bytes(self.state_bytes)
        );
        if verbose {
            for t in &self.injected_state {
                let _ = writeln!(s, "    {t}");
            }
            let mut current = None;
            for n in &self.injected_nodes {
                if current != Some(&n.graph) {
                    let _ = writeln!(s, "  {}:", n.graph);
                    current = Some(&n.graph);
                }
                let _ = writeln!(s, "    {:<22} {}", n.op_type, n.name);
            }
        }
    }
}

/// Another scheme than Lookahead: its settings, what an update does, where its schedule stands.
fn render_averaging(s: &mut String, a: &super::AveragingReport, how: &str) {
    let _ = writeln!(s, "averaging: {} ({how})", a.description);
    for line in &a.update {
        let _ = writeln!(s, "  update:  {line}");
    }
    match (a.steps_to_update, a.update_pending) {
        (_, Some(true)) => {
            let _ = writeln!(
                s,
                "next:      an update is pending (evaluation sees it; the next training step applies it)"
            );
        }
        (Some(n), _) => {
            let _ = writeln!(s, "next:      update in {n} optimizer step(s)");
        }
        _ => {}
    }
    for (role, value) in &a.shared {
        let _ = writeln!(s, "{:<10} {value}", format!("{role}:"));
    }
}
