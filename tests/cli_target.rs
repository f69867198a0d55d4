//! `--target-ort` and the compatibility report through the binary: what a target changes (and
//! nothing else), what it refuses and why, the note on output no release loads, and `inspect`'s
//! rows. Whether the written sets really load and train in each release: tests/python/
//! test_releases.py.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use onnx_lookahead::generated::onnx::{ModelProto, OperatorSetIdProto, TensorProto};
use onnx_lookahead::io::checkpoint::read_checkpoint;
use prost::Message;

fn load(path: &Path) -> ModelProto {
    ModelProto::decode(std::fs::read(path).expect("reads").as_slice()).expect("decodes")
}

/// (domain, version) of a model's opset imports.
fn opsets(model: &ModelProto) -> Vec<(String, i64)> {
    model
        .opset_import
        .iter()
        .map(|o| (o.domain().to_string(), o.version()))
        .collect()
}

fn opset(model: &ModelProto, domain: &str) -> Option<i64> {
    opsets(model)
        .into_iter()
        .find(|(d, _)| d == domain)
        .map(|(_, v)| v)
}

/// A copy of an artifacts fixture with `edit` applied to one of its models.
fn edited(dir: &Path, fixture_name: &str, file: &str, edit: impl Fn(&mut ModelProto)) -> PathBuf {
    let art = dir.join("art");
    copy_dir(&fixture(fixture_name), &art);
    let mut model = load(&art.join(file));
    edit(&mut model);
    save_model(&model, &art.join(file));
    art
}

fn json(args: &[&str]) -> serde_json::Value {
    let output = tool().args(args).output().expect("runs");
    assert!(output.status.success(), "{args:?}");
    serde_json::from_slice(&output.stdout).expect("JSON")
}

/// The compatibility row of one runtime.
fn row(report: &serde_json::Value, runtime: &str) -> serde_json::Value {
    report["compatibility"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["runtime"] == runtime)
        .cloned()
        .unwrap_or_else(|| panic!("no row for {runtime}: {report}"))
}

#[test]
fn target_117_changes_only_the_headers_it_must() {
    let dir = tmp();
    let out = dir.path().join("out");
    let input = fixture("ort_adamw");
    let before = digest(&input);
    run_ok(&[
        "rewrite",
        arg(&input),
        "-o",
        arg(&out),
        "--target-ort",
        "1.17",
    ]);
    assert_eq!(digest(&input), before, "input unchanged");
    let plain = dir.path().join("plain");
    run_ok(&["rewrite", arg(&input), "-o", arg(&plain)]);

    assert_eq!(read_checkpoint(out.join("checkpoint")).unwrap().version, 1);
    assert_eq!(
        read_checkpoint(plain.join("checkpoint")).unwrap().version,
        2
    );
    let original_training = load(&input.join("training_model.onnx"));
    let training = load(&out.join("training_model.onnx"));
    assert_eq!(opset(&original_training, "ai.onnx.ml"), Some(5));
    assert_eq!(
        opset(&training, "ai.onnx.ml"),
        Some(4),
        "unused import lowered"
    );
    assert_eq!(opset(&training, ""), Some(17), "a used domain is kept");
    assert_eq!(training.ir_version(), 9);
    let optimizer = load(&out.join("optimizer_model.onnx"));
    assert_eq!(load(&input.join("optimizer_model.onnx")).ir_version(), 10);
    assert_eq!(optimizer.ir_version(), 9, "IR lowered");
    // Apart from those headers the output is the plain rewrite's.
    for file in [
        "training_model.onnx",
        "eval_model.onnx",
        "optimizer_model.onnx",
    ] {
        let mut a = load(&out.join(file));
        let mut b = load(&plain.join(file));
        for m in [&mut a, &mut b] {
            m.ir_version = None;
            m.opset_import.retain(|o| o.domain() != "ai.onnx.ml");
        }
        assert_eq!(a, b, "{file}");
    }
    let report = json(&["inspect", arg(&out), "--format", "json"]);
    for runtime in ["onnxruntime-training 1.17", "onnxruntime-web 1.17"] {
        assert_eq!(row(&report, runtime)["loads"], true, "{runtime}");
    }
    let newer = row(&report, "onnxruntime-training 1.19");
    assert_eq!(newer["loads"], false);
    assert!(
        newer["reason"]
            .as_str()
            .unwrap()
            .contains("checkpoint format 1"),
        "{newer}"
    );
}

#[test]
fn a_target_the_set_already_meets_copies_the_untouched_models_byte_for_byte() {
    let dir = tmp();
    let out = dir.path().join("out");
    let input = fixture("ort_sgd");
    run_ok(&[
        "rewrite",
        arg(&input),
        "-o",
        arg(&out),
        "--target-ort",
        "1.19.2",
    ]);
    assert_eq!(
        std::fs::read(out.join("optimizer_model.onnx")).unwrap(),
        std::fs::read(input.join("optimizer_model.onnx")).unwrap()
    );
    assert_eq!(read_checkpoint(out.join("checkpoint")).unwrap().version, 2);
}

