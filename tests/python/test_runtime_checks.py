"""First contact: what `onnx_lookahead.ort` and `onnx_lookahead.training_info` say at import when
their runtime is missing or broken, and that the extras cannot install two ONNX Runtime builds.

Each broken environment is real as far as the checks can see: a subprocess of this interpreter
whose sys.path holds a minimal installed distribution as pip leaves it (dist-info with METADATA,
RECORD, top_level.txt; its `onnxruntime` package raises if imported, which the checks must never
do), or an isolated path (`-S`, no site-packages) holding only the installed onnx_lookahead.
"""
from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import onnx_lookahead

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(onnx_lookahead.__file__).resolve().parent
TRAINING = metadata.version("onnxruntime-training-cpu")


def fake_distribution(root: Path, name: str, version: str, top_level: bool = True, package: bool = False) -> None:
    """An installed `name` that provides the top-level package onnxruntime (declared in
    top_level.txt or, as wheels without that file do, only by the paths in RECORD)."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text(f"onnxruntime/__init__.py,,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
    if top_level:
        (info / "top_level.txt").write_text("onnxruntime\n")
    if package:
        (root / "onnxruntime").mkdir()
        (root / "onnxruntime" / "__init__.py").write_text("raise RuntimeError('the checks imported onnxruntime')\n")


def import_error(code: str, path: Path | None = None, isolated: bool = False) -> str:
    """Runs `code` in a subprocess (sys.path: `path` first; `isolated`: no site-packages, the
    installed onnx_lookahead linked into `path`); returns its one ImportError message."""
    if isolated:
        (path / "onnx_lookahead").symlink_to(PACKAGE, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    prelude = f"import sys; sys.path.insert(0, {str(path)!r})\n" if path else ""
    command = [sys.executable, *(["-S"] if isolated else []), "-c", prelude + code]
    res = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode != 0, f"no error:\n{res.stdout}{res.stderr}"
    errors = [line for line in res.stderr.splitlines() if re.match(r"[\w.]*Error: ", line)]
    # One error, not a chain: ours are raised `from None` or before anything else fails.
    assert len(errors) == 1 and "During handling" not in res.stderr, res.stderr
    assert errors[0].startswith("ImportError: "), res.stderr
    return errors[0][len("ImportError: "):]


@pytest.mark.parametrize("top_level", [True, False], ids=["top_level.txt", "RECORD only"])
@pytest.mark.parametrize("module, extra", [("ort", "ort"), ("training_info", "training-info")])
def test_two_onnxruntime_distributions_are_named_with_the_fix(module, extra, top_level, tmp_path):
    fake_distribution(tmp_path, "onnxruntime", "1.32.0", top_level=top_level)
    message = import_error(f"import onnx_lookahead.{module}", tmp_path)
    assert message == (
        f"onnx_lookahead.{module}: onnxruntime 1.32.0 and onnxruntime-training-cpu {TRAINING} are installed "
        "together; they install the same `onnxruntime` package folder, so the one installed last overwrote "
        "the other's files and ONNX Runtime is broken. Fix: pip uninstall -y onnxruntime "
        f'onnxruntime-training-cpu && pip install "onnx-lookahead[{extra}]"'
    )


def test_every_ort_distribution_is_named(tmp_path):
    fake_distribution(tmp_path, "onnxruntime-gpu", "1.20.1", top_level=False)
    fake_distribution(tmp_path, "ort-nightly", "1.21.0.dev1")
    message = import_error("import onnx_lookahead.ort", tmp_path)
    assert message.startswith(f"onnx_lookahead.ort: onnxruntime-gpu 1.20.1, onnxruntime-training-cpu {TRAINING} "
                              "and ort-nightly 1.21.0.dev1 are installed together;")
    assert message.endswith('pip uninstall -y onnxruntime-gpu onnxruntime-training-cpu ort-nightly && '
                            'pip install "onnx-lookahead[ort]"')


def test_ort_without_onnx_runtime_names_the_extra(tmp_path):
    assert import_error("import onnx_lookahead.ort", tmp_path, isolated=True) == (
        "onnx_lookahead.ort needs ONNX Runtime's training API (onnxruntime-training-cpu 1.19.2), "
        'which is not installed: pip install "onnx-lookahead[ort]"'
    )


def test_ort_with_an_inference_only_onnx_runtime_names_the_extra(tmp_path):
    fake_distribution(tmp_path, "onnxruntime", "1.32.0", package=True)
    assert import_error("import onnx_lookahead.ort", tmp_path, isolated=True) == (
        "onnx_lookahead.ort needs ONNX Runtime's training API (onnxruntime-training-cpu 1.19.2), but the "
        'installed onnxruntime 1.32.0 is a build without it: pip uninstall -y onnxruntime && pip install '
        '"onnx-lookahead[ort]"'
    )


def test_training_info_without_onnx_names_the_extra(tmp_path):
    expected = 'onnx_lookahead.training_info needs the onnx package, which is not installed: pip install "onnx-lookahead[training-info]"'
    assert import_error("sys.modules['onnx'] = None\nimport onnx_lookahead.training_info", tmp_path) == expected
    assert import_error("import onnx_lookahead.training_info", tmp_path, isolated=True) == expected


def test_training_info_ort_backend_without_onnx_runtime_names_the_extra():
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from onnx_lookahead.training_info import TrainingSession\n"
        f"TrainingSession({str(REPO / 'fixtures' / 'training_info_sgd.onnx')!r}, backend='reference')\n"
        f"TrainingSession({str(REPO / 'fixtures' / 'training_info_sgd.onnx')!r})\n"
    )
    assert import_error(code) == (
        'the "ort" backend needs ONNX Runtime, which is not installed: '
        'pip install "onnx-lookahead[training-info]" (or use backend="reference")'
    )


def test_the_checks_do_not_import_onnx_runtime():
    code = "import sys, onnx_lookahead.ort, onnx_lookahead.training_info; print('onnxruntime' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "False", res.stderr


def _ort_family(name: str) -> bool:
    return name.startswith("onnxruntime") or name.startswith("ort-")


def test_no_combination_of_extras_installs_two_onnx_runtimes():
    """Every subset of the extras on every Python the package supports: at most one ONNX Runtime
    distribution; [ort] is the working set up to 3.12; [training-info] always has onnx and one."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for minor, size in itertools.product(range(9, 16), range(1, len(extras) + 1)):
        python = f"3.{minor}"
        for chosen in itertools.combinations(sorted(extras), size):
            picked = [
                Requirement(text) for extra in chosen for text in extras[extra]
                if Requirement(text).marker is None
                or Requirement(text).marker.evaluate({"python_version": python, "extra": extra})
            ]
            names = {canonicalize_name(r.name): r for r in picked}
            assert len([n for n in names if _ort_family(n)]) <= 1, (python, chosen, names)
            if "ort" in chosen and minor <= 12:
                assert str(names["onnxruntime-training-cpu"].specifier) == "==1.19.2"
                onnx = names["onnx"].specifier
                assert "1.16.0" in onnx and "1.17.0" in onnx and "1.18.0" not in onnx, (python, onnx)
            if "training-info" in chosen:
                assert "onnx" in names and any(_ort_family(n) for n in names), (python, chosen)
