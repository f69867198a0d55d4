//! The drawing in Graphviz DOT, left to right. Identifiers are the generated ones; every label is
//! a quoted string with `\` and `"` escaped (no record or HTML labels, so `<>{}|` are plain text).

use std::fmt::Write;

use super::{Cluster, Drawing, EdgeKind, Kind, Node};

/// A DOT quoted string: a backslash would start an escape (`\n`, `\N`, `\"`), so it is doubled.
pub fn quoted(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 2);
    s.push('"');
    for c in text.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            // `printable` escaped control characters already; a stray one still must not end
            // the line.
            '\n' | '\r' => s.push(' '),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// Lines joined with DOT's centred line break, each escaped.
fn label(lines: &[String]) -> String {
    let escaped: Vec<String> = lines
        .iter()
        .map(|l| {
            let q = quoted(l);
            q[1..q.len() - 1].to_string()
        })
        .collect();
    format!("\"{}\"", escaped.join("\\n"))
}

fn style(kind: Kind) -> &'static str {
    match kind {
        Kind::Parameter => r##"shape=box, style="rounded,filled", fillcolor="#dbe9f6""##,
        Kind::State => r##"shape=box, style="rounded,filled", fillcolor="#fde9c9""##,
        Kind::Counter => r##"shape=cylinder, style=filled, fillcolor="#e4e4e4""##,
        Kind::Step => r##"shape=box, style=filled, fillcolor="#f2f2f2""##,
        Kind::If => r##"shape=box, style="filled,bold", fillcolor="#d5efd5", penwidth=2"##,
        Kind::Redirect => r##"shape=note, style=filled, fillcolor="#f7f7f7""##,
        Kind::Optimizer => r##"shape=component, style=filled, fillcolor="#ececec""##,
        Kind::More => r##"shape=box, style="rounded,dashed""##,
        Kind::Note => r##"shape=note, style=filled, fillcolor="#fff8c4""##,
    }
}

fn node(s: &mut String, n: &Node, indent: &str) {
    let _ = writeln!(
        s,
        "{indent}{} [label={}, {}];",
        n.id,
        label(&n.lines),
        style(n.kind)
    );
}

fn cluster(s: &mut String, c: &Cluster, depth: usize) {
    let indent = "  ".repeat(depth);
    let _ = writeln!(s, "{indent}subgraph cluster_{} {{", c.id);
    let _ = writeln!(
        s,
        "{indent}  label={}; style=rounded; color=\"#9a9a9a\";",
        label(&c.label)
    );
    let inner = format!("{indent}  ");
    for n in &c.nodes {
        node(s, n, &inner);
    }
    for sub in c.clusters.iter().rev() {
        cluster(s, sub, depth + 1);
    }
    let _ = writeln!(s, "{indent}}}");
}

pub fn render(d: &Drawing) -> String {
    let mut s = String::new();
    s.push_str("digraph lookahead {\n");
    let _ = writeln!(
        s,
        "  graph [rankdir=LR, label={}, labelloc=t, labeljust=l, fontname=\"Helvetica\", fontsize=12, nodesep=0.12, ranksep=0.35];",
        label(&d.title)
    );
    s.push_str("  node [fontname=\"Helvetica\", fontsize=10];\n");
    s.push_str("  edge [fontname=\"Helvetica\", fontsize=9, color=\"#555555\"];\n");
    // Left to right, dot stacks the first of sibling clusters at the bottom: they are written in
    // reverse, so the parameter groups read top-down in the drawing's order.
    for n in &d.nodes {
        node(&mut s, n, "  ");
    }
    for c in d.clusters.iter().rev() {
        cluster(&mut s, c, 1);
    }
    for e in &d.edges {
        let mut attrs = Vec::new();
        if let Some(text) = &e.label {
            attrs.push(format!("label={}", quoted(text)));
        }
        match e.kind {
            EdgeKind::Flow => {}
            EdgeKind::InPlace => attrs.push("dir=both".into()),
            EdgeKind::ReadBy => attrs.push("dir=back".into()),
            EdgeKind::Loose => attrs.push("style=dashed".into()),
            EdgeKind::Layout => attrs.push("style=invis".into()),
        }
        let attrs = if attrs.is_empty() {
            String::new()
        } else {
            format!(" [{}]", attrs.join(", "))
        };
        let _ = writeln!(s, "  {} -> {}{attrs};", e.from, e.to);
    }
    s.push_str("}\n");
    s
}
