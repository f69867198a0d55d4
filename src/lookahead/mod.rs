//! The Lookahead rewrite: options, the markers that identify a rewritten model, and one
//! injection pass per input format. Each pass returns a `ModelPatch` (plus the new checkpoint
//! state for ORT); nothing here writes protos in place.

pub mod ort;
pub mod training_info;

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::generated::onnx::{ModelProto, NodeProto, tensor_proto::DataType};
use crate::graph::build::{self, Node};
use crate::graph::names::NameGenerator;
use crate::graph::patch::{GraphEdit, GraphId, ModelPatch};

/// Every name (tensor, node, checkpoint parameter) the rewrite creates starts with this, so
/// `inspect` and the double-rewrite check can recognise injected parts.
pub const NAME_PREFIX: &str = "lookahead__";

/// metadata_props keys recorded on every model the rewrite changes.
pub const META_VERSION: &str = "onnx_lookahead.version";
pub const META_K: &str = "onnx_lookahead.k";
pub const META_ALPHA: &str = "onnx_lookahead.alpha";

pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Lookahead(k, alpha): every k inner steps, slow += alpha * (fast - slow); fast = slow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    pub k: u64,
    pub alpha: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options { k: 5, alpha: 0.5 }
    }
}

impl Options {
    pub fn new(k: u64, alpha: f64) -> Result<Self> {
        if k < 1 {
            return Err(Error::InvalidOption(format!(
                "k (sync period) must be an integer >= 1, got {k}"
            )));
        }
        if !(alpha.is_finite() && alpha > 0.0 && alpha <= 1.0) {
            return Err(Error::InvalidOption(format!(
                "alpha must satisfy 0 < alpha <= 1, got {alpha:?}"
            )));
        }
        Ok(Options { k, alpha })
    }

    /// The metadata entries that mark a model as rewritten.
    pub fn metadata(&self) -> Vec<(String, String)> {
        vec![
            (META_VERSION.to_string(), TOOL_VERSION.to_string()),
            (META_K.to_string(), self.k.to_string()),
            (META_ALPHA.to_string(), self.alpha.to_string()),
        ]
    }
}

/// What a rewritten model says about its rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteMarker {
    pub k: String,
    pub alpha: String,
    pub version: String,
}

/// The marker of a model rewritten by this tool, if any.
pub fn marker(model: &ModelProto) -> Option<RewriteMarker> {
    let get = |key: &str| {
        model
            .metadata_props
            .iter()
            .find(|p| p.key() == key)
            .map(|p| p.value().to_string())
    };
    let version = get(META_VERSION)?;
    Some(RewriteMarker {
        k: get(META_K).unwrap_or_default(),
        alpha: get(META_ALPHA).unwrap_or_default(),
        version,
    })
}

/// A fresh name in the tool's namespace.
pub(crate) fn fresh(names: &mut NameGenerator, what: &str) -> String {
    names.fresh(&format!("{NAME_PREFIX}{what}"))
}

/// The scalar alpha initializers of one graph, one per element type, created on first use.
pub(crate) struct AlphaConstants {
    alpha: f64,
    graph: GraphId,
    by_type: BTreeMap<i32, String>,
}

impl AlphaConstants {
    pub(crate) fn new(alpha: f64, graph: GraphId) -> Self {
        AlphaConstants {
            alpha,
            graph,
            by_type: BTreeMap::new(),
        }
    }

