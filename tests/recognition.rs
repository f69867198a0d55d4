//! A rewrite is recognised from what it recorded: for every format, alias mode and alpha (1 and
//! not 1), `inspect` of the output marks every trainable parameter (and no other) as wrapped,
//! lists the recorded state, reports k, alpha and mode, and counts exactly the injected nodes the
//! rewrite's summary counted.

mod common;

use std::collections::BTreeSet;

use common::fixture;
use onnx_lookahead::inject::ort::AliasOp;
use onnx_lookahead::{RewriteOptions, SchemeOptions};

#[test]
fn inspect_of_a_rewrite_reports_what_it_recorded() {
    let work = common::tmp();
    use onnx_lookahead::scheme::InnerState::{Keep, Reset};
    let cases = [
        ("ort_adamw", AliasOp::PassThrough, "passthrough", Keep),
        ("ort_adamw", AliasOp::Reshape, "reshape", Keep),
        ("ort_adamw", AliasOp::PassThrough, "passthrough", Reset),
        ("ort_sgd", AliasOp::PassThrough, "passthrough", Keep),
        ("ort_sgd", AliasOp::Reshape, "reshape", Keep),
        (
            "ort_adamw_frozen",
            AliasOp::PassThrough,
            "passthrough",
            Keep,
        ),
        ("ort_adamw_frozen", AliasOp::Reshape, "reshape", Keep),
        ("ort_adamw_frozen", AliasOp::Reshape, "reshape", Reset),
        (
            "training_info_sgd.onnx",
            AliasOp::PassThrough,
            "training-info",
            Keep,
        ),
    ];
    for (i, (input, alias, mode, inner_state)) in cases.into_iter().enumerate() {
        for (k, alpha) in [(3, 1.0), (4, 0.25)] {
            let what = format!("{input} {mode} alpha={alpha} {}", inner_state.id());
            let original = onnx_lookahead::inspect(&fixture(input)).unwrap();
            assert!(original.lookahead.is_none(), "{what}");
            let out = work.path().join(format!("out{i}_{k}"));
            let out = if input.ends_with(".onnx") {
                out.with_extension("onnx")
            } else {
                out
            };
            let options = RewriteOptions {
                scheme: SchemeOptions {
                    k: Some(k),
                    alpha: Some(alpha),
                    inner_state: Some(inner_state),
                    ..Default::default()
                },
                alias,
                ..Default::default()
            };
            let summary = onnx_lookahead::rewrite(&fixture(input), &out, &options).unwrap();
            let report = onnx_lookahead::inspect(&out).unwrap();

            let lookahead = report.lookahead.as_ref().expect("recognised as rewritten");
            assert_eq!((lookahead.k, lookahead.alpha), (k, alpha), "{what}");
            let rewrite = report.rewrite.as_ref().expect("a record");
            assert_eq!(rewrite.mode, mode, "{what}");
            assert_eq!(rewrite.scheme, "lookahead", "{what}");
            assert_eq!(rewrite.inner_state, inner_state.id(), "{what}");

            let trainable: BTreeSet<&str> = original
                .parameters
                .iter()
                .filter(|p| p.trainable)
                .map(|p| p.name.as_str())
                .collect();
            assert!(!trainable.is_empty(), "{what}");
            let wrapped: BTreeSet<&str> = report
                .parameters
                .iter()
                .filter(|p| p.lookahead)
                .map(|p| p.name.as_str())
                .collect();
            assert_eq!(
                wrapped, trainable,
                "{what}: every trainable parameter, no other"
            );
            let summary_wrapped: BTreeSet<&str> = summary
                .wrapped_parameters
                .iter()
                .map(String::as_str)
                .collect();
            assert_eq!(summary_wrapped, trainable, "{what}");
            assert_eq!(
                report.parameters.len(),
                original.parameters.len(),
                "{what}: the state is not listed as parameters"
            );

            // One slow weight per wrapped parameter and one counter, all recorded and present.
            assert_eq!(report.injected_state.len(), trainable.len() + 1, "{what}");
            for p in &trainable {
                let slow = format!("lookahead__slow__{p}");
                assert!(report.injected_state.contains(&slow), "{what}: {slow}");
            }
            assert_eq!(
                report.injected_nodes.len(),
                summary.injected_nodes,
                "{what}: inspect counts what the rewrite injected"
            );
            assert!(
                report
                    .refusals
                    .iter()
                    .any(|r| r.contains("already rewritten")),
                "{what}"
            );
        }
    }
}
