//! Checkpoints ONNX Runtime rarely or never writes, built field by field: absent and empty-present
//! vectors, scalars, STRING tensors, doc strings, sub-byte types, default-valued scalars, odd
//! sizes, shared bytes. Each goes through the streamed layout, the reference builder and a real
//! file written and read back.

use super::*;

fn bytes(length: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..length)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>(),
    )
}

fn tensor(name: &str, dims: Vec<i64>, data_type: i32) -> CheckpointTensor {
    let length = tensor_byte_length(&dims, data_type).unwrap() as usize;
    CheckpointTensor::new(
        name,
        dims,
        data_type,
        TensorData::Inline(bytes(length, name.len() as u8)),
    )
}

fn strings(name: &str, values: &[&str]) -> CheckpointTensor {
    let mut tensor = CheckpointTensor::new(
        name,
        vec![values.len() as i64],
        data_type::STRING,
        TensorData::Absent,
    );
    tensor.string_data = values.iter().map(|s| s.to_string()).collect();
    tensor
}

fn edge_cases() -> Vec<(&'static str, Checkpoint)> {
    let mut cases = Vec::new();

    cases.push(("empty", Checkpoint::new(2)));

    // Every optional vector present but empty.
    let mut all_empty = Checkpoint::new(2);
    all_empty.empty_present = EmptyPresent::default()
        .with(OPTIMIZER_GROUPS_BIT, true)
        .with(PROPERTY_BAG_BIT, true);
    all_empty.module_state = Some(ModuleState::new());
    cases.push(("all present, all empty", all_empty));

    // Nothing present that may be absent.
    let mut all_absent = Checkpoint::new(1);
    let mut module = ModuleState::new();
    module.empty_present = EmptyPresent::default();
    let mut bare = tensor("bare", vec![], data_type::FLOAT);
    bare.empty_present = EmptyPresent::default();
    module.frozen_params.push(bare);
    all_absent.module_state = Some(module);
    let mut group = OptimizerGroup::new("g", 0, 0.0);
    group.empty_present = EmptyPresent::default();
    all_absent.optimizer_groups.push(group);
    let mut bag = PropertyBag::new();
    bag.empty_present = EmptyPresent::default();
    bag.ints.push(Property {
        name: "i".into(),
        value: 0,
    });
    all_absent.property_bag = bag;
    cases.push(("all absent", all_absent));

    // Tensors of every shape of interest.
    let mut tensors = Checkpoint::new(2);
    let mut module = ModuleState::new();
    module.requires_grad_params.extend([
        tensor("scalar", vec![], data_type::FLOAT),
        tensor("f16_33", vec![33], data_type::FLOAT16),
        tensor("f64_3", vec![3], data_type::DOUBLE),
        tensor("bf16_big", vec![300, 257], data_type::BFLOAT16),
    ]);
    let mut documented = tensor("documented", vec![1, 1, 1], data_type::FLOAT);
    documented.doc_string = Some("doc ✓".into());
    let mut empty_doc = tensor("empty_doc", vec![2], data_type::INT64);
    empty_doc.doc_string = Some(String::new());
    module.frozen_params.extend([
        documented,
        empty_doc,
        tensor("u8_3", vec![3], data_type::UINT8),
        tensor("zero_elements", vec![0, 7], data_type::FLOAT),
        tensor("int4_5", vec![5], 22),
        tensor("bool_1", vec![1], data_type::BOOL),
        strings("strings", &["", "ä", "abc", "a longer string of text"]),
        strings("no_strings", &[]),
    ]);
    let mut no_strings_absent = strings("no_strings_absent", &[]);
    no_strings_absent.dims = vec![0];
    no_strings_absent.empty_present = EmptyPresent::default().with(DIMS_BIT, true);
    module.frozen_params.push(no_strings_absent);
    // Two tensors sharing one buffer (a slow weight), and one a slice of it.
    let shared = tensor("shared_a", vec![64], data_type::FLOAT);
    let mut same = shared.clone();
    same.name = "shared_b".into();
    let TensorData::Inline(all) = &shared.data else {
        unreachable!()
    };
    let part = CheckpointTensor::new(
        "shared_part",
        vec![16],
        data_type::FLOAT,
        TensorData::Inline(all.slice(64..128)),
    );
    module.frozen_params.extend([shared, same, part]);
    tensors.module_state = Some(module);
    cases.push(("tensors", tensors));

    // Optimizer groups and properties with default and extreme values.
    let mut optimizer = Checkpoint::new(2);
    let mut module = ModuleState::new();
    module
        .requires_grad_params
        .push(tensor("w", vec![4], data_type::FLOAT));
    optimizer.module_state = Some(module);
    // The largest step (a negative one is refused on reading: training counts from 0; the
    // property below keeps i64::MIN).
    let mut group = OptimizerGroup::new("group0", i64::MAX, -0.0);
    group.optimizer_states.push(ParameterOptimizerState::new(
        "w",
        vec![
            tensor("momentum0", vec![4], data_type::FLOAT),
            tensor("momentum1", vec![4], data_type::FLOAT),
        ],
    ));
    group
        .optimizer_states
        .push(ParameterOptimizerState::new("x", vec![]));
    let mut absent = ParameterOptimizerState::new("y", vec![]);
    absent.empty_present = EmptyPresent::default();
    group.optimizer_states.push(absent);
    optimizer.optimizer_groups.push(group);
    optimizer
        .optimizer_groups
        .push(OptimizerGroup::new("", i64::MAX, f32::MAX));
    let bag = &mut optimizer.property_bag;
    bag.ints.extend([
        Property {
            name: "zero".into(),
            value: 0,
        },
        Property {
            name: "min".into(),
            value: i64::MIN,
        },
    ]);
    bag.floats.extend([
        Property {
            name: "zero".into(),
            value: 0.0,
        },
        Property {
            name: "negative zero".into(),
            value: -0.0,
        },
        Property {
            name: "tiny".into(),
            value: f32::MIN_POSITIVE,
        },
    ]);
    bag.strings.push(Property {
        name: String::new(),
        value: String::new(),
    });
    cases.push(("optimizer and properties", optimizer));
    cases
}

