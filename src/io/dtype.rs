//! ONNX element types (TensorProto.DataType numbers), shared by the ONNX and the checkpoint side:
//! storage width, byte length of a shape, names for reports.

use crate::generated::onnx::tensor_proto::DataType;

/// The element type numbers the code names (the ONNX enum's values, as stored in both formats).
pub mod code {
    use crate::generated::onnx::tensor_proto::DataType;
    pub const UNDEFINED: i32 = DataType::Undefined as i32;
    pub const FLOAT: i32 = DataType::Float as i32;
    pub const UINT8: i32 = DataType::Uint8 as i32;
    pub const INT8: i32 = DataType::Int8 as i32;
    pub const UINT16: i32 = DataType::Uint16 as i32;
    pub const INT16: i32 = DataType::Int16 as i32;
    pub const INT32: i32 = DataType::Int32 as i32;
    pub const INT64: i32 = DataType::Int64 as i32;
    pub const STRING: i32 = DataType::String as i32;
    pub const BOOL: i32 = DataType::Bool as i32;
    pub const FLOAT16: i32 = DataType::Float16 as i32;
    pub const DOUBLE: i32 = DataType::Double as i32;
    pub const UINT32: i32 = DataType::Uint32 as i32;
    pub const UINT64: i32 = DataType::Uint64 as i32;
    pub const COMPLEX64: i32 = DataType::Complex64 as i32;
    pub const COMPLEX128: i32 = DataType::Complex128 as i32;
    pub const BFLOAT16: i32 = DataType::Bfloat16 as i32;
}

/// Storage bits per element, for types stored as fixed-width elements packed without gaps
/// (sub-byte types pack two, four or 4/3 elements per byte). None for STRING, UNDEFINED and
/// numbers the schema does not know.
pub fn element_bits(data_type: i32) -> Option<u64> {
    use DataType::*;
    Some(match DataType::try_from(data_type).ok()? {
        Uint8 | Int8 | Bool | Float8e4m3fn | Float8e4m3fnuz | Float8e5m2 | Float8e5m2fnuz
        | Float8e8m0 => 8,
        Uint16 | Int16 | Float16 | Bfloat16 => 16,
        Float | Int32 | Uint32 => 32,
        Int64 | Double | Uint64 | Complex64 => 64,
        Complex128 => 128,
        Uint4 | Int4 | Float4e2m1 => 4,
        Uint2 | Int2 => 2,
        Float6e2m3 | Float6e3m2 => 6,
        Undefined | String => return None,
    })
}

/// Bytes per element; None for sub-byte types, STRING and unknown types.
pub fn element_size(data_type: i32) -> Option<usize> {
    element_bits(data_type)
        .filter(|bits| bits % 8 == 0)
        .map(|bits| (bits / 8) as usize)
}

/// The number of elements of a shape; None for a negative dim or overflow.
pub fn element_count(dims: &[i64]) -> Option<u64> {
    dims.iter().try_fold(1u64, |count, &dim| {
        count.checked_mul(u64::try_from(dim).ok()?)
    })
}

/// Bytes a tensor of this shape and type occupies in raw form (sub-byte types rounded up to whole
/// bytes). None for negative dims, overflow, STRING and unknown types.
pub fn tensor_byte_length(dims: &[i64], data_type: i32) -> Option<u64> {
    let bits = element_bits(data_type)?;
    Some(element_count(dims)?.checked_mul(bits)?.div_ceil(8))
}

/// Whether Lookahead can interpolate values of this type (IEEE or brain floating point).
pub fn is_float(data_type: i32) -> bool {
    matches!(
        DataType::try_from(data_type),
        Ok(DataType::Float | DataType::Double | DataType::Float16 | DataType::Bfloat16)
    )
}

/// The lowercase ONNX name of a type ("float", "int64"), or "type<N>" for unknown numbers.
pub fn name(data_type: i32) -> String {
    DataType::try_from(data_type)
        .map(|d| d.as_str_name().to_lowercase())
        .unwrap_or_else(|_| format!("type{data_type}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_lengths_follow_element_bits() {
        assert_eq!(tensor_byte_length(&[4, 8], code::FLOAT), Some(128));
        assert_eq!(tensor_byte_length(&[], code::DOUBLE), Some(8));
        assert_eq!(tensor_byte_length(&[0, 5], code::INT64), Some(0));
        assert_eq!(tensor_byte_length(&[3], 22), Some(2)); // INT4: two per byte, rounded up
        assert_eq!(tensor_byte_length(&[5], 25), Some(2)); // UINT2: four per byte
        assert_eq!(tensor_byte_length(&[5], 27), Some(4)); // FLOAT6E2M3: ceil(30 / 8)
        assert_eq!(tensor_byte_length(&[-1], code::FLOAT), None);
        assert_eq!(tensor_byte_length(&[i64::MAX, 4], code::FLOAT), None);
        assert_eq!(tensor_byte_length(&[2], code::STRING), None);
        assert_eq!(tensor_byte_length(&[2], 1000), None);
        assert_eq!(element_size(code::BFLOAT16), Some(2));
        assert_eq!(element_size(code::COMPLEX128), Some(16));
        assert_eq!(element_size(22), None);
        assert_eq!(name(code::FLOAT16), "float16");
        assert_eq!(name(99), "type99");
    }
}
