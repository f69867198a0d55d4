//! Averaging schemes: what is kept per parameter, when the average is updated, the arithmetic of
//! an update, and what evaluation sees. Lookahead, an EMA of the weights and SWA are schemes; the
//! format injections (`inject/`) wire any scheme into ORT artifacts and training_info models
//! through this trait, and the registry (`registry.rs`) is the one place that names them.

pub mod ema;
pub mod inner_state;
pub mod lookahead;
pub mod registry;
mod schedule;
pub mod swa;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::graph::emit::Emitter;

pub use inner_state::{InnerSlot, InnerState};
pub use lookahead::Lookahead;
pub use registry::SchemeOptions;
pub use schedule::{Position, Schedule};

/// A wrapped parameter as a scheme sees it: its name (for messages) and element type (for
/// constants).
#[derive(Debug, Clone, Copy)]
pub struct Param<'a> {
    pub name: &'a str,
    pub data_type: i32,
}

/// The values an update produces for one parameter. A name equal to its input means
/// "unchanged": the injection then writes nothing for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Synced {
    pub fast: String,
    pub state: Vec<String>,
}

/// How an update writes one state tensor in place (ONNX Runtime artifacts).
#[derive(Debug, Clone, PartialEq)]
pub enum InPlace {
    /// Overwrite it with this value (a name equal to the tensor: unchanged).
    Set(String),
    /// Add this to it: one pass over the tensor, no copy of the new value.
    Add(String),
}

/// What an update computes once for all parameters from the set-wide state (SWA: the sample
/// count): float32 `[1]` scalars the per-parameter arithmetic reads, and the new values of the
/// set-wide state (in `shared_slots` order).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prepared {
    pub scalars: Vec<String>,
    pub shared: Vec<String>,
}

/// The host-side counterpart of `Prepared`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostPrepared {
    pub scalars: Vec<f64>,
    pub shared: Vec<f64>,
}

/// Which weights evaluation (the eval graph, exports, `run_inference`) reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalWeights {
    /// The weights training continues from (for Lookahead: the fast weights, synced at a sync).
    #[serde(alias = "lookahead")]
    Current,
    /// The scheme's average (Lookahead: the slow weights; EMA, SWA: the averaged weights).
    #[serde(alias = "slow")]
    Averaged,
}

impl EvalWeights {
    pub fn id(self) -> &'static str {
        match self {
            EvalWeights::Current => "current",
            EvalWeights::Averaged => "averaged",
        }
    }

    /// By name: `current`/`averaged`, or Lookahead's spellings `lookahead`/`slow`.
    pub fn from_id(id: &str) -> Option<Self> {
        match id {
            "current" | "lookahead" => Some(EvalWeights::Current),
            "averaged" | "slow" => Some(EvalWeights::Averaged),
            _ => None,
        }
    }
}

/// Records written before the schemes named their weights default to the current weights.
impl Default for EvalWeights {
    fn default() -> Self {
        EvalWeights::Current
    }
}

pub trait Scheme {
    /// The registry name recorded in rewritten models ("lookahead", "ema", "swa").
    fn name(&self) -> &'static str;

    /// The scheme's name for people: "Lookahead", "EMA", "SWA".
    fn title(&self) -> &'static str;

    /// One line for people: "Lookahead k=5 alpha=0.5".
    fn describe(&self) -> String;

    /// What an update does, one assignment per line, for reports and pictures.
    fn update_lines(&self) -> Vec<String>;

    /// The settings recorded with the name (for Lookahead `{"k": 5, "alpha": 0.5}`).
    fn settings(&self) -> Map<String, Value>;

    /// After which optimizer steps the average is updated.
    fn schedule(&self) -> Schedule;

    /// Whether an update also writes the weights training continues from (Lookahead: fast ←
    /// slow) rather than only the average.
    fn moves_weights(&self) -> bool {
        false
    }

    /// The weights evaluation reads unless the caller chooses.
    fn default_eval_weights(&self) -> EvalWeights;

