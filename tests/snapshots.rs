//! Snapshot tests of readable dumps of rewritten graphs: a review of tests/snapshots/*.snap
//! shows exactly what the rewrite injects, and any change to it shows up in the diff.
//! Update deliberately with `cargo insta review` (or INSTA_UPDATE=always cargo test).

mod common;

use common::fixture;
use onnx_lookahead::{RewriteOptions, SchemeOptions};

fn options(k: u64, alpha: f64) -> RewriteOptions {
    RewriteOptions {
        scheme: SchemeOptions {
            k: Some(k),
            alpha: Some(alpha),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn training_info_sgd_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    onnx_lookahead::rewrite(&fixture("training_info_sgd.onnx"), &out, &options(3, 0.5)).unwrap();
    insta::assert_snapshot!(onnx_lookahead::dump(&out).unwrap());
}

#[test]
fn training_info_sgd_rewrite_alpha_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    onnx_lookahead::rewrite(&fixture("training_info_sgd.onnx"), &out, &options(1, 1.0)).unwrap();
    insta::assert_snapshot!(onnx_lookahead::dump(&out).unwrap());
}

#[test]
fn ort_sgd_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("artifacts");
    onnx_lookahead::rewrite(&fixture("ort_sgd"), &out, &options(5, 0.5)).unwrap();
    insta::assert_snapshot!(onnx_lookahead::dump(&out).unwrap());
}

#[test]
fn ort_adamw_inspect_text() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("artifacts");
    onnx_lookahead::rewrite(&fixture("ort_adamw_frozen"), &out, &options(5, 0.5)).unwrap();
    let mut report = onnx_lookahead::inspect(&out).unwrap();
    report.input = "<rewritten ort_adamw_frozen>".into();
    let text = report
        .to_text()
        .replace(out.to_str().unwrap(), "<rewritten ort_adamw_frozen>");
    insta::assert_snapshot!(text);
}

#[test]
fn ort_sgd_rewrite_parallel_safe() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("artifacts");
    let options = RewriteOptions {
        alias: onnx_lookahead::inject::ort::AliasOp::Reshape,
        ..options(3, 0.8)
    };
    onnx_lookahead::rewrite(&fixture("ort_sgd"), &out, &options).unwrap();
    let dump = onnx_lookahead::dump(&out).unwrap();
    // Only the training graph differs from the default rewrite; snapshot that part.
    let training = dump
        .split("# eval_model.onnx")
        .next()
        .unwrap_or_default()
        .to_string();
    insta::assert_snapshot!(training);
}

#[test]
fn ort_adamw_inner_state_reset_optimizer_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("artifacts");
    let mut options = options(3, 0.5);
    options.scheme.inner_state = Some(onnx_lookahead::scheme::InnerState::Reset);
    onnx_lookahead::rewrite(&fixture("ort_adamw"), &out, &options).unwrap();
    let dump = onnx_lookahead::dump(&out).unwrap();
    // The training and eval graphs are those of keep; only the optimizer model is patched.
    let optimizer = dump
        .split("# optimizer_model.onnx")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    insta::assert_snapshot!(optimizer);
}

/// EMA and SWA through the same injection: what an update writes (the average, SWA's sample
/// count last) and what evaluation reads.
#[test]
fn ort_adamw_ema_and_swa_rewrites() {
    for (name, scheme) in [
        (
            "ema",
            SchemeOptions {
                scheme: Some("ema".into()),
                decay: Some(0.9),
                every: Some(2),
                ..Default::default()
            },
        ),
        (
            "swa",
            SchemeOptions {
                scheme: Some("swa".into()),
                swa_start: Some(3),
                every: Some(2),
                ..Default::default()
            },
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("artifacts");
        let options = RewriteOptions {
            scheme,
            ..Default::default()
        };
        onnx_lookahead::rewrite(&fixture("ort_sgd"), &out, &options).unwrap();
        insta::assert_snapshot!(
            format!("ort_sgd_{name}_rewrite"),
            onnx_lookahead::dump(&out).unwrap()
        );
    }
}

#[test]
fn training_info_swa_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let options = RewriteOptions {
        scheme: SchemeOptions {
            scheme: Some("swa".into()),
            swa_start: Some(2),
            ..Default::default()
        },
        ..Default::default()
    };
    onnx_lookahead::rewrite(&fixture("training_info_sgd.onnx"), &out, &options).unwrap();
    insta::assert_snapshot!(onnx_lookahead::dump(&out).unwrap());
}
