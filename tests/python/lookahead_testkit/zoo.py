"""A zoo of small generate_artifacts models beyond the two MLPs, and a host-side Lookahead reference.

Writing a NumPy backward pass for every architecture would cost more than it proves, so for these
models the reference is ORT itself running the ORIGINAL (un-rewritten) artifacts, with the
Lookahead sync done on the host between steps (`host_lookahead_run`): after optimizer steps
k, 2k, ... it reads the trainable weights, computes slow += alpha * (p - slow) in float32 and writes
slow back through the training API (`state.parameters[name].data = value`, which copies into the
checkpoint's buffer; `ZooLoop.set_parameter` reads it back to check the write landed). That is an
implementation of lookahead.md that shares no code with the rewrite; forward, gradients and inner
optimizer are ORT's on both sides, so a correct rewrite matches it to ~1e-7.

A `ZooModel` is an inference model (weights as initializers) plus what generate_artifacts needs
(requires_grad / frozen_params names, the loss, loss_input_names, additional_output_names) and a
data generator. Initializers in neither list stay constants of the graphs (generate_artifacts'
third category).

What generate_artifacts / ORT 1.19.2 (CPU) cannot do, so the zoo leaves it out (found while
building it; none of it involves the rewrite):
- If (or any subgraph) that reads a TRAINABLE parameter from the outer scope: generate_artifacts
  fails ("GetIndexFromName ... name which does not exist: W1"), also off the gradient path; an If
  on the gradient path aborts it (no If gradient). An If off the gradient path that reads a frozen
  parameter and a value computed from a trainable one works: IF_SIDE.
- float64 / float16 parameters: the loss gradient seed is float32, so the gradient graph does not
  type-check unless the model casts to float32; with Cast the artifacts generate, but the stock
  runtime cannot run them (no double InPlaceAccumulatorV2 kernel; float16 "Unsupported data type").
- AveragePool: its gradient kernel kills the process with SIGFPE in the ORIGINAL artifacts.
- LayerNormalization / Dropout need their optional outputs (mean, inv_std / mask) for the gradient
  builder; BatchNormalization with training_mode=1 gives an eval model ORT refuses to load
  ("number of op outputs should be 1 when Training_mode = False"), so BATCHNORM uses the inference
  form with the running statistics as frozen parameters.
- opset < 11: generate_artifacts' own loss blocks are invalid there.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import ort as _ort
from .ort import CheckpointState, Module, Optimizer
from .quiet import quiet_fds
from .reference import OptimizerConfig

IR_VERSION = 9
F32 = np.float32
FLOAT = TensorProto.FLOAT


# ------------------------------------------------------------------------------------- the models
@dataclass(frozen=True)
class ZooModel:
    """One test model.

    build() -> (nodes, graph inputs, graph outputs, {initializer name: numpy value}).
    batch(rs, n) -> (model inputs..., target): what module(*batch) takes.
    loss: "mse" | "ce" | "bce" | "l1" (generate_artifacts' LossType), or a factory returning an
    onnxblock.Block (a custom loss).
    loss_inputs / additional_outputs: generate_artifacts' loss_input_names /
    additional_output_names (the training and eval graphs then return the loss and these).
    """

    name: str
    build: Callable
    trainable: tuple[str, ...]
    batch: Callable
    loss: object = "mse"
    frozen: tuple[str, ...] = ()
    additional_outputs: tuple[str, ...] = ()
    loss_inputs: tuple[str, ...] = ()
    opset: int = 17

    def onnx_model(self) -> onnx.ModelProto:
        nodes, inputs, outputs, inits = self.build()
        graph = helper.make_graph(nodes, self.name, inputs, outputs,
                                  [numpy_helper.from_array(v, n) for n, v in inits.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  ir_version=IR_VERSION, producer_name="lookahead_testkit.zoo")
        onnx.checker.check_model(model, full_check=True)
        return model

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.build()[1]]

    @property
    def output_names(self) -> list[str]:
        """The inference model's outputs (what an exported model is asked for)."""
        return [o.name for o in self.build()[2]]

    def initial(self, name: str) -> np.ndarray:
        return self.build()[3][name]

    def schedule(self, steps: int, forwards: int = 1, size: int = 12, seed: int = 1):
        """schedule[t-1][j] is the batch of forward j of step t."""
        rs = np.random.RandomState(seed)
        return [[self.batch(rs, size) for _ in range(forwards)] for _ in range(steps)]

    def eval_batch(self, size: int = 20):
        return self.batch(np.random.RandomState(99), size)

    def probe_inputs(self, size: int = 7) -> dict[str, np.ndarray]:
        """Inputs (no target) for an exported inference model."""
        return dict(zip(self.input_names, self.batch(np.random.RandomState(5), size)[:-1]))


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _node(op, inputs, outputs, **attrs):
    return helper.make_node(op, inputs, outputs, **attrs)


def _w(rs, *shape, scale=None):
    """Random float32 weights; default scale 1/sqrt(last dim) keeps activations unsaturated."""
    scale = 1.0 / np.sqrt(shape[-1]) if scale is None else scale
    return (rs.randn(*shape) * scale).astype(F32)


def _regression_batch(n_in, n_out, seed):
    """(x, sin(x @ fixed projection)): a smooth target, so training progresses."""
    def batch(rs, n):
        x = rs.randn(n, n_in).astype(F32)
        proj = np.random.RandomState(seed).randn(n_in, n_out).astype(F32)
        return x, np.sin(x @ proj).astype(F32)
    return batch


# --- a small CNN: Conv + Relu + pooling + Flatten/Reshape + Gemm(transB=1), cross entropy
def _cnn(pool: str, reshape: bool):
    """pool: "MaxPool" (2x2, stride 2) or "GlobalAveragePool"; reshape: Reshape by a constant
    int64 shape initializer (not a parameter) instead of Flatten."""
    feat = 27 if pool == "MaxPool" else 3

    def build():
        rs = np.random.RandomState(3)
        inits = {"conv.weight": _w(rs, 3, 1, 3, 3, scale=0.4), "conv.bias": _w(rs, 3, scale=0.1),
                 "fc.weight": _w(rs, 4, feat, scale=0.3), "fc.bias": _w(rs, 4, scale=0.1)}
        pool_attrs = {"kernel_shape": [2, 2], "strides": [2, 2]} if pool == "MaxPool" else {}
        nodes = [_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1]),
                 _node("Relu", ["c"], ["r"]), _node(pool, ["r"], ["p"], **pool_attrs)]
        if reshape:
            inits["flat_shape"] = np.array([-1, feat], np.int64)
            nodes.append(_node("Reshape", ["p", "flat_shape"], ["f"]))
        else:
            nodes.append(_node("Flatten", ["p"], ["f"], axis=1))
        nodes.append(_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], transB=1))
        return nodes, [_vi("x", FLOAT, ["N", 1, 6, 6])], [_vi("logits", FLOAT, ["N", 4])], inits

    def batch(rs, n):
        x = rs.randn(n, 1, 6, 6).astype(F32)
        proj = np.random.RandomState(11).randn(36, 4)
        return x, np.argmax(x.reshape(n, -1) @ proj, axis=1).astype(np.int64)
    return build, batch


