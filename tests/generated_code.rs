//! The generated Rust under src/generated/ is committed so that a build needs no protoc or flatc.
//! These tests regenerate it from the vendored schemas and fail when the committed files are stale.
//! `UPDATE_GENERATED=1 cargo test --test generated_code` rewrites them.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compare_or_update(committed: &Path, fresh: &[u8]) {
    if std::env::var_os("UPDATE_GENERATED").is_some() {
        std::fs::write(committed, fresh).expect("write generated file");
        return;
    }
    let current = std::fs::read(committed).unwrap_or_default();
    assert!(
        current == fresh,
        "{} is stale; regenerate with `UPDATE_GENERATED=1 cargo test --test generated_code`",
        committed.display()
    );
}

#[test]
fn onnx_protobuf_code_is_fresh() {
    let proto_dir = root().join("proto");
    let descriptors =
        protox::compile([proto_dir.join("onnx.proto")], [&proto_dir]).expect("compile onnx.proto");
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = prost_build::Config::new();
    // `bytes` fields become bytes::Bytes so that decoding from a memory map is zero-copy.
    config.bytes(["."]);
    config.out_dir(out.path());
    config
        .compile_fds(descriptors.clone())
        .expect("prost-build");
    let fresh = std::fs::read(out.path().join("onnx.rs")).expect("generated onnx.rs");
    compare_or_update(&root().join("src/generated/onnx.rs"), &fresh);

    // The descriptor set is embedded for the exact unknown-field check (src/io/lossless.rs).
    let mut set = descriptors;
    for file in &mut set.file {
        file.source_code_info = None;
    }
    let encoded = prost::Message::encode_to_vec(&set);
    compare_or_update(
        &root().join("src/generated/onnx_descriptor_set.bin"),
        &encoded,
    );
}
