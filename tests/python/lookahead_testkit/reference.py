"""NumPy reference optimizers and the Lookahead reference loop every end-to-end test compares with.

The inner optimizers reproduce what ONNX Runtime's artifacts do, in float32:
- SGD: ORT's SGDOptimizerV2 from `generate_artifacts(optimizer=OptimType.SGD)`: p -= lr * g
  (no momentum, although the artifacts carry a momentum0 state).
- AdamW: ORT's AdamWOptimizer from `generate_artifacts(optimizer=onnxblock.optim.AdamW(...))`:
  adam_mode=1 (the Hugging Face variant: bias correction folded into the learning rate),
  correct_bias=1, eps=1e-6 added to sqrt(v) *after* the square root, and decoupled weight decay
  applied after the update (p -= lr * wd * p). The step count t starts at 1.
test_harness.py checks both against stock (un-rewritten) artifacts.

Lookahead follows README.md, "Lookahead semantics" (Zhang et al. 2019, Algorithm 1): slow weights
start as the initial weights, the inner optimizer keeps its state across syncs, and after inner
steps k, 2k, ...: slow <- slow + alpha * (fast - slow); fast <- slow. Only trainable parameters take
part; frozen ones are never touched.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .model import MlpSpec

F32 = np.float32


@dataclass(frozen=True)
class OptimizerConfig:
    """What the artifacts are generated with and what the reference runs: kind, lr, weight decay."""

    kind: str  # "adamw" or "sgd"
    lr: float
    weight_decay: float = 0.0

    def __post_init__(self):
        assert self.kind in ("adamw", "sgd"), self.kind
        assert self.kind == "adamw" or self.weight_decay == 0.0, "ORT's SGD has no weight decay"

    def make(self):
        """A fresh NumPy inner optimizer (its own zeroed state)."""
        return AdamW(self.lr, self.weight_decay) if self.kind == "adamw" else SGD(self.lr)


ADAMW = OptimizerConfig("adamw", lr=0.01, weight_decay=0.01)
SGD_CFG = OptimizerConfig("sgd", lr=0.1)
OPTIMIZERS = {c.kind: c for c in (ADAMW, SGD_CFG)}


class SGD:
    def __init__(self, lr: float):
        self.lr = F32(lr)

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], t: int) -> None:
        for n, g in grads.items():
            params[n] = params[n] - self.lr * g


class AdamW:
    def __init__(self, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-6):
        self.lr, self.wd, self.eps = F32(lr), F32(weight_decay), F32(eps)
        self.b1, self.b2 = F32(betas[0]), F32(betas[1])
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], t: int) -> None:
        # bias corrections as ORT computes them: powers in double, the rest in float
        c1 = F32(1.0 - F32(float(self.b1) ** t))
        c2 = F32(1.0 - F32(float(self.b2) ** t))
        lr_t = self.lr * F32(np.sqrt(c2)) / c1
        for n, g in grads.items():
            m = self.m[n] = self.b1 * self.m.get(n, 0 * g) + (1 - self.b1) * g
            v = self.v[n] = self.b2 * self.v.get(n, 0 * g) + (1 - self.b2) * g * g
            p = params[n] - lr_t * m / (np.sqrt(v) + self.eps)
            params[n] = p - self.lr * self.wd * p


@dataclass
class Trajectory:
    """What a user of the training loop sees, step by step (index t-1 holds step t).

    losses[t-1][j]: loss of forward j of step t (the training graph's output);
    eval_losses[t-1]: eval-graph loss on the eval batch right after step t;
    params[t-1]: the weights the model holds after step t (after the sync on sync steps).
    slow[t-1]: the slow weights of the trainable parameters after step t (Lookahead runs only).
    """

    losses: list[list[float]] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)
    params: list[dict[str, np.ndarray]] = field(default_factory=list)
    slow: list[dict[str, np.ndarray]] = field(default_factory=list)


def reference_run(spec: MlpSpec, opt: OptimizerConfig, schedule, eval_batch,
                  k: int | None = None, alpha: float | None = None, wrapped=None,
                  inner_state: str = "keep", plain_steps: int = 0) -> Trajectory:
    """The reference loop of lookahead.md; k=None runs the plain inner optimizer.

    wrapped: the trainable parameters Lookahead wraps (default: all); the others follow the plain
    inner optimizer (rewrite --include/--exclude).

    inner_state="reset" (AdamW): at every sync the inner optimizer's moments restart at zero and its
    bias-correction count at 1 (optax reset_state), for all parameters.
    plain_steps: the first plain_steps steps run the plain inner optimizer (training before the
    rewrite); Lookahead starts from the weights and optimizer state they leave, its cycles counted
    from there.

    schedule[t-1] lists the batches of step t: the gradients of all its forwards are summed, as
    ORT's gradient accumulation does when a step has several forwards.
    """
    inner = opt.make()
    p = spec.init_params()
    wrapped = list(spec.trainable if wrapped is None else wrapped)
    slow = {n: p[n].copy() for n in wrapped}
    out = Trajectory()
    inner_t = 0  # the inner optimizer's own step count
    for t, batches in enumerate(schedule, 1):
        if t == plain_steps + 1:
            slow = {n: p[n].copy() for n in wrapped}
        since = t - plain_steps  # steps since Lookahead started (<= 0: before)
        losses, total = [], None
        for x, target in batches:
            loss, g = spec.loss_and_grads(p, x, target)
            losses.append(float(loss))
            total = g if total is None else {n: total[n] + g[n] for n in g}
        inner_t += 1
        inner.step(p, total, inner_t)
        if k is not None and since > 0 and since % k == 0:
            for n in wrapped:
                slow[n] = slow[n] + F32(alpha) * (p[n] - slow[n])
                p[n] = slow[n].copy()
            if inner_state == "reset":
                inner, inner_t = opt.make(), 0
            elif inner_state != "keep":
                raise ValueError(f"no reference for inner_state={inner_state!r}")
        out.losses.append(losses)
        out.eval_losses.append(float(spec.compute_loss(spec.forward(p, eval_batch[0]), eval_batch[1])))
        out.params.append({n: v.copy() for n, v in p.items()})
        out.slow.append({n: v.copy() for n, v in slow.items()})
    return out
