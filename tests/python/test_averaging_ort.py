"""End-to-end: ONNX Runtime training artifacts rewritten for EMA and SWA of the weights.

The rewritten artifacts run in the UNMODIFIED stock loop of onnxruntime-training 1.19.2 (StockLoop);
the expected values come from the NumPy references (lookahead_testkit.averaging on top of
reference.py), never from ORT, except for the zoo models, whose reference is the ORIGINAL artifacts
trained in the same loop with the average computed on the host. What is compared at every step:
- training losses: the inner optimizer's, untouched (equal to the plain artifacts' and the NumPy
  run's);
- the eval loss after every step: at the averaged weights (the default), or at the current ones
  (eval_weights="current"), the update of the step just taken included;
- the raw parameters (the current weights) and the saved averages, where no update is pending.
And: frozen parameters, gradient accumulation, include/exclude, parallel_safe under ORT_PARALLEL,
target_ort="1.17" (trained in 1.17 too), save and resume in a new process, finalize (artifacts
with a saved checkpoint; exported inference models, also via onnx_lookahead.ort.export_for_inference),
onnx_lookahead.ort.sync_parameters, inspect's "averaging" report. Every case also checks that the
averaged and the current weights evaluate differently (> MARGIN), so it cannot pass by evaluating
the wrong ones.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime
import pytest

import onnx_lookahead
import onnx_lookahead.ort as lort
from lookahead_testkit import zoo
from lookahead_testkit.averaging import (EMA_EVERY_1, EMA_EVERY_3, SCHEMES, SWA_2_1, SWA_4_2, Averaging,
                                         averaged_run, host_averages)
from lookahead_testkit.compare import assert_steps_close, max_param_diff
from lookahead_testkit.model import MIXED_MLP, TANH_MLP
from lookahead_testkit.ort import StockLoop, run_inference
from lookahead_testkit.reference import ADAMW, OPTIMIZERS, SGD_CFG
from lookahead_testkit.run_loop import save_schedule

SPECS = [TANH_MLP, MIXED_MLP]
OPTS = list(OPTIMIZERS.values())
STEPS = 10
TOL = 1e-5      # ORT vs NumPy, float32: observed ~1e-7
SAME = 1e-6     # rewritten vs plain artifacts: the same ORT arithmetic
MARGIN = 1e-4   # averaged vs current weights must differ by more than this
COUNTER, SAMPLES = "lookahead__step", "lookahead__samples"
spec_id, opt_id, avg_id = (lambda s: s.name), (lambda o: o.kind), (lambda a: a.id)


# ------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def averaged_artifacts(stock_artifacts, tmp_path_factory):
    """averaged_artifacts(spec, opt, avg, **rewrite options) -> rewritten directory (cached)."""
    cache = {}

    def get(spec, opt, avg: Averaging, **options):
        key = (spec, opt, avg, tuple(sorted(options.items())))
        if key not in cache:
            parent = tmp_path_factory.mktemp(f"{spec.name}_{opt.kind}_{avg.id}")
            onnx_lookahead.rewrite(stock_artifacts(spec, opt), parent / "artifacts", **avg.rewrite_options(),
                                   **options)
            cache[key] = parent / "artifacts"
        return cache[key]
    return get


def _value(loop, name) -> float:
    return float(np.asarray(loop.parameter(name)).reshape(-1)[0])


def _at(spec, params, batch) -> float:
    return float(spec.compute_loss(spec.forward(params, batch[0]), batch[1]))


def _check_run(spec, avg, ref, losses, evals, eval_weights="averaged", first_step=1):
    """Training losses vs the plain reference; eval losses at the chosen weights; and the two
    weights evaluate differently, so the comparison proves which ones were read."""
    n = len(losses)
    rows = slice(first_step - 1, first_step - 1 + n)
    assert_steps_close("training loss", losses, ref.losses[rows], TOL, first_step)
    want, other = ((ref.eval_averaged, ref.eval_current) if eval_weights == "averaged"
                   else (ref.eval_current, ref.eval_averaged))
    assert_steps_close(f"eval loss at the {eval_weights} weights", evals, want[rows], TOL, first_step)
    away = float(np.max(np.abs(np.asarray(evals) - np.asarray(other[rows]))))
    assert away > MARGIN, f"{avg.id}: averaged and current weights evaluate alike ({away:.2g})"


def _state_recorder(spec, avg, wrapped, into: dict):
    """on_step: current weights after every step; averages and SWA's count where none is pending."""
    def record(t, loop):
        into[t] = {"params": {n: loop.parameter(n) for n in spec.param_names}}
        if not avg.updates_at(t):
            into[t]["averages"] = {n: loop.parameter(avg.state_name(n)) for n in wrapped}
            if avg.scheme == "swa":
                into[t]["samples"] = _value(loop, SAMPLES)
    return record


