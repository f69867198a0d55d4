"""`onnx_lookahead.ort.load_parameters`: weights set from outside (a federated client receiving the
global model) in the stock ONNX Runtime loop, against the NumPy reference.

The scenario of every case: a client trains 2k steps of Lookahead (ending on a sync step), applies
the pending sync with `sync_parameters` (as it does before sending), receives new weights W' and
loads them, then trains 2k+1 more steps. With `restart=True` every step of the rest must be
Lookahead started from W' (slow weights W', a full cycle first); without it, the reference with the
stale slow weights (the first sync, k steps after the load, pulls W' back toward the old slow
weights), and the two differ.
The reference (`_Reference`) follows ONNX Runtime's lazy sync: the counter runs 0..k and a sync
pending after step k is applied at the next training forward; its plain part is checked against
lookahead_testkit.reference.reference_run.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from lookahead_testkit.averaging import EMA_EVERY_1, SWA_2_1, averaged_run
from lookahead_testkit.compare import assert_trajectory_close, max_param_diff, per_step_diff
from lookahead_testkit.model import MIXED_MLP, TANH_MLP
from lookahead_testkit.ort import CheckpointState, StockLoop
from lookahead_testkit.reference import ADAMW, F32, SGD_CFG, reference_run

import onnx_lookahead
from onnx_lookahead import ort

K, ALPHA, TOL, MARGIN = 3, 0.5, 1e-5, 1e-4


class _Reference:
    """Lookahead in NumPy with ONNX Runtime's state: weights, slow weights, inner optimizer and its
    step count, and the counter (k: a sync is pending until the next training forward)."""

    def __init__(self, spec, opt, params):
        self.spec, self.opt = spec, opt
        self.p = {n: v.copy() for n, v in params.items()}
        self.slow = {n: self.p[n].copy() for n in spec.trainable}
        self.inner, self.t, self.counter = opt.make(), 0, 0

    def _synced(self):
        return {n: self.slow[n] + F32(ALPHA) * (self.p[n] - self.slow[n]) for n in self.slow}

    def sync(self):  # sync_parameters: applied, and the counter moved past it (0: a cycle starts)
        if self.counter == K:
            self.slow = self._synced()
            self.p.update({n: v.copy() for n, v in self.slow.items()})
            self.counter = 0

    def load(self, weights, restart: bool, reset: bool = False):
        self.p.update({n: v.copy() for n, v in weights.items()})
        if restart:
            self.slow = {n: weights[n].copy() for n in self.slow}
            self.counter = 0
        if reset:
            self.inner, self.t = self.opt.make(), 0

    def run(self, schedule, eval_batch):
        losses, evals = [], []
        for batches in schedule:
            if self.counter == K:
                self.sync()
                self.counter = 0
            self.counter += 1
            step_losses, total = [], None
            for x, target in batches:
                loss, g = self.spec.loss_and_grads(self.p, x, target)
                step_losses.append(float(loss))
                total = g if total is None else {n: total[n] + g[n] for n in g}
            self.t += 1
            self.inner.step(self.p, total, self.t)
            seen = {**self.p, **(self._synced() if self.counter == K else {})}
            losses.append(step_losses)
            evals.append(float(self.spec.compute_loss(self.spec.forward(seen, eval_batch[0]), eval_batch[1])))
        return losses, evals


def _new_weights(spec):
    """W': the initial weights of another seed (trainable parameters only)."""
    other = dataclasses.replace(spec, seed=spec.seed + 100).init_params()
    return {n: other[n] for n in spec.trainable}


