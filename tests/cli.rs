//! The command line, tested through the binary: success paths on the bundled fixtures, and
//! every kind of bad input giving exactly one `error:` line, a non-zero exit, no output and an
//! untouched input.

use std::path::Path;

use prost::Message;

mod common;
use common::*;

#[test]
fn missing_empty_random_and_truncated_inputs_fail_cleanly() {
    let dir = tmp();
    let out = dir.path().join("out.onnx");
    let out_s = out.to_str().unwrap();

    let missing = dir.path().join("missing.onnx");
    let err = expect_error(&["rewrite", missing.to_str().unwrap(), "-o", out_s], 1);
    assert!(err.contains("missing.onnx"), "{err}");

    let empty = dir.path().join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    let err = expect_error(&["rewrite", empty.to_str().unwrap(), "-o", out_s], 1);
    assert!(err.contains("empty"), "{err}");

    let random = dir.path().join("random.onnx");
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&random, &bytes).unwrap();
    expect_error(&["rewrite", random.to_str().unwrap(), "-o", out_s], 1);
    expect_error(&["inspect", random.to_str().unwrap()], 1);

    let full = std::fs::read(fixture("training_info_sgd.onnx")).unwrap();
    for cut in [1, full.len() / 3, full.len() / 2, full.len() - 1] {
        let truncated = dir.path().join(format!("truncated_{cut}.onnx"));
        std::fs::write(&truncated, &full[..cut]).unwrap();
        expect_error(&["rewrite", truncated.to_str().unwrap(), "-o", out_s], 1);
        expect_error(&["inspect", truncated.to_str().unwrap()], 1);
    }
    assert!(!out.exists());
}

#[test]
fn directory_without_artifacts_fails() {
    let dir = tmp();
    let out = dir.path().join("out");
    let err = expect_error(
        &[
            "rewrite",
            dir.path().to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("training_model.onnx"), "{err}");
    assert!(!out.exists());
}

#[test]
fn model_without_optimizer_is_refused() {
    let dir = tmp();
    let out = dir.path().join("out.onnx");
    let err = expect_error(
        &[
            "rewrite",
            fixture("mlp_inference.onnx").to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("no optimizer"), "{err}");
    assert!(!out.exists());
}

#[test]
fn invalid_k_and_alpha_are_refused() {
    let dir = tmp();
    let out = dir.path().join("out.onnx");
    let input = fixture("training_info_sgd.onnx");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    for (k, alpha, code) in [
        ("0", "0.5", 1),
        ("5", "0", 1),
        ("5", "1.5", 1),
        ("5", "-0.5", 1),
        ("5", "nan", 1),
        ("-1", "0.5", 2),
        ("abc", "0.5", 2),
        ("2.5", "0.5", 2),
        ("5", "x", 2),
    ] {
        expect_error(&["rewrite", i, "-o", o, "-k", k, "--alpha", alpha], code);
    }
    assert!(!out.exists());
}

#[test]
fn rewrite_then_rewrite_again_is_refused() {
    let dir = tmp();
    let input = fixture("training_info_sgd.onnx");
    let before = digest(&input);
    let once = dir.path().join("once.onnx");
    run_ok(&[
        "rewrite",
        input.to_str().unwrap(),
        "-o",
        once.to_str().unwrap(),
        "-k",
        "3",
        "-a",
        "0.8",
    ]);
    assert_eq!(digest(&input), before, "input unchanged");
    let twice = dir.path().join("twice.onnx");
    let err = expect_error(
        &[
            "rewrite",
            once.to_str().unwrap(),
            "-o",
            twice.to_str().unwrap(),
        ],
        1,
    );
    assert!(
        err.contains("already rewritten") && err.contains("k=3") && err.contains("alpha=0.8"),
        "{err}"
    );
    assert!(!twice.exists());
}

#[test]
fn existing_output_needs_force_and_must_be_an_earlier_output() {
    let dir = tmp();
    let input = fixture("training_info_sgd.onnx");
    let out = dir.path().join("out.onnx");
    run_ok(&["rewrite", arg(&input), "-o", arg(&out), "-k", "3"]);
    let earlier = std::fs::read(&out).unwrap();
    let err = expect_error(&["rewrite", arg(&input), "-o", arg(&out)], 1);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), earlier);
    // An earlier output (an ONNX model) is replaced with --force.
    run_ok(&["rewrite", arg(&input), "-o", arg(&out), "--force"]);
    assert_ne!(std::fs::read(&out).unwrap(), earlier);
    assert_dir_entries(dir.path(), &["out.onnx"]);
    // Anything else is not, even with --force.
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, b"keep me").unwrap();
    let err = expect_error(&["rewrite", arg(&input), "-o", arg(&notes), "--force"], 1);
    assert!(err.contains("not an ONNX model"), "{err}");
    assert_eq!(std::fs::read(&notes).unwrap(), b"keep me");
    assert_dir_entries(dir.path(), &["notes.txt", "out.onnx"]);
}