def _check_states(spec, ref, seen, wrapped):
    for t, s in seen.items():
        assert max_param_diff(s["params"], ref.params[t - 1], spec.param_names) <= TOL, f"weights after step {t}"
        if "averages" in s:
            assert max_param_diff(s["averages"], ref.averages[t - 1], wrapped) <= TOL, f"averages after step {t}"
        if "samples" in s:
            assert s["samples"] == ref.samples[t - 1], f"SWA samples after step {t}"


# ------------------------------------------------------------------------------ 1. trajectories
@pytest.mark.parametrize("avg", SCHEMES, ids=avg_id)
@pytest.mark.parametrize("opt", OPTS, ids=opt_id)
@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_trajectory_matches_reference(spec, opt, avg, stock_artifacts, averaged_artifacts):
    schedule, batch = spec.schedule(STEPS), spec.eval_batch()
    ref = averaged_run(spec, opt, schedule, batch, avg)
    plain_losses, plain_evals = StockLoop(stock_artifacts(spec, opt), opt.lr).run(schedule, batch)
    for eval_weights in ("averaged", "current"):
        options = {} if eval_weights == "averaged" else {"eval_weights": "current"}
        seen = {}
        loop = StockLoop(averaged_artifacts(spec, opt, avg, **options), opt.lr)
        losses, evals = loop.run(schedule, batch, on_step=_state_recorder(spec, avg, spec.trainable, seen))
        assert_steps_close("training loss vs the plain artifacts", losses, plain_losses, SAME)
        _check_run(spec, avg, ref, losses, evals, eval_weights)
        _check_states(spec, ref, seen, spec.trainable)
        if eval_weights == "current":
            assert_steps_close("eval loss vs the plain artifacts", evals, plain_evals, SAME)


# ------------------------------------------------------------------- 2. variants of the set
TANH_FROZEN_W2 = dataclasses.replace(TANH_MLP, name="tanh_mlp_frozen_w2", frozen=("W2",))


@pytest.mark.parametrize("avg,opt", [(EMA_EVERY_3, ADAMW), (SWA_2_1, SGD_CFG), (SWA_4_2, ADAMW)],
                         ids=lambda v: getattr(v, "id", getattr(v, "kind", None)))
def test_frozen_parameters_are_neither_trained_nor_averaged(avg, opt, averaged_artifacts):
    spec = TANH_FROZEN_W2
    artifacts = averaged_artifacts(spec, opt, avg)
    rec = onnx_lookahead.inspect(artifacts)
    assert {p["name"]: p["lookahead"] for p in rec["parameters"]} == {n: n != "W2" for n in spec.param_names}
    schedule, batch, seen = spec.schedule(STEPS), spec.eval_batch(), {}
    loop = StockLoop(artifacts, opt.lr)
    assert avg.state_name("W2") not in [n for n, _ in loop.state.parameters]
    losses, evals = loop.run(schedule, batch, on_step=_state_recorder(spec, avg, spec.trainable, seen))
    ref = averaged_run(spec, opt, schedule, batch, avg)
    _check_run(spec, avg, ref, losses, evals)
    _check_states(spec, ref, seen, spec.trainable)
    for t, s in seen.items():
        assert np.array_equal(s["params"]["W2"], spec.init_params()["W2"]), f"frozen W2 changed by step {t}"


@pytest.mark.parametrize("avg", [EMA_EVERY_3, SWA_4_2], ids=avg_id)
@pytest.mark.parametrize("spec,opt", [(TANH_MLP, ADAMW), (MIXED_MLP, SGD_CFG)], ids=lambda v: v.name if
                         hasattr(v, "name") else v.kind)
