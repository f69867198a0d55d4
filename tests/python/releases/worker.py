"""Runs in the venv of one ONNX Runtime training release (tests/python/releases/*.txt): generates
artifacts there, or trains a set there with the stock loop. test_releases.py drives it; it prints
one JSON object on stdout.

    python worker.py generate SPEC OPTIMIZER OUT      -> {"release": ...}
    python worker.py load DIR                         -> {"release"}, or {"release", "error"} if the
                                                         set does not load
    python worker.py train DIR LR SCHEDULE.npz        -> {"release", "losses", "evals"} (or "error")

SPEC names a model of lookahead_testkit.model (an MLP whose NumPy reference the tests compute);
OPTIMIZER is "adamw" or "sgd" (generate_artifacts' OptimType, as every release takes it).
SCHEDULE.npz is what lookahead_testkit.run_loop.save_schedule writes (the batches of every step and
the eval batch).
"""
from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import onnxruntime

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lookahead_testkit.model import MODELS  # noqa: E402
from lookahead_testkit.quiet import quiet_fds  # noqa: E402
from lookahead_testkit.run_loop import load_schedule  # noqa: E402

# The torch-free import of onnxruntime.training (as onnx_lookahead.ort.training_api does; the
# package is not installed in these venvs).
_package = types.ModuleType("onnxruntime.training")
_package.__path__ = [os.path.join(os.path.dirname(onnxruntime.__file__), "training")]
sys.modules["onnxruntime.training"] = _package
onnxruntime.set_default_logger_severity(3)


def generate(spec_name: str, optimizer: str, out: str) -> dict:
    from onnxruntime.training import artifacts

    spec = MODELS[spec_name]
    loss = artifacts.LossType.MSELoss if spec.loss == "mse" else artifacts.LossType.CrossEntropyLoss
    optim = {"adamw": artifacts.OptimType.AdamW, "sgd": artifacts.OptimType.SGD}[optimizer]
    Path(out).mkdir(parents=True, exist_ok=True)
    with quiet_fds():
        artifacts.generate_artifacts(spec.onnx_model(), requires_grad=spec.trainable,
                                     frozen_params=list(spec.frozen) or None, loss=loss,
                                     optimizer=optim, artifact_directory=out)
    return {}


def load(directory: str):
    """(state, module, optimizer) of the stock training API, or the release's refusal."""
    from onnxruntime.training.api import CheckpointState, Module, Optimizer

    d = Path(directory)
    try:
        state = CheckpointState.load_checkpoint(str(d / "checkpoint"))
        module = Module(str(d / "training_model.onnx"), state, str(d / "eval_model.onnx"))
        return state, module, Optimizer(str(d / "optimizer_model.onnx"), module)
    except Exception as error:  # each release raises its own exception types
        return str(error).strip().splitlines()[0]


def loads(directory: str) -> dict:
    loaded = load(directory)
    return {"error": loaded} if isinstance(loaded, str) else {}


def train(directory: str, lr: str, schedule_path: str) -> dict:
    schedule, (eval_x, eval_target) = load_schedule(schedule_path)
    loaded = load(directory)
    if isinstance(loaded, str):
        return {"error": loaded}
    _, module, optimizer = loaded
    optimizer.set_learning_rate(float(lr))
    scalar = lambda value: float(np.asarray(value).reshape(-1)[0])  # noqa: E731 (1.16 gives shape [1])
    losses, evals = [], []
    module.train()
    for batches in schedule:
        losses.append([scalar(module(x, target)) for x, target in batches])
        optimizer.step()
        module.lazy_reset_grad()
        module.eval()
        evals.append(scalar(module(eval_x, eval_target)))
        module.train()
    return {"losses": losses, "evals": evals}


def main() -> None:
    command, *args = sys.argv[1:]
    answer = {"generate": generate, "load": loads, "train": train}[command](*args)
    answer["release"] = onnxruntime.__version__
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
