"""onnx_lookahead.ort.update_bn: BatchNorm running statistics recomputed for the averaged weights.

The model has two BatchNormalization nodes in training mode (momentum 0.9 and 0.8, so the
per-node momentum matters), between MatMul layers. generate_artifacts (1.19.2) turns them into
BatchNormInternal in the training graph, whose running mean/var outputs ONNX Runtime writes in
place into the frozen checkpoint parameters at every training forward; its eval model keeps the
training outputs on BatchNormalization(training_mode=0), which ORT refuses to load, so
`fixed_eval` strips them (the README's recipe) before the rewrite.

The reference is NumPy: the model's forward in training mode (each BatchNorm normalizes with its
batch's mean and biased variance, as ORT does) at the weights read from the checkpoint, and the
statistics torch's update_bn(momentum=None) keeps: the plain average over the batches of each
batch's mean and variance. Every test also shows that the averaged weights differ from the
current ones and that the statistics at them differ from those at the current weights, and that
training after update_bn is step for step what it is without it.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnx_lookahead
from lookahead_testkit import zoo
from lookahead_testkit.ort import CheckpointState, Module, Optimizer, run_inference
from lookahead_testkit.reference import OptimizerConfig
from onnx_lookahead import Error
from onnx_lookahead.ort import export_for_inference, record, sync_parameters, update_bn

F32 = np.float32
EPS = 1e-5
MOMENTUM = {"bn1": 0.9, "bn2": 0.8}
TRAINABLE = ("W1", "bn1.weight", "bn1.bias", "W2", "bn2.weight", "bn2.bias", "W3", "b3")
STATS = ("bn1.running_mean", "bn1.running_var", "bn2.running_mean", "bn2.running_var")
LR = 0.2
TOL = 1e-5


def _build():
    rs = np.random.RandomState(31)
    w = zoo._w
    inits = {"W1": w(rs, 4, 6), "W2": w(rs, 6, 5), "W3": w(rs, 5, 2), "b3": w(rs, 2, scale=0.1)}
    for bn, c in (("bn1", 6), ("bn2", 5)):
        inits.update({f"{bn}.weight": (1 + 0.1 * rs.randn(c)).astype(F32), f"{bn}.bias": w(rs, c, scale=0.1),
                      f"{bn}.running_mean": np.zeros(c, F32), f"{bn}.running_var": np.ones(c, F32)})
    nodes = [zoo._node("MatMul", ["x", "W1"], ["m1"])]
    for i, bn in ((1, "bn1"), (2, "bn2")):
        nodes += [zoo._node("BatchNormalization", [f"m{i}", f"{bn}.weight", f"{bn}.bias", f"{bn}.running_mean",
                                                   f"{bn}.running_var"], [f"n{i}", f"{bn}.mean_out", f"{bn}.var_out"],
                            epsilon=EPS, momentum=MOMENTUM[bn], training_mode=1),
                  zoo._node("Relu", [f"n{i}"], [f"h{i}"])]
        nodes.append(zoo._node("MatMul", [f"h{i}", f"W{i + 1}"], [f"m{i + 1}"]))
    nodes.append(zoo._node("Add", ["m3", "b3"], ["y"]))
    return nodes, [zoo._vi("x", zoo.FLOAT, ["N", 4])], [zoo._vi("y", zoo.FLOAT, ["N", 2])], inits


BN_TRAIN = zoo.ZooModel("batchnorm_training_mode", _build, TRAINABLE, zoo._regression_batch(4, 2, 41),
                        frozen=STATS)


def fixed_eval(directory: Path) -> Path:
    """Drops the training-mode outputs that generate_artifacts leaves on the eval model's
    BatchNormalization nodes (ORT: "number of op outputs should be 1 when Training_mode = False")."""
    path = directory / "eval_model.onnx"
    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.op_type == "BatchNormalization":
            del node.output[1:]
    onnx.save(model, str(path))
    return directory


@pytest.fixture(scope="module")
def stock(tmp_path_factory):
    return fixed_eval(zoo.generate(BN_TRAIN, OptimizerConfig("sgd", lr=LR), tmp_path_factory.mktemp("bn_stock")))


_REWRITTEN = {}


def rewritten(stock: Path, scheme: str, **settings) -> Path:
    key = (scheme, tuple(sorted(settings.items())))
    if key not in _REWRITTEN:
        out = stock.parent / f"bn_{scheme}_{'_'.join(f'{k}{v}' for k, v in sorted(settings.items()))}"
        onnx_lookahead.rewrite(stock, out, scheme=scheme, force=True, **settings)
        _REWRITTEN[key] = out
    return _REWRITTEN[key]


class Loop:
    def __init__(self, directory: Path):
        self.directory = directory
        self.state = CheckpointState.load_checkpoint(str(directory / "checkpoint"))
        self.module = Module(str(directory / "training_model.onnx"), self.state, str(directory / "eval_model.onnx"))
        self.optimizer = Optimizer(str(directory / "optimizer_model.onnx"), self.module)
        self.optimizer.set_learning_rate(LR)
        self.module.train()

    def step(self, batch) -> float:
        loss = float(self.module(*batch))
        self.optimizer.step()
        self.module.lazy_reset_grad()
        return loss

    def get(self, name: str) -> np.ndarray:
        return np.array(self.state.parameters[name].data, copy=True)

    def update_bn(self, batches, **kw):
        return update_bn(self.module, self.state, self.directory / "training_model.onnx", batches, **kw)


def schedule(steps: int, seed: int = 1, size: int = 16):
    rs = np.random.RandomState(seed)
    return [BN_TRAIN.batch(rs, size) for _ in range(steps)]


DATA = schedule(4, seed=7, size=24)   # the update_bn pass


# ------------------------------------------------------------------------------ NumPy reference
def forward(weights, x, stats=None):
    """The model in float64: training mode (batch statistics; -> y, [(mean, var) per BN]) when
    stats is None, else inference mode with the given running statistics."""
    h, seen = np.asarray(x, np.float64), []
    h = h @ weights["W1"]
    for i, bn in ((1, "bn1"), (2, "bn2")):
        if stats is None:
            mean, var = h.mean(axis=0), h.var(axis=0)
        else:
            mean, var = stats[f"{bn}.running_mean"], stats[f"{bn}.running_var"]
        seen.append((mean, var))
        h = (h - mean) / np.sqrt(var + EPS) * weights[f"{bn}.weight"] + weights[f"{bn}.bias"]
        h = np.maximum(h, 0) @ weights[f"W{i + 1}"]
    return h + weights["b3"], seen


def reference_stats(weights, batches) -> dict:
    """torch update_bn(momentum=None): the average over the batches of each batch's statistics."""
    per_batch = [forward(weights, x)[1] for x, _ in batches]
    out = {}
    for j, bn in enumerate(("bn1", "bn2")):
        out[f"{bn}.running_mean"] = np.mean([s[j][0] for s in per_batch], axis=0)
        out[f"{bn}.running_var"] = np.mean([s[j][1] for s in per_batch], axis=0)
    return out


