//! Reading and writing ONNX Runtime training checkpoints, on real checkpoints written by
//! onnxruntime-training 1.19.2 (tests/data/, see tests/data/checkpoint_fixtures.md).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use onnx_lookahead::Error;
use onnx_lookahead::generated::ort_checkpoint::onnxruntime::fbs;
use onnx_lookahead::io::checkpoint::{
    Checkpoint, CheckpointTensor, ExternalDataLayout, ExternalRange, TensorData, data_type,
    external_data_path, optional_fields_present, read_checkpoint, write_checkpoint,
    write_checkpoint_with,
};

/// Tiny MLP (W1 4x8, b1, W2 8x8, b2, W3 8x2, b3), all trainable, as generate_artifacts writes it.
const ADAMW: &str = "checkpoint_adamw";
/// The same after one AdamW step, saved with include_optimizer_state=True.
const OPTIMIZER_STATE: &str = "checkpoint_adamw_optimizer_state";
/// The same with int, float and string properties.
const PROPERTIES: &str = "checkpoint_adamw_properties";
/// W3 and b3 frozen.
const FROZEN: &str = "checkpoint_adamw_frozen";
/// A nominal checkpoint: names only, empty dims and data.
const NOMINAL: &str = "checkpoint_adamw_nominal";
/// With optimizer state and frozen `<P>.slow` copies, tensors in checkpoint_adamw_external.data.
const EXTERNAL: &str = "checkpoint_adamw_external";
const ALL: [&str; 6] = [
    ADAMW,
    OPTIMIZER_STATE,
    PROPERTIES,
    FROZEN,
    NOMINAL,
    EXTERNAL,
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn read(name: &str) -> Checkpoint {
    read_checkpoint(fixture(name)).expect("fixture reads")
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list folder")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn names(tensors: &[CheckpointTensor]) -> Vec<&str> {
    tensors.iter().map(|t| t.name.as_str()).collect()
}

#[test]
fn real_checkpoints_round_trip_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    for name in ALL {
        let original = read(name);
        let path = dir.path().join(name);
        write_checkpoint(&original, &path).unwrap();
        let again = read_checkpoint(&path).unwrap();
        assert_eq!(original, again, "{name}");
        // A data file exactly for checkpoints with external data.
        assert_eq!(external_data_path(&path).exists(), name == EXTERNAL);
        // Writing is deterministic.
        let second = dir.path().join(format!("{name}.second"));
        write_checkpoint(&again, &second).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(&second).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn reads_parameters_in_file_order() {
    let checkpoint = read(ADAMW);
    assert_eq!(checkpoint.version, 2);
    let module = checkpoint.module_state.as_ref().unwrap();
    assert_eq!(
        names(&module.requires_grad_params),
        ["W1", "b1", "W2", "b2", "W3", "b3"]
    );
    assert!(module.frozen_params.is_empty());
    assert!(!module.is_nominal_state && !module.has_external_data);
    let w1 = checkpoint.parameter("W1").unwrap();
    assert_eq!(w1.dims, [4, 8]);
    assert_eq!(w1.data_type, data_type::FLOAT);
    assert_eq!(w1.doc_string, None);
    let TensorData::Inline(bytes) = &w1.data else {
        panic!("W1 is inline")
    };
    assert_eq!(bytes.len(), 128);
    assert_eq!(w1.expected_byte_length(), Some(128));
    assert!(checkpoint.optimizer_groups.is_empty());
    assert!(checkpoint.property_bag.is_empty());

    let frozen = read(FROZEN);
    let module = frozen.module_state.as_ref().unwrap();
    assert_eq!(
        names(&module.requires_grad_params),
        ["W1", "b1", "W2", "b2"]
    );
    assert_eq!(names(&module.frozen_params), ["W3", "b3"]);
    assert_eq!(frozen.is_trainable("W1"), Some(true));
    assert_eq!(frozen.is_trainable("b3"), Some(false));
    assert_eq!(frozen.is_trainable("nope"), None);
}

#[test]
fn reads_optimizer_state() {
    let checkpoint = read(OPTIMIZER_STATE);
    let [group] = checkpoint.optimizer_groups.as_slice() else {
        panic!("one optimizer group")
    };
    assert_eq!(group.group_name, "group0");
    assert_eq!(group.step, 1);
    assert_eq!(group.initial_learning_rate, 0.001);
    let params: Vec<&str> = group
        .optimizer_states
        .iter()
        .map(|s| s.param_name.as_str())
        .collect();
    assert_eq!(params, ["W1", "W2", "W3", "b1", "b2", "b3"]);
    for state in &group.optimizer_states {
        assert_eq!(names(&state.momentums), ["momentum0", "momentum1"]);
        let param = checkpoint.parameter(&state.param_name).unwrap();
        for momentum in &state.momentums {
            assert_eq!(momentum.dims, param.dims);
            let bytes = checkpoint.tensor_bytes(momentum).unwrap().unwrap();
            // One AdamW step leaves nonzero moments.
            assert!(bytes.iter().any(|&b| b != 0));
        }
    }
}

#[test]
fn reads_properties() {
    let bag = read(PROPERTIES).property_bag;
    let ints: Vec<(&str, i64)> = bag
        .ints
        .iter()
        .map(|p| (p.name.as_str(), p.value))
        .collect();
    assert_eq!(ints, [("a_int", -7), ("epoch", 3)]);
    let floats: Vec<(&str, f32)> = bag
        .floats
        .iter()
        .map(|p| (p.name.as_str(), p.value))
        .collect();
    assert_eq!(floats, [("best_loss", 0.125)]);
    assert_eq!(bag.strings.len(), 1);
    assert_eq!(
        (bag.strings[0].name.as_str(), bag.strings[0].value.as_str()),
        ("note", "lookahead fixture")
    );
}

#[test]
fn reads_nominal_checkpoint() {
    let checkpoint = read(NOMINAL);
    let module = checkpoint.module_state.as_ref().unwrap();
    assert!(module.is_nominal_state);
    for tensor in module
        .requires_grad_params
        .iter()
        .chain(&module.frozen_params)
    {
        assert!(tensor.dims.is_empty());
        assert_eq!(tensor.data, TensorData::Inline(Bytes::new()));
    }
}

#[test]
fn frozen_copy_shares_bytes_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let mut checkpoint = read(OPTIMIZER_STATE);
    for name in ["W1", "b1", "W2", "b2", "W3", "b3"] {
        let slow = checkpoint
            .add_frozen_copy(name, &format!("{name}.slow"))
            .unwrap();
        assert_eq!(slow.doc_string, None);
    }
    let original = checkpoint.parameter("W2").unwrap();
    let copy = checkpoint.parameter("W2.slow").unwrap();
    assert_eq!(
        (copy.dims.as_slice(), copy.data_type),
        (original.dims.as_slice(), original.data_type)
    );
    let (TensorData::Inline(a), TensorData::Inline(b)) = (&original.data, &copy.data) else {
        panic!("inline")
    };
    assert_eq!(a.as_ptr(), b.as_ptr(), "the copy shares the bytes");
    assert_eq!(checkpoint.is_trainable("W2.slow"), Some(false));

    let path = dir.path().join("ck");
    write_checkpoint(&checkpoint, &path).unwrap();
    let again = read_checkpoint(&path).unwrap();
    assert_eq!(again, checkpoint);
    assert_eq!(
        names(&again.module_state.as_ref().unwrap().frozen_params),
        [
            "W1.slow", "b1.slow", "W2.slow", "b2.slow", "W3.slow", "b3.slow"
        ]
    );
}

#[test]
fn adding_a_parameter_checks_name_and_size() {
    let mut checkpoint = read(FROZEN);
    let clash = checkpoint.add_frozen_copy("W1", "b3").unwrap_err();
    assert!(
        matches!(clash, Error::NameClash { ref name, .. } if name == "b3"),
        "{clash}"
    );
    let clash = checkpoint.add_frozen_copy("W1", "W2").unwrap_err();
    assert!(matches!(clash, Error::NameClash { .. }), "{clash}");
    let missing = checkpoint.add_frozen_copy("nope", "x").unwrap_err();
    assert!(
        matches!(missing, Error::InvalidCheckpoint { .. }),
        "{missing}"
    );

    let wrong_size = CheckpointTensor::new(
        "counter",
        vec![2],
        data_type::INT64,
        TensorData::Inline(Bytes::from_static(&[0; 8])),
    );
    assert!(checkpoint.add_frozen_parameter(wrong_size).is_err());
    let counter = CheckpointTensor::new(
        "counter",
        vec![1],
        data_type::INT64,
        TensorData::Inline(Bytes::from_static(&[0; 8])),
    );
    checkpoint.add_frozen_parameter(counter).unwrap();
    assert_eq!(checkpoint.parameter("counter").unwrap().dims, [1]);

    // A checkpoint built from nothing gets a module state.
    let mut empty = Checkpoint::new(2);
    let scalar = CheckpointTensor::new(
        "scalar",
        vec![],
        data_type::FLOAT,
        TensorData::Inline(Bytes::from_static(&[0, 0, 128, 63])),
    );
    empty.add_frozen_parameter(scalar).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ck");
    write_checkpoint(&empty, &path).unwrap();
    assert_eq!(read_checkpoint(&path).unwrap(), empty);
}

/// The offsets ONNX Runtime 1.19.2 gave these tensors in a data file (measured: W1, W2, W3 first,
/// then the rest in this order).
#[test]
fn external_data_follows_onnx_runtime_layout() {
    let tensor = |name: &str, dims: Vec<i64>, dtype: i32| {
        let length = onnx_lookahead::io::checkpoint::tensor_byte_length(&dims, dtype).unwrap();
        let bytes: Vec<u8> = (0..length).map(|i| i as u8).collect();
        CheckpointTensor::new(name, dims, dtype, TensorData::Inline(Bytes::from(bytes)))
    };
    let mut checkpoint = Checkpoint::new(2);
    for t in [
        tensor("W1", vec![4, 8], data_type::FLOAT),
        tensor("W2", vec![8, 8], data_type::FLOAT),
        tensor("W3", vec![8, 2], data_type::FLOAT),
        tensor("a_u8_65", vec![65], data_type::UINT8),
        tensor("b_f32_17", vec![17], data_type::FLOAT),
        tensor("c_u8_67", vec![67], data_type::UINT8),
        tensor("d_u8_65", vec![65], data_type::UINT8),
        tensor("e_f16_33", vec![33], data_type::FLOAT16),
        tensor("f_i64_9", vec![9], data_type::INT64),
        tensor("g_bool_65", vec![65], data_type::BOOL),
        tensor("h_f32_16", vec![16], data_type::FLOAT),
        tensor("i_u64_9", vec![9], data_type::UINT64),
        tensor("j_f64_9", vec![9], data_type::DOUBLE),
    ] {
        checkpoint.add_frozen_parameter(t).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ck");
    write_checkpoint_with(&checkpoint, &path, ExternalDataLayout::ModuleStateExternal).unwrap();
    assert_eq!(file_names(dir.path()), ["ck", "ck.data"]);
    let external = read_checkpoint(&path).unwrap();
    let module = external.module_state.as_ref().unwrap();
    assert!(module.has_external_data);
    let offsets: Vec<u64> = module
        .frozen_params
        .iter()
        .map(|t| match t.data {
            TensorData::External(ExternalRange { offset, .. }) => offset,
            _ => panic!("{} is external", t.name),
        })
        .collect();
    // Up to i_u64_9 as measured with ONNX Runtime; f64 then pads 1068 to 1072.
    assert_eq!(
        offsets,
        [
            0, 128, 384, 448, 516, 584, 652, 720, 792, 864, 932, 996, 1072
        ]
    );
    assert_eq!(
        std::fs::metadata(external_data_path(&path)).unwrap().len(),
        1072 + 72
    );
    for (original, written) in checkpoint
        .module_state
        .as_ref()
        .unwrap()
        .frozen_params
        .iter()
        .zip(&module.frozen_params)
    {
        assert_eq!(
            checkpoint.tensor_bytes(original).unwrap(),
            external.tensor_bytes(written).unwrap()
        );
    }
}

#[test]
fn external_data_round_trips_and_converts_back() {
    let dir = tempfile::tempdir().unwrap();
    let original = read(OPTIMIZER_STATE);
    let path = dir.path().join("external");
    write_checkpoint_with(&original, &path, ExternalDataLayout::ModuleStateExternal).unwrap();
    let external = read_checkpoint(&path).unwrap();
    assert_eq!(
        external.external_data_path(),
        Some(external_data_path(&path).as_path())
    );
    let module = external.module_state.as_ref().unwrap();
    // As ONNX Runtime's CheckpointState.save_checkpoint lays them out.
    let offsets: Vec<Option<u64>> = module
        .requires_grad_params
        .iter()
        .map(|t| match t.data {
            TensorData::External(range) => Some(range.offset),
            _ => None,
        })
        .collect();
    assert_eq!(
        offsets,
        [
            Some(0),
            Some(128),
            Some(384),
            Some(448),
            Some(480),
            Some(512)
        ]
    );
    for state in &external.optimizer_groups[0].optimizer_states {
        for momentum in &state.momentums {
            assert!(
                matches!(momentum.data, TensorData::Inline(_)),
                "momentums stay inline"
            );
        }
    }
    for name in ["W1", "b3"] {
        assert_eq!(
            original
                .tensor_bytes(original.parameter(name).unwrap())
                .unwrap(),
            external
                .tensor_bytes(external.parameter(name).unwrap())
                .unwrap()
        );
    }

    // Keep: the same checkpoint and data file, byte for byte.
    let kept = dir.path().join("kept");
    write_checkpoint(&external, &kept).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&kept).unwrap());
    assert_eq!(
        std::fs::read(external_data_path(&path)).unwrap(),
        std::fs::read(external_data_path(&kept)).unwrap()
    );
    assert_eq!(read_checkpoint(&kept).unwrap(), external);

    // Back inline: the original checkpoint again.
    let inline = dir.path().join("inline");
    write_checkpoint_with(&external, &inline, ExternalDataLayout::Inline).unwrap();
    assert!(!external_data_path(&inline).exists());
    assert_eq!(read_checkpoint(&inline).unwrap(), original);
}

