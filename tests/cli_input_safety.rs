//! Bad values the tool must refuse, through the binary: option values the stored types cannot
//! hold, tensors whose type, dims and bytes disagree (ONNX models and ORT checkpoints), and the
//! command line's own errors. Also inputs it must accept and turn into valid output.

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::*;
use onnx_lookahead::generated::onnx::{ModelProto, OperatorSetIdProto};
use onnx_lookahead::io::checkpoint::{Checkpoint, TensorData, read_checkpoint, write_checkpoint};

#[test]
fn option_values_that_the_stored_types_cannot_hold_are_refused() {
    let work = tmp();
    let out = work.path().join("out");
    let (ti, ort) = (fixture("training_info_sgd.onnx"), fixture("ort_sgd"));
    // (input, k, alpha, exit code, part of the message)
    let cases = [
        (&ti, "9223372036854775808", "0.5", 1, "int64"),
        (&ti, "18446744073709551615", "0.5", 1, "int64"),
        (&ti, "18446744073709551616", "0.5", 2, "at most"),
        (&ort, "16777217", "0.5", 1, "float32"),
        (&ort, "-3", "0.5", 2, ">= 1"),
        (&ti, "5", "1e-50", 1, "rounds to 0"),
        (&ti, "5", "1e-300", 1, "rounds to 0"),
        (&ti, "5", "5e-324", 1, "rounds to 0"),
        (&ti, "5", "1e-400", 2, "stored as 0"),
        (&ort, "5", "1e-50", 1, "rounds to 0"),
        (&ort, "5", "0.99999999999", 1, "rounds to 1"),
    ];
    for (input, k, alpha, code, message) in cases {
        let err = expect_error(
            &[
                "rewrite",
                arg(input),
                "-o",
                arg(&out),
                "-k",
                k,
                "--alpha",
                alpha,
            ],
            code,
        );
        assert!(err.contains(message), "k={k} alpha={alpha}: {err}");
        assert!(!out.exists());
    }
    // The largest values that fit are accepted.
    run_ok(&[
        "rewrite",
        arg(&ti),
        "-o",
        arg(&out),
        "-k",
        "9223372036854775807",
    ]);
    std::fs::remove_file(&out).unwrap();
    run_ok(&[
        "rewrite",
        arg(&ort),
        "-o",
        arg(&out),
        "-k",
        "16777216",
        "--alpha",
        "1e-30",
    ]);
}

#[test]
fn usage_errors_are_one_error_line_then_clap_tips() {
    for (args, tip) in [
        (&[][..], "Usage:"),
        (&["rewrit"][..], "similar subcommand exists: 'rewrite'"),
        (
            &["rewrite", "x", "--outptu", "y"][..],
            "similar argument exists: '--output'",
        ),
        (&["rewrite", "x"][..], "--output"),
        (&["inspect", "x", "--format", "yaml"][..], "possible values"),
    ] {
        let err = expect_error(args, 2);
        assert!(err.contains(tip), "{args:?}: {err}");
        assert!(err.contains("Usage:") || err.contains("--help"), "{err}");
    }
}

/// The training_info fixture with one tensor of the main graph changed.
fn model_with(dir: &Path, name: &str, change: fn(&mut ModelProto)) -> PathBuf {
    let mut model = training_info_model();
    change(&mut model);
    let path = dir.join(format!("{name}.onnx"));
    save_model(&model, &path);
    path
}

fn w1(model: &mut ModelProto) -> &mut onnx_lookahead::generated::onnx::TensorProto {
    model
        .graph
        .as_mut()
        .and_then(|g| g.initializer.iter_mut().find(|t| t.name() == "W1"))
        .expect("W1")
}

#[test]
fn inconsistent_tensors_are_refused_naming_tensor_and_file() {
    let work = tmp();
    let dir = work.path();
    // (case, change, part of the message)
    type Case = (&'static str, fn(&mut ModelProto), &'static str);
    let cases: [Case; 7] = [
        (
            "raw_short",
            |m| {
                let t = w1(m);
                t.raw_data = t.raw_data.as_ref().map(|r| r.slice(..r.len() - 4));
            },
            "raw_data holds 44 bytes",
        ),
        (
            "raw_long",
            |m| {
                let t = w1(m);
                let mut raw = t.raw_data.clone().unwrap_or_default().to_vec();
                raw.extend([0, 0, 0, 0]);
                t.raw_data = Some(Bytes::from(raw));
            },
            "raw_data holds 52 bytes",
        ),
        (
            "dims_overflow",
            |m| w1(m).dims = vec![i64::MAX, i64::MAX],
            "overflows",
        ),
        ("dims_negative", |m| w1(m).dims = vec![-3, -4], "negative"),
        (
            "raw_and_float_data",
            |m| w1(m).float_data = vec![1.0; 12],
            "both",
        ),
        (
            "no_data_type",
            |m| w1(m).data_type = Some(0),
            "no data type",
        ),
        (
            "external_length_mismatch",
            |_| {},
            "length 44 does not match",
        ),
    ];
    for (name, change, message) in cases {
        let input = if name == "external_length_mismatch" {
            let sub = dir.join(name);
            std::fs::create_dir(&sub).unwrap();
            let path = external_data_model(&sub, "weights.bin");
            let mut model = onnx_model(&path);
            for entry in &mut w1(&mut model).external_data {
                if entry.key() == "length" {
                    entry.value = Some("44".into());
                }
            }
            save_model(&model, &path);
            path
        } else {
            model_with(dir, name, change)
        };
        let out = dir.join(format!("{name}.out.onnx"));
        let err = expect_error(&["rewrite", arg(&input), "-o", arg(&out)], 1);
        assert!(err.contains("W1") && err.contains(message), "{name}: {err}");
        assert!(
            err.contains(&*input.file_name().unwrap().to_string_lossy()),
            "{name}: names the file: {err}"
        );
        assert!(!out.exists());
    }
}

