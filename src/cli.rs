//! The onnx-lookahead command line: argument parsing, exit codes and error reporting only;
//! everything else is the library. The binary (`main.rs`) and the Python package's console script
//! both run `cli::main`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::compat::Release;
use crate::inject::ort::AliasOp;
use crate::options::{OrtConverter, OrtFormat, OrtFormatMode};
use crate::scheme::{InnerState, SchemeOptions};
use crate::{DrawFormat, Error, EvalWeights, FinalizeOptions, RewriteOptions};

/// Exit code for a refused lossy write (fields unknown to the schema), distinct from other
/// failures so scripts can retry with --allow-lossy deliberately.
const EXIT_LOSSY: u8 = 3;
const EXIT_FAILURE: u8 = 1;
/// Exit code after an interrupting signal (the shell convention for SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Parser)]
#[command(
    name = "onnx-lookahead",
    version,
    about = "Rewrite exported ONNX training graphs to train with the Lookahead optimizer",
    long_about = "Rewrite exported ONNX training graphs (ONNX Runtime on-device training artifacts, or models \
                  with ONNX training_info) so that an unmodified training loop trains them with Lookahead \
                  (k steps forward, 1 step back) around their own optimizer."
)]
#[command(arg_required_else_help = false)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a Lookahead (or EMA, SWA) version of a training model or artifacts directory.
    Rewrite {
        /// A model with training_info, or an ONNX Runtime training artifacts directory.
        input: PathBuf,
        /// Where to write the result (a file, or a directory for artifacts).
        #[arg(short, long)]
        output: PathBuf,
        /// The weight averaging to inject: lookahead (the default), ema (an exponential moving
        /// average of the weights) or swa (stochastic weight averaging).
        #[arg(long, value_name = "SCHEME", value_parser = clap::builder::PossibleValuesParser::new(crate::scheme::registry::names()))]
        scheme: Option<String>,
        /// Lookahead: sync period k, slow weights are updated every k optimizer steps (integer
        /// >= 1; default 5).
        #[arg(short = 'k', long = "sync-period", allow_negative_numbers = true, value_parser = parse_k)]
        k: Option<u64>,
        /// Lookahead: slow-weight step size alpha (0 < alpha <= 1; default 0.5).
        #[arg(short, long, allow_negative_numbers = true, value_parser = parse_alpha)]
        alpha: Option<f64>,
        /// EMA: the decay D (0 < D < 1): after an update ema = D * ema + (1 - D) * weights.
        #[arg(long, allow_negative_numbers = true, value_parser = parse_alpha)]
        decay: Option<f64>,
        /// EMA and SWA: update the average every N optimizer steps (default 1).
        #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_every)]
        every: Option<u64>,
        /// SWA: the optimizer step of the first sample (>= 1); then one sample every N steps.
        #[arg(long, value_name = "S", allow_negative_numbers = true, value_parser = parse_swa_start)]
        swa_start: Option<u64>,
        /// Replace an existing output.
        #[arg(long)]
        force: bool,
        /// Write even if the input has fields unknown to the ONNX schema (they are dropped).
        #[arg(long)]
        allow_lossy: bool,
        /// ONNX Runtime artifacts: make the result also run with SessionOptions.execution_mode =
        /// ORT_PARALLEL (one Reshape per parameter instead of one zero-copy PassThrough; a few
        /// microseconds per parameter per step).
        #[arg(long)]
        parallel_safe: bool,
        /// Wrap only the trainable parameters whose names match this glob (`*`, `?`, `[...]`;
        /// repeatable; default: all).
        #[arg(long = "include", value_name = "GLOB")]
        include: Vec<String>,
        /// Leave the trainable parameters whose names match this glob to the inner optimizer
        /// alone (repeatable), e.g. embeddings or normalization weights.
        #[arg(long = "exclude", value_name = "GLOB")]
        exclude: Vec<String>,
        /// Lookahead: what a sync does to the inner optimizer's state: keep it (the paper, the
        /// default), reset it to its initial state (optax reset_state), or pull the momentum back
        /// like the weights (the authors' code).
        #[arg(long, value_enum)]
        inner_state: Option<Inner>,
        /// Which weights evaluation (the eval graph, export_model_for_inferencing, the
        /// training_info runtime's run_inference) reads: the current weights (the ones training
        /// continues from) or the averaged ones. Default: current for lookahead (aliases:
        /// lookahead, slow), averaged for ema and swa.
        #[arg(long, value_enum)]
        eval_weights: Option<Weights>,
        #[command(flatten)]
        set_output: SetOutput,
    },
    /// Turn a rewrite's output back into its plain form at the chosen weights: rewritten
    /// artifacts (with a checkpoint saved during training), a rewritten training_info model, or
    /// an inference model exported from rewritten artifacts.
    Finalize {
        /// What the rewrite produced (or what training or export made of it).
        input: PathBuf,
        /// Where to write the plain result (a file, or a directory for artifacts).
        #[arg(short, long)]
        output: PathBuf,
        /// The weights of the result: the current weights (any pending update applied) or the
        /// averaged ones (Lookahead: the slow weights). Default: the weights the rewrite's
        /// evaluation reads.
        #[arg(long, value_enum)]
        weights: Option<Weights>,
        /// ONNX Runtime artifacts: the checkpoint to take weights and optimizer state from
        /// (default: the artifacts' own).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Replace an existing output (only an earlier output of the same kind).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        set_output: SetOutput,
    },
    /// Show what the tool finds in a model or artifacts directory, and what a rewrite injected.
    Inspect {
        /// A model, an artifacts directory, or an ORT checkpoint file.
        input: PathBuf,
        /// text and json: the report; dot (Graphviz) and mermaid: a picture of what the rewrite
        /// injected per graph (or of what a rewrite would wrap), not of the whole model.
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
        /// Text: list every parameter, injected node and state tensor.
        #[arg(long)]
        verbose: bool,
    },
    /// Print a readable text rendering of a model's graphs (for review and diffs).
    Dump { input: PathBuf },
}

