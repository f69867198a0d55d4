"""Shared helpers for the ORT inner-state experiments (onnxruntime-training 1.19.2, no torch).

- artifacts(kind): generate_artifacts for the test kit's tiny tanh MLP (4-8-8-2, MSE), AdamW or SGD,
  in a fresh temporary directory.
- read_checkpoint / write_checkpoint: the checkpoint flatbuffer (ORT's own generated Python
  bindings), including the optimizer groups that the Python API does not expose.
- StockLoop (from the test kit): the unchanged training loop; moments(loop) saves the checkpoint with
  include_optimizer_state=True and returns {param: {state name: array}} and the optimizer step.
- check(label, ok, detail): prints PASS/FAIL and records it; finish() prints the summary.
"""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "tests" / "python"))

from lookahead_testkit.model import TANH_MLP  # noqa: E402
from lookahead_testkit.ort import StockLoop, generate_artifacts  # noqa: E402  (installs the torch-free shim)
from lookahead_testkit.reference import ADAMW, SGD_CFG  # noqa: E402

import flatbuffers  # noqa: E402
from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import (  # noqa: E402
    Checkpoint, ModuleState, OptimizerGroup, ParameterOptimizerState, PropertyBag, Tensor)
from onnxruntime.training.api import CheckpointState, Module, Optimizer  # noqa: E402

SPEC = TANH_MLP
OPTS = {"adamw": ADAMW, "sgd": SGD_CFG}
MS = "com.microsoft"
_RESULTS: list[tuple[str, bool]] = []
WORK = tempfile.mkdtemp(prefix="ort_inner_state_")  # every file a run writes; removed at exit
atexit.register(shutil.rmtree, WORK, ignore_errors=True)


def tmpdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=WORK))


def check(label: str, ok: bool, detail: str = "") -> bool:
    print(f"{'PASS' if ok else 'FAIL'}  {label}" + (f"\n        {detail}" if detail else ""))
    _RESULTS.append((label, bool(ok)))
    return ok


def finish() -> None:
    failed = [label for label, ok in _RESULTS if not ok]
    print(f"\n{len(_RESULTS) - len(failed)}/{len(_RESULTS)} PASS" + (f"; FAIL: {failed}" if failed else ""))
    sys.exit(1 if failed else 0)


def artifacts(kind: str) -> Path:
    """Fresh generate_artifacts output (tiny MLP, all parameters trainable) in a temp directory."""
    return generate_artifacts(SPEC, OPTS[kind], tmpdir(f"{kind}_"))


def batches(steps: int, seed: int = 1):
    return SPEC.schedule(steps, seed=seed)


def loop(directory, kind: str, checkpoint=None) -> StockLoop:
    return StockLoop(directory, OPTS[kind].lr, checkpoint=checkpoint)


