"""NumPy references of the weight-averaging schemes EMA and SWA, on top of reference.py.

Both leave training to the inner optimizer: the weights a model trains on are those of the plain
run (reference_run without k), and the average is computed from them after each optimizer step
(README "EMA and SWA of the weights"):
- EMA(decay D, every N): ema starts as the initial weights; after step t with t % N == 0:
  ema <- D * ema + (1 - D) * p_t, computed as torch's lerp does (and the graph):
  ema + float32(1 - D) * (p_t - ema).
- SWA(start S, every C): the average starts as the initial weights; after step t >= S with
  (t - S) % C == 0: n <- n + 1, w = float32(1 / n), swa <- (1 - w) * swa + w * p_t (in float32, so
  the first sample is exactly p_S).
Only the wrapped trainable parameters are averaged; the averaged model reads the current value of
every other parameter.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .model import MlpSpec
from .reference import OptimizerConfig, Trajectory, reference_run

F32 = np.float32


@dataclass(frozen=True)
class Averaging:
    """One scheme with its settings: scheme "ema" (decay, every) or "swa" (swa_start, every)."""

    scheme: str
    decay: float | None = None
    every: int = 1
    swa_start: int | None = None

    def __post_init__(self):
        assert self.scheme in ("ema", "swa"), self.scheme
        assert (self.decay is not None) == (self.scheme == "ema")
        assert (self.swa_start is not None) == (self.scheme == "swa")

    @property
    def id(self) -> str:
        if self.scheme == "ema":
            return f"ema-d{self.decay}-every{self.every}"
        return f"swa-start{self.swa_start}-every{self.every}"

    def rewrite_options(self) -> dict:
        """onnx_lookahead.rewrite's keyword arguments."""
        if self.scheme == "ema":
            return {"scheme": "ema", "decay": self.decay, "every": self.every}
        return {"scheme": "swa", "swa_start": self.swa_start, "every": self.every}

    def cli_flags(self) -> list[str]:
        if self.scheme == "ema":
            return ["--scheme", "ema", "--decay", str(self.decay), "--every", str(self.every)]
        return ["--scheme", "swa", "--swa-start", str(self.swa_start), "--every", str(self.every)]

    @property
    def settings(self) -> dict:
        if self.scheme == "ema":
            return {"decay": self.decay, "every": self.every}
        return {"swa_start": self.swa_start, "every": self.every}

    @property
    def description(self) -> str:
        if self.scheme == "ema":
            return f"EMA decay={self.decay} every={self.every}"
        return f"SWA start={self.swa_start} every={self.every}"

    # ----------------------------------------------------------------------------------- schedule
    @property
    def first(self) -> int:
        return self.every if self.scheme == "ema" else self.swa_start

    @property
    def period(self) -> int:
        return self.every

    def updates_at(self, t: int) -> bool:
        """Whether optimizer step t (counted from 1) updates the average."""
        return t >= self.first and (t - self.first) % self.period == 0

    def updates_after(self, t: int) -> int:
        """Updates done by the end of step t."""
        return 0 if t < self.first else (t - self.first) // self.period + 1

    def steps_to_update(self, t: int) -> int:
        """After step t: optimizer steps until the next update (0 when step t's is pending)."""
        if self.updates_at(t):
            return 0
        if t < self.first:
            return self.first - t
        return self.period - (t - self.first) % self.period

    def state_name(self, parameter: str) -> str:
        return f"lookahead__{self.scheme}__{parameter}"

    # ------------------------------------------------------------------------------- arithmetic
    def update(self, average: np.ndarray, p: np.ndarray, samples_before: int) -> np.ndarray:
        """The average after one update with the weights p (samples_before: SWA's n before it)."""
        dt = average.dtype.type
        if self.scheme == "ema":
            return (average + dt(1 - self.decay) * (p - average)).astype(average.dtype)
        w = dt(1) / dt(samples_before + 1)
        return (dt(dt(1) - w) * average + w * p).astype(average.dtype)


EMA_EVERY_1 = Averaging("ema", decay=0.9, every=1)
EMA_EVERY_3 = Averaging("ema", decay=0.9, every=3)
SWA_2_1 = Averaging("swa", swa_start=2, every=1)
SWA_4_2 = Averaging("swa", swa_start=4, every=2)
SCHEMES = [EMA_EVERY_1, EMA_EVERY_3, SWA_2_1, SWA_4_2]


def host_averages(avg: Averaging, initial: dict, params: list[dict], names) -> tuple[list[dict], list[int]]:
    """Averages of `names` after every step of a trajectory (params[t-1]: the weights after step t),
    starting from `initial`; -> (averages per step, samples per step)."""
    average = {n: np.array(initial[n], copy=True) for n in names}
    samples, out, counts = 0, [], []
    for t, p in enumerate(params, 1):
        if avg.updates_at(t):
            average = {n: avg.update(average[n], np.asarray(p[n]), samples) for n in names}
            samples += 1
        out.append({n: v.copy() for n, v in average.items()})
        counts.append(samples)
    return out, counts


@dataclass
class AveragedTrajectory:
    """plain: the inner optimizer's run (losses, eval losses and params at the current weights);
    averages[t-1]: the averages of the wrapped parameters after step t (update of step t included);
    at_averaged[t-1]: the whole model as evaluation reads it (averages, current weights elsewhere);
    eval_averaged[t-1]: the eval loss there; samples[t-1]: the updates done by step t."""

    plain: Trajectory
    averages: list[dict] = field(default_factory=list)
    at_averaged: list[dict] = field(default_factory=list)
    eval_averaged: list[float] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)

    @property
    def losses(self):
        return self.plain.losses

    @property
    def eval_current(self):
        return self.plain.eval_losses

    @property
    def params(self):
        return self.plain.params


def averaged_run(spec: MlpSpec, opt: OptimizerConfig, schedule, eval_batch, avg: Averaging,
                 wrapped=None) -> AveragedTrajectory:
    """The reference of a rewrite with `avg`: the plain NumPy run, averaged after every step.
    wrapped: the averaged parameters (default: every trainable one)."""
    plain = reference_run(spec, opt, schedule, eval_batch)
    names = list(spec.trainable if wrapped is None else wrapped)
    averages, samples = host_averages(avg, spec.init_params(), plain.params, names)
    out = AveragedTrajectory(plain, averages, samples=samples)
    for p, a in zip(plain.params, averages):
        model = {**p, **a}
        out.at_averaged.append(model)
        out.eval_averaged.append(float(spec.compute_loss(spec.forward(model, eval_batch[0]), eval_batch[1])))
    return out