def test_gradient_accumulation_three_forwards_per_step(spec, opt, avg, averaged_artifacts):
    schedule, batch, seen = spec.schedule(STEPS, forwards=3), spec.eval_batch(), {}
    losses, evals = StockLoop(averaged_artifacts(spec, opt, avg), opt.lr).run(
        schedule, batch, on_step=_state_recorder(spec, avg, spec.trainable, seen))
    ref = averaged_run(spec, opt, schedule, batch, avg)
    _check_run(spec, avg, ref, losses, evals)
    _check_states(spec, ref, seen, spec.trainable)


SELECTIONS = [  # (spec, opt, avg, include, exclude, wrapped)
    (TANH_MLP, ADAMW, EMA_EVERY_1, [], ["b*"], ["W1", "W2", "W3"]),
    (MIXED_MLP, SGD_CFG, SWA_2_1, ["W*", "b4"], ["W4"], ["W1", "W2", "W3", "b4"]),
]


@pytest.mark.parametrize("spec,opt,avg,include,exclude,wrapped", SELECTIONS, ids=["tanh-ema", "mixed-swa"])
def test_include_exclude_average_only_the_selection(spec, opt, avg, include, exclude, wrapped, stock_artifacts,
                                                    lookahead_cli, tmp_path):
    """The selection through the command line: unselected parameters have no average and the
    averaged model reads their current weights."""
    flags = [a for p in include for a in ("--include", p)] + [a for p in exclude for a in ("--exclude", p)]
    lookahead_cli.run_ok("rewrite", stock_artifacts(spec, opt), "--output", tmp_path / "set", *avg.cli_flags(),
                         *flags)
    schedule, batch, seen = spec.schedule(STEPS), spec.eval_batch(), {}
    loop = StockLoop(tmp_path / "set", opt.lr)
    assert sorted(p["name"] for p in lort.record(loop.state)["parameters"]) == sorted(wrapped)
    assert not [n for n, _ in loop.state.parameters if n.startswith(f"lookahead__{avg.scheme}__")
                and n.split("__")[-1] not in wrapped]
    losses, evals = loop.run(schedule, batch, on_step=_state_recorder(spec, avg, wrapped, seen))
    ref = averaged_run(spec, opt, schedule, batch, avg, wrapped=wrapped)
    _check_run(spec, avg, ref, losses, evals)
    _check_states(spec, ref, seen, wrapped)
    everything = averaged_run(spec, opt, schedule, batch, avg)
    away = float(np.max(np.abs(np.asarray(evals) - np.asarray(everything.eval_averaged))))
    assert away > MARGIN, f"the selection changes nothing ({away:.2g})"


@pytest.mark.parametrize("avg,opt", [(EMA_EVERY_3, SGD_CFG), (SWA_2_1, ADAMW)], ids=["ema-sgd", "swa-adamw"])
def test_parallel_safe_trains_in_ort_parallel_mode(avg, opt, averaged_artifacts):
    spec = MIXED_MLP
    options = onnxruntime.SessionOptions()
    options.execution_mode = onnxruntime.ExecutionMode.ORT_PARALLEL
    options.inter_op_num_threads = 2
    schedule, batch = spec.schedule(STEPS), spec.eval_batch()
    ref = averaged_run(spec, opt, schedule, batch, avg)
    artifacts = averaged_artifacts(spec, opt, avg, parallel_safe=True)
    assert onnx_lookahead.inspect(artifacts)["rewrite"]["mode"] == "reshape"
    for session_options in (options, None):
        seen = {}
        losses, evals = StockLoop(artifacts, opt.lr, session_options=session_options).run(
            schedule, batch, on_step=_state_recorder(spec, avg, spec.trainable, seen))
        _check_run(spec, avg, ref, losses, evals)
        _check_states(spec, ref, seen, spec.trainable)
    # The default rewrite (PassThrough aliases) fails loudly there, never silently wrong.
    try:
        default = StockLoop(averaged_artifacts(spec, opt, avg), opt.lr, session_options=options).run(schedule, batch)
    except Exception as error:  # noqa: BLE001 - ORT raises its own exception types
        assert "PassThrough" in str(error), error
    else:
        _check_run(spec, avg, ref, *default)


