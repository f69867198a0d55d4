//! Unit tests of the reader and writer on real ORT checkpoints.

use std::path::Path;

use bytes::Bytes;

use super::model::*;
use super::read::parse_checkpoint;
use super::write::{Plan, build_flatbuffer};
use super::*;
use crate::Result;

fn fixture(name: &str) -> Bytes {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    Bytes::from(std::fs::read(path).expect("fixture"))
}

/// Serializes a parsed checkpoint in memory, as `write_checkpoint` would (no external data).
fn serialize(checkpoint: &Checkpoint) -> Result<Vec<u8>> {
    let plan = Plan::new(checkpoint, ExternalDataLayout::Keep, Path::new("mem"))?;
    Ok(build_flatbuffer(checkpoint, &plan, &[])
        .finished_data()
        .to_vec())
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
fn fixtures_serialize_in_memory_to_equal_models_within_the_estimate() {
    for name in [
        "checkpoint_adamw",
        "checkpoint_adamw_optimizer_state",
        "checkpoint_adamw_properties",
        "checkpoint_adamw_frozen",
        "checkpoint_adamw_nominal",
    ] {
        let checkpoint = parse_checkpoint(&fixture(name), Path::new(name)).unwrap();
        let plan = Plan::new(&checkpoint, ExternalDataLayout::Keep, Path::new(name)).unwrap();
        let written = Bytes::from(serialize(&checkpoint).unwrap());
        assert_eq!(
            parse_checkpoint(&written, Path::new(name)).unwrap(),
            checkpoint
        );
        assert!(
            plan.estimated_size >= written.len() as u64,
            "{name}: estimate {} < {}",
            plan.estimated_size,
            written.len()
        );
    }
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