def weights_of(loop: Loop, names) -> dict:
    return {p: loop.get(n).astype(np.float64) for p, n in zip(TRAINABLE, names)}


def max_diff(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - b[k]))) for k in a)


def averaged_names(loop: Loop) -> list[str]:
    by_name = {w["name"]: w["state"][0] for w in record(loop.state)["parameters"]}
    return [by_name[p] for p in TRAINABLE]


# ------------------------------------------------------------------------------------ the tests
def test_training_graph_updates_running_statistics_in_place(stock):
    """The premise: a training forward writes m*running + (1-m)*batch statistic into the checkpoint."""
    loop = Loop(stock)
    before = {n: loop.get(n) for n in STATS}
    x, t = schedule(1)[0]
    loop.module(x, t)
    _, seen = forward(weights_of(loop, TRAINABLE), x)
    for j, bn in enumerate(("bn1", "bn2")):
        m = MOMENTUM[bn]
        np.testing.assert_allclose(loop.get(f"{bn}.running_mean"), m * before[f"{bn}.running_mean"] + (1 - m) * seen[j][0],
                                   atol=TOL)
        np.testing.assert_allclose(loop.get(f"{bn}.running_var"), m * before[f"{bn}.running_var"] + (1 - m) * seen[j][1],
                                   atol=TOL)