#[test]
fn output_onto_input_is_refused() {
    let dir = tmp();
    let input = dir.path().join("model.onnx");
    std::fs::copy(fixture("training_info_sgd.onnx"), &input).unwrap();
    let before = digest(&input);
    expect_error(
        &[
            "rewrite",
            input.to_str().unwrap(),
            "-o",
            input.to_str().unwrap(),
            "--force",
        ],
        1,
    );
    assert_eq!(digest(&input), before);
}

#[test]
fn unwritable_output_fails_without_leftovers() {
    let dir = tmp();
    let input = fixture("training_info_sgd.onnx");
    let missing_dir = dir.path().join("no/such/dir/out.onnx");
    expect_error(
        &[
            "rewrite",
            input.to_str().unwrap(),
            "-o",
            missing_dir.to_str().unwrap(),
        ],
        1,
    );
    let artifacts_out = dir.path().join("no/such/dir/artifacts");
    expect_error(
        &[
            "rewrite",
            fixture("ort_adamw").to_str().unwrap(),
            "-o",
            artifacts_out.to_str().unwrap(),
        ],
        1,
    );
    assert_dir_entries(dir.path(), &[]);
}

#[test]
fn reserved_name_prefix_is_a_name_clash() {
    use onnx_lookahead::generated::onnx::ModelProto;
    let dir = tmp();
    let bytes = std::fs::read(fixture("training_info_sgd.onnx")).unwrap();
    let mut model = ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let first_output = graph.node[0].output[0].clone();
    // Rename a tensor of the main graph into the tool's reserved namespace.
    let clash = format!("lookahead__{first_output}");
    for node in graph.node.iter_mut() {
        for name in node.input.iter_mut().chain(node.output.iter_mut()) {
            if *name == first_output {
                *name = clash.clone();
            }
        }
    }
    let input = dir.path().join("clash.onnx");
    std::fs::write(&input, model.encode_to_vec()).unwrap();
    let out = dir.path().join("out.onnx");
    let err = expect_error(
        &[
            "rewrite",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("name clash"), "{err}");
    assert!(!out.exists());
}

#[test]
fn unknown_fields_are_refused_unless_allowed() {
    let dir = tmp();
    let mut bytes = std::fs::read(fixture("training_info_sgd.onnx")).unwrap();
    bytes.extend_from_slice(&[0xb8, 0x3e, 0x01]); // field 999 (varint 1), unknown to the schema
    let input = dir.path().join("future.onnx");
    std::fs::write(&input, &bytes).unwrap();
    let out = dir.path().join("out.onnx");
    let err = expect_error(
        &[
            "rewrite",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        3,
    );
    assert!(
        err.contains("field 999") && err.contains("--allow-lossy"),
        "{err}"
    );
    assert!(!out.exists());
    run_ok(&[
        "rewrite",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--allow-lossy",
    ]);
    assert!(out.exists());
}

#[test]
fn inspect_json_of_training_info_fixture() {
    let output = tool()
        .args([
            "inspect",
            fixture("training_info_sgd.onnx").to_str().unwrap(),
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["format"], "training-info");
    assert_eq!(report["optimizer"], "SGD");
    assert!(report["lookahead"].is_null());
    assert!(!report["optimizer_nodes"].as_array().unwrap().is_empty());
    assert!(!report["parameters"].as_array().unwrap().is_empty());
    assert!(
        report["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["lookahead"] == false)
    );
}

#[test]
fn inspect_shows_optimizer_of_ort_fixtures() {
    for (dir, optimizer, op) in [
        ("ort_adamw", "AdamW", "AdamWOptimizer"),
        ("ort_sgd", "SGD", "SGDOptimizerV2"),
    ] {
        let output = tool()
            .args([
                "inspect",
                fixture(dir).to_str().unwrap(),
                "--format",
                "json",
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["format"], "ort-artifacts");
        assert_eq!(report["optimizer"], optimizer);
        assert_eq!(report["optimizer_nodes"][0]["op_type"], op);
        assert!(
            report["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["trainable"] == true)
        );
        let text = tool()
            .args(["inspect", fixture(dir).to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains(op) && text.contains("parameters"), "{text}");
    }
}

#[test]
fn ort_rewrite_and_inspect_report_lookahead() {
    let dir = tmp();
    let out = dir.path().join("la");
    let input = fixture("ort_adamw");
    let before = digest(&input);
    run_ok(&[
        "rewrite",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-k",
        "4",
        "--alpha",
        "0.25",
    ]);
    assert_eq!(digest(&input), before, "input unchanged");
    let output = tool()
        .args(["inspect", out.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["lookahead"]["k"], 4);
    assert_eq!(report["lookahead"]["alpha"], 0.25);
    let params = report["parameters"].as_array().unwrap();
    assert!(
        params.iter().all(|p| p["lookahead"] == p["trainable"]),
        "{params:?}"
    );
    assert!(!report["injected_nodes"].as_array().unwrap().is_empty());
    // The optimizer model is not touched by the rewrite.
    assert_eq!(
        std::fs::read(out.join("optimizer_model.onnx")).unwrap(),
        std::fs::read(input.join("optimizer_model.onnx")).unwrap()
    );
    let err = expect_error(
        &[
            "rewrite",
            out.to_str().unwrap(),
            "-o",
            dir.path().join("again").to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("already rewritten"), "{err}");
}

#[test]
fn damaged_artifacts_fail_cleanly() {
    let dir = tmp();
    let full = std::fs::read(fixture("ort_adamw/checkpoint")).unwrap();
    let random: Vec<u8> = (0..2048u32)
        .map(|i| (i.wrapping_mul(2246822519) >> 11) as u8)
        .collect();
    type Damage<'a> = Box<dyn Fn(&Path) + 'a>;
    let cases: Vec<(&str, Damage)> = vec![
        (
            "truncated checkpoint",
            Box::new(|d: &Path| {
                std::fs::write(d.join("checkpoint"), &full[..full.len() / 2]).unwrap()
            }),
        ),
        (
            "random checkpoint",
            Box::new(|d: &Path| std::fs::write(d.join("checkpoint"), &random).unwrap()),
        ),
        (
            "empty checkpoint",
            Box::new(|d: &Path| std::fs::write(d.join("checkpoint"), b"").unwrap()),
        ),
        (
            "empty training model",
            Box::new(|d: &Path| std::fs::write(d.join("training_model.onnx"), b"").unwrap()),
        ),
        (
            "missing optimizer model",
            Box::new(|d: &Path| std::fs::remove_file(d.join("optimizer_model.onnx")).unwrap()),
        ),
        (
            "inference model as optimizer",
            Box::new(|d: &Path| {
                std::fs::copy(
                    fixture("mlp_inference.onnx"),
                    d.join("optimizer_model.onnx"),
                )
                .unwrap();
            }),
        ),
    ];
    for (i, (what, damage)) in cases.iter().enumerate() {
        let input = dir.path().join(format!("in{i}"));
        copy_dir(&fixture("ort_adamw"), &input);
        damage(&input);
        let before = digest(&input);
        let out = dir.path().join(format!("out{i}"));
        let err = expect_error(
            &[
                "rewrite",
                input.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ],
            1,
        );
        assert!(!out.exists(), "{what}: no output");
        assert_eq!(digest(&input), before, "{what}: input unchanged");
        expect_error(&["inspect", input.to_str().unwrap()], 1);
        assert!(!err.is_empty());
    }
    // Only the inputs are left: no staging directories.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.iter().all(|n| n.starts_with("in")), "{names:?}");
}

#[test]
fn output_inside_input_directory_is_refused() {
    let dir = tmp();
    let input = dir.path().join("artifacts");
    copy_dir(&fixture("ort_sgd"), &input);
    let before = digest(&input);
    let inside = input.join("lookahead");
    let err = expect_error(
        &[
            "rewrite",
            input.to_str().unwrap(),
            "-o",
            inside.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("input"), "{err}");
    expect_error(
        &[
            "rewrite",
            input.to_str().unwrap(),
            "-o",
            input.to_str().unwrap(),
            "--force",
        ],
        1,
    );
    assert_eq!(digest(&input), before);
}

#[test]
fn external_data_is_carried_along_and_validated() {
    use onnx_lookahead::generated::onnx::ModelProto;
    let dir = tmp();
    let input_dir = dir.path().join("in");
    std::fs::create_dir(&input_dir).unwrap();
    let input = external_data_model(&input_dir, "weights.bin");
    let before = digest(&input_dir);

    // Into another folder: the data file comes along, and the slow copy shares its region.
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("model.onnx");
    run_ok(&[
        "rewrite",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(out_dir.join("weights.bin")).unwrap(),
        std::fs::read(input_dir.join("weights.bin")).unwrap()
    );
    let rewritten = ModelProto::decode(std::fs::read(&out).unwrap().as_slice()).unwrap();
    let algorithm = rewritten.training_info[0].algorithm.as_ref().unwrap();
    let slow = algorithm
        .initializer
        .iter()
        .find(|t| t.name() == "lookahead__slow__W1")
        .unwrap();
    let w1 = rewritten
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .find(|t| t.name() == "W1")
        .unwrap();
    assert_eq!(slow.external_data, w1.external_data);
    assert_eq!(digest(&input_dir), before, "input unchanged");

    // A failed write leaves no copied data file behind.
    let failing_dir = dir.path().join("failing");
    std::fs::create_dir_all(failing_dir.join("model.onnx")).unwrap();
    let failing = failing_dir.join("model.onnx");
    expect_error(
        &[
            "rewrite",
            input.to_str().unwrap(),
            "-o",
            failing.to_str().unwrap(),
            "--force",
        ],
        1,
    );
    assert_dir_entries(&failing_dir, &["model.onnx"]);

    // Locations must stay inside the model's folder, and ranges inside the file.
    for (name, location) in [("escape", "../weights.bin"), ("absolute", "/etc/passwd")] {
        let bad_dir = dir.path().join(name);
        std::fs::create_dir(&bad_dir).unwrap();
        let bad = external_data_model(&bad_dir, location);
        let err = expect_error(
            &[
                "rewrite",
                bad.to_str().unwrap(),
                "-o",
                bad_dir.join("o.onnx").to_str().unwrap(),
            ],
            1,
        );
        assert!(err.contains("external data"), "{err}");
    }
    let short_dir = dir.path().join("short");
    std::fs::create_dir(&short_dir).unwrap();
    let short = external_data_model(&short_dir, "weights.bin");
    std::fs::write(short_dir.join("weights.bin"), b"tiny").unwrap();
    let err = expect_error(
        &[
            "rewrite",
            short.to_str().unwrap(),
            "-o",
            short_dir.join("o.onnx").to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("outside"), "{err}");
}