def error_of(fn) -> str | None:
    """Runs fn(); -> None if it succeeds, else the first line of the exception."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 (any ORT failure is an observation)
        line = str(e).strip().splitlines()[0]
        for marker in ("] : ", " was false. "):  # drop ORT's source location and function signature
            line = line.split(marker, 1)[-1]
        return line[:300]
    return None


# ----------------------------------------------------------------------------- checkpoint flatbuffer
def _tensor(t) -> tuple[str, np.ndarray]:
    assert t.DataType() == 1, "float tensors only"
    dims = [t.Dims(i) for i in range(t.DimsLength())]
    return t.Name().decode(), np.frombuffer(t.RawDataAsNumpy().tobytes(), np.float32).reshape(dims).copy()


def read_checkpoint(path) -> dict:
    """-> {"trainable": {name: array}, "frozen": {...}, "groups": [{"name", "step", "lr",
    "states": {param: {state name: array}}}], "version": int} (inline data only)."""
    buf = Path(path).read_bytes()
    ck = Checkpoint.Checkpoint.GetRootAs(buf, 0)
    ms = ck.ModuleState()
    out = {"version": ck.Version(), "groups": [],
           "trainable": dict(_tensor(ms.RequiresGradParams(i)) for i in range(ms.RequiresGradParamsLength())),
           "frozen": dict(_tensor(ms.FrozenParams(i)) for i in range(ms.FrozenParamsLength()))}
    for g in (ck.OptimizerGroups(i) for i in range(ck.OptimizerGroupsLength())):
        states = {}
        for s in (g.OptimizerStates(j) for j in range(g.OptimizerStatesLength())):
            states[s.ParamName().decode()] = dict(_tensor(s.Momentums(m)) for m in range(s.MomentumsLength()))
        out["groups"].append({"name": g.GroupName().decode(), "step": g.Step(),
                              "lr": g.InitialLearningRate(), "states": states})
    return out


def write_checkpoint(path, ck: dict, shared: dict[tuple, tuple] | None = None) -> None:
    """Writes `ck` (read_checkpoint's layout) as an ORT checkpoint flatbuffer.

    shared: {(kind, name): (kind2, name2)}: tensor `name` of kind ("frozen", "trainable" or
    ("state", param)) gets no bytes of its own but points at the raw_data vector of the other one
    (the format allows it; this is how a frozen parameter could alias a moment in the file).
    """
    shared = shared or {}
    b = flatbuffers.Builder(1024)
    raw = {}

    def data(key, arr):
        if key not in raw:
            raw[key] = b.CreateByteVector(np.ascontiguousarray(arr, np.float32).tobytes())
        return raw[key]

    def tensor(key, name, arr):
        rd = data(shared.get(key, key), arr if key not in shared else _lookup(ck, shared[key]))
        nm = b.CreateString(name)
        Tensor.StartDimsVector(b, arr.ndim)
        for d in reversed(arr.shape):
            b.PrependInt64(d)
        dims = b.EndVector()
        Tensor.Start(b); Tensor.AddName(b, nm); Tensor.AddDims(b, dims)
        Tensor.AddDataType(b, 1); Tensor.AddRawData(b, rd)
        return Tensor.End(b)

    def vector(start, items):
        start(b, len(items))
        for it in reversed(items):
            b.PrependUOffsetTRelative(it)
        return b.EndVector()

    # Bytes first for every tensor whose bytes others share (so the shared vector exists once).
    for key in set(shared.values()):
        data(key, _lookup(ck, key))
    req = vector(ModuleState.StartRequiresGradParamsVector,
                 [tensor(("trainable", n), n, a) for n, a in ck["trainable"].items()])
    frz = vector(ModuleState.StartFrozenParamsVector,
                 [tensor(("frozen", n), n, a) for n, a in ck["frozen"].items()])
    ModuleState.Start(b); ModuleState.AddRequiresGradParams(b, req); ModuleState.AddFrozenParams(b, frz)
    module = ModuleState.End(b)
    groups = []
    for g in ck["groups"]:
        states = []
        for p, moms in g["states"].items():
            mv = vector(ParameterOptimizerState.StartMomentumsVector,
                        [tensor((("state", p), m), m, a) for m, a in moms.items()])
            pn = b.CreateString(p)
            ParameterOptimizerState.Start(b); ParameterOptimizerState.AddParamName(b, pn)
            ParameterOptimizerState.AddMomentums(b, mv)
            states.append(ParameterOptimizerState.End(b))
        sv = vector(OptimizerGroup.StartOptimizerStatesVector, states)
        gn = b.CreateString(g["name"])
        OptimizerGroup.Start(b); OptimizerGroup.AddGroupName(b, gn); OptimizerGroup.AddStep(b, g["step"])
        OptimizerGroup.AddInitialLearningRate(b, g["lr"]); OptimizerGroup.AddOptimizerStates(b, sv)
        groups.append(OptimizerGroup.End(b))
    gv = vector(Checkpoint.StartOptimizerGroupsVector, groups)
    PropertyBag.Start(b)
    bag = PropertyBag.End(b)
    Checkpoint.Start(b); Checkpoint.AddVersion(b, ck["version"]); Checkpoint.AddModuleState(b, module)
    Checkpoint.AddOptimizerGroups(b, gv); Checkpoint.AddPropertyBag(b, bag)
    b.Finish(Checkpoint.End(b), file_identifier=b"ODTC")
    Path(path).write_bytes(b.Output())


def _lookup(ck, key):
    kind, name = key
    if kind in ("trainable", "frozen"):
        return ck[kind][name]
    return ck["groups"][0]["states"][kind[1]][name]


def saved(loop_: StockLoop) -> dict:
    """The loop's state as ORT saves it with include_optimizer_state=True (read back)."""
    path = tmpdir("ck_") / "checkpoint"
    loop_.save(path)
    return read_checkpoint(path)


def moments(loop_: StockLoop) -> tuple[dict, int]:
    ck = saved(loop_)
    g = ck["groups"][0]
    return g["states"], g["step"]


# --------------------------------------------------------------------------------------- ONNX bits
def tensor_seq_input(name):
    return helper.make_tensor_sequence_value_info(name, TensorProto.FLOAT, None)


def save_model(model: onnx.ModelProto, path) -> None:
    onnx.save(model, str(path))


def copy_artifacts(src, dst=None) -> Path:
    """Copies the four artifact files (re-saved models) to dst (default: a new temp directory)."""
    dst = Path(dst or tmpdir("art_"))
    dst.mkdir(parents=True, exist_ok=True)
    for f in ("training_model.onnx", "eval_model.onnx", "optimizer_model.onnx", "checkpoint"):
        (dst / f).write_bytes((Path(src) / f).read_bytes())
    return dst


def zeros_like_seq(seq: str, out: str) -> onnx.NodeProto:
    """SequenceMap(seq) -> a new sequence of zero tensors shaped like seq's elements (same order)."""
    body = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["s"]),
         helper.make_node("ConstantOfShape", ["s"], ["z"],
                          value=numpy_helper.from_array(np.zeros(1, np.float32)))],
        "zeros_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    return helper.make_node("SequenceMap", [seq], [out], body=body)


