"""ONNX Runtime training (1.19.2) without torch: import shim, artifact generation, the stock loop.

`import onnxruntime.training` runs the package's __init__, which imports torch (through
onnxruntime/training/optim). Neither the artifact generator nor the training API needs torch, so
before anything below `onnxruntime.training` is imported, `onnx_lookahead.ort.training_api()`
registers a bare package object with the real package folder as its __path__ in sys.modules: the
submodules then import normally and the package __init__ never runs. Importing this module does it.

`StockLoop` is the training loop a user writes against the artifacts; the tests drive rewritten
artifacts through it unchanged (that is the point of the rewrite):
    state = CheckpointState.load_checkpoint(ckpt); module = Module(train, state, eval)
    optimizer = Optimizer(optim, module)
    loss = module(x, y); optimizer.step(); module.lazy_reset_grad()
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import onnxruntime

from .model import MlpSpec
from .quiet import quiet_fds
from .reference import OptimizerConfig


# The installed package's torch-free import (what users call) installs the shim.
from onnx_lookahead.ort import training_api  # noqa: E402

training_api()
# ORT logs every graph transformation at info level while generating artifacts; keep errors only.
onnxruntime.set_default_logger_severity(3)

from onnxruntime.training import artifacts as _artifacts  # noqa: E402
from onnxruntime.training import onnxblock as _onnxblock  # noqa: E402
from onnxruntime.training.api import CheckpointState, Module, Optimizer  # noqa: E402

ARTIFACT_FILES = ("training_model.onnx", "eval_model.onnx", "optimizer_model.onnx", "checkpoint")


def generate_artifacts(spec: MlpSpec, opt: OptimizerConfig, directory, quiet: bool = True,
                       ort_format: bool = False) -> Path:
    """ORT training artifacts for `spec` (initial weights spec.init_params()) with optimizer `opt`.

    Trainable = spec.trainable, frozen = spec.frozen. The learning rate is not baked in: the loop
    sets it (StockLoop does). ort_format: also the ORT-format copies (.ort and
    .required_operators.config per model). Returns the artifact directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if opt.kind == "adamw":
        optimizer = _onnxblock.optim.AdamW(weight_decay=opt.weight_decay)
    else:
        optimizer = _artifacts.OptimType.SGD
    loss = _artifacts.LossType.MSELoss if spec.loss == "mse" else _artifacts.LossType.CrossEntropyLoss
    with quiet_fds() if quiet else contextlib.nullcontext():
        _artifacts.generate_artifacts(
            spec.onnx_model(), requires_grad=spec.trainable, frozen_params=list(spec.frozen) or None,
            loss=loss, optimizer=optimizer, artifact_directory=str(directory), ort_format=ort_format)
    return directory


class StockLoop:
    """The unmodified ORT training-API loop over one artifact directory.

    checkpoint: a checkpoint to resume from instead of <directory>/checkpoint.
    state: a CheckpointState to train instead (e.g. what load_parameters returned).
    session_options: onnxruntime.SessionOptions for the training and eval sessions (benchmarks).
    models: the models' file extension: ".onnx", or ".ort" for their ORT-format copies.
    """

    def __init__(self, directory, lr: float, checkpoint=None, session_options=None, models: str = ".onnx",
                 state=None):
        directory = Path(directory)
        self.state = state if state is not None else CheckpointState.load_checkpoint(
            str(checkpoint or directory / "checkpoint"))
        self.module = Module(str(directory / f"training_model{models}"), self.state,
                             str(directory / f"eval_model{models}"), session_options=session_options)
        self.optimizer = Optimizer(str(directory / f"optimizer_model{models}"), self.module)
        self.optimizer.set_learning_rate(lr)
        self.module.train()

    def step(self, batches) -> list[float]:
        """One optimizer step: a forward (+ backward) per batch, then step() and lazy_reset_grad()."""
        losses = [float(self.module(x, target)) for x, target in batches]
        self.optimizer.step()
        self.module.lazy_reset_grad()
        return losses

    def eval_loss(self, batch) -> float:
        self.module.eval()
        try:
            return float(self.module(*batch))
        finally:
            self.module.train()

    def parameter(self, name: str) -> np.ndarray:
        return np.array(self.state.parameters[name].data, copy=True)

    def export(self, path, outputs: list[str]) -> None:
        self.module.export_model_for_inferencing(str(path), outputs)

    def save(self, path) -> None:
        CheckpointState.save_checkpoint(self.state, str(path), include_optimizer_state=True)

    def run(self, schedule, eval_batch, on_step=None):
        """Train over schedule; -> (losses per step, eval loss after every step).

        on_step(t, loop) is called after step t (after its eval), e.g. to export or read weights.
        """
        losses, evals = [], []
        for t, batches in enumerate(schedule, 1):
            losses.append(self.step(batches))
            evals.append(self.eval_loss(eval_batch))
            if on_step is not None:
                on_step(t, self)
        return losses, evals


def run_inference(path, inputs: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
    """Run an (exported) inference model with a plain InferenceSession."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(outputs, inputs)
