//! Lookahead (Zhang, Lucas, Hinton, Ba 2019, Algorithm 1): one slow copy per parameter; after
//! every k inner steps `slow <- slow + alpha * (fast - slow); fast <- slow`. The inner optimizer's
//! state is kept (the paper's default), reset or pulled back (`InnerState`).

use serde_json::{Map, Value, json};

use super::inner_state::{InnerSlot, InnerState, zeros_like};
use super::registry::{OptionId, SchemeEntry, SchemeOptions, setting};
use super::{EvalWeights, Param, Schedule, Scheme, Synced};
use crate::error::{Error, Result};
use crate::graph::emit::Emitter;
use crate::io::dtype;

/// Lookahead(k, alpha), and what a sync does to the inner optimizer's state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lookahead {
    pub k: u64,
    pub alpha: f64,
    pub inner_state: InnerState,
}

pub const ENTRY: SchemeEntry = SchemeEntry {
    name: "lookahead",
    options: &[OptionId::K, OptionId::Alpha, OptionId::InnerState],
    from_options: |o: &SchemeOptions| {
        let d = Lookahead::default();
        Ok(Box::new(
            Lookahead::new(o.k.unwrap_or(d.k), o.alpha.unwrap_or(d.alpha))?
                .with_inner_state(o.inner_state.unwrap_or_default()),
        ))
    },
    from_settings: |settings| {
        let k = setting(settings, "k", Value::as_u64)?;
        let alpha = setting(settings, "alpha", Value::as_f64)?;
        let inner = match settings.get("inner_state") {
            None => InnerState::Keep,
            Some(v) => v.as_str().and_then(InnerState::from_id).ok_or_else(|| {
                Error::InvalidOption(format!(
                    "the record of the rewrite has an unknown inner_state {v}"
                ))
            })?,
        };
        Ok(Box::new(Lookahead::new(k, alpha)?.with_inner_state(inner)))
    },
};

impl Default for Lookahead {
    fn default() -> Self {
        Lookahead {
            k: 5,
            alpha: 0.5,
            inner_state: InnerState::Keep,
        }
    }
}

impl Lookahead {
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
        Ok(Lookahead {
            k,
            alpha,
            inner_state: InnerState::Keep,
        })
    }

    pub fn with_inner_state(self, inner_state: InnerState) -> Self {
        Lookahead {
            inner_state,
            ..self
        }
    }

    /// The name of alpha in the parameter's type, refused when the type rounds it to 0, or to 1
    /// when it is not 1 (the stored value would not be the alpha the user asked for).
    fn alpha_constant(&self, e: &mut Emitter, p: Param) -> Result<String> {
        let type_name = dtype::name(p.data_type);
        let unsupported = || {
            Error::InvalidOption(format!(
                "parameter {} has type {type_name}, which Lookahead cannot interpolate",
                p.name
            ))
        };
        let stored = stored_value(p.data_type, self.alpha).ok_or_else(unsupported)?;
        if stored == 0.0 {
            return Err(Error::InvalidOption(format!(
                "alpha {:?} rounds to 0 in {type_name} (the type of weight {}); choose a larger alpha",
                self.alpha, p.name
            )));
        }
        if stored == 1.0 && self.alpha != 1.0 {
            return Err(Error::InvalidOption(format!(
                "alpha {:?} rounds to 1 in {type_name} (the type of weight {}); pass --alpha 1 or a smaller alpha",
                self.alpha, p.name
            )));
        }
        e.scalar(p.data_type, self.alpha, "alpha")
            .ok_or_else(unsupported)
    }
}

