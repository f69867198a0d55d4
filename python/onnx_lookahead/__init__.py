"""onnx-lookahead: give exported ONNX training graphs the Lookahead optimizer.

The Rust core rewrites ONNX Runtime on-device training artifacts (from
``onnxruntime.training.artifacts.generate_artifacts``) or models with ``ModelProto.training_info`` so
that the unchanged training loop trains them as Lookahead(k, alpha) around their own optimizer:
every k inner steps the slow weights move by ``alpha * (fast - slow)`` and the fast weights restart
from them.

    import onnx_lookahead
    onnx_lookahead.rewrite("artifacts", "artifacts_lookahead", k=5, alpha=0.5)
    report = onnx_lookahead.inspect("artifacts_lookahead")
    picture = onnx_lookahead.draw("artifacts_lookahead", format="mermaid")
    onnx_lookahead.finalize("inference.onnx", "model.onnx")   # after training: a plain model

Submodules (imported on use): ``onnx_lookahead.ort`` (helpers for the ONNX Runtime training loop:
the slow weights of a checkpoint, export of a plain inference model; no torch needed) and
``onnx_lookahead.training_info`` (a reference runtime for ``training_info`` models).

Every function takes paths as ``str`` or ``os.PathLike`` and raises :class:`Error` with the message
the command line prints (:class:`LossyError` when writing would drop fields the schema does not
know). The command line is installed as ``onnx-lookahead``.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Union

from . import _native
from ._native import Error, LossyError
from ._ort_format import Converter

__version__: str = _native.__version__
__all__ = ["Error", "LossyError", "draw", "finalize", "inspect", "rewrite", "__version__"]

PathLike = Union[str, "os.PathLike[str]"]


def rewrite(
    input: PathLike,
    output: PathLike,
    *,
    scheme: str = "lookahead",
    k: Optional[int] = None,
    alpha: Optional[float] = None,
    decay: Optional[float] = None,
    every: Optional[int] = None,
    swa_start: Optional[int] = None,
    force: bool = False,
    allow_lossy: bool = False,
    parallel_safe: bool = False,
    eval_weights: Optional[str] = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    inner_state: Optional[str] = None,
    target_ort: Optional[str] = None,
    ort_format: Optional[bool] = None,
) -> Dict[str, Any]:
    """Writes a Lookahead (or EMA, SWA) version of ``input`` to ``output`` and returns what it did.

    ``input`` is an ONNX Runtime training artifacts directory or a model with training_info;
    ``output`` a directory or a file accordingly (staged and renamed into place; it may not
    overlap the input; an existing one is replaced only with ``force`` and only if it is an
    earlier output of the same kind). ``scheme``: ``"lookahead"`` (default), ``"ema"`` or ``"swa"``.
    Lookahead: ``k`` sync period (>= 1, default 5); ``alpha`` slow-weight step (0 < alpha <= 1,
    default 0.5). EMA: ``decay`` (0 < decay < 1, required), ``every`` (update every N steps,
    default 1). SWA: ``swa_start`` (the step of the first sample, >= 1, required), ``every``
    (default 1). An option of another scheme is refused. ``allow_lossy``: write even if fields
    unknown to the ONNX schema would be dropped. ``parallel_safe``: artifacts that also run with
    ORT_PARALLEL. ``eval_weights``: ``"current"`` or ``"averaged"`` (Lookahead also
    ``"lookahead"``/``"slow"``), the weights evaluation, export and the training_info runtime's
    ``run_inference`` read; default: current for Lookahead, averaged for EMA and SWA.
    ``include`` / ``exclude``: glob patterns (``*``, ``?``, ``[...]``) of trainable parameter names
    to wrap (default: all) and to leave to the inner optimizer alone. ``inner_state``: what a
    sync does to the inner optimizer's state (Lookahead only): ``"keep"`` (the paper, default), ``"reset"`` (restart it, as
    optax's ``reset_state``) or ``"pullback"`` (interpolate the momentum like the weights, as the
    authors' code). ``target_ort``: an ONNX Runtime training release (``"1.16"``, ``"1.17"``,
    ``"1.18"``, ``"1.19"``) to write the artifacts for: checkpoint format, IR version and unused
    opset imports set to what it (and onnxruntime-web of the same number) loads, where that changes
    nothing the set computes; refused with the reason otherwise. ``None`` keeps the input's; a
    note then says when no release would load the output. ``ort_format``: also write every model
    of the output set in ONNX Runtime's ORT format, as ``generate_artifacts(ort_format=True)``
    does (``<model>.ort`` and ``<model>.required_operators.config``, plus
    ``<prefix>required_operators.config`` for the whole set), with onnxruntime-training's
    converter; ``None`` (default): when the input folder holds an ORT-format copy of one of its
    models; ``True``: always (refused for other inputs and without onnxruntime-training);
    ``False``: never (an input's copy then goes only with a model written as it was).

    Returns ``{"format", "output", "optimizer", "scheme", "settings", "wrapped_parameters",
    "injected_nodes", "state_bytes", "notes", "ort_format"}`` plus the settings themselves
    (Lookahead: ``"k"``, ``"alpha"``); ``scheme`` describes the scheme with its settings,
    ``ort_format`` lists the ORT-format files written.
    """
    for name, value in (("k", k), ("every", every), ("swa_start", swa_start)):
        if value is not None:
            _check_int(name, value)
    options = {
        "scheme": str(scheme),
        "k": k,
        "alpha": None if alpha is None else _float("alpha", alpha),
        "decay": None if decay is None else _float("decay", decay),
        "every": every,
        "swa_start": swa_start,
        "inner_state": None if inner_state is None else str(inner_state),
    }
    summary = json.loads(
        _native.rewrite(
            os.fspath(input),
            os.fspath(output),
            options,
            bool(force),
            bool(allow_lossy),
            bool(parallel_safe),
            None if eval_weights is None else str(eval_weights),
            _patterns("include", include),
            _patterns("exclude", exclude),
            _release(target_ort),
            _ort_format_flag(ort_format),
            Converter(),
        )
    )
    for key, value in summary["settings"].items():
        summary.setdefault(key, value)
    return summary


def inspect(path: PathLike) -> Dict[str, Any]:
    """What the tool finds in a model, an artifacts directory or a checkpoint file: exactly the
    JSON of ``onnx-lookahead inspect --format json`` as a dict (format, optimizer, parameters,
    the record of a rewrite, what a rewrite would refuse, which ONNX Runtime releases load it
    (``compatibility``), ...)."""
    return json.loads(_native.inspect(os.fspath(path)))


def draw(path: PathLike, format: str = "dot") -> str:
    """A picture of what the rewrite injected, as text: exactly the output of ``onnx-lookahead
    inspect PATH --format dot`` (Graphviz; ``dot -Tpng``) or ``--format mermaid`` (a mermaid
    flowchart, e.g. for GitHub markdown).

    Per rewritten graph: the step counter, the sync ``If`` and what it computes, and per wrapped
    parameter (the first 12, then "+ N more parameters") its slow weight and where its readers
    went; never the model's own nodes. For input not rewritten: the optimizer's update nodes and
    the trainable parameters a rewrite would wrap. A lone checkpoint has no graphs: :class:`Error`.
    """
    return _native.draw(os.fspath(path), str(format))


def finalize(
    input: PathLike,
    output: PathLike,
    *,
    weights: Optional[str] = None,
    checkpoint: Optional[PathLike] = None,
    force: bool = False,
    target_ort: Optional[str] = None,
    ort_format: Optional[bool] = None,
) -> Dict[str, Any]:
    """Turns what :func:`rewrite` produced back into its plain form at the chosen weights.

    ``input``: rewritten artifacts (``checkpoint``: one saved during training; default: the
    artifacts' own), a rewritten training_info model, or an inference model exported from
    rewritten artifacts. ``weights``: ``"current"`` (the weights training continues from, a
    pending update applied) or ``"averaged"`` (the scheme's average; Lookahead: also
    ``"lookahead"``/``"slow"``); default: the weights the rewrite's evaluation reads. ``target_ort``: as for :func:`rewrite`, the ONNX Runtime
    training release the plain set is written for. ``ort_format``: as for :func:`rewrite`, the
    ORT format of every model of the plain set. Returns ``{"format", "output", "weights",
    "changed_parameters", "notes", "ort_format"}``.
    """
    summary = _native.finalize(
        os.fspath(input),
        os.fspath(output),
        None if weights is None else str(weights),
        None if checkpoint is None else os.fspath(checkpoint),
        bool(force),
        _release(target_ort),
        _ort_format_flag(ort_format),
        Converter(),
    )
    return json.loads(summary)


def _ort_format_flag(value: object) -> Optional[bool]:
    if value is not None and not isinstance(value, bool):
        raise Error(f"invalid option: ort_format must be None (when the input has ORT-format copies), True or False, got {value!r}")
    return value


def _release(value: object) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Error(f"invalid option: target_ort must be a release such as \"1.19\" (a string), got {value!r}")
    return value


def _patterns(name: str, value: object) -> List[str]:
    if isinstance(value, str):
        return [value]
    try:
        patterns = [str(p) for p in value]  # type: ignore[union-attr]
    except TypeError:
        raise Error(f"invalid option: {name} must be a glob or a list of globs, got {value!r}") from None
    return patterns


def _float(name: str, value: object) -> float:
    if isinstance(value, bool):
        raise Error(f"invalid option: {name} must be a number, got {value!r}")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise Error(f"invalid option: {name} must be a number, got {value!r}") from None


def _check_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Error(f"invalid option: {name} must be an integer, got {value!r}")
    if value < 1:
        raise Error(f"invalid option: {name} must be an integer >= 1, got {value}")
    if value >= 2**64:
        raise Error(f"invalid option: {name} must be at most {2**64 - 1}, got {value}")