    /// The state tensors each wrapped parameter gets, by role; each starts as a copy of the
    /// parameter's initial value. The first is the average evaluation can read.
    fn state_slots(&self) -> &'static [&'static str];

    /// Set-wide state, by role: float32 `[1]` tensors starting at 0 (SWA: the sample count).
    fn shared_slots(&self) -> &'static [&'static str] {
        &[]
    }

    /// Emits, once per update, what the per-parameter arithmetic needs from the set-wide state
    /// `shared` (in `shared_slots` order).
    fn prepare(&self, _e: &mut Emitter, _shared: &[String]) -> Result<Prepared> {
        Ok(Prepared::default())
    }

    /// Emits the arithmetic of an update of one parameter: `fast` is its value after the inner
    /// optimizer's step, `state` its state tensors (in `state_slots` order), `scalars` what
    /// `prepare` computed.
    fn sync(
        &self,
        e: &mut Emitter,
        p: Param,
        fast: &str,
        state: &[String],
        scalars: &[String],
    ) -> Result<Synced>;

    /// `sync` as the in-place writes of ONNX Runtime artifacts do it: the new weight, and per
    /// state tensor what is written into it. The default overwrites each with `sync`'s value; a
    /// scheme whose update is an increment says so, saving the copy (the sum must round exactly
    /// as `sync`'s value does).
    fn sync_in_place(
        &self,
        e: &mut Emitter,
        p: Param,
        fast: &str,
        state: &[String],
        scalars: &[String],
    ) -> Result<(String, Vec<InPlace>)> {
        let synced = self.sync(e, p, fast, state, scalars)?;
        Ok((
            synced.fast,
            synced.state.into_iter().map(InPlace::Set).collect(),
        ))
    }

    /// `prepare` on the host, with the graph's rounding.
    fn host_prepare(&self, _shared: &[f64]) -> Result<HostPrepared> {
        Ok(HostPrepared::default())
    }

    /// `sync` on the host, element by element with the operations and rounding of the graph:
    /// the new value of the parameter and of each state tensor.
    fn host_sync(
        &self,
        p: Param,
        fast: &[f64],
        state: &[Vec<f64>],
        scalars: &[f64],
    ) -> Result<(Vec<f64>, Vec<Vec<f64>>)>;

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
    /// an update step (`at_sync`: the update is pending until the next training forward performs
    /// it) or between updates. A name equal to an input means that input itself.
    #[allow(clippy::too_many_arguments)]
    fn eval_view(
        &self,
        e: &mut Emitter,
        p: Param,
        fast: &str,
        state: &[String],
        scalars: &[String],
        weights: EvalWeights,
        at_sync: bool,
    ) -> Result<String> {
        let (fast, state) = if at_sync {
            let synced = self.sync(e, p, fast, state, scalars)?;
            (synced.fast, synced.state)
        } else {
            (fast.to_string(), state.to_vec())
        };
        Ok(match weights {
            EvalWeights::Current => fast,
            EvalWeights::Averaged => averaged(state, p)?,
        })
    }

    /// The values one parameter takes when the rewrite is taken back (`finalize`): `fast`,
    /// `state` and `shared` are the current values, `at_sync` whether an update is pending.
    fn final_values(
        &self,
        p: Param,
        fast: &[f64],
        state: &[Vec<f64>],
        shared: &[f64],
        at_sync: bool,
        weights: EvalWeights,
    ) -> Result<Vec<f64>> {
        let (fast, state) = if at_sync {
            let prepared = self.host_prepare(shared)?;
            self.host_sync(p, fast, state, &prepared.scalars)?
        } else {
            (fast.to_vec(), state.to_vec())
        };
        Ok(match weights {
            EvalWeights::Current => fast,
            EvalWeights::Averaged => averaged(state, p)?,
        })
    }
}

/// The averaged weights among a parameter's state tensors (the first).
fn averaged<T>(state: Vec<T>, p: Param) -> Result<T> {
    state.into_iter().next().ok_or_else(|| missing_state(p))
}

fn missing_state(p: Param) -> Error {
    Error::Validation {
        graph: p.name.to_string(),
        reason: "missing a state tensor of the averaging scheme".into(),
    }
}

/// The state tensor (a name, or host values) of role index `i`, or a validation error naming
/// the parameter.
pub(crate) fn slot<'s, T>(state: &'s [T], i: usize, p: Param) -> Result<&'s T> {
    state.get(i).ok_or_else(|| missing_state(p))
}

/// `value` (a fraction strictly between 0 and 1) as a tensor of the parameter's type stores it,
/// refused when the type rounds it to 0 or 1 (it would not be the value asked for).
pub(crate) fn stored_fraction(p: Param, value: f64, what: &str) -> Result<f64> {
    let type_name = crate::io::dtype::name(p.data_type);
    let stored = crate::io::values::round(p.data_type, value).ok_or_else(|| unsupported_type(p))?;
    if stored == 0.0 {
        return Err(Error::InvalidOption(format!(
            "{what} {value:?} rounds to 0 in {type_name} (the type of weight {}); choose a larger {what}",
            p.name
        )));
    }
    if stored == 1.0 {
        return Err(Error::InvalidOption(format!(
            "{what} {value:?} rounds to 1 in {type_name} (the type of weight {}); choose a smaller {what}",
            p.name
        )));
    }
    Ok(stored)
}

pub(crate) fn unsupported_type(p: Param) -> Error {
    Error::InvalidOption(format!(
        "parameter {} has type {}, which weight averaging cannot interpolate",
        p.name,
        crate::io::dtype::name(p.data_type)
    ))
}

/// Rounds `x` to the parameter's type as a graph operation producing that type does.
pub(crate) fn rounder(p: Param) -> impl Fn(f64) -> f64 {
    let data_type = p.data_type;
    move |x| crate::io::values::round(data_type, x).unwrap_or(x)
}

/// Checks that a parameter's host values and its state tensors have one length.
pub(crate) fn same_lengths(p: Param, fast: &[f64], state: &[Vec<f64>]) -> Result<()> {
    match state.iter().find(|s| s.len() != fast.len()) {
        None => Ok(()),
        Some(s) => Err(Error::Validation {
            graph: p.name.to_string(),
            reason: format!("{} values, but a state tensor has {}", fast.len(), s.len()),
        }),
    }
}
