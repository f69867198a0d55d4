//! The two user-facing operations, end to end: `rewrite` (read, analyse, plan, apply, validate,
//! write atomically) and `inspect` (the same pipeline stopped before apply, reporting what it
//! found and, on rewritten input, what was injected).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::formats::{self, Format, training_info as ti};
use crate::generated::onnx::ModelProto;
use crate::graph::names::NameGenerator;
use crate::graph::patch;
use crate::graph::validate::validate_model;
use crate::inspect::{self, LookaheadReport, NodeRef, ParameterReport, Report};
use crate::io::external_data::{check_external_data, stage_external_files};
use crate::io::model::{ModelFile, encoded_len_checked, load_model, write_model};
use crate::io::output::{InputPaths, check_output};
use crate::io::tensor_check::check_model_tensors;
use crate::lookahead::{self, NAME_PREFIX, Options, marker};

/// What `rewrite` should do besides Lookahead's own options.
#[derive(Debug, Clone, Copy)]
pub struct RewriteOptions {
    pub lookahead: Options,
    /// Replace an existing output.
    pub force: bool,
    /// Write even when fields unknown to the schema would be dropped.
    pub allow_lossy: bool,
    /// ORT artifacts: how readers of a parameter wait for the sync (PassThrough is zero-copy;
    /// Reshape also works with ONNX Runtime's parallel executor).
    pub alias: crate::lookahead::ort::AliasOp,
}

/// What a rewrite did, for the CLI's summary line.
#[derive(Debug, Clone, PartialEq)]
pub struct RewriteSummary {
    pub format: Format,
    pub output: PathBuf,
    pub optimizer: String,
    pub wrapped_parameters: Vec<String>,
    pub injected_nodes: usize,
    /// Input files not carried over because they would describe the original graphs (e.g. the
    /// ORT-format `.ort` copies of rewritten models).
    pub dropped_files: Vec<String>,
}

/// Rewrites `input` (a model file or an ORT artifacts directory) into `output`.
pub fn rewrite(input: &Path, output: &Path, options: &RewriteOptions) -> Result<RewriteSummary> {
    if formats::detect_path(input)? == Some(Format::OrtArtifacts) {
        return crate::formats::ort_artifacts::rewrite(input, output, options);
    }
    let file = load_model(input)?;
    match formats::detect_model(&file.model) {
        Format::TrainingInfo => rewrite_training_info(file, output, options),
        _ => Err(Error::NoOptimizer {
            path: input.to_path_buf(),
            reason: if looks_like_ort_training_graph(&file.model) {
                "this is an ONNX Runtime training graph; pass the whole artifacts directory".into()
            } else {
                "the model has no training_info (an inference model?)".into()
            },
        }),
    }
}

/// Reports what the tool finds in `input`.
pub fn inspect(input: &Path) -> Result<Report> {
    if formats::detect_path(input)? == Some(Format::OrtArtifacts) {
        return crate::formats::ort_artifacts::inspect(input);
    }
    let file = load_model(input)?;
    let format = formats::detect_model(&file.model);
    let model = &file.model;
    let mut report = base_report(format, input, model);
    if format == Format::TrainingInfo {
        let analysis = ti::analyze(model, input)?;
        report.optimizer = analysis.optimizer_name();
        report.optimizer_nodes = analysis
            .update_nodes
            .iter()
            .map(|n| NodeRef {
                graph: n.graph.clone(),
                name: n.name.clone(),
                op_type: n.op_type.clone(),
            })
            .collect();
        // Trained weights, then the main graph's other floating-point initializers (frozen).
        let trained: std::collections::HashSet<&str> =
            analysis.weights.iter().map(|w| w.name.as_str()).collect();
        report.parameters = analysis
            .weights
            .iter()
            .map(|w| ParameterReport {
                name: w.name.clone(),
                trainable: true,
                lookahead: w.has_lookahead,
                data_type: inspect::data_type_name(w.data_type),
                shape: w.dims.clone(),
            })
            .collect();
        let frozen = model
            .graph
            .iter()
            .flat_map(|g| g.initializer.iter())
            .filter(|t| ti::is_float_type(t.data_type()) && !trained.contains(t.name()));
        report.parameters.extend(frozen.map(|t| ParameterReport {
            name: t.name().to_string(),
            trainable: false,
            lookahead: false,
            data_type: inspect::data_type_name(t.data_type()),
            shape: t.dims.clone(),
        }));
        report.injected_state = analysis
            .state_keys
            .iter()
            .filter(|k| k.starts_with(NAME_PREFIX))
            .cloned()
            .collect();
    }
    Ok(report)
}

/// The parts of a report every ONNX model file has: graphs, opsets, the rewrite marker, the
/// injected nodes.
fn base_report(format: Format, input: &Path, model: &ModelProto) -> Report {
    let mut graphs = Vec::new();
    let mut injected = Vec::new();
    if let Some(g) = &model.graph {
        graphs.push(inspect::graph_report("graph", model, g));
        inspect::injected_nodes("graph", g, &mut injected);
    }
    for (i, info) in model.training_info.iter().enumerate() {
        if let Some(g) = &info.initialization {
            let label = format!("initialization[{i}]");
            graphs.push(inspect::graph_report(&label, model, g));
            inspect::injected_nodes(&label, g, &mut injected);
        }
        if let Some(g) = &info.algorithm {
            let label = format!("algorithm[{i}]");
            graphs.push(inspect::graph_report(&label, model, g));
            inspect::injected_nodes(&label, g, &mut injected);
        }
    }
    let (lookahead, rewritten_by) = lookahead_report(marker(model));
    Report {
        format: format.id().to_string(),
        input: input.display().to_string(),
        optimizer: None,
        lookahead,
        rewritten_by,
        parameters: Vec::new(),
        optimizer_nodes: Vec::new(),
        injected_nodes: injected,
        injected_state: Vec::new(),
        graphs,
    }
}

