//! Unit tests of the reader and writer: real ORT checkpoints and edge cases, and the streamed
//! writer's front-to-back layout against the `flatbuffers` crate's builder (`reference`).

mod edge_cases;
mod reference;

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::model::*;
use super::read::{parse_checkpoint, verifier_options};
use super::write::{Layout, Plan, RAW_DATA_ALIGNMENT};
use super::*;
use crate::Result;
use crate::generated::ort_checkpoint::onnxruntime::fbs;

/// The checkpoints ONNX Runtime 1.19.2 wrote (tests/data/checkpoint_fixtures.md).
const FIXTURES: [&str; 6] = [
    "checkpoint_adamw",
    "checkpoint_adamw_optimizer_state",
    "checkpoint_adamw_properties",
    "checkpoint_adamw_frozen",
    "checkpoint_adamw_nominal",
    "checkpoint_adamw_external",
];

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn fixture(name: &str) -> Bytes {
    Bytes::from(std::fs::read(fixture_path(name)).expect("fixture"))
}

/// A fixture read from disk (mapped, with its data file).
fn read_fixture(name: &str) -> Checkpoint {
    read_checkpoint(fixture_path(name)).expect("fixture reads")
}

/// The checkpoint file `write_checkpoint_with` would write, in memory.
fn serialize_with(checkpoint: &Checkpoint, layout: ExternalDataLayout) -> Result<Vec<u8>> {
    let plan = Plan::new(checkpoint, layout, Path::new("mem"))?;
    Ok(Layout::new(checkpoint, &plan, MAX_CHECKPOINT_SIZE).to_vec())
}

fn serialize(checkpoint: &Checkpoint) -> Result<Vec<u8>> {
    serialize_with(checkpoint, ExternalDataLayout::Keep)
}

/// The same content, field by field (the data file itself is not compared).
fn assert_same_content(a: &Checkpoint, b: &Checkpoint, what: &str) {
    assert_eq!(a.version, b.version, "{what}");
    assert_eq!(a.module_state, b.module_state, "{what}");
    assert_eq!(a.optimizer_groups, b.optimizer_groups, "{what}");
    assert_eq!(a.property_bag, b.property_bag, "{what}");
}

/// Writes `checkpoint` with `layout` through the streamed writer's layout and through the
/// `flatbuffers` crate's builder with the same placements, and checks that both decode to the
/// same model with the same optional fields present; that the streamed layout passes the
/// `flatbuffers` crate's strict generated verifier (int64 vectors 8-aligned); and, for `Keep`,
/// that the decoded model equals `checkpoint`. Returns (ours, reference).
fn cross_check(name: &str, checkpoint: &Checkpoint, layout: ExternalDataLayout) -> (Bytes, Bytes) {
    let plan = Plan::new(checkpoint, layout, Path::new(name)).expect("plan");
    let laid_out = Layout::new(checkpoint, &plan, MAX_CHECKPOINT_SIZE);
    let ours = Bytes::from(laid_out.to_vec());
    let theirs = Bytes::from(reference::build_flatbuffer(checkpoint, &plan));
    if let Err(error) = fbs::root_as_checkpoint_with_opts(&verifier_options(), &ours) {
        panic!("{name}: the strict verifier refuses the streamed layout: {error}");
    }
    let from_ours = parse_checkpoint(&ours, Path::new(name)).expect("ours reads");
    let from_theirs = parse_checkpoint(&theirs, Path::new(name)).expect("reference reads");
    assert_same_content(&from_ours, &from_theirs, name);
    assert_eq!(
        optional_fields_present(&ours).unwrap(),
        optional_fields_present(&theirs).unwrap(),
        "{name}"
    );
    if layout == ExternalDataLayout::Keep {
        assert_same_content(&from_ours, checkpoint, name);
    }
    // Every inline tensor's bytes start at a multiple of 16, after all of the metadata.
    let mut tensors = 0;
    for tensor in from_ours.tensors() {
        if let TensorData::Inline(bytes) = &tensor.data
            && !bytes.is_empty()
        {
            let at = bytes.as_ptr() as usize - ours.as_ptr() as usize;
            assert_eq!(at as u64 % RAW_DATA_ALIGNMENT, 0, "{name} {}", tensor.name);
            assert!(at >= laid_out.head.len(), "{name} {}", tensor.name);
            tensors += 1;
        }
    }
    assert!(laid_out.vectors.len() <= tensors, "{name}");
    (ours, theirs)
}

