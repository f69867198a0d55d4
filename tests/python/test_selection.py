"""End-to-end: `rewrite --include/--exclude` wraps a subset of the trainable parameters.

The selected parameters train as Lookahead(k, alpha); the others follow the plain inner optimizer
step for step (their optimizer state is untouched, they are never pulled back). The expected values
come from the NumPy references run with the same subset; each case also checks that the subset run
differs both from Lookahead on every parameter and from the plain optimizer, so a rewrite that
ignored the selection (or did nothing) fails.
"""
from __future__ import annotations

import fnmatch

import numpy as np
import onnx
import pytest

import tinfo_models as tm
import tinfo_reference as tref
from lookahead_testkit.compare import assert_trajectory_close, max_param_diff, per_step_diff
from lookahead_testkit.model import MIXED_MLP, TANH_MLP
from lookahead_testkit.ort import StockLoop
from lookahead_testkit.reference import OPTIMIZERS, reference_run
from onnx_lookahead import training_info as rt

K, ALPHA, STEPS, TOL, MARGIN = 3, 0.5, 13, 1e-5, 1e-4


def _selected(names, include, exclude):
    """What the documented glob semantics select (fnmatch agrees with them on these patterns)."""
    chosen = [n for n in names if not include or any(fnmatch.fnmatchcase(n, p) for p in include)]
    return [n for n in chosen if not any(fnmatch.fnmatchcase(n, p) for p in exclude)]


def _flags(include, exclude):
    return [a for p in include for a in ("--include", p)] + [a for p in exclude for a in ("--exclude", p)]


ORT_CASES = [
    # (spec, include, exclude)
    (TANH_MLP, [], ["b*"]),
    (TANH_MLP, ["W[12]"], []),
    (MIXED_MLP, ["W*", "b4"], ["W4"]),
]


@pytest.mark.parametrize("opt", list(OPTIMIZERS.values()), ids=lambda o: o.kind)
@pytest.mark.parametrize("spec,include,exclude", ORT_CASES,
                         ids=lambda v: v.name if hasattr(v, "name") else ",".join(v) or "-")
def test_ort_subset_is_lookahead_and_the_rest_plain(spec, include, exclude, opt, stock_artifacts,
                                                    lookahead_cli, tmp_path):
    wrapped = _selected(spec.trainable, include, exclude)
    assert 0 < len(wrapped) < len(spec.trainable)
    out = lookahead_cli.rewrite(stock_artifacts(spec, opt), tmp_path / "artifacts", K, ALPHA,
                                *_flags(include, exclude))
    schedule, batch = spec.schedule(STEPS), spec.eval_batch()
    raw = {}

    def record(t, loop):
        if t % K:  # raw weights only where no lazy sync may be pending
            raw[t] = {n: loop.parameter(n) for n in spec.trainable}

    losses, evals = StockLoop(out, opt.lr).run(schedule, batch, on_step=record)
    ref = reference_run(spec, opt, schedule, batch, K, ALPHA, wrapped=wrapped)
    assert_trajectory_close(losses, evals, ref.losses, ref.eval_losses, TOL)
    for t, weights in raw.items():
        assert max_param_diff(weights, ref.params[t - 1], spec.trainable) <= TOL, f"weights after step {t}"
    for other in (reference_run(spec, opt, schedule, batch), reference_run(spec, opt, schedule, batch, K, ALPHA)):
        away = max(per_step_diff(losses, other.losses).max(), per_step_diff(evals, other.eval_losses).max())
        assert away > MARGIN, f"the subset run is indistinguishable from another run ({away:.2g})"
    _assert_reported(lookahead_cli.inspect(out), spec.trainable, wrapped)


def _assert_reported(report: dict, names, wrapped) -> None:
    """inspect lists every trainable parameter, with Lookahead on exactly the selected ones."""
    got = {p["name"]: p["lookahead"] for p in report["parameters"] if p["name"] in names}
    assert got == {n: n in wrapped for n in names}, got


TI_CASES = [
    ("adam", lambda: tm.single_model("adam", init_optimizer_state=True), [], ["B*"]),
    ("momentum", lambda: tm.single_model("momentum"), ["W1", "B2"], []),
    ("two_coupled", lambda: tm.two_algorithm_model(coupled=True), ["?1"], ["B?"]),
    ("two_independent", lambda: tm.two_algorithm_model(coupled=False), ["lin_*"], []),
]


@pytest.mark.parametrize("name,make,include,exclude", TI_CASES, ids=[c[0] for c in TI_CASES])
def test_training_info_subset_is_lookahead_and_the_rest_plain(name, make, include, exclude, lookahead_cli,
                                                              tmp_path):
    spec = make()
    wrapped = _selected(spec.weight_names, include, exclude)
    assert 0 < len(wrapped) < len(spec.weight_names)
    source = tmp_path / "model.onnx"
    onnx.save(spec.model, str(source))
    out = lookahead_cli.rewrite(source, tmp_path / "out.onnx", K, ALPHA, *_flags(include, exclude))
    _assert_reported(lookahead_cli.inspect(out), spec.weight_names, wrapped)
    feeds = tm.batches(spec, STEPS)
    expected = tref.lookahead_reference_run(spec, feeds, K, ALPHA, wrapped=wrapped)
    session = rt.TrainingSession(onnx.load(str(out)), backend="ort")
    session.initialize()
    for step, (feed, record) in enumerate(zip(feeds, expected), start=1):
        session.step(feed)
        for w in spec.weight_names:
            np.testing.assert_allclose(session.state[w], record.weights[w], rtol=0, atol=TOL,
                                       err_msg=f"step {step}: {w}")
    for other in (tref.plain_reference_run(spec, feeds), tref.lookahead_reference_run(spec, feeds, K, ALPHA)):
        gap = max(np.abs(a.weights[w] - b.weights[w]).max()
                  for a, b in zip(expected, other) for w in spec.weight_names)
        assert gap > 1e-3, f"the subset run is indistinguishable from another run ({gap:.2g})"


@pytest.mark.parametrize("flags,needle", [
    (["--include", "nothing*"], '--include "nothing*" matches no trainable parameter'),
    (["--exclude", "Wx"], '--exclude "Wx" matches no trainable parameter'),
    (["--include", "W1", "--exclude", "W*"], "leave no trainable parameter"),
])
def test_selection_mistakes_are_refused(flags, needle, lookahead_cli, tmp_path):
    spec = tm.single_model("sgd")
    source = tmp_path / "model.onnx"
    onnx.save(spec.model, str(source))
    res = lookahead_cli.run("rewrite", source, "--output", tmp_path / "out.onnx", *flags)
    assert res.returncode != 0 and res.stderr.startswith("error: ") and needle in res.stderr, res.stderr
    assert not (tmp_path / "out.onnx").exists()