#[test]
fn frozen_copy_of_external_parameter_shares_its_data_file_region() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ck");
    write_checkpoint_with(&read(ADAMW), &path, ExternalDataLayout::ModuleStateExternal).unwrap();
    let data_length = std::fs::metadata(external_data_path(&path)).unwrap().len();
    let mut checkpoint = read_checkpoint(&path).unwrap();
    checkpoint.add_frozen_copy("W2", "W2.slow").unwrap();
    // Rewriting in place: the model's mapping of the old files stays valid across the rename.
    write_checkpoint(&checkpoint, &path).unwrap();
    let again = read_checkpoint(&path).unwrap();
    assert_eq!(again, checkpoint);
    assert_eq!(
        again.parameter("W2").unwrap().data,
        again.parameter("W2.slow").unwrap().data
    );
    assert_eq!(
        std::fs::metadata(external_data_path(&path)).unwrap().len(),
        data_length
    );
    assert_eq!(file_names(dir.path()), ["ck", "ck.data"]);
}

#[test]
fn inline_bytes_are_slices_of_the_mapping() {
    let checkpoint = read(ADAMW);
    let module = checkpoint.module_state.as_ref().unwrap();
    let pointers: Vec<usize> = module
        .requires_grad_params
        .iter()
        .map(|t| match &t.data {
            TensorData::Inline(bytes) => bytes.as_ptr() as usize,
            _ => panic!("inline"),
        })
        .collect();
    // All six tensors lie within one 920-byte region: the mapped file.
    let span = pointers.iter().max().unwrap() - pointers.iter().min().unwrap();
    assert!(span < 920, "{span}");
}

