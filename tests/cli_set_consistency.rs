//! An artifacts set whose files disagree (a parameter's type or shape differs between a graph and
//! the checkpoint, optimizer state of another model), and recorded state training never writes
//! (a step counter holding NaN, -5, 2.5, 1e30, past k): refused by `rewrite` and `finalize`
//! with the file and the tensor named, listed by `inspect`, nothing written. Through the binary.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use onnx_lookahead::generated::onnx::{ModelProto, tensor_shape_proto::dimension, type_proto};
use onnx_lookahead::io::checkpoint::{
    Checkpoint, CheckpointTensor, OptimizerGroup, ParameterOptimizerState, TensorData,
    read_checkpoint, write_checkpoint,
};
use prost::Message;

fn edit_model(path: &Path, edit: impl Fn(&mut ModelProto)) {
    let mut model = ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap();
    edit(&mut model);
    save_model(&model, path);
}

fn edit_checkpoint(path: &Path, edit: impl Fn(&mut Checkpoint)) {
    let mut checkpoint = read_checkpoint(path).unwrap();
    edit(&mut checkpoint);
    let staged = path.with_extension("new");
    write_checkpoint(&checkpoint, &staged).unwrap();
    drop(checkpoint); // the mapping of the file being replaced
    std::fs::rename(staged, path).unwrap();
}

/// Sets the declared shape of the graph input `name`.
fn reshape_input(model: &mut ModelProto, name: &str, dims: &[i64]) {
    let input = model
        .graph
        .as_mut()
        .unwrap()
        .input
        .iter_mut()
        .find(|i| i.name() == name)
        .unwrap();
    let Some(type_proto::Value::TensorType(t)) = input.r#type.as_mut().unwrap().value.as_mut()
    else {
        panic!("tensor input")
    };
    let shape = t.shape.as_mut().unwrap();
    for (dim, value) in shape.dim.iter_mut().zip(dims) {
        dim.value = Some(dimension::Value::DimValue(*value));
    }
}

fn copy(dir: &Path, name: &str) -> PathBuf {
    let art = dir.join("art");
    copy_dir(&fixture(name), &art);
    art
}

struct Case {
    name: &'static str,
    setup: fn(&Path) -> PathBuf,
    /// Parts of the error line (and of inspect's refusal).
    message: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "an eval model of another size",
            setup: |dir| {
                let art = copy(dir, "ort_adamw");
                edit_model(&art.join("eval_model.onnx"), |m| {
                    reshape_input(m, "W1", &[9, 8])
                });
                art
            },
            message: &[
                "eval_model.onnx: the files of the set disagree",
                "input \"W1\" is float[9,8], but checkpoint holds \"W1\" as float[4,8]",
            ],
        },
        Case {
            name: "a gradient buffer of another type",
            setup: |dir| {
                let art = copy(dir, "ort_sgd");
                edit_model(&art.join("training_model.onnx"), |m| {
                    let graph = m.graph.as_mut().unwrap();
                    let input = graph
                        .input
                        .iter_mut()
                        .find(|i| i.name() == "b2_grad.accumulation.buffer")
                        .unwrap();
                    if let Some(type_proto::Value::TensorType(t)) =
                        input.r#type.as_mut().unwrap().value.as_mut()
                    {
                        t.elem_type = Some(11); // double
                    }
                });
                art
            },
            message: &[
                "training_model.onnx: the files of the set disagree",
                "\"b2_grad.accumulation.buffer\" is double",
            ],
        },
        Case {
            name: "optimizer state shaped unlike its parameter",
            setup: |dir| {
                let art = copy(dir, "ort_adamw");
                edit_checkpoint(&art.join("checkpoint"), |c| {
                    let zeros = |n: usize| TensorData::Inline(vec![0u8; 4 * n].into());
                    let moment = |name: &str| CheckpointTensor::new(name, vec![2, 2], 1, zeros(4));
                    let mut group = OptimizerGroup::new("group0", 3, 0.001);
                    group.optimizer_states.push(ParameterOptimizerState::new(
                        "W1",
                        vec![moment("momentum0"), moment("momentum1")],
                    ));
                    c.optimizer_groups.push(group);
                });
                art
            },
            message: &[
                "checkpoint: the files of the set disagree",
                "\"momentum0\" of \"W1\" is float[2,2], the parameter float[4,8]",
            ],
        },
    ]
}

