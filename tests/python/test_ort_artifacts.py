"""End-to-end: ORT training artifacts rewritten by onnx-lookahead train as Lookahead(k, alpha).

Every test drives the rewritten artifacts through the UNMODIFIED training loop (StockLoop) and
compares only what a user sees: the training loss of every forward, the eval loss after every step,
inference models exported after a step, checkpoints saved and resumed, and (where it is well
defined) the values of the ORIGINAL parameters. The expected values come from the NumPy Lookahead
reference (lookahead_testkit.reference), never from ORT. Each trajectory test also checks that the
run differs from the plain inner optimizer, so that it cannot pass by doing nothing.

Raw parameter values are only asserted after steps that do not end a cycle (t % k != 0): a rewrite
may apply the sync lazily (at the next training forward), so right after a sync step the checkpoint
can legitimately still hold the fast weights. Losses, eval losses and exports are the contract there.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from lookahead_testkit.compare import assert_steps_close, assert_trajectory_close, max_param_diff, per_step_diff
from lookahead_testkit.model import MIXED_MLP, MODELS, TANH_MLP
from lookahead_testkit.ort import StockLoop, run_inference
from lookahead_testkit.reference import OPTIMIZERS, reference_run
from lookahead_testkit.run_loop import save_schedule

SPECS = list(MODELS.values())
OPTS = list(OPTIMIZERS.values())
STEPS = 20
TOL = 1e-5      # ORT vs NumPy, float32 everywhere: observed differences are ~1e-7
MARGIN = 1e-4   # the Lookahead run must differ from the plain inner optimizer by more than this
spec_id, opt_id = (lambda s: s.name), (lambda o: o.kind)


def _raw_weights_recorder(spec, k, into: dict):
    """on_step callback: original trainable parameters after every step that does not end a cycle."""
    def record(t, loop):
        if t % k:
            into[t] = {n: loop.parameter(n) for n in spec.trainable}
    return record


def _check_run(spec, opt, k, alpha, schedule, losses, evals, raw=None):
    """Assert an ORT run against the Lookahead reference and away from the plain inner optimizer.

    raw: {step: original trainable weights after that step} (non-sync steps only).
    """
    batch = spec.eval_batch()
    ref = reference_run(spec, opt, schedule, batch, k, alpha)
    plain = reference_run(spec, opt, schedule, batch)
    assert_trajectory_close(losses, evals, ref.losses, ref.eval_losses, TOL)
    for t, weights in (raw or {}).items():
        assert max_param_diff(weights, ref.params[t - 1], spec.trainable) <= TOL, f"weights after step {t}"
    away = max(per_step_diff(losses, plain.losses).max(), per_step_diff(evals, plain.eval_losses).max())
    assert away > MARGIN, f"the run is indistinguishable from plain {opt.kind} ({away:.2g})"


@pytest.mark.parametrize("k,alpha", [(5, 0.5), (3, 0.8)])
@pytest.mark.parametrize("opt", OPTS, ids=opt_id)
@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_trajectory_matches_lookahead_reference(spec, opt, k, alpha, lookahead_artifacts):
    schedule, raw = spec.schedule(STEPS), {}
    loop = StockLoop(lookahead_artifacts(spec, opt, k, alpha), opt.lr)
    losses, evals = loop.run(schedule, spec.eval_batch(), on_step=_raw_weights_recorder(spec, k, raw))
    _check_run(spec, opt, k, alpha, schedule, losses, evals, raw)


TANH_FROZEN_W2 = dataclasses.replace(TANH_MLP, name="tanh_mlp_frozen_w2", frozen=("W2",))


@pytest.mark.parametrize("opt", OPTS, ids=opt_id)
@pytest.mark.parametrize("spec", [MIXED_MLP, TANH_FROZEN_W2], ids=spec_id)
def test_frozen_parameters_stay_fixed(spec, opt, lookahead_artifacts):
    k, alpha = 5, 0.5
    assert spec.frozen
    initial, frozen_seen, raw = spec.init_params(), [], {}
    record = _raw_weights_recorder(spec, k, raw)

    def on_step(t, loop):
        record(t, loop)
        frozen_seen.append({n: loop.parameter(n) for n in spec.frozen})

    schedule = spec.schedule(STEPS)
    loop = StockLoop(lookahead_artifacts(spec, opt, k, alpha), opt.lr)
    losses, evals = loop.run(schedule, spec.eval_batch(), on_step=on_step)
    for t, seen in enumerate(frozen_seen, 1):
        for n in spec.frozen:
            assert np.array_equal(seen[n], initial[n]), f"frozen {n} changed by step {t}"
    _check_run(spec, opt, k, alpha, schedule, losses, evals, raw)


@pytest.mark.parametrize("opt", OPTS, ids=opt_id)
@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_gradient_accumulation_two_forwards_per_step(spec, opt, lookahead_artifacts):
    k, alpha = 5, 0.5
    schedule, raw = spec.schedule(STEPS, forwards=2), {}
    loop = StockLoop(lookahead_artifacts(spec, opt, k, alpha), opt.lr)
    losses, evals = loop.run(schedule, spec.eval_batch(), on_step=_raw_weights_recorder(spec, k, raw))
    _check_run(spec, opt, k, alpha, schedule, losses, evals, raw)


@pytest.mark.parametrize("save_after", [7, 10], ids=lambda s: f"save_after_{s}")
@pytest.mark.parametrize("opt", OPTS, ids=opt_id)
@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_save_and_resume_in_new_process(spec, opt, save_after, lookahead_artifacts, tmp_path):
    """Save mid-cycle (7) or right after a sync step (10), resume in a fresh process (k=5)."""
    k, alpha = 5, 0.5
    artifacts, schedule, batch = lookahead_artifacts(spec, opt, k, alpha), spec.schedule(STEPS), spec.eval_batch()
    loop = StockLoop(artifacts, opt.lr)
    before = loop.run(schedule[:save_after], batch)
    loop.save(tmp_path / "checkpoint")
    del loop

    save_schedule(tmp_path / "rest.npz", schedule[save_after:], batch)
    paths = [str(Path(__file__).parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    proc = subprocess.run(
        [sys.executable, "-m", "lookahead_testkit.run_loop", artifacts, tmp_path / "checkpoint",
         tmp_path / "rest.npz", tmp_path / "out.npz", "--lr", str(opt.lr)],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    after = np.load(tmp_path / "out.npz")

    losses = before[0] + after["losses"].tolist()
    evals = before[1] + after["eval_losses"].tolist()
    _check_run(spec, opt, k, alpha, schedule, losses, evals)


@pytest.mark.parametrize("opt", OPTS, ids=opt_id)
@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_export_for_inferencing_after_every_step(spec, opt, lookahead_artifacts, tmp_path):
    """Exports after steps 1..11 (sync steps 5 and 10 included) equal the NumPy forward at the
    reference Lookahead weights; exporting does not disturb the training that goes on after it."""
    k, alpha, export_until = 5, 0.5, 11
    schedule, batch = spec.schedule(STEPS), spec.eval_batch()
    ref = reference_run(spec, opt, schedule, batch, k, alpha)
    probe = spec.batch(np.random.RandomState(5), 7)[0]
    outputs = {}

    def export(t, loop):
        if t <= export_until:
            path = tmp_path / f"inference_{t}.onnx"
            loop.export(path, [spec.output_name])
            inputs = [i.name for i in onnx.load(path).graph.input]
            assert inputs == [spec.input_name], f"exported model after step {t} wants inputs {inputs}"
            outputs[t] = run_inference(path, {spec.input_name: probe}, [spec.output_name])[0]

    losses, evals = StockLoop(lookahead_artifacts(spec, opt, k, alpha), opt.lr).run(schedule, batch, on_step=export)
    expected = [spec.forward(ref.params[t - 1], probe) for t in sorted(outputs)]
    assert_steps_close("exported model output", [outputs[t] for t in sorted(outputs)], expected, TOL)
    _check_run(spec, opt, k, alpha, schedule, losses, evals)


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("opt", OPTS, ids=opt_id)
@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_alpha_one_trains_like_the_original(spec, opt, k, stock_artifacts, lookahead_artifacts):
    """Lookahead(k, alpha=1) is the inner optimizer: rewritten and original artifacts agree.

    With alpha=1 a sync changes nothing (up to rounding), so raw weights are compared at every step.
    """
    schedule, batch = spec.schedule(STEPS), spec.eval_batch()
    runs = []
    for artifacts in (stock_artifacts(spec, opt), lookahead_artifacts(spec, opt, k, 1.0)):
        weights = []
        losses, evals = StockLoop(artifacts, opt.lr).run(schedule, batch, on_step=lambda t, loop: weights.append(
            {n: loop.parameter(n) for n in spec.param_names}))
        runs.append((losses, evals, weights))
    (l0, e0, w0), (l1, e1, w1) = runs
    assert_steps_close("training loss vs original", l1, l0, 1e-6)
    assert_steps_close("eval loss vs original", e1, e0, 1e-6)
    for t, (a, b) in enumerate(zip(w1, w0), 1):
        assert max_param_diff(a, b, spec.param_names) <= 1e-6, f"weights after step {t}"
    ref = reference_run(spec, opt, schedule, batch)
    assert_steps_close("training loss vs NumPy", l1, ref.losses, TOL)
