"""NumPy reference for the models of ``tinfo_models``: losses, gradients, optimizers, Lookahead.

Everything here is computed in float64 from the plain ``ModelSpec`` description, independently
of the ONNX graphs, so agreement with a runtime (float32) within 1e-5 checks the graphs, the
runtime's semantics and the lowering at once.

The optimizer rules are written from the operator definitions of ai.onnx.preview.training
(Momentum, Adam, Adagrad); Lookahead follows README.md ("Lookahead semantics"): slow weights start as the
initial weights, after inner steps k, 2k, ... ``slow += alpha * (fast - slow); fast = slow``, and
the inner optimizer state is kept across syncs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

import numpy as np

from tinfo_models import OPTIMIZER_SLOTS, AlgorithmSpec, Head, ModelSpec


def forward(head: Head, weights: Mapping[str, np.ndarray], x: np.ndarray) -> Dict[str, np.ndarray]:
    """All activations of ``head`` (z and relu outputs) by name."""
    values = {"X": np.asarray(x, np.float64)}
    for layer in head.layers:
        values[layer.z] = values[layer.x] @ weights[layer.w] + weights[layer.b]
        if layer.relu:
            values[layer.relu] = np.maximum(values[layer.z], 0.0)
    return values


def loss(head: Head, weights: Mapping[str, np.ndarray], feeds: Mapping[str, np.ndarray]) -> float:
    """Mean squared error of the head on a batch."""
    values = forward(head, weights, feeds["X"])
    return float(np.mean((values[head.pred] - feeds[head.label]) ** 2))


def mse_from_predictions(prediction: np.ndarray, label: np.ndarray) -> float:
    """The same loss computed from predictions, e.g. those returned by ``run_inference``."""
    return float(np.mean((np.asarray(prediction, np.float64) - np.asarray(label, np.float64)) ** 2))


def loss_and_gradients(
    head: Head, weights: Mapping[str, np.ndarray], feeds: Mapping[str, np.ndarray]
) -> tuple[float, Dict[str, np.ndarray]]:
    """Loss and the gradient of every weight of ``head`` (back-propagation by hand)."""
    values = forward(head, weights, feeds["X"])
    diff = values[head.pred] - np.asarray(feeds[head.label], np.float64)
    upstream = 2.0 * diff / diff.size
    gradients: Dict[str, np.ndarray] = {}
    for index in reversed(range(len(head.layers))):
        layer = head.layers[index]
        gradients[layer.w] = values[layer.x].T @ upstream
        gradients[layer.b] = upstream.sum(axis=0)
        if index > 0:
            previous = head.layers[index - 1]
            upstream = (upstream @ weights[layer.w].T) * (values[previous.z] > 0)
    return float(np.mean(diff**2)), gradients


# ---------------------------------------------------------------------------------------------
# Optimizer update rules (one tensor at a time; the operators apply them tensor by tensor)
# ---------------------------------------------------------------------------------------------


def momentum_update(r, t, x, g, v, alpha, beta, mode, norm_coefficient):
    """Momentum: beta is replaced by 1 on the first iteration (t == 0)."""
    g_reg = norm_coefficient * x + g
    beta_adjusted = beta if t > 0 else 1.0
    v_new = alpha * v + beta_adjusted * g_reg
    if mode == "nesterov":
        x_new = x - r * (g_reg + alpha * v_new)
    else:
        x_new = x - r * v_new
    return x_new, v_new


def adam_update(r, t, x, g, v, h, alpha, beta, epsilon, norm_coefficient, norm_coefficient_post):
    """Adam: bias correction of the learning rate only when t > 0, post-update weight decay."""
    g_reg = norm_coefficient * x + g
    v_new = alpha * v + (1 - alpha) * g_reg
    h_new = beta * h + (1 - beta) * g_reg * g_reg
    r_adjusted = r * np.sqrt(1 - beta**t) / (1 - alpha**t) if t > 0 else r
    x_new = x - r_adjusted * v_new / (np.sqrt(h_new) + epsilon)
    return (1 - norm_coefficient_post) * x_new, v_new, h_new


def adagrad_update(r, t, x, g, h, decay_factor, epsilon, norm_coefficient):
    """Adagrad: learning rate decays as r / (1 + t * decay_factor)."""
    rate = r / (1 + t * decay_factor)
    g_reg = norm_coefficient * x + g
    h_new = h + g_reg * g_reg
    return x - rate * g_reg / (np.sqrt(h_new) + epsilon), h_new


@dataclass
class OptimizerState:
    """Per-algorithm optimizer state: slot tensors per weight and the update count T."""

    slots: Dict[str, Dict[str, np.ndarray]] = field(default_factory=dict)  # slot -> weight -> value
    count: int = 0


def new_optimizer_state(algorithm: AlgorithmSpec, weights: Mapping[str, np.ndarray]) -> OptimizerState:
    slots = {slot: {w: np.zeros_like(weights[w]) for w in algorithm.weights} for slot in OPTIMIZER_SLOTS[algorithm.optimizer.kind]}
    return OptimizerState(slots=slots, count=0)


def optimizer_step(
    algorithm: AlgorithmSpec,
    weights: Dict[str, np.ndarray],
    gradients: Mapping[str, np.ndarray],
    state: OptimizerState,
) -> None:
    """Apply one update of ``algorithm``'s optimizer to its weights, in place in the dicts."""
    opt = algorithm.optimizer
    a, t, r = opt.attrs, state.count, opt.lr
    for w in algorithm.weights:
        x, g = weights[w], gradients[w]
        if opt.kind == "sgd":
            weights[w] = x - r * g
        elif opt.kind == "momentum":
            weights[w], state.slots["V"][w] = momentum_update(
                r, t, x, g, state.slots["V"][w], a["alpha"], a["beta"], a["mode"], a["norm_coefficient"]
            )
        elif opt.kind == "adam":
            weights[w], state.slots["V"][w], state.slots["H"][w] = adam_update(
                r, t, x, g, state.slots["V"][w], state.slots["H"][w], a["alpha"], a["beta"],
                a["epsilon"], a["norm_coefficient"], a["norm_coefficient_post"],
            )
        elif opt.kind == "adagrad":
            weights[w], state.slots["H"][w] = adagrad_update(
                r, t, x, g, state.slots["H"][w], a["decay_factor"], a["epsilon"], a["norm_coefficient"]
            )
        else:
            raise ValueError(opt.kind)
    state.count += 1


