"""Fresh virtual environments, as a new user makes them: `python3 -m venv`, then only the commands
given (README's install command), nothing pinned by the test suite.

The one thing shared with the pinned venv is cargo's build folder (CARGO_TARGET_DIR is not a pin):
the clone's pip install then reuses the compiled crate instead of building it from scratch.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[3]
PINNED_TARGET = REPO / "target" / "python-package"  # install_package.sh's build folder
TIMEOUT = 900


def version_of(python: str) -> Optional[str]:
    """"3.X" of an interpreter, or None if it does not run (a pyenv shim of a missing version)."""
    try:
        res = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def find_python(version: Optional[str] = None) -> Optional[str]:
    """`python3` (or $PYTHON, as setup_venv.sh) for None, else `python3.X` on PATH or installed by
    pyenv (whose shim runs only the versions selected); None if absent."""
    if version is None:
        return shutil.which(os.environ.get("PYTHON", "python3"))
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [shutil.which(f"python{version}"), *sorted(map(str, pyenv.glob(f"{version}.*/bin/python{version}")))]
    for path in filter(None, candidates):
        if version_of(path) == version:
            return path
    return None


def _cargo_target(version: str) -> Path:
    """A build folder per Python version: pyo3's build script reruns when the interpreter's
    version changes, so sharing one folder would rebuild the crate at every switch. A new one
    starts as a copy of the pinned venv's, so only pyo3 and the crate rebuild (~1 min, not ~3)."""
    pinned = "%d.%d" % sys.version_info[:2]
    if version == pinned:
        return PINNED_TARGET
    target = REPO / "target" / f"python-package-{version}"
    if not target.exists() and PINNED_TARGET.is_dir():
        staging = target.with_name(target.name + ".copying")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(PINNED_TARGET, staging, symlinks=True)
        staging.rename(target)
    return target


class FreshVenv:
    """A new venv of `python` under `root`: `sh` runs bash with its bin first on PATH (so
    `python` and `pip` are the venv's), `python` runs code with its interpreter."""

    def __init__(self, python: str, root: Path):
        self.version = version_of(python)
        self.dir = root / "venv"
        subprocess.run([python, "-m", "venv", str(self.dir)], check=True, capture_output=True, timeout=TIMEOUT)
        self.bin = self.dir / "bin"
        # Nothing of the calling environment may leak in: not its venv, path or pip constraints.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PYTHON") and k not in ("VIRTUAL_ENV", "PIP_CONSTRAINT", "PIP_REQUIREMENT")}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.dir)
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        env["CARGO_TARGET_DIR"] = str(_cargo_target(self.version))
        self.env = env

    def sh(self, code: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=cwd, env=self.env,
                              capture_output=True, text=True, timeout=TIMEOUT)

    def python(self, code: str, cwd: Path) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / "python"), "-c", code], cwd=cwd, env=self.env,
                              capture_output=True, text=True, timeout=TIMEOUT)

    def distributions(self) -> dict:
        """{name: version} of what is installed in the venv, as pip lists it."""
        res = subprocess.run([str(self.bin / "python"), "-m", "pip", "list", "--format=freeze"],
                             env=self.env, capture_output=True, text=True, timeout=TIMEOUT)
        assert res.returncode == 0, res.stderr
        return dict(line.split("==", 1) for line in res.stdout.split() if "==" in line)
