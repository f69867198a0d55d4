//! The ORT checkpoint reader (FlatBuffer + checkpoint.data), and the writer on whatever it read:
//! every readable checkpoint must write, and read back as written, in each layout.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onnx_lookahead::io::checkpoint::{
    Checkpoint, ExternalDataLayout, read_checkpoint, write_checkpoint_with,
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

fuzz_target!(
    init: {
        onnx_lookahead_fuzz::write_seeds("checkpoint");
    },
    |data: &[u8]| {
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
        if !format!("{checkpoint:?}").contains("NaN") {
            assert!(reread == checkpoint, "the checkpoint read back differs ({layout:?})");
        }
        let second = write_out(&reread, &workdir().join("out2"), layout)
            .unwrap_or_else(|| panic!("a checkpoint read back does not write again ({layout:?})"));
        assert!(first == second, "writing is not a fixed point ({layout:?})");
    }
);
