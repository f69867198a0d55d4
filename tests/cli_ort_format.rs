//! ORT-format copies (`<model>.ort`, `<model>.required_operators.config`) in an artifacts folder
//! describe one model's graphs: wherever an operation writes that model anew they are left out
//! (with a note naming the command that regenerates them), and wherever it leaves the model as it
//! was they are copied with it. Through the binary, for every way a model can change.

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
