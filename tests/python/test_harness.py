"""Checks of the test harness itself (no onnx-lookahead binary needed).

The end-to-end tests are only as good as their reference: if the NumPy backward pass or the NumPy
optimizers were off, a correct rewrite would fail (or, worse, a wrong one pass). So:
- the backward pass matches central finite differences (float64, independent of ORT);
- un-rewritten ORT artifacts train exactly like the plain NumPy inner optimizer (~1e-7).
"""
from __future__ import annotations

import numpy as np
import pytest

from lookahead_testkit.compare import assert_steps_close, max_param_diff
from lookahead_testkit.model import MODELS
from lookahead_testkit.ort import StockLoop
from lookahead_testkit.reference import OPTIMIZERS, reference_run

SPECS = list(MODELS.values())
OPTS = list(OPTIMIZERS.values())
TOL = 1e-5


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_backward_matches_finite_differences(spec):
    params = {n: v.astype(np.float64) for n, v in spec.init_params().items()}
    x, target = spec.batch(np.random.RandomState(3), 8)
    x = x.astype(np.float64)
    target = target.astype(np.float64) if spec.loss == "mse" else target
    _, grads = spec.loss_and_grads(params, x, target)
    assert sorted(grads) == sorted(spec.trainable)
    eps = 1e-6
    for name, g in grads.items():
        flat = params[name].reshape(-1)
        for i in range(0, flat.size, max(1, flat.size // 7)):
            orig = flat[i]
            flat[i] = orig + eps
            up = spec.compute_loss(spec.forward(params, x), target)
            flat[i] = orig - eps
            down = spec.compute_loss(spec.forward(params, x), target)
            flat[i] = orig
            assert g.reshape(-1)[i] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8), (name, i)


@pytest.mark.parametrize("opt", OPTS, ids=lambda o: o.kind)
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_reference_matches_stock_ort(spec, opt, stock_artifacts):
    schedule, batch = spec.schedule(20), spec.eval_batch()
    ref = reference_run(spec, opt, schedule, batch)
    weights = []
    losses, evals = StockLoop(stock_artifacts(spec, opt), opt.lr).run(
        schedule, batch, on_step=lambda t, loop: weights.append(
            {n: loop.parameter(n) for n in spec.param_names}))
    assert_steps_close("training loss", losses, ref.losses, TOL)
    assert_steps_close("eval loss", evals, ref.eval_losses, TOL)
    for t, (got, want) in enumerate(zip(weights, ref.params), 1):
        assert max_param_diff(got, want, spec.param_names) <= TOL, f"weights after step {t}"
    # frozen parameters never move
    for n in spec.frozen:
        assert np.array_equal(weights[-1][n], spec.init_params()[n])
