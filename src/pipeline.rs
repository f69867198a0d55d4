//! The one pipeline every operation runs, written once, over the format adapters:
//!
//! ```text
//! rewrite  = read -> analyse -> plan -> apply -> validate -> write
//! inspect  = read -> analyse -> report
//! finalize = read -> recognise (the record) -> unwind (revert + final weights) -> validate -> write
//! ```
//! read and analyse happen when an adapter opens its input (`formats::open`); plan is the
//! scheme's injection for that format; apply, record and validate are the same for every format;
//! write stages the output and renames it into place.

use std::path::{Path, PathBuf};

use crate::compat;
use crate::error::Result;
use crate::formats::{self, Format};
use crate::graph::patch;
use crate::graph::validate::validate_models;
use crate::options::{FinalizeOptions, OrtFormat, OrtFormatMode, RewriteOptions};
use crate::record::{RewriteRecord, TOOL_VERSION};
use crate::report::{self, Report, count_with_subgraphs};

/// What a rewrite did, for the CLI's summary line.
#[derive(Debug, Clone, PartialEq)]
pub struct RewriteSummary {
    pub format: Format,
    pub output: PathBuf,
    pub optimizer: String,
    pub wrapped_parameters: Vec<String>,
    /// Nodes added, subgraph nodes included (what `inspect` lists as injected).
    pub injected_nodes: usize,
    /// Bytes of the state added (slow weights, counters), as the runtime holds them.
    pub state_bytes: u64,
    /// Notes for the user (input files not carried over, and why).
    pub notes: Vec<String>,
    /// The scheme with its settings ("Lookahead k=5 alpha=0.5").
    pub scheme: String,
    /// The scheme's recorded settings.
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// The ORT-format files written for the output's models (ORT artifacts with a converter).
    pub ort_format: Vec<String>,
}

/// Rewrites `input` (a model file or an ORT artifacts directory) into `output`.
pub fn rewrite(input: &Path, output: &Path, options: &RewriteOptions) -> Result<RewriteSummary> {
    let mut source = formats::open(input)?;
    if let Some(refusal) = source.analysis_mut().take_refusal(options) {
        return Err(refusal);
    }
    target_applies(source.as_ref(), options.target_ort)?;
    ort_format_applies(source.as_ref(), &options.ort_format)?;
    let scheme = options.scheme.build()?;
    let mut names = source.reserved_names();
    let plan = source.plan(scheme.as_ref(), options, &mut names)?;
    let injected_nodes = plan
        .patches
        .iter()
        .map(|(_, p)| count_with_subgraphs(p.added_nodes().map(|(_, n)| n)))
        .sum();
    let mut record = RewriteRecord {
        version: TOOL_VERSION.to_string(),
        scheme: scheme.name().to_string(),
        settings: scheme.settings(),
        mode: plan.mode.unwrap_or(crate::record::Mode::TrainingInfo),
        eval_weights: options
            .eval_weights
            .unwrap_or_else(|| scheme.default_eval_weights()),
        parameters: plan.wrapped.clone(),
        counters: plan.counters.clone(),
        shared: plan.shared.clone(),
        undo: Default::default(),
    };
    let mut models = Vec::new();
    for (label, file) in source.models() {
        let Some(patch) = plan
            .patches
            .iter()
            .find(|(l, _)| *l == label)
            .map(|(_, p)| p.clone())
        else {
            continue;
        };
        let mut model = file.model.clone();
        record.undo = patch::apply(&mut model, patch)?;
        patch::set_metadata(&mut model, record.metadata());
        models.push((label, model));
    }
    record.undo = Default::default();
    let state_bytes = state_bytes(source.analysis(), &record);
    let loads_note = retarget(
        source.as_ref(),
        options.target_ort,
        &mut models,
        source.checkpoint(),
    )?;
    let validated = validate_models(models)?;
    let written = source.write(validated, &plan, &record, output, options)?;
    let mut notes = written.notes;
    notes.extend(loads_note);
    Ok(RewriteSummary {
        format: source.format(),
        output: output.to_path_buf(),
        optimizer: source.analysis().optimizer.clone().unwrap_or_default(),
        wrapped_parameters: plan.wrapped.iter().map(|w| w.name.clone()).collect(),
        injected_nodes,
        state_bytes,
        notes,
        scheme: scheme.describe(),
        settings: scheme.settings(),
        ort_format: written.ort_format,
    })
}

/// Bytes of the state a rewrite adds: each state tensor has its parameter's type and shape; the
/// counters are one float (ORT) or int64 (training_info) each.
fn state_bytes(analysis: &formats::Analysis, record: &RewriteRecord) -> u64 {
    let sizes: std::collections::HashMap<&str, u64> = analysis
        .parameters
        .iter()
        .filter_map(|p| {
            crate::io::dtype::tensor_byte_length(&p.dims, p.data_type).map(|b| (p.name.as_str(), b))
        })
        .collect();
    let counter = if record.mode == crate::record::Mode::TrainingInfo {
        8
    } else {
        4
    };
    let state: u64 = record
        .parameters
        .iter()
        .map(|p| sizes.get(p.name.as_str()).copied().unwrap_or(0) * p.state.len() as u64)
        .sum();
    state + counter * record.counters.len() as u64
}