@pytest.mark.parametrize("scheme,settings", [("ema", dict(decay=0.7)), ("swa", dict(swa_start=2)),
                                             ("lookahead", dict(k=3, alpha=0.5))])
def test_update_bn_averaged_weights(stock, scheme, settings):
    """update_bn at the averaged weights matches NumPy, evaluation and export use it, and training
    afterwards is step for step that of a twin loop that never called it."""
    directory = rewritten(stock, scheme, **settings)
    loop, twin = Loop(directory), Loop(directory)
    steps = schedule(9)
    for batch in steps[:5]:   # step 5: an update is pending for every scheme (EMA every step, Lookahead k=3 at 3, 6)
        assert loop.step(batch) == twin.step(batch)
    # the reference reads the weights as evaluation sees them: any pending update applied
    probe = Loop(directory)
    for batch in steps[:5]:
        probe.step(batch)
    sync_parameters(probe.state)
    current, averaged = weights_of(probe, TRAINABLE), weights_of(probe, averaged_names(probe))
    assert max_diff(current, averaged) > 1e-4
    trained_stats = {n: loop.get(n) for n in STATS}
    others = {n: loop.get(n) for n in record(loop.state)["counters"] + record(loop.state).get("shared", [])}

    summary = loop.update_bn(DATA, weights="averaged")
    assert summary == {"weights": "averaged", "batches": len(DATA), "statistics": list(STATS)}
    got = {n: loop.get(n) for n in STATS}
    want = reference_stats(averaged, DATA)
    assert max_diff(got, want) < TOL
    at_current = reference_stats(current, DATA)
    assert max_diff(at_current, want) > 1e-4 and max_diff(trained_stats, want) > 1e-4
    # weights, average and counters as sync_parameters leaves them; the module back in train mode
    assert max_diff(weights_of(loop, TRAINABLE), current) == 0
    assert max_diff(weights_of(loop, averaged_names(loop)), averaged) == 0
    assert all(np.array_equal(loop.get(n), probe.get(n)) for n in others)
    assert loop.module.training

    # evaluation and export read the averaged weights with the recomputed statistics
    x, t = BN_TRAIN.eval_batch()
    eval_weights = averaged if scheme != "lookahead" else current
    if scheme == "lookahead":   # Lookahead evaluates the current weights by default: recompute for them too
        loop.update_bn(DATA)
        assert max_diff({n: loop.get(n) for n in STATS}, at_current) < TOL
    stats = {n: loop.get(n).astype(np.float64) for n in STATS}
    y, _ = forward(eval_weights, x, stats)
    loop.module.eval()
    np.testing.assert_allclose(float(loop.module(x, t)), np.mean((y - t) ** 2), rtol=TOL, atol=TOL)
    loop.module.train()
    exported = directory.parent / f"exported_{scheme}.onnx"
    export_for_inference(loop.module, exported, ["y"], force=True)
    (y_exported,) = run_inference(exported, {"x": x}, ["y"])
    np.testing.assert_allclose(y_exported, y, atol=TOL)

    # training goes on exactly as without the pass (training mode normalizes with batch statistics)
    for batch in steps[5:]:
        assert loop.step(batch) == twin.step(batch)
    sync_parameters(loop.state), sync_parameters(twin.state)
    for name in list(TRAINABLE) + averaged_names(loop):
        np.testing.assert_array_equal(loop.get(name), twin.get(name))


def test_update_bn_current_weights_and_eval_mode_kept(stock):
    directory = rewritten(stock, "ema", decay=0.7)
    loop = Loop(directory)
    for batch in schedule(4):
        loop.step(batch)
    sync_parameters(loop.state)
    current, averaged = weights_of(loop, TRAINABLE), weights_of(loop, averaged_names(loop))
    loop.module.eval()
    assert loop.update_bn(iter(DATA), weights="current")["weights"] == "current"
    assert not loop.module.training
    want = reference_stats(current, DATA)
    assert max_diff({n: loop.get(n) for n in STATS}, want) < TOL
    assert max_diff(reference_stats(averaged, DATA), want) > 1e-4