#[test]
fn sets_whose_files_disagree_are_refused_by_every_operation() {
    for case in cases() {
        let dir = tmp();
        let input = (case.setup)(dir.path());
        let before = digest(&input);
        let out = dir.path().join("out");
        let stderr = expect_error(&["rewrite", arg(&input), "-o", arg(&out)], 1);
        for part in case.message {
            assert!(stderr.contains(part), "{}: {part:?} in {stderr}", case.name);
        }
        assert!(!out.exists(), "{}", case.name);
        let report = tool().args(["inspect", arg(&input)]).output().unwrap();
        let text = String::from_utf8_lossy(&report.stdout);
        assert!(report.status.success(), "{}", case.name);
        assert!(text.contains(case.message[1]), "{}: {text}", case.name);
        assert_eq!(digest(&input), before, "{}: input unchanged", case.name);
        assert_dir_entries(dir.path(), &["art"]);
    }
}

/// The fixture rewritten (k = 5), with its step counter set to `value`.
fn counter_at(dir: &Path, value: f32) -> PathBuf {
    let out = dir.join("rewritten");
    run_ok(&["rewrite", arg(&fixture("ort_adamw")), "-o", arg(&out)]);
    edit_checkpoint(&out.join("checkpoint"), |c| {
        let counter = c.parameter_mut("lookahead__step").unwrap();
        counter.data = TensorData::Inline(value.to_le_bytes().to_vec().into());
    });
    out
}

#[test]
fn step_counters_training_never_writes_are_refused() {
    for value in [f32::NAN, -5.0, 2.5, 1e30, 6.0, f32::INFINITY] {
        let dir = tmp();
        let set = counter_at(dir.path(), value);
        let plain = dir.path().join("plain");
        let stderr = expect_error(&["finalize", arg(&set), "-o", arg(&plain)], 1);
        let expected = format!("the step counter lookahead__step holds {value}");
        assert!(stderr.contains(&expected), "{expected} in {stderr}");
        assert!(stderr.contains("a whole number from 0 to 5"), "{stderr}");
        assert!(!plain.exists());
        // The same checkpoint given to finalize of a sound set.
        let sound = dir.path().join("sound");
        run_ok(&["rewrite", arg(&fixture("ort_adamw")), "-o", arg(&sound)]);
        let checkpoint = set.join("checkpoint");
        let stderr = expect_error(
            &[
                "finalize",
                arg(&sound),
                "--checkpoint",
                arg(&checkpoint),
                "-o",
                arg(&plain),
            ],
            1,
        );
        assert!(stderr.contains(&expected), "{stderr}");
        // inspect names it and gives no cycle position, for the set and the lone checkpoint.
        for input in [&set, &checkpoint] {
            let output = tool()
                .args(["inspect", arg(input), "--format", "json"])
                .output()
                .unwrap();
            let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            assert!(report["lookahead"].get("position").is_none(), "{report}");
            let refusals = report["refusals"].to_string();
            assert!(refusals.contains(&expected), "{refusals}");
        }
    }
    // Every value training writes is accepted.
    for value in 0..=5 {
        let dir = tmp();
        let set = counter_at(dir.path(), value as f32);
        run_ok(&["finalize", arg(&set), "-o", arg(&dir.path().join("plain"))]);
        let output = tool()
            .args(["inspect", arg(&set), "--format", "json"])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["lookahead"]["position"], value, "{report}");
    }
}

#[test]
fn a_negative_optimizer_step_is_no_checkpoint_training_writes() {
    let dir = tmp();
    let art = copy(dir.path(), "ort_sgd");
    edit_checkpoint(&art.join("checkpoint"), |c| {
        c.optimizer_groups
            .push(OptimizerGroup::new("group0", -3, 0.1));
    });
    for command in ["rewrite", "inspect"] {
        let mut args = vec![command, arg(&art)];
        let out = dir.path().join("out");
        if command == "rewrite" {
            args.extend(["-o", arg(&out)]);
        }
        let stderr = expect_error(&args, 1);
        assert!(
            stderr.contains("optimizer group \"group0\" has step -3"),
            "{stderr}"
        );
        assert!(!out.exists());
    }
}