#[test]
fn finalize_writes_the_plain_set_for_the_target() {
    let dir = tmp();
    let rewritten = dir.path().join("rewritten");
    let plain = dir.path().join("plain");
    run_ok(&["rewrite", arg(&fixture("ort_adamw")), "-o", arg(&rewritten)]);
    run_ok(&[
        "finalize",
        arg(&rewritten),
        "-o",
        arg(&plain),
        "--target-ort",
        "1.16",
    ]);
    assert_eq!(
        read_checkpoint(plain.join("checkpoint")).unwrap().version,
        1
    );
    let training = load(&plain.join("training_model.onnx"));
    assert_eq!(opset(&training, "ai.onnx.ml"), Some(3));
    assert_eq!(load(&plain.join("optimizer_model.onnx")).ir_version(), 9);
    // Without the flag finalize keeps the rewritten set's headers.
    let kept = dir.path().join("kept");
    run_ok(&["finalize", arg(&rewritten), "-o", arg(&kept)]);
    assert_eq!(read_checkpoint(kept.join("checkpoint")).unwrap().version, 2);
    assert_eq!(
        std::fs::read(kept.join("optimizer_model.onnx")).unwrap(),
        std::fs::read(fixture("ort_adamw").join("optimizer_model.onnx")).unwrap()
    );
}

/// An optimizer model as ONNX 1.18+ writes it for generate_artifacts (IR 14, nothing newer in it).
fn ir14_optimizer(dir: &Path) -> PathBuf {
    edited(dir, "ort_adamw", "optimizer_model.onnx", |m| {
        m.ir_version = Some(14)
    })
}

#[test]
fn output_no_release_loads_gets_a_note_naming_the_flag() {
    let dir = tmp();
    let input = ir14_optimizer(dir.path());
    let stderr = run_ok(&["rewrite", arg(&input), "-o", arg(&dir.path().join("out"))]);
    let note = stderr
        .lines()
        .find(|l| l.starts_with("note: no ONNX Runtime training release"))
        .unwrap_or_else(|| panic!("no note: {stderr}"));
    assert!(
        note.contains("optimizer_model.onnx has IR version 14"),
        "{note}"
    );
    assert!(note.contains("--target-ort"), "{note}");
    let stderr = run_ok(&[
        "rewrite",
        arg(&input),
        "-o",
        arg(&dir.path().join("fixed")),
        "--target-ort",
        "1.19",
    ]);
    assert!(!stderr.contains("note: no ONNX Runtime"), "{stderr}");
    assert_eq!(
        load(&dir.path().join("fixed/optimizer_model.onnx")).ir_version(),
        10
    );
    // A set that loads somewhere gets no such note.
    let stderr = run_ok(&[
        "rewrite",
        arg(&fixture("ort_sgd")),
        "-o",
        arg(&dir.path().join("sgd")),
    ]);
    assert!(!stderr.contains("note:"), "{stderr}");
}

/// A refusal: one error line naming the release and the reason, no output, input unchanged.
struct Refusal {
    name: &'static str,
    setup: fn(&Path) -> PathBuf,
    target: &'static str,
    /// Parts of the error line.
    message: &'static [&'static str],
}

fn refusals() -> Vec<Refusal> {
    vec![
        Refusal {
            name: "a node uses an opset the release lacks",
            setup: |dir| {
                edited(dir, "ort_adamw", "training_model.onnx", |m| {
                    for o in &mut m.opset_import {
                        if o.domain().is_empty() {
                            o.version = Some(20);
                        }
                    }
                })
            },
            target: "1.16",
            message: &[
                "cannot be written for ONNX Runtime 1.16",
                "training_model.onnx imports ai.onnx opset 20",
                "uses it",
                "up to opset 19",
            ],
        },
        Refusal {
            name: "content that needs a newer IR",
            setup: |dir| {
                edited(dir, "ort_adamw", "optimizer_model.onnx", |m| {
                    m.ir_version = Some(14);
                    let graph = m.graph.as_mut().unwrap();
                    graph.initializer.push(TensorProto {
                        name: Some("packed".into()),
                        data_type: Some(26), // INT2, IR 13
                        dims: vec![4],
                        raw_data: Some(vec![0x1b].into()),
                        ..Default::default()
                    });
                })
            },
            target: "1.19",
            message: &[
                "optimizer_model.onnx has IR version 14",
                "\"packed\" of type int2 (IR 13)",
                "up to IR 10",
            ],
        },
        Refusal {
            name: "an operator the release does not have",
            setup: |dir| {
                edited(dir, "ort_adamw", "training_model.onnx", |m| {
                    let graph = m.graph.as_mut().unwrap();
                    graph.node[0].op_type = Some("GemmaRotaryEmbedding".into());
                    graph.node[0].domain = Some("com.microsoft".into());
                    graph.node[0].name = Some("rotary".into());
                })
            },
            target: "1.17",
            message: &[
                "node \"rotary\" (com.microsoft:GemmaRotaryEmbedding)",
                "does not have",
            ],
        },
        Refusal {
            name: "a function's import the release lacks, used by its body",
            setup: |dir| {
                edited(dir, "ort_adamw", "eval_model.onnx", |m| {
                    m.ir_version = Some(9);
                    m.functions
                        .push(onnx_lookahead::generated::onnx::FunctionProto {
                            name: Some("Twice".into()),
                            domain: Some("local".into()),
                            input: vec!["x".into()],
                            output: vec!["y".into()],
                            node: vec![onnx_lookahead::generated::onnx::NodeProto {
                                op_type: Some("Add".into()),
                                input: vec!["x".into(), "x".into()],
                                output: vec!["y".into()],
                                ..Default::default()
                            }],
                            opset_import: vec![OperatorSetIdProto {
                                domain: Some(String::new()),
                                version: Some(21),
                            }],
                            ..Default::default()
                        });
                })
            },
            target: "1.17",
            message: &["eval_model.onnx (function \"Twice\") imports ai.onnx opset 21"],
        },
    ]
}

