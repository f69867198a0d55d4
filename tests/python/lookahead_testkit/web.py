"""onnxruntime-web's training build in headless Chromium, through the harness in tests/web/.

`setup()` makes the harness ready (tests/web/setup.sh: Debian's chromium if missing, `npm ci` of
the pinned onnxruntime-web 1.17.3 / 1.18.0 / 1.19.2 and playwright-core; quick when done).
`load(sets, versions, schedule=..., eval_batch=...)` loads every set in every version, one browser
for all, and returns {(version, name): result}: `loads` (True, False, or None when the harness
could not tell), `error` (ORT's message; a C++ exception's read from the WASM memory, its number
in `errorCode`), and with a schedule `losses` (per step, per forward), `evals`, and
`runError`/`runErrorAt` when a step failed; `parameters` (getContiguousParameters after load and
every step) when asked for. `run([WebSet(...), ...], versions)` does the same with options per set
(its own schedule, versions, session options, and `sync`: the package's onnx-lookahead-web.mjs
`syncParameters` called twice after load and after every step, each call followed by a read of
all parameters, in `syncs`, failures in `syncError`).

onnxruntime-web has no learning-rate setter: the optimizer runs at the initial learning rate of the
checkpoint's optimizer group, ONNX Runtime's default 0.001 for generate_artifacts' checkpoints (they
have none), not at the one a Python loop would set.
"""
from __future__ import annotations

import json
import math
import subprocess
import tempfile
from dataclasses import dataclass
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


def lookahead_module() -> Path:
    """The ES module as the installed package ships it (what the tests load into the page)."""
    import onnx_lookahead

    return Path(onnx_lookahead.__file__).with_name("onnx-lookahead-web.mjs")


@dataclass
class WebSet:
    """One artifact set and what to do with it in the page (see tests/web/load.mjs --manifest).

    schedule: [[(x, target), ...] per step]; versions: None for every version of the run;
    sync: call the Lookahead module's syncParameters after load and after every step.
    """

    name: str
    dir: Path
    schedule: list | None = None
    eval_batch: tuple | None = None
    parameters: str | None = None
    session_options: dict | None = None
    versions: tuple[str, ...] | None = None
    sync: bool = False
    input_names: tuple[str, ...] = ("x", "target")

    def manifest_entry(self) -> dict:
        steps = [[feeds(b, self.input_names) for b in step] for step in (self.schedule or [])]
        return {"dir": str(self.dir), "name": self.name, "steps": steps,
                "eval": feeds(self.eval_batch, self.input_names) if self.eval_batch is not None and steps else None,
                "parameters": self.parameters, "sessionOptions": self.session_options,
                "versions": list(self.versions) if self.versions else None, "sync": self.sync}


def run(sets: list[WebSet], versions=VERSIONS, timeout: int = 600) -> dict:
    """Every set in each of its versions, one browser for all; -> {(version, name): result}."""
    names = [s.name for s in sets]
    assert len(set(names)) == len(names), f"set names repeat: {names}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifest.json"
        path.write_text(json.dumps([s.manifest_entry() for s in sets]))
        command = ["node", str(WEB / "load.mjs"), "--version", ",".join(versions), "--manifest", str(path)]
        if any(s.sync for s in sets):
            command += ["--lookahead-module", str(lookahead_module())]
        res = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise AssertionError(f"tests/web/load.mjs failed ({res.returncode}):\n{res.stderr}{res.stdout}")
    runs = {}
    for line in res.stdout.splitlines():
        result = json.loads(line)
        runs[(result["version"], result["set"])] = result
    missing = [(v, s.name) for s in sets for v in versions if (not s.versions or v in s.versions)
               and (v, s.name) not in runs]
    assert not missing, f"load.mjs printed nothing for {missing}:\n{res.stderr}"
    return runs


def load(sets: dict[str, Path], versions=VERSIONS, schedule=None, eval_batch=None, parameters=None,
         input_names=("x", "target"), session_options=None, timeout: int = 600) -> dict:
    """Load (and train over `schedule`: [[(x, target), ...] per step]) each set in each version."""
    return run([WebSet(name, Path(d), schedule, eval_batch, parameters, session_options, input_names=input_names)
                for name, d in sets.items()], versions, timeout)


def finite(values) -> bool:
    """All numbers and finite (load.mjs writes NaN and infinities as strings)."""
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
