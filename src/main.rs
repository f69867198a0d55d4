//! The onnx-lookahead command line: argument parsing, exit codes and error reporting only.
//! Everything else is the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use onnx_lookahead::lookahead::ort::AliasOp;
use onnx_lookahead::{Error, Options, RewriteOptions};

/// Exit code for a refused lossy write (fields unknown to the schema), distinct from other
/// failures so scripts can retry with --allow-lossy deliberately.
const EXIT_LOSSY: u8 = 3;
const EXIT_FAILURE: u8 = 1;

#[derive(Parser)]
#[command(
    name = "onnx-lookahead",
    version,
    about = "Rewrite exported ONNX training graphs to train with the Lookahead optimizer",
    long_about = "Rewrite exported ONNX training graphs (ONNX Runtime on-device training artifacts, or models \
                  with ONNX training_info) so that an unmodified training loop trains them with Lookahead \
                  (k steps forward, 1 step back) around their own optimizer."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a Lookahead version of a training model or artifacts directory.
    Rewrite {
        /// A model with training_info, or an ONNX Runtime training artifacts directory.
        input: PathBuf,
        /// Where to write the result (a file, or a directory for artifacts).
        #[arg(short, long)]
        output: PathBuf,
        /// Sync period k: slow weights are updated every k optimizer steps (integer >= 1).
        #[arg(short = 'k', long = "sync-period", default_value_t = 5)]
        k: u64,
        /// Slow-weight step size alpha (0 < alpha <= 1).
        #[arg(short, long, default_value_t = 0.5, allow_negative_numbers = true)]
        alpha: f64,
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
    },
    /// Show what the tool finds in a model or artifacts directory, and what a rewrite injected.
    Inspect {
        input: PathBuf,
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
    },
    /// Print a readable text rendering of a model's graphs (for review and diffs).
    Dump { input: PathBuf },
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Text,
    Json,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Rewrite {
            input,
            output,
            k,
            alpha,
            force,
            allow_lossy,
            parallel_safe,
        } => {
            let options = RewriteOptions {
                lookahead: Options::new(k, alpha)?,
                force,
                allow_lossy,
                alias: if parallel_safe {
                    AliasOp::Reshape
                } else {
                    AliasOp::PassThrough
                },
            };
            let summary = onnx_lookahead::rewrite(&input, &output, &options)
                .with_context(|| format!("cannot rewrite {}", input.display()))?;
            eprintln!(
                "wrote {} ({}, {} optimizer, Lookahead k={k} alpha={alpha} on {} parameter(s), {} node(s) injected)",
                summary.output.display(),
                summary.format.id(),
                summary.optimizer,
                summary.wrapped_parameters.len(),
                summary.injected_nodes
            );
            for file in &summary.dropped_files {
                eprintln!(
                    "note: {file} was not carried over: it describes the original graphs (regenerate it from the rewritten .onnx models if needed)"
                );
            }
        }
        Command::Inspect { input, format } => {
            let report = onnx_lookahead::inspect(&input)
                .with_context(|| format!("cannot inspect {}", input.display()))?;
            match format {
                ReportFormat::Text => print!("{}", report.to_text()),
                ReportFormat::Json => println!("{}", report.to_json()),
            }
        }
        Command::Dump { input } => {
            let text = onnx_lookahead::dump(&input)
                .with_context(|| format!("cannot dump {}", input.display()))?;
            print!("{text}");
        }
    }
    Ok(())
}

/// Exit code for bad command-line usage (clap's convention).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version: print as clap does.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            // clap's message starts with "error: "; keep its first paragraph on one line, drop
            // the usage and tips that follow.
            let rendered = err.to_string();
            let paragraph: Vec<&str> = rendered
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!("{}", paragraph.join(" "));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the context chain joined, newlines flattened.
            let message = format!("{err:#}").replace('\n', " ");
            eprintln!("error: {message}");
            let lossy = err.chain().any(|cause| {
                matches!(
                    cause.downcast_ref::<Error>(),
                    Some(Error::UnknownFields { .. })
                )
            });
            ExitCode::from(if lossy { EXIT_LOSSY } else { EXIT_FAILURE })
        }
    }
}
