//! `finalize` through the binary: finalize(rewrite(x)) gives x back (models byte for byte, the
//! checkpoint's content), for every fixture and alias mode; what it refuses, it refuses with one
//! `error:` line and no output; and `inspect` reads every checkpoint.

mod common;

use common::*;
use onnx_lookahead::io::checkpoint::read_checkpoint;

#[test]
fn finalize_of_a_rewrite_gives_back_the_input() {
    let work = tmp();
    for (i, (fixture_name, extra)) in [
        ("ort_adamw", None),
        ("ort_sgd", Some("--parallel-safe")),
        ("ort_adamw_frozen", None),
        ("training_info_sgd.onnx", None),
    ]
    .into_iter()
    .enumerate()
    {
        let input = fixture(fixture_name);
        let ext = if fixture_name.ends_with(".onnx") {
            ".onnx"
        } else {
            ""
        };
        let rewritten = work.path().join(format!("la{i}{ext}"));
        let back = work.path().join(format!("back{i}{ext}"));
        let mut args = vec![
            "rewrite",
            arg(&input),
            "-o",
            arg(&rewritten),
            "-k",
            "4",
            "-a",
            "0.3",
        ];
        args.extend(extra);
        run_ok(&args);
        for weights in ["lookahead", "slow"] {
            let _ = std::fs::remove_dir_all(&back);
            let _ = std::fs::remove_file(&back);
            let stderr = run_ok(&[
                "finalize",
                arg(&rewritten),
                "-o",
                arg(&back),
                "--weights",
                weights,
            ]);
            assert!(
                stderr.contains("0 parameter(s) given new values") || weights == "slow",
                "{stderr}"
            );
            if ext.is_empty() {
                for f in [
                    "training_model.onnx",
                    "eval_model.onnx",
                    "optimizer_model.onnx",
                ] {
                    assert_eq!(
                        std::fs::read(back.join(f)).unwrap(),
                        std::fs::read(input.join(f)).unwrap(),
                        "{fixture_name}/{f}"
                    );
                }
                // Untrained, the slow weights are the weights: the same checkpoint either way.
                assert_eq!(
                    read_checkpoint(back.join("checkpoint")).unwrap(),
                    read_checkpoint(input.join("checkpoint")).unwrap(),
                    "{fixture_name}/checkpoint"
                );
            } else {
                assert_eq!(
                    std::fs::read(&back).unwrap(),
                    std::fs::read(&input).unwrap()
                );
            }
        }
    }
}

#[test]
fn finalize_refuses_what_it_cannot_take_back() {
    let work = tmp();
    let rewritten = work.path().join("la");
    run_ok(&["rewrite", arg(&fixture("ort_sgd")), "-o", arg(&rewritten)]);
    let cases = [
        (fixture("ort_sgd"), "no record of a rewrite"),
        (fixture("training_info_sgd.onnx"), "no record of a rewrite"),
        (fixture("mlp_inference.onnx"), "no record of a rewrite"),
        (rewritten.join("checkpoint"), "checkpoint alone"),
        (
            rewritten.join("training_model.onnx"),
            "step counter is not one of its initializers",
        ),
    ];
    for (i, (input, message)) in cases.iter().enumerate() {
        let out = work.path().join(format!("out{i}"));
        let err = expect_error(&["finalize", arg(input), "-o", arg(&out)], 1);
        assert!(err.contains(message), "{}: {err}", input.display());
        assert!(!out.exists());
    }
    // A checkpoint of other artifacts is refused, naming it.
    let out = work.path().join("other");
    let err = expect_error(
        &[
            "finalize",
            arg(&rewritten),
            "-o",
            arg(&out),
            "--checkpoint",
            arg(&fixture("ort_sgd/checkpoint")),
        ],
        1,
    );
    assert!(err.contains("lookahead__step"), "{err}");
    assert!(!out.exists());
}

#[test]
fn inspect_reads_every_checkpoint() {
    let work = tmp();
    let rewritten = work.path().join("la");
    run_ok(&[
        "rewrite",
        arg(&fixture("ort_adamw")),
        "-o",
        arg(&rewritten),
        "-k",
        "3",
    ]);
    let mut checkpoints: Vec<std::path::PathBuf> = std::fs::read_dir(test_data(""))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("checkpoint_") && !name.contains('.')
        })
        .collect();
    checkpoints.extend(
        ["ort_adamw", "ort_sgd", "ort_adamw_frozen"].map(|d| fixture(d).join("checkpoint")),
    );
    checkpoints.push(rewritten.join("checkpoint"));
    for path in checkpoints {
        let output = tool()
            .args(["inspect", arg(&path), "--format", "json"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["format"], "ort-checkpoint", "{}", path.display());
        assert!(
            !report["parameters"].as_array().unwrap().is_empty(),
            "{}",
            path.display()
        );
        let text = tool().args(["inspect", arg(&path)]).output().unwrap();
        assert!(String::from_utf8_lossy(&text.stdout).contains("checkpoint: format version"));
        if path.starts_with(&rewritten) {
            assert_eq!(report["lookahead"]["k"], 3);
            assert_eq!(report["lookahead"]["position"], 0);
            assert_eq!(report["lookahead"]["sync_pending"], false);
        } else {
            assert!(report["lookahead"].is_null());
        }
    }
}
