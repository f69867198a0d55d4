//! The averaging schemes through the binary: `--scheme lookahead|ema|swa` with their options,
//! what the summary line and `inspect` say, which weights evaluation and `finalize` default to,
//! and every option combination that is refused (one `error:` line, no output).

mod common;

use common::*;

/// Options of the schemes, and what a rewrite of each says about itself.
const SCHEMES: &[(&[&str], &str, &str)] = &[
    (&[], "Lookahead k=5 alpha=0.5", "current"),
    (
        &["--scheme", "lookahead", "-k", "3"],
        "Lookahead k=3 alpha=0.5",
        "current",
    ),
    (
        &["--scheme", "ema", "--decay", "0.99"],
        "EMA decay=0.99 every=1",
        "averaged",
    ),
    (
        &["--scheme", "ema", "--decay", "0.9", "--every", "4"],
        "EMA decay=0.9 every=4",
        "averaged",
    ),
    (
        &["--scheme", "swa", "--swa-start", "10"],
        "SWA start=10 every=1",
        "averaged",
    ),
    (
        &[
            "--scheme",
            "swa",
            "--swa-start",
            "2",
            "--every",
            "3",
            "--eval-weights",
            "current",
        ],
        "SWA start=2 every=3",
        "current",
    ),
    // Lookahead's spellings of the weights are aliases.
    (
        &[
            "--scheme",
            "ema",
            "--decay",
            "0.5",
            "--eval-weights",
            "lookahead",
        ],
        "EMA decay=0.5 every=1",
        "current",
    ),
];

#[test]
fn each_scheme_rewrites_both_formats_and_says_what_it_did() {
    let dir = tmp();
    for (i, (options, description, weights)) in SCHEMES.iter().enumerate() {
        for input in ["ort_adamw", "training_info_sgd.onnx"] {
            let out = dir.path().join(format!("out{i}_{input}"));
            let input = fixture(input);
            let mut args = vec!["rewrite", arg(&input), "-o", arg(&out)];
            args.extend_from_slice(options);
            let stderr = run_ok(&args);
            assert!(stderr.contains(&format!(", {description} on ")), "{stderr}");
            let report = onnx_lookahead::inspect(&out).unwrap();
            let averaging = report.averaging.as_ref().expect("recorded");
            assert_eq!(averaging.description, *description);
            let rewrite = report.rewrite.as_ref().expect("recorded");
            assert_eq!(rewrite.eval_weights, *weights, "{options:?}");
            // Lookahead keeps its own report key; the others do not pretend to be it.
            assert_eq!(
                report.lookahead.is_some(),
                description.starts_with("Lookahead")
            );
            let text = inspect_text(&out);
            assert!(text.contains(description), "{text}");
        }
    }
}

#[test]
fn inspect_of_a_checkpoint_shows_the_next_update_and_the_samples() {
    let dir = tmp();
    let out = dir.path().join("swa");
    run_ok(&[
        "rewrite",
        arg(&fixture("ort_adamw")),
        "-o",
        arg(&out),
        "--scheme",
        "swa",
        "--swa-start",
        "3",
        "--every",
        "2",
    ]);
    let text = inspect_text(&out.join("checkpoint"));
    assert!(text.contains("averaging: SWA start=3 every=2"), "{text}");
    assert!(
        text.contains("next:      update in 3 optimizer step(s)"),
        "{text}"
    );
    assert!(text.contains("samples:   0"), "{text}");
    assert!(
        text.contains("swa ← swa + (weight − swa) / samples"),
        "{text}"
    );
}

#[test]
fn finalize_defaults_to_the_weights_evaluation_reads() {
    let dir = tmp();
    for (i, (options, weights)) in [
        (&["--scheme", "ema", "--decay", "0.9"][..], "averaged"),
        (&["--scheme", "swa", "--swa-start", "1"][..], "averaged"),
        (
            &[
                "--scheme",
                "ema",
                "--decay",
                "0.9",
                "--eval-weights",
                "current",
            ][..],
            "current",
        ),
        (&[][..], "current"),
    ]
    .into_iter()
    .enumerate()
    {
        let out = dir.path().join(format!("rw{i}"));
        let input = fixture("ort_sgd");
        let mut args = vec!["rewrite", arg(&input), "-o", arg(&out)];
        args.extend_from_slice(options);
        run_ok(&args);
        let plain = dir.path().join(format!("plain{i}"));
        let stderr = run_ok(&["finalize", arg(&out), "-o", arg(&plain)]);
        assert!(
            stderr.contains(&format!("{weights} weights")),
            "{options:?}: {stderr}"
        );
        // Untrained, every weight equals its average: the plain set is the input again.
        for file in [
            "training_model.onnx",
            "eval_model.onnx",
            "optimizer_model.onnx",
        ] {
            assert_eq!(
                std::fs::read(plain.join(file)).unwrap(),
                std::fs::read(fixture("ort_sgd").join(file)).unwrap(),
                "{file}"
            );
        }
    }
}

