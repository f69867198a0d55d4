//! The file-system promises of README "Safety", tested through the binary on hostile cases:
//! outputs that contain their input, --force on things that are not an earlier output, special
//! files where files are read, external data leaving the model's folder, and failed writes. In
//! every case: one `error:` line, a non-zero exit, no leftovers, the input untouched.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use common::*;

/// Runs the tool with a time limit (a hang is a failure) and checks the error contract.
fn expect_error_quickly(args: &[&str]) -> String {
    let output = tool()
        .args(args)
        .timeout(Duration::from_secs(30))
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        !stderr.is_empty() || output.status.code().is_some(),
        "{args:?} timed out"
    );
    check_error_contract(&stderr, output.status.code(), 1, args);
    stderr
}

#[test]
fn an_output_that_contains_or_is_the_input_is_refused() {
    let work = tmp();
    let w = work.path();
    let art = w.join("a/art");
    copy_dir(&fixture("ort_sgd"), &art);
    std::fs::write(w.join("a/notes.txt"), b"keep").unwrap();
    std::os::unix::fs::symlink(w.join("a"), w.join("link")).unwrap();
    let before = digest(w);
    let outputs = [
        w.join("a"),
        w.to_path_buf(),
        w.join("link"),
        w.join("link/art"),
        w.join("a/art/../../a"),
        w.join("a/art/.."),
        art.clone(),
        art.join("inside"),
    ];
    for output in &outputs {
        let err = expect_error_quickly(&["rewrite", arg(&art), "-o", arg(output), "--force"]);
        assert!(err.contains("output"), "{err}");
        assert_eq!(digest(w), before, "{} changed something", output.display());
    }
    // The same for a model file and its folder, and for its external data file.
    let model_dir = w.join("m");
    std::fs::create_dir(&model_dir).unwrap();
    let model = external_data_model(&model_dir, "weights.bin");
    let before = digest(w);
    for output in [
        model_dir.clone(),
        model.clone(),
        model_dir.join("weights.bin"),
        w.join("link/../m/model.onnx"),
    ] {
        expect_error_quickly(&["rewrite", arg(&model), "-o", arg(&output), "--force"]);
        assert_eq!(digest(w), before, "{} changed something", output.display());
    }
}

#[test]
fn force_replaces_only_an_earlier_output() {
    let work = tmp();
    let w = work.path();
    let input = fixture("ort_sgd");
    let folder_with_notes = w.join("notes");
    std::fs::create_dir(&folder_with_notes).unwrap();
    std::fs::write(folder_with_notes.join("notes.txt"), b"keep").unwrap();
    let plain_file = w.join("file");
    std::fs::write(&plain_file, b"keep").unwrap();
    let fifo = w.join("fifo");
    mkfifo(&fifo);
    let earlier_plus_extra = w.join("earlier_plus_extra");
    run_ok(&["rewrite", arg(&input), "-o", arg(&earlier_plus_extra)]);
    std::fs::write(earlier_plus_extra.join("mine.txt"), b"keep").unwrap();
    let before = digest(w);
    for output in [&folder_with_notes, &plain_file, &fifo, &earlier_plus_extra] {
        let err = expect_error_quickly(&["rewrite", arg(&input), "-o", arg(output), "--force"]);
        assert!(err.contains("only an earlier output"), "{err}");
        assert_eq!(digest(w), before);
    }
    // An earlier output (an artifacts set, nothing else) is replaced.
    let earlier = w.join("earlier");
    run_ok(&["rewrite", arg(&input), "-o", arg(&earlier), "-k", "3"]);
    let first = digest(&earlier);
    run_ok(&[
        "rewrite",
        arg(&input),
        "-o",
        arg(&earlier),
        "-k",
        "4",
        "--force",
    ]);
    assert_ne!(digest(&earlier), first);
    let mut expected = entries(w);
    expected.sort();
    assert!(
        entries(w).iter().all(|n| !n.starts_with(".onnx-lookahead")),
        "{expected:?}"
    );
}