#[test]
fn empty_truncated_and_random_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad");
    let expect_invalid = |bytes: &[u8], what: &str| {
        std::fs::write(&path, bytes).unwrap();
        match read_checkpoint(&path) {
            Err(Error::InvalidCheckpoint { .. }) => {}
            other => panic!("{what}: {other:?}"),
        }
    };
    expect_invalid(b"", "empty");
    expect_invalid(b"ODTC", "four bytes");
    for name in [ADAMW, OPTIMIZER_STATE, PROPERTIES] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        // Cutting off the final alignment padding may leave a valid checkpoint; any deeper cut
        // must be an error.
        for length in 0..bytes.len() - 8 {
            expect_invalid(&bytes[..length], &format!("{name} truncated to {length}"));
        }
        for length in bytes.len() - 8..bytes.len() {
            std::fs::write(&path, &bytes[..length]).unwrap();
            if let Ok(checkpoint) = read_checkpoint(&path) {
                assert_eq!(checkpoint, read(name));
            }
        }
        let mut wrong = bytes.clone();
        wrong[4..8].copy_from_slice(b"ORTM");
        std::fs::write(&path, &wrong).unwrap();
        let error = read_checkpoint(&path).unwrap_err();
        assert!(error.to_string().contains("ORTM"), "{error}");
    }
    // Random bytes, with and without the identifier in place.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for length in (0..3000).step_by(7) {
        let mut bytes: Vec<u8> = (0..length)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        expect_invalid(&bytes, "random");
        if length >= 8 {
            bytes[4..8].copy_from_slice(b"ODTC");
            std::fs::write(&path, &bytes).unwrap();
            let _ = read_checkpoint(&path); // must not panic
        }
    }
}

