//! Shared pieces of the fuzz targets in `fuzz_targets/`: a per-process scratch folder on tmpfs,
//! the repository's fixtures, and the seed corpora generated from them (see fuzz/README.md).
//!
//! A target panics (which libFuzzer records as a crash) only when the tool itself misbehaves:
//! a panic inside the library, or a broken promise checked here (an `Ok` rewrite whose output the
//! tool cannot read back, an input changed by a rewrite, output left behind by a refused rewrite,
//! a checkpoint that does not read back as written). An `Err` from the library is the expected
//! answer to a malformed input.

pub mod seeds;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The repository root (the fuzz package lives in `<root>/fuzz`).
pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `<root>/fixtures`.
pub fn fixtures() -> PathBuf {
    repo_root().join("fixtures")
}

/// A scratch folder private to this process, created once: under `$FUZZ_WORKDIR` when set (run.sh
/// sets it and removes it afterwards), else `/dev/shm` (tmpfs: file writes cost no disk I/O), else
/// the system temporary folder. It is kept when the process exits (libFuzzer ends with `exit`).
pub fn workdir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = match std::env::var_os("FUZZ_WORKDIR") {
            Some(dir) => PathBuf::from(dir),
            None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
            None => std::env::temp_dir(),
        };
        std::fs::create_dir_all(&base).expect("create the fuzz work folder");
        tempfile::Builder::new()
            .prefix("onnx-lookahead-fuzz-")
            .tempdir_in(&base)
            .expect("create a scratch folder")
            .keep()
    })
}

/// A fresh, empty folder `name` inside the scratch folder (emptied if it exists).
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = workdir().join(name);
    clear_dir(&dir);
    dir
}

/// Removes `dir` with everything in it and creates it again, empty.
pub fn clear_dir(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("cannot empty {}: {e}", dir.display()),
    }
    std::fs::create_dir_all(dir).expect("create a scratch subfolder");
}

/// Writes `data` to `path` (replacing it).
pub fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// The names in `dir` (sorted), for checks that a refused operation left nothing behind.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The external data files beside every model a target places: a 4 KiB `weights.bin` and a
/// small `sub/more.bin` (the seeds reference ranges inside them; the bytes themselves are never
/// read by the tool).
pub fn place_external_data(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).expect("create sub/");
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    write(&dir.join(seeds::WEIGHTS_FILE), &pattern);
    write(&dir.join(seeds::SMALL_FILE), &pattern[..256]);
}

/// Called from each target's `init`: when `$FUZZ_SEED_DIR` is set, writes the target's seeds
/// (generated from the fixtures) into `$FUZZ_SEED_DIR/<target>`, which run.sh passes to libFuzzer
/// as a read-only corpus folder. libFuzzer runs `init` before it reads its corpus folders.
pub fn write_seeds(target: &str) {
    let Some(root) = std::env::var_os("FUZZ_SEED_DIR") else {
        return;
    };
    let dir = PathBuf::from(root).join(target);
    std::fs::create_dir_all(&dir).expect("create the seed folder");
    for (name, bytes) in seeds::for_target(target) {
        write(&dir.join(name), &bytes);
    }
}

/// Known issue outside this project, skipped so that a run can go on: flatbuffers' verifier
/// (2.1 up to at least 25.x) computes `soffset.abs()` on a table's vtable offset, which overflows
/// for i32::MIN. With overflow checks (debug builds, and these fuzz builds) that is a panic; without
/// them (the tool's release build) it wraps to an offset out of bounds and the verifier refuses
/// the buffer as it should. Tables are 4-aligned, so a checkpoint whose bytes hold i32::MIN at a
/// 4-aligned position is not run. Reproducer: findings/checkpoint/flatbuffers-verifier-soffset-i32-min.
pub fn flatbuffers_soffset_min(checkpoint: &[u8]) -> bool {
    checkpoint
        .chunks_exact(4)
        .any(|w| i32::from_le_bytes([w[0], w[1], w[2], w[3]]) == i32::MIN)
}
