"""Every snippet of README.md runs as written, in the order a reader meets them.

Fenced blocks tagged `sh` run with bash (errexit, pipefail) and `python` blocks with this
interpreter, from the repository root, so the training snippet finds what the main-job command
wrote and the deployment snippets what training wrote. `text` blocks are synopses and outputs and
are not run. `js` blocks run in a browser only (onnxruntime-web's training build has no Node
entry); they must at least parse as ES modules (`node --check`), and what they do is what
test_web_training.py does in the browser. The one `sh` block not run here is the test command
itself (it runs this file).

A block right after the line `<!-- runs in a fresh venv -->` is one a user runs outside this
setup (the quickstart): those blocks run again, in order, in a new venv that `python3 -m venv`
made and only they install into, `sh` blocks from the clone's root (the install command installs
"." from there), `python` blocks from an empty folder outside the clone. The pins of the test venv
cannot make them pass there.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lookahead_testkit.freshvenv import FreshVenv, find_python

REPO = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
THE_TEST_COMMAND = "bash tests/run-all.sh"
FRESH_VENV = "<!-- runs in a fresh venv -->"


def snippets() -> list[tuple[str, str, int, bool]]:
    """(language, code, line, fresh) of every top-level fenced block of README.md; fresh: the line
    right before the fence is FRESH_VENV."""
    text = (REPO / "README.md").read_text()
    blocks = []
    for m in FENCE.finditer(text):
        before = text[: max(m.start() - 1, 0)].rsplit("\n", 1)[-1]
        blocks.append((m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1, before == FRESH_VENV))
    return blocks


def fresh_venv_blocks() -> list[tuple[str, str, int]]:
    return [(language, code, line) for language, code, line, fresh in snippets() if fresh]


def test_every_block_says_what_it_is():
    for language, _, line, _ in snippets():
        assert language in {"sh", "python", "text", "js"}, f"README.md:{line}: tag the block (sh, python, text or js)"


def test_js_blocks_parse(tmp_path):
    blocks = [(code, line) for language, code, line, _ in snippets() if language == "js"]
    assert blocks, "README.md has no js block (the browser loop)"
    for code, line in blocks:
        path = tmp_path / f"readme_{line}.mjs"
        path.write_text(code)
        res = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, f"README.md:{line} (js) does not parse:\n{code}\n{res.stderr}"


def test_every_readme_snippet_runs():
    ran = 0
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for language, code, line, _ in snippets():
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


def test_the_quickstart_is_marked_to_run_in_a_fresh_venv():
    text = (REPO / "README.md").read_text()
    marked = fresh_venv_blocks()
    # A marker anywhere but right before a fence would silently leave its block out.
    assert text.count(FRESH_VENV) == len(marked), f"put {FRESH_VENV} on the line right before a fence"
    start = text.index("## Quickstart (Python)")
    first, last = text.count("\n", 0, start), text.count("\n", 0, text.index("\n## ", start + 1))
    assert [language for language, _, line in marked if first < line < last] == ["sh", "python"], marked
    assert marked[0][1].strip() == 'python -m pip install ".[ort]"'


@pytest.mark.parametrize("version", [None, "3.12"], ids=["python3", "python3.12"])
def test_fresh_venv_snippets_run(version, tmp_path):
    """The README's marked blocks, unchanged, in a new venv: the install command, then the
    quickstart from a folder outside the clone (it would fail with onnx >= 1.18, or two ORTs)."""
    python = find_python(version)
    if python is None:
        pytest.skip(f"no python{version or '3'} on PATH")
    venv = FreshVenv(python, tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    assert REPO not in work.resolve().parents
    ran = []
    for language, code, line in fresh_venv_blocks():
        assert language in {"sh", "python"}, f"README.md:{line}: only sh and python blocks run in a fresh venv"
        res = venv.sh(code) if language == "sh" else venv.python(code, cwd=work)
        assert res.returncode == 0, (f"README.md:{line} ({language}) failed in a fresh venv of Python "
                                     f"{venv.version}:\n{code}\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}")
        ran.append(language)
    assert "python" in ran
    installed = venv.distributions()
    assert [name for name in installed if name.lower().startswith(("onnxruntime", "ort-"))] == [
        "onnxruntime-training-cpu"], installed
