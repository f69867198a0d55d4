//! Lossless I/O: every bundled model decodes and re-encodes byte-identical; a model using
//! fields only IR 14 has keeps them through a rewrite; the zero-copy decode leaves tensor bytes
//! in the mapping.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use onnx_lookahead::generated::onnx::{
    DeviceConfigurationProto, ModelProto, NodeDeviceConfigurationProto, StringStringEntryProto,
    TensorProto, tensor_proto::DataType,
};
use onnx_lookahead::io::model::{encode_model, load_model};
use prost::Message;

mod common;

fn fixtures() -> PathBuf {
    common::fixture("")
}

fn onnx_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            onnx_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "onnx") {
            into.push(path);
        }
    }
}

#[test]
fn every_fixture_model_round_trips_byte_identical() {
    let mut files = Vec::new();
    onnx_files(&fixtures(), &mut files);
    assert!(files.len() >= 8, "fixtures present: {files:?}");
    for path in files {
        let file = load_model(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(file.unknown_fields.is_empty(), "{}", path.display());
        let encoded = encode_model(&file.model);
        assert!(
            encoded == file.source.as_ref(),
            "{} changed on round trip",
            path.display()
        );
    }
}

#[test]
fn decode_is_zero_copy() {
    let path = common::fixture("mlp_inference.onnx");
    let file = load_model(&path).unwrap();
    let source = file.source.as_ptr_range();
    let graph = file.model.graph.as_ref().unwrap();
    let raw: Vec<&bytes::Bytes> = graph
        .initializer
        .iter()
        .filter_map(|t| t.raw_data.as_ref())
        .filter(|r| !r.is_empty())
        .collect();
    assert!(!raw.is_empty(), "the fixture has raw tensor data");
    for bytes in raw {
        let inside = source.contains(&bytes.as_ptr()) && bytes.as_ptr_range().end <= source.end;
        assert!(inside, "raw_data points into the input mapping");
    }
}

/// Rewrites `input` into `out` through the binary (defaults k=5, alpha=0.5) and decodes the result.
fn rewrite_with_cli(input: &Path, out: &Path) -> ModelProto {
    Command::cargo_bin("onnx-lookahead")
        .unwrap()
        .args([
            "rewrite",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .assert()
        .success();
    ModelProto::decode(std::fs::read(out).unwrap().as_slice()).unwrap()
}

/// Adds fields that ONNX IR 14 has and older schemas (e.g. the onnx 1.16 that generated the
/// fixtures) do not: model and node device configurations, node and tensor metadata, a tensor
/// of an IR 13 element type.
fn with_ir14_fields(mut model: ModelProto) -> ModelProto {
    model.configuration.push(DeviceConfigurationProto {
        name: Some("two_gpus".into()),
        num_devices: Some(2),
        device: vec!["cuda:0".into(), "cuda:1".into()],
    });
    let graph = model.graph.as_mut().unwrap();
    graph.node[0]
        .device_configurations
        .push(NodeDeviceConfigurationProto {
            configuration_id: Some("two_gpus".into()),
            sharding_spec: vec![],
            pipeline_stage: Some(1),
        });
    graph.node[0].metadata_props.push(StringStringEntryProto {
        key: Some("origin".into()),
        value: Some("ir14 test".into()),
    });
    graph.metadata_props.push(StringStringEntryProto {
        key: Some("graph_note".into()),
        value: Some("kept".into()),
    });
    graph.initializer.push(TensorProto {
        name: Some("unused_int2".into()),
        data_type: Some(DataType::Int2 as i32),
        dims: vec![4],
        raw_data: Some(bytes::Bytes::from_static(&[0b1110_0100])),
        ..Default::default()
    });
    model
}

#[test]
fn ir14_fields_survive_round_trip_and_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let base = ModelProto::decode(
        std::fs::read(common::fixture("training_info_sgd.onnx"))
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    let model = with_ir14_fields(base);
    let input = dir.path().join("ir14.onnx");
    std::fs::write(&input, model.encode_to_vec()).unwrap();

    let file = load_model(&input).unwrap();
    assert!(file.unknown_fields.is_empty());
    assert!(encode_model(&file.model) == file.source.as_ref());

    let rewritten = rewrite_with_cli(&input, &dir.path().join("ir14_la.onnx"));
    assert_eq!(rewritten.configuration, model.configuration);
    let (g0, g1) = (
        model.graph.as_ref().unwrap(),
        rewritten.graph.as_ref().unwrap(),
    );
    assert_eq!(g1.metadata_props, g0.metadata_props);
    let node = g1
        .node
        .iter()
        .find(|n| !n.device_configurations.is_empty())
        .expect("node kept");
    assert_eq!(node.device_configurations, g0.node[0].device_configurations);
    assert_eq!(node.metadata_props, g0.node[0].metadata_props);
    assert!(
        g1.initializer
            .iter()
            .any(|t| t.name() == "unused_int2" && t.data_type == Some(DataType::Int2 as i32))
    );
    // The main graph is not touched by a training_info rewrite: identical.
    assert_eq!(g1, g0);
}

/// What a training_info rewrite does not change comes out exactly as it came in: producer, doc
/// strings, metadata, functions, value_info, the main graph, and the algorithm's own parts.
#[test]
fn training_info_rewrite_preserves_unrelated_fields() {
    use onnx_lookahead::generated::onnx::{FunctionProto, NodeProto, ValueInfoProto};
    let dir = tempfile::tempdir().unwrap();
    let mut model = ModelProto::decode(
        std::fs::read(common::fixture("training_info_sgd.onnx"))
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    model.producer_name = Some("a producer".into());
    model.producer_version = Some("9.9".into());
    model.doc_string = Some("model docs".into());
    model.metadata_props.push(StringStringEntryProto {
        key: Some("author".into()),
        value: Some("someone".into()),
    });
    model.functions.push(FunctionProto {
        name: Some("Twice".into()),
        domain: Some("custom".into()),
        input: vec!["a".into()],
        output: vec!["b".into()],
        node: vec![NodeProto {
            op_type: Some("Add".into()),
            input: vec!["a".into(), "a".into()],
            output: vec!["b".into()],
            ..Default::default()
        }],
        ..Default::default()
    });
    let graph = model.graph.as_mut().unwrap();
    graph.doc_string = Some("graph docs".into());
    graph.node[0].doc_string = Some("node docs".into());
    graph.value_info.push(ValueInfoProto {
        name: Some(graph.node[0].output[0].clone()),
        doc_string: Some("value docs".into()),
        ..Default::default()
    });
    let algorithm = model.training_info[0].algorithm.as_mut().unwrap();
    algorithm.doc_string = Some("algorithm docs".into());
    algorithm.value_info.push(ValueInfoProto {
        name: Some(algorithm.node[0].output[0].clone()),
        ..Default::default()
    });
    let input = dir.path().join("documented.onnx");
    std::fs::write(&input, model.encode_to_vec()).unwrap();
    let rewritten = rewrite_with_cli(&input, &dir.path().join("documented_la.onnx"));

    assert_eq!(rewritten.producer_name, model.producer_name);
    assert_eq!(rewritten.producer_version, model.producer_version);
    assert_eq!(rewritten.doc_string, model.doc_string);
    assert_eq!(rewritten.ir_version, model.ir_version);
    assert_eq!(rewritten.opset_import, model.opset_import);
    assert_eq!(rewritten.functions, model.functions);
    assert_eq!(rewritten.graph, model.graph);
    assert_eq!(
        rewritten.metadata_props[..model.metadata_props.len()],
        model.metadata_props[..]
    );
    let (before, after) = (
        model.training_info[0].algorithm.as_ref().unwrap(),
        rewritten.training_info[0].algorithm.as_ref().unwrap(),
    );
    assert_eq!(after.name, before.name);
    assert_eq!(after.doc_string, before.doc_string);
    assert_eq!(after.input, before.input);
    assert_eq!(after.value_info, before.value_info);
    assert_eq!(
        after.initializer[..before.initializer.len()],
        before.initializer[..]
    );
    assert_eq!(after.output[..before.output.len()], before.output[..]);
    // The original nodes keep their relative order and content; injected ones are named apart.
    let kept: Vec<&NodeProto> = after
        .node
        .iter()
        .filter(|n| !n.name().starts_with("lookahead__"))
        .collect();
    assert_eq!(kept, before.node.iter().collect::<Vec<_>>());
    // Optimizer-state and weight bindings other than the weights themselves are unchanged.
    let bindings = |m: &ModelProto| m.training_info[0].initialization_binding.clone();
    assert_eq!(
        bindings(&rewritten)[..bindings(&model).len()],
        bindings(&model)[..]
    );
}
