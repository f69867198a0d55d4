pub mod onnx {
    include!("onnx.rs");
}
