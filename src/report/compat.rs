//! The report's `compatibility`: per ONNX Runtime release (training in Python, onnxruntime-web),
//! whether it loads the input as it is, the first reason it would not, and whether
//! `--target-ort` writes the set for it.

use std::fmt::Write;

use serde::Serialize;

use super::Report;
use crate::compat::{SetView, blocker, runtimes, target};
use crate::formats::{Adapter, Format};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CompatibilityReport {
    /// "onnxruntime-training 1.19" or "onnxruntime-web 1.19".
    pub runtime: String,
    /// "python" or "web".
    pub kind: String,
    /// The release the facts were probed in ("1.19.2").
    pub release: String,
    pub loads: bool,
    /// The first reason it would not load the input (null when it would).
    pub reason: Option<String>,
    /// For artifacts: whether `--target-ort` (on `rewrite`, or on `finalize` of a rewritten set)
    /// writes the set so that this runtime loads it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_ort: Option<TargetReport>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TargetReport {
    /// The flag ("--target-ort 1.19").
    pub flag: String,
    pub writable: bool,
    /// Why it cannot (null when it can).
    pub reason: Option<String>,
}

/// The rows for an artifacts set or a lone checkpoint; none for models (training_info models
/// run in onnx_lookahead.training_info, plain models are not training sets).
pub fn build(input: &dyn Adapter) -> Vec<CompatibilityReport> {
    if !matches!(input.format(), Format::OrtArtifacts | Format::OrtCheckpoint) {
        return Vec::new();
    }
    let models = input.models();
    let set = SetView::new(
        models
            .iter()
            .map(|(label, file)| (label.clone(), &file.model)),
        input
            .checkpoint_name()
            .zip(input.checkpoint().map(|c| c.version)),
    );
    let artifacts = input.format() == Format::OrtArtifacts;
    runtimes()
        .into_iter()
        .map(|runtime| {
            let reason = blocker(runtime, &set);
            let target_ort = artifacts.then(|| {
                let verdict = target::target_verdict(runtime, &set, input.checkpoint());
                TargetReport {
                    flag: format!("--target-ort {}", runtime.release().id),
                    writable: verdict.is_ok(),
                    reason: verdict.err(),
                }
            });
            CompatibilityReport {
                runtime: runtime.name(),
                kind: runtime.kind().to_string(),
                release: runtime.release().version.clone(),
                loads: reason.is_none(),
                reason,
                target_ort,
            }
        })
        .collect()
}

impl Report {
    /// One line per runtime: whether it loads the input, what `--target-ort` can do, and why not.
    pub(super) fn render_compatibility(&self, s: &mut String) {
        if self.compatibility.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "\nONNX Runtime releases (loads it as it is? can --target-ort write it for the release? why not):"
        );
        for row in &self.compatibility {
            let loads = if row.loads { "loads" } else { "no" };
            let target = match &row.target_ort {
                Some(t) => format!("{}: {}", t.flag, if t.writable { "yes" } else { "no" }),
                None => String::new(),
            };
            let mut why = row.reason.clone().unwrap_or_default();
            if let Some(reason) = row.target_ort.as_ref().and_then(|t| t.reason.as_ref())
                && Some(reason) != row.reason.as_ref()
            {
                let sep = if why.is_empty() { "" } else { "; " };
                why = format!("{why}{sep}--target-ort cannot: {reason}");
            }
            let line = format!("  {:<27} {loads:<6} {target:<23} {why}", row.runtime);
            let _ = writeln!(s, "{}", line.trim_end());
        }
    }
}
