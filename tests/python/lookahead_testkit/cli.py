"""The onnx-lookahead command line as a black box: locate it, rewrite, inspect.

The tests reach the Rust side through the installed package: this command line (the console
script `onnx-lookahead` the package installs beside this interpreter) or the package's API. A
developer may point ONNX_LOOKAHEAD_BIN at another binary (a `cargo build` one); the test command
does not.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DEFAULT_BIN = Path(sys.executable).parent / "onnx-lookahead"


def find_binary() -> tuple[Path, str | None]:
    """-> (path, problem): problem is None when the path is an executable file."""
    path = Path(os.environ.get("ONNX_LOOKAHEAD_BIN") or DEFAULT_BIN)
    if not path.is_file() or not os.access(path, os.X_OK):
        return path, (f"onnx-lookahead not found or not executable at {path}; install the package "
                      f"into this venv (`pip install {REPO}`) or point ONNX_LOOKAHEAD_BIN at a binary")
    return path, None


class Cli:
    def __init__(self, binary):
        self.binary = Path(binary)

    def run(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.binary), *map(str, args)], capture_output=True, text=True,
                              timeout=600)

    def rewrite(self, src, dst, k: int, alpha: float, *extra) -> Path:
        """Rewrite src (artifacts dir or model file) to dst; raise with the tool's stderr on failure."""
        res = self.run("rewrite", src, "--output", dst, "-k", k, "--alpha", alpha, *extra)
        if res.returncode != 0:
            raise AssertionError(f"onnx-lookahead rewrite {src} failed ({res.returncode}):\n"
                                 f"{res.stderr}{res.stdout}")
        return Path(dst)

    def run_ok(self, *args) -> subprocess.CompletedProcess:
        """Run the tool; raise with its stderr unless it succeeds."""
        res = self.run(*args)
        if res.returncode != 0:
            raise AssertionError(f"onnx-lookahead {' '.join(map(str, args))} failed ({res.returncode}):\n"
                                 f"{res.stderr}{res.stdout}")
        return res

    def inspect(self, path) -> dict:
        res = self.run("inspect", path, "--format", "json")
        if res.returncode != 0:
            raise AssertionError(f"onnx-lookahead inspect {path} failed ({res.returncode}):\n{res.stderr}")
        return json.loads(res.stdout)
