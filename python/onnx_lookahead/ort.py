"""Helpers for the ONNX Runtime training loop over artifacts rewritten by onnx-lookahead.

ONNX Runtime's training API (onnxruntime-training, 1.16 to 1.19) lives in ``onnxruntime.training``,
whose package ``__init__`` imports torch although the training API does not need it.
:func:`training_api` imports ``onnxruntime.training.api`` without running that ``__init__``, so
nothing here needs torch; ``onnxruntime`` itself is imported only when a function is called.
Importing this module checks (from installed metadata, without importing onnxruntime) that ONNX
Runtime with the training API is installed, and only one ONNX Runtime build: ImportError with the
fix otherwise (the ``[ort]`` extra; Python 3.9 to 3.12, the last training release's wheels).

- :func:`training_api`: the torch-free import (``CheckpointState``, ``Module``, ``Optimizer``).
- :func:`sync_parameters`: applies a pending sync to a ``CheckpointState`` in place, so that the
  parameters read through the ORT API right after a sync step are the Lookahead weights (for
  example on a federated-learning client that sends its weights after its local steps).
- :func:`export_for_inference`: ``Module.export_model_for_inferencing`` followed by
  :func:`onnx_lookahead.finalize`: a plain inference model at the Lookahead or slow weights.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import types
from typing import Any, Dict, Sequence

from . import Error, PathLike, finalize
from ._runtime import require_training_api

# Fail here, with the fix, rather than at the first call deep inside ONNX Runtime.
require_training_api("onnx_lookahead.ort")

RECORD = "onnx_lookahead.record"


def training_api() -> types.ModuleType:
    """``onnxruntime.training.api``, imported without torch."""
    import onnxruntime

    name = "onnxruntime.training"
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [os.path.join(os.path.dirname(onnxruntime.__file__), "training")]
        sys.modules[name] = package
    from onnxruntime.training import api

    return api


def record(state: Any) -> Dict[str, Any]:
    """What the rewrite recorded in a checkpoint's property bag (scheme, settings, parameters and
    their state, counters). Raises :class:`Error` for a checkpoint of artifacts it did not rewrite."""
    properties = state.properties
    if RECORD not in properties:
        raise Error("the checkpoint holds no onnx-lookahead record: its artifacts were not rewritten")
    return json.loads(properties[RECORD])


def sync_parameters(state: Any) -> bool:
    """Applies a pending sync to the ``CheckpointState`` in place; returns whether one was pending.

    Right after a sync step (the k-th inner step of a cycle) the rewritten training graph performs
    the sync at the next training forward, so until then ``state.parameters`` (and
    ``Module.get_contiguous_parameters``, ``copy_parameters_to``...) hold the fast weights. This
    computes ``slow + alpha * (fast - slow)`` as the graph would (same operations and rounding, in
    the parameters' own type) and writes it into both the parameter and its slow weight. Safe at
    any step and idempotent: when nothing is pending nothing changes, and once applied the graph's
    own sync at the next forward leaves the (equal) weights as they are.
    """
    import numpy as np

    rec = record(state)
    if rec.get("scheme") != "lookahead":
        raise Error(f"the checkpoint was rewritten for {rec.get('scheme')!r}, which this version does not know")
    k, alpha = rec["settings"]["k"], rec["settings"]["alpha"]
    counter = rec["counters"][0]
    parameters = state.parameters
    if float(np.asarray(parameters[counter].data).reshape(-1)[0]) != float(k):
        return False
    for wrapped in rec["parameters"]:
        name, slow_name = wrapped["name"], wrapped["state"][0]
        fast = np.asarray(parameters[name].data)
        slow = np.asarray(parameters[slow_name].data)
        if alpha == 1.0:
            synced = fast.copy()
        else:
            a = fast.dtype.type(alpha)
            synced = (slow + (a * (fast - slow)).astype(fast.dtype)).astype(fast.dtype)
        parameters[name] = synced
        parameters[slow_name] = synced
    return True


def export_for_inference(
    module: Any,
    path: PathLike,
    output_names: Sequence[str],
    weights: str = "lookahead",
    force: bool = False,
) -> Dict[str, Any]:
    """Exports a plain inference model of a ``Module`` over rewritten artifacts to ``path``.

    ``Module.export_model_for_inferencing`` writes the eval graph with the Lookahead state; this
    exports it to a temporary folder beside ``path`` and finalizes it there: no Lookahead
    initializer, input, node or metadata is left, and the weights are the Lookahead weights (any
    pending sync applied) or, with ``weights="slow"``, the slow weights. Returns
    :func:`onnx_lookahead.finalize`'s summary.
    """
    destination = os.path.abspath(os.fspath(path))
    staging = tempfile.mkdtemp(prefix=".onnx-lookahead-export-", dir=os.path.dirname(destination))
    try:
        exported = os.path.join(staging, "exported.onnx")
        module.export_model_for_inferencing(exported, list(output_names))
        return finalize(exported, destination, weights=weights, force=force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
