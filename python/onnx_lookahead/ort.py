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
- :func:`update_bn`: recomputes the BatchNorm running statistics for the weights evaluation reads
  (the average, for EMA and SWA) with a pass over data, as torch's ``swa_utils.update_bn``.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import types
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

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


def update_bn(
    module: Any,
    state: Any,
    training_model: PathLike,
    batches: Any,
    weights: Optional[str] = None,
) -> Dict[str, Any]:
    """Recomputes the BatchNorm running statistics of a ``Module`` for the weights it evaluates
    with, by a pass over ``batches`` (torch's ``swa_utils.update_bn``).

    The rewrite averages trainable parameters only. BatchNorm running means and variances are
    frozen checkpoint parameters that the training graph itself updates at every training forward
    (ONNX ``BatchNormalization`` in training mode, ``momentum`` m:
    ``running = m * running + (1 - m) * batch statistic``), from the batch statistics of the
    weights training runs at. The averaged weights (EMA, SWA, Lookahead's slow weights) never ran
    a forward, so the statistics stored beside them belong to other weights. This runs the
    training graph's forward (and, unavoidably, its backward) once per batch with the chosen
    weights loaded, and stores in every running statistic the plain average over the batches of
    that batch's statistic: the mean, and the variance as ONNX Runtime computes it (the biased,
    population variance of the batch; torch's running_var uses the unbiased one), what
    ``update_bn`` computes in torch with ``momentum=None``. Each BatchNorm node's momentum is read
    from ``training_model`` (the graph's attribute cannot be changed without editing the graph):
    the statistic is set to 0 before each forward and the batch's value recovered as
    ``running / (1 - m)``.

    ``module``: the ``Module`` over ``training_model`` and ``state``; ``batches``: an iterable of
    what ``module(*batch)`` takes in training (the model inputs and the loss inputs such as the
    labels). ``weights``: ``"averaged"`` or ``"current"`` (Lookahead spellings ``"lookahead"`` /
    ``"slow"`` accepted), default: the weights the rewrite's evaluation and export read (averaged
    for EMA and SWA). Artifacts that were not rewritten take only ``"current"``.

    Everything else is left as it was: the weights training continues from, the average, the
    counters (any pending update is applied first, as :func:`sync_parameters` does), the optimizer
    state. The gradients the pass accumulated are discarded (``lazy_reset_grad``), so call it
    between optimizer steps, not in the middle of gradient accumulation; the module's train/eval
    mode is restored. The next training forward moves the statistics again (towards those of the
    current weights), so call it after training, before evaluating or exporting; again after
    further training. Returns ``{"weights": ..., "batches": n, "statistics": [names]}``
    (no statistics and nothing run when the training graph has no BatchNorm in training mode).
    """
    import numpy as np

    nodes = _batchnorm_statistics(training_model)
    parameters = state.parameters
    if not nodes:
        return {"weights": None, "batches": 0, "statistics": []}
    names = {name for name, _ in parameters}
    missing = [n for mean, var, _ in nodes for n in (mean, var) if n not in names]
    if missing:
        raise Error(
            f"the BatchNorm running statistics {', '.join(sorted(set(missing)))} are not checkpoint "
            "parameters (generate_artifacts takes them in frozen_params), so training never keeps "
            "what it computes for them"
        )
    try:
        rec: Optional[Dict[str, Any]] = record(state)
    except Error:
        rec = None
    chosen = _weights_kind(weights, rec)
    swaps: Dict[str, str] = {}
    kept: list = []
    if rec is not None:
        sync_parameters(state)
        if chosen == "averaged":
            swaps = {w["name"]: w["state"][0] for w in rec["parameters"]}
        kept = list(rec["counters"]) + list(rec.get("shared", []))
    statistics = [n for mean, var, _ in nodes for n in (mean, var)]
    saved = {n: np.array(parameters[n].data, copy=True) for n in list(swaps) + kept + statistics}
    factor = {}
    for mean, var, momentum in nodes:
        one_minus = float(np.float32(1.0) - np.float32(momentum))
        if one_minus == 0.0:
            raise Error(f"BatchNorm momentum 1 never updates {mean} and {var}: nothing to recompute")
        factor[mean] = factor[var] = one_minus
    sums = {n: np.zeros(saved[n].shape, np.float64) for n in statistics}
    count = 0
    was_training = getattr(module, "training", True)
    done = False
    try:
        module.train()
        for name, average in swaps.items():
            parameters[name] = np.array(parameters[average].data, copy=True)
        for batch in batches:
            for n in statistics:
                parameters[n] = np.zeros_like(saved[n])
            module(*batch)
            values = {n: np.asarray(parameters[n].data, np.float64) for n in statistics}
            if count == 0 and not any(np.any(values[var] != 0) for _, var, _ in nodes):
                raise Error(
                    "the training forward did not write the BatchNorm running statistics into the "
                    "checkpoint state, so this ONNX Runtime build cannot recompute them"
                )
            for n in statistics:
                sums[n] += values[n] / factor[n]
            count += 1
        if count == 0:
            raise Error("update_bn needs at least one batch")
        done = True
    finally:
        for name, value in saved.items():
            if done and name in sums:
                continue
            parameters[name] = value
        if done:
            for n in statistics:
                parameters[n] = (sums[n] / count).astype(saved[n].dtype)
        module.lazy_reset_grad()
        if not was_training:
            module.eval()
    return {"weights": chosen, "batches": count, "statistics": statistics}


def _weights_kind(weights: Optional[str], rec: Optional[Dict[str, Any]]) -> str:
    aliases = {"current": "current", "averaged": "averaged", "lookahead": "averaged", "slow": "averaged"}
    if rec is None:
        if weights not in (None, "current"):
            raise Error(
                f"weights={weights!r}: the checkpoint holds no onnx-lookahead record (its artifacts "
                "were not rewritten), so only the current weights exist"
            )
        return "current"
    requested = rec.get("eval_weights", "current") if weights is None else weights
    if requested not in aliases:
        raise Error(f"weights={weights!r}: expected 'current' or 'averaged'")
    return aliases[requested]


def _batchnorm_statistics(training_model: PathLike) -> list:
    """(running mean, running var, momentum) of every BatchNorm the training graph runs in training
    mode (ONNX ``BatchNormalization`` with training_mode=1, or ORT's ``BatchNormInternal``, which
    generate_artifacts makes of it)."""
    import onnx

    model = onnx.load(os.fspath(training_model), load_external_data=False)
    found = []
    for node in model.graph.node:
        if node.op_type not in ("BatchNormalization", "BatchNormInternal"):
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        training = attrs.get("training_mode", 1 if node.op_type == "BatchNormInternal" else 0)
        if not training or len(node.input) < 5 or len(node.output) < 3 or not node.output[1]:
            continue
        found.append((node.input[3], node.input[4], float(attrs.get("momentum", 0.9))))
    return found
