//! The Python extension module `onnx_lookahead._native` (feature `python`, built by maturin): the
//! library's operations for the Python package, the command line for its console script, and the
//! exception classes. Every result crosses as JSON (the package turns it into dicts), every error
//! as `onnx_lookahead.Error` with the command line's one-line message, and no Rust panic crosses:
//! it becomes an `Error` too.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;

use pyo3::create_exception;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::inject::ort::AliasOp;
use crate::options::{OrtConversion, OrtConverter, OrtFormat, OrtFormatMode};
use crate::scheme::{InnerState, Param, SchemeOptions};
use crate::{DrawFormat, Error as LibError, EvalWeights, FinalizeOptions, RewriteOptions};

create_exception!(
    _native,
    Error,
    pyo3::exceptions::PyException,
    "An input onnx-lookahead refuses or cannot read, an invalid option, or a failed write. The message is the command line's `error:` line."
);
create_exception!(
    _native,
    LossyError,
    Error,
    "The input has fields the ONNX schema this tool knows does not have; writing would drop them (pass allow_lossy=True to accept)."
);

/// Runs `work` without the GIL, turning library errors and panics into Python exceptions.
fn run<T: Send>(
    py: Python<'_>,
    action: &str,
    input: &std::path::Path,
    work: impl FnOnce() -> Result<T, LibError> + Send,
) -> PyResult<T> {
    let outcome = py.detach(|| std::panic::catch_unwind(AssertUnwindSafe(work)));
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            let lossy = matches!(error, LibError::UnknownFields { .. });
            let message = crate::cli::one_line(&format!(
                "{:#}",
                crate::cli::in_context(action, input, error)
            ));
            Err(if lossy {
                LossyError::new_err(message)
            } else {
                Error::new_err(message)
            })
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            Err(Error::new_err(format!(
                "internal error (please report it): {what}"
            )))
        }
    }
}

/// The package's converter to ONNX Runtime's ORT format (`onnx_lookahead._ort_format`): an
/// object with `available()` (None, or why not) and `convert(folder, destination, models,
/// merged_config)` (the names of the files written). The library calls it without the GIL (see
/// `run`), so each call takes it.
struct PyConverter(Py<PyAny>);

/// A Python exception as one message: ours as they are, others with their type.
fn describe(py: Python<'_>, error: PyErr) -> String {
    let value = error.value(py);
    let text = value
        .str()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "(no message)".into());
    if value.is_instance_of::<Error>() {
        text
    } else {
        let kind = value
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "exception".into());
        format!("{kind}: {text}")
    }
}

impl OrtConverter for PyConverter {
    fn available(&self) -> Result<(), String> {
        Python::attach(|py| {
            let reason = self
                .0
                .bind(py)
                .call_method0("available")
                .map_err(|e| describe(py, e))?;
            if reason.is_none() {
                Ok(())
            } else {
                Err(reason
                    .str()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| describe(py, e)))
            }
        })
    }

    fn convert(&self, request: &OrtConversion) -> Result<Vec<String>, String> {
        Python::attach(|py| {
            let args = (
                request.folder.as_os_str(),
                request.destination.as_os_str(),
                request.models.to_vec(),
                request.merged_config,
            );
            self.0
                .bind(py)
                .call_method1("convert", args)
                .and_then(|written| written.extract::<Vec<String>>())
                .map_err(|e| describe(py, e))
        })
    }
}

/// `ort_format` as the package passes it (None: auto, True, False) with its converter.
fn ort_format(ort_format: Option<bool>, converter: Option<Py<PyAny>>) -> OrtFormat {
    OrtFormat {
        mode: match ort_format {
            None => OrtFormatMode::Auto,
            Some(true) => OrtFormatMode::Always,
            Some(false) => OrtFormatMode::Never,
        },
        converter: converter.map(|c| Arc::new(PyConverter(c)) as Arc<dyn OrtConverter>),
    }
}

/// Weights by name (None: the default of the scheme, or of the rewrite for finalize).
fn weights(name: Option<&str>) -> PyResult<Option<EvalWeights>> {
    name.map(|name| {
        EvalWeights::from_id(name).ok_or_else(|| {
            Error::new_err(format!(
                "invalid option: weights must be \"current\" or \"averaged\" (for Lookahead also \"lookahead\" or \"slow\"), got {name:?}"
            ))
        })
    })
    .transpose()
}

fn release(name: Option<&str>) -> PyResult<Option<&'static crate::compat::Release>> {
    name.map(|name| {
        crate::compat::release(name).ok_or_else(|| {
            Error::new_err(format!(
                "invalid option: target_ort must be one of {} (an ONNX Runtime training release), got {name:?}",
                crate::compat::release_ids()
            ))
        })
    })
    .transpose()
}

