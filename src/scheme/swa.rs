//! Stochastic weight averaging (Izmailov et al. 2018; torch `swa_utils.AveragedModel`, tfa
//! `SWA`): after optimizer step t >= start with (t - start) % every == 0,
//! `n <- n + 1; swa <- swa + (p_t - swa) / n`, so the first sample makes swa = p_start; before
//! it the average is the initial weights. Training continues from p; evaluation and exports read
//! the average (by default).
//!
//! The sample count n is one float32 for the whole set (exact up to 2^24 samples). The update is
//! computed as `(1 - w) * swa + w * p` with `w = 1 / n`: the same mean, and exactly p at the
//! first sample (w = 1).

use serde_json::{Map, Value, json};

use super::registry::{OptionId, SchemeEntry, SchemeOptions, setting};
use super::{EvalWeights, HostPrepared, Param, Prepared, Schedule, Scheme, Synced};
use crate::error::{Error, Result};
use crate::generated::onnx::tensor_proto::DataType;
use crate::graph::build::Node;
use crate::graph::emit::Emitter;

pub const ENTRY: SchemeEntry = SchemeEntry {
    name: "swa",
    options: &[OptionId::SwaStart, OptionId::Every],
    from_options: |o: &SchemeOptions| {
        let start = o.swa_start.ok_or_else(|| {
            Error::InvalidOption(
                "the swa scheme needs --swa-start S (the optimizer step of the first sample, >= 1)"
                    .into(),
            )
        })?;
        Ok(Box::new(Swa::new(start, o.every.unwrap_or(1))?))
    },
    from_settings: |settings| {
        let start = setting(settings, "swa_start", Value::as_u64)?;
        let every = setting(settings, "every", Value::as_u64)?;
        Ok(Box::new(Swa::new(start, every)?))
    },
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Swa {
    pub start: u64,
    pub every: u64,
}

impl Swa {
    pub fn new(start: u64, every: u64) -> Result<Self> {
        if start < 1 {
            return Err(Error::InvalidOption(format!(
                "swa_start must be an integer >= 1, got {start}"
            )));
        }
        if every < 1 {
            return Err(Error::InvalidOption(format!(
                "every must be an integer >= 1, got {every}"
            )));
        }
        Ok(Swa { start, every })
    }
}

/// (1 - w, w) of a new sample when `samples` were taken before, in float32 as the graph has them.
fn sample_weights(samples: f64) -> (f64, f64) {
    let f32r = |x: f64| f64::from(x as f32);
    let count = f32r(samples + 1.0);
    let w = f32r(1.0 / count);
    (f32r(1.0 - w), w)
}

impl Scheme for Swa {
    fn name(&self) -> &'static str {
        ENTRY.name
    }

    fn title(&self) -> &'static str {
        "SWA"
    }

    fn describe(&self) -> String {
        format!("SWA start={} every={}", self.start, self.every)
    }

    fn update_lines(&self) -> Vec<String> {
        vec![
            "samples ← samples + 1".into(),
            "swa ← swa + (weight − swa) / samples".into(),
        ]
    }

    fn settings(&self) -> Map<String, Value> {
        let mut settings = Map::new();
        settings.insert("swa_start".into(), json!(self.start));
        settings.insert("every".into(), json!(self.every));
        settings
    }

    fn schedule(&self) -> Schedule {
        Schedule {
            first: self.start,
            period: self.every,
        }
    }

    fn default_eval_weights(&self) -> EvalWeights {
        EvalWeights::Averaged
    }

    fn state_slots(&self) -> &'static [&'static str] {
        &["swa"]
    }

    fn shared_slots(&self) -> &'static [&'static str] {
        &["samples"]
    }

    fn prepare(&self, e: &mut Emitter, shared: &[String]) -> Result<Prepared> {
        let samples = shared.first().ok_or_else(|| Error::Validation {
            graph: "swa".into(),
            reason: "SWA needs its sample count".into(),
        })?;
        let one = e
            .scalar(DataType::Float as i32, 1.0, "one")
            .ok_or_else(|| Error::InvalidOption("float32 constant".into()))?;
        let count = e.op("Add", &[samples, &one], "samples_next");
        let w = e.op("Div", &[&one, &count], "sample_weight");
        let keep = e.op("Sub", &[&one, &w], "average_weight");
        Ok(Prepared {
            scalars: vec![keep, w],
            shared: vec![count],
        })
    }

    fn host_prepare(&self, shared: &[f64]) -> Result<HostPrepared> {
        let samples = *shared.first().ok_or_else(|| Error::Validation {
            graph: "swa".into(),
            reason: "SWA needs its sample count".into(),
        })?;
        let (keep, w) = sample_weights(samples);
        Ok(HostPrepared {
            scalars: vec![keep, w],
            shared: vec![f64::from((samples + 1.0) as f32)],
        })
    }

    fn sync(
        &self,
        e: &mut Emitter,
        p: Param,
        fast: &str,
        state: &[String],
        scalars: &[String],
    ) -> Result<Synced> {
        let swa = super::slot(state, 0, p)?;
        let [keep, w] = scalars else {
            return Err(Error::Validation {
                graph: p.name.to_string(),
                reason: "SWA needs the sample weights".into(),
            });
        };
        // The weights are float32; a parameter of another type gets them in its own.
        let (keep, w) = if p.data_type == DataType::Float as i32 {
            (keep.clone(), w.clone())
        } else {
            let cast = |e: &mut Emitter, x: &str, hint: &str| {
                let out = e.fresh(&format!("{hint}__{}", p.name));
                e.node(
                    Node::new("Cast")
                        .inputs([x])
                        .outputs([&out])
                        .attr_int("to", i64::from(p.data_type))
                        .build(),
                );
                out
            };
            (cast(e, keep, "average_weight"), cast(e, w, "sample_weight"))
        };
        let swa_new = blend(e, p, (&keep, swa), (&w, fast), "swa");
        Ok(Synced {
            fast: fast.to_string(),
            state: vec![swa_new],
        })
    }

    fn host_sync(
        &self,
        p: Param,
        fast: &[f64],
        state: &[Vec<f64>],
        scalars: &[f64],
    ) -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
        super::same_lengths(p, fast, state)?;
        let swa = super::slot(state, 0, p)?;
        let &[keep, w] = scalars else {
            return Err(Error::Validation {
                graph: p.name.to_string(),
                reason: "SWA needs the sample weights".into(),
            });
        };
        let round = super::rounder(p);
        let swa_new = host_blend(p, round(keep), swa, round(w), fast);
        Ok((fast.to_vec(), vec![swa_new]))
    }
}

