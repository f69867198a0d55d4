"""`inspect`'s compatibility report against onnxruntime-web itself: its rows "onnxruntime-web 1.17",
"1.18" and "1.19" say whether the training build of that release (npm onnxruntime-web 1.17.3,
1.18.0, 1.19.2) loads a set; here each set is loaded there, in headless Chromium
(tests/web/: Debian's chromium driven by playwright-core, the page calls
`TrainingSession.create({checkpointState, trainModel, evalModel, optimizerModel})`), and the
verdicts must agree. Every set the report says loads must also train: 3 steps
(runTrainStep, runOptimizerStep, lazyResetGrad) with finite losses.

The sets: 1.19.2's generate_artifacts (this venv) for AdamW and SGD, as generated and rewritten
(k=3, alpha=0.5) without the flag, with `--target-ort 1.17`, with `--target-ort 1.18`, and with
`--parallel-safe`. One browser for all of it; every set is loaded in one page per version (a new
page only after a C++ exception). tests/web/setup.sh (which the test command runs first) is run
again here, so that this file also runs on its own.
"""
from __future__ import annotations

import pytest

from lookahead_testkit import web
from lookahead_testkit.model import TANH_MLP
from lookahead_testkit.ort import generate_artifacts
from lookahead_testkit.reference import OptimizerConfig

K, ALPHA, STEPS = 3, 0.5, 3
OPTIMIZERS = {"adamw": OptimizerConfig("adamw", lr=0.01), "sgd": OptimizerConfig("sgd", lr=0.1)}
# How each set is made from the stock one: None = the stock set itself; otherwise the rewrite's
# extra arguments.
VARIANTS = {
    "stock": None,
    "rewritten": [],
    "target-1.17": ["--target-ort", "1.17"],
    "target-1.18": ["--target-ort", "1.18"],
    "parallel-safe": ["--parallel-safe"],
}
SETS = [f"{optimizer}/{variant}" for optimizer in OPTIMIZERS for variant in VARIANTS]


@pytest.fixture(scope="module")
def web_sets(lookahead_cli, tmp_path_factory) -> dict:
    """name -> directory, for every set of SETS."""
    out = {}
    for optimizer, opt in OPTIMIZERS.items():
        stock = generate_artifacts(TANH_MLP, opt, tmp_path_factory.mktemp(f"web-{optimizer}-stock"))
        for variant, extra in VARIANTS.items():
            if extra is None:
                out[f"{optimizer}/{variant}"] = stock
            else:
                parent = tmp_path_factory.mktemp(f"web-{optimizer}-{variant}")
                out[f"{optimizer}/{variant}"] = lookahead_cli.rewrite(stock, parent / "set", K, ALPHA, *extra)
    return out


@pytest.fixture(scope="module")
def browser(web_sets) -> dict:
    """(version, set name) -> what loading (and 3 steps of training) did in onnxruntime-web."""
    web.setup()
    return web.load(web_sets, web.VERSIONS, schedule=TANH_MLP.schedule(STEPS), eval_batch=TANH_MLP.eval_batch())


@pytest.fixture(scope="module")
def reports(web_sets, lookahead_cli) -> dict:
    """set name -> {runtime: compatibility row}."""
    return {name: {row["runtime"]: row for row in lookahead_cli.inspect(d)["compatibility"]}
            for name, d in web_sets.items()}


def web_row(reports, name, version) -> dict:
    rows = reports[name]
    runtime = f"onnxruntime-web {version}"
    assert runtime in rows, f"{name}: no {runtime!r} row in the report ({sorted(rows)})"
    row = rows[runtime]
    assert row["kind"] == "web", row
    return row


def describe(name, version, row, run) -> str:
    return (f"set {name}, onnxruntime-web {version} ({run.get('ort')}): the report says loads={row['loads']} "
            f"(reason: {row['reason']}); the browser: loads={run['loads']} (error: {run.get('error')})")


@pytest.mark.parametrize("version", web.VERSIONS)
@pytest.mark.parametrize("name", SETS)
def test_report_says_what_the_browser_does(name, version, browser, reports):
    run = browser[(version, name)]
    row = web_row(reports, name, version)
    assert run["loads"] is not None, f"the harness could not tell: {run}"
    assert row["loads"] == run["loads"], describe(name, version, row, run)
    if row["loads"]:
        assert "runError" not in run, f"{name} loads in web {version} but step {run['runErrorAt']} failed: {run['runError']}"
        losses = [loss for step in run["losses"] for loss in step]
        assert len(run["losses"]) == STEPS and web.finite(losses) and web.finite(run["evals"]), run


@pytest.mark.parametrize("version", web.VERSIONS)
@pytest.mark.parametrize("name", SETS)
def test_report_gives_the_browsers_reason(name, version, browser, reports):
    """Where both say the set does not load, the report's first reason is the browser's error: the
    checkpoint format (ORT checks the checkpoint first), or web's refusal of ORT's SGD optimizer
    model (its shape inference)."""
    run = browser[(version, name)]
    row = web_row(reports, name, version)
    if row["loads"] or run["loads"] is not False:
        return
    error, reason = run["error"] or "", row["reason"] or ""
    if "Checkpoint version" in error:
        assert "checkpoint format" in reason, describe(name, version, row, run)
    elif "ShapeInferenceError" in error:
        assert "SGD" in reason, describe(name, version, row, run)
    else:
        pytest.fail(f"an error the test does not know: {describe(name, version, row, run)}")


def test_the_sets_load_somewhere_and_fail_somewhere(browser):
    """Each version both loads and refuses some of the sets, so the comparison above proves
    something both ways, and the same set trains to the same losses in every version that loads it
    (one WASM build after another)."""
    for version in web.VERSIONS:
        verdicts = {name: browser[(version, name)]["loads"] for name in SETS}
        assert any(verdicts.values()) and not all(verdicts.values()), (version, verdicts)
    for name in SETS:
        trained = {v: browser[(v, name)]["losses"] for v in web.VERSIONS
                   if browser[(v, name)]["loads"] and "runError" not in browser[(v, name)]}
        for version, losses in trained.items():
            first_version, first = next(iter(trained.items()))
            diff = max(abs(a - b) for step, first_step in zip(losses, first) for a, b in zip(step, first_step))
            assert diff <= 1e-6, f"{name}: web {version}'s losses differ from web {first_version}'s by {diff:.3g}"