_CNN_PARAMS = ("conv.weight", "conv.bias", "fc.weight", "fc.bias")


def _cnn_model(name, pool, reshape):
    build, batch = _cnn(pool, reshape)
    return ZooModel(name, build, _CNN_PARAMS, batch, loss="ce")


CNN_MAXPOOL = _cnn_model("cnn_maxpool", "MaxPool", reshape=False)
CNN_GAP = _cnn_model("cnn_globalavgpool_reshape", "GlobalAveragePool", reshape=True)
# additional_output_names: training and eval graphs return (loss, logits)
CNN_EXTRA_OUTPUT = dataclasses.replace(CNN_MAXPOOL, name="cnn_additional_output", additional_outputs=("logits",))


# --- dense + LayerNormalization + tanh + dense, MSE
def _layernorm_build():
    rs = np.random.RandomState(4)
    inits = {"W1": _w(rs, 4, 8), "b1": _w(rs, 8, scale=0.1),
             "ln.weight": (1 + 0.1 * rs.randn(8)).astype(F32), "ln.bias": _w(rs, 8, scale=0.1),
             "W2": _w(rs, 8, 2), "b2": _w(rs, 2, scale=0.1)}
    nodes = [_node("MatMul", ["x", "W1"], ["m1"]), _node("Add", ["m1", "b1"], ["a1"]),
             _node("LayerNormalization", ["a1", "ln.weight", "ln.bias"], ["n1", "n1.mean", "n1.inv_std"],
                   axis=-1, epsilon=1e-5),
             _node("Tanh", ["n1"], ["h1"]), _node("MatMul", ["h1", "W2"], ["m2"]), _node("Add", ["m2", "b2"], ["y"])]
    return nodes, [_vi("x", FLOAT, ["N", 4])], [_vi("y", FLOAT, ["N", 2])], inits