#[test]
fn missing_files_are_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let error = read_checkpoint(dir.path().join("none")).unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error}");

    let path = dir.path().join("ck");
    write_checkpoint_with(&read(ADAMW), &path, ExternalDataLayout::ModuleStateExternal).unwrap();
    let data = external_data_path(&path);
    let bytes = std::fs::read(&data).unwrap();
    std::fs::write(&data, &bytes[..bytes.len() - 1]).unwrap();
    let error = read_checkpoint(&path).unwrap_err();
    assert!(
        matches!(error, Error::ExternalData { ref tensor, .. } if tensor == "b3"),
        "{error}"
    );
    std::fs::remove_file(&data).unwrap();
    let error = read_checkpoint(&path).unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error}");
}

/// Builds a one-tensor checkpoint with the raw FlatBuffers API, to make files our writer would not.
fn crafted(
    name: Option<&str>,
    data_type: i32,
    raw: Option<&[u8]>,
    external_data_offset: i64,
    has_external_data: bool,
) -> Vec<u8> {
    let mut builder = flatbuffers::FlatBufferBuilder::new();
    let name = name.map(|n| builder.create_string(n));
    let dims = builder.create_vector(&[2i64]);
    let raw_data = raw.map(|r| builder.create_vector(r));
    let tensor = fbs::Tensor::create(
        &mut builder,
        &fbs::TensorArgs {
            name,
            dims: Some(dims),
            data_type: fbs::TensorDataType(data_type),
            raw_data,
            external_data_offset,
            ..Default::default()
        },
    );
    let params = builder.create_vector(&[tensor]);
    let module = fbs::ModuleState::create(
        &mut builder,
        &fbs::ModuleStateArgs {
            requires_grad_params: Some(params),
            has_external_data,
            ..Default::default()
        },
    );
    let root = fbs::Checkpoint::create(
        &mut builder,
        &fbs::CheckpointArgs {
            version: 2,
            module_state: Some(module),
            ..Default::default()
        },
    );
    fbs::finish_checkpoint_buffer(&mut builder, root);
    builder.finished_data().to_vec()
}

