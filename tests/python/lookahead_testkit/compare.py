"""Step-by-step comparison with readable failures.

lookahead.md asks to compare every step, not only the last: wrong variants (sync at step 1 or k+1,
slow weights created late, period k+1) agree with the right one at isolated steps. A failure names
the first step that diverged, which usually tells which of those variants the rewrite implements.
"""
from __future__ import annotations

import numpy as np


def per_step_diff(actual, expected) -> np.ndarray:
    """Max |actual - expected| per step; entries are floats or per-forward lists of floats."""
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert a.shape == e.shape, f"shape mismatch: {a.shape} vs {e.shape}"
    return np.abs(a - e).reshape(len(a), -1).max(axis=1)


def assert_steps_close(what: str, actual, expected, tol: float, first_step: int = 1) -> float:
    """Assert every step is within tol; -> the largest difference. first_step numbers the rows."""
    diff = per_step_diff(actual, expected)
    bad = np.nonzero(~(diff <= tol))[0]
    if bad.size:
        i = int(bad[0])
        raise AssertionError(
            f"{what}: step {first_step + i} differs by {diff[i]:.3g} (tol {tol:g}): got {actual[i]}, "
            f"expected {expected[i]}; steps over tol: {[first_step + int(j) for j in bad]}")
    return float(diff.max())


def max_param_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray], names) -> float:
    return max(float(np.max(np.abs(a[n] - b[n]))) for n in names)


def assert_trajectory_close(losses, evals, ref_losses, ref_evals, tol: float, first_step: int = 1) -> None:
    """Training and eval losses per step; the failure names the chronologically first divergence
    (the training loss of step t comes before the eval loss after step t)."""
    checks = [("training loss", losses, ref_losses, 0), ("eval loss", evals, ref_evals, 1)]
    order = []
    for what, actual, expected, rank in checks:
        bad = np.nonzero(~(per_step_diff(actual, expected) <= tol))[0]
        order.append((int(bad[0]) if bad.size else len(actual), rank, what, actual, expected))
    for _, _, what, actual, expected in sorted(order, key=lambda o: o[:2]):
        assert_steps_close(what, actual, expected, tol, first_step)
