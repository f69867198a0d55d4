"""End-to-end: `finalize` takes a rewrite's products back to their plain form, at the chosen weights.

- An inference model exported (export_model_for_inferencing) from rewritten artifacts, right after a
  sync step and mid-cycle: the finalized model has no Lookahead initializer, input, node or
  metadata, the size of the same export from the original artifacts, and computes the model at
  the Lookahead weights (or the slow weights) of the NumPy reference.
- Rewritten artifacts with a checkpoint saved during training (right after a sync, and mid-cycle):
  the finalized, plain artifacts continue in the stock loop on the Lookahead reference trajectory
  (its inner optimizer state and step kept) for two more steps.
- finalize(rewrite(m)) == m for training_info models; finalize --weights slow of a trained one
  gives the slow weights.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest

from lookahead_testkit.model import MIXED_MLP, TANH_MLP
from lookahead_testkit.ort import StockLoop, run_inference
from lookahead_testkit.reference import ADAMW, SGD_CFG, reference_run

TOL = 1e-5
ALPHA = 0.5
INJECTED = "lookahead__"
OPTS = [ADAMW, SGD_CFG]


def _plain_model_checks(path):
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    graph = model.graph
    names = ([t.name for t in graph.initializer] + [i.name for i in graph.input]
             + [n.name for n in graph.node] + [o for n in graph.node for o in n.output])
    assert not [n for n in names if n.startswith(INJECTED)], "Lookahead parts left"
    assert not [p.key for p in model.metadata_props if p.key.startswith("onnx_lookahead.")]


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("opt", OPTS, ids=lambda o: o.kind)
@pytest.mark.parametrize("spec", [TANH_MLP, MIXED_MLP], ids=lambda s: s.name)
def test_finalized_exports_are_plain_models_at_the_chosen_weights(
        spec, opt, k, stock_artifacts, lookahead_artifacts, lookahead_cli, tmp_path):
    steps = k + 1
    schedule, batch = spec.schedule(steps), spec.eval_batch()
    ref = reference_run(spec, opt, schedule, batch, k, ALPHA)
    plain_run = reference_run(spec, opt, schedule, batch)
    loop = StockLoop(lookahead_artifacts(spec, opt, k, ALPHA), opt.lr)
    exports = {}

    def export(t, loop):
        if t in (k, k + 1):  # right after a sync step, and mid-cycle
            exports[t] = tmp_path / f"export_{t}.onnx"
            loop.export(exports[t], [spec.output_name])

    loop.run(schedule, batch, on_step=export)
    original = tmp_path / "original_export.onnx"
    StockLoop(stock_artifacts(spec, opt), opt.lr).export(original, [spec.output_name])
    for t, path in exports.items():
        for weights in ("lookahead", "slow"):
            out = tmp_path / f"plain_{t}_{weights}.onnx"
            lookahead_cli.run_ok("finalize", path, "--output", out, "--weights", weights)
            _plain_model_checks(out)
            size, expected_size = out.stat().st_size, original.stat().st_size
            assert abs(size - expected_size) <= 0.01 * expected_size, (size, expected_size)
            params = dict(ref.params[t - 1])
            if weights == "slow":
                params.update(ref.slow[t - 1])
            want = spec.forward(params, batch[0])
            got = run_inference(out, {"x": batch[0]}, [spec.output_name])[0]
            assert np.abs(got - want).max() <= TOL, f"step {t} {weights}: {np.abs(got - want).max()}"
        # The model evaluated at the plain optimizer's weights would differ: the test can fail.
        plain_out = spec.forward(plain_run.params[t - 1], batch[0])
        got = run_inference(tmp_path / f"plain_{t}_lookahead.onnx", {"x": batch[0]}, [spec.output_name])[0]
        assert np.abs(got - plain_out).max() > 1e-4


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("opt", OPTS, ids=lambda o: o.kind)
def test_finalized_artifacts_continue_in_the_stock_loop(opt, k, lookahead_artifacts, lookahead_cli, tmp_path):
    spec = TANH_MLP
    artifacts = lookahead_artifacts(spec, opt, k, ALPHA)
    for saved_at in (k, k + 1):  # right after a sync step (sync pending), and mid-cycle
        steps = saved_at + 2
        schedule, batch = spec.schedule(steps), spec.eval_batch()
        ref = reference_run(spec, opt, schedule, batch, k, ALPHA)
        loop = StockLoop(artifacts, opt.lr)
        for t in range(saved_at):
            loop.step(schedule[t])
        saved = tmp_path / f"saved_{saved_at}"
        loop.save(saved)
        plain = tmp_path / f"plain_{saved_at}"
        lookahead_cli.run_ok("finalize", artifacts, "--output", plain, "--checkpoint", saved)
        for name in ("training_model.onnx", "eval_model.onnx"):
            _plain_model_checks(plain / name)
        report = lookahead_cli.inspect(plain / "checkpoint")
        assert report["lookahead"] is None and not report["injected_state"], report
        assert report["checkpoint"]["optimizer_groups"][0]["step"] == saved_at
        resumed = StockLoop(plain, opt.lr)
        assert max(np.abs(resumed.parameter(n) - ref.params[saved_at - 1][n]).max()
                   for n in spec.trainable) <= TOL, "the finalized weights are the Lookahead weights"
        for t in range(saved_at, steps):
            losses = resumed.step(schedule[t])
            assert np.allclose(losses, ref.losses[t], atol=TOL), (t + 1, losses, ref.losses[t])
            if t == saved_at and (t + 1) % k:
                # No sync at this step: the plain loop holds the reference's weights, so the
                # inner optimizer's state and step were carried over.
                gap = max(np.abs(resumed.parameter(n) - ref.params[t][n]).max() for n in spec.trainable)
                assert gap <= TOL, f"weights after step {t + 1}: {gap}"


def _training_info_sources(tmp_path):
    """The training_info fixture and the models of the training_info end-to-end tests."""
    import test_training_info_lookahead as tl

    sources = {"fixture": Path(__file__).resolve().parents[2] / "fixtures" / "training_info_sgd.onnx"}
    for name, build in tl.MODELS.items():
        sources[name] = tmp_path / f"{name}.onnx"
        onnx.save(build().model, str(sources[name]))
    return sources


def test_finalize_of_a_rewrite_gives_back_the_model(lookahead_cli, tmp_path):
    for name, source in _training_info_sources(tmp_path).items():
        for k, alpha in [(3, 0.5), (1, 1.0)]:
            rewritten = tmp_path / f"{name}.la{k}.onnx"
            back = tmp_path / f"{name}.back{k}.onnx"
            lookahead_cli.run_ok("rewrite", source, "--output", rewritten, "-k", k, "--alpha", alpha)
            lookahead_cli.run_ok("finalize", rewritten, "--output", back)
            assert back.read_bytes() == source.read_bytes(), f"{name} k={k}"


def test_finalize_of_a_trained_training_info_model_takes_the_chosen_weights(lookahead_cli, tmp_path):
    import test_training_info_lookahead as tl
    from onnx_lookahead import training_info as rt

    spec = tl.MODELS["momentum"]()
    k = 3
    source = tmp_path / "m.onnx"
    onnx.save(spec.model, str(source))
    rewritten = tmp_path / "la.onnx"
    lookahead_cli.run_ok("rewrite", source, "--output", rewritten, "-k", k, "--alpha", ALPHA)
    session = rt.TrainingSession(onnx.load(str(rewritten)))
    session.initialize()
    feeds, _ = tl._data(spec)
    for feed in feeds[: k + 1]:  # past a sync: fast and slow weights differ again
        session.step(feed)
    trained = tmp_path / "trained.onnx"
    onnx.save(session.to_model(), str(trained))
    state = session.state
    for weights in ("lookahead", "slow"):
        out = tmp_path / f"plain_{weights}.onnx"
        lookahead_cli.run_ok("finalize", trained, "--output", out, "--weights", weights)
        plain = onnx.load(str(out))
        onnx.checker.check_model(plain, full_check=True)
        assert len(plain.SerializeToString()) < len(onnx.load(str(trained)).SerializeToString())
        values = {t.name: onnx.numpy_helper.to_array(t) for t in plain.graph.initializer}
        for w in spec.weight_names:
            want = state[w] if weights == "lookahead" else state[f"lookahead__slow__{w}"]
            np.testing.assert_array_equal(values[w], want, err_msg=f"{weights} {w}")
        assert not any(w == f"lookahead__slow__{n}" for n in spec.weight_names for w in values)
    gap = max(np.abs(state[w] - state[f"lookahead__slow__{w}"]).max() for w in spec.weight_names)
    assert gap > 1e-4, "fast and slow weights agree: the test would prove nothing"


@pytest.mark.parametrize("opt", OPTS, ids=lambda o: o.kind)
def test_eval_weights_slow_evaluates_and_exports_at_the_slow_weights(opt, stock_artifacts, lookahead_cli, tmp_path):
    spec, k = TANH_MLP, 3
    artifacts = lookahead_cli.rewrite(stock_artifacts(spec, opt), tmp_path / "slow_eval", k, ALPHA,
                                      "--eval-weights", "slow")
    assert lookahead_cli.inspect(artifacts)["rewrite"]["eval_weights"] == "averaged"  # the alias "slow" is recorded by its name
    schedule, batch = spec.schedule(2 * k + 1), spec.eval_batch()
    ref = reference_run(spec, opt, schedule, batch, k, ALPHA)
    exports = {}

    def export(t, loop):
        exports[t] = tmp_path / f"slow_export_{t}.onnx"
        loop.export(exports[t], [spec.output_name])

    losses, evals = StockLoop(artifacts, opt.lr).run(schedule, batch, on_step=export)
    for t in range(1, len(schedule) + 1):
        # Training follows Lookahead; evaluation and exports see the slow weights.
        assert np.allclose(losses[t - 1], ref.losses[t - 1], atol=TOL), t
        at_slow = {**ref.params[t - 1], **ref.slow[t - 1]}
        want = float(spec.compute_loss(spec.forward(at_slow, batch[0]), batch[1]))
        assert abs(evals[t - 1] - want) <= TOL, (t, evals[t - 1], want)
        got = run_inference(exports[t], {"x": batch[0]}, [spec.output_name])[0]
        assert np.abs(got - spec.forward(at_slow, batch[0])).max() <= TOL, t
    # Between syncs the slow and Lookahead weights differ: the test can fail.
    fast_loss = float(spec.compute_loss(spec.forward(ref.params[k], batch[0]), batch[1]))
    assert abs(evals[k] - fast_loss) > 1e-4


def test_inspect_text_stays_short(stock_artifacts, lookahead_cli, tmp_path):
    from lookahead_testkit.model import MlpSpec

    deep = MlpSpec("deep_mlp", 4, tuple((6, "tanh") for _ in range(59)) + ((2, "none"),))
    artifacts = lookahead_cli.rewrite(stock_artifacts(deep, SGD_CFG), tmp_path / "deep", 5, ALPHA)
    text = lookahead_cli.run_ok("inspect", artifacts).stdout
    assert len(text.splitlines()) < 60, text
    assert "100 more (--verbose lists all)" in text, text
    verbose = lookahead_cli.run_ok("inspect", artifacts, "--verbose").stdout
    assert len(verbose.splitlines()) > 120 + 120
    report = lookahead_cli.inspect(artifacts)
    assert len(report["parameters"]) == 120 and len(report["injected_nodes"]) > 300
    assert report["state_bytes"] >= report["parameter_bytes"]
