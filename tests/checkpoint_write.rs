//! The streamed checkpoint writer through the public API, on what the small fixtures of
//! tests/checkpoint.rs do not reach: tensors big enough for the kernel to copy them from the file
//! they were read from, write errors and interruption during those copies, and file modes.

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::{entries, test_data};
use onnx_lookahead::Error;
use onnx_lookahead::io::checkpoint::{
    Checkpoint, CheckpointTensor, ExternalDataLayout, TensorData, data_type, external_data_path,
    read_checkpoint, write_checkpoint, write_checkpoint_with,
};

fn read(name: &str) -> Checkpoint {
    read_checkpoint(test_data(name)).expect("fixture reads")
}

/// Tensors big enough to be copied by the kernel from the file they were read from (inline, then
/// from the data file), shared by slow copies: the bytes come out unchanged and stored once.
#[test]
fn big_tensors_are_copied_from_the_files_they_were_read_from() {
    let dir = tempfile::tempdir().unwrap();
    let mut checkpoint = Checkpoint::new(2);
    let values: Vec<u8> = (0..512 * 256 * 4).map(|i| (i % 253) as u8).collect();
    for (name, dims, bytes) in [
        ("W", vec![512i64, 256], Bytes::from(values.clone())),
        ("b", vec![3], Bytes::from_static(&[1; 12])),
        (
            "V",
            vec![256, 512],
            Bytes::from(values[..].to_vec()).slice(..),
        ),
    ] {
        let tensor = CheckpointTensor::new(name, dims, data_type::FLOAT, TensorData::Inline(bytes));
        checkpoint.add_frozen_parameter(tensor).unwrap();
    }
    let first = dir.path().join("first");
    write_checkpoint(&checkpoint, &first).unwrap();
    let first_size = std::fs::metadata(&first).unwrap().len();

    let mut mapped = read_checkpoint(&first).unwrap();
    assert_eq!(mapped, checkpoint);
    mapped.add_frozen_copy("W", "W.slow").unwrap();
    mapped.add_frozen_copy("V", "V.slow").unwrap();
    let slow = dir.path().join("slow");
    write_checkpoint(&mapped, &slow).unwrap();
    let again = read_checkpoint(&slow).unwrap();
    assert_eq!(again, mapped);
    // The copies share their weights' byte vectors: only their tables and names were added.
    assert!(std::fs::metadata(&slow).unwrap().len() < first_size + 1024);
    for name in ["W", "W.slow", "V.slow"] {
        assert_eq!(
            again.tensor_bytes(again.parameter(name).unwrap()).unwrap(),
            Some(Bytes::from(values.clone())),
            "{name}"
        );
    }

    let external = dir.path().join("external");
    write_checkpoint_with(&again, &external, ExternalDataLayout::ModuleStateExternal).unwrap();
    let data_size = std::fs::metadata(external_data_path(&external))
        .unwrap()
        .len();
    assert_eq!(data_size, 2 * values.len() as u64 + 12, "W and V once each");
    let from_data = read_checkpoint(&external).unwrap();
    let inline = dir.path().join("inline");
    write_checkpoint_with(&from_data, &inline, ExternalDataLayout::Inline).unwrap();
    assert_eq!(read_checkpoint(&inline).unwrap(), again);
}

/// Outputs are created like any new file (mode 0666 under the umask), not private like
/// temporary files, and what they replace is replaced.
#[test]
fn written_files_have_the_mode_of_new_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    std::fs::File::create(&reference).unwrap();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let path = dir.path().join("ck");
    write_checkpoint_with(
        &read("checkpoint_adamw"),
        &path,
        ExternalDataLayout::ModuleStateExternal,
    )
    .unwrap();
    assert_eq!(mode(&path), mode(&reference));
    assert_eq!(mode(&external_data_path(&path)), mode(&reference));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    write_checkpoint(&read("checkpoint_adamw_properties"), &path).unwrap();
    assert_eq!(
        read_checkpoint(&path).unwrap(),
        read("checkpoint_adamw_properties")
    );
    assert_eq!(mode(&path), mode(&reference));
    assert_eq!(entries(dir.path()), ["ck", "ck.data", "reference"]);
}

/// The child half of `kernel_copies_fail_cleanly`: runs in a process of its own (a file-size
/// limit, or an interruption, applies to the whole process).
#[test]
#[ignore = "run by kernel_copies_fail_cleanly in a child process"]
fn child_write_that_fails() {
    let (Some(dir), Some(mode)) = (
        std::env::var_os("CHECKPOINT_CHILD_DIR"),
        std::env::var("CHECKPOINT_CHILD_MODE").ok(),
    ) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let mut checkpoint = read_checkpoint(dir.join("source")).unwrap();
    checkpoint.add_frozen_copy("W", "W.slow").unwrap();
    if mode == "interrupt" {
        onnx_lookahead::io::interrupt::install_handlers();
        // SAFETY: raising a signal whose handler only sets a flag.
        unsafe { libc::raise(libc::SIGINT) };
    }
    for layout in [
        ExternalDataLayout::Keep,
        ExternalDataLayout::ModuleStateExternal,
    ] {
        let out = dir.join(format!("out_{layout:?}"));
        std::fs::create_dir(&out).unwrap();
        let error = write_checkpoint_with(&checkpoint, out.join("ck"), layout).unwrap_err();
        let Error::Io { source, .. } = &error else {
            panic!("{error}")
        };
        match mode.as_str() {
            "interrupt" => assert_eq!(source.kind(), std::io::ErrorKind::Interrupted, "{error}"),
            _ => assert_eq!(source.raw_os_error(), Some(libc::EFBIG), "{error}"),
        }
        assert!(entries(&out).is_empty(), "{layout:?}: {:?}", entries(&out));
    }
    println!("child checked {mode}");
}

/// Writing a checkpoint whose big tensors the kernel copies from the input fails like any write:
/// under a file-size limit (EFBIG; SIGXFSZ ignored, as the binary does) and when a signal asked
/// to stop, the error is `Error::Io` and no file is left behind.
#[test]
fn kernel_copies_fail_cleanly() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let mut source = Checkpoint::new(2);
    let values = Bytes::from(vec![7u8; 4 << 20]);
    let tensor = CheckpointTensor::new(
        "W",
        vec![1 << 20],
        data_type::FLOAT,
        TensorData::Inline(values),
    );
    source.add_frozen_parameter(tensor).unwrap();
    write_checkpoint(&source, dir.path().join("source")).unwrap();
    for mode in ["file-size-limit", "interrupt"] {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "--ignored",
                "--exact",
                "child_write_that_fails",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CHECKPOINT_CHILD_DIR", dir.path())
            .env("CHECKPOINT_CHILD_MODE", mode);
        if mode == "file-size-limit" {
            // SAFETY: setrlimit and signal are async-signal-safe; nothing else runs before exec.
            unsafe {
                command.pre_exec(|| {
                    let limit = libc::rlimit {
                        rlim_cur: 1 << 20,
                        rlim_max: 1 << 20,
                    };
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let output = command.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains(&format!("child checked {mode}")),
            "{mode}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        for layout in ["Keep", "ModuleStateExternal"] {
            std::fs::remove_dir(dir.path().join(format!("out_{layout}"))).unwrap();
        }
    }
}
