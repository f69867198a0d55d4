//! Everything that touches bytes on disk: ONNX protobuf, the ORT checkpoint flatbuffer,
//! external data, atomic output.

pub mod atomic;
pub mod checkpoint;
pub mod dtype;
pub mod external_data;
pub mod fs;
pub mod interrupt;
pub mod lossless;
pub mod model;
pub mod output;
pub mod sink;
pub mod tensor_check;
pub mod values;