impl Scheme for Lookahead {
    fn name(&self) -> &'static str {
        ENTRY.name
    }

    fn title(&self) -> &'static str {
        "Lookahead"
    }

    fn describe(&self) -> String {
        format!("Lookahead k={} alpha={}", self.k, self.alpha)
    }

    fn default_eval_weights(&self) -> EvalWeights {
        EvalWeights::Current
    }

    fn update_lines(&self) -> Vec<String> {
        if self.alpha == 1.0 {
            vec!["slow ← fast (α = 1)".into()]
        } else {
            vec![
                format!("slow ← slow + α·(fast − slow), α = {}", self.alpha),
                "fast ← slow".into(),
            ]
        }
    }

    fn settings(&self) -> Map<String, Value> {
        let mut settings = Map::new();
        settings.insert("k".into(), json!(self.k));
        settings.insert("alpha".into(), json!(self.alpha));
        if self.inner_state != InnerState::Keep {
            settings.insert("inner_state".into(), json!(self.inner_state.id()));
        }
        settings
    }

    fn inner_state(&self) -> InnerState {
        self.inner_state
    }

    fn inner_state_slots(&self, slot: InnerSlot) -> &'static [&'static str] {
        match (self.inner_state, slot) {
            (InnerState::Pullback, InnerSlot::Momentum) => &["cached_momentum"],
            _ => &[],
        }
    }

    fn sync_inner(
        &self,
        e: &mut Emitter,
        p: Param,
        slot: InnerSlot,
        value: &str,
        cache: &[String],
    ) -> Result<Synced> {
        let unchanged = Synced {
            fast: value.to_string(),
            state: cache.to_vec(),
        };
        match (self.inner_state, slot) {
            (InnerState::Keep, _) => Ok(unchanged),
            (InnerState::Reset, _) => Ok(Synced {
                fast: zeros_like(e, value, p.data_type, p.name)?,
                state: cache.to_vec(),
            }),
            // The authors' pullback: m <- alpha * m + (1 - alpha) * m_cached; m_cached <- m.
            (InnerState::Pullback, InnerSlot::Momentum) => {
                let cached = cache.first().ok_or_else(|| Error::Validation {
                    graph: p.name.to_string(),
                    reason: "pullback needs the cached momentum".into(),
                })?;
                if self.alpha == 1.0 {
                    return Ok(Synced {
                        fast: value.to_string(),
                        state: vec![value.to_string()],
                    });
                }
                // cached + alpha * (m - cached): the same interpolation, and rounding, as the
                // weights'.
                let alpha = self.alpha_constant(e, p)?;
                let diff = e.op("Sub", &[value, cached], &format!("diff__{}", p.name));
                let step = e.op("Mul", &[&alpha, &diff], &format!("scaled__{}", p.name));
                let pulled = e.op("Add", &[cached, &step], &format!("pulled__{}", p.name));
                Ok(Synced {
                    fast: pulled.clone(),
                    state: vec![pulled],
                })
            }
            (InnerState::Pullback, _) => Ok(unchanged),
        }
    }

    fn schedule(&self) -> Schedule {
        Schedule::every(self.k)
    }

    fn moves_weights(&self) -> bool {
        true
    }

    fn state_slots(&self) -> &'static [&'static str] {
        &["slow"]
    }

    fn sync(
        &self,
        e: &mut Emitter,
        p: Param,
        fast: &str,
        state: &[String],
        _scalars: &[String],
    ) -> Result<Synced> {
        let slow = super::slot(state, 0, p)?.as_str();
        if self.alpha == 1.0 {
            // slow + 1 * (fast - slow) can round differently from fast: copy instead, so that
            // alpha = 1 gives back the inner optimizer exactly.
            return Ok(Synced {
                fast: fast.to_string(),
                state: vec![fast.to_string()],
            });
        }
        let alpha = self.alpha_constant(e, p)?;
        let diff = e.op("Sub", &[fast, slow], &format!("diff__{}", p.name));
        let step = e.op("Mul", &[&alpha, &diff], &format!("scaled__{}", p.name));
        let slow_new = e.op("Add", &[slow, &step], &format!("slow_new__{}", p.name));
        Ok(Synced {
            fast: slow_new.clone(),
            state: vec![slow_new],
        })
    }

    fn host_sync(
        &self,
        p: Param,
        fast: &[f64],
        state: &[Vec<f64>],
        _scalars: &[f64],
    ) -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
        super::same_lengths(p, fast, state)?;
        let slow = super::slot(state, 0, p)?;
        // After a sync the fast and slow weights are equal.
        let synced = if self.alpha == 1.0 {
            fast.to_vec()
        } else {
            self.interpolate(p, fast, slow)?
        };
        Ok((synced.clone(), vec![synced]))
    }
}

impl Lookahead {
    /// `slow + alpha * (fast - slow)` element by element, each operation rounded to the type as
    /// the sync's Sub, Mul and Add nodes round it.
    fn interpolate(&self, p: Param, fast: &[f64], slow: &[f64]) -> Result<Vec<f64>> {
        let unsupported = || {
            Error::InvalidOption(format!(
                "parameter {} has type {}, which Lookahead cannot interpolate",
                p.name,
                dtype::name(p.data_type)
            ))
        };
        let alpha = stored_value(p.data_type, self.alpha).ok_or_else(unsupported)?;
        let round = super::rounder(p);
        Ok(fast
            .iter()
            .zip(slow)
            .map(|(&f, &s)| round(s + round(alpha * round(f - s))))
            .collect())
    }
}

