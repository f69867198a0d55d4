//! ORT-format copies (`<model>.ort`, `<model>.required_operators.config`) in an artifacts folder
//! describe one model's graphs: wherever an operation writes that model anew they are left out
//! (with a note naming the command that regenerates them), and wherever it leaves the model as it
//! was they are copied with it; the set's operator list (`required_operators.config`) lists every
//! model's operators, so it never stays. The binary has no converter: `--ort-format` is refused
//! before anything is read or written (the Python package's console script writes them,
//! tests/python/test_ort_format.py). Through the binary, for every way a model can change.

mod common;

use std::path::Path;

use common::*;

const MODELS: [&str; 3] = ["training_model", "eval_model", "optimizer_model"];

/// An artifacts fixture copied with stand-in ORT-format copies of every model.
fn with_ort_copies(dir: &Path, fixture_name: &str) -> std::path::PathBuf {
    let art = dir.join("art");
    copy_dir(&fixture(fixture_name), &art);
    add_ort_copies(&art);
    art
}

fn add_ort_copies(dir: &Path) {
    for model in MODELS {
        std::fs::write(dir.join(format!("{model}.ort")), format!("ORT of {model}")).unwrap();
        std::fs::write(
            dir.join(format!("{model}.required_operators.config")),
            "ai.onnx;17;Add\n",
        )
        .unwrap();
    }
}

/// Which models' copies are in `out`, and that those present are the input's bytes.
fn carried(out: &Path, input: &Path) -> Vec<&'static str> {
    MODELS
        .into_iter()
        .filter(|model| {
            let ort = out.join(format!("{model}.ort"));
            let config = out.join(format!("{model}.required_operators.config"));
            assert_eq!(ort.exists(), config.exists(), "{model}: both or neither");
            if ort.exists() {
                let name = format!("{model}.ort");
                assert_eq!(
                    std::fs::read(&ort).unwrap(),
                    std::fs::read(input.join(&name)).unwrap()
                );
            }
            ort.exists()
        })
        .collect()
}

fn notes(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("note:")).collect()
}

#[test]
fn rewrites_leave_out_exactly_the_copies_of_the_models_they_change() {
    // (fixture, extra arguments, the models whose copies stay)
    let cases: [(&str, &[&str], &[&str]); 4] = [
        ("ort_adamw", &[], &["optimizer_model"]),
        ("ort_sgd", &["--parallel-safe"], &["optimizer_model"]),
        ("ort_adamw", &["--inner-state", "reset"], &[]),
        // 1.17 reads IR 9: the optimizer model's header changes too.
        ("ort_adamw", &["--target-ort", "1.17"], &[]),
    ];
    for (fixture_name, extra, kept) in cases {
        let dir = tmp();
        let input = with_ort_copies(dir.path(), fixture_name);
        let out = dir.path().join("out");
        let mut args = vec!["rewrite", arg(&input), "-o", arg(&out)];
        args.extend_from_slice(extra);
        let stderr = run_ok(&args);
        assert_eq!(carried(&out, &input), kept, "{fixture_name} {extra:?}");
        let notes = notes(&stderr);
        assert_eq!(notes.len(), 3 - kept.len(), "{extra:?}: {stderr}");
        for note in notes {
            assert!(note.contains("not carried over"), "{note}");
            assert!(
                note.contains("python -m onnxruntime.tools.convert_onnx_models_to_ort --optimization_style Fixed --output_dir"),
                "{note}"
            );
            assert!(note.contains(&format!("{}/", out.display())), "{note}");
        }
    }
}

#[test]
fn finalize_leaves_out_the_copies_of_the_models_it_reverts() {
    let dir = tmp();
    let rewritten = dir.path().join("rewritten");
    run_ok(&[
        "rewrite",
        arg(&fixture("ort_adamw")),
        "-o",
        arg(&rewritten),
        "--inner-state",
        "reset",
    ]);
    // As if the user had converted the rewritten set for a phone.
    add_ort_copies(&rewritten);
    let plain = dir.path().join("plain");
    let stderr = run_ok(&["finalize", arg(&rewritten), "-o", arg(&plain)]);
    assert_eq!(carried(&plain, &rewritten), Vec::<&str>::new());
    assert_eq!(notes(&stderr).len(), 3, "{stderr}");
    // A plain rewrite's optimizer model is not reverted: its copies stay.
    let default = dir.path().join("default");
    run_ok(&["rewrite", arg(&fixture("ort_sgd")), "-o", arg(&default)]);
    add_ort_copies(&default);
    let plain = dir.path().join("plain_sgd");
    run_ok(&["finalize", arg(&default), "-o", arg(&plain)]);
    assert_eq!(carried(&plain, &default), ["optimizer_model"]);
}

#[test]
fn the_regeneration_command_quotes_what_the_shell_would_split() {
    let dir = tmp();
    let input = with_ort_copies(dir.path(), "ort_sgd");
    let out = dir.path().join("it's out");
    let stderr = run_ok(&["rewrite", arg(&input), "-o", arg(&out)]);
    let expected = format!("'{}/it'\\''s out'", dir.path().display());
    assert!(stderr.contains(&expected), "{expected} in {stderr}");
}