/// What `finalize` did, for the CLI's summary line.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalizeSummary {
    pub format: Format,
    pub output: PathBuf,
    pub weights: crate::scheme::EvalWeights,
    /// Parameters whose values changed (a pending sync folded in, or the slow weights taken).
    pub changed: Vec<String>,
    pub notes: Vec<String>,
    /// The ORT-format files written for the output's models (ORT artifacts with a converter).
    pub ort_format: Vec<String>,
}

/// Takes a rewrite back: `input` (rewritten artifacts, a rewritten training_info model, or an
/// inference model exported from rewritten artifacts) is written to `output` in its plain form,
/// at the chosen weights.
pub fn finalize(input: &Path, output: &Path, options: &FinalizeOptions) -> Result<FinalizeSummary> {
    let mut source = formats::open(input)?;
    // The output is written from decoded models: fields the schema does not know would be lost.
    let lossy = source
        .analysis_mut()
        .refusals
        .iter()
        .position(|e| matches!(e, crate::error::Error::UnknownFields { .. }));
    if let Some(position) = lossy {
        return Err(source.analysis_mut().refusals.remove(position));
    }
    target_applies(source.as_ref(), options.target_ort)?;
    ort_format_applies(source.as_ref(), &options.ort_format)?;
    let mut unwound = source.unwind(options)?;
    let mut models = std::mem::take(&mut unwound.models);
    let changed = unwound.changed.clone();
    let weights = unwound.weights;
    let loads_note = retarget(
        source.as_ref(),
        options.target_ort,
        &mut models,
        unwound.checkpoint.as_ref(),
    )?;
    let validated = validate_models(models)?;
    let written = source.write_unwound(validated, unwound, output, options)?;
    let mut notes = written.notes;
    notes.extend(loads_note);
    Ok(FinalizeSummary {
        format: source.format(),
        output: output.to_path_buf(),
        weights,
        changed,
        notes,
        ort_format: written.ort_format,
    })
}

/// `--target-ort` is about ONNX Runtime training artifacts: refused for any other input.
fn target_applies(source: &dyn formats::Adapter, target: Option<&compat::Release>) -> Result<()> {
    match target {
        Some(release) => artifacts_only(source, &format!("--target-ort {}", release.id)),
        None => Ok(()),
    }
}

/// `--ort-format` is about ONNX Runtime training artifacts, and needs a converter that can run;
/// refused before anything is read further or written.
fn ort_format_applies(source: &dyn formats::Adapter, ort: &OrtFormat) -> Result<()> {
    if ort.mode != OrtFormatMode::Always {
        return Ok(());
    }
    artifacts_only(source, "--ort-format")?;
    formats::ort_artifacts::required_converter(ort).map(drop)
}

/// Refuses `option` for any input but ONNX Runtime training artifacts.
fn artifacts_only(source: &dyn formats::Adapter, option: &str) -> Result<()> {
    if source.format() == Format::OrtArtifacts {
        return Ok(());
    }
    Err(crate::error::Error::InvalidOption(format!(
        "{option} applies to ONNX Runtime training artifacts; {} is {}",
        source.path().display(),
        match source.format() {
            Format::TrainingInfo =>
                "a model with training_info (trained by onnx_lookahead.training_info, not ONNX Runtime)",
            Format::OrtCheckpoint => "a lone checkpoint",
            _ => "a model, not an artifacts set",
        }
    )))
}

/// Writes the target release's headers into an artifacts set's output models; without a target,
/// a note when no ONNX Runtime training release would load the output as written.
fn retarget(
    source: &dyn formats::Adapter,
    target: Option<&'static compat::Release>,
    models: &mut Vec<(String, crate::generated::onnx::ModelProto)>,
    checkpoint: Option<&crate::io::checkpoint::Checkpoint>,
) -> Result<Option<String>> {
    if source.format() != Format::OrtArtifacts {
        return Ok(None);
    }
    let originals: Vec<(String, &crate::generated::onnx::ModelProto)> = source
        .models()
        .into_iter()
        .map(|(label, file)| (label, &file.model))
        .collect();
    if let Some(release) = target {
        compat::target::retarget_models(release, source.path(), &originals, models)?;
        return Ok(None);
    }
    let view = compat::SetView::new(
        compat::target::output_models(&originals, models),
        source.checkpoint_name().zip(checkpoint.map(|c| c.version)),
    );
    Ok(compat::target::unloadable_note(&view, checkpoint))
}

/// Reports what the tool finds in `input`, including what a rewrite would refuse.
pub fn inspect(input: &Path) -> Result<Report> {
    let source = formats::open(input)?;
    Ok(report::build(source.as_ref()))
}

/// A picture of what the rewrite injected into a model or artifacts directory (or, for input not
/// rewritten, of what a rewrite would wrap), in Graphviz DOT or mermaid. A lone checkpoint has
/// no graphs: `Error::NothingToDraw`.
pub fn draw(input: &Path, format: report::draw::DrawFormat) -> Result<String> {
    report::draw::render(&inspect(input)?, format)
}

/// A readable text rendering of every graph of a model file or artifacts directory.
pub fn dump(input: &Path) -> Result<String> {
    let source = formats::open(input)?;
    let mut out = String::new();
    for (label, file) in source.models() {
        if source.format() == Format::OrtArtifacts {
            out.push_str(&format!("# {label}\n"));
        }
        out.push_str(&crate::graph::dump::dump_model(&file.model));
    }
    Ok(out)
}