/// Special files where the tool reads: each is refused at once (no hang), names the file, and
/// leaves nothing behind.
#[test]
fn special_files_are_refused_without_hanging() {
    let work = tmp();
    let w = work.path();
    type Setup = fn(&Path) -> std::path::PathBuf;
    fn artifacts_with_fifo(dir: &Path, file: &str) -> std::path::PathBuf {
        let art = dir.join("art");
        copy_dir(&fixture("ort_adamw"), &art);
        let _ = std::fs::remove_file(art.join(file));
        mkfifo(&art.join(file));
        art
    }
    let cases: Vec<(&str, Setup, &str)> = vec![
        (
            "model FIFO",
            |d| {
                let m = d.join("m.onnx");
                mkfifo(&m);
                m
            },
            "FIFO",
        ),
        (
            "training model FIFO",
            |d| artifacts_with_fifo(d, "training_model.onnx"),
            "FIFO",
        ),
        (
            "eval model FIFO",
            |d| artifacts_with_fifo(d, "eval_model.onnx"),
            "FIFO",
        ),
        (
            "optimizer model FIFO",
            |d| artifacts_with_fifo(d, "optimizer_model.onnx"),
            "FIFO",
        ),
        (
            "checkpoint FIFO",
            |d| artifacts_with_fifo(d, "checkpoint"),
            "FIFO",
        ),
        (
            "extra FIFO",
            |d| artifacts_with_fifo(d, "notes.fifo"),
            "FIFO",
        ),
        (
            "checkpoint.data FIFO",
            |d| {
                let art = d.join("art");
                copy_dir(&fixture("ort_adamw"), &art);
                let checkpoint =
                    onnx_lookahead::io::checkpoint::read_checkpoint(art.join("checkpoint"))
                        .unwrap();
                std::fs::remove_file(art.join("checkpoint")).unwrap();
                onnx_lookahead::io::checkpoint::write_checkpoint_with(
                    &checkpoint,
                    art.join("checkpoint"),
                    onnx_lookahead::io::checkpoint::ExternalDataLayout::ModuleStateExternal,
                )
                .unwrap();
                std::fs::remove_file(art.join("checkpoint.data")).unwrap();
                mkfifo(&art.join("checkpoint.data"));
                art
            },
            "FIFO",
        ),
        (
            "external data FIFO",
            |d| {
                let m = external_data_model(d, "w.fifo");
                mkfifo(&d.join("w.fifo"));
                m
            },
            "FIFO",
        ),
        (
            "external data link to /dev/zero",
            |d| {
                let m = external_data_model(d, "zero.bin");
                std::os::unix::fs::symlink("/dev/zero", d.join("zero.bin")).unwrap();
                m
            },
            "outside the model's folder",
        ),
        (
            "external data is a folder",
            |d| {
                let m = external_data_model(d, "sub");
                std::fs::create_dir(d.join("sub")).unwrap();
                m
            },
            "directory",
        ),
    ];
    for (i, (what, setup, expected)) in cases.into_iter().enumerate() {
        let case = w.join(format!("case{i}"));
        let input_dir = case.join("in");
        std::fs::create_dir_all(&input_dir).unwrap();
        let input = setup(&input_dir);
        let out_dir = case.join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let before = digest(&input_dir);
        let output = out_dir.join("result");
        let err = expect_error_quickly(&["rewrite", arg(&input), "-o", arg(&output)]);
        assert!(err.contains(expected), "{what}: {err}");
        assert_eq!(digest(&input_dir), before, "{what}: input changed");
        assert_dir_entries(&out_dir, &[]);
        // inspect reads the models and the checkpoint (not extra files or external data): it
        // refuses the same special files, or succeeds without touching the others.
        let inspected = tool()
            .args(["inspect", arg(&input)])
            .timeout(Duration::from_secs(30))
            .output()
            .expect("runs");
        if !inspected.status.success() {
            let stderr = String::from_utf8_lossy(&inspected.stderr);
            check_error_contract(&stderr, inspected.status.code(), 1, &[what]);
            assert!(stderr.contains(expected), "{what}: {stderr}");
        }
    }
}

#[test]
fn external_data_may_not_leave_the_model_folder() {
    let work = tmp();
    let w = work.path();
    std::fs::write(w.join("outside.bin"), vec![0u8; 4096]).unwrap();
    type MakeModel = fn(&Path) -> std::path::PathBuf;
    let cases: Vec<(&str, MakeModel)> = vec![
        ("link to a file outside", |d| {
            let m = external_data_model(d, "evil.bin");
            std::os::unix::fs::symlink("../../outside.bin", d.join("evil.bin")).unwrap();
            m
        }),
        ("folder link to outside", |d| {
            let m = external_data_model(d, "up/outside.bin");
            std::os::unix::fs::symlink("../..", d.join("up")).unwrap();
            m
        }),
        ("parent", |d| external_data_model(d, "../outside.bin")),
        ("absolute", |d| external_data_model(d, "/etc/hostname")),
    ];
    for (i, (what, setup)) in cases.into_iter().enumerate() {
        let input_dir = w.join(format!("case{i}/in"));
        std::fs::create_dir_all(&input_dir).unwrap();
        let input = setup(&input_dir);
        let out_dir = w.join(format!("case{i}/out"));
        std::fs::create_dir(&out_dir).unwrap();
        let err =
            expect_error_quickly(&["rewrite", arg(&input), "-o", arg(&out_dir.join("m.onnx"))]);
        assert!(err.contains("external data"), "{what}: {err}");
        assert_dir_entries(&out_dir, &[]);
    }
}

