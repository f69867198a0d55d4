"""Shared fixtures of the end-to-end tests: the binary, and artifacts generated at test time.

The command line is the installed package's console script (or ONNX_LOOKAHEAD_BIN). When it is
missing, every test that needs it FAILS with a message saying how to install it; nothing is
skipped silently. Tests
of the harness itself (NumPy reference vs stock ORT) do not need the binary and still run.

Artifacts are generated once per session (generate_artifacts takes about a second) into pytest's
temporary directory, and rewritten copies are cached per (model, optimizer, k, alpha).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The helper modules sit next to this file; the package under test (onnx_lookahead, with the
# training_info runtime) is the one installed in this interpreter's environment, never the source
# tree: python/ is not on the path.
_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

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