/// Emits `a * x + b * y` (`Mul`, `Mul`, `Add`) for parameter `p`: the blend SWA updates its
/// average with. `a`, `b` are names of scalars of the parameter's type.
fn blend(
    e: &mut Emitter,
    p: Param,
    (a, x): (&str, &str),
    (b, y): (&str, &str),
    role: &str,
) -> String {
    let kept = e.op("Mul", &[a, x], &format!("{role}_kept__{}", p.name));
    let taken = e.op("Mul", &[b, y], &format!("{role}_taken__{}", p.name));
    e.op("Add", &[&kept, &taken], &format!("{role}_new__{}", p.name))
}

/// `blend` on the host, element by element, each operation rounded to the parameter's type as
/// the nodes round it (`a`, `b` already values of that type).
fn host_blend(p: Param, a: f64, xs: &[f64], b: f64, ys: &[f64]) -> Vec<f64> {
    let round = super::rounder(p);
    xs.iter()
        .zip(ys)
        .map(|(&x, &y)| round(round(a * x) + round(b * y)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::dtype::code;

    const W: Param = Param {
        name: "W",
        data_type: code::FLOAT,
    };

    #[test]
    fn options_are_validated() {
        assert!(Swa::new(1, 1).is_ok());
        assert!(Swa::new(0, 1).is_err());
        assert!(Swa::new(3, 0).is_err());
    }

    #[test]
    fn samples_average_equally_and_the_first_is_copied() {
        let swa = Swa::new(2, 1).unwrap();
        let (mut average, mut samples) = (vec![100.0, -7.0], 0.0);
        for x in [[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]] {
            let prepared = swa.host_prepare(&[samples]).unwrap();
            let (fast, state) = swa
                .host_sync(W, &x, std::slice::from_ref(&average), &prepared.scalars)
                .unwrap();
            assert_eq!(fast, x);
            average = state[0].clone();
            samples = prepared.shared[0];
            if samples == 1.0 {
                assert_eq!(average, x, "the first sample is copied exactly");
            }
        }
        assert_eq!(samples, 3.0);
        assert_eq!(average, vec![3.0, 5.0]);
    }
}