#[test]
fn streamed_layout_decodes_like_the_flatbuffers_builder_on_every_fixture() {
    for name in FIXTURES {
        let checkpoint = read_fixture(name);
        for layout in [
            ExternalDataLayout::Keep,
            ExternalDataLayout::Inline,
            ExternalDataLayout::ModuleStateExternal,
        ] {
            let nominal = checkpoint
                .module_state
                .as_ref()
                .is_some_and(|m| m.is_nominal_state);
            if nominal && layout == ExternalDataLayout::ModuleStateExternal {
                // Its parameters hold no bytes that fit their dims: the data file, which stores
                // no lengths, cannot hold them (found by fuzz/).
                let error = Plan::new(&checkpoint, layout, Path::new(name)).err();
                assert!(
                    matches!(error, Some(crate::Error::ExternalData { .. })),
                    "{name}: {error:?}"
                );
                continue;
            }
            cross_check(name, &checkpoint, layout);
        }
    }
}

#[test]
fn shared_bytes_are_one_vector() {
    let mut checkpoint = read_fixture("checkpoint_adamw_optimizer_state");
    let params = ["W1", "b1", "W2", "b2", "W3", "b3"];
    for name in params {
        checkpoint
            .add_frozen_copy(name, &format!("{name}.slow"))
            .unwrap();
    }
    let (ours, _) = cross_check("slow copies", &checkpoint, ExternalDataLayout::Keep);
    let plan = Plan::new(&checkpoint, ExternalDataLayout::Keep, Path::new("x")).unwrap();
    let layout = Layout::new(&checkpoint, &plan, MAX_CHECKPOINT_SIZE);
    // Six parameters and twelve momentums; the six copies share their parameters' vectors.
    assert_eq!(layout.vectors.len(), 18);
    let copied: u64 = params
        .iter()
        .map(|p| {
            checkpoint
                .parameter(p)
                .unwrap()
                .expected_byte_length()
                .unwrap()
        })
        .sum();
    assert!(layout.size_unshared >= layout.size + copied);
    let again = parse_checkpoint(&ours, Path::new("slow copies")).unwrap();
    let (TensorData::Inline(w2), TensorData::Inline(slow)) = (
        &again.parameter("W2").unwrap().data,
        &again.parameter("W2.slow").unwrap().data,
    ) else {
        panic!("inline")
    };
    assert_eq!(w2.as_ptr(), slow.as_ptr(), "one vector in the file");
}

/// Every single-bit corruption of a real checkpoint is either rejected or read into a model
/// that serializes to a fixed point; nothing panics.
#[test]
fn bit_flips_never_panic() {
    for name in [
        "checkpoint_adamw",
        "checkpoint_adamw_optimizer_state",
        "checkpoint_adamw_properties",
        "checkpoint_adamw_nominal",
    ] {
        let original = fixture(name).to_vec();
        for position in 0..original.len() {
            for bit in 0..8 {
                let mut bytes = original.clone();
                bytes[position] ^= 1 << bit;
                let bytes = Bytes::from(bytes);
                let Ok(checkpoint) = parse_checkpoint(&bytes, Path::new(name)) else {
                    continue;
                };
                let Ok(first) = serialize(&checkpoint) else {
                    continue;
                };
                let again = parse_checkpoint(&Bytes::from(first.clone()), Path::new(name))
                    .expect("our own output reads");
                let second = serialize(&again).expect("serializes again");
                assert_eq!(first, second, "{name} byte {position} bit {bit}");
            }
        }
    }
}

#[test]
fn fixtures_serialize_in_memory_to_equal_models_of_the_laid_out_size() {
    for name in FIXTURES {
        let checkpoint = read_fixture(name);
        let plan = Plan::new(&checkpoint, ExternalDataLayout::Keep, Path::new(name)).unwrap();
        let layout = Layout::new(&checkpoint, &plan, MAX_CHECKPOINT_SIZE);
        let written = Bytes::from(layout.to_vec());
        assert_eq!(written.len() as u64, layout.size);
        assert_eq!(layout.size, layout.size_unshared, "{name}: nothing shared");
        assert_same_content(
            &parse_checkpoint(&written, Path::new(name)).unwrap(),
            &checkpoint,
            name,
        );
    }
}

#[test]
fn sizes_over_the_limit_are_measured_without_patching() {
    let checkpoint = read_fixture("checkpoint_adamw");
    let plan = Plan::new(&checkpoint, ExternalDataLayout::Keep, Path::new("x")).unwrap();
    let full = Layout::new(&checkpoint, &plan, MAX_CHECKPOINT_SIZE);
    let limited = Layout::new(&checkpoint, &plan, 100);
    assert_eq!(full.size, limited.size);
}

#[test]
fn data_file_name_appends_suffix() {
    assert_eq!(
        external_data_path(Path::new("dir/checkpoint")),
        PathBuf::from("dir/checkpoint.data")
    );
    assert_eq!(
        external_data_path(Path::new("ck.v1")),
        PathBuf::from("ck.v1.data")
    );
}
