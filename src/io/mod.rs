//! Everything that touches bytes on disk: ONNX protobuf, the ORT checkpoint flatbuffer,
//! external data, atomic output.
pub mod checkpoint;