#[test]
fn inconsistent_tensors_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ck");
    let check = |bytes: Vec<u8>, data: Option<&[u8]>, expect: &str| {
        std::fs::write(&path, bytes).unwrap();
        if let Some(data) = data {
            std::fs::write(external_data_path(&path), data).unwrap();
        }
        let result = read_checkpoint(&path);
        let text = match &result {
            Ok(_) => "ok".to_string(),
            Err(error) => error.to_string(),
        };
        assert!(text.contains(expect), "expected {expect:?}, got {text}");
    };
    let f = data_type::FLOAT;
    check(crafted(Some("t"), f, Some(&[0; 8]), -1, false), None, "ok");
    check(
        crafted(None, f, Some(&[0; 8]), -1, false),
        None,
        "tensor name is missing",
    );
    check(
        crafted(Some("t"), f, Some(&[0; 8]), 0, true),
        None,
        "both inline bytes",
    );
    check(
        crafted(Some("t"), f, None, -5, true),
        None,
        "negative external data offset",
    );
    check(
        crafted(Some("t"), f, None, 0, false),
        None,
        "does not declare external data",
    );
    check(crafted(Some("t"), f, None, 0, true), Some(&[1; 8]), "ok");
    check(
        crafted(Some("t"), f, None, 4, true),
        Some(&[1; 8]),
        "beyond the end",
    );
    check(
        crafted(Some("t"), f, None, i64::MAX, true),
        Some(&[1; 8]),
        "beyond the end",
    );
    check(
        crafted(Some("t"), 99, None, 0, true),
        Some(&[1; 8]),
        "cannot size",
    );
    check(
        crafted(Some("t"), data_type::STRING, None, 0, true),
        Some(&[1; 8]),
        "cannot size",
    );
}

