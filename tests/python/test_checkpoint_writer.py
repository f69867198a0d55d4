"""The streamed checkpoint writer against ONNX Runtime 1.19.2, on a checkpoint with a few MiB of
inline tensors (big enough that their bytes are copied by the kernel from the input file, and laid
out after the FlatBuffer's metadata; the small fixtures of the other tests never get there).

- ORT loads the rewritten checkpoint (CheckpointState.load_checkpoint); every slow weight equals
  its parameter, and every parameter equals the input's; the slow weights share their parameters'
  byte vectors in the file, so the checkpoint grows by metadata only;
- one optimizer step with the rewritten artifacts gives the same loss and weights as one stock
  step (step 1 of k=5 is not a sync step);
- a checkpoint saved by ORT with optimizer state and properties, rewritten, keeps them: training
  resumes exactly like the stock run resumed from the same checkpoint, and ORT can save the
  rewritten state again (it stores the shared tensors separately).
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from lookahead_testkit.model import MlpSpec
from lookahead_testkit.ort import CheckpointState, StockLoop, generate_artifacts
from lookahead_testkit.reference import OptimizerConfig

# W1 256x1024 (1 MiB), W2 1024x512 (2 MiB), W3 512x4: ~3 MiB of float32 parameters.
SPEC = MlpSpec("wide_mlp", 256, ((1024, "tanh"), (512, "tanh"), (4, "none")))
ADAMW = OptimizerConfig("adamw", 0.01)
K, ALPHA = 5, 0.5


@pytest.fixture(scope="module")
def stock(tmp_path_factory):
    return generate_artifacts(SPEC, ADAMW, tmp_path_factory.mktemp("wide_stock") / "artifacts")


def _parameters(checkpoint) -> dict[str, np.ndarray]:
    state = CheckpointState.load_checkpoint(str(checkpoint))
    return {name: np.array(p.data, copy=True) for name, p in state.parameters}


def _slow_name(param: str) -> str:
    return f"lookahead__slow__{param}"


def test_megabytes_of_inline_tensors_load_in_onnx_runtime(stock, lookahead_cli, tmp_path):
    out = lookahead_cli.rewrite(stock, tmp_path / "rewritten", K, ALPHA)
    before = _parameters(stock / "checkpoint")
    after = _parameters(out / "checkpoint")
    assert sum(v.nbytes for v in before.values()) > 3 << 20
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)
        np.testing.assert_array_equal(after[_slow_name(name)], value, err_msg=name)
    assert after["lookahead__step"].tolist() == [0.0]
    stock_size = (stock / "checkpoint").stat().st_size
    out_size = (out / "checkpoint").stat().st_size
    assert stock_size < out_size < stock_size + 64 * 1024, (stock_size, out_size)


def test_one_step_with_rewritten_artifacts_equals_one_stock_step(stock, lookahead_cli, tmp_path):
    out = lookahead_cli.rewrite(stock, tmp_path / "rewritten", K, ALPHA)
    schedule = SPEC.schedule(1)
    stock_loop, la_loop = StockLoop(stock, ADAMW.lr), StockLoop(out, ADAMW.lr)
    assert la_loop.step(schedule[0]) == stock_loop.step(schedule[0])
    for name in SPEC.param_names:
        np.testing.assert_array_equal(la_loop.parameter(name), stock_loop.parameter(name), err_msg=name)


def test_optimizer_state_and_properties_survive_and_onnx_runtime_saves_again(stock, lookahead_cli, tmp_path):
    # A stock run saved after one step, with optimizer state and properties.
    trained = tmp_path / "trained"
    shutil.copytree(stock, trained)
    loop = StockLoop(stock, ADAMW.lr)
    schedule = SPEC.schedule(3, seed=7)
    loop.step(schedule[0])
    loop.state.properties["epoch"] = 3
    loop.state.properties["best_loss"] = 0.25
    loop.state.properties["note"] = "streamed"
    loop.save(trained / "checkpoint")
    out = lookahead_cli.rewrite(trained, tmp_path / "rewritten", K, ALPHA)

    state = CheckpointState.load_checkpoint(str(out / "checkpoint"))
    assert state.properties["epoch"] == 3
    assert state.properties["best_loss"] == 0.25
    assert state.properties["note"] == "streamed"

    # Steps 2 and 3 (cycle positions 1 and 2 of k=5, no sync) resume like the stock run.
    stock_loop, la_loop = StockLoop(trained, ADAMW.lr), StockLoop(out, ADAMW.lr)
    for batches in schedule[1:]:
        assert la_loop.step(batches) == stock_loop.step(batches)
    for name in SPEC.param_names:
        np.testing.assert_array_equal(la_loop.parameter(name), stock_loop.parameter(name), err_msg=name)
        np.testing.assert_array_equal(la_loop.parameter(_slow_name(name)),
                                      loop.parameter(name), err_msg=f"slow {name} holds the weights it started from")

    # ORT saves the rewritten state again (each tensor separately) and loads what it saved.
    la_loop.save(tmp_path / "saved_again")
    again = _parameters(tmp_path / "saved_again")
    for name in SPEC.param_names:
        np.testing.assert_array_equal(again[name], la_loop.parameter(name), err_msg=name)
        np.testing.assert_array_equal(again[_slow_name(name)], loop.parameter(name), err_msg=name)