#[test]
fn the_binary_refuses_ort_format_and_writes_nothing() {
    let dir = tmp();
    let rewritten = dir.path().join("rewritten");
    run_ok(&["rewrite", arg(&fixture("ort_sgd")), "-o", arg(&rewritten)]);
    for (command, input) in [("rewrite", fixture("ort_adamw")), ("finalize", rewritten)] {
        let before = entries(dir.path());
        let out = dir.path().join(format!("{command}_out"));
        let args = [command, arg(&input), "-o", arg(&out), "--ort-format"];
        let stderr = expect_error(&args, 2);
        assert_eq!(
            stderr.trim_end(),
            format!(
                "error: --ort-format needs the onnx-lookahead console script of the Python package, which converts with onnxruntime-training (pip install \"onnx-lookahead[ort]\"); this binary cannot convert: run it without --ort-format, then python -m onnxruntime.tools.convert_onnx_models_to_ort --optimization_style Fixed {}",
                out.display()
            )
        );
        assert_eq!(entries(dir.path()), before, "{command}: nothing written");
        // --no-ort-format is what the binary does anyway; both at once is a usage error.
        let both = [
            command,
            arg(&input),
            "-o",
            arg(&out),
            "--ort-format",
            "--no-ort-format",
        ];
        let stderr = expect_error(&both, 2);
        assert!(stderr.contains("cannot be used with"), "{stderr}");
        run_ok(&[command, arg(&input), "-o", arg(&out), "--no-ort-format"]);
    }
}

#[test]
fn every_name_the_converter_gives_follows_its_model_and_the_sets_list_never_stays() {
    // Converted at another level or style, type-reduced, optimized ONNX beside: the same model's
    // graphs under other names. required_operators.config: what converting the folder writes.
    let derived = [
        "training_model.basic.ort",
        "training_model.required_operators_and_types.config",
        "eval_model.with_runtime_opt.ort",
        "eval_model.optimized.onnx",
        "optimizer_model.extended.ort",
        "optimizer_model.required_operators.extended.config",
    ];
    for extra in [&[][..], &["--no-ort-format"][..]] {
        let dir = tmp();
        let input = with_ort_copies(dir.path(), "ort_adamw");
        for name in derived.iter().chain(&["required_operators.config"]) {
            std::fs::write(input.join(name), format!("stand-in {name}")).unwrap();
        }
        let out = dir.path().join("out");
        let mut args = vec!["rewrite", arg(&input), "-o", arg(&out)];
        args.extend_from_slice(extra);
        let stderr = run_ok(&args);
        let left: Vec<String> = entries(&out)
            .into_iter()
            .filter(|n| !n.starts_with("checkpoint") && !n.ends_with("model.onnx"))
            .collect();
        assert_eq!(
            left,
            [
                "optimizer_model.extended.ort",
                "optimizer_model.ort",
                "optimizer_model.required_operators.config",
                "optimizer_model.required_operators.extended.config",
            ],
            "{extra:?}"
        );
        let notes = notes(&stderr);
        assert_eq!(notes.len(), 3, "{stderr}");
        assert!(
            notes[0].starts_with("note: training_model.basic.ort, training_model.ort, training_model.required_operators.config and training_model.required_operators_and_types.config not carried over: they describe the input's training_model.onnx"),
            "{}",
            notes[0]
        );
        assert_eq!(
            notes[2],
            format!(
                "note: required_operators.config not carried over: it lists the operators of the input's models, not the output's; converting the output folder writes the output's list (required_operators.config) with every model's .ort: python -m onnxruntime.tools.convert_onnx_models_to_ort --optimization_style Fixed {}",
                out.display()
            )
        );
    }
}

#[test]
fn force_replaces_an_earlier_output_that_holds_the_ort_format() {
    let dir = tmp();
    let out = dir.path().join("out");
    run_ok(&["rewrite", arg(&fixture("ort_adamw")), "-o", arg(&out)]);
    // As the console script's --ort-format leaves it, at another level too.
    add_ort_copies(&out);
    for name in ["required_operators.config", "training_model.basic.ort"] {
        std::fs::write(out.join(name), "stand-in").unwrap();
    }
    run_ok(&[
        "rewrite",
        arg(&fixture("ort_adamw")),
        "-o",
        arg(&out),
        "--force",
    ]);
    assert_eq!(carried(&out, &fixture("ort_adamw")), Vec::<&str>::new());
    assert!(!out.join("required_operators.config").exists());
    // Anything else is still not the tool's to replace.
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let stderr = expect_error(
        &[
            "rewrite",
            arg(&fixture("ort_adamw")),
            "-o",
            arg(&out),
            "--force",
        ],
        1,
    );
    assert!(stderr.contains("\"notes.txt\""), "{stderr}");
}