#[test]
fn mismatched_inline_bytes_do_not_move_to_external_data() {
    // Found by fuzz/ (fuzz/findings/checkpoint/module-state-external-short-inline-bytes): the
    // nominal checkpoint's parameters hold 0 inline bytes for scalar float dims. Moved to the data
    // file, a reader would size them as 4 bytes from dims and type and find them missing.
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("ck");
    let error = write_checkpoint_with(
        &read(NOMINAL),
        &path,
        ExternalDataLayout::ModuleStateExternal,
    )
    .unwrap_err();
    assert!(matches!(error, Error::ExternalData { .. }), "{error}");
    assert!(file_names(out.path()).is_empty());
    // Kept where they are, they write and read back.
    write_checkpoint(&read(NOMINAL), &path).unwrap();
    assert_eq!(read_checkpoint(&path).unwrap(), read(NOMINAL));
}

#[test]
fn failed_writes_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    // An external tensor without the module state's external data flag cannot be written.
    let source = dir.path().join("source");
    write_checkpoint_with(
        &read(ADAMW),
        &source,
        ExternalDataLayout::ModuleStateExternal,
    )
    .unwrap();
    let mut checkpoint = read_checkpoint(&source).unwrap();
    checkpoint.module_state.as_mut().unwrap().has_external_data = false;
    let out = tempfile::tempdir().unwrap();
    let error = write_checkpoint(&checkpoint, out.path().join("ck")).unwrap_err();
    assert!(matches!(error, Error::ExternalData { .. }), "{error}");
    assert!(file_names(out.path()).is_empty());

    // A folder that does not exist.
    let error = write_checkpoint(&read(ADAMW), out.path().join("missing/ck")).unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error}");
    assert!(file_names(out.path()).is_empty());

    // Over the FlatBuffers limit (the check runs before any byte is written).
    let mut huge = Checkpoint::new(2);
    let gib = Bytes::from(vec![0u8; 1 << 30]);
    for i in 0..2 {
        let tensor = CheckpointTensor::new(
            format!("g{i}"),
            vec![1 << 30],
            data_type::UINT8,
            TensorData::Inline(gib.clone()),
        );
        huge.add_frozen_parameter(tensor).unwrap();
    }
    let error = write_checkpoint(&huge, out.path().join("ck")).unwrap_err();
    assert!(matches!(error, Error::CheckpointTooLarge { .. }), "{error}");
    assert!(file_names(out.path()).is_empty());
}

#[test]
fn absent_and_empty_fields_round_trip_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    for name in ALL {
        read(name); // verifies the fixture
        let path = dir.path().join(name);
        write_checkpoint(&read(name), &path).unwrap();
        assert_eq!(
            optional_fields_present(&std::fs::read(fixture(name)).unwrap()).unwrap(),
            optional_fields_present(&std::fs::read(&path).unwrap()).unwrap(),
            "{name}"
        );
    }
}

