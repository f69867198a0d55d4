"""onnxruntime-web's training build in headless Chromium, through the harness in tests/web/.

`setup()` makes the harness ready (tests/web/setup.sh: Debian's chromium if missing, `npm ci` of
the pinned onnxruntime-web 1.17.3 / 1.18.0 / 1.19.2 and playwright-core; quick when done).
`load(sets, versions, schedule=..., eval_batch=...)` loads every set in every version, one browser
for all, and returns {(version, name): result}: `loads` (True, False, or None when the harness
could not tell), `error` (ORT's message; a C++ exception's read from the WASM memory, its number
in `errorCode`), and with a schedule `losses` (per step, per forward), `evals`, and
`runError`/`runErrorAt` when a step failed; `parameters` (getContiguousParameters after load and
every step) when asked for.

onnxruntime-web has no learning-rate setter: the optimizer runs with the checkpoint's learning
rate, not the one a Python loop would set.
"""
from __future__ import annotations

import json
import math
import subprocess
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
WEB = REPO / "tests" / "web"
VERSIONS = ("1.17", "1.18", "1.19")


def setup() -> str:
    """Run tests/web/setup.sh; -> the chromium path. Raises with the script's output on failure."""
    res = subprocess.run(["bash", str(WEB / "setup.sh")], capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        raise AssertionError(f"tests/web/setup.sh failed ({res.returncode}):\n{res.stderr}{res.stdout}")
    return res.stdout.strip().splitlines()[-1]


def tensor(a: np.ndarray) -> dict:
    a = np.asarray(a)
    kind = {np.float32: "float32", np.float64: "float64", np.int64: "int64", np.int32: "int32"}[a.dtype.type]
    return {"type": kind, "dims": list(a.shape), "data": a.ravel().tolist()}


def feeds(batch, names=("x", "target")) -> dict:
    return {name: tensor(a) for name, a in zip(names, batch)}


def load(sets: dict[str, Path], versions=VERSIONS, schedule=None, eval_batch=None, parameters=None,
         input_names=("x", "target"), session_options=None, timeout: int = 600) -> dict:
    """Load (and train over `schedule`: [[(x, target), ...] per step]) each set in each version."""
    steps = [[feeds(b, input_names) for b in step] for step in (schedule or [])]
    manifest = [{"dir": str(d), "name": name, "steps": steps,
                 "eval": feeds(eval_batch, input_names) if eval_batch is not None and steps else None,
                 "parameters": parameters, "sessionOptions": session_options}
                for name, d in sets.items()]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifest.json"
        path.write_text(json.dumps(manifest))
        res = subprocess.run(["node", str(WEB / "load.mjs"), "--version", ",".join(versions), "--manifest", str(path)],
                             capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise AssertionError(f"tests/web/load.mjs failed ({res.returncode}):\n{res.stderr}{res.stdout}")
    runs = {}
    for line in res.stdout.splitlines():
        run = json.loads(line)
        runs[(run["version"], run["set"])] = run
    missing = [(v, n) for v in versions for n in sets if (v, n) not in runs]
    assert not missing, f"load.mjs printed nothing for {missing}:\n{res.stderr}"
    return runs


def finite(values) -> bool:
    """All numbers and finite (load.mjs writes NaN and infinities as strings)."""
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