fn inner_state(name: &str) -> PyResult<InnerState> {
    InnerState::from_id(name).ok_or_else(|| {
        Error::new_err(format!(
            "invalid option: inner_state must be \"keep\", \"reset\" or \"pullback\", got {name:?}"
        ))
    })
}

/// The scheme and its options as the package passes them: a dict of the keywords given
/// (`scheme`, `k`, `alpha`, `inner_state`, `decay`, `every`, `swa_start`), None or absent when
/// not given.
fn scheme_options(given: &Bound<'_, PyDict>) -> PyResult<SchemeOptions> {
    fn get<'py, T: for<'a> FromPyObject<'a, 'py>>(
        d: &Bound<'py, PyDict>,
        key: &str,
    ) -> PyResult<Option<T>> {
        match d.get_item(key)? {
            Some(v) if !v.is_none() => v.extract().map(Some).map_err(|_| {
                Error::new_err(format!("invalid option: {key} has the wrong type ({v})"))
            }),
            _ => Ok(None),
        }
    }
    let inner: Option<String> = get(given, "inner_state")?;
    Ok(SchemeOptions {
        scheme: get(given, "scheme")?,
        k: get(given, "k")?,
        alpha: get(given, "alpha")?,
        inner_state: inner.as_deref().map(inner_state).transpose()?,
        decay: get(given, "decay")?,
        every: get(given, "every")?,
        swa_start: get(given, "swa_start")?,
    })
}

#[pyfunction]
#[pyo3(signature = (input, output, scheme, force, allow_lossy, parallel_safe, eval_weights, include, exclude, target_ort, ort_format=None, converter=None))]
#[allow(clippy::too_many_arguments)]
fn rewrite(
    py: Python<'_>,
    input: PathBuf,
    output: PathBuf,
    scheme: &Bound<'_, PyDict>,
    force: bool,
    allow_lossy: bool,
    parallel_safe: bool,
    eval_weights: Option<&str>,
    include: Vec<String>,
    exclude: Vec<String>,
    target_ort: Option<&str>,
    ort_format: Option<bool>,
    converter: Option<Py<PyAny>>,
) -> PyResult<String> {
    let options = RewriteOptions {
        scheme: scheme_options(scheme)?,
        force,
        allow_lossy,
        alias: if parallel_safe {
            AliasOp::Reshape
        } else {
            AliasOp::PassThrough
        },
        eval_weights: weights(eval_weights)?,
        include,
        exclude,
        target_ort: release(target_ort)?,
        ort_format: self::ort_format(ort_format, converter),
    };
    let summary = run(py, "cannot rewrite", &input, || {
        crate::rewrite(&input, &output, &options)
    })?;
    Ok(serde_json::json!({
        "format": summary.format.id(),
        "output": summary.output.display().to_string(),
        "optimizer": summary.optimizer,
        "scheme": summary.scheme,
        "settings": summary.settings,
        "wrapped_parameters": summary.wrapped_parameters,
        "injected_nodes": summary.injected_nodes,
        "state_bytes": summary.state_bytes,
        "notes": summary.notes,
        "ort_format": summary.ort_format,
    })
    .to_string())
}

#[pyfunction]
fn inspect(py: Python<'_>, input: PathBuf) -> PyResult<String> {
    let report = run(py, "cannot inspect", &input, || crate::inspect(&input))?;
    Ok(report.to_json())
}

/// A picture of the rewrite (`inspect --format dot|mermaid`).
#[pyfunction]
fn draw(py: Python<'_>, input: PathBuf, format: &str) -> PyResult<String> {
    let format = match format {
        "dot" => DrawFormat::Dot,
        "mermaid" => DrawFormat::Mermaid,
        other => {
            return Err(Error::new_err(format!(
                "invalid option: format must be \"dot\" or \"mermaid\", got {other:?}"
            )));
        }
    };
    run(py, "cannot draw", &input, || crate::draw(&input, format))
}

