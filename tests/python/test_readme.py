"""Every snippet of README.md runs as written, in the order a reader meets them.

Fenced blocks tagged `sh` run with bash (errexit, pipefail) and `python` blocks with this
interpreter, from the repository root, so the training snippet finds what the main-job command
wrote and the deployment snippets what training wrote. `text` blocks are synopses and outputs and
are not run. The one `sh` block not run here is the test command itself (it runs this file).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
THE_TEST_COMMAND = "bash tests/run-all.sh"


def snippets() -> list[tuple[str, str, int]]:
    """(language, code, line) of every top-level fenced block of README.md."""
    text = (REPO / "README.md").read_text()
    return [(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def test_every_block_says_what_it_is():
    for language, _, line in snippets():
        assert language in {"sh", "python", "text"}, f"README.md:{line}: tag the block (sh, python or text)"


def test_every_readme_snippet_runs():
    ran = 0
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for language, code, line in snippets():
        if language == "sh":
            if code.strip() == THE_TEST_COMMAND:
                continue
            command = ["bash", "-euo", "pipefail", "-c", code]
        elif language == "python":
            command = [sys.executable, "-c", code]
        else:
            continue
        res = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, f"README.md:{line} ({language}) failed:\n{code}\n{res.stdout}\n{res.stderr}"
        ran += 1
    assert ran >= 4, f"only {ran} snippets ran"