# ---------------------------------------------------------------------------------------------
# Training loops
# ---------------------------------------------------------------------------------------------


@dataclass
class StepRecord:
    """What a runtime must reproduce after one step."""

    losses: Dict[str, float]  # algorithm loss outputs (before the update of that algorithm)
    weights: Dict[str, np.ndarray]  # all weights after the step
    eval_losses: Dict[str, float]  # per head label: loss of ModelProto.graph after the step


def _run(
    spec: ModelSpec,
    feeds: List[Mapping[str, np.ndarray]],
    eval_feeds: Optional[Mapping[str, np.ndarray]],
    k: Optional[int],
    alpha: float,
    initial_weights: Optional[Mapping[str, np.ndarray]] = None,
    wrapped: Optional[List[str]] = None,
    inner_state: str = "keep",
) -> List[StepRecord]:
    weights = {w: np.asarray(v, np.float64).copy() for w, v in (initial_weights or spec.initial_weights).items()}
    states = [new_optimizer_state(a, weights) for a in spec.algorithms]
    slow = {w: weights[w].copy() for w in spec.weight_names}  # phi_0 = theta_0
    counters = [0 for _ in spec.algorithms]
    cached_momentum = {w: np.zeros_like(weights[w]) for w in spec.weight_names}  # pullback
    records = []
    for feed in feeds:
        losses = {}
        for index, algorithm in enumerate(spec.algorithms):
            losses[algorithm.loss], gradients = loss_and_gradients(algorithm.head, weights, feed)
            optimizer_step(algorithm, weights, gradients, states[index])
            if k is None:
                continue
            # Lookahead lives inside each algorithm: its weights sync right after its own inner
            # step, before the next algorithm of the same iteration runs.
            counters[index] += 1
            if counters[index] % k == 0:
                synced = [w for w in algorithm.weights if wrapped is None or w in wrapped]
                for w in synced:
                    slow[w] = slow[w] + alpha * (weights[w] - slow[w])
                    weights[w] = slow[w].copy()
                _sync_inner_state(inner_state, states[index], synced, cached_momentum, alpha)
        eval_losses = {}
        if eval_feeds is not None:
            eval_losses = {head.label: loss(head, weights, eval_feeds) for head in spec.heads}
        records.append(StepRecord(losses, {w: v.copy() for w, v in weights.items()}, eval_losses))
    return records