def test_update_bn_stock_artifacts(stock):
    """Artifacts that were not rewritten: the statistics of the current weights; no average to ask for."""
    loop = Loop(stock)
    for batch in schedule(3):
        loop.step(batch)
    current = weights_of(loop, TRAINABLE)
    assert loop.update_bn(DATA)["weights"] == "current"
    assert max_diff({n: loop.get(n) for n in STATS}, reference_stats(current, DATA)) < TOL
    assert max_diff(weights_of(loop, TRAINABLE), current) == 0
    with pytest.raises(Error, match="not rewritten"):
        loop.update_bn(DATA, weights="averaged")


def test_update_bn_refusals_leave_the_state_alone(stock):
    directory = rewritten(stock, "swa", swa_start=2)
    loop = Loop(directory)
    for batch in schedule(3):
        loop.step(batch)
    sync_parameters(loop.state)
    before = {n: loop.get(n) for n, _ in loop.state.parameters}
    with pytest.raises(Error, match="at least one batch"):
        loop.update_bn([])
    with pytest.raises(Error, match="expected 'current' or 'averaged'"):
        loop.update_bn(DATA, weights="fast")
    bad = [DATA[0], (DATA[1][0][:, :3], DATA[1][1])]   # the second batch fails inside ORT
    with pytest.raises(Exception):
        loop.update_bn(bad)
    for name, value in before.items():
        np.testing.assert_array_equal(loop.get(name), value)


def test_update_bn_inference_form_batchnorm(tmp_path):
    """BatchNormalization in inference form (one output, as torch.onnx.export writes a model in eval
    mode; zoo.BATCHNORM): generate_artifacts still makes the training graph's node a training-mode
    BatchNormInternal (momentum 0.9) that updates the running statistics, and the eval model loads
    as it is. update_bn recomputes them like for the training-mode export."""
    model = zoo.BATCHNORM
    directory = tmp_path / "bn_inference_ema"
    onnx_lookahead.rewrite(zoo.generate(model, OptimizerConfig("sgd", lr=LR), tmp_path / "bn_inference"),
                           directory, scheme="ema", decay=0.7)
    loop = Loop(directory)
    rs = np.random.RandomState(0)
    for _ in range(4):
        loop.step(model.batch(rs, 12))
    data = [model.batch(rs, 20) for _ in range(3)]
    sync_parameters(loop.state)
    names = ("W1", "bn.weight", "bn.bias")
    by_name = {w["name"]: w["state"][0] for w in record(loop.state)["parameters"]}
    averaged = {n: loop.get(by_name[n]).astype(np.float64) for n in names}
    current = {n: loop.get(n).astype(np.float64) for n in names}

    def stats(w):
        h = [np.asarray(x, np.float64) @ w["W1"] for x, _ in data]
        return {"bn.running_mean": np.mean([b.mean(axis=0) for b in h], axis=0),
                "bn.running_var": np.mean([b.var(axis=0) for b in h], axis=0)}

    summary = loop.update_bn(data)
    assert summary == {"weights": "averaged", "batches": 3, "statistics": ["bn.running_mean", "bn.running_var"]}
    got = {n: loop.get(n) for n in summary["statistics"]}
    assert max_diff(got, stats(averaged)) < TOL
    assert max_diff(current, averaged) > 1e-4 and max_diff(stats(current), stats(averaged)) > 1e-4


def test_update_bn_without_batchnorm(tmp_path):
    """No BatchNorm: nothing to recompute, nothing run, nothing changed."""
    directory = zoo.generate(zoo.SHARED, OptimizerConfig("sgd", lr=LR), tmp_path / "shared")
    loop = Loop(directory)
    loop.step(zoo.SHARED.batch(np.random.RandomState(0), 8))
    before = {n: loop.get(n) for n, _ in loop.state.parameters}
    assert loop.update_bn([zoo.SHARED.batch(np.random.RandomState(1), 8)]) == \
        {"weights": None, "batches": 0, "statistics": []}
    for name, value in before.items():
        np.testing.assert_array_equal(loop.get(name), value)
