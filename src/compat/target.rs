//! `--target-ort`: the header changes that make a set load in one release, and only those that
//! change nothing the set computes: the checkpoint's format version (1 <-> 2, when the checkpoint
//! uses nothing format 1 lacks), a model's IR version lowered to what the release loads (when its
//! content needs no newer IR, see ir.rs), and an opset import no node uses lowered to what the
//! release loads. Anything else is refused with the reason (which file, which header, which node).

use std::path::Path;

use super::check::{Runtime, SetView, blocker, operator_blocker};
use super::facts::{ModelFacts, Scope};
use super::releases::{Release, domain_key, domain_name};
use crate::error::{Error, Result};
use crate::generated::onnx::ModelProto;
use crate::io::checkpoint::Checkpoint;

/// The header changes of one model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Headers {
    pub ir_version: Option<i64>,
    /// (whose imports, domain, new version).
    pub opsets: Vec<(Scope, String, i64)>,
}

impl Headers {
    pub fn is_empty(&self) -> bool {
        self.ir_version.is_none() && self.opsets.is_empty()
    }
}

/// The header changes that make a model (its facts) load in `release`, or why none can.
pub fn model_headers(
    release: &Release,
    facts: &ModelFacts,
) -> std::result::Result<Headers, String> {
    let mut headers = Headers::default();
    for (scope, domain, version) in &facts.imports {
        let Some(max) = release.max_opset(domain) else {
            continue;
        };
        if *version <= max {
            continue;
        }
        if let Some(node) = facts.used.get(&(*scope, domain.clone())) {
            return Err(format!(
                "{} imports {} opset {version} and {node} uses it; ONNX Runtime {} runs up to opset {max} (export the model at opset {max} or lower)",
                facts.whose(*scope),
                domain_name(domain),
                release.id
            ));
        }
        headers.opsets.push((*scope, domain.clone(), max));
    }
    if let Some(reason) = operator_blocker(release, facts) {
        return Err(reason);
    }
    if facts.ir_version > release.max_ir {
        if let Some(need) = facts.ir_needed.as_ref().filter(|n| n.ir > release.max_ir) {
            return Err(format!(
                "{} has IR version {} and uses {} (IR {}); ONNX Runtime {} loads up to IR {}",
                facts.label, facts.ir_version, need.what, need.ir, release.id, release.max_ir
            ));
        }
        headers.ir_version = Some(release.max_ir);
    }
    Ok(headers)
}

/// Writes the header changes into a model.
pub fn apply(model: &mut ModelProto, headers: &Headers) {
    if let Some(ir) = headers.ir_version {
        model.ir_version = Some(ir);
    }
    for (scope, domain, version) in &headers.opsets {
        let imports = match scope {
            Scope::Model => &mut model.opset_import,
            Scope::Function(i) => match model.functions.get_mut(*i) {
                Some(f) => &mut f.opset_import,
                None => continue,
            },
        };
        for import in imports.iter_mut() {
            if domain_key(import.domain()) == domain {
                import.version = Some(*version);
            }
        }
    }
}

/// The checkpoint format version to write for `release`, or why the checkpoint cannot be
/// written in it: format 1 (1.16, 1.17) has neither the nominal-state flag nor external data,
/// which format 2 added.
pub fn checkpoint_format(
    release: &Release,
    name: &str,
    checkpoint: &Checkpoint,
) -> std::result::Result<i32, String> {
    let target = release.checkpoint_format;
    if target == 1 && checkpoint.version != 1 {
        let module = checkpoint.module_state.as_ref();
        if module.is_some_and(|m| m.is_nominal_state) {
            return Err(format!(
                "{name} is a nominal checkpoint, which checkpoint format 1 (ONNX Runtime {}) cannot mark as such",
                release.id
            ));
        }
        if checkpoint.uses_external_data() {
            return Err(format!(
                "{name} keeps its tensors in an external data file, which checkpoint format 1 (ONNX Runtime {}) cannot refer to",
                release.id
            ));
        }
    }
    Ok(target)
}

/// The error of a set that cannot be written for `release`.
pub fn refusal(release: &Release, path: &Path, reason: String) -> Error {
    Error::TargetOrt {
        path: path.to_path_buf(),
        release: release.id.to_string(),
        reason,
    }
}

/// Writes `release`'s headers into the output models of the set at `path`. `models` holds the
/// models the operation changed (patched or reverted); a model of `originals` not among them is
/// added, converted, only where its headers change (otherwise it is still copied byte for byte).
pub fn retarget_models(
    release: &Release,
    path: &Path,
    originals: &[(String, &ModelProto)],
    models: &mut Vec<(String, ModelProto)>,
) -> Result<()> {
    for (label, original) in originals {
        let position = models.iter().position(|(l, _)| l == label);
        let current = position.map_or(*original, |i| &models[i].1);
        let headers = model_headers(release, &ModelFacts::of(label, current))
            .map_err(|r| refusal(release, path, r))?;
        if headers.is_empty() {
            continue;
        }
        match position {
            Some(i) => apply(&mut models[i].1, &headers),
            None => {
                let mut model = (*original).clone();
                apply(&mut model, &headers);
                models.push((label.clone(), model));
            }
        }
    }
    Ok(())
}

