//! What a sync does to the inner optimizer's state (`rewrite --inner-state`): kept (the paper),
//! reset to zero (optax `lookahead(reset_state=True)`: the optimizer restarts from its initial
//! state), or pulled back like the weights (the authors' code, `pullback_momentum="pullback"`:
//! the momentum is interpolated with the momentum cached at the previous sync).

use crate::error::{Error, Result};
use crate::generated::onnx::tensor_proto::DataType;
use crate::graph::build::{self, Node};
use crate::graph::emit::Emitter;

/// The policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InnerState {
    #[default]
    Keep,
    Reset,
    Pullback,
}

impl InnerState {
    pub fn id(self) -> &'static str {
        match self {
            InnerState::Keep => "keep",
            InnerState::Reset => "reset",
            InnerState::Pullback => "pullback",
        }
    }

    pub fn from_id(id: &str) -> Option<Self> {
        [InnerState::Keep, InnerState::Reset, InnerState::Pullback]
            .into_iter()
            .find(|s| s.id() == id)
    }

    /// The inner-optimizer slots a sync changes under this policy.
    pub fn synced_slots(self) -> &'static [InnerSlot] {
        match self {
            InnerState::Keep => &[],
            InnerState::Reset => &[
                InnerSlot::Momentum,
                InnerSlot::SecondMoment,
                InnerSlot::Accumulator,
                InnerSlot::Count,
            ],
            InnerState::Pullback => &[InnerSlot::Momentum],
        }
    }

    /// What a parameter whose optimizer keeps none of `synced_slots` lacks, for the refusal.
    pub fn requirement(self) -> &'static str {
        match self {
            InnerState::Keep => "",
            InnerState::Reset => "optimizer state to reset",
            InnerState::Pullback => {
                "momentum to pull back (pullback applies to Momentum and to Adam's first moment)"
            }
        }
    }
}

/// A state tensor an inner optimizer keeps: per parameter (moments, accumulators) or per update
/// node (the update count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InnerSlot {
    /// Momentum's velocity, Adam's first moment.
    Momentum,
    /// Adam's second moment.
    SecondMoment,
    /// Adagrad's sum of squared gradients.
    Accumulator,
    /// The update count T (bias correction, learning-rate decay, the first step's rule).
    Count,
}

impl InnerSlot {
    pub fn id(self) -> &'static str {
        match self {
            InnerSlot::Momentum => "momentum",
            InnerSlot::SecondMoment => "second_moment",
            InnerSlot::Accumulator => "accumulator",
            InnerSlot::Count => "count",
        }
    }
}

/// Emits zeros shaped like `value` (of `data_type`): `Expand(0, Shape(value))`, which every
/// element type supports and which costs nothing outside the sync branch.
pub fn zeros_like(e: &mut Emitter, value: &str, data_type: i32, hint: &str) -> Result<String> {
    let shape = e.op("Shape", &[value], &format!("shape__{hint}"));
    zeros_of_shape(e, &shape, data_type, hint)
}

/// Emits zeros of `data_type` with the shape held by the int64 tensor `shape`.
pub fn zeros_of_shape(e: &mut Emitter, shape: &str, data_type: i32, hint: &str) -> Result<String> {
    let zero = e.fresh(&format!("zero_scalar__{hint}"));
    let size = crate::io::dtype::element_size(data_type);
    let (Ok(dtype), Some(size)) = (DataType::try_from(data_type), size) else {
        return Err(Error::InvalidOption(format!(
            "{hint} has type {}, which --inner-state cannot reset",
            crate::io::dtype::name(data_type)
        )));
    };
    let raw = vec![0u8; size];
    e.node(
        Node::new("Constant")
            .outputs([&zero])
            .attr_tensor(
                "value",
                build::tensor_raw(&zero, dtype, &[], bytes::Bytes::from(raw)),
            )
            .build(),
    );
    Ok(e.op("Expand", &[&zero, shape], &format!("zeros__{hint}")))
}
