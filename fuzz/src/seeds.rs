//! Seed corpora, generated from the repository's fixtures at run time (nothing binary committed),
//! and the input layout of the `rewrite` target (which the seeds must follow).

use std::path::{Path, PathBuf};

use onnx_lookahead::generated::onnx::{
    GraphProto, ModelProto, StringStringEntryProto, TensorProto, tensor_proto::DataLocation,
};
use prost::Message;

use crate::{fixtures, repo_root};

/// External data files placed beside the models (see `place_external_data`).
pub const WEIGHTS_FILE: &str = "weights.bin";
pub const SMALL_FILE: &str = "sub/more.bin";

/// The ORT artifact sets a `rewrite` input can start from: (name, folder under fixtures/, the
/// checkpoint to use instead of the folder's own, from tests/data/).
pub const ARTIFACT_BASES: [(&str, &str, Option<&str>); 4] = [
    ("adamw", "ort_adamw", None),
    ("sgd", "ort_sgd", None),
    ("adamw_frozen", "ort_adamw_frozen", None),
    // The same models with a checkpoint whose parameters live in checkpoint.data.
    (
        "adamw_external",
        "ort_adamw",
        Some("checkpoint_adamw_external"),
    ),
];

/// The files of an artifacts folder one `rewrite` input can replace.
pub const ARTIFACT_FILES: [&str; 5] = [
    "training_model.onnx",
    "eval_model.onnx",
    "optimizer_model.onnx",
    "checkpoint",
    "checkpoint.data",
];

/// What the first byte of a `rewrite` input selects: the training_info model, or one file of one
/// artifacts folder (checkpoint.data only where the base has one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewriteCase {
    TrainingInfo,
    Artifacts { base: usize, file: usize },
}

/// Every case, in selector order (`input[0] % cases().len()`).
pub fn rewrite_cases() -> Vec<RewriteCase> {
    let mut cases = vec![RewriteCase::TrainingInfo];
    for (base, (_, _, external)) in ARTIFACT_BASES.iter().enumerate() {
        for (file, name) in ARTIFACT_FILES.iter().enumerate() {
            if *name != "checkpoint.data" || external.is_some() {
                cases.push(RewriteCase::Artifacts { base, file });
            }
        }
    }
    cases
}

/// The files of artifacts base `base`: (name in the artifacts folder, where it comes from).
pub fn artifact_sources(base: usize) -> Vec<(&'static str, PathBuf)> {
    let (_, folder, external) = ARTIFACT_BASES[base];
    let data = repo_root().join("tests/data");
    ARTIFACT_FILES
        .iter()
        .filter_map(|&name| {
            let source = match (name, external) {
                ("checkpoint", Some(ckpt)) => data.join(ckpt),
                ("checkpoint.data", Some(ckpt)) => data.join(format!("{ckpt}.data")),
                ("checkpoint.data", None) => return None,
                _ => fixtures().join(folder).join(name),
            };
            Some((name, source))
        })
        .collect()
}

/// The bytes of the file a case replaces, unmutated.
pub fn case_original(case: RewriteCase) -> Vec<u8> {
    let path = match case {
        RewriteCase::TrainingInfo => fixtures().join("training_info_sgd.onnx"),
        RewriteCase::Artifacts { base, file } => artifact_sources(base)
            .into_iter()
            .find(|(name, _)| *name == ARTIFACT_FILES[file])
            .map(|(_, path)| path)
            .expect("the case's file exists in its base"),
    };
    read(&path)
}

