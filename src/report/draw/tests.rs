//! Drawings of hand-made reports: hostile names stay inside their labels, many parameters are
//! elided, and a checkpoint is refused.

use super::*;
use crate::report::wiring::{GraphLookahead, WiredParameter};
use crate::report::{GraphReport, LookaheadReport, NodeRef, ParameterReport, RewriteReport};

const HOSTILE: [&str; 12] = [
    "quote\"d",
    "back\\slash\\",
    "new\nline",
    "cr\rreturn",
    "<b>tag</b>",
    "{curly}|pipe|",
    "semi;colon#hash&amp",
    "end",
    "`tick`%%comment",
    "\\n\\N\\G",
    "]) --> evil[(",
    "subgraph x\nend",
];

fn parameter(name: &str) -> ParameterReport {
    ParameterReport {
        name: name.into(),
        trainable: true,
        lookahead: true,
        data_type: "float".into(),
        shape: vec![2, 3],
        bytes: Some(24),
    }
}

/// A rewritten ORT-like report whose training graph wires `names`.
fn report(names: &[String]) -> Report {
    let wired = names
        .iter()
        .map(|n| WiredParameter {
            name: n.clone(),
            state: vec![format!("lookahead__slow__{n}")],
            alias: Some(format!("lookahead__after_sync__{n}")),
            readers: 2,
            update_binding: None,
        })
        .collect();
    Report {
        format: "ort-artifacts".into(),
        input: "/tmp/in\"put\\dir".into(),
        optimizer: Some("Adam\"W".into()),
        averaging: None,
        lookahead: Some(LookaheadReport {
            k: 5,
            alpha: 0.5,
            position: None,
            sync_pending: None,
        }),
        rewritten_by: Some("0.1.0".into()),
        rewrite: Some(RewriteReport {
            scheme: "lookahead".into(),
            mode: "passthrough".into(),
            eval_weights: "lookahead".into(),
            inner_state: "keep".into(),
        }),
        parameters: names.iter().map(|n| parameter(n)).collect(),
        parameter_bytes: 0,
        optimizer_nodes: vec![NodeRef {
            graph: "optimizer\"model".into(),
            name: "opt\n{node}".into(),
            op_type: "AdamWOptimizer".into(),
        }],
        injected_nodes: Vec::new(),
        injected_state: Vec::new(),
        state_bytes: 0,
        checkpoint: None,
        refusals: Vec::new(),
        compatibility: Vec::new(),
        graphs: vec![
            GraphReport {
                graph: "training\"model|<x>".into(),
                name: "g".into(),
                ir_version: 9,
                opsets: Vec::new(),
                nodes: 1,
                inputs: 1,
                outputs: 1,
                initializers: 0,
                lookahead: Some(GraphLookahead {
                    role: "sync".into(),
                    if_node: Some("lookahead__sync\"\\".into()),
                    counter: Some("lookahead__step\n".into()),
                    parameters: wired,
                }),
            },
            GraphReport {
                graph: "optimizer\"model".into(),
                name: "o".into(),
                ir_version: 9,
                opsets: Vec::new(),
                nodes: 1,
                inputs: 1,
                outputs: 1,
                initializers: 0,
                lookahead: None,
            },
        ],
    }
}

fn hostile() -> Vec<String> {
    HOSTILE.iter().map(|s| s.to_string()).collect()
}

/// Every DOT quoted string closes on its line: outside strings only the generated syntax.
fn check_dot(text: &str) {
    for line in text.lines() {
        let mut in_string = false;
        let mut escaped = false;
        let mut outside = String::new();
        for c in line.chars() {
            match (in_string, escaped, c) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (true, false, '"') => in_string = false,
                (true, false, _) => {}
                (false, _, '"') => in_string = true,
                (false, _, c) => outside.push(c),
            }
        }
        assert!(!in_string, "unterminated string in {line:?}");
        // Outside strings: generated identifiers, keywords and punctuation only.
        assert!(
            outside
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || " _=,;{}[]->.".contains(c)),
            "{outside:?} outside strings in {line:?}"
        );
    }
}

/// A mermaid label without its line breaks and entity codes (`#34;`).
fn without_entities(label: &str) -> String {
    let label = label.replace("<br>", "");
    let mut out = String::new();
    let mut rest = label.as_str();
    while let Some(i) = rest.find('#') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let digits = after.chars().take_while(|c| c.is_ascii_digit()).count();
        assert!(
            digits > 0 && after[digits..].starts_with(';'),
            "bare # in {label:?}"
        );
        rest = &after[digits + 1..];
    }
    out.push_str(rest);
    out
}

