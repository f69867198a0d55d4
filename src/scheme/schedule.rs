//! When an averaging scheme updates: after optimizer step `first`, then every `period` steps
//! (Lookahead and EMA: first = period; SWA: first = the start step). Both formats count steps with
//! one counter, and a saved counter tells where training stands.
//!
//! ONNX Runtime artifacts hold a bounded float32 counter `c` (exact for any number of steps):
//! 0 before the first step, +1 per step; `c == first` means an update is pending (the next
//! training forward performs it), and the step after it continues at `first - period + 1`, so
//! `c` stays within `[first - period, first]` (`first - period`: an update applied on the host).
//! training_info models count steps on (int64) and update inside the step itself.

/// After which optimizer steps an update happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub first: u64,
    pub period: u64,
}

/// Where a saved counter puts training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Optimizer steps until the next update (0: one is pending).
    pub steps_to_update: u64,
    /// An update is pending: evaluation already sees it, the next training step applies it.
    pub pending: bool,
}

impl Schedule {
    /// Every `period` steps from the start.
    pub fn every(period: u64) -> Self {
        Schedule {
            first: period,
            period,
        }
    }

    /// The ORT counter's value after a pending update was applied on the host.
    pub fn ort_after_update(&self) -> f64 {
        self.first as f64 - self.period as f64
    }

    /// Where an ONNX Runtime counter value puts training. Err: what training writes instead.
    pub fn ort_position(&self, value: f64) -> Result<Position, String> {
        let (low, high) = (self.ort_after_update(), self.first as f64);
        if !(value.is_finite() && value.fract() == 0.0 && value >= low.min(0.0) && value <= high) {
            return Err(format!("a whole number from {} to {high}", low.min(0.0)));
        }
        let steps_to_update = (high - value) as u64;
        Ok(Position {
            steps_to_update,
            pending: steps_to_update == 0,
        })
    }

    /// Where a training_info step count puts training (the update of step `first`, `first +
    /// period`, ... happened inside that step). Err: what training writes instead.
    pub fn counted_position(&self, value: f64) -> Result<Position, String> {
        if !(value.is_finite() && value.fract() == 0.0 && value >= 0.0 && value < 2f64.powi(63)) {
            return Err("a whole number >= 0".into());
        }
        let step = value as u64;
        let steps_to_update = if step < self.first {
            self.first - step
        } else {
            self.period - (step - self.first) % self.period
        };
        Ok(Position {
            steps_to_update,
            pending: false,
        })
    }

    /// Updates applied after `steps` optimizer steps counted from the start.
    pub fn updates_after(&self, steps: u64) -> u64 {
        if steps < self.first {
            0
        } else {
            (steps - self.first) / self.period + 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ort_counter_positions() {
        let every5 = Schedule::every(5);
        assert_eq!(every5.ort_position(0.0).unwrap().steps_to_update, 5);
        assert_eq!(
            every5.ort_position(5.0).unwrap(),
            Position {
                steps_to_update: 0,
                pending: true
            }
        );
        for bad in [-1.0, 6.0, 2.5, f64::NAN, 1e30] {
            assert!(every5.ort_position(bad).is_err(), "{bad}");
        }
        // SWA from step 3 every 10: the counter runs 0..3, then -6..3.
        let swa = Schedule {
            first: 3,
            period: 10,
        };
        assert_eq!(swa.ort_position(-6.0).unwrap().steps_to_update, 9);
        assert_eq!(swa.ort_position(-7.0).unwrap().steps_to_update, 10);
        assert!(swa.ort_position(-8.0).is_err());
    }

    #[test]
    fn counted_positions() {
        let swa = Schedule {
            first: 3,
            period: 2,
        };
        let to_update: Vec<u64> = (0..8)
            .map(|s| swa.counted_position(s as f64).unwrap().steps_to_update)
            .collect();
        assert_eq!(to_update, [3, 2, 1, 2, 1, 2, 1, 2]);
        assert_eq!(
            (0..8).map(|s| swa.updates_after(s)).collect::<Vec<_>>(),
            [0, 0, 0, 1, 1, 2, 2, 3]
        );
        assert!(swa.counted_position(-1.0).is_err());
    }
}
