"""End-to-end: `rewrite --inner-state reset` on ONNX Runtime AdamW artifacts, trained by the stock
training API.

At every Lookahead sync AdamW's moments restart at zero and its bias-correction count at 1, for
every parameter (optax `lookahead(reset_state=True)`); the optimizer model is patched for it
(docs/experiments/ort_inner_state/), the training and eval graphs are those of `keep`. Every case
compares every step with the NumPy reference (lookahead_testkit.reference, inner_state="reset") and
checks that the run differs from Lookahead with `keep` and from plain AdamW, so a rewrite that
ignored the option fails.
"""
from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

from lookahead_testkit.compare import assert_trajectory_close, max_param_diff, per_step_diff
from lookahead_testkit.model import MIXED_MLP, TANH_MLP
from lookahead_testkit.ort import StockLoop
from lookahead_testkit.reference import ADAMW, reference_run

K, ALPHA, STEPS, TOL, MARGIN = 3, 0.5, 13, 1e-5, 1e-4
RESET = ("--inner-state", "reset")


def _assert_differs(losses, evals, spec, schedule, batch, **ref_kwargs):
    """The run is neither Lookahead with keep nor plain AdamW."""
    keep = reference_run(spec, ADAMW, schedule, batch, K, ALPHA, **ref_kwargs)
    plain = reference_run(spec, ADAMW, schedule, batch)
    for name, other in (("keep", keep), ("plain AdamW", plain)):
        away = max(per_step_diff(losses, other.losses).max(), per_step_diff(evals, other.eval_losses).max())
        assert away > MARGIN, f"--inner-state reset trains like {name} ({away:.2g})"


@pytest.mark.parametrize("spec,forwards", [(TANH_MLP, 1), (MIXED_MLP, 1), (TANH_MLP, 3)],
                         ids=["tanh_mlp", "mixed_mlp", "tanh_mlp-accumulate3"])
def test_reset_follows_the_reference(spec, forwards, stock_artifacts, lookahead_cli, tmp_path):
    out = lookahead_cli.rewrite(stock_artifacts(spec, ADAMW), tmp_path / "artifacts", K, ALPHA, *RESET)
    schedule, batch = spec.schedule(STEPS, forwards=forwards), spec.eval_batch()
    raw = {}

    def record(t, loop):
        if t % K:  # raw weights only where no lazy sync is pending
            raw[t] = {n: loop.parameter(n) for n in spec.trainable}

    losses, evals = StockLoop(out, ADAMW.lr).run(schedule, batch, on_step=record)
    ref = reference_run(spec, ADAMW, schedule, batch, K, ALPHA, inner_state="reset")
    assert_trajectory_close(losses, evals, ref.losses, ref.eval_losses, TOL)
    for t, weights in raw.items():
        assert max_param_diff(weights, ref.params[t - 1], spec.trainable) <= TOL, f"weights after step {t}"
    _assert_differs(losses, evals, spec, schedule, batch)
    report = lookahead_cli.inspect(out)
    assert report["rewrite"]["inner_state"] == "reset"
    assert report["optimizer"] == "AdamW"


def test_reset_survives_save_and_resume(stock_artifacts, lookahead_cli, tmp_path):
    """A checkpoint saved with the optimizer state mid-cycle resumes into the same run: the reset
    clock is the optimizer's saved step."""
    spec = TANH_MLP
    out = lookahead_cli.rewrite(stock_artifacts(spec, ADAMW), tmp_path / "artifacts", K, ALPHA, *RESET)
    schedule, batch = spec.schedule(STEPS), spec.eval_batch()
    first = StockLoop(out, ADAMW.lr)
    split = 7  # mid-cycle, the step after a sync
    losses, evals = first.run(schedule[:split], batch)
    first.save(tmp_path / "saved_checkpoint")
    resumed = StockLoop(out, ADAMW.lr, checkpoint=tmp_path / "saved_checkpoint")
    more_losses, more_evals = resumed.run(schedule[split:], batch)
    ref = reference_run(spec, ADAMW, schedule, batch, K, ALPHA, inner_state="reset")
    assert_trajectory_close(losses + more_losses, evals + more_evals, ref.losses, ref.eval_losses, TOL)


