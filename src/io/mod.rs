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

/// "1.5 KiB"-style sizes.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
