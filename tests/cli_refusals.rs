//! Every kind of input the tool refuses, as one table run through the binary. For each case:
//! one `error:` line naming the problem, the expected exit code, no output and nothing left
//! beside it, the input unchanged; `inspect` refuses it too where it reads what is broken.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use onnx_lookahead::generated::onnx::ModelProto;

/// Builds a case's input inside the given folder and returns its path.
type Setup = Box<dyn Fn(&Path) -> PathBuf>;

struct Case {
    name: &'static str,
    setup: Setup,
    code: i32,
    /// A part of the error line.
    message: &'static str,
    /// Whether `inspect` of the same input fails too (it cannot read it); otherwise it reports
    /// the refusal.
    inspect_fails: bool,
}

fn case(
    name: &'static str,
    code: i32,
    message: &'static str,
    inspect_fails: bool,
    setup: impl Fn(&Path) -> PathBuf + 'static,
) -> Case {
    Case {
        name,
        setup: Box::new(setup),
        code,
        message,
        inspect_fails,
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn pseudo_random(len: u32, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(seed) >> 11) as u8)
        .collect()
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

/// A copy of an artifacts fixture with `damage` applied.
fn damaged(dir: &Path, name: &str, damage: impl Fn(&Path)) -> PathBuf {
    let art = dir.join("art");
    copy_dir(&fixture(name), &art);
    damage(&art);
    art
}

fn cases() -> Vec<Case> {
    let model = fixture_bytes("training_info_sgd.onnx");
    let checkpoint = fixture_bytes("ort_adamw/checkpoint");
    let mut cases = vec![
        case("missing file", 1, "missing.onnx", true, |d| {
            d.join("missing.onnx")
        }),
        case("empty file", 1, "empty", true, |d| {
            write(d, "empty.onnx", b"")
        }),
        case("random bytes", 1, "not a valid ONNX model", true, |d| {
            write(d, "random.onnx", &pseudo_random(4096, 2654435761))
        }),
        case(
            "folder without artifacts",
            1,
            "training_model.onnx",
            true,
            |d| {
                std::fs::create_dir(d.join("empty_folder")).unwrap();
                d.join("empty_folder")
            },
        ),
        case("inference model", 1, "no optimizer", false, |d| {
            std::fs::copy(fixture("mlp_inference.onnx"), d.join("m.onnx")).unwrap();
            d.join("m.onnx")
        }),
        case("reserved name prefix", 1, "name clash", false, |d| {
            let mut m = training_info_model();
            let graph = m.graph.as_mut().unwrap();
            let first = graph.node[0].output[0].clone();
            let clash = format!("lookahead__{first}");
            for node in graph.node.iter_mut() {
                for name in node.input.iter_mut().chain(node.output.iter_mut()) {
                    if *name == first {
                        *name = clash.clone();
                    }
                }
            }
            let path = d.join("clash.onnx");
            save_model(&m, &path);
            path
        }),
        case("unknown fields", 3, "--allow-lossy", false, {
            let model = model.clone();
            move |d| {
                let mut bytes = model.clone();
                bytes.extend_from_slice(&[0xb8, 0x3e, 0x01]); // field 999 = 1, unknown to the schema
                write(d, "future.onnx", &bytes)
            }
        }),
        case(
            "lone ORT training model",
            1,
            "whole artifacts directory",
            false,
            |d| {
                std::fs::copy(fixture("ort_sgd/training_model.onnx"), d.join("t.onnx")).unwrap();
                d.join("t.onnx")
            },
        ),
    ];
    for cut in [1, model.len() / 3, model.len() / 2, model.len() - 1] {
        let model = model.clone();
        cases.push(case(
            "truncated model",
            1,
            "not a valid ONNX model",
            true,
            move |d| write(d, "truncated.onnx", &model[..cut]),
        ));
    }
    type Damage = Box<dyn Fn(&Path)>;
    let artifact_damage: Vec<(&'static str, &'static str, Damage)> = vec![
        ("truncated checkpoint", "checkpoint", {
            let c = checkpoint.clone();
            Box::new(move |a| std::fs::write(a.join("checkpoint"), &c[..c.len() / 2]).unwrap())
        }),
        (
            "random checkpoint",
            "checkpoint",
            Box::new(|a| {
                std::fs::write(a.join("checkpoint"), pseudo_random(2048, 2246822519)).unwrap()
            }),
        ),
        (
            "empty checkpoint",
            "empty",
            Box::new(|a| std::fs::write(a.join("checkpoint"), b"").unwrap()),
        ),
        (
            "empty training model",
            "empty",
            Box::new(|a| std::fs::write(a.join("training_model.onnx"), b"").unwrap()),
        ),
        (
            "missing optimizer model",
            "optimizer_model.onnx",
            Box::new(|a| std::fs::remove_file(a.join("optimizer_model.onnx")).unwrap()),
        ),
        (
            "inference model as optimizer",
            "no optimizer",
            Box::new(|a| {
                std::fs::copy(
                    fixture("mlp_inference.onnx"),
                    a.join("optimizer_model.onnx"),
                )
                .unwrap();
            }),
        ),
        (
            "two artifact sets",
            "2 sets",
            Box::new(|a| {
                for f in ["training_model.onnx", "optimizer_model.onnx", "checkpoint"] {
                    std::fs::copy(a.join(f), a.join(format!("x_{f}"))).unwrap();
                }
            }),
        ),
    ];
    for (name, message, damage) in artifact_damage {
        // A checkpoint and models that load, with no optimizer: inspect can still report.
        let inspect_fails = name != "inference model as optimizer";
        cases.push(case(name, 1, message, inspect_fails, move |d| {
            damaged(d, "ort_adamw", &damage)
        }));
    }
    cases
}

#[test]
fn refused_inputs() {
    let work = tmp();
    for (i, case) in cases().into_iter().enumerate() {
        let folder = work.path().join(format!("case{i}"));
        let (input_dir, out_dir) = (folder.join("in"), folder.join("out"));
        std::fs::create_dir_all(&input_dir).unwrap();
        std::fs::create_dir_all(&out_dir).unwrap();
        let input = (case.setup)(&input_dir);
        let before = digest(&input_dir);
        let output = out_dir.join("result");
        let err = expect_error(&["rewrite", arg(&input), "-o", arg(&output)], case.code);
        assert!(err.contains(case.message), "{}: {err}", case.name);
        assert_eq!(digest(&input_dir), before, "{}: input changed", case.name);
        assert_dir_entries(&out_dir, &[]);
        // inspect reports the same refusal: as its error when it cannot read the input, or in
        // the report's "refusals" when it can.
        let inspected = tool()
            .args(["inspect", arg(&input), "--format", "json"])
            .output()
            .unwrap();
        if case.inspect_fails {
            let stderr = String::from_utf8_lossy(&inspected.stderr);
            check_error_contract(&stderr, inspected.status.code(), 1, &[case.name]);
        } else {
            assert!(
                inspected.status.success(),
                "{}: {}",
                case.name,
                String::from_utf8_lossy(&inspected.stderr)
            );
            let report: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
            let refusals = report["refusals"].as_array().cloned().unwrap_or_default();
            assert!(
                refusals
                    .iter()
                    .any(|r| r.as_str().is_some_and(|r| r.contains(case.message))),
                "{}: inspect lists the refusal: {refusals:?}",
                case.name
            );
        }
    }
}

#[test]
fn unknown_fields_are_written_only_when_allowed() {
    let work = tmp();
    let mut bytes = fixture_bytes("training_info_sgd.onnx");
    bytes.extend_from_slice(&[0xb8, 0x3e, 0x01]);
    let input = write(work.path(), "future.onnx", &bytes);
    let out = work.path().join("out.onnx");
    let err = expect_error(&["rewrite", arg(&input), "-o", arg(&out)], 3);
    assert!(err.contains("field 999"), "{err}");
    run_ok(&["rewrite", arg(&input), "-o", arg(&out), "--allow-lossy"]);
    use prost::Message;
    ModelProto::decode(std::fs::read(&out).unwrap().as_slice()).expect("a model");
}

#[test]
fn missing_output_folders_are_not_created() {
    let work = tmp();
    for input in [fixture("training_info_sgd.onnx"), fixture("ort_adamw")] {
        let output = work.path().join("no/such/dir/result");
        let err = expect_error(&["rewrite", arg(&input), "-o", arg(&output)], 1);
        assert!(err.contains("no/such/dir"), "{err}");
        assert_dir_entries(work.path(), &[]);
    }
}