/// Renders DOT with Graphviz when `dot` is on PATH (it is not needed to run the tests: without
/// it this check is skipped, and says so).
pub(crate) fn graphviz_accepts(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("dot not on PATH: Graphviz rendering not checked");
        return;
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "dot -Tsvg failed: {stderr}\n{text}"
    );
    assert!(!stderr.contains("Warning"), "dot warned: {stderr}");
}

#[test]
fn hostile_names_stay_inside_dot_labels() {
    let text = render(&report(&hostile()), DrawFormat::Dot).unwrap();
    check_dot(&text);
    graphviz_accepts(&text);
    assert!(text.starts_with("digraph lookahead {\n") && text.ends_with("}\n"));
    // Backslashes doubled, quotes escaped, control characters shown as text.
    assert!(text.contains(r#"quote\"d"#), "{text}");
    assert!(text.contains(r"back\\slash\\"), "{text}");
    assert!(text.contains(r"new\\nline"), "{text}");
    assert!(text.contains(r"\\n\\N\\G"), "{text}");
    // Every line is a statement of the generated syntax.
    for line in text.lines() {
        let t = line.trim_start();
        assert!(
            t.starts_with("digraph")
                || t.starts_with("graph [")
                || t.starts_with("node [")
                || t.starts_with("edge [")
                || t.starts_with("subgraph cluster_c")
                || t.starts_with("label=")
                || t.starts_with('n')
                || t == "}",
            "unexpected line {line:?}"
        );
    }
}

#[test]
fn hostile_names_are_entity_codes_in_mermaid() {
    let text = render(&report(&hostile()), DrawFormat::Mermaid).unwrap();
    for line in text.lines() {
        let t = line.trim_start();
        // Labels are between the first and last quote; nothing between them is a quote.
        if let (Some(a), Some(b)) = (t.find('"'), t.rfind('"')) {
            let inside = without_entities(&t[a + 1..b]);
            for bad in ['"', '<', '>', '{', '}', '|', ';', '\\', '`', '&', '%', '#'] {
                assert!(!inside.contains(bad), "{bad:?} in label of {line:?}");
            }
            assert!(
                !t[..a].contains("evil") && !t[b..].contains("evil"),
                "{line:?}"
            );
        }
        assert!(
            t.starts_with("flowchart LR")
                || t.starts_with("subgraph c")
                || t == "end"
                || t.starts_with("classDef ")
                || t.starts_with('n')
                || t.starts_with("t0["),
            "unexpected line {line:?}"
        );
    }
    assert!(text.contains("quote#34;d"), "{text}");
    assert!(text.contains("#60;b#62;tag#60;/b#62;"), "{text}");
    assert!(text.contains("#123;curly#125;#124;pipe#124;"), "{text}");
}

#[test]
fn many_parameters_are_elided() {
    let names: Vec<String> = (0..120).map(|i| format!("layer{i}.weight")).collect();
    let drawing = Drawing::of(&report(&names)).unwrap();
    let labels: Vec<String> = drawing
        .all_nodes()
        .iter()
        .map(|n| n.lines.join("\n"))
        .collect();
    for name in &names[..SHOWN_PARAMETERS] {
        assert!(
            labels.iter().any(|l| l.starts_with(&format!("{name}\n"))),
            "{name}"
        );
        assert!(
            labels
                .iter()
                .any(|l| l.contains(&format!("lookahead__slow__{name}")))
        );
    }
    for name in &names[SHOWN_PARAMETERS..] {
        assert!(
            !labels.iter().any(|l| l.contains(name.as_str())),
            "{name} drawn"
        );
    }
    let more = drawing
        .all_nodes()
        .into_iter()
        .find(|n| n.kind == Kind::More)
        .expect("a + N more node");
    assert_eq!(more.lines[0], "+ 108 more parameters");
    assert!(
        more.lines
            .iter()
            .any(|l| l == "216 readers redirected to their aliases")
    );
    let nodes = drawing.all_nodes().len();
    assert!(nodes < 60, "{nodes} nodes for 120 parameters");
}

#[test]
fn long_and_control_names_are_shown_printable_and_short() {
    assert_eq!(shown("a\nb"), "a\\nb");
    let long = "x".repeat(200);
    let s = shown(&long);
    assert_eq!(s.chars().count(), 59);
    assert!(s.contains('…'));
}

#[test]
fn a_lone_checkpoint_has_nothing_to_draw() {
    let mut r = report(&hostile());
    r.format = "ort-checkpoint".into();
    r.graphs.clear();
    let err = render(&r, DrawFormat::Mermaid).unwrap_err();
    assert!(matches!(err, crate::Error::NothingToDraw { .. }), "{err}");
    assert!(
        err.to_string().contains("checkpoint holds no graphs"),
        "{err}"
    );
}
