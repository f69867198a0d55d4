"""End-to-end: models rewritten by ``onnx-lookahead rewrite`` train with Lookahead.

Each test builds a training_info model, rewrites it with the CLI, trains it in the reference
runtime and compares, at every step, the ORIGINAL weights (``state[weight]``) and the reported
losses with the NumPy Lookahead reference (README.md, "Lookahead semantics").  The tests are black box:
they never look at the names or structure the rewrite adds, so any correct implementation passes.

Checking every step matters: wrong variants (sync at step 1, k+1, ...; slow weights created at the
first step or first sync; period k+1) agree with the right one at isolated steps.  Each test also
checks that Lookahead differs from the plain optimizer, otherwise agreement would prove nothing.

The CLI is the installed package's console script (or ``ONNX_LOOKAHEAD_BIN``, see
lookahead_testkit.cli); the command line is built in one place, ``rewrite_command``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import List

import numpy as np
import onnx
import pytest

import tinfo_models as tm
from lookahead_testkit import cli
import tinfo_reference as ref
from onnx_lookahead import training_info as rt

REPO = Path(__file__).resolve().parent.parent.parent
ATOL = 1e-5
STEPS = 13  # four syncs at k=3, and a step after the last one


def lookahead_binary() -> str:
    return str(cli.find_binary()[0])


def rewrite_command(model_path: str, output_path: str, k: int, alpha: float) -> List[str]:
    """The one place that knows the CLI's syntax."""
    return [lookahead_binary(), "rewrite", model_path, "--output", output_path, "-k", str(k), "--alpha", repr(alpha)]


def rewrite(model: onnx.ModelProto, directory: Path, k: int, alpha: float) -> onnx.ModelProto:
    """Run the CLI on ``model`` and return the rewritten model."""
    _, problem = cli.find_binary()
    if problem:
        pytest.fail(problem)
    source, target = directory / "original.onnx", directory / f"lookahead_k{k}_a{alpha}.onnx"
    onnx.save(model, str(source))
    done = subprocess.run(rewrite_command(str(source), str(target), k, alpha), capture_output=True, text=True)
    assert done.returncode == 0, f"rewrite failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return onnx.load(str(target))


def run_runtime(spec: tm.ModelSpec, model: onnx.ModelProto, backend: str, feeds, eval_feeds):
    """Train ``model`` from initialize(); per step: algorithm losses, original weights, eval losses."""
    session = rt.TrainingSession(model, backend=backend)
    session.initialize()
    return [_observe(spec, session, session.step(feed), eval_feeds) for feed in feeds]


def _observe(spec, session, outputs, eval_feeds):
    state = session.state
    losses = {name: float(outputs[name]) for name in spec.losses}
    predictions = session.run_inference({"X": eval_feeds["X"]})
    eval_losses = {
        head.label: ref.mse_from_predictions(predictions[head.pred], eval_feeds[head.label]) for head in spec.heads
    }
    return losses, {w: state[w] for w in spec.weight_names}, eval_losses


def assert_follows(spec, observed, records: List[ref.StepRecord], atol: float = ATOL) -> None:
    """Every step: original weights, algorithm losses and eval losses match the reference."""
    assert len(observed) == len(records)
    for step, ((losses, weights, eval_losses), record) in enumerate(zip(observed, records), start=1):
        for name in spec.weight_names:
            np.testing.assert_allclose(weights[name], record.weights[name], rtol=0, atol=atol, err_msg=f"step {step}: {name}")
        for name, value in record.losses.items():
            assert abs(losses[name] - value) <= atol, f"step {step}: {name} {losses[name]} != {value}"
        for label, value in record.eval_losses.items():
            assert abs(eval_losses[label] - value) <= atol, f"step {step}: eval loss {label}"


def assert_differs(spec, a: List[ref.StepRecord], b: List[ref.StepRecord], margin: float = 1e-3) -> None:
    gap = max(np.abs(x.weights[w] - y.weights[w]).max() for x, y in zip(a, b) for w in spec.weight_names)
    assert gap > margin, f"Lookahead and the plain optimizer agree (gap {gap}): the test would prove nothing"


MODELS = {
    "sgd_mlp": lambda: tm.single_model("sgd"),
    "sgd_linear_no_initialization": lambda: tm.single_model("sgd", network="linear", with_initialization=False),
    "momentum": lambda: tm.single_model("momentum"),
    "momentum_nesterov": lambda: tm.single_model("momentum", mode="nesterov"),
    "adam": lambda: tm.single_model("adam", init_optimizer_state=True),
    "adagrad": lambda: tm.single_model("adagrad"),
    "two_independent": lambda: tm.two_algorithm_model(coupled=False),
    "two_coupled": lambda: tm.two_algorithm_model(coupled=True),
}


