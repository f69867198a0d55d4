"""Small MLP test models: the ONNX inference model and an independent NumPy forward/backward.

The end-to-end tests must judge ONNX Runtime's training against something ORT did not compute, so
the gradients here come from a hand-written backward pass in NumPy, not from ORT's gradient graph.
A model is a stack of dense layers `h_i = act_i(h_{i-1} @ W_i + b_i)` with a per-layer activation,
followed by the loss block that `generate_artifacts` appends (`LossType.MSELoss` or
`LossType.CrossEntropyLoss`). Parameters are named W1, b1, W2, b2, ...; any subset may be frozen.

All arithmetic runs in the dtype of the parameters: float32 for comparisons with ORT, float64 for
the finite-difference check of the backward pass itself (test_harness.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
# onnx 1.16 would write IR 10 by default; 9 keeps the models loadable by older runtimes as well.
IR_VERSION = 9

_ACTIVATIONS = {"tanh": "Tanh", "sigmoid": "Sigmoid", "relu": "Relu", "none": None}


def _activate(kind: str, a: np.ndarray) -> np.ndarray:
    if kind == "tanh":
        return np.tanh(a)
    if kind == "sigmoid":
        return (1 / (1 + np.exp(-a))).astype(a.dtype)
    if kind == "relu":
        return np.maximum(a, 0)
    return a


def _activation_grad(kind: str, a: np.ndarray, h: np.ndarray, gh: np.ndarray) -> np.ndarray:
    """d loss / d a, given d loss / d h for h = act(a)."""
    if kind == "tanh":
        return gh * (1 - h * h)
    if kind == "sigmoid":
        return gh * h * (1 - h)
    if kind == "relu":
        return gh * (a > 0)
    return gh


@dataclass(frozen=True)
class MlpSpec:
    """A dense model: `layers` is a sequence of (units, activation), the last one being the output.

    loss: "mse" (mean over all elements of (y - target)^2, target float like y) or "ce" (softmax
    cross entropy, mean over the batch, int64 class labels).
    frozen: parameter names that generate_artifacts gets as frozen_params (no gradient, no update).
    """

    name: str
    n_in: int
    layers: tuple[tuple[int, str], ...]
    loss: str = "mse"
    frozen: tuple[str, ...] = ()
    seed: int = 0
    input_name: str = "x"
    output_name: str = "y"

    def __post_init__(self):
        assert self.loss in ("mse", "ce"), self.loss
        assert all(act in _ACTIVATIONS for _, act in self.layers), self.layers
        assert set(self.frozen) <= set(self.param_names), self.frozen

    # ---------------------------------------------------------------------------------- parameters
    @property
    def n_out(self) -> int:
        return self.layers[-1][0]

    @property
    def param_names(self) -> list[str]:
        return [f"{kind}{i}" for i in range(1, len(self.layers) + 1) for kind in ("W", "b")]

    @property
    def trainable(self) -> list[str]:
        return [n for n in self.param_names if n not in self.frozen]

    @property
    def n_params(self) -> int:
        return sum(v.size for v in self.init_params().values())

    def shapes(self) -> dict[str, tuple[int, ...]]:
        out, fan_in = {}, self.n_in
        for i, (units, _) in enumerate(self.layers, 1):
            out[f"W{i}"], out[f"b{i}"] = (fan_in, units), (units,)
            fan_in = units
        return out

    def init_params(self) -> dict[str, np.ndarray]:
        """Deterministic float32 initial weights (scaled so no activation saturates)."""
        rs = np.random.RandomState(self.seed)
        out = {}
        for name, shape in self.shapes().items():
            scale = 1.0 / np.sqrt(shape[0]) if name[0] == "W" else 0.1
            out[name] = (rs.randn(*shape) * scale).astype(np.float32)
        return out

    # ---------------------------------------------------------------------------------------- ONNX
    def onnx_model(self, params: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
        """The inference model (weights as initializers) that generate_artifacts starts from."""
        params = self.init_params() if params is None else params
        nodes, h = [], self.input_name
        for i, (_, act) in enumerate(self.layers, 1):
            last = i == len(self.layers)
            mm, lin = f"mm{i}", (self.output_name if last and _ACTIVATIONS[act] is None else f"lin{i}")
            nodes += [helper.make_node("MatMul", [h, f"W{i}"], [mm], name=f"matmul{i}"),
                      helper.make_node("Add", [mm, f"b{i}"], [lin], name=f"add{i}")]
            h = lin
            if _ACTIVATIONS[act] is not None:
                h = self.output_name if last else f"h{i}"
                nodes.append(helper.make_node(_ACTIVATIONS[act], [lin], [h], name=f"{act}{i}"))
        graph = helper.make_graph(
            nodes, self.name,
            [helper.make_tensor_value_info(self.input_name, TensorProto.FLOAT, ["N", self.n_in])],
            [helper.make_tensor_value_info(self.output_name, TensorProto.FLOAT, ["N", self.n_out])],
            [numpy_helper.from_array(params[n], n) for n in self.param_names])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  ir_version=IR_VERSION, producer_name="lookahead_testkit")
        onnx.checker.check_model(model)
        return model

    # --------------------------------------------------------------------------------------- NumPy
    def forward(self, params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        return self._forward(params, x)[-1][1]

    def _forward(self, params, x):
        """-> [(pre-activation, activation)] per layer, with (None, x) first."""
        trace = [(None, x)]
        for i, (_, act) in enumerate(self.layers, 1):
            a = trace[-1][1] @ params[f"W{i}"] + params[f"b{i}"]
            trace.append((a, _activate(act, a)))
        return trace

    def compute_loss(self, out: np.ndarray, target: np.ndarray) -> np.ndarray:
        return self._loss_and_dout(out, target)[0]

    def _loss_and_dout(self, out, target):
        if self.loss == "mse":
            d = out - target
            return np.mean(d * d), (2 / d.size) * d
        z = out - out.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        rows = np.arange(out.shape[0])
        onehot = np.zeros_like(out)
        onehot[rows, target] = 1
        return -np.mean(logp[rows, target]), (np.exp(logp) - onehot) / out.shape[0]

    def loss_and_grads(self, params: dict[str, np.ndarray], x: np.ndarray, target: np.ndarray):
        """-> (loss, {trainable name: d loss / d param}) by backpropagation."""
        trace = self._forward(params, x)
        loss, g = self._loss_and_dout(trace[-1][1], target)
        grads = {}
        for i in range(len(self.layers), 0, -1):
            a, h = trace[i]
            g = _activation_grad(self.layers[i - 1][1], a, h, g)
            grads[f"W{i}"] = trace[i - 1][1].T @ g
            grads[f"b{i}"] = g.sum(axis=0)
            g = g @ params[f"W{i}"].T
        return loss, {n: grads[n] for n in self.trainable}

    # ---------------------------------------------------------------------------------------- data
    def batch(self, rs: np.random.RandomState, size: int) -> tuple[np.ndarray, np.ndarray]:
        """One (input, target) batch: a fixed smooth function of the input, so training progresses."""
        x = rs.randn(size, self.n_in).astype(np.float32)
        proj = np.random.RandomState(self.seed + 1000).randn(self.n_in, self.n_out).astype(np.float32)
        if self.loss == "mse":
            return x, np.sin(x @ proj).astype(np.float32)
        return x, np.argmax(x @ proj, axis=1).astype(np.int64)

    def schedule(self, steps: int, forwards: int = 1, size: int = 16, seed: int = 1):
        """Distinct batches for every forward of every step: schedule[t-1][j] feeds forward j of step t."""
        rs = np.random.RandomState(seed)
        return [[self.batch(rs, size) for _ in range(forwards)] for _ in range(steps)]

    def eval_batch(self, size: int = 32):
        """A fixed held-out batch for the eval graph (its seed differs from every schedule's)."""
        return self.batch(np.random.RandomState(99), size)


# The two shapes every end-to-end test runs on, so no test is tied to one model.
TANH_MLP = MlpSpec("tanh_mlp", 4, ((8, "tanh"), (8, "tanh"), (2, "none")), loss="mse")
MIXED_MLP = MlpSpec("mixed_mlp", 5, ((12, "sigmoid"), (10, "relu"), (9, "tanh"), (3, "none")),
                    loss="ce", frozen=("b2",), seed=7, output_name="logits")
MODELS = {m.name: m for m in (TANH_MLP, MIXED_MLP)}
