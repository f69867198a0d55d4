//! The drawing as a mermaid flowchart, left to right. Identifiers are the generated ones; labels
//! are quoted strings in which every character mermaid could read as syntax or markup (`"`, `#`,
//! `<`, `>`, `&`, `{`, `}`, `|`, `;`, `\`, backtick, `%`) is an entity code (`#34;`), and lines
//! are joined with `<br>`.

use std::fmt::Write;

use super::{Cluster, Drawing, EdgeKind, Kind, Node};

/// Text for inside a mermaid quoted label.
pub fn escaped(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        let plain = c.is_alphanumeric()
            || " _-.,:/()[]+=*'!?@~^$".contains(c)
            || (!c.is_ascii() && !c.is_control());
        if plain {
            s.push(c);
        } else {
            let _ = write!(s, "#{};", u32::from(c));
        }
    }
    s
}

fn label(lines: &[String]) -> String {
    let escaped: Vec<String> = lines.iter().map(|l| escaped(l)).collect();
    format!("\"{}\"", escaped.join("<br>"))
}

fn class(kind: Kind) -> &'static str {
    match kind {
        Kind::Parameter => "param",
        Kind::State => "state",
        Kind::Counter => "counter",
        Kind::Step => "step",
        Kind::If => "sync",
        Kind::Redirect => "redirect",
        Kind::Optimizer => "optimizer",
        Kind::More => "more",
        Kind::Note => "note",
    }
}

const CLASSES: [&str; 10] = [
    "param fill:#dbe9f6,stroke:#5b7fa6",
    "state fill:#fde9c9,stroke:#b8874a",
    "counter fill:#e4e4e4,stroke:#777",
    "step fill:#f2f2f2,stroke:#999",
    "sync fill:#d5efd5,stroke:#3c8a3c,stroke-width:2px",
    "redirect fill:#f7f7f7,stroke:#999",
    "optimizer fill:#ececec,stroke:#777",
    "more fill:#fff,stroke:#999,stroke-dasharray:4 3",
    "note fill:#fff8c4,stroke:#b3a94a",
    "title fill:none,stroke:none",
];

fn node(s: &mut String, n: &Node, indent: &str) {
    let text = label(&n.lines);
    let shape = match n.kind {
        Kind::Counter => format!("[({text})]"),
        Kind::If => format!("{{{{{text}}}}}"),
        Kind::Redirect | Kind::Note => format!(">{text}]"),
        Kind::Optimizer => format!("[[{text}]]"),
        Kind::Parameter | Kind::State | Kind::More => format!("({text})"),
        Kind::Step => format!("[{text}]"),
    };
    let _ = writeln!(s, "{indent}{}{shape}:::{}", n.id, class(n.kind));
}

fn cluster(s: &mut String, c: &Cluster, depth: usize) {
    let indent = "  ".repeat(depth);
    let _ = writeln!(s, "{indent}subgraph {}[{}]", c.id, label(&c.label));
    let inner = format!("{indent}  ");
    for n in &c.nodes {
        node(s, n, &inner);
    }
    for sub in &c.clusters {
        cluster(s, sub, depth + 1);
    }
    let _ = writeln!(s, "{indent}end");
}

pub fn render(d: &Drawing) -> String {
    let mut s = String::from("flowchart LR\n");
    if !d.title.is_empty() {
        let _ = writeln!(s, "  t0[{}]:::title", label(&d.title));
    }
    for n in &d.nodes {
        node(&mut s, n, "  ");
    }
    for c in &d.clusters {
        cluster(&mut s, c, 1);
    }
    for e in &d.edges {
        let text = e
            .label
            .as_ref()
            .map(|l| format!("|\"{}\"|", escaped(l)))
            .unwrap_or_default();
        let line = match e.kind {
            EdgeKind::Flow => format!("{} -->{text} {}", e.from, e.to),
            EdgeKind::InPlace => format!("{} <-->{text} {}", e.from, e.to),
            EdgeKind::ReadBy => format!("{} -->{text} {}", e.to, e.from),
            EdgeKind::Loose => format!("{} -.->{text} {}", e.from, e.to),
            EdgeKind::Layout => format!("{} ~~~ {}", e.from, e.to),
        };
        let _ = writeln!(s, "  {line}");
    }
    for class in CLASSES {
        let _ = writeln!(s, "  classDef {class}");
    }
    s
}
