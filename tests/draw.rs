//! `inspect --format dot|mermaid` through the binary: snapshots of the pictures of the rewritten
//! fixtures (review tests/snapshots/draw__*.snap to see what each rewrite injects), and what any
//! picture must hold: every wrapped parameter (up to the elision limit) with its slow weight, the
//! counter and the If, and none of the model's own nodes; a model with many parameters elided;
//! input not rewritten drawn as what a rewrite would wrap; a lone checkpoint refused.
//!
//! When Graphviz's `dot` is on PATH every DOT picture is also rendered (`dot -Tsvg`); without it
//! that check is skipped (a line on stderr says so), the rest runs.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::*;
use onnx_lookahead::generated::onnx::{ModelProto, StringStringEntryProto, tensor_proto::DataType};
use onnx_lookahead::graph::build::{self, Node};
use prost::Message;

/// `inspect INPUT --format FORMAT`, expected to succeed.
fn draw(input: &Path, format: &str) -> String {
    let output = tool()
        .args(["inspect", arg(input), "--format", format])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{format} of {input:?}: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    if format == "dot" {
        rendered_by_graphviz(&text);
    }
    text
}

fn rendered_by_graphviz(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let Ok(mut child) = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("dot not on PATH: Graphviz rendering not checked");
        return;
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("writes");
    let output = child.wait_with_output().expect("dot runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "dot -Tsvg failed: {stderr}\n{text}"
    );
    assert!(!stderr.contains("Warning"), "dot warned: {stderr}");
}

/// `fixture` rewritten with default options into `dir/name`.
fn rewritten(dir: &Path, fixture_name: &str, name: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let mut args = vec!["rewrite", fixture_name, "-o", arg(&out)];
    args.extend(extra);
    let input = fixture(fixture_name);
    args[1] = arg(&input);
    run_ok(&args);
    out
}

/// Names of the nodes of every model of `input` (and their subgraphs).
fn node_names(input: &Path) -> BTreeSet<String> {
    let files: Vec<PathBuf> = if input.is_dir() {
        std::fs::read_dir(input)
            .expect("lists")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
            .collect()
    } else {
        vec![input.to_path_buf()]
    };
    let mut names = BTreeSet::new();
    for file in files {
        let model = ModelProto::decode(std::fs::read(file).expect("reads").as_slice()).unwrap();
        let graphs = model.graph.iter().chain(
            model
                .training_info
                .iter()
                .flat_map(|t| t.initialization.iter().chain(t.algorithm.iter())),
        );
        for g in graphs {
            names.extend(g.node.iter().map(|n| n.name().to_string()));
        }
    }
    names
}

/// What every picture of a rewrite holds, and what it leaves out.
fn check_picture(text: &str, original: &Path, rewritten: &Path) {
    let report = onnx_lookahead::inspect(rewritten).unwrap();
    let wrapped: Vec<&str> = report
        .parameters
        .iter()
        .filter(|p| p.lookahead)
        .map(|p| p.name.as_str())
        .collect();
    assert!(!wrapped.is_empty());
    let role = &report.averaging.as_ref().expect("a record").state_roles[0];
    for (i, name) in wrapped.iter().enumerate() {
        if i < onnx_lookahead::report::draw::SHOWN_PARAMETERS {
            assert!(
                text.contains(&format!("lookahead__{role}__{name}")),
                "{name}"
            );
        }
    }
    assert!(text.contains("lookahead__step"), "the counter");
    assert!(text.contains("If lookahead__sync"), "the sync If");
    // Not one of the model's own nodes (the optimizer's are drawn on purpose).
    let optimizer: BTreeSet<&str> = report
        .optimizer_nodes
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    for name in node_names(original) {
        if name.len() >= 4 && !optimizer.contains(name.as_str()) {
            assert!(!text.contains(&name), "model node {name} drawn");
        }
    }
    for op in ["MatMul", "Gemm", "Tanh", "Pow", "ReduceMean"] {
        assert!(!text.contains(op), "{op} drawn");
    }
}

#[test]
fn pictures_of_the_rewritten_fixtures() {
    let dir = tmp();
    for (fixture_name, name) in [
        ("ort_adamw", "ort_adamw"),
        ("ort_sgd", "ort_sgd"),
        ("training_info_sgd.onnx", "training_info_sgd.onnx"),
    ] {
        let out = rewritten(dir.path(), fixture_name, name, &[]);
        for format in ["dot", "mermaid"] {
            let text = draw(&out, format);
            check_picture(&text, &fixture(fixture_name), &out);
            let snapshot = format!("{}_{format}", name.trim_end_matches(".onnx"));
            insta::assert_snapshot!(snapshot, text);
        }
    }
}

