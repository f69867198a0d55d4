//! The whole rewrite (and `inspect`) of a mutated input: input[0] picks the training_info model or
//! one file of one ORT artifacts folder (fixtures/ort_*) that the rest of the input replaces,
//! input[1] picks the options (seeds::option_bits). Promises checked besides "no panic": the input
//! folder is never changed; a refused rewrite leaves nothing behind; an `Ok` rewrite's output is
//! read back by the tool (`inspect`), is marked as rewritten, and is refused as input.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use onnx_lookahead::inject::ort::AliasOp;
use onnx_lookahead::{Error, RewriteOptions, SchemeOptions};
use onnx_lookahead_fuzz::seeds::{
    ARTIFACT_FILES, RewriteCase, artifact_sources, option_bits::*, rewrite_cases,
};
use onnx_lookahead_fuzz::{clear_dir, entries, place_external_data, workdir, write};

/// One prepared input folder per case, with the bytes of every file as placed.
struct Prepared {
    case: RewriteCase,
    dir: PathBuf,
    /// The file the input replaces.
    target: PathBuf,
    /// Every other file of the folder and its bytes.
    others: Vec<(PathBuf, Vec<u8>)>,
}

fn setup() -> &'static [Prepared] {
    static CASES: OnceLock<Vec<Prepared>> = OnceLock::new();
    CASES.get_or_init(|| {
        rewrite_cases()
            .into_iter()
            .enumerate()
            .map(|(index, case)| {
                let dir = workdir().join(format!("case{index:02}"));
                clear_dir(&dir);
                let target = match case {
                    RewriteCase::TrainingInfo => {
                        place_external_data(&dir);
                        dir.join("model.onnx")
                    }
                    RewriteCase::Artifacts { base, file } => {
                        for (name, source) in artifact_sources(base) {
                            std::fs::copy(&source, dir.join(name)).expect("copy a fixture");
                        }
                        dir.join(ARTIFACT_FILES[file])
                    }
                };
                let mut others = Vec::new();
                for name in ["weights.bin", "sub/more.bin"]
                    .into_iter()
                    .chain(ARTIFACT_FILES)
                {
                    let path = dir.join(name);
                    if path != target && path.is_file() {
                        others.push((path.clone(), std::fs::read(&path).expect("read back")));
                    }
                }
                Prepared {
                    case,
                    dir,
                    target,
                    others,
                }
            })
            .collect()
    })
}

/// The scheme of an option byte: Lookahead with `K_VALUES` and alpha, except EMA at k index
/// `EMA_INDEX` and SWA at the last index with `ALPHA_ONE` (see seeds::option_bits).
fn scheme(byte: u8) -> SchemeOptions {
    let index = usize::from((byte >> K_SHIFT) & 7);
    let one = byte & ALPHA_ONE != 0;
    match index {
        EMA_INDEX => SchemeOptions {
            scheme: Some("ema".into()),
            decay: Some(0.5),
            every: Some(if one { 1 } else { 7 }),
            ..Default::default()
        },
        7 if one => SchemeOptions {
            scheme: Some("swa".into()),
            swa_start: Some(1000),
            every: Some(3),
            ..Default::default()
        },
        _ => SchemeOptions {
            k: Some(K_VALUES[index]),
            alpha: Some(if one { 1.0 } else { 0.5 }),
            ..Default::default()
        },
    }
}

fn options(byte: u8) -> RewriteOptions {
    RewriteOptions {
        scheme: scheme(byte),
        force: false,
        allow_lossy: byte & ALLOW_LOSSY != 0,
        alias: if byte & RESHAPE != 0 {
            AliasOp::Reshape
        } else {
            AliasOp::PassThrough
        },
        ..Default::default()
    }
}

fn remove(path: &Path) {
    let _ = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
}

/// Set FUZZ_STRICT_VALIDATION=1 to count the library's internal-validation refusals
/// (`Error::Validation`: the rewrite built a graph that breaks an ONNX rule and refused to write
/// it) as findings too.
fn strict() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("FUZZ_STRICT_VALIDATION").is_some_and(|v| v == "1"))
}

fuzz_target!(
    init: {
        onnx_lookahead_fuzz::write_seeds("rewrite");
    },
    |data: &[u8]| {
        let [selector, option_byte, body @ ..] = data else {
            return;
        };
        let cases = setup();
        let prepared = &cases[usize::from(*selector) % cases.len()];
        if prepared.target.ends_with("checkpoint") && onnx_lookahead_fuzz::flatbuffers_soffset_min(body) {
            return;
        }
        write(&prepared.target, body);
        let input_entries = entries(&prepared.dir);
        let opts = options(*option_byte);
        let out_dir = workdir().join("out");
        clear_dir(&out_dir);
        let (input, output) = match prepared.case {
            RewriteCase::TrainingInfo if option_byte & SAME_FOLDER != 0 => {
                (prepared.target.clone(), prepared.dir.join("out.onnx"))
            }
            RewriteCase::TrainingInfo => (prepared.target.clone(), out_dir.join("out.onnx")),
            RewriteCase::Artifacts { .. } => (prepared.dir.clone(), out_dir.join("result")),
        };

        if option_byte & INSPECT_INPUT != 0 {
            let _ = onnx_lookahead::inspect(&input).map(|r| r.to_json());
        }
        let result = onnx_lookahead::rewrite(&input, &output, &opts);

        // The input is never modified.
        assert!(std::fs::read(&prepared.target).is_ok_and(|b| b == body), "the rewrite changed its input");
        for (path, bytes) in &prepared.others {
            assert!(std::fs::read(path).is_ok_and(|b| &b == bytes), "the rewrite changed {}", path.display());
        }
        match result {
            Ok(_) => {
                let report = onnx_lookahead::inspect(&output)
                    .unwrap_or_else(|e| panic!("the rewritten output does not inspect: {e}"));
                assert!(report.lookahead.is_some(), "the output is not marked as rewritten");
                let again = out_dir.join("again");
                let twice = onnx_lookahead::rewrite(&output, &again, &opts);
                assert!(twice.is_err(), "a rewritten output was rewritten again");
                assert!(!again.exists());
            }
            Err(e) => {
                if strict() && matches!(e, Error::Validation { .. }) {
                    panic!("internal validation refused the rewrite: {e}");
                }
                // Refusals write nothing: no output, no temporary leftovers.
                assert!(!output.exists(), "a refused rewrite left its output: {e}");
                assert!(entries(&out_dir).is_empty(), "a refused rewrite left {:?}: {e}", entries(&out_dir));
            }
        }
        remove(&output);
        assert_eq!(entries(&prepared.dir), input_entries, "the input folder changed");
    }
);