/// The report's view of a rewrite marker: (k and alpha, the tool version).
pub(crate) fn lookahead_report(
    m: Option<lookahead::RewriteMarker>,
) -> (Option<LookaheadReport>, Option<String>) {
    match m {
        None => (None, None),
        Some(m) => (
            Some(LookaheadReport {
                k: m.k.parse().unwrap_or(0),
                alpha: m.alpha.parse().unwrap_or(f64::NAN),
            }),
            Some(m.version),
        ),
    }
}

fn looks_like_ort_training_graph(model: &ModelProto) -> bool {
    model.graph.as_ref().is_some_and(|g| {
        g.input
            .iter()
            .any(|i| i.name() == crate::lookahead::ort::LAZY_RESET_GRAD)
    })
}

/// Whether an existing file at `path` may be replaced by a model output under --force: only an
/// ONNX model (an earlier output) is.
pub(crate) fn replaceable_model_file(path: &Path) -> std::result::Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err("it is a directory".into()),
        Ok(meta) if !meta.is_file() => Err(format!(
            "it is a {}",
            crate::io::fs::kind_name(meta.file_type())
        )),
        Ok(_) => load_model(path)
            .map(drop)
            .map_err(|_| "it is not an ONNX model".into()),
        Err(e) => Err(format!("it cannot be read ({e})")),
    }
}

/// Refuses inputs this tool already rewrote, and inputs that use the tool's name prefix.
pub(crate) fn refuse_rewritten(
    model: &ModelProto,
    path: &Path,
    names: &NameGenerator,
) -> Result<()> {
    if let Some(m) = marker(model) {
        return Err(Error::AlreadyRewritten {
            path: path.to_path_buf(),
            k: m.k,
            alpha: m.alpha,
            version: m.version,
        });
    }
    if let Some(name) = names.first_with_prefix(NAME_PREFIX) {
        return Err(Error::NameClash {
            path: path.to_path_buf(),
            name: name.to_string(),
            where_used: format!(
                "names starting with {NAME_PREFIX:?} are reserved for the injected Lookahead state"
            ),
        });
    }
    Ok(())
}

fn rewrite_training_info(
    file: ModelFile,
    output: &Path,
    options: &RewriteOptions,
) -> Result<RewriteSummary> {
    let path = file.path.clone();
    if i64::try_from(options.lookahead.k).is_err() {
        return Err(Error::InvalidOption(format!(
            "k must be at most {} for training_info models (the step counter is int64), got {}",
            i64::MAX,
            options.lookahead.k
        )));
    }
    file.ensure_lossless(options.allow_lossy)?;
    let names = NameGenerator::for_model(&file.model);
    refuse_rewritten(&file.model, &path, &names)?;
    check_model_tensors(&file.model, &path)?;
    let external_files = check_external_data(&path, &file.model)?;
    let mut inputs = InputPaths::new();
    inputs.add(&path);
    for data in &external_files {
        inputs.add(&data.resolved);
    }
    validate_model(&file.model).map_err(|e| Error::Unsupported {
        path: path.clone(),
        reason: format!("the input breaks an ONNX rule: {e}"),
    })?;
    let analysis = ti::analyze(&file.model, &path)?;
    if analysis.weights.is_empty() {
        return Err(Error::NoOptimizer {
            path,
            reason:
                "no update_binding assigns a new value to a floating-point weight of the main graph"
                    .into(),
        });
    }
    let plan = lookahead::training_info::plan(&file.model, &analysis, options.lookahead, &path)?;
    let injected_nodes = plan.added_nodes().count();
    let mut model = file.model;
    patch::apply(&mut model, plan)?;
    validate_model(&model)?;
    // Everything that can be refused is checked before the first byte is written: the size
    // limit, the destination, then the external data files; those are staged and appear only
    // together with the model.
    encoded_len_checked(&model, output)?;
    check_output(output, &inputs, options.force, &replaceable_model_file)?;
    let from_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let to_dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staged = stage_external_files(&external_files, from_dir, to_dir)?;
    staged.commit_with(|| write_model(&model, output, options.force))?;
    Ok(RewriteSummary {
        format: Format::TrainingInfo,
        output: output.to_path_buf(),
        optimizer: analysis.optimizer_name().unwrap_or_default(),
        wrapped_parameters: analysis.weights.iter().map(|w| w.name.clone()).collect(),
        injected_nodes,
        dropped_files: Vec::new(),
    })
}

/// A readable text rendering of every graph of a model file or artifacts directory.
pub fn dump(input: &Path) -> Result<String> {
    let files: Vec<(String, PathBuf)> =
        if formats::detect_path(input)? == Some(Format::OrtArtifacts) {
            use crate::formats::ort_artifacts::{EVAL_MODEL, OPTIMIZER_MODEL, TRAINING_MODEL};
            [TRAINING_MODEL, EVAL_MODEL, OPTIMIZER_MODEL]
                .into_iter()
                .map(|f| (f.to_string(), input.join(f)))
                .filter(|(_, p)| std::fs::symlink_metadata(p).is_ok())
                .collect()
        } else {
            vec![(String::new(), input.to_path_buf())]
        };
    let mut out = String::new();
    for (label, path) in files {
        let file = load_model(&path)?;
        if !label.is_empty() {
            out.push_str(&format!("# {label}\n"));
        }
        out.push_str(&crate::graph::dump::dump_model(&file.model));
    }
    Ok(out)
}