#[test]
fn pictures_of_other_rewrite_options() {
    let dir = tmp();
    for (fixture_name, name, extra) in [
        ("ort_sgd", "parallel_safe", &["--parallel-safe"][..]),
        ("ort_adamw", "subset", &["--include", "W*"][..]),
        ("training_info_sgd.onnx", "alpha_one.onnx", &["-a", "1"][..]),
        ("ort_adamw", "reset", &["--inner-state", "reset"][..]),
        (
            "ort_sgd",
            "ema",
            &["--scheme", "ema", "--decay", "0.9", "--every", "2"][..],
        ),
        (
            "training_info_sgd.onnx",
            "swa.onnx",
            &["--scheme", "swa", "--swa-start", "4"][..],
        ),
    ] {
        let out = rewritten(dir.path(), fixture_name, name, extra);
        for format in ["dot", "mermaid"] {
            let text = draw(&out, format);
            check_picture(&text, &fixture(fixture_name), &out);
        }
        let text = draw(&out, "dot");
        match name {
            "parallel_safe" => assert!(text.contains("reshape"), "{text}"),
            "subset" => {
                assert!(
                    text.contains("3 trainable parameters without Lookahead"),
                    "{text}"
                );
                assert!(!text.contains("lookahead__slow__b1"), "{text}");
            }
            "reset" => {
                assert!(text.contains("AdamW (patched)"), "{text}");
                assert!(text.contains("If zeroes the moments in place"), "{text}");
                assert!(!text.contains("(untouched)"), "{text}");
            }
            // Another scheme: its settings, its update, its state; the weights are only read.
            "ema" => {
                for want in [
                    "EMA decay=0.9 every=2 around SGD",
                    "evaluates at the averaged weights",
                    "ema ← ema + (1 − D)·(weight − ema), D = 0.9",
                    "ema weight",
                    "lookahead__ema__W1",
                    "syncs every 2 steps",
                ] {
                    assert!(text.contains(want), "{want}: {text}");
                }
                assert!(!text.contains("fast ← slow"), "{text}");
                assert!(!text.contains("slow weight"), "{text}");
            }
            "swa.onnx" => {
                for want in [
                    "SWA start=4 every=1",
                    "samples ← samples + 1",
                    "swa ← swa + (weight − swa) / samples",
                    "swa weight",
                    "sync = step ≥ 4 and (step − 4) mod 1 == 0",
                    "the weight, unchanged",
                ] {
                    assert!(text.contains(want), "{want}: {text}");
                }
            }
            _ => assert!(text.contains("slow ← fast (α = 1)"), "{text}"),
        }
    }
}

/// The training_info fixture with `count` more weights (shape [2], updated like b2).
fn many_weights_model(path: &Path, count: usize) {
    let mut model = training_info_model();
    let graph = model.graph.as_mut().expect("graph");
    let info = &mut model.training_info[0];
    let algorithm = info.algorithm.as_mut().expect("algorithm");
    for i in 0..count {
        let name = format!("extra_weight_{i:03}");
        let updated = format!("{name}_new");
        graph.initializer.push(build::tensor_raw(
            &name,
            DataType::Float,
            &[2],
            Bytes::from(vec![0u8; 8]),
        ));
        algorithm.node.push(
            Node::new("Sub")
                .inputs([name.as_str(), "ti_step_b2"])
                .outputs([updated.as_str()])
                .build(),
        );
        algorithm.output.push(build::value_info(
            &updated,
            DataType::Float as i32,
            Some(&[2]),
        ));
        info.update_binding.push(StringStringEntryProto {
            key: Some(name),
            value: Some(updated),
        });
    }
    save_model(&model, path);
}

#[test]
fn a_model_with_many_parameters_is_elided() {
    let dir = tmp();
    let input = dir.path().join("many.onnx");
    many_weights_model(&input, 116);
    let out = dir.path().join("many_lookahead.onnx");
    run_ok(&["rewrite", arg(&input), "-o", arg(&out)]);
    for format in ["dot", "mermaid"] {
        let text = draw(&out, format);
        check_picture(&text, &input, &out);
        assert!(text.contains("+ 108 more parameters"), "{text}");
        assert!(text.contains("lookahead__slow__extra_weight_007"), "{text}");
        assert!(!text.contains("extra_weight_008"), "elided: {text}");
        assert!(!text.contains("extra_weight_115"), "elided: {text}");
        // 12 groups and a summary: a 120-parameter model drawn in full would be ~700 lines.
        assert!(text.lines().count() < 160, "{} lines", text.lines().count());
    }
    // Not rewritten: the trainable parameters a rewrite would wrap, elided the same way.
    let text = draw(&input, "mermaid");
    assert!(text.contains("No Lookahead rewrite"), "{text}");
    assert!(text.contains("+ 108 more trainable parameters"), "{text}");
}