#[test]
fn edge_cases_decode_like_the_flatbuffers_builder() {
    // Also version 0, the schema default (left out of the table; not a version ONNX Runtime reads).
    let mut cases = edge_cases();
    cases.push(("version 0", Checkpoint::new(0)));
    for (name, checkpoint) in cases {
        for layout in [
            ExternalDataLayout::Keep,
            ExternalDataLayout::Inline,
            ExternalDataLayout::ModuleStateExternal,
        ] {
            cross_check(name, &checkpoint, layout);
        }
    }
}

#[test]
fn edge_cases_round_trip_through_files() {
    let dir = tempfile::tempdir().unwrap();
    for (name, checkpoint) in edge_cases() {
        let path = dir.path().join(name.replace(' ', "_"));
        write_checkpoint(&checkpoint, &path).unwrap();
        let again = read_checkpoint(&path).unwrap();
        assert_eq!(again, checkpoint, "{name}");
        let ours = Bytes::from(serialize(&checkpoint).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), ours, "{name}: file = layout");
        // Read back from the file (mapped), written again: the same bytes.
        let second = dir.path().join(format!("{}.again", name.replace(' ', "_")));
        write_checkpoint(&again, &second).unwrap();
        assert_eq!(
            std::fs::read(&second).unwrap(),
            ours,
            "{name}: deterministic"
        );
    }
}

#[test]
fn edge_cases_move_to_the_data_file_and_back() {
    let dir = tempfile::tempdir().unwrap();
    for (name, checkpoint) in edge_cases() {
        if checkpoint.module_state.is_none() {
            continue;
        }
        let path = dir.path().join(name.replace(' ', "_"));
        write_checkpoint_with(&checkpoint, &path, ExternalDataLayout::ModuleStateExternal).unwrap();
        let external = read_checkpoint(&path).unwrap();
        assert!(
            external.module_state.as_ref().unwrap().has_external_data,
            "{name}"
        );
        for (a, b) in checkpoint.tensors().zip(external.tensors()) {
            assert_eq!(
                checkpoint.tensor_bytes(a).unwrap(),
                external.tensor_bytes(b).unwrap(),
                "{name} {}",
                a.name
            );
        }
        let inline = dir
            .path()
            .join(format!("{}.inline", name.replace(' ', "_")));
        write_checkpoint_with(&external, &inline, ExternalDataLayout::Inline).unwrap();
        assert_eq!(read_checkpoint(&inline).unwrap(), checkpoint, "{name}");
    }
}