#[test]
fn refused_targets_say_why_and_write_nothing() {
    for case in refusals() {
        let dir = tmp();
        let input = (case.setup)(dir.path());
        let before = digest(&input);
        let out = dir.path().join("out");
        let stderr = expect_error(
            &[
                "rewrite",
                arg(&input),
                "-o",
                arg(&out),
                "--target-ort",
                case.target,
            ],
            1,
        );
        for part in case.message {
            assert!(stderr.contains(part), "{}: {part:?} in {stderr}", case.name);
        }
        assert!(!out.exists(), "{}: no output", case.name);
        assert_dir_entries(dir.path(), &["art"]);
        assert_eq!(digest(&input), before, "{}: input unchanged", case.name);
        // inspect says the same of that release.
        let report = json(&["inspect", arg(&input), "--format", "json"]);
        let runtime = format!("onnxruntime-training {}", case.target);
        let target = &row(&report, &runtime)["target_ort"];
        assert_eq!(target["writable"], false, "{}: {target}", case.name);
        let reason = target["reason"].as_str().unwrap();
        assert!(
            stderr.contains(reason),
            "{}: {reason} in {stderr}",
            case.name
        );
    }
}

#[test]
fn invalid_targets_and_inputs_it_does_not_apply_to() {
    let dir = tmp();
    let out = dir.path().join("out");
    for bad in ["1.20", "1.15", "2", "latest", "1.19.x", ""] {
        let stderr = expect_error(
            &[
                "rewrite",
                arg(&fixture("ort_adamw")),
                "-o",
                arg(&out),
                "--target-ort",
                bad,
            ],
            2,
        );
        assert!(stderr.contains("--target-ort"), "{stderr}");
        assert!(stderr.contains("1.16, 1.17, 1.18, 1.19"), "{stderr}");
    }
    let stderr = expect_error(
        &[
            "rewrite",
            arg(&fixture("training_info_sgd.onnx")),
            "-o",
            arg(&dir.path().join("m.onnx")),
            "--target-ort",
            "1.19",
        ],
        1,
    );
    assert!(
        stderr.contains("applies to ONNX Runtime training artifacts"),
        "{stderr}"
    );
    assert_dir_entries(dir.path(), &[]);
}

#[test]
fn inspect_rows_for_every_runtime() {
    let report = json(&["inspect", arg(&fixture("ort_sgd")), "--format", "json"]);
    let runtimes: Vec<&str> = report["compatibility"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["runtime"].as_str().unwrap())
        .collect();
    assert_eq!(
        runtimes,
        [
            "onnxruntime-training 1.16",
            "onnxruntime-training 1.17",
            "onnxruntime-training 1.18",
            "onnxruntime-training 1.19",
            "onnxruntime-web 1.17",
            "onnxruntime-web 1.18",
            "onnxruntime-web 1.19",
        ]
    );
    assert_eq!(row(&report, "onnxruntime-training 1.18")["loads"], true);
    assert_eq!(
        row(&report, "onnxruntime-training 1.18")["release"],
        "1.18.0"
    );
    // web refuses ONNX Runtime's own SGD optimizer model, and no header change fixes that.
    let web = row(&report, "onnxruntime-web 1.19");
    assert_eq!(web["loads"], false);
    assert!(web["reason"].as_str().unwrap().contains("SGD"), "{web}");
    assert_eq!(web["target_ort"]["writable"], false);
    let adamw = json(&["inspect", arg(&fixture("ort_adamw")), "--format", "json"]);
    assert_eq!(row(&adamw, "onnxruntime-web 1.19")["loads"], true);
    // A lone checkpoint: its format only, nothing to write.
    let lone = json(&[
        "inspect",
        arg(&fixture("ort_adamw").join("checkpoint")),
        "--format",
        "json",
    ]);
    let old = row(&lone, "onnxruntime-training 1.17");
    assert_eq!(old["loads"], false);
    assert!(old.get("target_ort").is_none(), "{old}");
    // Models are not training sets.
    let model = json(&[
        "inspect",
        arg(&fixture("mlp_inference.onnx")),
        "--format",
        "json",
    ]);
    assert_eq!(model["compatibility"], serde_json::json!([]));
}