#[test]
fn pictures_of_input_not_rewritten() {
    for (input, format) in [
        (fixture("ort_sgd"), "dot"),
        (fixture("training_info_sgd.onnx"), "mermaid"),
    ] {
        let text = draw(&input, format);
        assert!(
            text.contains("No Lookahead rewrite: what a rewrite would wrap"),
            "{text}"
        );
        assert!(text.contains("→ lookahead__slow__W1"), "{text}");
        assert!(!text.contains("If "), "{text}");
        let snapshot = format!(
            "not_rewritten_{}_{format}",
            input.file_stem().unwrap().to_string_lossy()
        );
        insta::assert_snapshot!(snapshot, text);
    }
    // Nothing to wrap: a minimal picture saying so.
    let text = draw(&fixture("mlp_inference.onnx"), "dot");
    assert!(text.contains("nothing a rewrite would wrap"), "{text}");
    assert!(text.contains("rewrite would refuse"), "{text}");
}

#[test]
fn a_lone_checkpoint_has_nothing_to_draw() {
    let dir = tmp();
    let out = rewritten(dir.path(), "ort_adamw", "artifacts", &[]);
    for checkpoint in [out.join("checkpoint"), test_data("checkpoint_adamw")] {
        for format in ["dot", "mermaid"] {
            let err = expect_error(&["inspect", arg(&checkpoint), "--format", format], 1);
            assert!(
                err.contains("nothing to draw")
                    && err.contains("checkpoint holds no graphs; draw the artifacts directory"),
                "{err}"
            );
        }
        // The text and JSON reports of a checkpoint still work.
        run_ok(&["inspect", arg(&checkpoint), "--format", "json"]);
    }
}

/// Renames tensor `from` to `to` everywhere in the model (graphs, subgraphs, bindings).
fn rename(model: &mut ModelProto, from: &str, to: &str) {
    use onnx_lookahead::generated::onnx::GraphProto;
    fn in_graph(g: &mut GraphProto, from: &str, to: &str) {
        let fix = |name: &mut String| {
            if name == from {
                *name = to.to_string();
            }
        };
        for t in &mut g.initializer {
            if let Some(n) = t.name.as_mut() {
                fix(n);
            }
        }
        for v in g.input.iter_mut().chain(g.output.iter_mut()) {
            if let Some(n) = v.name.as_mut() {
                fix(n);
            }
        }
        for node in &mut g.node {
            node.input
                .iter_mut()
                .chain(node.output.iter_mut())
                .for_each(fix);
        }
    }
    let graphs = model.graph.iter_mut().chain(
        model
            .training_info
            .iter_mut()
            .flat_map(|t| t.initialization.iter_mut().chain(t.algorithm.iter_mut())),
    );
    for g in graphs {
        in_graph(g, from, to);
    }
    for t in &mut model.training_info {
        for b in t
            .update_binding
            .iter_mut()
            .chain(t.initialization_binding.iter_mut())
        {
            if b.key.as_deref() == Some(from) {
                b.key = Some(to.to_string());
            }
        }
    }
}

#[test]
fn hostile_names_are_escaped_end_to_end() {
    let dir = tmp();
    let hostile = "W\"1\\ <b>{x}|y;#z`%\nend";
    let mut model = training_info_model();
    rename(&mut model, "W1", hostile);
    let input = dir.path().join("hostile.onnx");
    save_model(&model, &input);
    let out = dir.path().join("hostile_lookahead.onnx");
    run_ok(&["rewrite", arg(&input), "-o", arg(&out)]);
    let dot = draw(&out, "dot");
    // Quotes and backslashes escaped, the newline shown as \n (so the label line holds).
    assert!(dot.contains(r#"W\"1\\ <b>{x}|y;#z`%\\nend"#), "{dot}");
    let mermaid = draw(&out, "mermaid");
    assert!(
        mermaid.contains("W#34;1#92; #60;b#62;#123;x#125;#124;y#59;#35;z#96;#37;#92;nend"),
        "{mermaid}"
    );
    for text in [&dot, &mermaid] {
        assert!(
            !text.contains(hostile) && !text.contains("\nend\""),
            "{text}"
        );
    }
}
