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
from typing import Any, Dict, Optional, Sequence

from . import Error, PathLike, _native, finalize
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
    """Applies a pending update of the averaging scheme to the ``CheckpointState`` in place;
    returns whether one was pending.

    Right after an update step (Lookahead: the k-th inner step of a cycle) the rewritten training
    graph performs the update at the next training forward, so until then ``state.parameters``
    (and ``Module.get_contiguous_parameters``, ``copy_parameters_to``...) hold the weights before
    it (Lookahead: the fast weights, not yet synced; EMA/SWA: the average without the last
    step). This applies it as the graph would (the scheme's arithmetic, computed by the same Rust
    code that builds the graph, with the graph's operations and rounding in the parameters' own
    type), writes the new weights and averages, and marks the update done, so the next forward
    does not apply it again. Safe at any step: when nothing is pending nothing changes.
    """
    import numpy as np

    rec = record(state)
    text = json.dumps(rec)
    first, _, after_update = _native.schedule(text)
    counter = rec["counters"][0]
    parameters = state.parameters
    if float(np.asarray(parameters[counter].data).reshape(-1)[0]) != float(first):
        return False
    shared_names = rec.get("shared", [])
    shared = [float(np.asarray(parameters[n].data).reshape(-1)[0]) for n in shared_names]
    scalars, shared_new = _native.host_prepare(text, shared)
    updates = {}
    for wrapped in rec["parameters"]:
        name, state_names = wrapped["name"], wrapped["state"]
        fast = np.asarray(parameters[name].data)
        kept = [np.asarray(parameters[s].data) for s in state_names]
        new_fast, new_state = _native.host_sync(
            text,
            name,
            _onnx_type(fast.dtype),
            fast.astype(np.float64).tobytes(),
            [s.astype(np.float64).tobytes() for s in kept],
            scalars,
        )
        updates[name] = _values(new_fast, fast)
        for s, old, new in zip(state_names, kept, new_state):
            updates[s] = _values(new, old)
    for name, value in updates.items():
        parameters[name] = value
    for name, value in zip(shared_names, shared_new):
        parameters[name] = np.full((1,), value, dtype=np.float32)
    parameters[counter] = np.full((1,), after_update, dtype=np.float32)
    return True


def _onnx_type(dtype: Any) -> int:
    import numpy as np

    types = {np.dtype(np.float32): 1, np.dtype(np.float16): 10, np.dtype(np.float64): 11}
    if np.dtype(dtype) not in types:
        raise Error(f"parameters of type {dtype} cannot be averaged")
    return types[np.dtype(dtype)]


def _values(raw: bytes, like: Any) -> Any:
    import numpy as np

    return np.frombuffer(raw, dtype=np.float64).astype(like.dtype).reshape(like.shape)


def export_for_inference(
    module: Any,
    path: PathLike,
    output_names: Sequence[str],
    weights: Optional[str] = None,
    force: bool = False,
) -> Dict[str, Any]:
    """Exports a plain inference model of a ``Module`` over rewritten artifacts to ``path``.

    ``Module.export_model_for_inferencing`` writes the eval graph with the Lookahead state; this
    exports it to a temporary folder beside ``path`` and finalizes it there: no Lookahead
    initializer, input, node or metadata is left, and the weights are those evaluation reads (the
    default), ``weights="current"`` (any pending update applied) or ``weights="averaged"``. Returns
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
