"""Rewritten artifacts trained in onnxruntime-web's training API, in headless Chromium, step by
step against the NumPy Lookahead reference; and the ES module onnx-lookahead-web.mjs (the package's
copy, as installed) that applies a pending sync to a web TrainingSession's parameters.

What runs (one browser, one page per version, tests/web/ through lookahead_testkit.web.run):
- web 1.19.2: AdamW artifacts of TANH_MLP and MIXED_MLP (a frozen parameter, CE loss) as generated
  (against the plain reference: web trains what the reference computes, at the learning rate the
  reference uses), rewritten with k=3, alpha=0.5 (two forwards per step: gradient accumulation)
  and k=4, alpha=0.8 (one forward), each trained STEPS steps with the stock web loop
  (runTrainStep per batch, runOptimizerStep, lazyResetGrad, runEvalStep); every training loss and
  every eval loss within TOL of reference_run, and away from the plain inner optimizer. The
  rewritten runs also read every parameter after load and every step
  (getContiguousParameters(false)): the buffer's layout (the training model's parameter inputs in
  order, frozen ones interleaved, slow weights, counter), the weights and slow weights against the
  reference, and the fast weights a sync step leaves until the next forward. The k=3 schedule also
  runs in Python ORT 1.19.2.
- the module in 1.19.2: the same rewritten sets again, syncParameters called twice after load and
  after every step (lookahead_testkit.web.WebSet.sync): true exactly after sync steps, the Lookahead and
  slow weights (within SYNC_TOL of the reference, and bit for bit what Python's
  onnx_lookahead.ort.sync_parameters makes of the same fast and slow weights), a second call false
  and without effect, and training afterwards identical to the run without it.
- `--parallel-safe` sets under executionMode 'parallel' train like the others; the default rewrite
  there fails at the first step (ORT's parallel planner rejects PassThrough's aliasing).
- web 1.17.3 with `--target-ort 1.17` sets (it reads checkpoint format 1 only), module included.
- web 1.18.0: the sets train; the module refuses to run there (its getContiguousParameters
  corrupts the WASM heap on sets with frozen parameters, which the test shows as well).

Web's learning rate: web has no set_learning_rate; the optimizer runs at the checkpoint's
optimizer group's initial learning rate, and generate_artifacts' checkpoint has no optimizer
state, so ONNX Runtime's default applies (GroupOptimizerState::initial_lr = 0.001f; a checkpoint
saved from Python keeps 0.001 whatever set_learning_rate said). The reference runs at exactly that.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess

import numpy as np
import onnx
import pytest

import onnx_lookahead
from lookahead_testkit import web
from lookahead_testkit.compare import assert_trajectory_close, per_step_diff
from lookahead_testkit.model import MIXED_MLP, TANH_MLP
from lookahead_testkit.ort import StockLoop, generate_artifacts
from lookahead_testkit.reference import ADAMW, reference_run

WEB_LR = 0.001  # ONNX Runtime's default initial_lr, what web trains at (see above)
OPT = dataclasses.replace(ADAMW, lr=WEB_LR)
SPECS = {s.name: s for s in (TANH_MLP, MIXED_MLP)}
STEPS = 10
# (k, alpha, forwards per step). alpha 0.8 is not a float32 number: the module's float32
# arithmetic (alpha rounded, each operation rounded) shows in its bits there.
CONFIGS = [(3, 0.5, 2), (4, 0.8, 1)]
FORWARDS = {f"k{k}a{alpha}": forwards for k, alpha, forwards in CONFIGS}
TOL = 1e-5        # web (float32 WASM) vs the NumPy reference on losses; observed <= 2.4e-7
SYNC_TOL = 1e-6   # weights read (after syncParameters, or mid-cycle) vs the reference; observed <= 6e-8
ORT_TOL = 1e-6    # web vs Python ORT on the same set; observed <= 2.4e-7
MARGIN = 1e-4     # Lookahead vs plain (and stale vs synced weights) must differ by more; observed >= 7e-4
PARALLEL = {"executionMode": "parallel"}
PASSTHROUGH_ERROR = "PassThrough input and output are not sharing the same buffer"


def input_names(spec) -> tuple[str, str]:
    """The training model's user inputs: generate_artifacts names the target `labels` for its
    cross-entropy loss and `target` for MSE."""
    return (spec.input_name, "labels" if spec.loss == "ce" else "target")


def schedule(spec, forwards: int):
    return spec.schedule(STEPS, forwards=forwards)


@pytest.fixture(scope="module")
def sets(lookahead_cli, tmp_path_factory) -> dict:
    """(spec name, variant) -> artifacts directory: 'stock', 'k3a0.5', 'k4a0.8', 'parallel-safe'
    (k=3, alpha 0.5), 'target-1.17' (k=3, alpha 0.5, for web 1.17)."""
    out = {}
    for spec in SPECS.values():
        stock = generate_artifacts(spec, OPT, tmp_path_factory.mktemp(f"web-train-{spec.name}"))
        out[(spec.name, "stock")] = stock
        variants = {f"k{k}a{alpha}": (k, alpha, []) for k, alpha, _ in CONFIGS}
        variants["parallel-safe"] = (3, 0.5, ["--parallel-safe"])
        variants["target-1.17"] = (3, 0.5, ["--target-ort", "1.17"])
        for variant, (k, alpha, extra) in variants.items():
            parent = tmp_path_factory.mktemp(f"web-train-{spec.name}-{variant}")
            out[(spec.name, variant)] = lookahead_cli.rewrite(stock, parent / "set", k, alpha, *extra)
    return out


def web_sets(sets) -> list[web.WebSet]:
    """Everything the browser runs, named "<version>/<spec>/<what>"."""
    out = []
    for spec in SPECS.values():
        batch, names = spec.eval_batch(), input_names(spec)

        def add(version, what, variant, forwards, **options):
            out.append(web.WebSet(f"{version}/{spec.name}/{what}", sets[(spec.name, variant)],
                                  schedule(spec, forwards), batch, versions=(version,), input_names=names,
                                  **options))

        add("1.19", "stock", "stock", 1)
        for variant, forwards in FORWARDS.items():
            add("1.19", variant, variant, forwards, parameters="all")
            add("1.19", f"{variant}/sync", variant, forwards, parameters="all", sync=True)
        add("1.19", "parallel-safe/parallel", "parallel-safe", 2, session_options=PARALLEL)
        add("1.17", "target-1.17/sync", "target-1.17", 2, parameters="all", sync=True)
        # web 1.18.0: training, with trainable-only reads where no frozen parameter comes before a
        # trainable one in the training model's inputs (TANH_MLP; MIXED_MLP's b2 does).
        add("1.18", "k3a0.5", "k3a0.5", 2, parameters="trainable" if not spec.frozen else None, sync=True)
    # Last in their pages: runs that end in a C++ exception or a trap, after which the page is
    # loaded afresh.
    out.append(web.WebSet("1.19/tanh_mlp/k3a0.5/parallel", sets[("tanh_mlp", "k3a0.5")],
                          schedule(TANH_MLP, 2), TANH_MLP.eval_batch(), versions=("1.19",),
                          session_options=PARALLEL))
    out.append(web.WebSet("1.18/tanh_mlp/k3a0.5/all-parameters", sets[("tanh_mlp", "k3a0.5")],
                          versions=("1.18",), parameters="all"))
    return out


@pytest.fixture(scope="module")
def browser(sets) -> dict:
    """set name -> what the browser did (one load.mjs run for all of them)."""
    web.setup()
    runs = web.run(web_sets(sets), web.VERSIONS)
    return {name: run for (_, name), run in runs.items()}


def trained(run) -> dict:
    assert run["loads"], f"{run['set']} did not load: {run.get('error')}"
    assert "runError" not in run, f"{run['set']}: {run['runErrorAt']} failed: {run['runError']}"
    assert len(run["losses"]) == STEPS, run["set"]
    return run


def check_trajectory(run, spec, sched, k=None, alpha=None) -> float:
    """The run's training and eval losses against the reference; -> how far the run is from the
    other (plain for Lookahead, Lookahead(3, 0.5) for plain), which must exceed MARGIN."""
    batch = spec.eval_batch()
    ref = reference_run(spec, OPT, sched, batch, k, alpha)
    other = reference_run(spec, OPT, sched, batch, *((None, None) if k else (3, 0.5)))
    trained(run)
    assert_trajectory_close(run["losses"], run["evals"], ref.losses, ref.eval_losses, TOL)
    away = max(per_step_diff(run["losses"], other.losses).max(), per_step_diff(run["evals"], other.eval_losses).max())
    assert away > MARGIN, f"{run['set']}: indistinguishable from the other optimizer ({away:.2g})"
    return away


# ----------------------------------------------------------------------------------- layout
def layout(directory, trainable_only=False) -> list[tuple[str, int]]:
    """(name, size) of each parameter in getContiguousParameters' buffer as established by these
    tests: the training model's inputs that are checkpoint parameters, in input order. The
    checkpoint's parameters from `inspect` (the model's, trainable or not, and what the rewrite
    added, all frozen), so that this works for sets Python ORT 1.19 does not load."""
    report = onnx_lookahead.inspect(directory)
    trainable = {p["name"]: p["trainable"] for p in report["parameters"]}
    for graph in report["graphs"]:
        wiring = graph.get("lookahead") or {}
        for p in wiring.get("parameters", []):
            trainable.update({state: False for state in p["state"]})
        if wiring:
            trainable[wiring["counter"]] = False
    out = []
    for value in onnx.load(str(directory / "training_model.onnx")).graph.input:
        if value.name in trainable and (trainable[value.name] or not trainable_only):
            out.append((value.name, int(np.prod([d.dim_value for d in value.type.tensor_type.shape.dim]))))
    return out


def split(flat, lay) -> dict[str, np.ndarray]:
    flat, out, offset = np.asarray(flat, np.float32), {}, 0
    assert flat.size == sum(size for _, size in lay), (flat.size, lay)
    for name, size in lay:
        out[name], offset = flat[offset:offset + size], offset + size
    return out


def slow(name: str) -> str:
    return f"lookahead__slow__{name}"


def flat(params: dict, names) -> dict:
    return {n: np.asarray(params[n], np.float32).ravel() for n in names}


def maxdiff(a: dict, b: dict, names) -> float:
    return max(float(np.abs(a[n] - b[n]).max()) for n in names)


# ------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("spec", SPECS.values(), ids=lambda s: s.name)
def test_stock_sets_train_as_the_plain_reference_at_webs_learning_rate(spec, browser):
    """Web runs at ORT's default learning rate, the one the reference uses; the run is away from
    Lookahead(3, 0.5), so the comparisons below tell Lookahead from plain."""
    check_trajectory(browser[f"1.19/{spec.name}/stock"], spec, schedule(spec, 1))


@pytest.mark.parametrize("k,alpha,forwards", CONFIGS)
@pytest.mark.parametrize("spec", SPECS.values(), ids=lambda s: s.name)
def test_rewritten_sets_train_as_lookahead_in_web_1_19(spec, k, alpha, forwards, browser):
    check_trajectory(browser[f"1.19/{spec.name}/k{k}a{alpha}"], spec, schedule(spec, forwards), k, alpha)


@pytest.mark.parametrize("spec", SPECS.values(), ids=lambda s: s.name)
def test_web_trains_like_python_ort(spec, browser, sets):
    """The same set and schedule in Python ORT 1.19.2: the same losses, to float32 noise."""
    sched = schedule(spec, 2)
    losses, evals = StockLoop(sets[(spec.name, "k3a0.5")], WEB_LR).run(sched, spec.eval_batch())
    run = trained(browser[f"1.19/{spec.name}/k3a0.5"])
    assert_trajectory_close(run["losses"], run["evals"], losses, evals, ORT_TOL)


@pytest.mark.parametrize("k,alpha,forwards", CONFIGS)
@pytest.mark.parametrize("spec", SPECS.values(), ids=lambda s: s.name)
def test_parameter_buffer_layout_and_values(spec, k, alpha, forwards, browser, sets):
    """getContiguousParameters(false) after load and after every step: the layout the module
    relies on, the weights and slow weights of the reference, and, right after a sync step, the
    fast weights (what a user reading them would get without syncParameters)."""
    variant = f"k{k}a{alpha}"
    run = trained(browser[f"1.19/{spec.name}/{variant}"])
    lay = layout(sets[(spec.name, variant)])
    init = spec.init_params()
    # The buffer's order: every parameter of the model (frozen ones where they are), then the
    # slow weights, then the counter; after load the slow weights equal the weights.
    assert [n for n, _ in lay] == spec.param_names + [slow(n) for n in spec.trainable] + ["lookahead__step"]
    expected = np.concatenate([init[n].ravel() for n in spec.param_names]
                              + [init[n].ravel() for n in spec.trainable] + [np.zeros(1, np.float32)])
    assert np.array_equal(np.asarray(run["parameters"][0], np.float32), expected)
    ref = reference_run(spec, OPT, schedule(spec, forwards), spec.eval_batch(), k, alpha)
    stale_gap = []
    for t in range(1, STEPS + 1):
        got = split(run["parameters"][t], lay)
        assert got["lookahead__step"][0] == (t - 1) % k + 1, f"counter after step {t}"
        for n in spec.frozen:
            assert np.array_equal(got[n], init[n].ravel()), f"frozen {n} changed by step {t}"
        want = flat(ref.params[t - 1], spec.trainable)
        if t % k:
            assert maxdiff(got, want, spec.trainable) <= SYNC_TOL, f"weights after step {t}"
            slow_want = flat(ref.slow[t - 1], spec.trainable)
            assert max(float(np.abs(got[slow(n)] - slow_want[n]).max()) for n in spec.trainable) <= SYNC_TOL
        else:
            # The sync of step t happens at the next forward: the weights are still fast ones.
            stale_gap.append(maxdiff(got, want, spec.trainable))
    assert min(stale_gap) > MARGIN, f"after sync steps the weights read already look synced: {stale_gap}"


# (version, variant, k, alpha, forwards) of the runs with syncParameters.
SYNC_RUNS = [("1.19", f"k{k}a{alpha}", k, alpha, forwards) for k, alpha, forwards in CONFIGS]
SYNC_RUNS.append(("1.17", "target-1.17", 3, 0.5, FORWARDS["k3a0.5"]))


@pytest.mark.parametrize("version,variant,k,alpha,forwards", SYNC_RUNS, ids=[f"{r[0]}-{r[1]}" for r in SYNC_RUNS])
@pytest.mark.parametrize("spec", SPECS.values(), ids=lambda s: s.name)
def test_sync_parameters_module(spec, version, variant, k, alpha, forwards, browser, sets):
    """syncParameters after load and after every step: true exactly after sync steps, then the
    parameters read are the Lookahead weights (the slow weights equal to them), a second call is
    false and changes nothing, and training continues on the reference trajectory."""
    run = browser[f"{version}/{spec.name}/{variant}/sync"]
    assert "syncError" not in run, run["syncError"]
    sched = schedule(spec, forwards)
    check_trajectory(run, spec, sched, k, alpha)
    ref = reference_run(spec, OPT, sched, spec.eval_batch(), k, alpha)
    lay = layout(sets[(spec.name, variant)])
    assert len(run["syncs"]) == STEPS + 1
    for t, entry in enumerate(run["syncs"]):
        pending = t > 0 and t % k == 0
        assert entry["returned"] == [pending, False], f"after step {t}: {entry['returned']}"
        assert entry["parameters"][1] == entry["parameters"][0], f"the second call after step {t} changed the weights"
        before, after = run["parameters"][t], entry["parameters"][0]
        if not pending:
            assert after == before, f"syncParameters changed the weights after step {t}, no sync pending"
            continue
        got = split(after, lay)
        want = flat(ref.params[t - 1], spec.trainable)
        assert maxdiff(got, want, spec.trainable) <= SYNC_TOL, f"weights after syncParameters, step {t}"
        assert max(float(np.abs(got[slow(n)] - want[n]).max()) for n in spec.trainable) <= SYNC_TOL
        assert got["lookahead__step"][0] == 0, "the counter moved past the sync it applied, as Python's"
        assert maxdiff(split(before, lay), want, spec.trainable) > MARGIN, "nothing was pending"


@pytest.mark.parametrize("k,alpha,forwards", CONFIGS)
@pytest.mark.parametrize("spec", SPECS.values(), ids=lambda s: s.name)
def test_sync_parameters_computes_what_python_does(spec, k, alpha, forwards, browser, sets):
    """Bit for bit: Python's onnx_lookahead.ort.sync_parameters on a CheckpointState holding the
    web run's stale weights (fast weights, slow weights, counter k) gives the module's result."""
    from onnx_lookahead import ort

    variant = f"k{k}a{alpha}"
    run = browser[f"1.19/{spec.name}/{variant}/sync"]
    directory = sets[(spec.name, variant)]
    lay = layout(directory)
    shapes = {**spec.shapes(), **{slow(n): spec.shapes()[n] for n in spec.trainable}, "lookahead__step": (1,)}
    for t in range(k, STEPS + 1, k):
        loop = StockLoop(directory, WEB_LR)  # kept alive: the state copies through its session
        state = loop.state
        for name, value in split(run["parameters"][t], lay).items():
            state.parameters[name] = value.reshape(shapes[name])
        assert ort.sync_parameters(state) is True
        python = np.concatenate([np.asarray(state.parameters[n].data, np.float32).ravel() for n, _ in lay])
        module = np.asarray(run["syncs"][t]["parameters"][0], np.float32)
        assert np.array_equal(python.view(np.uint32), module.view(np.uint32)), f"step {t}"


@pytest.mark.parametrize("variant", FORWARDS)
@pytest.mark.parametrize("spec", SPECS.values(), ids=lambda s: s.name)
def test_training_after_sync_parameters_is_unchanged(spec, variant, browser):
    """The graph's own sync at the next forward leaves the synced weights as they are: the run with
    syncParameters gives bit for bit the losses of the run without it."""
    with_sync, without = browser[f"1.19/{spec.name}/{variant}/sync"], browser[f"1.19/{spec.name}/{variant}"]
    assert trained(with_sync)["losses"] == trained(without)["losses"]
    assert with_sync["evals"] == without["evals"]


@pytest.mark.parametrize("spec", SPECS.values(), ids=lambda s: s.name)
def test_parallel_safe_sets_train_under_parallel_execution(spec, browser):
    check_trajectory(browser[f"1.19/{spec.name}/parallel-safe/parallel"], spec, schedule(spec, 2), 3, 0.5)


def test_the_default_rewrite_fails_under_parallel_execution(browser):
    """As natively under ORT_PARALLEL: ORT's parallel planner does not let PassThrough alias its
    inputs; the error is a C++ exception, a bare number the harness reads the message of."""
    run = browser["1.19/tanh_mlp/k3a0.5/parallel"]
    assert run["loads"] and run.get("runErrorAt") == "step 1", run
    assert PASSTHROUGH_ERROR in run["runError"] and isinstance(run["runErrorCode"], int), run


@pytest.mark.parametrize("spec", SPECS.values(), ids=lambda s: s.name)
def test_web_1_18_trains_but_the_module_refuses(spec, browser, sets):
    """web 1.18.0 trains rewritten sets like the others; syncParameters refuses to run there, since
    1.18.0's getContiguousParameters(false) traps on sets with frozen parameters."""
    run = browser[f"1.18/{spec.name}/k3a0.5"]
    assert run["ort"] == "1.18.0"
    check_trajectory(run, spec, schedule(spec, 2), 3, 0.5)
    assert run["syncs"] == [] and "1.18.0" in run["syncError"] and run["syncError"].startswith("after load"), run
    if not spec.frozen:
        # Trainable-only reads work when no frozen parameter precedes a trainable one.
        ref = reference_run(spec, OPT, schedule(spec, 2), spec.eval_batch(), 3, 0.5)
        lay = layout(sets[(spec.name, "k3a0.5")], trainable_only=True)
        for t in (1, 2, 4, 5):
            got = split(run["parameters"][t], lay)
            assert maxdiff(got, flat(ref.params[t - 1], spec.trainable), spec.trainable) <= SYNC_TOL, f"step {t}"


