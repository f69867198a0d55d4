//! An exponential moving average of the weights (timm `ModelEmaV3`, Keras `use_ema`, torch
//! `AveragedModel` with `get_ema_multi_avg_fn`, TF `ExponentialMovingAverage`): the average starts
//! as the initial weights; after optimizer step t with t % every == 0,
//! `ema <- decay * ema + (1 - decay) * p_t`. Training continues from p; only evaluation and
//! exports read the average (by default).
//!
//! Computed as torch's and timm's `lerp` computes it, `ema + (1 - decay) * (p - ema)`: the same
//! average, and in ONNX Runtime artifacts an increment added in place (`Sub`, `Mul`, one
//! accumulate), with no copy of the new average.

use serde_json::{Map, Value, json};

use super::registry::{OptionId, SchemeEntry, SchemeOptions, setting};
use super::{EvalWeights, InPlace, Param, Schedule, Scheme, Synced};
use crate::error::{Error, Result};
use crate::graph::emit::Emitter;

pub const ENTRY: SchemeEntry = SchemeEntry {
    name: "ema",
    options: &[OptionId::Decay, OptionId::Every],
    from_options: |o: &SchemeOptions| {
        let decay = o.decay.ok_or_else(|| {
            Error::InvalidOption("the ema scheme needs --decay D (0 < D < 1), e.g. 0.999".into())
        })?;
        Ok(Box::new(Ema::new(decay, o.every.unwrap_or(1))?))
    },
    from_settings: |settings| {
        let decay = setting(settings, "decay", Value::as_f64)?;
        let every = setting(settings, "every", Value::as_u64)?;
        Ok(Box::new(Ema::new(decay, every)?))
    },
};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ema {
    pub decay: f64,
    pub every: u64,
}

impl Ema {
    pub fn new(decay: f64, every: u64) -> Result<Self> {
        if !(decay.is_finite() && decay > 0.0 && decay < 1.0) {
            return Err(Error::InvalidOption(format!(
                "decay must satisfy 0 < decay < 1, got {decay:?}"
            )));
        }
        if every < 1 {
            return Err(Error::InvalidOption(format!(
                "every must be an integer >= 1, got {every}"
            )));
        }
        Ok(Ema { decay, every })
    }

    /// 1 - decay as the parameter's type stores it, the one constant of the update; refused when
    /// the type rounds decay or 1 - decay to 0 or 1 (the average would never, or always, move).
    fn stored_rest(&self, p: Param) -> Result<f64> {
        super::stored_fraction(p, self.decay, "decay")?;
        super::stored_fraction(p, 1.0 - self.decay, "1 - decay")
    }
}

