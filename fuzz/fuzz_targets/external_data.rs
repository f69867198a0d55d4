//! External-data resolution: a mutated model placed in a folder with data files beside it
//! (`weights.bin`, `sub/more.bin`); every reference the check accepts must name a file inside the
//! folder with the byte range inside the file, and staging those files into another folder must
//! copy exactly them.
#![no_main]

use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use onnx_lookahead::generated::onnx::ModelProto;
use onnx_lookahead::io::external_data::{
    check_external_data, external_ref, for_each_tensor, stage_external_files,
};
use onnx_lookahead_fuzz::{clear_dir, entries, workdir};
use prost::Message;

fn setup() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = workdir().join("in");
        clear_dir(&dir);
        onnx_lookahead_fuzz::place_external_data(&dir);
        dir
    })
}

fuzz_target!(
    init: {
        onnx_lookahead_fuzz::write_seeds("external_data");
    },
    |data: &[u8]| {
        let Ok(model) = ModelProto::decode(Bytes::copy_from_slice(data)) else {
            return;
        };
        let dir = setup();
        let model_path = dir.join("model.onnx");
        let Ok(files) = check_external_data(&model_path, &model) else {
            return;
        };
        // Every accepted reference: relative, no `..`, and its range inside the file.
        let mut refs = Vec::new();
        for_each_tensor(&model, &mut |t| {
            if let Some(r) = external_ref(t) {
                refs.push(r.expect("an accepted model has only valid references"));
            }
        });
        for r in &refs {
            let normalized: PathBuf = Path::new(&r.location)
                .components()
                .filter(|c| !matches!(c, Component::CurDir))
                .collect();
            assert!(
                files.iter().any(|f| f.location == normalized),
                "a used file is missing from the set"
            );
            assert!(
                Path::new(&r.location)
                    .components()
                    .all(|c| matches!(c, Component::Normal(_) | Component::CurDir)),
                "an accepted location leaves the folder: {:?}",
                r.location
            );
            let meta = std::fs::metadata(dir.join(&r.location)).expect("accepted file exists");
            assert!(meta.is_file(), "an accepted location is not a file: {:?}", r.location);
            let resolved = dir.join(&r.location).canonicalize().expect("resolves");
            let folder = dir.canonicalize().expect("resolves");
            assert!(resolved.starts_with(&folder), "an accepted location resolves outside: {:?}", r.location);
            let len = meta.len();
            assert!(r.offset + r.length.unwrap_or(0) <= len, "accepted range past the end");
        }
        if files.is_empty() {
            return;
        }
        let out = workdir().join("out");
        clear_dir(&out);
        match stage_external_files(&files, dir, &out) {
            Ok(staged) => {
                staged
                    .commit_with(|| Ok(()))
                    .expect("staged files commit into an empty folder");
                for file in &files {
                    let copied = std::fs::read(out.join(&file.location)).expect("staged file exists");
                    let source = std::fs::read(&file.resolved).expect("source exists");
                    // Only the bytes the model references are copied.
                    assert!(
                        copied.len() as u64 == file.needed && source.starts_with(&copied),
                        "staged copy of {} differs",
                        file.location.display()
                    );
                }
            }
            // An error leaves nothing behind, not even the subfolders it made.
            Err(_) => {
                assert!(entries(&out).is_empty(), "a failed staging left {:?}", entries(&out));
            }
        }
    }
);
