//! A picture of the rewrite (`inspect --format dot|mermaid`): per graph the rewrite wired, the
//! step counter, the If and what it computes, and per wrapped parameter its slow weight and where
//! its readers went; never the model's own nodes. An input that was not rewritten shows what a
//! rewrite would wrap (the optimizer's nodes and the trainable parameters).
//!
//! What to draw is decided once, from the `Report` (`build.rs` makes a `Drawing`); `dot.rs` and
//! `mermaid.rs` only write it in their syntax, escaping every name.

mod build;
mod dot;
mod mermaid;

use super::Report;
use crate::error::Result;

/// Parameter groups drawn per graph; the rest are one "+ N more parameters" node, so a model
/// with hundreds of parameters still gives a picture a person can read.
pub const SHOWN_PARAMETERS: usize = 12;
/// Optimizer nodes listed in one optimizer box.
const SHOWN_OPTIMIZER_NODES: usize = 4;
/// Longer names are cut in the middle: the picture stays legible; the JSON has the full names.
const NAME_CHARS: usize = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrawFormat {
    /// Graphviz DOT (`dot -Tpng`).
    Dot,
    /// A mermaid flowchart (renders in GitHub markdown).
    Mermaid,
}

/// The picture, independent of the syntax it is written in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Drawing {
    pub title: Vec<String>,
    pub nodes: Vec<Node>,
    pub clusters: Vec<Cluster>,
    pub edges: Vec<Edge>,
}

/// A box around nodes: a graph of the input, or one parameter's group.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Generated (`c0`, `c1`, ...): names never become identifiers.
    pub id: String,
    pub label: Vec<String>,
    pub nodes: Vec<Node>,
    pub clusters: Vec<Cluster>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Generated (`n0`, `n1`, ...).
    pub id: String,
    pub kind: Kind,
    /// The label, one entry per line, names already made printable (`shown`).
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A (fast) weight.
    Parameter,
    /// A slow weight or other state the rewrite added.
    State,
    Counter,
    /// The scalar bookkeeping around the counter (the sync test, the increment).
    Step,
    /// The injected If.
    If,
    /// Where the parameter's readers went (an alias, an update binding).
    Redirect,
    Optimizer,
    /// "+ N more parameters".
    More,
    Note,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub label: Option<String>,
    pub kind: EdgeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    /// Data flows from `from` to `to`.
    Flow,
    /// `to` is read and written in place by `from`.
    InPlace,
    /// Data flows from `to` into `from`, drawn with `from` first (so the If stays left of the
    /// parameters it reads).
    ReadBy,
    /// A relation, not a tensor (the untouched optimizer and the If).
    Loose,
    /// Not drawn: only keeps `to` beside `from`.
    Layout,
}

impl Drawing {
    /// What to draw for this report; a lone checkpoint has no graphs and is refused.
    pub fn of(report: &Report) -> Result<Drawing> {
        build::drawing(report)
    }

    /// Every node, clusters included, in drawing order.
    pub fn all_nodes(&self) -> Vec<&Node> {
        fn walk<'d>(clusters: &'d [Cluster], into: &mut Vec<&'d Node>) {
            for c in clusters {
                into.extend(&c.nodes);
                walk(&c.clusters, into);
            }
        }
        let mut nodes: Vec<&Node> = self.nodes.iter().collect();
        walk(&self.clusters, &mut nodes);
        nodes
    }
}

/// The report drawn in `format`.
pub fn render(report: &Report, format: DrawFormat) -> Result<String> {
    let drawing = Drawing::of(report)?;
    Ok(match format {
        DrawFormat::Dot => dot::render(&drawing),
        DrawFormat::Mermaid => mermaid::render(&drawing),
    })
}

/// A name as a label shows it: control characters escaped (a newline in a name cannot split a
/// line of the picture) and very long names cut in the middle.
pub fn shown(name: &str) -> String {
    let printable = printable(name);
    let count = printable.chars().count();
    if count <= NAME_CHARS {
        return printable;
    }
    let keep = (NAME_CHARS - 1) / 2;
    let head: String = printable.chars().take(keep).collect();
    let tail: String = printable.chars().skip(count - keep).collect();
    format!("{head}…{tail}")
}

/// Text with its control characters escaped (`\n`, `\u{7}`).
pub fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

#[cfg(test)]
mod tests;