/// The models of an output set: the ones the operation wrote, else the input's.
pub fn output_models<'a>(
    originals: &[(String, &'a ModelProto)],
    written: &'a [(String, ModelProto)],
) -> Vec<(String, &'a ModelProto)> {
    originals
        .iter()
        .map(|(label, original)| {
            let model = written
                .iter()
                .find(|(l, _)| l == label)
                .map_or(*original, |(_, m)| m);
            (label.clone(), model)
        })
        .collect()
}

/// A note for an output set no ONNX Runtime training release loads: why the newest does not, and
/// the `--target-ort` values that write it for one that does (or why none can).
pub fn unloadable_note(set: &SetView, checkpoint: Option<&Checkpoint>) -> Option<String> {
    let releases = super::releases::releases();
    if releases
        .iter()
        .any(|r| blocker(Runtime::Training(r), set).is_none())
    {
        return None;
    }
    let newest = releases.last()?;
    let reason = blocker(Runtime::Training(newest), set)?;
    let targets: Vec<&str> = releases
        .iter()
        .filter(|r| writable(r, set, checkpoint).is_ok())
        .map(|r| r.id)
        .collect();
    let fix = if targets.is_empty() {
        format!(
            "--target-ort cannot fix it either ({})",
            writable(newest, set, checkpoint).err().unwrap_or_default()
        )
    } else if let [one] = targets.as_slice() {
        format!("--target-ort {one} writes it for ONNX Runtime {one}")
    } else {
        format!(
            "--target-ort VERSION writes it for that release (VERSION: {})",
            targets.join(", ")
        )
    };
    Some(format!(
        "no ONNX Runtime training release (1.16-1.19) loads the set as written: {reason}; {fix}"
    ))
}

/// Whether `--target-ort release` can write `set` (its models and checkpoint), or why not.
pub fn writable(
    release: &Release,
    set: &SetView,
    checkpoint: Option<&Checkpoint>,
) -> std::result::Result<(), String> {
    for facts in &set.models {
        model_headers(release, facts)?;
    }
    if let (Some((name, _)), Some(checkpoint)) = (&set.checkpoint, checkpoint) {
        checkpoint_format(release, name, checkpoint)?;
    }
    Ok(())
}

/// Whether `--target-ort` of `runtime`'s release writes `set` so that `runtime` loads it: the
/// header changes must be possible, and nothing but headers may stand in the way (what web alone
/// refuses is not a header).
pub fn target_verdict(
    runtime: Runtime,
    set: &SetView,
    checkpoint: Option<&Checkpoint>,
) -> std::result::Result<(), String> {
    writable(runtime.release(), set, checkpoint)?;
    if let Runtime::Web(_) = runtime
        && let Some(reason) = set.models.iter().find_map(|f| f.web_refusal.clone())
    {
        return Err(reason);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compat::release;
    use crate::io::checkpoint::read_checkpoint;

    fn data(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name)
    }

    #[test]
    fn checkpoint_formats_by_release() {
        let plain = read_checkpoint(data("checkpoint_adamw")).unwrap();
        let old = release("1.17").unwrap();
        let new = release("1.19").unwrap();
        assert_eq!(checkpoint_format(old, "checkpoint", &plain), Ok(1));
        assert_eq!(checkpoint_format(new, "checkpoint", &plain), Ok(2));
        let mut format1 = plain.clone();
        format1.version = 1;
        assert_eq!(checkpoint_format(new, "checkpoint", &format1), Ok(2));
        let nominal = read_checkpoint(data("checkpoint_adamw_nominal")).unwrap();
        let refused = checkpoint_format(old, "nominal_checkpoint", &nominal).unwrap_err();
        assert!(refused.contains("nominal"), "{refused}");
        assert_eq!(
            checkpoint_format(new, "nominal_checkpoint", &nominal),
            Ok(2)
        );
        let external = read_checkpoint(data("checkpoint_adamw_external")).unwrap();
        let refused = checkpoint_format(old, "checkpoint", &external).unwrap_err();
        assert!(refused.contains("external data"), "{refused}");
    }

    #[test]
    fn ir_lowered_as_far_as_the_content_allows() {
        let model = |ir: i64, data_type: i32| ModelProto {
            ir_version: Some(ir),
            graph: Some(crate::generated::onnx::GraphProto {
                initializer: vec![crate::generated::onnx::TensorProto {
                    name: Some("w".into()),
                    data_type: Some(data_type),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let r119 = release("1.19").unwrap();
        let r117 = release("1.17").unwrap();
        // INT4 (IR 10) at IR 14: 1.19 takes it at IR 10, 1.17 (IR 9) cannot.
        let int4 = ModelFacts::of("m", &model(14, 22));
        assert_eq!(model_headers(r119, &int4).unwrap().ir_version, Some(10));
        let refused = model_headers(r117, &int4).unwrap_err();
        assert!(
            refused.contains("int4") && refused.contains("IR 10"),
            "{refused}"
        );
        // A model within the release's IR keeps its version.
        let plain = ModelFacts::of("m", &model(7, 1));
        assert!(model_headers(r117, &plain).unwrap().is_empty());
    }
}