def test_rewriting_a_trained_checkpoint_counts_cycles_from_its_step(stock_artifacts, lookahead_cli, tmp_path):
    """Artifacts whose checkpoint holds AdamW state after 4 plain steps: the resets come with the
    syncs (3, 6, .. steps after the rewrite), and AdamW keeps its own count until the first one."""
    spec, plain_steps = MIXED_MLP, 4
    schedule, batch = spec.schedule(STEPS), spec.eval_batch()
    trained = tmp_path / "trained"
    shutil.copytree(stock_artifacts(spec, ADAMW), trained)
    loop = StockLoop(trained, ADAMW.lr)
    losses, evals = loop.run(schedule[:plain_steps], batch)
    loop.save(tmp_path / "after_plain")
    shutil.copyfile(tmp_path / "after_plain", trained / "checkpoint")
    out = lookahead_cli.rewrite(trained, tmp_path / "artifacts", K, ALPHA, *RESET)
    more_losses, more_evals = StockLoop(out, ADAMW.lr).run(schedule[plain_steps:], batch)
    losses, evals = losses + more_losses, evals + more_evals
    ref = reference_run(spec, ADAMW, schedule, batch, K, ALPHA, inner_state="reset", plain_steps=plain_steps)
    assert_trajectory_close(losses, evals, ref.losses, ref.eval_losses, TOL)
    # Resetting on the optimizer's absolute step (4 is not a multiple of 3), or restarting AdamW's
    # bias-correction count at the rewrite, would leave this reference by far more than TOL.
    keep = reference_run(spec, ADAMW, schedule, batch, K, ALPHA, plain_steps=plain_steps)
    assert per_step_diff(losses, keep.losses).max() > MARGIN, "the run follows --inner-state keep"


def test_only_the_optimizer_model_changes_and_finalize_takes_it_back(stock_artifacts, lookahead_cli, tmp_path):
    source = stock_artifacts(TANH_MLP, ADAMW)
    keep = lookahead_cli.rewrite(source, tmp_path / "keep", K, ALPHA)
    reset = lookahead_cli.rewrite(source, tmp_path / "reset", K, ALPHA, *RESET)
    assert (keep / "optimizer_model.onnx").read_bytes() == (source / "optimizer_model.onnx").read_bytes()
    for name in ("training_model.onnx", "eval_model.onnx"):  # the same graphs; the records differ
        assert onnx.load(str(keep / name)).graph == onnx.load(str(reset / name)).graph, name
    patched = onnx.load(str(reset / "optimizer_model.onnx"))
    onnx.checker.check_model(patched)
    original = onnx.load(str(source / "optimizer_model.onnx"))
    assert [i.name for i in patched.graph.input] == [i.name for i in original.graph.input]
    assert [o.name for o in patched.graph.output] == [o.name for o in original.graph.output]
    main_adamw = [n for n in patched.graph.node if n.op_type == "AdamWOptimizer"]
    assert len(main_adamw) == 1 and main_adamw[0].attribute == original.graph.node[0].attribute
    plain = tmp_path / "plain"
    done = lookahead_cli.run("finalize", reset, "--output", plain)
    assert done.returncode == 0, done.stderr
    for name in ("training_model.onnx", "eval_model.onnx", "optimizer_model.onnx"):
        assert (plain / name).read_bytes() == (source / name).read_bytes(), name


def test_reset_with_a_subset_is_refused(stock_artifacts, lookahead_cli, tmp_path):
    """The moments come in one unordered sequence: a reset cannot spare the parameters left out."""
    res = lookahead_cli.run("rewrite", stock_artifacts(TANH_MLP, ADAMW), "--output", tmp_path / "out",
                            *RESET, "--exclude", "b*")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1, res.stderr
    assert "cannot be combined with --include/--exclude" in lines[0]
    assert not any(tmp_path.iterdir())


def test_reset_keeps_non_sync_steps_free_of_per_element_work(stock_artifacts, lookahead_cli, tmp_path):
    """The zeroing nodes sit in the If's then-branch only; the main graph adds scalar ops."""
    out = lookahead_cli.rewrite(stock_artifacts(TANH_MLP, ADAMW), tmp_path / "artifacts", K, ALPHA, *RESET)
    graph = onnx.load(str(out / "optimizer_model.onnx")).graph
    added = [n for n in graph.node if n.name.startswith("lookahead__")]
    assert {n.op_type for n in added} <= {"Sub", "Mod", "Equal", "Add", "Greater", "Where", "And", "If"}
    branch = next(n for n in added if n.op_type == "If")
    then = next(a.g for a in branch.attribute if a.name == "then_branch")
    assert [n.op_type for n in then.node] == ["AdamWOptimizer", "AdamWOptimizer"]
    assert np.all([n.domain == "com.microsoft" for n in then.node])
