//! Whether a runtime loads a set of artifacts, and if not, the first reason: the checkpoint's
//! format, a model's IR version, an opset import past what the release loads, an operator it
//! lacks (a contrib operator it does not register, an ONNX schema version with no CPU kernel),
//! or what onnxruntime-web alone refuses.

use super::facts::ModelFacts;
use super::releases::{Release, domain_name};
use crate::generated::onnx::ModelProto;

/// The runtimes a report covers: the Python training releases and the browser's.
#[derive(Debug, Clone, Copy)]
pub enum Runtime {
    /// onnxruntime-training(-cpu) in Python (and the native training API of the same release).
    Training(&'static Release),
    /// onnxruntime-web's training build (1.17 to 1.19; 1.16 had none).
    Web(&'static Release),
}

impl Runtime {
    pub fn release(self) -> &'static Release {
        match self {
            Runtime::Training(r) | Runtime::Web(r) => r,
        }
    }

    /// "onnxruntime-training 1.19" or "onnxruntime-web 1.19".
    pub fn name(self) -> String {
        match self {
            Runtime::Training(r) => format!("onnxruntime-training {}", r.id),
            Runtime::Web(r) => format!("onnxruntime-web {}", r.id),
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Runtime::Training(_) => "python",
            Runtime::Web(_) => "web",
        }
    }
}

/// Every runtime a report covers, oldest first: training 1.16-1.19, then web 1.17-1.19.
pub fn runtimes() -> Vec<Runtime> {
    let releases = super::releases::releases();
    let mut all: Vec<Runtime> = releases.iter().map(Runtime::Training).collect();
    all.extend(releases.iter().filter(|r| r.id != "1.16").map(Runtime::Web));
    all
}

/// The files of a set that decide whether it loads.
#[derive(Debug, Clone, Default)]
pub struct SetView {
    /// The models' facts, in the order they are loaded (training, eval, optimizer).
    pub models: Vec<ModelFacts>,
    /// The checkpoint's file name and format version, if the set has one.
    pub checkpoint: Option<(String, i32)>,
}

impl SetView {
    pub fn new<'m>(
        models: impl IntoIterator<Item = (String, &'m ModelProto)>,
        checkpoint: Option<(String, i32)>,
    ) -> SetView {
        SetView {
            models: models
                .into_iter()
                .map(|(label, model)| ModelFacts::of(&label, model))
                .collect(),
            checkpoint,
        }
    }
}

/// The first reason `runtime` would not load `set`; None when it would (as far as the tables
/// know: see releases.rs).
pub fn blocker(runtime: Runtime, set: &SetView) -> Option<String> {
    let release = runtime.release();
    if let Some((name, format)) = &set.checkpoint
        && let Some(reason) = checkpoint_blocker(release, name, *format)
    {
        return Some(reason);
    }
    set.models.iter().find_map(|facts| {
        ir_blocker(release, facts)
            .or_else(|| opset_blocker(release, facts))
            .or_else(|| operator_blocker(release, facts))
            .or_else(|| match runtime {
                Runtime::Web(_) => facts.web_refusal.clone(),
                Runtime::Training(_) => None,
            })
    })
}

pub fn checkpoint_blocker(release: &Release, name: &str, format: i32) -> Option<String> {
    (format != release.checkpoint_format).then(|| {
        format!(
            "{name}: checkpoint format {format}; ONNX Runtime {} reads only format {}",
            release.id, release.checkpoint_format
        )
    })
}

fn ir_blocker(release: &Release, facts: &ModelFacts) -> Option<String> {
    (facts.ir_version > release.max_ir).then(|| {
        format!(
            "{} has IR version {}; ONNX Runtime {} loads up to IR {}",
            facts.label, facts.ir_version, release.id, release.max_ir
        )
    })
}

/// An opset import (of the model or of one of its functions) past what the release loads.
fn opset_blocker(release: &Release, facts: &ModelFacts) -> Option<String> {
    facts.imports.iter().find_map(|(scope, domain, version)| {
        let max = release.max_opset(domain)?;
        (*version > max).then(|| {
            format!(
                "{} imports {} opset {version}; ONNX Runtime {} loads up to opset {max}",
                facts.whose(*scope),
                domain_name(domain),
                release.id
            )
        })
    })
}

/// An operator the release lacks: a contrib operator it does not register, or an ONNX operator
/// version it has no CPU kernel for.
pub fn operator_blocker(release: &Release, facts: &ModelFacts) -> Option<String> {
    facts.operators.iter().find_map(|o| {
        if release.owns_domain(&o.domain) {
            return (!release.has_contrib(&o.domain, &o.op)).then(|| {
                format!(
                    "{}: {} is an operator ONNX Runtime {} does not have",
                    facts.label, o.node, release.id
                )
            });
        }
        let (since, opset) = (o.since?, o.opset?);
        (!release.has_kernel(&o.domain, &o.op, since)).then(|| {
            format!(
                "{}: {} runs as {}-{since} ({} opset {opset}), for which ONNX Runtime {} has no CPU kernel",
                facts.label,
                o.node,
                o.op,
                domain_name(&o.domain),
                release.id
            )
        })
    })
}