fn onnx_model(path: &Path) -> ModelProto {
    use prost::Message;
    ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap()
}

/// An artifacts folder (a copy of `fixture`) whose checkpoint is changed by `change`.
fn artifacts_with_checkpoint(
    dir: &Path,
    fixture_name: &str,
    change: impl Fn(&mut Checkpoint),
) -> PathBuf {
    let art = dir.to_path_buf();
    copy_dir(&fixture(fixture_name), &art);
    let mut checkpoint = read_checkpoint(art.join("checkpoint")).unwrap();
    change(&mut checkpoint);
    std::fs::remove_file(art.join("checkpoint")).unwrap();
    write_checkpoint(&checkpoint, art.join("checkpoint")).unwrap();
    art
}

fn module(c: &mut Checkpoint) -> &mut onnx_lookahead::io::checkpoint::ModuleState {
    c.module_state.as_mut().expect("module state")
}

#[test]
fn checkpoints_onnx_runtime_would_refuse_are_refused() {
    let work = tmp();
    let optimizer_state = read_checkpoint(test_data("checkpoint_adamw_optimizer_state")).unwrap();
    type Change = Box<dyn Fn(&mut Checkpoint)>;
    let cases: Vec<(&str, &str, Change, &str)> = vec![
        (
            "version 3",
            "ort_adamw",
            Box::new(|c| c.version = 3),
            "format version",
        ),
        (
            "version 0",
            "ort_adamw",
            Box::new(|c| c.version = 0),
            "format version",
        ),
        (
            "empty name",
            "ort_adamw",
            Box::new(|c| module(c).requires_grad_params[0].name.clear()),
            "empty name",
        ),
        (
            "string trainable",
            "ort_adamw",
            Box::new(|c| {
                let t = &mut module(c).requires_grad_params[0];
                t.data_type = onnx_lookahead::io::dtype::code::STRING;
                t.data = TensorData::Absent;
                t.string_data = vec!["x".into(); 32];
            }),
            "only floating-point",
        ),
        (
            "frozen dims",
            "ort_adamw_frozen",
            Box::new(|c| module(c).frozen_params[0].dims.push(2)),
            "need",
        ),
        (
            "trainable dims",
            "ort_adamw",
            Box::new(|c| module(c).requires_grad_params[1].dims = vec![3]),
            "need",
        ),
        (
            "momentum dims",
            "ort_adamw",
            Box::new(move |c| {
                c.optimizer_groups = optimizer_state.optimizer_groups.clone();
                c.optimizer_groups[0].optimizer_states[0].momentums[0].dims = vec![1, 1];
            }),
            "need",
        ),
        (
            "duplicate name",
            "ort_adamw",
            Box::new(|c| {
                let m = module(c);
                m.requires_grad_params[1].name = m.requires_grad_params[0].name.clone();
            }),
            "twice",
        ),
    ];
    for (i, (what, base, change, message)) in cases.into_iter().enumerate() {
        let art = artifacts_with_checkpoint(&work.path().join(format!("in{i}")), base, change);
        let out = work.path().join(format!("out{i}"));
        let err = expect_error(&["rewrite", arg(&art), "-o", arg(&out)], 1);
        assert!(
            err.contains(message) && err.contains("checkpoint"),
            "{what}: {err}"
        );
        assert!(!out.exists(), "{what}");
    }
}

#[test]
fn both_checkpoint_versions_are_rewritten_and_kept() {
    let work = tmp();
    for version in [1, 2] {
        let art =
            artifacts_with_checkpoint(&work.path().join(format!("v{version}")), "ort_sgd", |c| {
                c.version = version
            });
        let out = work.path().join(format!("out{version}"));
        run_ok(&["rewrite", arg(&art), "-o", arg(&out)]);
        assert_eq!(
            read_checkpoint(out.join("checkpoint")).unwrap().version,
            version
        );
    }
}

#[test]
fn a_training_model_without_opset_imports_gets_the_ones_injected_nodes_need() {
    let work = tmp();
    let art = work.path().join("art");
    copy_dir(&fixture("ort_sgd"), &art);
    let path = art.join("training_model.onnx");
    let mut model = onnx_model(&path);
    let before = model.opset_import.len();
    model
        .opset_import
        .retain(|o| !o.domain().is_empty() && o.domain() != "ai.onnx");
    assert_eq!(
        model.opset_import.len(),
        before - 1,
        "the fixture imports ai.onnx"
    );
    save_model(&model, &path);
    let out = work.path().join("out");
    run_ok(&["rewrite", arg(&art), "-o", arg(&out)]);
    let rewritten = onnx_model(&out.join("training_model.onnx"));
    let default: Vec<&OperatorSetIdProto> = rewritten
        .opset_import
        .iter()
        .filter(|o| o.domain().is_empty())
        .collect();
    assert_eq!(default.len(), 1, "{:?}", rewritten.opset_import);
    assert!(default[0].version() >= 11);

    // An import too old for the injected nodes is refused, not raised.
    let mut model = onnx_model(&fixture("ort_sgd/training_model.onnx"));
    for o in &mut model.opset_import {
        if o.domain().is_empty() {
            o.version = Some(9);
        }
    }
    save_model(&model, &path);
    let err = expect_error(
        &["rewrite", arg(&art), "-o", arg(&work.path().join("out9"))],
        1,
    );
    assert!(err.contains("opset 9"), "{err}");
}