def _client(spec, opt, artifacts):
    """The client's first 2k steps and its sync; -> (loop, reference) at the same point."""
    schedule, batch = spec.schedule(2 * K, seed=3), spec.eval_batch()
    loop = StockLoop(artifacts, opt.lr)
    losses, evals = loop.run(schedule, batch)
    ref = _Reference(spec, opt, spec.init_params())
    ref_losses, ref_evals = ref.run(schedule, batch)
    plain = reference_run(spec, opt, schedule, batch, K, ALPHA)  # the lazy reference is Lookahead
    assert_trajectory_close(ref_losses, ref_evals, plain.losses, plain.eval_losses, 1e-6)
    assert_trajectory_close(losses, evals, ref_losses, ref_evals, TOL)
    assert ort.sync_parameters(loop.state) is True
    ref.sync()
    return loop, ref


def _weights(state, names):
    return {n: np.array(state.parameters[n].data, copy=True) for n in names}


@pytest.mark.parametrize("opt", [ADAMW, SGD_CFG], ids=lambda o: o.kind)
@pytest.mark.parametrize("spec", [TANH_MLP, MIXED_MLP], ids=lambda s: s.name)
def test_restart_trains_as_lookahead_from_the_loaded_weights(spec, opt, lookahead_artifacts):
    artifacts = lookahead_artifacts(spec, opt, K, ALPHA)
    loop, ref = _client(spec, opt, artifacts)
    stale = _Reference.__new__(_Reference)
    stale.__dict__ = {key: (dict(value) if isinstance(value, dict) else value) for key, value in ref.__dict__.items()}
    stale.inner = opt.make() if opt.kind == "sgd" else _copy_adamw(ref.inner)
    frozen = _weights(loop.state, spec.frozen)
    new = _new_weights(spec)

    returned = ort.load_parameters(loop.state, new)  # restart=True, inner_state="keep"
    assert returned is loop.state
    rec = ort.record(loop.state)
    for wrapped in rec["parameters"]:
        for slot in wrapped["state"]:
            assert np.array_equal(loop.state.parameters[slot].data, new[wrapped["name"]]), slot
    assert all(float(np.asarray(loop.state.parameters[c].data).reshape(-1)[0]) == 0.0 for c in rec["counters"])
    assert all(np.array_equal(loop.state.parameters[n].data, v) for n, v in frozen.items()), "frozen changed"
    assert ort.sync_parameters(loop.state) is False  # the start of a cycle: nothing pending

    more, batch = spec.schedule(2 * K + 1, seed=4), spec.eval_batch()
    losses, evals = loop.run(more, batch)
    ref.load(new, restart=True)
    ref_losses, ref_evals = ref.run(more, batch)
    assert_trajectory_close(losses, evals, ref_losses, ref_evals, TOL)
    assert max_param_diff(_weights(loop.state, spec.trainable), ref.p, spec.trainable) <= TOL
    assert all(np.array_equal(loop.state.parameters[n].data, v) for n, v in frozen.items()), "frozen changed"
    # Without the restart the first sync would have pulled W' back: a different trajectory.
    stale.load(new, restart=False)
    stale_losses, stale_evals = stale.run(more, batch)
    away = max(per_step_diff(losses, stale_losses).max(), per_step_diff(evals, stale_evals).max())
    assert away > MARGIN, f"restart=True trains like the stale run ({away:.2g})"


def _copy_adamw(inner):
    copy = type(inner).__new__(type(inner))
    copy.__dict__ = {key: (dict(value) if isinstance(value, dict) else value) for key, value in inner.__dict__.items()}
    return copy


