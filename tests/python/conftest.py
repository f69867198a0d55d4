"""Shared fixtures of the end-to-end tests: the binary, and artifacts generated at test time.

The binary is ONNX_LOOKAHEAD_BIN or <repo>/target/release/onnx-lookahead. When it is missing, every
test that needs it FAILS with a message saying how to build it; nothing is skipped silently. Tests
of the harness itself (NumPy reference vs stock ORT) do not need the binary and still run.

Artifacts are generated once per session (generate_artifacts takes about a second) into pytest's
temporary directory, and rewritten copies are cached per (model, optimizer, k, alpha).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The training_info reference runtime lives in examples/ (it is for users too); the helper
# modules sit next to this file.
_HERE = Path(__file__).resolve().parent
for _path in (_HERE, _HERE.parent.parent / "examples"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from lookahead_testkit import cli
from lookahead_testkit.model import MlpSpec
from lookahead_testkit.ort import generate_artifacts
from lookahead_testkit.reference import OptimizerConfig


def pytest_report_header(config):
    path, problem = cli.find_binary()
    return f"onnx-lookahead binary: {path}" + (f"  [MISSING: {problem}]" if problem else "")


@pytest.fixture(scope="session")
def lookahead_cli() -> cli.Cli:
    path, problem = cli.find_binary()
    if problem:
        pytest.fail(problem, pytrace=False)
    return cli.Cli(path)


@pytest.fixture(scope="session")
def stock_artifacts(tmp_path_factory):
    """stock_artifacts(spec, opt) -> directory of un-rewritten ORT artifacts (cached)."""
    cache = {}

    def get(spec: MlpSpec, opt: OptimizerConfig):
        key = (spec, opt)
        if key not in cache:
            cache[key] = generate_artifacts(spec, opt, tmp_path_factory.mktemp(f"{spec.name}_{opt.kind}"))
        return cache[key]

    return get


@pytest.fixture(scope="session")
def lookahead_artifacts(stock_artifacts, lookahead_cli, tmp_path_factory):
    """lookahead_artifacts(spec, opt, k, alpha) -> directory rewritten by the CLI (cached)."""
    cache = {}

    def get(spec: MlpSpec, opt: OptimizerConfig, k: int, alpha: float):
        key = (spec, opt, k, alpha)
        if key not in cache:
            parent = tmp_path_factory.mktemp(f"{spec.name}_{opt.kind}_k{k}_a{alpha}")
            cache[key] = lookahead_cli.rewrite(stock_artifacts(spec, opt), parent / "artifacts", k, alpha)
        return cache[key]

    return get