def patch_optimizer(directory, build) -> Path:
    """Rewrites <directory>/optimizer_model.onnx in place, inputs untouched.

    The original optimizer node's flag output is renamed "flag0"; build(graph, node) adds nodes and
    initializers (graph.node / graph.initializer) and returns the names of bool flags it produced;
    the graph's (single) output becomes And(flag0, *flags) under its original name, so every added
    node feeds the output (nothing can be pruned) and the step counter advances only if all are
    true. Returns directory.
    """
    path = Path(directory) / "optimizer_model.onnx"
    m = onnx.load(path)
    g = m.graph
    out = g.output[0].name
    node = next(n for n in g.node if n.domain == MS)
    node.output[0] = "flag0"
    flags = ["flag0"] + list(build(g, node) or [])
    for i, f in enumerate(flags[1:], 1):
        g.node.append(helper.make_node("And", [flags[i - 1] if i == 1 else f"and{i - 1}", f],
                                       [out if i == len(flags) - 1 else f"and{i}"]))
    if len(flags) == 1:
        g.node.append(helper.make_node("Identity", ["flag0"], [out]))
    onnx.save(m, path)
    return Path(directory)


def const(g, name: str, value) -> str:
    g.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    return name


def adamw_node(inputs, out, alpha, beta, weight_decay=0.0, epsilon=1e-6, adam_mode=1, correct_bias=1):
    return helper.make_node("AdamWOptimizer", inputs, [out], domain=MS, alpha=alpha, beta=beta,
                            weight_decay=weight_decay, epsilon=epsilon, adam_mode=adam_mode,
                            correct_bias=correct_bias)
