"""Import-time checks of the optional runtimes behind ``onnx_lookahead.ort`` and
``onnx_lookahead.training_info``: one clear ImportError naming the fix, instead of a failure deep
inside ONNX Runtime or onnx.

Every check reads installed metadata and the file system only; none imports onnxruntime (that
stays lazy, and importing a broken mix of ONNX Runtime builds is what must not happen first).
"""
from __future__ import annotations

import importlib.util
import os
import re
import sys
from importlib import metadata
from typing import List, Optional, Tuple

# onnxruntime-training-cpu 1.19.2 is the last training release; its wheels are cp38 to cp312.
TRAINING_PYTHONS = "Python 3.9 to 3.12"
_TRAINING_LAST_MINOR = 12


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def ort_distributions() -> List[Tuple[str, str]]:
    """(name, version) of every installed distribution that provides the top-level package
    ``onnxruntime`` (onnxruntime, onnxruntime-gpu, onnxruntime-training-cpu, ort-nightly, ...).

    The same rule as ``importlib.metadata.packages_distributions()`` (top_level.txt, else the
    RECORD's paths), but a substring test on the raw files: that function parses every RECORD of
    every distribution (measured: 330 ms with 94 distributions installed, against 11 ms for this
    loop; 70 ms against 4 ms in the 32-distribution test venv), and Python 3.9 lacks it.
    """
    found = {}
    for dist in metadata.distributions():
        top_level = dist.read_text("top_level.txt")
        if top_level is not None:
            provides = "onnxruntime" in top_level.split()
        else:
            provides = "\nonnxruntime/" in "\n" + (dist.read_text("RECORD") or "")
        if provides:
            name = dist.metadata["Name"] or "?"
            # A distribution seen twice on sys.path is still one distribution.
            found.setdefault(_canonical(name), (name, dist.version))
    return sorted(found.values(), key=lambda nv: _canonical(nv[0]))


def check_single_ort(importer: str, extra: str) -> None:
    """Refuses a mix of ONNX Runtime distributions: they all install the same ``onnxruntime``
    folder, so the one installed last overwrote the other's files (a native library of one
    release with the Python files of another)."""
    dists = ort_distributions()
    if len(dists) < 2:
        return
    listed = [f"{name} {version}" for name, version in dists]
    listed = ", ".join(listed[:-1]) + " and " + listed[-1]
    names = " ".join(name for name, _ in dists)
    raise ImportError(
        f"{importer}: {listed} are installed together; they install the same `onnxruntime` "
        f"package folder, so the one installed last overwrote the other's files and ONNX Runtime "
        f'is broken. Fix: pip uninstall -y {names} && pip install "onnx-lookahead[{extra}]"'
    )


def _onnxruntime_folder() -> Optional[str]:
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def require_training_api(importer: str = "onnx_lookahead.ort") -> None:
    """ONNX Runtime with the training API (``onnxruntime/training/api``), and only one build."""
    folder = _onnxruntime_folder()
    has_api = folder is not None and os.path.isdir(os.path.join(folder, "training", "api"))
    # On a Python without training wheels no other fix applies, so say that first.
    if not has_api and sys.version_info[:2] > (3, _TRAINING_LAST_MINOR):
        python = f"{sys.version_info[0]}.{sys.version_info[1]}"
        raise ImportError(
            f"{importer} needs ONNX Runtime's training API, which does not exist for Python {python}: "
            f"onnxruntime-training's last release (1.19.2) has wheels up to Python 3.12; "
            f'use {TRAINING_PYTHONS} and pip install "onnx-lookahead[ort]"'
        )
    check_single_ort(importer, "ort")
    if has_api:
        return
    dists = ort_distributions()
    fix = 'pip install "onnx-lookahead[ort]"'
    if folder is None:
        what = "which is not installed"
    else:
        name = f"{dists[0][0]} {dists[0][1]}" if dists else "onnxruntime"
        what = f"but the installed {name} is a build without it"
        if dists:
            fix = f"pip uninstall -y {dists[0][0]} && {fix}"
    raise ImportError(
        f"{importer} needs ONNX Runtime's training API (onnxruntime-training-cpu 1.19.2), {what}: {fix}"
    )


def require_onnx(importer: str = "onnx_lookahead.training_info") -> None:
    """The onnx package (the runtime is built on it), and at most one ONNX Runtime build."""
    check_single_ort(importer, "training-info")
    if importlib.util.find_spec("onnx") is None:
        raise ImportError(
            f'{importer} needs the onnx package, which is not installed: pip install "onnx-lookahead[training-info]"'
        )