@pytest.mark.parametrize("opt", [ADAMW, SGD_CFG], ids=lambda o: o.kind)
def test_without_restart_the_stale_slow_weights_pull_back(opt, lookahead_artifacts):
    spec = TANH_MLP
    loop, ref = _client(spec, opt, lookahead_artifacts(spec, opt, K, ALPHA))
    restarted = _Reference.__new__(_Reference)
    restarted.__dict__ = dict(ref.__dict__, p=dict(ref.p), slow=dict(ref.slow),
                              inner=_copy_adamw(ref.inner))
    new = _new_weights(spec)
    slow_before = {w["state"][0]: np.array(loop.state.parameters[w["state"][0]].data)
                   for w in ort.record(loop.state)["parameters"]}
    assert ort.load_parameters(loop.state, new, restart=False) is loop.state
    assert all(np.array_equal(loop.state.parameters[n].data, v) for n, v in slow_before.items())
    more, batch = spec.schedule(2 * K + 1, seed=4), spec.eval_batch()
    losses, evals = loop.run(more, batch)
    ref.load(new, restart=False)
    ref_losses, ref_evals = ref.run(more, batch)
    assert_trajectory_close(losses, evals, ref_losses, ref_evals, TOL)
    restarted.load(new, restart=True)
    good_losses, good_evals = restarted.run(more, batch)
    away = max(per_step_diff(losses, good_losses).max(), per_step_diff(evals, good_evals).max())
    assert away > MARGIN, f"restart=False trains like the restarted run ({away:.2g})"
    # The pull-back: sync_parameters left no sync pending, so both runs train alike from W' until
    # the first sync after the load (step K), which moves W' toward the old slow weights;
    # evaluation after step K already sees it.
    assert per_step_diff(losses[:K], good_losses[:K]).max() <= TOL
    assert abs(evals[K - 1] - good_evals[K - 1]) > MARGIN


@pytest.mark.parametrize("opt", [ADAMW, SGD_CFG], ids=lambda o: o.kind)
def test_reset_is_lookahead_from_scratch_at_the_loaded_weights(opt, lookahead_artifacts):
    """inner_state="reset": a new state without optimizer state; a new Module and Optimizer over it
    train exactly as the reference loop started from W' (reference_run of the spec whose initial
    weights are W')."""
    spec = TANH_MLP
    artifacts = lookahead_artifacts(spec, opt, K, ALPHA)
    loop, _ = _client(spec, opt, artifacts)
    new = _new_weights(spec)
    state = ort.load_parameters(loop.state, new, inner_state="reset")
    assert state is not loop.state
    assert ort.record(state) == ort.record(loop.state)
    more, batch = spec.schedule(2 * K + 1, seed=4), spec.eval_batch()
    losses, evals = StockLoop(artifacts, opt.lr, state=state).run(more, batch)
    ref = reference_run(dataclasses.replace(spec, seed=spec.seed + 100), opt, more, batch, K, ALPHA)
    assert_trajectory_close(losses, evals, ref.losses, ref.eval_losses, TOL)
    if opt.kind == "adamw":  # keeping the moments is another trajectory
        kept = _Reference(spec, opt, spec.init_params())
        kept.run(spec.schedule(2 * K, seed=3), batch)
        kept.sync()
        kept.load(new, restart=True)
        kept_losses, _ = kept.run(more, batch)
        assert per_step_diff(losses, kept_losses).max() > MARGIN


def test_a_list_follows_the_contiguous_parameter_order(lookahead_artifacts):
    spec, opt = MIXED_MLP, ADAMW
    artifacts = lookahead_artifacts(spec, opt, K, ALPHA)
    loop = StockLoop(artifacts, opt.lr)
    new = _new_weights(spec)
    names = [w["name"] for w in ort.record(loop.state)["parameters"]]
    assert sorted(names) == sorted(spec.trainable)
    ort.load_parameters(loop.state, [new[n] for n in names])
    flat = loop.module.get_contiguous_parameters(trainable_only=True).numpy()
    assert np.array_equal(flat, np.concatenate([new[n].ravel() for n in names]))