def test_web_1_18_all_parameter_reads_trap(browser):
    """Why the module refuses 1.18.0: reading all parameters of a rewritten set traps."""
    run = browser["1.18/tanh_mlp/k3a0.5/all-parameters"]
    assert run["loads"] and run["parameters"] == [], run
    assert "memory access out of bounds" in run["parametersError"] and run["unsound"], run


# ------------------------------------------------------------------------- the module itself
def test_the_module_ships_with_the_package():
    """The browser tests load the installed copy (package data beside __init__.py): it is there,
    and it is the one in this tree."""
    installed = web.lookahead_module()
    assert installed.is_file(), f"{installed}: not installed with the package"
    assert installed.read_bytes() == (web.REPO / "python" / "onnx_lookahead" / installed.name).read_bytes()


READ_RECORD = """
import { readFileSync } from 'node:fs';
const { readRecord } = await import(process.argv[1]);
const out = {};
for (const path of process.argv.slice(2)) {
  try { out[path] = readRecord(readFileSync(path)); } catch (e) { out[path] = { error: e.message }; }
}
console.log(JSON.stringify(out));
"""


def test_read_record_from_the_training_model(sets):
    """readRecord (in Node: the module needs no browser for it) gives what `inspect` says of the
    rewrite, the inputs in the model's order with their sizes, and refuses a stock model."""
    rewritten = sets[("mixed_mlp", "k4a0.8")] / "training_model.onnx"
    stock = sets[("mixed_mlp", "stock")] / "training_model.onnx"
    res = subprocess.run(["node", "--input-type=module", "-e", READ_RECORD, str(web.lookahead_module()),
                          str(rewritten), str(stock)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    record = out[str(rewritten)]
    report = onnx_lookahead.inspect(rewritten.parent)
    wiring = next(g["lookahead"] for g in report["graphs"] if g.get("lookahead", {}).get("role") == "sync")
    assert (record["k"], record["alpha"]) == (report["lookahead"]["k"], report["lookahead"]["alpha"]) == (4, 0.8)
    assert record["counter"] == wiring["counter"]
    assert record["parameters"] == [{"name": p["name"], "slow": p["state"][0]} for p in wiring["parameters"]]
    model = onnx.load(str(rewritten))
    assert [i["name"] for i in record["inputs"]] == [i.name for i in model.graph.input]
    sizes = {n: s for n, s in layout(rewritten.parent)}
    assert all(i["size"] == sizes[i["name"]] and i["elemType"] == onnx.TensorProto.FLOAT
               for i in record["inputs"] if i["name"] in sizes)
    assert "no onnx-lookahead record" in out[str(stock)]["error"]
