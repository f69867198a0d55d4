"""The parts of the CLI contract that need real ORT artifacts (bad-input tests live on the Rust side).

- `inspect --format json` tells rewritten artifacts from original ones and reports k and alpha;
- rewriting an already rewritten directory is refused: one `error:` line, non-zero exit, no output.
"""
from __future__ import annotations

import pytest

from lookahead_testkit.model import MIXED_MLP
from lookahead_testkit.reference import ADAMW, SGD_CFG

ORT_OPTIMIZER_NAMES = {"adamw": "AdamW", "sgd": "SGD"}


@pytest.mark.parametrize("opt", [ADAMW, SGD_CFG], ids=lambda o: o.kind)
def test_inspect_reports_the_rewrite(opt, stock_artifacts, lookahead_artifacts, lookahead_cli):
    spec = MIXED_MLP  # has a frozen parameter
    original = lookahead_cli.inspect(stock_artifacts(spec, opt))
    assert original["format"] == "ort-artifacts"
    assert original["optimizer"] == ORT_OPTIMIZER_NAMES[opt.kind]
    assert original["lookahead"] is None
    assert not original.get("injected_nodes")

    report = lookahead_cli.inspect(lookahead_artifacts(spec, opt, 5, 0.5))
    assert report["format"] == "ort-artifacts"
    assert report["optimizer"] == ORT_OPTIMIZER_NAMES[opt.kind]
    # k and alpha, and where in the cycle the artifacts' checkpoint is (untrained: step 0).
    assert report["lookahead"] == {"k": 5, "alpha": pytest.approx(0.5), "position": 0, "sync_pending": False}
    assert report["injected_nodes"], "a rewritten model reports the nodes it injected"
    flags = {p["name"]: p["lookahead"] for p in report["parameters"]}
    for name in spec.param_names:
        assert flags.get(name) == (name in spec.trainable), f"parameter {name}: {flags.get(name)}"


def test_rewriting_twice_is_refused(stock_artifacts, lookahead_artifacts, lookahead_cli, tmp_path):
    rewritten = lookahead_artifacts(MIXED_MLP, ADAMW, 3, 0.8)
    out = tmp_path / "twice"
    res = lookahead_cli.run("rewrite", rewritten, "--output", out, "-k", 5, "--alpha", 0.5)
    assert res.returncode != 0, "rewriting rewritten artifacts must fail"
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    assert not out.exists(), "a failed rewrite must not write output"