def test_mistakes_are_refused_before_anything_is_written(lookahead_artifacts, stock_artifacts):
    spec, opt = MIXED_MLP, ADAMW
    loop = StockLoop(lookahead_artifacts(spec, opt, K, ALPHA), opt.lr)
    loop.step(spec.schedule(1)[0])
    everything = [n for n, _ in loop.state.parameters]
    before = _weights(loop.state, everything)
    new = _new_weights(spec)
    slow = ort.record(loop.state)["parameters"][0]["state"][0]
    cases = [
        ({**new, "nope": new["W1"]}, {}, "no parameter named 'nope'"),
        ({**new, "b2": before["b2"]}, {}, "'b2' is not a trainable parameter"),
        ({**new, slow: new["W1"]}, {}, f"'{slow}' is not a trainable parameter"),
        ({n: v for n, v in new.items() if n != "W3"}, {}, "no value for the trainable parameter.*'W3'"),
        ({**new, "W1": new["W1"].astype(np.float64)}, {}, "'W1' is float32 .* given is float64"),
        ({**new, "W2": new["W2"].T}, {}, r"'W2' is float32 \(12, 10\), the value given is float32 \(10, 12\)"),
        (list(new.values())[:-1], {}, "values for 7 trainable parameters"),
        (new, {"inner_state": "zero"}, "inner_state must be one of"),
    ]
    for weights, options, message in cases:
        with pytest.raises(onnx_lookahead.Error, match=message):
            ort.load_parameters(loop.state, weights, **options)
        after = _weights(loop.state, everything)
        assert all(np.array_equal(after[n], before[n]) for n in everything), message


def test_plain_sets_get_their_weights_and_lists_need_a_record(stock_artifacts):
    spec, opt = MIXED_MLP, SGD_CFG
    loop = StockLoop(stock_artifacts(spec, opt), opt.lr)
    new = _new_weights(spec)
    assert ort.load_parameters(loop.state, new) is loop.state
    assert max_param_diff(_weights(loop.state, spec.trainable), new, spec.trainable) == 0
    with pytest.raises(onnx_lookahead.Error, match="pass a dict"):
        ort.load_parameters(loop.state, list(new.values()))


def test_reset_sets_need_inner_state_reset_to_restart(stock_artifacts, lookahead_cli, tmp_path):
    """--inner-state reset sets reset AdamW at the optimizer's own step count."""
    spec = TANH_MLP
    out = lookahead_cli.rewrite(stock_artifacts(spec, ADAMW), tmp_path / "artifacts", K, ALPHA,
                                "--inner-state", "reset")
    loop = StockLoop(out, ADAMW.lr)
    loop.run(spec.schedule(2 * K, seed=3), spec.eval_batch())
    new = _new_weights(spec)
    with pytest.raises(onnx_lookahead.Error, match="--inner-state reset"):
        ort.load_parameters(loop.state, new)
    assert ort.load_parameters(loop.state, new, restart=False) is loop.state
    state = ort.load_parameters(loop.state, new, inner_state="reset")
    more, batch = spec.schedule(2 * K + 1, seed=4), spec.eval_batch()
    losses, evals = StockLoop(out, ADAMW.lr, state=state).run(more, batch)
    ref = reference_run(dataclasses.replace(spec, seed=spec.seed + 100), ADAMW, more, batch, K, ALPHA,
                        inner_state="reset")
    assert_trajectory_close(losses, evals, ref.losses, ref.eval_losses, TOL)


def test_shared_tensors_restart_at_zero(lookahead_artifacts):
    """A record's optional "shared" list (set-wide state such as SWA's sample count) goes to 0 with
    restart; read generically from the record."""
    spec, opt = TANH_MLP, SGD_CFG
    loop = StockLoop(lookahead_artifacts(spec, opt, K, ALPHA), opt.lr)
    loop.run(spec.schedule(2), spec.eval_batch())
    rec = ort.record(loop.state)
    counter = rec["counters"][0]
    assert float(np.asarray(loop.state.parameters[counter].data)[0]) == 2.0
    loop.state.properties[ort.RECORD] = json.dumps({**rec, "counters": [], "shared": [counter]})
    ort.load_parameters(loop.state, _new_weights(spec))
    assert np.array_equal(loop.state.parameters[counter].data, np.zeros(1, np.float32))