def test_target_ort_1_17_trains_there(stock_artifacts, tmp_path):
    """1.19.2's artifacts rewritten for 1.17 train in the stock loop of onnxruntime-training 1.17
    (its pinned venv, as test_releases.py drives it) as the reference says (1.19.2 does not read
    1.17's checkpoint format, and the report says so)."""
    from test_releases import WORKER, python_of

    spec, python = TANH_MLP, python_of("1.17")
    schedule, batch = spec.schedule(STEPS), spec.eval_batch()
    save_schedule(tmp_path / "schedule.npz", schedule, batch)
    for avg, opt in [(EMA_EVERY_3, ADAMW), (SWA_4_2, SGD_CFG)]:
        out = tmp_path / avg.id
        onnx_lookahead.rewrite(stock_artifacts(spec, opt), out, **avg.rewrite_options(), target_ort="1.17")
        rows = {r["runtime"]: r for r in onnx_lookahead.inspect(out)["compatibility"]}
        assert rows["onnxruntime-training 1.17"]["loads"], rows
        assert not rows["onnxruntime-training 1.19"]["loads"], rows
        ref = averaged_run(spec, opt, schedule, batch, avg)
        res = subprocess.run([python, str(WORKER), "train", out, str(opt.lr), tmp_path / "schedule.npz"],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        run = json.loads(res.stdout.strip().splitlines()[-1])
        assert run["release"].startswith("1.17") and "error" not in run, run
        _check_run(spec, avg, ref, run["losses"], run["evals"])


# ------------------------------------------------------------------------- 3. save and resume
@pytest.mark.parametrize("avg,save_after,opt", [(EMA_EVERY_3, 4, ADAMW), (EMA_EVERY_3, 6, SGD_CFG),
                                                (SWA_4_2, 5, SGD_CFG), (SWA_4_2, 6, ADAMW)],
                         ids=["ema-mid", "ema-pending", "swa-mid", "swa-pending"])
def test_save_and_resume_in_a_new_process(avg, save_after, opt, averaged_artifacts, tmp_path):
    spec = MIXED_MLP
    artifacts, schedule, batch = averaged_artifacts(spec, opt, avg), spec.schedule(STEPS), spec.eval_batch()
    ref = averaged_run(spec, opt, schedule, batch, avg)
    loop = StockLoop(artifacts, opt.lr)
    before = loop.run(schedule[:save_after], batch)
    loop.save(tmp_path / "checkpoint")
    del loop
    saved = onnx_lookahead.inspect(tmp_path / "checkpoint")["averaging"]
    assert saved["update_pending"] == avg.updates_at(save_after), saved
    if avg.scheme == "swa":
        pending = int(avg.updates_at(save_after))
        assert saved["shared"] == {"samples": ref.samples[save_after - 1] - pending}, saved

    save_schedule(tmp_path / "rest.npz", schedule[save_after:], batch)
    paths = [str(Path(__file__).parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    proc = subprocess.run(
        [sys.executable, "-m", "lookahead_testkit.run_loop", artifacts, tmp_path / "checkpoint",
         tmp_path / "rest.npz", tmp_path / "out.npz", "--lr", str(opt.lr)],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(paths)), timeout=300)
    assert proc.returncode == 0, proc.stderr
    after = np.load(tmp_path / "out.npz")
    _check_run(spec, avg, ref, before[0] + after["losses"].tolist(), before[1] + after["eval_losses"].tolist())
    # The resumed half alone: its eval losses depend on the restored averages (and SWA's count).
    _check_run(spec, avg, ref, after["losses"].tolist(), after["eval_losses"].tolist(), first_step=save_after + 1)


# -------------------------------------------------------------------------------- 4. finalize
def _weights_of(ref, t, weights):
    return ref.params[t - 1] if weights == "current" else ref.at_averaged[t - 1]


@pytest.mark.parametrize("avg,opt", [(EMA_EVERY_3, ADAMW), (SWA_4_2, SGD_CFG)], ids=["ema", "swa"])
@pytest.mark.parametrize("eval_weights", ["averaged", "current"])
def test_finalize_artifacts_with_a_saved_checkpoint(avg, opt, eval_weights, averaged_artifacts, tmp_path):
    """Plain artifacts at the chosen weights (default: those the rewrite evaluates), from
    checkpoints saved with an update pending and mid-interval."""
    spec = TANH_MLP
    options = {} if eval_weights == "averaged" else {"eval_weights": "current"}
    artifacts, schedule, batch = averaged_artifacts(spec, opt, avg, **options), spec.schedule(STEPS), spec.eval_batch()
    ref = averaged_run(spec, opt, schedule, batch, avg)
    saves = (6, 7)  # an update pending (both schemes update after step 6), and mid-interval
    assert avg.updates_at(6) and not avg.updates_at(7)
    loop = StockLoop(artifacts, opt.lr)
    loop.run(schedule[:max(saves)], batch,
             on_step=lambda t, lp: lp.save(tmp_path / f"saved_{t}") if t in saves else None)
    for t in saves:
        gap = max_param_diff(ref.params[t - 1], ref.at_averaged[t - 1], spec.trainable)
        assert gap > MARGIN, f"current and averaged weights after step {t} agree ({gap:.2g})"
        for weights in (None, "current", "averaged"):
            out = tmp_path / f"plain_{t}_{weights}"
            summary = onnx_lookahead.finalize(artifacts, out, checkpoint=tmp_path / f"saved_{t}", weights=weights)
            assert summary["weights"] == (weights or eval_weights), summary
            report = onnx_lookahead.inspect(out)
            assert report.get("averaging") is None and not report["injected_state"], report
            want = _weights_of(ref, t, weights or eval_weights)
            plain = StockLoop(out, opt.lr)
            assert sorted(n for n, _ in plain.state.parameters) == sorted(spec.param_names)
            got = {n: plain.parameter(n) for n in spec.param_names}
            assert max_param_diff(got, want, spec.param_names) <= TOL, (t, weights)
            assert abs(plain.eval_loss(batch) - _at(spec, want, batch)) <= TOL, (t, weights)
            if (weights or eval_weights) == "current":
                # The inner optimizer's state and step came along: the plain set goes on like the run.
                for s in (t, t + 1):
                    assert np.allclose(plain.step(schedule[s]), ref.losses[s], atol=TOL), (t, s + 1)
                got = {n: plain.parameter(n) for n in spec.param_names}
                assert max_param_diff(got, ref.params[t + 1], spec.param_names) <= TOL, t


@pytest.mark.parametrize("avg,opt", [(EMA_EVERY_3, SGD_CFG), (SWA_4_2, ADAMW)], ids=["ema", "swa"])
@pytest.mark.parametrize("eval_weights", ["averaged", "current"])
def test_finalize_exported_inference_models(avg, opt, eval_weights, averaged_artifacts, tmp_path):
    """Module.export_model_for_inferencing, then finalize (or export_for_inference in one go),
    right after an update step (pending) and mid-interval: a plain model at the chosen weights,
    the default being those the rewrite's evaluation reads."""
    spec = MIXED_MLP
    options = {} if eval_weights == "averaged" else {"eval_weights": "current"}
    artifacts, schedule, batch = averaged_artifacts(spec, opt, avg, **options), spec.schedule(8), spec.eval_batch()
    ref = averaged_run(spec, opt, schedule, batch, avg)
    probe, out_name = spec.batch(np.random.RandomState(5), 7)[0], spec.output_name
    checked = []

    def export(t, loop):
        if t not in (6, 7):
            return
        raw = tmp_path / f"raw_{t}.onnx"
        loop.export(raw, [out_name])
        got = run_inference(raw, {spec.input_name: probe}, [out_name])[0]
        assert np.abs(got - spec.forward(_weights_of(ref, t, eval_weights), probe)).max() <= TOL, t
        for weights in (None, "current", "averaged"):
            want = spec.forward(_weights_of(ref, t, weights or eval_weights), probe)
            for how in ("finalize", "export_for_inference"):
                path = tmp_path / f"{how}_{t}_{weights}.onnx"
                if how == "finalize":
                    onnx_lookahead.finalize(raw, path, weights=weights)
                else:
                    lort.export_for_inference(loop.module, path, [out_name], weights=weights)
                model = onnx.load(str(path))
                leftovers = [i.name for i in model.graph.initializer if i.name.startswith("lookahead__")]
                assert not leftovers and [i.name for i in model.graph.input] == [spec.input_name], (how, t)
                got = run_inference(path, {spec.input_name: probe}, [out_name])[0]
                assert np.abs(got - want).max() <= TOL, (how, t, weights, np.abs(got - want).max())
                checked.append((t, weights, how))
        gap = np.abs(spec.forward(ref.params[t - 1], probe) - spec.forward(ref.at_averaged[t - 1], probe)).max()
        assert gap > MARGIN, f"current and averaged weights give the same outputs after step {t}"

    losses, evals = StockLoop(artifacts, opt.lr).run(schedule, batch, on_step=export)
    assert len(checked) == 12
    _check_run(spec, avg, ref, losses, evals, eval_weights)  # exporting disturbs nothing


# ------------------------------------------------------------------------- 5. sync_parameters
@pytest.mark.parametrize("sync_at", ["every-step", "one-update"])
@pytest.mark.parametrize("avg,opt", [(EMA_EVERY_1, ADAMW), (EMA_EVERY_3, SGD_CFG), (SWA_2_1, SGD_CFG),
                                     (SWA_4_2, ADAMW)], ids=lambda v: getattr(v, "id", getattr(v, "kind", "")))
def test_sync_parameters_applies_a_pending_update_once(avg, opt, sync_at, averaged_artifacts, tmp_path):
    """sync_parameters after update steps applies the update on the host (parameters, averages,
    SWA's count and the counter then are the reference's; a checkpoint saved then has no update
    pending) and the next training step goes on from there without applying it again; elsewhere
    it changes nothing."""
    spec = TANH_MLP
    schedule, batch = spec.schedule(STEPS), spec.eval_batch()
    ref = averaged_run(spec, opt, schedule, batch, avg)
    one = avg.first + avg.period  # the second update
    loop = StockLoop(averaged_artifacts(spec, opt, avg), opt.lr)
    names = [n for n, _ in loop.state.parameters]
    losses, evals, synced = [], [], []
    for t in range(1, STEPS + 1):
        losses.append(loop.step(schedule[t - 1]))
        if sync_at == "every-step" or t == one:
            before = {n: loop.parameter(n) for n in names}
            pending = lort.sync_parameters(loop.state)
            assert pending == avg.updates_at(t), f"sync_parameters after step {t} returned {pending}"
            if pending:
                synced.append(t)
                assert _value(loop, COUNTER) == avg.first - avg.period, t
                assert max_param_diff({n: loop.parameter(n) for n in spec.trainable}, ref.params[t - 1],
                                      spec.trainable) <= TOL, t
                averages = {n: loop.parameter(avg.state_name(n)) for n in spec.trainable}
                assert max_param_diff(averages, ref.averages[t - 1], spec.trainable) <= SAME, t
                if avg.scheme == "swa":
                    assert _value(loop, SAMPLES) == ref.samples[t - 1], t
                loop.save(tmp_path / "synced")
                report = onnx_lookahead.inspect(tmp_path / "synced")["averaging"]
                assert (report["steps_to_update"], report["update_pending"]) == (avg.period, False), (t, report)
                assert report.get("shared", {}) == ({"samples": ref.samples[t - 1]} if avg.scheme == "swa" else {})
            else:
                assert all(np.array_equal(loop.parameter(n), before[n]) for n in names), f"changed after step {t}"
            assert not lort.sync_parameters(loop.state), f"a second sync after step {t} found an update pending"
        evals.append(loop.eval_loss(batch))
    assert synced == ([t for t in range(1, STEPS + 1) if avg.updates_at(t)] if sync_at == "every-step" else [one])
    _check_run(spec, avg, ref, losses, evals)
    averages = {n: loop.parameter(avg.state_name(n)) for n in spec.trainable}
    if not avg.updates_at(STEPS):
        assert max_param_diff(averages, ref.averages[-1], spec.trainable) <= TOL


# --------------------------------------------------------------------------------- 6. inspect
@pytest.mark.parametrize("avg,opt", [(EMA_EVERY_3, ADAMW), (SWA_2_1, SGD_CFG), (SWA_4_2, SGD_CFG)],
                         ids=lambda v: getattr(v, "id", getattr(v, "kind", "")))
def test_inspect_reports_the_schedule(avg, opt, averaged_artifacts, tmp_path):
    spec = MIXED_MLP
    artifacts = averaged_artifacts(spec, opt, avg)
    schedule, batch = spec.schedule(STEPS), spec.eval_batch()
    ref = averaged_run(spec, opt, schedule, batch, avg)

    def expected(t):
        pending = avg.updates_at(t) if t else False
        shared = {"samples": (ref.samples[t - 1] if t else 0) - int(pending)} if avg.scheme == "swa" else None
        return avg.steps_to_update(t) if t else avg.first, pending, shared

    def check(report, t):
        a = report["averaging"]
        assert (a["scheme"], a["description"], a["settings"]) == (avg.scheme, avg.description, avg.settings), a
        steps, pending, shared = expected(t)
        assert (a["steps_to_update"], a["update_pending"]) == (steps, pending), (t, a)
        assert a.get("shared", {}) == (shared or {}), (t, a)
        assert report["rewrite"]["eval_weights"] == "averaged", report["rewrite"]

    check(onnx_lookahead.inspect(artifacts), 0)
    check(onnx_lookahead.inspect(artifacts / "checkpoint"), 0)
    loop = StockLoop(artifacts, opt.lr)
    loop.run(schedule, batch, on_step=lambda t, lp: lp.save(tmp_path / f"checkpoint_{t}"))
    for t in range(1, STEPS + 1):
        check(onnx_lookahead.inspect(tmp_path / f"checkpoint_{t}"), t)


# ----------------------------------------------------------------------- 7. real model kinds
ZOO = [zoo.CNN_MAXPOOL, zoo.LAYERNORM, zoo.EMBEDDING, zoo.ATTENTION]
ZOO_STEPS = 8


def _host_averaged_run(model, opt, stock, avg, schedule, batch):
    """The ORIGINAL artifacts trained in the stock loop; the averages of their trajectory on the
    host; the eval outputs at those averages from a second loop over the original artifacts."""
    trajectory = []
    plain = zoo.host_lookahead_run(stock, opt.lr, schedule, batch, on_step=lambda t, loop: trajectory.append(
        {n: loop.parameter(n) for n in model.trainable}))
    initial = {n: model.initial(n) for n in model.trainable}
    averages, _ = host_averages(avg, initial, trajectory, model.trainable)
    evaluator = zoo.ZooLoop(stock, opt.lr)
    evals = []
    for a in averages:
        for n, v in a.items():
            evaluator.set_parameter(n, v)
        evals.append(evaluator.evaluate(batch))
    return plain, averages, evals


@pytest.mark.parametrize("avg", [EMA_EVERY_1, SWA_4_2], ids=avg_id)
@pytest.mark.parametrize("model", ZOO, ids=lambda m: m.name)
def test_zoo_models_match_a_host_side_average(model, avg, tmp_path):
    opt = OPTS[ZOO.index(model) % 2]
    stock = zoo.generate(model, opt, tmp_path / "stock")
    onnx_lookahead.rewrite(stock, tmp_path / "averaged", **avg.rewrite_options())
    schedule, batch = model.schedule(ZOO_STEPS), model.eval_batch()
    plain, averages, eval_at_averages = _host_averaged_run(model, opt, stock, avg, schedule, batch)
    exports = {}

    def export(t, loop):
        if t in (4, 5):  # an update pending (both schemes), and not
            exports[t] = tmp_path / f"export_{t}.onnx"
            lort.export_for_inference(loop.module, exports[t], model.output_names)

    run = zoo.rewritten_run(tmp_path / "averaged", opt.lr, schedule, batch, on_step=export)
    expected = zoo.Run(plain.outputs, eval_at_averages)
    zoo.assert_runs_close(f"{model.name} {avg.id} vs the host-side average", run, expected, TOL)
    away = max(float(np.max(np.abs(a[0] - c[0]))) for a, c in zip(eval_at_averages, plain.eval_outputs))
    assert away > MARGIN, f"{model.name}: averaged and current weights evaluate alike ({away:.2g})"
    for t, path in exports.items():
        values = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
        for n in model.trainable:
            assert np.max(np.abs(values[n] - averages[t - 1][n])) <= TOL, f"exported {n} after step {t}"