/// Option bits of a `rewrite` input's second byte.
pub mod option_bits {
    /// Reshape aliases instead of PassThrough (`--parallel-safe`).
    pub const RESHAPE: u8 = 1;
    /// `--allow-lossy`.
    pub const ALLOW_LOSSY: u8 = 2;
    /// alpha = 1 instead of 0.5 (EMA: every step instead of every 7; with the last k index: SWA
    /// from step 1000, every 3, instead of Lookahead k = 1000).
    pub const ALPHA_ONE: u8 = 4;
    /// k from bits 3..6: `K_VALUES[(byte >> 3) & 7]`; the index `EMA_INDEX` picks EMA (decay 0.5)
    /// instead.
    pub const K_SHIFT: u8 = 3;
    pub const K_VALUES: [u64; 8] = [5, 1, 2, 3, 4, 6, 7, 1000];
    pub const EMA_INDEX: usize = 6;
    /// training_info: write the output into the input's own folder (external data then shared).
    pub const SAME_FOLDER: u8 = 64;
    /// Also `inspect` the input before rewriting it.
    pub const INSPECT_INPUT: u8 = 128;
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every `.onnx` file of the fixtures (top level and one folder down), sorted.
fn fixture_models() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut folders = vec![fixtures()];
    while let Some(dir) = folders.pop() {
        for entry in std::fs::read_dir(&dir).expect("list fixtures").flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "onnx") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// A seed name from a fixture path: `ort_adamw/training_model.onnx` -> `ort_adamw-training_model.onnx`.
fn seed_name(path: &Path) -> String {
    let rel = path.strip_prefix(repo_root()).unwrap_or(path);
    rel.to_string_lossy().replace('/', "-")
}

/// The model with every initializer that has `raw_data` moved to external data: consecutive
/// ranges of `weights.bin`, or of `sub/more.bin` while they fit there when `small` is set.
/// None when the model has no such initializer.
pub fn externalize(bytes: &[u8], small: bool) -> Option<Vec<u8>> {
    let mut model = ModelProto::decode(bytes).ok()?;
    let mut offset = 0usize;
    let mut moved = 0;
    let mut visit = |t: &mut TensorProto| {
        let Some(raw) = t.raw_data.take() else {
            return;
        };
        let (location, capacity) = if small && offset + raw.len() <= 256 {
            (SMALL_FILE, 256)
        } else {
            (WEIGHTS_FILE, 4096)
        };
        if offset + raw.len() > capacity {
            t.raw_data = Some(raw);
            return;
        }
        let entry = |k: &str, v: String| StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        };
        t.data_location = Some(DataLocation::External as i32);
        t.external_data = vec![
            entry("location", location.into()),
            entry("offset", offset.to_string()),
            entry("length", raw.len().to_string()),
        ];
        offset += raw.len().next_multiple_of(16);
        moved += 1;
    };
    let mut graphs: Vec<&mut GraphProto> = model.graph.iter_mut().collect();
    for info in &mut model.training_info {
        graphs.extend(info.initialization.iter_mut());
        graphs.extend(info.algorithm.iter_mut());
    }
    for graph in graphs {
        graph.initializer.iter_mut().for_each(&mut visit);
        for node in &mut graph.node {
            for attr in &mut node.attribute {
                attr.t.iter_mut().for_each(&mut visit);
            }
        }
    }
    (moved > 0).then(|| model.encode_to_vec())
}

/// The seeds of one target: (file name, bytes).
pub fn for_target(target: &str) -> Vec<(String, Vec<u8>)> {
    match target {
        "onnx_model" => model_seeds(true),
        "external_data" => model_seeds(false)
            .into_iter()
            .filter(|(name, _)| name.contains("external"))
            .collect(),
        "checkpoint" => checkpoint_seeds(),
        "rewrite" => rewrite_seeds(),
        other => panic!("no seeds for target {other:?}"),
    }
}

/// Every fixture model (when `plain`), and its variants with external data.
fn model_seeds(plain: bool) -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for path in fixture_models() {
        let bytes = read(&path);
        let name = seed_name(&path);
        for small in [false, true] {
            if let Some(ext) = externalize(&bytes, small) {
                let suffix = if small { "external-small" } else { "external" };
                seeds.push((format!("{name}.{suffix}"), ext));
            }
        }
        if plain {
            seeds.push((name, bytes));
        }
    }
    seeds
}

/// The fixtures' checkpoints and the ORT-written ones of tests/data.
fn checkpoint_seeds() -> Vec<(String, Vec<u8>)> {
    let mut paths: Vec<PathBuf> = ["ort_adamw", "ort_sgd", "ort_adamw_frozen"]
        .iter()
        .map(|d| fixtures().join(d).join("checkpoint"))
        .collect();
    let data = repo_root().join("tests/data");
    for entry in std::fs::read_dir(&data).expect("list tests/data").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("checkpoint_") && !name.contains('.') {
            paths.push(entry.path());
        }
    }
    paths.sort();
    paths.iter().map(|p| (seed_name(p), read(p))).collect()
}

/// One seed per case and option variant: `[case, options] ++ file bytes`.
fn rewrite_seeds() -> Vec<(String, Vec<u8>)> {
    use option_bits::*;
    let mut seeds = Vec::new();
    let mut push = |index: usize, options: u8, label: &str, body: &[u8]| {
        let mut bytes = vec![index as u8, options];
        bytes.extend_from_slice(body);
        seeds.push((format!("case{index:02}-{label}-opt{options:02x}"), bytes));
    };
    for (index, case) in rewrite_cases().into_iter().enumerate() {
        let original = case_original(case);
        let label = match case {
            RewriteCase::TrainingInfo => "training_info".to_string(),
            RewriteCase::Artifacts { base, file } => {
                format!("{}-{}", ARTIFACT_BASES[base].0, ARTIFACT_FILES[file])
            }
        };
        for options in [0, RESHAPE | ALPHA_ONE | INSPECT_INPUT | (1 << K_SHIFT)] {
            push(index, options, &label, &original);
        }
        if case == RewriteCase::TrainingInfo {
            for small in [false, true] {
                let ext = externalize(&original, small).expect("training_info has weights");
                push(index, 0, &format!("{label}-external{small}"), &ext);
                push(
                    index,
                    SAME_FOLDER,
                    &format!("{label}-external{small}"),
                    &ext,
                );
            }
        }
    }
    seeds
}