#[test]
fn options_that_do_not_fit_the_scheme_are_refused() {
    let dir = tmp();
    let cases: &[(&[&str], i32, &str)] = &[
        (&["--scheme", "ema"], 1, "the ema scheme needs --decay"),
        (&["--scheme", "swa"], 1, "the swa scheme needs --swa-start"),
        (
            &["--scheme", "ema", "--decay", "0.9", "--alpha", "0.5"],
            1,
            "--alpha does not apply to the ema scheme",
        ),
        (
            &["--scheme", "ema", "--decay", "0.9", "-k", "3"],
            1,
            "--sync-period (k) does not apply to the ema scheme",
        ),
        (
            &[
                "--scheme",
                "swa",
                "--swa-start",
                "2",
                "--inner-state",
                "reset",
            ],
            1,
            "--inner-state does not apply to the swa scheme",
        ),
        (
            &["--decay", "0.9"],
            1,
            "--decay does not apply to the lookahead scheme",
        ),
        (
            &["--scheme", "lookahead", "--swa-start", "3"],
            1,
            "--swa-start does not apply to the lookahead scheme",
        ),
        (
            &["--every", "2"],
            1,
            "--every does not apply to the lookahead scheme",
        ),
        (
            &["--scheme", "ema", "--decay", "1"],
            1,
            "decay must satisfy 0 < decay < 1",
        ),
        (
            &["--scheme", "ema", "--decay", "0"],
            1,
            "decay must satisfy 0 < decay < 1",
        ),
        (
            &["--scheme", "ema", "--decay", "nan"],
            1,
            "decay must satisfy 0 < decay < 1",
        ),
        (
            &["--scheme", "ema", "--decay", "0.9", "--every", "0"],
            1,
            "every must be an integer >= 1",
        ),
        (
            &["--scheme", "swa", "--swa-start", "0"],
            1,
            "swa_start must be an integer >= 1",
        ),
        (
            &["--scheme", "swa", "--swa-start", "99999999999"],
            1,
            "must be at most 16777216",
        ),
        (
            &["--scheme", "swa", "--swa-start", "-2"],
            2,
            "swa-start must be an integer >= 1",
        ),
        (&["--scheme", "polyak"], 2, "invalid value 'polyak'"),
        (&["--eval-weights", "slowest"], 2, "invalid value 'slowest'"),
    ];
    for (i, (options, code, message)) in cases.iter().enumerate() {
        let out = dir.path().join(format!("out{i}"));
        let input = fixture("ort_adamw");
        let mut args = vec!["rewrite", arg(&input), "-o", arg(&out)];
        args.extend_from_slice(options);
        let stderr = expect_error(&args, *code);
        assert!(stderr.contains(message), "{options:?}: {stderr}");
        assert!(!out.exists(), "{options:?}: no output");
    }
    assert!(entries(dir.path()).is_empty(), "nothing left behind");
}

#[test]
fn a_second_scheme_is_not_stacked_on_a_rewrite() {
    let dir = tmp();
    let once = dir.path().join("ema");
    run_ok(&[
        "rewrite",
        arg(&fixture("training_info_sgd.onnx")),
        "-o",
        arg(&once),
        "--scheme",
        "ema",
        "--decay",
        "0.9",
    ]);
    for options in [
        &["--scheme", "swa", "--swa-start", "2"][..],
        &["--scheme", "ema", "--decay", "0.5"][..],
        &[][..],
    ] {
        let twice = dir.path().join("twice.onnx");
        let mut args = vec!["rewrite", arg(&once), "-o", arg(&twice)];
        args.extend_from_slice(options);
        let stderr = expect_error(&args, 1);
        assert!(
            stderr.contains("already rewritten (EMA decay=0.9 every=1")
                && stderr.contains("not stacked"),
            "{stderr}"
        );
        assert!(!twice.exists());
    }
}

fn inspect_text(input: &std::path::Path) -> String {
    let output = tool().args(["inspect", arg(input)]).output().expect("runs");
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout).to_string()
}