#[test]
fn a_refused_external_data_destination_leaves_no_folders() {
    let work = tmp();
    let w = work.path();
    let input_dir = w.join("in");
    std::fs::create_dir(&input_dir).unwrap();
    let input = external_data_model_with(&input_dir, &[("W1", "a/w1.bin"), ("W2", "w2.bin")], true);
    let out_dir = w.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    // Another model's data file of the same name is there: never replaced, even with --force.
    std::fs::write(out_dir.join("w2.bin"), b"another model's weights").unwrap();
    let out = out_dir.join("m.onnx");
    for force in [false, true] {
        let mut args = vec!["rewrite", arg(&input), "-o", arg(&out)];
        if force {
            args.push("--force");
        }
        let err = expect_error_quickly(&args);
        assert!(err.contains("w2.bin"), "{err}");
        assert_dir_entries(&out_dir, &["w2.bin"]);
        assert_eq!(
            std::fs::read(out_dir.join("w2.bin")).unwrap(),
            b"another model's weights"
        );
    }
    // With the same bytes there, the file is kept and the rewrite succeeds.
    std::fs::copy(input_dir.join("w2.bin"), out_dir.join("w2.bin")).unwrap();
    run_ok(&["rewrite", arg(&input), "-o", arg(&out_dir.join("m.onnx"))]);
    assert_dir_entries(&out_dir, &["a", "m.onnx", "w2.bin"]);
}

/// Runs the tool with a file-size limit: every write past `limit` bytes fails (EFBIG), like a
/// full disk does, at any point of the output.
fn run_with_file_size_limit(args: &[&str], limit: u64) -> std::process::Output {
    let mut command = std::process::Command::new(assert_cmd::cargo::cargo_bin("onnx-lookahead"));
    command.args(args);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.output().expect("runs")
}

#[test]
fn write_errors_are_one_error_line_and_leave_nothing() {
    let work = tmp();
    let w = work.path();
    let data_in = w.join("in");
    std::fs::create_dir(&data_in).unwrap();
    let with_data = external_data_model(&data_in, "weights.bin");
    for (i, input, limit) in [
        (0, fixture("ort_adamw"), 1024),
        (1, fixture("training_info_sgd.onnx"), 1024),
        // The data file (48 bytes) fits, the model does not: the data file goes again.
        (2, with_data.clone(), 1024),
    ] {
        let out_dir = w.join(format!("out{i}"));
        std::fs::create_dir(&out_dir).unwrap();
        let result = out_dir.join("result");
        let args = ["rewrite", arg(&input), "-o", arg(&result)];
        let output = run_with_file_size_limit(&args, limit);
        let stderr = String::from_utf8_lossy(&output.stderr);
        check_error_contract(&stderr, output.status.code(), 1, &args);
        assert!(stderr.contains("File too large"), "{stderr}");
        assert_dir_entries(&out_dir, &[]);
    }
}

/// A full file system (a 12 KiB tmpfs): ENOSPC is an error line, not SIGBUS, and nothing is
/// left. Mounting needs root; without it the test says so and checks nothing.
#[test]
fn a_full_disk_is_an_error_not_a_signal() {
    let work = tmp();
    let mount_point = work.path().join("full");
    std::fs::create_dir(&mount_point).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=12k", "tmpfs", arg(&mount_point)])
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        eprintln!(
            "skipped: cannot mount a tmpfs here (needs root); the file-size-limit test covers write errors"
        );
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mount_point);
    // Fill it up to a few hundred bytes.
    std::fs::write(mount_point.join("filler"), vec![1u8; 10 * 1024]).unwrap();
    for input in [fixture("ort_adamw"), fixture("training_info_sgd.onnx")] {
        let output = mount_point.join("result");
        let err = expect_error_quickly(&["rewrite", arg(&input), "-o", arg(&output)]);
        assert!(err.contains("No space left"), "{err}");
        assert_dir_entries(&mount_point, &["filler"]);
    }
}
