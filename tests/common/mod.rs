//! Helpers shared by the integration tests: fixtures, the binary, the error contract, and
//! snapshots of directory trees to prove that nothing changed or was left behind.
#![allow(dead_code)] // each test crate uses a subset

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// A file or folder under fixtures/.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A file under tests/data/.
pub fn test_data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn tool() -> Command {
    Command::cargo_bin("onnx-lookahead").expect("binary is built")
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

/// Paths as arguments.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// Runs the tool expecting success; returns stderr (the summary line).
pub fn run_ok(args: &[&str]) -> String {
    let output = tool().args(args).output().expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "args {args:?} failed: {stderr}");
    stderr
}

/// Runs the tool expecting failure with `code`; checks the error contract and returns stderr.
/// Runtime errors (code 1, 3) print exactly one line, `error: ...`. Command-line errors (code 2)
/// print one `error:` line first, then clap's tips and usage on further lines, none of them
/// another `error:` line.
pub fn expect_error(args: &[&str], code: i32) -> String {
    let output = tool().args(args).output().expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    check_error_contract(&stderr, output.status.code(), code, args);
    stderr
}

pub fn check_error_contract(stderr: &str, got: Option<i32>, code: i32, args: &[&str]) {
    assert_eq!(got, Some(code), "args {args:?}, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.first().is_some_and(|l| l.starts_with("error: ")),
        "starts with `error: `: {stderr:?}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("error")).count(),
        1,
        "exactly one error line: {stderr:?}"
    );
    if code != 2 {
        assert_eq!(lines.len(), 1, "exactly one line on stderr: {stderr:?}");
    }
}

/// Every file below `path` with its bytes (symlinks as their target text), sorted: equal
/// digests mean nothing was changed, added or removed.
pub fn digest(path: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let meta = std::fs::symlink_metadata(path).expect("exists");
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).expect("link");
        files.push((
            path.to_path_buf(),
            target.to_string_lossy().as_bytes().to_vec(),
        ));
    } else if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .expect("lists")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        files.push((path.to_path_buf(), b"<dir>".to_vec()));
        for e in entries {
            files.extend(digest(&e));
        }
    } else if meta.is_file() {
        files.push((path.to_path_buf(), std::fs::read(path).expect("reads")));
    } else {
        files.push((path.to_path_buf(), b"<special>".to_vec()));
    }
    files
}

/// The names in `dir`, sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("lists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Nothing but `expected` is in `dir` (no partial output, no temporary files).
pub fn assert_dir_entries(dir: &Path, expected: &[&str]) {
    let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(entries(dir), expected, "entries of {}", dir.display());
}

/// Copies a flat directory (the fixtures' artifacts folders).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creates");
    for entry in std::fs::read_dir(from).expect("lists") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copies");
    }
}

/// Creates a FIFO (named pipe).
pub fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// The training_info fixture, decoded.
pub fn training_info_model() -> onnx_lookahead::generated::onnx::ModelProto {
    use prost::Message;
    let bytes = std::fs::read(fixture("training_info_sgd.onnx")).expect("fixture");
    onnx_lookahead::generated::onnx::ModelProto::decode(bytes.as_slice()).expect("decodes")
}

/// Writes a model to `path`.
pub fn save_model(model: &onnx_lookahead::generated::onnx::ModelProto, path: &Path) {
    use prost::Message;
    std::fs::write(path, model.encode_to_vec()).expect("writes");
}

/// The training_info fixture with the bytes of each named weight moved to its own external data
/// file (`(weight, location)`), saved as `dir/model.onnx`. With `write_data`, each data file is
/// written at its location, which must then be a plain relative path (a test never writes
/// outside its own folder).
pub fn external_data_model_with(dir: &Path, moves: &[(&str, &str)], write_data: bool) -> PathBuf {
    use onnx_lookahead::generated::onnx::{StringStringEntryProto, tensor_proto::DataLocation};
    let mut model = training_info_model();
    let graph = model.graph.as_mut().expect("graph");
    for (weight, location) in moves {
        let tensor = graph
            .initializer
            .iter_mut()
            .find(|t| t.name() == *weight)
            .expect("weight exists");
        let raw = tensor.raw_data.take().expect("raw data");
        if write_data {
            let relative = Path::new(location);
            assert!(
                relative
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_))),
                "test data is written inside the test folder only: {location}"
            );
            let file = dir.join(relative);
            std::fs::create_dir_all(file.parent().expect("parent")).expect("folder");
            std::fs::write(&file, &raw).expect("writes data");
        }
        tensor.data_location = Some(DataLocation::External as i32);
        for (key, value) in [
            ("location", location.to_string()),
            ("offset", "0".into()),
            ("length", raw.len().to_string()),
        ] {
            tensor.external_data.push(StringStringEntryProto {
                key: Some(key.into()),
                value: Some(value),
            });
        }
    }
    let path = dir.join("model.onnx");
    save_model(&model, &path);
    path
}

/// The training_info fixture with W1's bytes written to `dir/weights.bin` and referenced as
/// `location` (which may point elsewhere, for tests of bad locations).
pub fn external_data_model(dir: &Path, location: &str) -> PathBuf {
    let path = external_data_model_with(dir, &[("W1", location)], false);
    let w1 = training_info_model()
        .graph
        .and_then(|g| g.initializer.into_iter().find(|t| t.name() == "W1"))
        .and_then(|t| t.raw_data)
        .expect("W1 has raw data");
    std::fs::write(dir.join("weights.bin"), &w1).expect("writes data");
    path
}
