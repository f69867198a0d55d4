//! Everything that touches bytes on disk: ONNX protobuf, the ORT checkpoint flatbuffer,
//! external data, atomic output.

pub mod atomic;
pub mod checkpoint;
pub mod external_data;
pub mod lossless;
pub mod model;