/// The value `alpha` takes once stored in a tensor of `data_type` (None: not a floating-point type).
pub(crate) fn stored_value(data_type: i32, alpha: f64) -> Option<f64> {
    crate::io::values::round(data_type, alpha)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::names::NameGenerator;
    use crate::io::dtype::code;

    #[test]
    fn options_are_validated() {
        assert!(Lookahead::new(1, 1.0).is_ok());
        assert!(Lookahead::new(5, 0.5).is_ok());
        assert!(Lookahead::new(0, 0.5).is_err());
        assert!(Lookahead::new(5, 0.0).is_err());
        assert!(Lookahead::new(5, 1.5).is_err());
        assert!(Lookahead::new(5, f64::NAN).is_err());
        assert!(Lookahead::new(5, -0.1).is_err());
    }

    #[test]
    fn stored_alpha_rounds_like_the_tensor() {
        assert_eq!(stored_value(code::FLOAT16, 0.5), Some(0.5));
        assert_eq!(stored_value(code::FLOAT16, 1e-8), Some(0.0));
        assert_eq!(stored_value(code::FLOAT16, 0.99999), Some(1.0));
        assert_eq!(stored_value(code::FLOAT, 1e-50), Some(0.0));
        assert_eq!(stored_value(code::BFLOAT16, 0.5), Some(0.5));
        assert_eq!(stored_value(code::DOUBLE, 1e-300), Some(1e-300));
        assert_eq!(stored_value(code::INT64, 0.5), None);
        assert!((stored_value(code::FLOAT16, 0.8).unwrap() - 0.7998046875).abs() < 1e-12);
    }

    #[test]
    fn sync_is_slow_plus_alpha_times_the_difference() {
        let mut names = NameGenerator::empty();
        let mut e = Emitter::new(&mut names, "x__");
        let p = Param {
            name: "W",
            data_type: code::FLOAT,
        };
        let synced = Lookahead::new(5, 0.5)
            .unwrap()
            .sync(&mut e, p, "W_new", &["S".into()], &[])
            .unwrap();
        let ops: Vec<String> = e
            .take_nodes()
            .iter()
            .map(|n| format!("{}({})", n.op_type(), n.input.join(",")))
            .collect();
        assert_eq!(
            ops,
            [
                "Sub(W_new,S)",
                "Mul(x__alpha,x__diff__W)",
                "Add(S,x__scaled__W)"
            ]
        );
        assert_eq!(synced.fast, synced.state[0]);
        // alpha = 1: a copy, no arithmetic.
        let synced = Lookahead::new(5, 1.0)
            .unwrap()
            .sync(&mut e, p, "W_new", &["S".into()], &[])
            .unwrap();
        assert_eq!(
            synced,
            Synced {
                fast: "W_new".into(),
                state: vec!["W_new".into()]
            }
        );
        assert!(e.take_nodes().is_empty());
        let err = Lookahead::new(5, 1e-8)
            .unwrap()
            .sync(
                &mut e,
                Param {
                    name: "H",
                    data_type: code::FLOAT16,
                },
                "H_new",
                &["S".into()],
                &[],
            )
            .unwrap_err();
        assert!(err.to_string().contains("rounds to 0 in float16"), "{err}");
    }

    #[test]
    fn final_values_fold_a_pending_sync() {
        let l = Lookahead::new(5, 0.5).unwrap();
        let p = Param {
            name: "W",
            data_type: code::FLOAT,
        };
        let (fast, slow) = (vec![1.0, 3.0], vec![vec![0.0, 1.0]]);
        for weights in [EvalWeights::Current, EvalWeights::Averaged] {
            assert_eq!(
                l.final_values(p, &fast, &slow, &[], true, weights).unwrap(),
                vec![0.5, 2.0]
            );
        }
        assert_eq!(
            l.final_values(p, &fast, &slow, &[], false, EvalWeights::Current)
                .unwrap(),
            fast
        );
        assert_eq!(
            l.final_values(p, &fast, &slow, &[], false, EvalWeights::Averaged)
                .unwrap(),
            slow[0]
        );
        // float16: each operation rounds to half precision.
        let h = Param {
            name: "H",
            data_type: code::FLOAT16,
        };
        let got = Lookahead::new(5, 0.8)
            .unwrap()
            .final_values(h, &[1.0], &[vec![0.0]], &[], true, EvalWeights::Current)
            .unwrap();
        assert_eq!(got, vec![0.7998046875]);
    }
}
