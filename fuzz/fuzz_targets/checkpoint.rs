//! The ORT checkpoint reader (FlatBuffer + checkpoint.data), and the writer on whatever it read:
//! every readable checkpoint must write, and read back as written, in each layout.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onnx_lookahead::io::checkpoint::{
    Checkpoint, CheckpointTensor, ExternalDataLayout, TensorData, read_checkpoint,
    write_checkpoint_with,
};
use onnx_lookahead_fuzz::{clear_dir, workdir, write};
use std::path::Path;

const LAYOUTS: [ExternalDataLayout; 3] = [
    ExternalDataLayout::Keep,
    ExternalDataLayout::Inline,
    ExternalDataLayout::ModuleStateExternal,
];

fn setup() -> &'static Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        // The external data file of the ORT-written fixture, beside every mutated checkpoint.
        let dir = workdir().join("in");
        clear_dir(&dir);
        let data =
            onnx_lookahead_fuzz::repo_root().join("tests/data/checkpoint_adamw_external.data");
        std::fs::copy(&data, dir.join("checkpoint.data")).expect("copy checkpoint.data");
        dir
    })
}

fn file(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// Writes `checkpoint` to `<dir>/checkpoint` with `layout`; the files written.
fn write_out(
    checkpoint: &Checkpoint,
    dir: &Path,
    layout: ExternalDataLayout,
) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    clear_dir(dir);
    let path = dir.join("checkpoint");
    match write_checkpoint_with(checkpoint, &path, layout) {
        Ok(()) => Some((
            file(&path).expect("written checkpoint exists"),
            file(&dir.join("checkpoint.data")),
        )),
        Err(_) => {
            assert!(
                onnx_lookahead_fuzz::entries(dir).is_empty(),
                "a failed write left files behind"
            );
            None
        }
    }
}

/// What a checkpoint holds, wherever its bytes are: every tensor (name, type, dims, bytes,
/// strings) in file order, the optimizer groups' scalars and the properties (floats by bits);
/// with `placement`, also where each tensor's bytes are and the external data flag.
fn content(checkpoint: &Checkpoint, placement: bool) -> Vec<String> {
    let mut out = vec![format!("version {}", checkpoint.version)];
    let tensor = |t: &CheckpointTensor| {
        let bytes = checkpoint.tensor_bytes(t).map_err(|e| e.to_string());
        let place = match (&t.data, placement) {
            (_, false) => "",
            (TensorData::Absent, _) => "absent",
            (TensorData::Inline(_), _) => "inline",
            (TensorData::External(_), _) => "external",
        };
        let (name, ty, dims, strings) = (&t.name, t.data_type, &t.dims, &t.string_data);
        format!("{name} {ty} {dims:?} {place} {bytes:?} {strings:?}")
    };
    if let Some(m) = &checkpoint.module_state {
        out.push(format!("nominal {}", m.is_nominal_state));
        if placement {
            out.push(format!("has_external_data {}", m.has_external_data));
        }
        out.extend(
            m.requires_grad_params
                .iter()
                .map(|t| format!("trainable {}", tensor(t))),
        );
        out.extend(
            m.frozen_params
                .iter()
                .map(|t| format!("frozen {}", tensor(t))),
        );
    }
    for g in &checkpoint.optimizer_groups {
        let lr = g.initial_learning_rate.to_bits();
        out.push(format!("group {} {} {lr}", g.group_name, g.step));
        for s in &g.optimizer_states {
            out.push(format!("state {}", s.param_name));
            out.extend(
                s.momentums
                    .iter()
                    .map(|t| format!("momentum {}", tensor(t))),
            );
        }
    }
    let bag = &checkpoint.property_bag;
    out.extend(
        bag.ints
            .iter()
            .map(|p| format!("int {} {}", p.name, p.value)),
    );
    out.extend(
        bag.floats
            .iter()
            .map(|p| format!("float {} {}", p.name, p.value.to_bits())),
    );
    out.extend(
        bag.strings
            .iter()
            .map(|p| format!("string {} {}", p.name, p.value)),
    );
    out
}

fuzz_target!(
    init: {
        onnx_lookahead_fuzz::write_seeds("checkpoint");
    },
    |data: &[u8]| {
        if onnx_lookahead_fuzz::flatbuffers_soffset_min(data) {
            return;
        }
        let dir = setup();
        let path = dir.join("checkpoint");
        write(&path, data);
        let Ok(checkpoint) = read_checkpoint(&path) else {
            return;
        };
        let _ = checkpoint.inline_data_bytes();
        for tensor in checkpoint.module_state.iter().flat_map(|m| m.requires_grad_params.iter().chain(m.frozen_params.iter())) {
            let _ = checkpoint.tensor_bytes(tensor);
            let _ = tensor.expected_byte_length();
        }
        let layout = LAYOUTS[data.len() % LAYOUTS.len()];
        let out = workdir().join("out");
        let Some(first) = write_out(&checkpoint, &out, layout) else {
            return;
        };
        let reread = read_checkpoint(out.join("checkpoint"))
            .unwrap_or_else(|e| panic!("a written checkpoint does not read back ({layout:?}): {e}"));
        // Keep also keeps each tensor's placement (the data file itself is laid out afresh, so
        // offsets may change); the other layouts move bytes, so compare what they hold.
        let keep = layout == ExternalDataLayout::Keep;
        let (before, after) = (content(&checkpoint, keep), content(&reread, keep));
        assert!(
            before == after,
            "the content read back differs ({layout:?}):\n{before:#?}\n{after:#?}"
        );
        let second = write_out(&reread, &workdir().join("out2"), layout)
            .unwrap_or_else(|| panic!("a checkpoint read back does not write again ({layout:?})"));
        assert!(first == second, "writing is not a fixed point ({layout:?})");
    }
);
