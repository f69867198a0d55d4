//! Averaging schemes: what is kept per parameter, when it syncs, the arithmetic of a sync, and
//! what evaluation sees. Lookahead is one scheme; the format injections (`inject/`) wire any
//! scheme into ORT artifacts and training_info models through this trait, so a second scheme
//! (an EMA of the weights, SWA) is one new file here.

pub mod inner_state;
pub mod lookahead;

use serde_json::{Map, Value};

use crate::error::Result;
use crate::graph::emit::Emitter;

pub use inner_state::{InnerSlot, InnerState};
pub use lookahead::Lookahead;

/// A wrapped parameter as a scheme sees it: its name (for messages) and element type (for
/// constants).
#[derive(Debug, Clone, Copy)]
pub struct Param<'a> {
    pub name: &'a str,
    pub data_type: i32,
}

/// The values a sync produces for one parameter. A name equal to its input means "unchanged":
/// the injection then writes nothing for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Synced {
    pub fast: String,
    pub state: Vec<String>,
}

/// Which weights evaluation (the eval graph, exports, `run_inference`) reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalWeights {
    /// The weights training continues from (for Lookahead: the fast weights, synced at a sync).
    #[default]
    Lookahead,
    /// The scheme's averaged weights (for Lookahead: the slow weights).
    Slow,
}

impl EvalWeights {
    pub fn id(self) -> &'static str {
        match self {
            EvalWeights::Lookahead => "lookahead",
            EvalWeights::Slow => "slow",
        }
    }
}

pub trait Scheme {
    /// The name recorded in rewritten models ("lookahead").
    fn name(&self) -> &'static str;

    /// The settings recorded with the name (for Lookahead `{"k": 5, "alpha": 0.5}`).
    fn settings(&self) -> Map<String, Value>;

    /// Inner steps per cycle: a sync follows steps period, 2 period, ...
    fn period(&self) -> u64;

    /// The state tensors each wrapped parameter gets, by role ("slow"); each starts as a copy of
    /// the parameter's initial value.
    fn state_slots(&self) -> &'static [&'static str];

    /// Emits the arithmetic of a sync of one parameter: `fast` is its value after the inner
    /// optimizer's step, `state` its state tensors (in `state_slots` order).
    fn sync(&self, e: &mut Emitter, p: Param, fast: &str, state: &[String]) -> Result<Synced>;

    /// How a sync treats the inner optimizer's state (`--inner-state`).
    fn inner_state(&self) -> InnerState {
        InnerState::Keep
    }

    /// The tensors the scheme keeps for one inner-optimizer slot of a wrapped parameter, by role
    /// (Lookahead pullback: the momentum cached at the last sync); each starts at zero.
    fn inner_state_slots(&self, _slot: InnerSlot) -> &'static [&'static str] {
        &[]
    }

    /// Emits what a sync does to one inner-optimizer state tensor of slot `slot` (one of
    /// `inner_state().synced_slots()`): `value` is its value after the inner step, `cache` the
    /// scheme's tensors for it (in `inner_state_slots` order). `p` names the state tensor.
    fn sync_inner(
        &self,
        _e: &mut Emitter,
        _p: Param,
        _slot: InnerSlot,
        value: &str,
        cache: &[String],
    ) -> Result<Synced> {
        Ok(Synced {
            fast: value.to_string(),
            state: cache.to_vec(),
        })
    }

    /// Emits what evaluation reads for one parameter whose current value is `fast`: right after
    /// a sync step (`at_sync`: the sync is pending until the next training forward performs it)
    /// or between syncs. A name equal to an input means that input itself.
    fn eval_view(
        &self,
        e: &mut Emitter,
        p: Param,
        fast: &str,
        state: &[String],
        weights: EvalWeights,
        at_sync: bool,
    ) -> Result<String>;

    /// The values one parameter takes when the rewrite is taken back (`finalize`), computed on
    /// the host with the operations and rounding of `sync`: `fast` and `state` are its current
    /// values, `at_sync` whether a sync is pending.
    fn final_values(
        &self,
        p: Param,
        fast: &[f64],
        state: &[Vec<f64>],
        at_sync: bool,
        weights: EvalWeights,
    ) -> Result<Vec<f64>>;
}

/// The scheme a record names, with its recorded settings.
pub fn from_record(record: &crate::record::RewriteRecord) -> Result<Box<dyn Scheme>> {
    match record.scheme.as_str() {
        "lookahead" => {
            let k = record.setting_u64("k");
            let alpha = record.setting_f64("alpha");
            match (k, alpha) {
                (Some(k), Some(alpha)) => {
                    let inner = match record.settings.get("inner_state") {
                        None => InnerState::Keep,
                        Some(v) => v.as_str().and_then(InnerState::from_id).ok_or_else(|| {
                            crate::error::Error::InvalidOption(format!(
                                "the record of the rewrite has an unknown inner_state {v}"
                            ))
                        })?,
                    };
                    Ok(Box::new(Lookahead::new(k, alpha)?.with_inner_state(inner)))
                }
                _ => Err(crate::error::Error::InvalidOption(
                    "the record of the rewrite has no valid k and alpha".into(),
                )),
            }
        }
        other => Err(crate::error::Error::InvalidOption(format!(
            "the rewrite used the averaging scheme {other:?}, which this version does not know"
        ))),
    }
}