/// How `rewrite` and `finalize` write an ONNX Runtime artifacts set for a runtime.
#[derive(clap::Args)]
struct SetOutput {
    /// ONNX Runtime artifacts: write the output set so that this ONNX Runtime training release
    /// (and onnxruntime-web of the same number) loads it: checkpoint format, IR version, unused
    /// opset imports (1.16, 1.17, 1.18, 1.19). Default: keep the input's.
    #[arg(long, value_name = "VERSION", value_parser = parse_release)]
    target_ort: Option<&'static Release>,
    /// ONNX Runtime artifacts: also write every model in ONNX Runtime's ORT format (.ort and
    /// .required_operators.config per model, and the set's required_operators.config), as
    /// generate_artifacts(ort_format=True) does. Only the Python package's console script can
    /// (onnxruntime-training converts); it does so by default when the input holds .ort copies.
    #[arg(long, conflicts_with = "no_ort_format")]
    ort_format: bool,
    /// ONNX Runtime artifacts: write no ORT-format copies (a copy the input held then goes only
    /// with a model written as it was).
    #[arg(long)]
    no_ort_format: bool,
}

impl SetOutput {
    /// What `--ort-format` / `--no-ort-format` ask for, with the converter this program has.
    fn ort_format(&self, converter: &Option<Arc<dyn OrtConverter>>) -> OrtFormat {
        OrtFormat {
            mode: match (self.ort_format, self.no_ort_format) {
                (true, _) => OrtFormatMode::Always,
                (_, true) => OrtFormatMode::Never,
                _ => OrtFormatMode::Auto,
            },
            converter: converter.clone(),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Weights {
    #[value(alias = "lookahead")]
    Current,
    #[value(alias = "slow")]
    Averaged,
}

impl From<Weights> for EvalWeights {
    fn from(w: Weights) -> Self {
        match w {
            Weights::Current => EvalWeights::Current,
            Weights::Averaged => EvalWeights::Averaged,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Inner {
    Keep,
    Reset,
    Pullback,
}

impl From<Inner> for InnerState {
    fn from(i: Inner) -> Self {
        match i {
            Inner::Keep => InnerState::Keep,
            Inner::Reset => InnerState::Reset,
            Inner::Pullback => InnerState::Pullback,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Text,
    Json,
    Dot,
    Mermaid,
}

/// The library error with what was being done: "cannot rewrite IN: <error>", without naming IN
/// twice when the error starts with it.
pub fn in_context(action: &str, input: &Path, error: Error) -> anyhow::Error {
    let named = format!("{}: ", input.display());
    if error.to_string().starts_with(&named) {
        anyhow::Error::new(error).context(action.to_string())
    } else {
        anyhow::Error::new(error).context(format!("{action} {}", input.display()))
    }
}

/// One line: newlines become spaces and other control characters are escaped, so a name with a
/// carriage return cannot split or overwrite the line.
pub fn one_line(message: &str) -> String {
    let mut line = String::with_capacity(message.len());
    for c in message.chars() {
        match c {
            '\n' => line.push(' '),
            c if c.is_control() => line.extend(c.escape_default()),
            c => line.push(c),
        }
    }
    line
}

fn parse_k(text: &str) -> Result<u64, String> {
    parse_steps(text, "k")
}

fn parse_every(text: &str) -> Result<u64, String> {
    parse_steps(text, "every")
}

fn parse_swa_start(text: &str) -> Result<u64, String> {
    parse_steps(text, "swa-start")
}

/// A number of steps as given: a whole number; negative numbers and numbers past u64 get a
/// message that says so (the range each format's counter can hold is checked by the library).
fn parse_steps(text: &str, what: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    if let Ok(k) = trimmed.parse::<u64>() {
        return Ok(k);
    }
    if trimmed.parse::<i128>().is_ok_and(|k| k < 0) {
        return Err(format!("{what} must be an integer >= 1"));
    }
    if !trimmed.is_empty()
        && trimmed
            .trim_start_matches('+')
            .bytes()
            .all(|b| b.is_ascii_digit())
    {
        return Err(format!("{what} must be at most {}", u64::MAX));
    }
    Err(format!("{text:?} is not a whole number"))
}

/// An ONNX Runtime training release as `--target-ort` takes it ("1.19" or "1.19.2").
fn parse_release(text: &str) -> Result<&'static Release, String> {
    crate::compat::release(text).ok_or_else(|| {
        format!(
            "{text:?} is not an ONNX Runtime training release this tool knows ({}; training packages end at 1.19)",
            crate::compat::release_ids()
        )
    })
}

/// alpha (or decay) as given: a number whose decimal text is not zero but which rounds to 0 as a double
/// (1e-400) is refused here, where the text is still known.
fn parse_alpha(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    let written_as_zero = text
        .trim()
        .trim_start_matches(['+', '-'])
        .split(['e', 'E'])
        .next()
        .is_some_and(|mantissa| mantissa.chars().all(|c| c == '0' || c == '.'));
    if value == 0.0 && !written_as_zero {
        return Err(format!(
            "{text} is too small for a double-precision number (it would be stored as 0)"
        ));
    }
    Ok(value)
}

/// `--ort-format` where this program has no converter (the binary): why, and what to run instead.
fn ort_format_refusal(
    command: &Command,
    converter: &Option<Arc<dyn OrtConverter>>,
) -> Option<String> {
    let output = match command {
        Command::Rewrite {
            output, set_output, ..
        }
        | Command::Finalize {
            output, set_output, ..
        } if set_output.ort_format && converter.is_none() => output,
        _ => return None,
    };
    Some(format!(
        "--ort-format needs the onnx-lookahead console script of the Python package, which converts with onnxruntime-training (pip install \"onnx-lookahead[ort]\"); this binary cannot convert: run it without --ort-format, then {}",
        crate::formats::ort_artifacts::convert_command(output)
    ))
}

/// The ORT-format files written, for the summary.
fn print_ort_format(files: &[String]) {
    if !files.is_empty() {
        eprintln!("wrote the ORT format too: {}", files.join(", "));
    }
}

fn run(command: Command, converter: &Option<Arc<dyn OrtConverter>>) -> anyhow::Result<()> {
    match command {
        Command::Rewrite {
            input,
            output,
            scheme,
            k,
            alpha,
            decay,
            every,
            swa_start,
            force,
            allow_lossy,
            parallel_safe,
            eval_weights,
            include,
            exclude,
            inner_state,
            set_output,
        } => {
            let options = RewriteOptions {
                scheme: SchemeOptions {
                    scheme,
                    k,
                    alpha,
                    inner_state: inner_state.map(Into::into),
                    decay,
                    every,
                    swa_start,
                },
                force,
                allow_lossy,
                alias: if parallel_safe {
                    AliasOp::Reshape
                } else {
                    AliasOp::PassThrough
                },
                eval_weights: eval_weights.map(Into::into),
                include,
                exclude,
                target_ort: set_output.target_ort,
                ort_format: set_output.ort_format(converter),
            };
            let summary = crate::rewrite(&input, &output, &options)
                .map_err(|e| in_context("cannot rewrite", &input, e))?;
            eprintln!(
                "wrote {} ({}, {} optimizer, {} on {} parameter(s), {} node(s) injected, {} of state added)",
                summary.output.display(),
                summary.format.id(),
                summary.optimizer,
                summary.scheme,
                summary.wrapped_parameters.len(),
                summary.injected_nodes,
                crate::report::human_bytes(summary.state_bytes)
            );
            print_ort_format(&summary.ort_format);
            for note in &summary.notes {
                eprintln!("note: {note}");
            }
        }
        Command::Finalize {
            input,
            output,
            weights,
            checkpoint,
            force,
            set_output,
        } => {
            let options = FinalizeOptions {
                weights: weights.map(Into::into),
                checkpoint,
                force,
                target_ort: set_output.target_ort,
                ort_format: set_output.ort_format(converter),
            };
            let summary = crate::finalize(&input, &output, &options)
                .map_err(|e| in_context("cannot finalize", &input, e))?;
            eprintln!(
                "wrote {} (plain {}, {} weights; {} parameter(s) given new values)",
                summary.output.display(),
                summary.format.id(),
                summary.weights.id(),
                summary.changed.len()
            );
            print_ort_format(&summary.ort_format);
            for note in &summary.notes {
                eprintln!("note: {note}");
            }
        }
        Command::Inspect {
            input,
            format,
            verbose,
        } => {
            let report =
                crate::inspect(&input).map_err(|e| in_context("cannot inspect", &input, e))?;
            match format {
                ReportFormat::Text if verbose => print!("{}", report.to_text_verbose()),
                ReportFormat::Text => print!("{}", report.to_text()),
                ReportFormat::Json => println!("{}", report.to_json()),
                ReportFormat::Dot | ReportFormat::Mermaid => {
                    let format = if matches!(format, ReportFormat::Dot) {
                        DrawFormat::Dot
                    } else {
                        DrawFormat::Mermaid
                    };
                    let picture = crate::report::draw::render(&report, format)
                        .map_err(|e| in_context("cannot draw", &input, e))?;
                    print!("{picture}");
                }
            }
        }
        Command::Dump { input } => {
            let text = crate::dump(&input).map_err(|e| in_context("cannot dump", &input, e))?;
            print!("{text}");
        }
    }
    Ok(())
}

/// Exit code for bad command-line usage (clap's convention).
const EXIT_USAGE: u8 = 2;

/// Prints a clap error as one `error:` line (its first paragraph joined), followed by clap's tips
/// and usage hint on their own lines.
fn print_usage_error(rendered: &str) {
    let mut lines = rendered.lines();
    let first: Vec<&str> = lines
        .by_ref()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    eprintln!("{}", first.join(" "));
    let rest: Vec<&str> = lines.collect();
    let rest = rest.join("\n");
    if !rest.trim().is_empty() {
        eprintln!("\n{}", rest.trim_end());
    }
}

/// Runs the command line on `args` (the program name first) and returns the exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> u8 {
    main_with(args, None)
}

/// `main` with a converter to ONNX Runtime's ORT format (`--ort-format`; the Python package's
/// console script passes one, the binary has none).
pub fn main_with(
    args: impl IntoIterator<Item = OsString>,
    converter: Option<Arc<dyn OrtConverter>>,
) -> u8 {
    crate::io::interrupt::install_handlers();
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version: print as clap does.
            let _ = err.print();
            return 0;
        }
        Err(err) => {
            print_usage_error(&err.render().to_string());
            return EXIT_USAGE;
        }
    };
    // Refused like a usage error: this program cannot do it, whatever the input.
    if let Some(refusal) = ort_format_refusal(&cli.command, &converter) {
        eprintln!("error: {}", one_line(&refusal));
        return EXIT_USAGE;
    }
    match run(cli.command, &converter) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("error: {}", one_line(&format!("{err:#}")));
            let lossy = err.chain().any(|cause| {
                matches!(
                    cause.downcast_ref::<Error>(),
                    Some(Error::UnknownFields { .. })
                )
            });
            if crate::io::interrupt::requested() {
                EXIT_INTERRUPTED
            } else if lossy {
                EXIT_LOSSY
            } else {
                EXIT_FAILURE
            }
        }
    }
}