def _data(spec):
    return tm.batches(spec, STEPS), tm.batches(spec, 1, batch=16, seed=321)[0]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_rewritten_model_follows_lookahead_reference_on_ort(name, tmp_path):
    spec = MODELS[name]()
    k, alpha = 3, 0.5
    feeds, eval_feeds = _data(spec)
    expected = ref.lookahead_reference_run(spec, feeds, k, alpha, eval_feeds)
    plain = ref.plain_reference_run(spec, feeds, eval_feeds)
    assert_differs(spec, expected, plain)

    rewritten = rewrite(spec.model, tmp_path, k, alpha)
    rt.check_training_model(rewritten)
    assert_follows(spec, run_runtime(spec, rewritten, "ort", feeds, eval_feeds), expected)


@pytest.mark.parametrize("name", ["adam", "two_coupled"])
def test_rewritten_model_follows_lookahead_reference_on_reference_backend(name, tmp_path):
    spec = MODELS[name]()
    k, alpha = 2, 0.8
    feeds, eval_feeds = _data(spec)
    feeds = feeds[:7]
    expected = ref.lookahead_reference_run(spec, feeds, k, alpha, eval_feeds)
    assert_differs(spec, expected, ref.plain_reference_run(spec, feeds, eval_feeds))
    rewritten = rewrite(spec.model, tmp_path, k, alpha)
    assert_follows(spec, run_runtime(spec, rewritten, "reference", feeds, eval_feeds), expected)


@pytest.mark.parametrize("k, alpha", [(1, 0.5), (2, 0.8), (5, 0.5), (6, 0.3)])
def test_other_k_and_alpha(k, alpha, tmp_path):
    spec = tm.single_model("momentum")
    feeds, eval_feeds = _data(spec)
    expected = ref.lookahead_reference_run(spec, feeds, k, alpha, eval_feeds)
    assert_differs(spec, expected, ref.plain_reference_run(spec, feeds, eval_feeds))
    rewritten = rewrite(spec.model, tmp_path, k, alpha)
    assert_follows(spec, run_runtime(spec, rewritten, "ort", feeds, eval_feeds), expected)


@pytest.mark.parametrize("name", ["sgd_mlp", "momentum", "adam", "adagrad", "two_independent"])
def test_k1_alpha1_trains_like_the_original(name, tmp_path):
    """Lookahead(k=1, alpha=1) is the inner optimizer: bit-identical weights and losses at every step.

    Exact, not approximate: slow + 1 * (fast - slow) need not round back to fast in floating point,
    so the rewrite copies the inner optimizer's result when alpha == 1, and this test holds it to that.
    """
    spec = MODELS[name]()
    feeds, eval_feeds = _data(spec)
    original = run_runtime(spec, spec.model, "ort", feeds, eval_feeds)
    rewritten = run_runtime(spec, rewrite(spec.model, tmp_path, 1, 1.0), "ort", feeds, eval_feeds)
    for step, ((l0, w0, e0), (l1, w1, e1)) in enumerate(zip(original, rewritten), start=1):
        for w in spec.weight_names:
            np.testing.assert_array_equal(w1[w], w0[w], err_msg=f"step {step}: {w}")
        for name_ in l0:
            assert l0[name_] == l1[name_], f"step {step}: {name_}"
        for label in e0:
            assert e0[label] == e1[label], f"step {step}: {label}"


def test_initialize_resets_slow_weights_and_counter(tmp_path):
    """After training and initialize(), the rewritten model starts the same trajectory again."""
    spec = tm.single_model("adam")
    k, alpha = 3, 0.5
    feeds, eval_feeds = _data(spec)
    expected = ref.lookahead_reference_run(spec, feeds[:7], k, alpha, eval_feeds)
    session = rt.TrainingSession(rewrite(spec.model, tmp_path, k, alpha))
    session.initialize()
    for feed in feeds[:5]:  # stop between two syncs, with slow weights != weights
        session.step(feed)
    session.initialize()
    for w in spec.weight_names:
        np.testing.assert_array_equal(session.state[w], spec.initial_weights[w])
    observed = [_observe(spec, session, session.step(feed), eval_feeds) for feed in feeds[:7]]
    assert_follows(spec, observed, expected)


def test_checkpoint_keeps_slow_weights_and_counter(tmp_path):
    """A model saved mid-period resumes the same Lookahead trajectory (slow weights + counter saved)."""
    spec = tm.single_model("momentum")
    k, alpha = 3, 0.5
    feeds, eval_feeds = _data(spec)
    expected = ref.lookahead_reference_run(spec, feeds, k, alpha, eval_feeds)
    session = rt.TrainingSession(rewrite(spec.model, tmp_path, k, alpha))
    session.initialize()
    observed = [_observe(spec, session, session.step(feed), eval_feeds) for feed in feeds[:4]]
    path = tmp_path / "checkpoint.onnx"
    onnx.save(session.to_model(), str(path))
    resumed = rt.TrainingSession(str(path))
    observed += [_observe(spec, resumed, resumed.step(feed), eval_feeds) for feed in feeds[4:]]
    assert_follows(spec, observed, expected)
