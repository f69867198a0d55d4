"""The package on a Python without onnxruntime-training wheels (3.13 and later), when such an
interpreter is on this machine (skipped otherwise): README's install command succeeds, the tool
gives the same results as here, `import onnx_lookahead.ort` says why it cannot work, and the
training_info runtime trains on the newest onnx and onnxruntime (its own extra, one ORT only).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import onnx_lookahead
from lookahead_testkit.freshvenv import FreshVenv, find_python
from test_readme import fresh_venv_blocks

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"
SUMMARY_KEYS = ("format", "optimizer", "k", "alpha", "wrapped_parameters", "injected_nodes", "state_bytes")

REWRITE = f"""
import json, onnx_lookahead
summary = onnx_lookahead.rewrite({str(FIXTURES / 'ort_adamw')!r}, "lookahead", k=5, alpha=0.5)
assert onnx_lookahead.draw("lookahead").startswith("digraph lookahead {{")
onnx_lookahead.finalize("lookahead", "plain")
assert onnx_lookahead.inspect("plain")["lookahead"] is None
print(json.dumps({{key: summary[key] for key in {SUMMARY_KEYS!r}}}))
"""

# A training_info model at the newest IR version this onnx writes, rewritten, trained by both
# backends of the runtime: the "ort" one (lowered optimizer ops in onnxruntime) must agree with
# onnx.reference.
TRAIN = f"""
import sys
sys.path.insert(0, {str(REPO / 'tests' / 'python')!r})
import numpy as np, onnx, onnxruntime, onnx_lookahead
from onnx_lookahead.training_info import TrainingSession
import tinfo_models
spec = tinfo_models.single_model("adam")
spec.model.ir_version = onnx.IR_VERSION
onnx.save(spec.model, "adam.onnx")
onnx_lookahead.rewrite("adam.onnx", "adam_lookahead.onnx", k=3, alpha=0.5)
losses = {{}}
for backend in ("ort", "reference"):
    session = TrainingSession("adam_lookahead.onnx", backend=backend)
    session.initialize()
    losses[backend] = [float(session.step(feeds)["loss"]) for feeds in tinfo_models.batches(spec, 7)]
assert np.allclose(losses["ort"], losses["reference"], rtol=0, atol=1e-5), losses
print(onnx.__version__, onnxruntime.__version__, onnx.IR_VERSION)
"""


def ort_import_message(venv: FreshVenv, cwd: Path) -> str:
    res = venv.python("import onnx_lookahead.ort", cwd)
    assert res.returncode != 0, res.stdout
    return res.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("version", ["3.13", "3.14"])
def test_the_package_on_a_python_without_training_wheels(version, tmp_path):
    python = find_python(version)
    if python is None:
        pytest.skip(f"no python{version} on this machine")
    venv = FreshVenv(python, tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    install = fresh_venv_blocks()[0][1]
    res = venv.sh(install)
    assert res.returncode == 0, f"{install} failed on Python {version}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    assert not {"onnx", "onnxruntime", "onnxruntime-training-cpu"} & set(venv.distributions())

    res = venv.sh("onnx-lookahead --version")
    assert res.returncode == 0 and res.stdout.strip() == f"onnx-lookahead {onnx_lookahead.__version__}", res.stderr
    res = venv.python(REWRITE, work)
    assert res.returncode == 0, res.stderr
    here = onnx_lookahead.rewrite(FIXTURES / "ort_adamw", tmp_path / "here", k=5, alpha=0.5)
    assert json.loads(res.stdout) == {key: here[key] for key in SUMMARY_KEYS}

    no_training = (
        f"ImportError: onnx_lookahead.ort needs ONNX Runtime's training API, which does not exist for "
        f"Python {version}: onnxruntime-training's last release (1.19.2) has wheels up to Python 3.12; "
        'use Python 3.9 to 3.12 and pip install "onnx-lookahead[ort]"'
    )
    assert ort_import_message(venv, work) == no_training

    res = venv.sh('python -m pip install ".[training-info]"')
    assert res.returncode == 0, res.stderr[-3000:]
    installed = venv.distributions()
    assert [n for n in installed if n.lower().startswith(("onnxruntime", "ort-"))] == ["onnxruntime"], installed
    assert "onnx" in installed
    res = venv.python(TRAIN, work)
    assert res.returncode == 0, res.stderr[-6000:]
    # With plain onnxruntime installed the message stays the same: no fix but another Python.
    assert ort_import_message(venv, work) == no_training
