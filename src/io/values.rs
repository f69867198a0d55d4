//! Floating-point tensor values on the host, for the few places the tool computes with numbers
//! (a constant of a weight's type; `finalize` folding a pending sync into the weights): decoding
//! and encoding the stored little-endian forms, and each type's rounding.
//!
//! Values are held as f64. One f32 operation computed in f64 and rounded to f32 gives exactly
//! the f32 result (53 >= 2 * 24 + 2 bits), so arithmetic here matches ONNX Runtime's kernels for
//! float and double. float16 and bfloat16 are computed as ONNX Runtime's CPU kernels do: in f32,
//! then rounded to the 16-bit type.

use crate::io::dtype::code;

/// The binary exponent of a finite, non-zero, normal f64 (floor of log2 |x|, exactly).
fn exponent_of(x: f64) -> i32 {
    (((x.to_bits() >> 52) & 0x7ff) as i32) - 1023
}

/// `x` rounded to the nearest value with `precision` significant bits (ties to even), with
/// gradual underflow below 2^`min_exponent` and overflow to infinity above `max`.
fn round_to(x: f64, precision: i32, min_exponent: i32, max: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let exponent = exponent_of(x).max(min_exponent);
    let quantum = 2f64.powi(exponent - precision + 1);
    let rounded = (x / quantum).round_ties_even() * quantum;
    if rounded.abs() > max {
        f64::INFINITY.copysign(x)
    } else {
        rounded
    }
}

const F16_MAX: f64 = 65504.0;
const BF16_MAX: f64 = 3.389_531_389_251_535_5e38;

fn to_f16(x: f64) -> f64 {
    round_to(f64::from(x as f32), 11, -14, F16_MAX)
}

fn to_bf16(x: f64) -> f64 {
    round_to(f64::from(x as f32), 8, -126, BF16_MAX)
}

/// `x` rounded to a floating-point type (None: not one).
pub fn round(data_type: i32, x: f64) -> Option<f64> {
    Some(match data_type {
        code::DOUBLE => x,
        code::FLOAT => f64::from(x as f32),
        code::FLOAT16 => to_f16(x),
        code::BFLOAT16 => to_bf16(x),
        _ => return None,
    })
}

/// IEEE half-precision bits of a value already rounded to float16.
fn f16_bits(value: f64) -> u16 {
    let sign = if value.is_sign_negative() { 0x8000 } else { 0 };
    let magnitude = value.abs();
    if magnitude.is_nan() {
        return sign | 0x7e00;
    }
    if magnitude.is_infinite() {
        return sign | 0x7c00;
    }
    if magnitude < 2f64.powi(-14) {
        return sign | (magnitude * 2f64.powi(24)) as u16;
    }
    let exponent = exponent_of(magnitude);
    let mantissa = (magnitude / 2f64.powi(exponent) - 1.0) * 1024.0;
    sign | (((exponent + 15) as u16) << 10) | mantissa as u16
}

fn f16_value(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((bits >> 10) & 0x1f);
    let mantissa = f64::from(bits & 0x3ff);
    sign * match exponent {
        0 => mantissa * 2f64.powi(-24),
        0x1f if mantissa == 0.0 => f64::INFINITY,
        0x1f => f64::NAN,
        e => (1.0 + mantissa / 1024.0) * 2f64.powi(e - 15),
    }
}

/// Decodes little-endian values of a floating-point type (None: not one, or a length that is not
/// a whole number of elements).
pub fn decode(data_type: i32, bytes: &[u8]) -> Option<Vec<f64>> {
    let size = crate::io::dtype::element_size(data_type)?;
    if !bytes.len().is_multiple_of(size) {
        return None;
    }
    let chunks = bytes.chunks_exact(size);
    Some(match data_type {
        code::DOUBLE => chunks
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect(),
        code::FLOAT => chunks
            .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap_or([0; 4]))))
            .collect(),
        code::FLOAT16 => chunks
            .map(|c| f16_value(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        code::BFLOAT16 => chunks
            .map(|c| {
                f64::from(f32::from_bits(
                    u32::from(u16::from_le_bytes([c[0], c[1]])) << 16,
                ))
            })
            .collect(),
        _ => return None,
    })
}

/// Encodes values (rounded to the type) as little-endian bytes (None: not a floating-point type).
pub fn encode(data_type: i32, values: &[f64]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(values.len() * crate::io::dtype::element_size(data_type)?);
    for &v in values {
        match data_type {
            code::DOUBLE => out.extend(v.to_le_bytes()),
            code::FLOAT => out.extend((v as f32).to_le_bytes()),
            code::FLOAT16 => out.extend(f16_bits(to_f16(v)).to_le_bytes()),
            code::BFLOAT16 => {
                let bits = if v.is_nan() {
                    0x7fc0
                } else {
                    ((to_bf16(v) as f32).to_bits() >> 16) as u16
                };
                out.extend(bits.to_le_bytes())
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_rounds_to_nearest_even() {
        assert_eq!(
            encode(code::FLOAT16, &[0.5]).unwrap(),
            0x3800u16.to_le_bytes()
        );
        assert_eq!(
            encode(code::FLOAT16, &[1.0]).unwrap(),
            0x3c00u16.to_le_bytes()
        );
        assert_eq!(
            encode(code::FLOAT16, &[0.8]).unwrap(),
            0x3a66u16.to_le_bytes()
        );
        assert_eq!(
            encode(code::FLOAT16, &[-2.0]).unwrap(),
            0xc000u16.to_le_bytes()
        );
        assert_eq!(round(code::FLOAT16, 1e-8), Some(0.0));
        assert_eq!(round(code::FLOAT16, 0.99999), Some(1.0));
        assert_eq!(round(code::FLOAT16, 70000.0), Some(f64::INFINITY));
        // The smallest subnormal and values around it.
        assert_eq!(round(code::FLOAT16, 2f64.powi(-24)), Some(2f64.powi(-24)));
        assert_eq!(
            round(code::FLOAT16, 0.6 * 2f64.powi(-24)),
            Some(2f64.powi(-24))
        );
        assert_eq!(
            encode(code::FLOAT16, &[2f64.powi(-24)]).unwrap(),
            1u16.to_le_bytes()
        );
        assert_eq!(round(code::BFLOAT16, 0.5), Some(0.5));
        assert_eq!(round(code::FLOAT, 1e-50), Some(0.0));
        assert_eq!(round(code::INT64, 1.0), None);
    }

    #[test]
    fn values_round_trip_through_bytes() {
        for data_type in [code::FLOAT, code::DOUBLE, code::FLOAT16, code::BFLOAT16] {
            let values: Vec<f64> = [0.0, -1.5, 0.25, 3.0, 1e-3]
                .iter()
                .map(|&v| round(data_type, v).unwrap())
                .collect();
            let bytes = encode(data_type, &values).unwrap();
            assert_eq!(
                decode(data_type, &bytes).unwrap(),
                values,
                "type {data_type}"
            );
        }
        assert!(decode(code::FLOAT, &[0, 0, 0]).is_none());
    }
}