impl Scheme for Ema {
    fn name(&self) -> &'static str {
        ENTRY.name
    }

    fn title(&self) -> &'static str {
        "EMA"
    }

    fn describe(&self) -> String {
        format!("EMA decay={} every={}", self.decay, self.every)
    }

    fn update_lines(&self) -> Vec<String> {
        vec![format!(
            "ema ← ema + (1 − D)·(weight − ema), D = {}",
            self.decay
        )]
    }

    fn settings(&self) -> Map<String, Value> {
        let mut settings = Map::new();
        settings.insert("decay".into(), json!(self.decay));
        settings.insert("every".into(), json!(self.every));
        settings
    }

    fn schedule(&self) -> Schedule {
        Schedule::every(self.every)
    }

    fn default_eval_weights(&self) -> EvalWeights {
        EvalWeights::Averaged
    }

    fn state_slots(&self) -> &'static [&'static str] {
        &["ema"]
    }

    fn sync(
        &self,
        e: &mut Emitter,
        p: Param,
        fast: &str,
        state: &[String],
        scalars: &[String],
    ) -> Result<Synced> {
        let (fast, writes) = self.sync_in_place(e, p, fast, state, scalars)?;
        let ema = super::slot(state, 0, p)?;
        let ema_new = match writes.into_iter().next() {
            Some(InPlace::Add(step)) => e.op("Add", &[ema, &step], &format!("ema_new__{}", p.name)),
            _ => ema.clone(),
        };
        Ok(Synced {
            fast,
            state: vec![ema_new],
        })
    }

    fn sync_in_place(
        &self,
        e: &mut Emitter,
        p: Param,
        fast: &str,
        state: &[String],
        _scalars: &[String],
    ) -> Result<(String, Vec<InPlace>)> {
        let ema = super::slot(state, 0, p)?;
        let rest = e
            .scalar(p.data_type, self.stored_rest(p)?, "one_minus_decay")
            .ok_or_else(|| super::unsupported_type(p))?;
        let gap = e.op("Sub", &[fast, ema], &format!("ema_gap__{}", p.name));
        let step = e.op("Mul", &[&rest, &gap], &format!("ema_step__{}", p.name));
        Ok((fast.to_string(), vec![InPlace::Add(step)]))
    }

    fn host_sync(
        &self,
        p: Param,
        fast: &[f64],
        state: &[Vec<f64>],
        _scalars: &[f64],
    ) -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
        super::same_lengths(p, fast, state)?;
        let ema = super::slot(state, 0, p)?;
        let rest = self.stored_rest(p)?;
        let round = super::rounder(p);
        let ema_new = ema
            .iter()
            .zip(fast)
            .map(|(&a, &x)| round(a + round(rest * round(x - a))))
            .collect();
        Ok((fast.to_vec(), vec![ema_new]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::names::NameGenerator;
    use crate::io::dtype::code;

    const W: Param = Param {
        name: "W",
        data_type: code::FLOAT,
    };

    #[test]
    fn options_are_validated() {
        assert!(Ema::new(0.999, 1).is_ok());
        for (decay, every) in [(0.0, 1), (1.0, 1), (-0.5, 1), (f64::NAN, 1), (0.9, 0)] {
            assert!(Ema::new(decay, every).is_err(), "{decay} {every}");
        }
    }

    #[test]
    fn an_update_blends_the_average_and_leaves_the_weight() {
        let mut names = NameGenerator::empty();
        let mut e = Emitter::new(&mut names, "x__");
        let ema = Ema::new(0.75, 2).unwrap();
        let synced = ema.sync(&mut e, W, "W_new", &["A".into()], &[]).unwrap();
        assert_eq!(synced.fast, "W_new");
        let ops: Vec<String> = e
            .take_nodes()
            .iter()
            .map(|n| format!("{}({})", n.op_type(), n.input.join(",")))
            .collect();
        assert_eq!(
            ops,
            [
                "Sub(W_new,A)",
                "Mul(x__one_minus_decay,x__ema_gap__W)",
                "Add(A,x__ema_step__W)"
            ]
        );
        // In place: the increment alone, added to the average.
        let (fast, writes) = ema
            .sync_in_place(&mut e, W, "W_new", &["A".into()], &[])
            .unwrap();
        assert_eq!(fast, "W_new");
        assert!(matches!(writes.as_slice(), [InPlace::Add(_)]), "{writes:?}");
        let (fast, state) = ema.host_sync(W, &[4.0], &[vec![0.0]], &[]).unwrap();
        assert_eq!((fast, state), (vec![4.0], vec![vec![1.0]]));
        // Evaluation at a pending update sees it; the current weights are the weight.
        let at = |w| {
            ema.final_values(W, &[4.0], &[vec![0.0]], &[], true, w)
                .unwrap()
        };
        assert_eq!(at(EvalWeights::Averaged), vec![1.0]);
        assert_eq!(at(EvalWeights::Current), vec![4.0]);
    }

    #[test]
    fn a_decay_the_type_cannot_hold_is_refused() {
        let h = Param {
            name: "H",
            data_type: code::FLOAT16,
        };
        let err = Ema::new(0.99999, 1)
            .unwrap()
            .host_sync(h, &[1.0], &[vec![0.0]], &[])
            .unwrap_err();
        assert!(err.to_string().contains("rounds to 1 in float16"), "{err}");
    }
}