def test_the_reset_state_saves_and_loads(lookahead_artifacts, tmp_path):
    """The state returned by inner_state="reset" saves and loads like any other."""
    spec, opt = TANH_MLP, ADAMW
    artifacts = lookahead_artifacts(spec, opt, K, ALPHA)
    loop = StockLoop(artifacts, opt.lr)
    new = _new_weights(spec)
    state = ort.load_parameters(loop.state, new, inner_state="reset")
    CheckpointState.save_checkpoint(state, str(tmp_path / "ckpt"))
    again = CheckpointState.load_checkpoint(str(tmp_path / "ckpt"))
    assert max_param_diff(_weights(again, spec.trainable), new, spec.trainable) == 0
    assert ort.record(again) == ort.record(loop.state)


def test_a_state_without_a_module_yet(lookahead_artifacts):
    """A client loads its checkpoint and the global weights before it creates the Module (ORT's own
    parameter setter crashes there); the Module then trains from them."""
    spec, opt = TANH_MLP, ADAMW
    artifacts = lookahead_artifacts(spec, opt, K, ALPHA)
    state = CheckpointState.load_checkpoint(str(artifacts / "checkpoint"))
    new = _new_weights(spec)
    assert ort.load_parameters(state, new) is state
    loop = StockLoop(artifacts, opt.lr, state=state)
    flat = loop.module.get_contiguous_parameters(trainable_only=True).numpy()
    names = [w["name"] for w in ort.record(state)["parameters"]]
    assert np.array_equal(flat, np.concatenate([new[n].ravel() for n in names]))
    more, batch = spec.schedule(2 * K + 1, seed=4), spec.eval_batch()
    losses = [loop.step(batches) for batches in more]
    ref = reference_run(dataclasses.replace(spec, seed=spec.seed + 100), opt, more, batch, K, ALPHA)
    assert per_step_diff(losses, ref.losses).max() <= TOL


@pytest.mark.parametrize("avg", [EMA_EVERY_1, SWA_2_1], ids=lambda a: a.scheme)
def test_restart_restarts_an_ema_or_swa_average(avg, stock_artifacts, tmp_path):
    """EMA and SWA sets: restart makes the average a copy of the loaded weights and the counter and
    SWA's sample count 0, read from the record like Lookahead's slow weights; with the inner state
    reset, the run from there is the scheme's reference started at W' (the average of the old
    run is gone: the averaged evaluation differs from the one that keeps it)."""
    spec, opt = TANH_MLP, ADAMW
    artifacts = tmp_path / avg.scheme
    onnx_lookahead.rewrite(stock_artifacts(spec, opt), artifacts, **avg.rewrite_options())
    loop = StockLoop(artifacts, opt.lr)
    batch = spec.eval_batch()
    loop.run(spec.schedule(5, seed=3), batch)
    ort.sync_parameters(loop.state)
    stale = {n: np.array(loop.state.parameters[f"lookahead__{avg.scheme}__{n}"].data) for n in spec.trainable}
    new = _new_weights(spec)
    state = ort.load_parameters(loop.state, new, inner_state="reset")
    rec = ort.record(state)
    for wrapped in rec["parameters"]:
        for name in wrapped["state"]:
            np.testing.assert_array_equal(state.parameters[name].data, new[wrapped["name"]])
    for name in rec["counters"] + rec.get("shared", []):
        assert float(np.asarray(state.parameters[name].data).reshape(-1)[0]) == 0.0, name
    assert (avg.scheme == "swa") == bool(rec.get("shared")), rec
    more = spec.schedule(4, seed=4)
    losses, evals = StockLoop(artifacts, opt.lr, state=state).run(more, batch)
    ref = averaged_run(dataclasses.replace(spec, seed=spec.seed + 100), opt, more, batch, avg)
    assert_trajectory_close(losses, evals, ref.plain.losses, ref.eval_averaged, TOL)
    # The averaged evaluation proves something: it is not the current weights', nor the stale average's.
    assert per_step_diff(evals, ref.plain.eval_losses).max() > MARGIN
    assert max(np.abs(stale[n] - new[n]).max() for n in spec.trainable) > MARGIN