#[pyfunction]
#[pyo3(signature = (input, output, weights_name, checkpoint, force, target_ort, ort_format=None, converter=None))]
#[allow(clippy::too_many_arguments)]
fn finalize(
    py: Python<'_>,
    input: PathBuf,
    output: PathBuf,
    weights_name: Option<&str>,
    checkpoint: Option<PathBuf>,
    force: bool,
    target_ort: Option<&str>,
    ort_format: Option<bool>,
    converter: Option<Py<PyAny>>,
) -> PyResult<String> {
    let options = FinalizeOptions {
        weights: weights(weights_name)?,
        checkpoint,
        force,
        target_ort: release(target_ort)?,
        ort_format: self::ort_format(ort_format, converter),
    };
    let summary = run(py, "cannot finalize", &input, || {
        crate::finalize(&input, &output, &options)
    })?;
    Ok(serde_json::json!({
        "format": summary.format.id(),
        "output": summary.output.display().to_string(),
        "weights": summary.weights.id(),
        "changed_parameters": summary.changed,
        "notes": summary.notes,
        "ort_format": summary.ort_format,
    })
    .to_string())
}

/// The command line (the console script `onnx-lookahead`): runs it on `argv`, with the package's
/// converter for `--ort-format`, and returns the exit code.
#[pyfunction]
#[pyo3(signature = (argv, converter=None))]
fn run_cli(py: Python<'_>, argv: Vec<std::ffi::OsString>, converter: Option<Py<PyAny>>) -> i32 {
    let converter = converter.map(|c| Arc::new(PyConverter(c)) as Arc<dyn OrtConverter>);
    py.detach(|| {
        std::panic::catch_unwind(AssertUnwindSafe(|| crate::cli::main_with(argv, converter)))
            .map(i32::from)
            .unwrap_or(101)
    })
}

/// The scheme of a record (its JSON, as a rewrite stored it).
fn recorded_scheme(record: &str) -> PyResult<Box<dyn crate::scheme::Scheme>> {
    let record: crate::record::RewriteRecord = serde_json::from_str(record)
        .map_err(|e| Error::new_err(format!("unreadable onnx-lookahead record: {e}")))?;
    record.scheme().map_err(|e| Error::new_err(e.to_string()))
}

fn f64s(bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect()
}

fn f64_bytes<'py>(py: Python<'py>, values: &[f64]) -> Bound<'py, PyBytes> {
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    PyBytes::new(py, &raw)
}

/// A pending update of the recorded scheme, on the host: `prepared(record, shared)` gives the
/// scalars its per-parameter arithmetic reads and the new set-wide state.
#[pyfunction]
fn host_prepare(record: &str, shared: Vec<f64>) -> PyResult<(Vec<f64>, Vec<f64>)> {
    let prepared = recorded_scheme(record)?
        .host_prepare(&shared)
        .map_err(|e| Error::new_err(e.to_string()))?;
    Ok((prepared.scalars, prepared.shared))
}

/// A pending update of one parameter on the host, with the graph's operations and rounding:
/// values as little-endian float64 bytes (each exactly a value of `data_type`); returns the new
/// parameter and state values the same way.
#[pyfunction]
#[pyo3(signature = (record, name, data_type, fast, state, scalars))]
fn host_sync<'py>(
    py: Python<'py>,
    record: &str,
    name: &str,
    data_type: i32,
    fast: &[u8],
    state: Vec<Vec<u8>>,
    scalars: Vec<f64>,
) -> PyResult<(Bound<'py, PyBytes>, Vec<Bound<'py, PyBytes>>)> {
    let scheme = recorded_scheme(record)?;
    let state: Vec<Vec<f64>> = state.iter().map(|s| f64s(s)).collect();
    let (fast, state) = scheme
        .host_sync(Param { name, data_type }, &f64s(fast), &state, &scalars)
        .map_err(|e| Error::new_err(e.to_string()))?;
    Ok((
        f64_bytes(py, &fast),
        state.iter().map(|s| f64_bytes(py, s)).collect(),
    ))
}

/// The recorded scheme's schedule: (first update step, period, the ONNX Runtime counter value
/// once a pending update was applied on the host).
#[pyfunction]
fn schedule(record: &str) -> PyResult<(u64, u64, f64)> {
    let schedule = recorded_scheme(record)?.schedule();
    Ok((schedule.first, schedule.period, schedule.ort_after_update()))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("Error", m.py().get_type::<Error>())?;
    m.add("LossyError", m.py().get_type::<LossyError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(rewrite, m)?)?;
    m.add_function(wrap_pyfunction!(inspect, m)?)?;
    m.add_function(wrap_pyfunction!(draw, m)?)?;
    m.add_function(wrap_pyfunction!(finalize, m)?)?;
    m.add_function(wrap_pyfunction!(run_cli, m)?)?;
    m.add_function(wrap_pyfunction!(host_prepare, m)?)?;
    m.add_function(wrap_pyfunction!(host_sync, m)?)?;
    m.add_function(wrap_pyfunction!(schedule, m)?)?;
    Ok(())
}