LAYERNORM = ZooModel("layernorm_mlp", _layernorm_build, ("W1", "b1", "ln.weight", "ln.bias", "W2", "b2"),
                     _regression_batch(4, 2, 21))


# --- dense + BatchNormalization (inference form; running statistics are frozen parameters), MSE
def _batchnorm_build():
    rs = np.random.RandomState(5)
    inits = {"W1": _w(rs, 4, 6), "bn.weight": (1 + 0.1 * rs.randn(6)).astype(F32),
             "bn.bias": _w(rs, 6, scale=0.1), "bn.running_mean": _w(rs, 6, scale=0.1),
             "bn.running_var": (1 + 0.1 * np.abs(rs.randn(6))).astype(F32),
             "W2": _w(rs, 6, 2), "b2": _w(rs, 2, scale=0.1)}
    nodes = [_node("MatMul", ["x", "W1"], ["m1"]),
             _node("BatchNormalization", ["m1", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"],
                   ["n1"], epsilon=1e-5),
             _node("Relu", ["n1"], ["h1"]), _node("MatMul", ["h1", "W2"], ["m2"]), _node("Add", ["m2", "b2"], ["y"])]
    return nodes, [_vi("x", FLOAT, ["N", 4])], [_vi("y", FLOAT, ["N", 2])], inits


BATCHNORM = ZooModel("batchnorm_mlp", _batchnorm_build, ("W1", "bn.weight", "bn.bias", "W2", "b2"),
                     _regression_batch(4, 2, 22), frozen=("bn.running_mean", "bn.running_var"))


# --- Gather embedding of int64 token ids plus a dense feature input (two model inputs), cross entropy
VOCAB, DIM, SEQ = 10, 6, 5


def _embedding_build():
    rs = np.random.RandomState(6)
    inits = {"embed.weight": _w(rs, VOCAB, DIM, scale=0.5), "dense.weight": _w(rs, 3, DIM),
             "head.weight": _w(rs, DIM, 4), "head.bias": _w(rs, 4, scale=0.1)}
    nodes = [_node("Gather", ["embed.weight", "ids"], ["e"]),
             _node("ReduceMean", ["e"], ["pooled"], axes=[1], keepdims=0),
             _node("MatMul", ["feats", "dense.weight"], ["fd"]), _node("Add", ["pooled", "fd"], ["h"]),
             _node("Tanh", ["h"], ["th"]), _node("MatMul", ["th", "head.weight"], ["hm"]),
             _node("Add", ["hm", "head.bias"], ["logits"])]
    return (nodes, [_vi("ids", TensorProto.INT64, ["N", SEQ]), _vi("feats", FLOAT, ["N", 3])],
            [_vi("logits", FLOAT, ["N", 4])], inits)


def _embedding_batch(rs, n):
    ids = rs.randint(0, VOCAB, size=(n, SEQ)).astype(np.int64)
    feats = rs.randn(n, 3).astype(F32)
    return ids, feats, ((ids.sum(axis=1) + (feats[:, 0] > 0)) % 4).astype(np.int64)


EMBEDDING = ZooModel("embedding_two_inputs", _embedding_build,
                     ("embed.weight", "dense.weight", "head.weight", "head.bias"), _embedding_batch, loss="ce")


# --- tied embedding: one matrix embeds the ids (Gather) and projects back onto the vocabulary (Gemm)
def _tied_build():
    rs = np.random.RandomState(7)
    inits = {"tok.weight": _w(rs, VOCAB, DIM, scale=0.5), "mix.weight": _w(rs, DIM, DIM),
             "out.bias": _w(rs, VOCAB, scale=0.1)}
    nodes = [_node("Gather", ["tok.weight", "ids"], ["e"]),
             _node("ReduceMean", ["e"], ["pooled"], axes=[1], keepdims=0),
             _node("MatMul", ["pooled", "mix.weight"], ["mx"]), _node("Tanh", ["mx"], ["h"]),
             _node("Gemm", ["h", "tok.weight", "out.bias"], ["logits"], transB=1)]
    return nodes, [_vi("ids", TensorProto.INT64, ["N", SEQ])], [_vi("logits", FLOAT, ["N", VOCAB])], inits


def _tied_batch(rs, n):
    ids = rs.randint(0, VOCAB, size=(n, SEQ)).astype(np.int64)
    return ids, (ids[:, 0] + ids[:, -1]) % VOCAB


TIED = ZooModel("tied_embedding", _tied_build, ("tok.weight", "mix.weight", "out.bias"), _tied_batch, loss="ce")


# --- a tiny self-attention block with PyTorch-style names: token + position embeddings,
# LayerNormalization, q/k/v projections, Softmax attention, residual, mean pooling, linear head
def _attention_build():
    rs = np.random.RandomState(12)
    inits = {"embeddings.word_embeddings.weight": _w(rs, VOCAB, DIM, scale=0.5),
             "embeddings.position_embeddings.weight": _w(rs, SEQ, DIM, scale=0.2),
             "encoder.ln.weight": np.ones(DIM, F32), "encoder.ln.bias": np.zeros(DIM, F32),
             "encoder.attn.q.weight": _w(rs, DIM, DIM), "encoder.attn.k.weight": _w(rs, DIM, DIM),
             "encoder.attn.v.weight": _w(rs, DIM, DIM), "classifier.weight": _w(rs, 3, DIM),
             "classifier.bias": _w(rs, 3, scale=0.1), "attn_scale": np.array(1 / np.sqrt(DIM), F32)}
    nodes = [_node("Gather", ["embeddings.word_embeddings.weight", "input_ids"], ["/emb/tok"]),
             _node("Add", ["/emb/tok", "embeddings.position_embeddings.weight"], ["/emb/sum"]),
             _node("LayerNormalization", ["/emb/sum", "encoder.ln.weight", "encoder.ln.bias"],
                   ["/ln/out", "/ln/mean", "/ln/inv_std"], axis=-1, epsilon=1e-5)]
    nodes += [_node("MatMul", ["/ln/out", f"encoder.attn.{p}.weight"], [f"/attn/{p}"]) for p in "qkv"]
    nodes += [_node("Transpose", ["/attn/k"], ["/attn/kT"], perm=[0, 2, 1]),
              _node("MatMul", ["/attn/q", "/attn/kT"], ["/attn/scores"]),
              _node("Mul", ["/attn/scores", "attn_scale"], ["/attn/scaled"]),
              _node("Softmax", ["/attn/scaled"], ["/attn/probs"], axis=-1),
              _node("MatMul", ["/attn/probs", "/attn/v"], ["/attn/ctx"]),
              _node("Add", ["/attn/ctx", "/ln/out"], ["/attn/res"]),
              _node("ReduceMean", ["/attn/res"], ["/pool"], axes=[1], keepdims=0),
              _node("Gemm", ["/pool", "classifier.weight", "classifier.bias"], ["logits"], transB=1)]
    return nodes, [_vi("input_ids", TensorProto.INT64, ["batch", SEQ])], [_vi("logits", FLOAT, ["batch", 3])], inits


def _attention_batch(rs, n):
    ids = rs.randint(0, VOCAB, size=(n, SEQ)).astype(np.int64)
    return ids, ((ids[:, 0] > ids[:, 1]).astype(np.int64) + (ids[:, 2] > 6))


ATTENTION = ZooModel("tiny_attention", _attention_build,
                     tuple(n for n in _attention_build()[3] if n != "attn_scale"), _attention_batch, loss="ce")


# --- one weight read by two MatMuls (a recurrent-style shared layer), MSE
def _shared_build():
    rs = np.random.RandomState(8)
    inits = {"W_in": _w(rs, 4, 6), "W_shared": _w(rs, 6, 6), "W_out": _w(rs, 6, 2)}
    nodes = [_node("MatMul", ["x", "W_in"], ["a0"]), _node("Tanh", ["a0"], ["h0"]),
             _node("MatMul", ["h0", "W_shared"], ["a1"]), _node("Tanh", ["a1"], ["h1"]),
             _node("MatMul", ["h1", "W_shared"], ["a2"]), _node("Tanh", ["a2"], ["h2"]),
             _node("MatMul", ["h2", "W_out"], ["y"])]
    return nodes, [_vi("x", FLOAT, ["N", 4])], [_vi("y", FLOAT, ["N", 2])], inits


SHARED = ZooModel("shared_weight", _shared_build, ("W_in", "W_shared", "W_out"), _regression_batch(4, 2, 23))


# --- PyTorch-style linear layers (Gemm transB=1) with PyTorch / TF-style parameter names
def _linear_build(names, n_out):
    def build():
        rs = np.random.RandomState(9)
        w1, b1, w2, b2 = names
        inits = {w1: _w(rs, 8, 5), b1: _w(rs, 8, scale=0.1), w2: _w(rs, n_out, 8), b2: _w(rs, n_out, scale=0.1)}
        nodes = [_node("Gemm", ["input", w1, b1], ["/encoder/layer.0/Gemm_output_0"], transB=1),
                 _node("Tanh", ["/encoder/layer.0/Gemm_output_0"], ["/encoder/act/Tanh_output_0"]),
                 _node("Gemm", ["/encoder/act/Tanh_output_0", w2, b2], ["output"], transB=1)]
        return nodes, [_vi("input", FLOAT, ["batch", 5])], [_vi("output", FLOAT, ["batch", n_out])], inits
    return build


def _bce_batch(rs, n):
    x = rs.randn(n, 5).astype(F32)
    proj = np.random.RandomState(24).randn(5, 3)
    return x, (x @ proj > 0).astype(F32)


_DOTTED = ("encoder.layer.0.weight", "encoder.layer.0.bias", "head.weight", "head.bias")
LINEAR_BCE = ZooModel("torch_linear_bce", _linear_build(_DOTTED, 3), _DOTTED, _bce_batch, loss="bce")
_SLASHED = ("/encoder/layer.0/weight:0", "onnx::Gemm_17", "model.head/kernel", "model.head/bias")
LINEAR_L1 = ZooModel("slash_names_l1", _linear_build(_SLASHED, 2), _SLASHED, _regression_batch(5, 2, 25), loss="l1")


# --- a 3-layer tanh MLP: requires_grad subsets, opsets, seeded Dropout, a parameter in the loss
def _mlp3_build(dropout: bool = False):
    def build():
        rs = np.random.RandomState(10)
        inits = {"W1": _w(rs, 4, 7), "b1": _w(rs, 7, scale=0.1), "W2": _w(rs, 7, 7), "b2": _w(rs, 7, scale=0.1),
                 "W3": _w(rs, 7, 2), "b3": _w(rs, 2, scale=0.1)}
        nodes, h = [], "x"
        for i in (1, 2, 3):
            nodes += [_node("MatMul", [h, f"W{i}"], [f"m{i}"]),
                      _node("Add", [f"m{i}", f"b{i}"], ["y" if i == 3 else f"a{i}"])]
            if i < 3:
                nodes.append(_node("Tanh", [f"a{i}"], [f"h{i}"]))
                h = f"h{i}"
            if i == 1 and dropout:
                # a fixed seed makes the masks the same sequence in every session
                inits["dropout.ratio"] = np.array(0.3, F32)
                nodes.append(_node("Dropout", ["h1", "dropout.ratio"], ["h1.dropped", "h1.mask"], seed=5))
                h = "h1.dropped"
        return nodes, [_vi("x", FLOAT, ["N", 4])], [_vi("y", FLOAT, ["N", 2])], inits
    return build


MLP3_PARAMS = ("W1", "b1", "W2", "b2", "W3", "b3")


def _mlp3(name, trainable=MLP3_PARAMS, frozen=(), **kw):
    return ZooModel(name, kw.pop("build", _mlp3_build()), trainable, _regression_batch(4, 2, 26), frozen=frozen, **kw)


FROZEN_FIRST = _mlp3("frozen_first_layer", ("W2", "b2", "W3", "b3"), ("W1", "b1"))
FROZEN_MIDDLE = _mlp3("frozen_middle_weight", ("W1", "b1", "b2", "W3", "b3"), ("W2",))
FROZEN_LAST = _mlp3("frozen_last_layer", ("W1", "b1", "W2", "b2"), ("W3", "b3"))
# one trainable parameter, two frozen ones, the rest in neither list (they stay graph constants)
ONE_TRAINABLE = _mlp3("one_trainable_rest_constant", ("b2",), ("W1", "W3"))
DROPOUT = _mlp3("dropout_seeded", build=_mlp3_build(dropout=True))
OPSET11 = _mlp3("mlp_opset11", opset=11)
OPSET21 = _mlp3("mlp_opset21", opset=21)


def _l2_loss_factory():
    """MSE + 0.05 * sum(W2 * W2): W2 is read by the forward and by the loss, twice by one Mul."""
    from .ort import _onnxblock as onnxblock

    class MseWithL2(onnxblock.Block):
        def build(self, y, target="target"):
            g = self.base.graph
            g.input.append(_vi(target, FLOAT, ["N", 2]))
            g.initializer.append(numpy_helper.from_array(np.array(0.05, F32), "l2.coef"))
            g.node.extend([_node("Sub", [y, target], ["l2.diff"]), _node("Mul", ["l2.diff", "l2.diff"], ["l2.sq"]),
                           _node("ReduceMean", ["l2.sq"], ["l2.mse"], keepdims=0),
                           _node("Mul", ["W2", "W2"], ["l2.w2sq"]),
                           _node("ReduceSum", ["l2.w2sq"], ["l2.w2sum"], keepdims=0),
                           _node("Mul", ["l2.w2sum", "l2.coef"], ["l2.reg"]),
                           _node("Add", ["l2.mse", "l2.reg"], ["l2.total"])])
            return "l2.total"
    return MseWithL2()


PARAM_IN_LOSS = _mlp3("param_in_forward_and_loss", loss=_l2_loss_factory)


# --- a trainable parameter only the loss reads (learned uncertainty weighting) and a rank-0 one
def _uncertainty_loss_factory():
    """loss = mean((y - target)^2) * exp(-loss.log_var) + loss.log_var (rank-0, loss only)."""
    from .ort import _onnxblock as onnxblock

    class UncertaintyMse(onnxblock.Block):
        def build(self, y, target="target"):
            g = self.base.graph
            g.initializer.append(numpy_helper.from_array(np.array(0.3, F32), "loss.log_var"))
            g.input.append(_vi(target, FLOAT, ["N", 2]))
            g.node.extend([_node("Sub", [y, target], ["loss.diff"]),
                           _node("Mul", ["loss.diff", "loss.diff"], ["loss.sq"]),
                           _node("ReduceMean", ["loss.sq"], ["loss.mse"], keepdims=0),
                           _node("Neg", ["loss.log_var"], ["loss.neg"]), _node("Exp", ["loss.neg"], ["loss.prec"]),
                           _node("Mul", ["loss.mse", "loss.prec"], ["loss.weighted"]),
                           _node("Add", ["loss.weighted", "loss.log_var"], ["loss.out"])])
            return "loss.out"
    return UncertaintyMse()


def _scaled_mlp_build():
    """x -> tanh(x @ W1 + b1) @ W2 + b2, times a rank-0 trainable `scale`."""
    rs = np.random.RandomState(13)
    inits = {"W1": _w(rs, 4, 8), "b1": _w(rs, 8, scale=0.1), "W2": _w(rs, 8, 2), "b2": _w(rs, 2, scale=0.1),
             "scale": np.array(1.2, F32)}
    nodes = [_node("MatMul", ["x", "W1"], ["m1"]), _node("Add", ["m1", "b1"], ["a1"]), _node("Tanh", ["a1"], ["h1"]),
             _node("MatMul", ["h1", "W2"], ["m2"]), _node("Add", ["m2", "b2"], ["pre"]),
             _node("Mul", ["pre", "scale"], ["y"])]
    return nodes, [_vi("x", FLOAT, ["N", 4])], [_vi("y", FLOAT, ["N", 2])], inits


LOSS_ONLY_PARAM = ZooModel("loss_only_param_rank0", _scaled_mlp_build,
                           ("W1", "b1", "W2", "b2", "scale", "loss.log_var"), _regression_batch(4, 2, 27),
                           loss=_uncertainty_loss_factory)


# --- an If off the gradient path (loss_input_names + additional_output_names) that reads a frozen
# parameter from the outer scope and a value computed from a trainable one
def _if_build():
    rs = np.random.RandomState(14)
    inits = {"W1": _w(rs, 4, 3), "W2": _w(rs, 3, 3), "zero": np.array(0, F32)}
    then_g = helper.make_graph([_node("MatMul", ["h", "W2"], ["t_out"])], "then", [], [_vi("t_out", FLOAT, ["N", 3])])
    else_g = helper.make_graph([_node("Neg", ["h"], ["e_out"])], "else", [], [_vi("e_out", FLOAT, ["N", 3])])
    nodes = [_node("MatMul", ["x", "W1"], ["h"]), _node("ReduceSum", ["x"], ["s"], keepdims=0),
             _node("Greater", ["s", "zero"], ["c"]),
             _node("If", ["c"], ["aux"], then_branch=then_g, else_branch=else_g), _node("Tanh", ["h"], ["y"])]
    return nodes, [_vi("x", FLOAT, ["N", 4])], [_vi("y", FLOAT, ["N", 3]), _vi("aux", FLOAT, ["N", 3])], inits


IF_SIDE = ZooModel("if_side_output", _if_build, ("W1",), _regression_batch(4, 3, 28), frozen=("W2",),
                   loss_inputs=("y",), additional_outputs=("aux",))


# --- a trainable parameter that is itself a graph output (additional_output_names=["b3"])
def _param_output_build():
    nodes, inputs, outputs, inits = _mlp3_build()()
    return nodes, inputs, outputs + [_vi("b3", FLOAT, [2])], inits


PARAM_AS_OUTPUT = _mlp3("param_as_graph_output", build=_param_output_build, loss_inputs=("y",),
                        additional_outputs=("b3",))

ALL = [CNN_MAXPOOL, CNN_GAP, CNN_EXTRA_OUTPUT, LAYERNORM, BATCHNORM, EMBEDDING, TIED, ATTENTION, SHARED,
       LINEAR_BCE, LINEAR_L1, FROZEN_FIRST, FROZEN_MIDDLE, FROZEN_LAST, ONE_TRAINABLE, DROPOUT, OPSET11, OPSET21,
       PARAM_IN_LOSS, LOSS_ONLY_PARAM, IF_SIDE, PARAM_AS_OUTPUT]
BY_NAME = {m.name: m for m in ALL}
assert len(BY_NAME) == len(ALL)


# ----------------------------------------------------------------------------------- artifacts
def _loss(model: ZooModel):
    if callable(model.loss):
        return model.loss()
    kinds = _ort._artifacts.LossType
    return {"mse": kinds.MSELoss, "ce": kinds.CrossEntropyLoss, "bce": kinds.BCEWithLogitsLoss,
            "l1": kinds.L1Loss}[model.loss]


def generate(model: ZooModel, opt: OptimizerConfig, directory, **options) -> Path:
    """generate_artifacts for `model` with the inner optimizer `opt` (the loop sets the lr).
    options: further generate_artifacts arguments (ort_format, prefix, ...)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    optimizer = (_ort._onnxblock.optim.AdamW(weight_decay=opt.weight_decay) if opt.kind == "adamw"
                 else _ort._artifacts.OptimType.SGD)
    with quiet_fds():
        _ort._artifacts.generate_artifacts(
            model.onnx_model(), requires_grad=list(model.trainable), frozen_params=list(model.frozen) or None,
            loss=_loss(model), optimizer=optimizer, artifact_directory=str(directory),
            additional_output_names=list(model.additional_outputs) or None,
            loss_input_names=list(model.loss_inputs) or None, **options)
    return directory


# --------------------------------------------------------------------------------------- the loop
class ZooLoop:
    """The stock training-API loop for any number of model inputs and outputs.

    A batch is (inputs..., target); module(*batch) returns the loss, then the additional outputs.
    step() and evaluate() return every output as a float64 array.
    ext: "onnx", or "ort" for artifacts generated with ort_format=True.
    """

    def __init__(self, directory, lr: float, checkpoint=None, session_options=None, ext: str = "onnx"):
        directory = Path(directory)
        self.state = CheckpointState.load_checkpoint(str(checkpoint or directory / "checkpoint"))
        self.module = Module(str(directory / f"training_model.{ext}"), self.state,
                             str(directory / f"eval_model.{ext}"), session_options=session_options)
        self.optimizer = Optimizer(str(directory / f"optimizer_model.{ext}"), self.module)
        self.optimizer.set_learning_rate(lr)
        self.module.train()

    @staticmethod
    def _outputs(out) -> list[np.ndarray]:
        return [np.array(o, np.float64) for o in (out if isinstance(out, (list, tuple)) else [out])]

    def step(self, batches) -> list[list[np.ndarray]]:
        """One optimizer step: a forward per batch, step(), lazy_reset_grad(); -> outputs per forward."""
        outs = [self._outputs(self.module(*batch)) for batch in batches]
        self.optimizer.step()
        self.module.lazy_reset_grad()
        return outs

    def evaluate(self, batch) -> list[np.ndarray]:
        self.module.eval()
        try:
            return self._outputs(self.module(*batch))
        finally:
            self.module.train()

    def trainable_names(self) -> list[str]:
        return [n for n, p in self.state.parameters if p.requires_grad]

    def parameter(self, name: str) -> np.ndarray:
        return np.array(self.state.parameters[name].data, copy=True)

    def set_parameter(self, name: str, value: np.ndarray) -> None:
        """Write a parameter through the training API and check that the write landed."""
        self.state.parameters[name].data = value
        back = self.parameter(name)
        assert back.shape == value.shape and np.array_equal(back, value), f"write to {name} did not land"

    def export(self, path, outputs) -> None:
        self.module.export_model_for_inferencing(str(path), list(outputs))

    def save(self, path) -> None:
        CheckpointState.save_checkpoint(self.state, str(path), include_optimizer_state=True)


@dataclass
class Run:
    """What the loop saw: outputs[t-1][j] = outputs of forward j of step t (loss first);
    eval_outputs[t-1] = eval-graph outputs after step t."""

    outputs: list = field(default_factory=list)
    eval_outputs: list = field(default_factory=list)

    @property
    def losses(self) -> list[list[float]]:
        return [[float(f[0]) for f in step] for step in self.outputs]

    @property
    def eval_losses(self) -> list[float]:
        return [float(e[0]) for e in self.eval_outputs]

    def __add__(self, other: "Run") -> "Run":
        return Run(self.outputs + other.outputs, self.eval_outputs + other.eval_outputs)


def _run(loop: ZooLoop, schedule, eval_batch, sync, on_step, first_step: int = 1) -> Run:
    out = Run()
    for t, batches in enumerate(schedule, first_step):
        out.outputs.append(loop.step(batches))
        sync(t, loop)
        out.eval_outputs.append(loop.evaluate(eval_batch))
        if on_step is not None:
            on_step(t, loop)
    return out


def host_lookahead_run(directory, lr, schedule, eval_batch, k=None, alpha=None, on_step=None) -> Run:
    """The reference: ORIGINAL artifacts in the stock loop, the Lookahead sync done on the host.

    Slow weights start as the checkpoint's trainable (requires_grad) parameters; after steps
    k, 2k, ...: slow += alpha * (p - slow) in float32, p = slow. k=None: the plain inner optimizer.
    on_step(t, loop) runs after step t's sync and eval.
    """
    loop = ZooLoop(directory, lr)
    slow = {n: loop.parameter(n) for n in loop.trainable_names()}

    def sync(t, loop):
        if k is not None and t % k == 0:
            for n, s in slow.items():
                slow[n] = np.asarray(s + F32(alpha) * (loop.parameter(n) - s), s.dtype)
                loop.set_parameter(n, slow[n].copy())
    return _run(loop, schedule, eval_batch, sync, on_step)


def rewritten_run(directory, lr, schedule, eval_batch, on_step=None, first_step: int = 1, **loop_options) -> Run:
    """Rewritten artifacts in the same stock loop, nothing done on the host.
    loop_options: ZooLoop's checkpoint, session_options, ext."""
    return _run(ZooLoop(directory, lr, **loop_options), schedule, eval_batch, lambda t, loop: None, on_step,
                first_step)


# ---------------------------------------------------------------------------------- comparisons
def step_diffs(actual: Run, expected: Run) -> list[tuple[float, str]]:
    """Per step: (largest |difference| over every output of every forward and of the eval,
    where it is), e.g. (3e-2, "eval output 1")."""
    assert len(actual.outputs) == len(expected.outputs)
    out = []
    for a_step, e_step, a_eval, e_eval in zip(actual.outputs, expected.outputs,
                                              actual.eval_outputs, expected.eval_outputs):
        worst = (0.0, "")
        pairs = [(f"training forward {j} output {i}", a, e) for j, (af, ef) in enumerate(zip(a_step, e_step))
                 for i, (a, e) in enumerate(zip(af, ef))]
        pairs += [(f"eval output {i}", a, e) for i, (a, e) in enumerate(zip(a_eval, e_eval))]
        for where, a, e in pairs:
            assert a.shape == e.shape, f"{where}: shape {a.shape} vs {e.shape}"
            d = float(np.max(np.abs(a - e))) if a.size else 0.0
            if not d <= worst[0]:
                worst = (d, where)
        out.append(worst)
    return out


def assert_runs_close(what: str, actual: Run, expected: Run, tol: float) -> float:
    """Every output of every step within tol; the failure names the first diverging step and
    output, and lists every step over tol. -> the largest difference."""
    diffs = step_diffs(actual, expected)
    bad = [t for t, (d, _) in enumerate(diffs, 1) if not d <= tol]
    if bad:
        d, where = diffs[bad[0] - 1]
        raise AssertionError(f"{what}: step {bad[0]} differs by {d:.3g} in {where} (tol {tol:g}); "
                             f"steps over tol: {bad}")
    return max(d for d, _ in diffs)


def max_diff(actual: Run, expected: Run) -> float:
    return max(d for d, _ in step_diffs(actual, expected))
