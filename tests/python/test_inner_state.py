"""End-to-end: `rewrite --inner-state keep|reset|pullback` on training_info models.

At a sync, reset restarts the inner optimizer (its moments/accumulators at zero, its update count
at 0, as optax's reset_state), pullback interpolates the momentum (Adam: the first moment) with the
one cached at the previous sync (the authors' code). Each case trains the rewritten model in the
reference runtime's ONNX Runtime backend and compares the weights, at every step, with the NumPy
reference (tinfo_reference._sync_inner_state), and checks that the run differs from keep and from
the plain optimizer, so a rewrite that ignored the option fails.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import tinfo_models as tm
import tinfo_reference as ref
from lookahead_testkit.cli import REPO
from onnx_lookahead import training_info as rt

K, ALPHA, STEPS, ATOL = 3, 0.5, 13, 1e-5

MODELS = {
    "momentum": lambda: tm.single_model("momentum"),
    "momentum_nesterov": lambda: tm.single_model("momentum", mode="nesterov"),
    "adam": lambda: tm.single_model("adam", init_optimizer_state=True),
    "adam_no_initialization": lambda: tm.single_model("adam", with_initialization=False),
    "adagrad": lambda: tm.single_model("adagrad"),
    "two_independent": lambda: tm.two_algorithm_model(coupled=False),
}
CASES = [(m, p) for m in MODELS for p in ("reset", "pullback") if not (m == "adagrad" and p == "pullback")]


def _rewrite(cli, spec, tmp_path, policy, *extra):
    source, out = tmp_path / "model.onnx", tmp_path / f"{policy}.onnx"
    onnx.save(spec.model, str(source))
    cli.run_ok("rewrite", source, "--output", out, "-k", K, "--alpha", ALPHA, "--inner-state", policy, *extra)
    return source, out


def _train(session, spec, feeds):
    observed = []
    for feed in feeds:
        session.step(feed)
        observed.append({w: session.state[w].copy() for w in spec.weight_names})
    return observed


def _assert_follows(spec, observed, expected, first_step=1):
    for step, (weights, record) in enumerate(zip(observed, expected), start=first_step):
        for w in spec.weight_names:
            np.testing.assert_allclose(weights[w], record.weights[w], rtol=0, atol=ATOL, err_msg=f"step {step}: {w}")


def _assert_differs(spec, a, b, what):
    gap = max(np.abs(x.weights[w] - y.weights[w]).max() for x, y in zip(a, b) for w in spec.weight_names)
    assert gap > 1e-3, f"indistinguishable from {what} ({gap:.2g}): the test would prove nothing"


@pytest.mark.parametrize("name,policy", CASES, ids=[f"{m}-{p}" for m, p in CASES])
def test_inner_state_follows_the_reference(name, policy, lookahead_cli, tmp_path):
    spec = MODELS[name]()
    feeds = tm.batches(spec, STEPS)
    expected = ref.lookahead_reference_run(spec, feeds, K, ALPHA, inner_state=policy)
    _assert_differs(spec, expected, ref.lookahead_reference_run(spec, feeds, K, ALPHA), "keep")
    _assert_differs(spec, expected, ref.plain_reference_run(spec, feeds), "the plain optimizer")
    _, out = _rewrite(lookahead_cli, spec, tmp_path, policy)
    rewritten = onnx.load(str(out))
    rt.check_training_model(rewritten)
    session = rt.TrainingSession(rewritten, backend="ort")
    session.initialize()
    _assert_follows(spec, _train(session, spec, feeds), expected)
    report = lookahead_cli.inspect(out)
    assert report["rewrite"]["inner_state"] == policy
    assert {p["name"] for p in report["parameters"] if p["lookahead"]} == set(spec.weight_names)


@pytest.mark.parametrize("policy", ["reset", "pullback"])
def test_inner_state_on_the_onnx_reference_backend(policy, lookahead_cli, tmp_path):
    spec = MODELS["adam"]()
    feeds = tm.batches(spec, 7)
    _, out = _rewrite(lookahead_cli, spec, tmp_path, policy)
    session = rt.TrainingSession(onnx.load(str(out)), backend="reference")
    session.initialize()
    _assert_follows(spec, _train(session, spec, feeds),
                    ref.lookahead_reference_run(spec, feeds, K, ALPHA, inner_state=policy))


@pytest.mark.parametrize("policy", ["reset", "pullback"])
def test_initialize_restarts_and_a_saved_model_resumes(policy, lookahead_cli, tmp_path):
    """initialize() resets the caches with the slow weights and the counter; a model saved
    mid-cycle resumes the same trajectory (the caches are saved state)."""
    spec = MODELS["momentum"]()
    feeds = tm.batches(spec, STEPS)
    expected = ref.lookahead_reference_run(spec, feeds, K, ALPHA, inner_state=policy)
    _, out = _rewrite(lookahead_cli, spec, tmp_path, policy)
    session = rt.TrainingSession(onnx.load(str(out)), backend="ort")
    session.initialize()
    _train(session, spec, feeds[:8])  # two syncs: caches and moments away from their start
    session.initialize()
    observed = _train(session, spec, feeds[:5])
    saved = tmp_path / "saved.onnx"
    onnx.save(session.to_model(), str(saved))
    resumed = rt.TrainingSession(str(saved), backend="ort")
    observed += _train(resumed, spec, feeds[5:])
    _assert_follows(spec, observed, expected)


@pytest.mark.parametrize("policy", ["reset", "pullback"])
def test_finalize_gives_the_model_back(policy, lookahead_cli, tmp_path):
    spec = MODELS["adam"]()
    source, out = _rewrite(lookahead_cli, spec, tmp_path, policy)
    back = tmp_path / "back.onnx"
    lookahead_cli.run_ok("finalize", out, "--output", back)
    assert back.read_bytes() == source.read_bytes()


def test_python_api_takes_inner_state(tmp_path):
    import onnx_lookahead

    spec = MODELS["momentum"]()
    source = tmp_path / "model.onnx"
    onnx.save(spec.model, str(source))
    onnx_lookahead.rewrite(source, tmp_path / "out.onnx", k=K, alpha=ALPHA, inner_state="pullback")
    assert onnx_lookahead.inspect(tmp_path / "out.onnx")["rewrite"]["inner_state"] == "pullback"
    with pytest.raises(onnx_lookahead.Error, match='inner_state must be "keep", "reset" or "pullback"'):
        onnx_lookahead.rewrite(source, tmp_path / "bad.onnx", inner_state="zero")
    assert not (tmp_path / "bad.onnx").exists()


REFUSALS = [
    # (model, policy, extra flags, part of the error line)
    ("sgd", "reset", [], "weight W1 (SGD) has no optimizer state to reset"),
    ("sgd", "pullback", [], "has no momentum to pull back"),
    ("adagrad", "pullback", [], "weight W1 (Adagrad) has no momentum to pull back"),
    ("adam", "reset", ["--include", "W*"], "restarts the update count"),
]


@pytest.mark.parametrize("model,policy,extra,needle", REFUSALS, ids=[f"{m}-{p}{'-' + e[1] if e else ''}" for m, p, e, _ in REFUSALS])
def test_inner_state_refusals(model, policy, extra, needle, lookahead_cli, tmp_path):
    spec = tm.single_model(model)
    source, out = tmp_path / "model.onnx", tmp_path / "out.onnx"
    onnx.save(spec.model, str(source))
    res = lookahead_cli.run("rewrite", source, "--output", out, "--inner-state", policy, *extra)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert needle in lines[0], lines[0]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_pullback_with_a_subset_of_a_nodes_weights(lookahead_cli, tmp_path):
    """pullback touches only the selected weights' momenta (the update count is kept), so it may
    wrap part of an optimizer node."""
    spec = MODELS["adam"]()
    feeds = tm.batches(spec, STEPS)
    _, out = _rewrite(lookahead_cli, spec, tmp_path, "pullback", "--exclude", "B*")
    session = rt.TrainingSession(onnx.load(str(out)), backend="ort")
    session.initialize()
    expected = ref.lookahead_reference_run(spec, feeds, K, ALPHA, wrapped=["W1", "W2"], inner_state="pullback")
    _assert_differs(spec, expected, ref.lookahead_reference_run(spec, feeds, K, ALPHA, inner_state="pullback"),
                    "pullback on every weight")
    _assert_follows(spec, _train(session, spec, feeds), expected)
    assert json.loads(json.dumps(lookahead_cli.inspect(out)["rewrite"]))["inner_state"] == "pullback"


@pytest.mark.parametrize("fixture,policy,needle", [
    ("ort_sgd", "reset", "ONNX Runtime SGD artifacts keep no inner optimizer state"),
    ("ort_sgd", "pullback", "ONNX Runtime SGD artifacts keep no inner optimizer state"),
    ("ort_adamw", "pullback", "gives it nowhere to keep the momentum saved at the previous sync"),
])
def test_ort_refusals_say_why(fixture, policy, needle, lookahead_cli, tmp_path):
    """What ONNX Runtime 1.19.2 does not allow (docs/experiments/ort_inner_state/) is refused."""
    source = REPO / "fixtures" / fixture
    res = lookahead_cli.run("rewrite", source, "--output", tmp_path / "out", "--inner-state", policy)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1 and needle in lines[0], res.stderr
    assert not any(tmp_path.iterdir())