/// The Rust half of a manual cross-check with ONNX Runtime (it needs a Python environment with
/// onnxruntime-training, so it is not part of `cargo test`):
/// `CHECKPOINT_SAMPLES=<dir> cargo test --test checkpoint -- --ignored write_samples` writes
/// - `slow`: checkpoint_adamw_optimizer_state plus a frozen copy `<P>.slow` of every trainable
///   parameter and three properties, inline;
/// - `slow_external`: the same with module-state tensors in `slow_external.data`;
/// - with CHECKPOINT_SOURCE=<checkpoint> also `source_kept` (that checkpoint rewritten unchanged,
///   e.g. one with external data written by ONNX Runtime) and `source_slow` (plus `<P>.slow` copies).
///
/// Then load them with onnxruntime.training.api.CheckpointState.load_checkpoint and compare.
#[test]
#[ignore = "manual cross-check with ONNX Runtime; needs CHECKPOINT_SAMPLES"]
fn write_samples_for_onnx_runtime() {
    let dir = PathBuf::from(std::env::var_os("CHECKPOINT_SAMPLES").expect("CHECKPOINT_SAMPLES"));
    std::fs::create_dir_all(&dir).unwrap();
    let add_slow_copies = |checkpoint: &mut Checkpoint| {
        let trainable: Vec<String> = checkpoint
            .module_state
            .as_ref()
            .unwrap()
            .requires_grad_params
            .iter()
            .map(|t| t.name.clone())
            .collect();
        for name in trainable {
            checkpoint
                .add_frozen_copy(&name, &format!("{name}.slow"))
                .unwrap();
        }
    };
    let mut checkpoint = read(OPTIMIZER_STATE);
    add_slow_copies(&mut checkpoint);
    let bag = &mut checkpoint.property_bag;
    bag.ints.push(onnx_lookahead::io::checkpoint::Property {
        name: "la_k".into(),
        value: 5,
    });
    bag.floats.push(onnx_lookahead::io::checkpoint::Property {
        name: "la_alpha".into(),
        value: 0.5,
    });
    bag.strings.push(onnx_lookahead::io::checkpoint::Property {
        name: "la_note".into(),
        value: "written by onnx-lookahead".into(),
    });
    write_checkpoint(&checkpoint, dir.join("slow")).unwrap();
    write_checkpoint_with(
        &checkpoint,
        dir.join("slow_external"),
        ExternalDataLayout::ModuleStateExternal,
    )
    .unwrap();

    if let Some(source) = std::env::var_os("CHECKPOINT_SOURCE") {
        let mut checkpoint = read_checkpoint(&source).unwrap();
        write_checkpoint(&checkpoint, dir.join("source_kept")).unwrap();
        add_slow_copies(&mut checkpoint);
        write_checkpoint(&checkpoint, dir.join("source_slow")).unwrap();
    }
}

#[test]
fn onnx_runtime_external_checkpoint_round_trips_byte_for_byte_data() {
    let name = EXTERNAL;
    let checkpoint = read(name);
    let module = checkpoint.module_state.as_ref().unwrap();
    assert!(module.has_external_data);
    assert_eq!(names(&module.frozen_params)[0], "W1.slow");
    let offsets: Vec<u64> = module
        .requires_grad_params
        .iter()
        .chain(&module.frozen_params)
        .map(|t| match t.data {
            TensorData::External(range) => range.offset,
            _ => panic!("{} is external", t.name),
        })
        .collect();
    assert_eq!(
        offsets,
        [0, 128, 384, 448, 480, 512, 520, 648, 904, 968, 1000, 1032]
    );
    let group = &checkpoint.optimizer_groups[0];
    assert_eq!(group.step, 2);
    for state in &group.optimizer_states {
        for momentum in &state.momentums {
            assert!(matches!(momentum.data, TensorData::Inline(_)));
        }
    }
    // The slow copies still hold the weights before the step.
    let before = read(OPTIMIZER_STATE);
    for param in ["W1", "b3"] {
        let slow = checkpoint.parameter(&format!("{param}.slow")).unwrap();
        assert_eq!(
            checkpoint.tensor_bytes(slow).unwrap(),
            before
                .tensor_bytes(before.parameter(param).unwrap())
                .unwrap()
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ck");
    write_checkpoint(&checkpoint, &path).unwrap();
    assert_eq!(read_checkpoint(&path).unwrap(), checkpoint);
    assert_eq!(
        std::fs::read(external_data_path(&path)).unwrap(),
        std::fs::read(external_data_path(&fixture(name))).unwrap(),
        "the data file is laid out as ONNX Runtime did"
    );
    assert_eq!(
        optional_fields_present(&std::fs::read(fixture(name)).unwrap()).unwrap(),
        optional_fields_present(&std::fs::read(&path).unwrap()).unwrap()
    );
}