    /// The name of alpha in `elem_type`; adds its initializer to `patch` on first use.
    pub(crate) fn get(
        &mut self,
        elem_type: i32,
        names: &mut NameGenerator,
        patch: &mut ModelPatch,
        path: &Path,
        weight: &str,
    ) -> Result<String> {
        if let Some(name) = self.by_type.get(&elem_type) {
            return Ok(name.clone());
        }
        let unsupported = || Error::Unsupported {
            path: path.to_path_buf(),
            reason: format!(
                "weight {weight} has type {}, which Lookahead cannot interpolate",
                crate::io::dtype::name(elem_type)
            ),
        };
        let stored = stored_value(elem_type, self.alpha).ok_or_else(unsupported)?;
        let type_name = crate::io::dtype::name(elem_type);
        if stored == 0.0 {
            return Err(Error::InvalidOption(format!(
                "alpha {:?} rounds to 0 in {type_name} (the type of weight {weight}); choose a larger alpha",
                self.alpha
            )));
        }
        if stored == 1.0 && self.alpha != 1.0 {
            return Err(Error::InvalidOption(format!(
                "alpha {:?} rounds to 1 in {type_name} (the type of weight {weight}); pass --alpha 1 or a smaller alpha",
                self.alpha
            )));
        }
        let name = fresh(names, "alpha");
        let tensor = DataType::try_from(elem_type)
            .ok()
            .and_then(|d| build::scalar_float_of_type(&name, d, self.alpha))
            .ok_or_else(unsupported)?;
        patch.edit(self.graph, GraphEdit::AddInitializer(tensor));
        self.by_type.insert(elem_type, name.clone());
        Ok(name)
    }
}

/// The value `alpha` takes once stored in a tensor of `data_type` (None: not a floating-point type).
pub(crate) fn stored_value(data_type: i32, alpha: f64) -> Option<f64> {
    match DataType::try_from(data_type).ok()? {
        DataType::Double => Some(alpha),
        DataType::Float => Some(f64::from(alpha as f32)),
        DataType::Float16 | DataType::Bfloat16 => {
            let tensor =
                build::scalar_float_of_type("", DataType::try_from(data_type).ok()?, alpha)?;
            let raw = tensor.raw_data?;
            let bits = u16::from_le_bytes([*raw.first()?, *raw.get(1)?]);
            Some(if data_type == DataType::Bfloat16 as i32 {
                f64::from(f32::from_bits(u32::from(bits) << 16))
            } else {
                f16_to_f64(bits)
            })
        }
        _ => None,
    }
}

/// IEEE half precision bits to a double (exact).
fn f16_to_f64(bits: u16) -> f64 {
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

/// `alpha * (fast - slow)`, the slow weight's step toward the fast one: the nodes, and the name
/// of the result. Both passes add it to `slow` (out of place or in place).
pub(crate) fn slow_step(
    fast: &str,
    slow: &str,
    alpha: &str,
    weight: &str,
    names: &mut NameGenerator,
) -> (Vec<NodeProto>, String) {
    let diff = fresh(names, &format!("diff__{weight}"));
    let scaled = fresh(names, &format!("scaled__{weight}"));
    let nodes = vec![
        Node::new("Sub")
            .inputs([fast, slow])
            .outputs([&diff])
            .build(),
        Node::new("Mul")
            .inputs([alpha, diff.as_str()])
            .outputs([&scaled])
            .build(),
    ];
    (nodes, scaled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_validated() {
        assert!(Options::new(1, 1.0).is_ok());
        assert!(Options::new(5, 0.5).is_ok());
        assert!(Options::new(0, 0.5).is_err());
        assert!(Options::new(5, 0.0).is_err());
        assert!(Options::new(5, 1.5).is_err());
        assert!(Options::new(5, f64::NAN).is_err());
        assert!(Options::new(5, -0.1).is_err());
    }

    #[test]
    fn stored_alpha_rounds_like_the_tensor() {
        use crate::io::dtype::code;
        assert_eq!(stored_value(code::FLOAT16, 0.5), Some(0.5));
        assert_eq!(stored_value(code::FLOAT16, 1e-8), Some(0.0));
        assert_eq!(stored_value(code::FLOAT16, 0.99999), Some(1.0));
        assert_eq!(stored_value(code::FLOAT, 1e-50), Some(0.0));
        assert_eq!(stored_value(code::BFLOAT16, 0.5), Some(0.5));
        assert_eq!(stored_value(code::DOUBLE, 1e-300), Some(1e-300));
        assert_eq!(stored_value(code::INT64, 0.5), None);
        assert!((stored_value(code::FLOAT16, 0.8).unwrap() - 0.7998046875).abs() < 1e-12);
    }
}
