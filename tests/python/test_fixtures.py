"""The checked-in fixtures (fixtures/) are fresh and are what fixtures/generate.py says they are.

The Rust tests read these files, so a silently stale or wrong fixture would mislead them:
- regenerating in a fresh process reproduces every file byte for byte;
- the ORT artifacts train in the stock loop exactly like the plain NumPy inner optimizer;
- the training_info model's algorithm performs one plain SGD step per iteration, its
  initialization yields the initial weights, and the inference model computes the NumPy forward.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from lookahead_testkit.cli import REPO
from lookahead_testkit.compare import assert_steps_close
from lookahead_testkit.model import TANH_MLP
from lookahead_testkit.ort import StockLoop, run_inference
from lookahead_testkit.reference import reference_run
from lookahead_testkit.training_info import train_step

FIXTURES = REPO / "fixtures"
_spec = importlib.util.spec_from_file_location("fixture_generator", FIXTURES / "generate.py")
generator = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generator)


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts}


def test_fixtures_are_fresh(tmp_path):
    # a fresh process: generate_artifacts numbers its graph names per process
    res = subprocess.run([sys.executable, FIXTURES / "generate.py", "--out", tmp_path],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    fresh, checked_in = _files(tmp_path), _files(FIXTURES)
    assert sorted(fresh) == sorted(checked_in), "fixture set differs: run fixtures/generate.py"
    stale = [str(name) for name in fresh if fresh[name] != checked_in[name]]
    assert not stale, f"stale fixtures {stale}: run target/py-venv/bin/python fixtures/generate.py"


@pytest.mark.parametrize("name", sorted(generator.ORT_FIXTURES))
def test_ort_fixture_trains_like_the_inner_optimizer(name):
    spec, opt = generator.ORT_FIXTURES[name]
    schedule, batch = spec.schedule(6), spec.eval_batch()
    ref = reference_run(spec, opt, schedule, batch)
    losses, evals = StockLoop(FIXTURES / name, opt.lr).run(schedule, batch)
    assert_steps_close("training loss", losses, ref.losses, 1e-5)
    assert_steps_close("eval loss", evals, ref.eval_losses, 1e-5)


def test_inference_fixture_computes_the_forward():
    x = TANH_MLP.batch(np.random.RandomState(4), 5)[0]
    (y,) = run_inference(FIXTURES / "mlp_inference.onnx", {"x": x}, ["y"])
    np.testing.assert_allclose(y, TANH_MLP.forward(TANH_MLP.init_params(), x), atol=1e-6)


def test_training_info_fixture_is_plain_sgd():
    spec, lr = generator.TINFO_MLP, np.float32(generator.TINFO_LR)
    model = onnx.load(FIXTURES / "training_info_sgd.onnx")
    onnx.checker.check_model(model)
    (info,) = model.training_info
    assert {b.key: b.value for b in info.update_binding} == {p: f"{p}_new" for p in spec.param_names}

    init_outputs = [o.name for o in info.initialization.output]
    initial = dict(zip(init_outputs, ReferenceEvaluator(info.initialization, opsets={o.domain: o.version for o in model.opset_import}).run(init_outputs, {})))
    expected = spec.init_params()
    for binding in info.initialization_binding:
        np.testing.assert_array_equal(initial[binding.value], expected[binding.key])

    weights = spec.init_params()
    for x, target in (b for (b,) in spec.schedule(3, size=6)):
        loss, grads = spec.loss_and_grads(weights, x, target)
        out = train_step(model, {"x": x, "target": target})
        weights = {n: weights[n] - lr * grads[n] for n in spec.param_names}
        assert float(out["loss"]) == pytest.approx(float(loss), abs=1e-6)
        stored = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        for n in spec.param_names:
            np.testing.assert_allclose(stored[n], weights[n], atol=1e-6, err_msg=n)