def _sync_inner_state(policy: str, state: OptimizerState, synced: List[str], cached: Dict[str, np.ndarray],
                      alpha: float) -> None:
    """What a sync does to the inner optimizer's state (rewrite --inner-state).

    reset: the synced weights' moments/accumulators restart at zero and the optimizer's update
    count at 0, as a fresh optimizer (optax reset_state; the count is the node's, so every weight
    of the node is synced). pullback (the authors' code): the momentum (Adam: the first moment)
    is interpolated with the one cached at the previous sync (zero at first), which it replaces.
    """
    if policy == "reset":
        for slot in state.slots.values():
            for w in synced:
                slot[w] = np.zeros_like(slot[w])
        state.count = 0
    elif policy == "pullback":
        for w in synced:
            v = state.slots["V"]
            v[w] = cached[w] + alpha * (v[w] - cached[w])
            cached[w] = v[w].copy()
    elif policy != "keep":
        raise ValueError(policy)


def plain_reference_run(
    spec: ModelSpec,
    feeds: List[Mapping[str, np.ndarray]],
    eval_feeds: Optional[Mapping[str, np.ndarray]] = None,
    initial_weights: Optional[Mapping[str, np.ndarray]] = None,
) -> List[StepRecord]:
    """The model's own training, one record per feed.

    Algorithms run in order within a step and each sees the weights earlier ones just updated.
    ``initial_weights`` defaults to the values the initialization graphs produce.
    """
    return _run(spec, feeds, eval_feeds, None, 1.0, initial_weights)


def lookahead_reference_run(
    spec: ModelSpec,
    feeds: List[Mapping[str, np.ndarray]],
    k: int,
    alpha: float,
    eval_feeds: Optional[Mapping[str, np.ndarray]] = None,
    initial_weights: Optional[Mapping[str, np.ndarray]] = None,
    wrapped: Optional[List[str]] = None,
    inner_state: str = "keep",
) -> List[StepRecord]:
    """Lookahead(k, alpha) around the model's own optimizers, one record per feed.

    Slow weights are copies of the initial weights (taken before the first step, never lazily);
    after inner steps k, 2k, ... each algorithm's weights are pulled towards and then reset to the
    slow weights; the optimizer state (moments, update count T) is kept across syncs
    (``inner_state="keep"``; "reset" and "pullback": see ``_sync_inner_state``).

    With several TrainingInfoProto entries each algorithm carries its own Lookahead (its weights,
    slow copies and counter) and syncs right after its own update, before the next algorithm of
    the same iteration runs; that is what editing each algorithm in place produces.  Only models
    whose later algorithms read weights of earlier ones (``two_algorithm_model(coupled=True)``)
    can tell this apart from one sync at the end of the iteration.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    return _run(spec, feeds, eval_feeds, k, alpha, initial_weights, wrapped, inner_state)
