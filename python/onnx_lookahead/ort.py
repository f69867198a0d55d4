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
- :func:`load_parameters`: sets the trainable parameters of a ``CheckpointState`` from outside
  (for example the global model a federated-learning server sends) and restarts the averaging
  from them, so that the next syncs do not pull the new weights back toward stale slow weights.
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
from typing import Any, Dict, List, Mapping, Sequence, Union

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


INNER_STATES = ("keep", "reset")


def _trainable_names(state: Any, rec: Union[Dict[str, Any], None]) -> List[str]:
    """The trainable parameters of the state; in the record's order when it wraps all of them."""
    trainable = {name for name, parameter in state.parameters if parameter.requires_grad}
    if rec is not None:
        ordered = [wrapped["name"] for wrapped in rec["parameters"]]
        if set(ordered) == trainable and len(ordered) == len(trainable):
            return ordered
    return sorted(trainable)


def _describe(value: Any) -> str:
    return f"{value.dtype} {tuple(value.shape)}"


def load_parameters(
    state: Any,
    weights: Union[Mapping[str, Any], Sequence[Any]],
    *,
    restart: bool = True,
    inner_state: str = "keep",
) -> Any:
    """Sets the trainable parameters of a ``CheckpointState`` and returns the state to train with.

    ``weights``: a mapping from every trainable parameter's name to its new value, or a list of
    the values in the order of ``Module.get_contiguous_parameters(trainable_only=True)`` (the
    training model's parameter inputs; a list needs a set whose rewrite wrapped every trainable
    parameter, whose record gives that order: pass a mapping otherwise). Every value must have its
    parameter's dtype and shape, and every trainable parameter needs one; frozen parameters and the
    rewrite's own state are not weights and are left alone. Nothing is written unless all of it
    fits (:class:`Error` naming the first mismatch otherwise). The state may or may not have a
    ``Module`` yet.

    ``restart=True`` (the default) restarts the averaging from the new weights, as if training
    started from them: every state tensor the rewrite recorded for a wrapped parameter (Lookahead:
    the slow weight) becomes a copy of the new weight, every recorded counter goes to 0 (the start
    of a cycle), and every set-wide tensor recorded as "shared" to 0. Without it only the weights
    change: the next sync then moves the slow weights of before toward the new weights and puts
    the weights back there, pulling them toward stale values. A set that was not rewritten has
    nothing to restart: only its weights are set.

    ``inner_state``: the inner optimizer's state (AdamW's moments and step count). ``"keep"``
    leaves it as it is and returns ``state`` itself. ``"reset"``: ONNX Runtime's Python API cannot
    write optimizer state, but an ``Optimizer`` created over a state without optimizer state
    starts from zero moments and step 0; so after setting the weights in ``state`` this returns a
    NEW ``CheckpointState`` with the same parameters and properties and no optimizer state (a
    round trip through a checkpoint saved without it, in a temporary folder): create the
    ``Module`` and ``Optimizer`` over the returned state. A set rewritten with
    ``--inner-state reset`` resets AdamW at its own optimizer step count, which the API cannot
    restart: ``restart=True`` needs ``inner_state="reset"`` there (the counts line up again for
    sets rewritten from a checkpoint without optimizer steps, as ``generate_artifacts`` writes).
    """
    import numpy as np

    if inner_state not in INNER_STATES:
        raise Error(f"invalid option: inner_state must be one of {INNER_STATES}, got {inner_state!r}")
    rec = record(state) if RECORD in state.properties else None
    parameters = state.parameters
    names = _trainable_names(state, rec)
    if isinstance(weights, Mapping):
        for name in weights:
            if not isinstance(name, str) or name not in parameters:
                raise Error(f"load_parameters: the checkpoint has no parameter named {name!r}")
            if name not in names:
                raise Error(f"load_parameters: {name!r} is not a trainable parameter (frozen parameters "
                            f"and the rewrite's state are not loaded)")
        missing = [name for name in names if name not in weights]
        if missing:
            raise Error(f"load_parameters: no value for the trainable parameter(s) {', '.join(map(repr, missing))}")
        given = {name: weights[name] for name in names}
    else:
        values = list(weights)
        if rec is None or [wrapped["name"] for wrapped in rec["parameters"]] != names:
            raise Error("load_parameters: a list of weights needs a set whose rewrite wrapped every trainable "
                        "parameter (its record gives their order); pass a dict from name to value")
        if len(values) != len(names):
            raise Error(f"load_parameters: {len(values)} values for {len(names)} trainable parameters ({', '.join(names)})")
        given = dict(zip(names, values))
    new = {}
    for name, value in given.items():
        current = np.asarray(parameters[name].data)
        array = np.asarray(value)
        if array.dtype != current.dtype or array.shape != current.shape:
            raise Error(f"load_parameters: {name!r} is {_describe(current)}, the value given is {_describe(array)}")
        new[name] = np.ascontiguousarray(array)

    writes = dict(new)
    if restart and rec is not None:
        if rec.get("settings", {}).get("inner_state") == "reset" and inner_state == "keep":
            raise Error("load_parameters: this set was rewritten with --inner-state reset, which resets the inner "
                        "optimizer at its own step count; restart=True cannot move that count with "
                        "inner_state='keep': use inner_state='reset'")
        for wrapped in rec["parameters"]:
            for slot in wrapped["state"]:
                current = np.asarray(parameters[slot].data)
                if current.dtype != new[wrapped["name"]].dtype or current.shape != new[wrapped["name"]].shape:
                    raise Error(f"load_parameters: the state {slot!r} ({_describe(current)}) of {wrapped['name']!r} "
                                f"cannot restart as a copy of its weight")
                writes[slot] = new[wrapped["name"]].copy()
        for name in list(rec.get("counters", [])) + list(rec.get("shared", [])):
            writes[name] = np.zeros_like(np.asarray(parameters[name].data))
    for name, value in writes.items():
        # In place, through the parameter's own OrtValue: `parameters[name] = value` copies with the
        # data-transfer manager a Module installs, and crashes (SIGSEGV, ORT 1.19.2) on a state
        # loaded before its Module was created, which is when a client loads weights.
        parameters[name]._parameter.data.update_inplace(np.ascontiguousarray(value))
    if inner_state == "keep":
        return state
    api = training_api()
    with tempfile.TemporaryDirectory(prefix="onnx-lookahead-load-") as folder:
        path = os.path.join(folder, "checkpoint")
        api.CheckpointState.save_checkpoint(state, path, include_optimizer_state=False)
        return api.CheckpointState.load_checkpoint(path)


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
