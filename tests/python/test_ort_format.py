"""End-to-end: the ORT format (`.ort`, what minimal builds of ONNX Runtime load, e.g. on a phone)
of every model the Python package writes.

The package converts with onnxruntime-training's own converter, the call generate_artifacts(
ort_format=True) makes, so every model of an output set (training, eval, optimizer) gets a fresh
`<model>.ort` and `<model>.required_operators.config`, and the set one `required_operators.config`
listing the operators of all three (what `--include_ops_by_config` of a minimal build takes). By
default (`ort_format=None`, the console script without a flag) that happens when the input held an
ORT-format copy of one of its models.

The inputs are generated with generate_artifacts(ort_format=True), so they hold the stock `.ort`
copies that a careless tool would carry over (they train plain AdamW/SGD). Every training test
loads the output's `.ort` models in ORT's training API (CheckpointState/Module/Optimizer take
`.ort` paths), runs the unmodified loop, and checks every step: against the same set's `.onnx`
models (bit-identical: what was observed, every loss, eval loss and parameter), against the NumPy
Lookahead reference (within 1e-5), and away from the plain inner optimizer (so the `.ort` models
are the rewritten ones).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

import onnx_lookahead
from lookahead_testkit.compare import assert_trajectory_close, max_param_diff, per_step_diff
from lookahead_testkit.model import TANH_MLP
from lookahead_testkit.ort import StockLoop, generate_artifacts
from lookahead_testkit.reference import ADAMW, SGD_CFG, reference_run

SPEC = TANH_MLP
K, ALPHA, STEPS = 5, 0.5, 20
TOL = 1e-5      # .ort vs NumPy, float32
MARGIN = 1e-4   # Lookahead vs the plain inner optimizer
MODELS = ("training_model", "eval_model", "optimizer_model")
ORT_FILES = sorted([f"{m}.ort" for m in MODELS] + [f"{m}.required_operators.config" for m in MODELS]
                   + ["required_operators.config"])
PACKAGE = Path(onnx_lookahead.__file__).resolve().parent
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

# (id, optimizer, rewrite options)
CASES = [
    ("adamw", ADAMW, {}),
    ("sgd", SGD_CFG, {}),
    ("adamw-reset", ADAMW, {"inner_state": "reset"}),
    ("adamw-parallel-safe", ADAMW, {"parallel_safe": True}),
    ("sgd-parallel-safe", SGD_CFG, {"parallel_safe": True}),
]


@pytest.fixture(scope="module")
def ort_input(tmp_path_factory):
    """ort_input(opt) -> artifacts generated with ort_format=True (cached)."""
    cache = {}

    def get(opt):
        if opt not in cache:
            cache[opt] = generate_artifacts(SPEC, opt, tmp_path_factory.mktemp(f"ort_input_{opt.kind}"),
                                            ort_format=True)
        return cache[opt]

    return get


@pytest.fixture(scope="module")
def rewritten(ort_input, tmp_path_factory):
    """rewritten(case id) -> (output folder, summary) of onnx_lookahead.rewrite with the default
    ort_format on the ORT-format input (cached)."""
    cache = {}

    def get(case_id):
        if case_id not in cache:
            _, opt, options = next(c for c in CASES if c[0] == case_id)
            out = tmp_path_factory.mktemp(f"rewritten_{case_id}") / "artifacts"
            summary = onnx_lookahead.rewrite(ort_input(opt), out, k=K, alpha=ALPHA, **options)
            cache[case_id] = (out, summary)
        return cache[case_id]

    return get


def ort_files(folder) -> list[str]:
    """The ORT-format files in a folder."""
    return sorted(n for n in os.listdir(folder) if n.endswith(".ort") or n.endswith(".config"))


def operators(config) -> set[tuple[str, int, str]]:
    """(domain, opset, operator) of a required_operators.config."""
    ops = set()
    for line in Path(config).read_text().splitlines():
        if line and not line.startswith("#"):
            domain, opset, names = line.split(";")
            ops.update((domain, int(opset), name) for name in names.split(","))
    return ops


def names(ops) -> set[str]:
    return {op for _, _, op in ops}


def train(folder, opt, models, steps=STEPS, parallel=False, checkpoint=None, schedule=None):
    """The stock loop over the set's `.onnx` or `.ort` models: (losses, eval losses, parameters
    after every step)."""
    options = None
    if parallel:
        options = onnxruntime.SessionOptions()
        options.execution_mode = onnxruntime.ExecutionMode.ORT_PARALLEL
    weights = []
    loop = StockLoop(folder, opt.lr, checkpoint=checkpoint, session_options=options, models=models)
    schedule = SPEC.schedule(steps) if schedule is None else schedule
    losses, evals = loop.run(schedule, SPEC.eval_batch(), on_step=lambda t, lp: weights.append(
        {n: lp.parameter(n) for n in SPEC.param_names}))
    return losses, evals, weights


def assert_bit_identical(a, b, what):
    (la, ea, wa), (lb, eb, wb) = a, b
    assert np.array_equal(np.asarray(la), np.asarray(lb)), f"{what}: training losses differ"
    assert np.array_equal(np.asarray(ea), np.asarray(eb)), f"{what}: eval losses differ"
    for t, (x, y) in enumerate(zip(wa, wb), 1):
        assert all(np.array_equal(x[n], y[n]) for n in SPEC.param_names), f"{what}: parameters after step {t}"


@pytest.mark.parametrize("case_id", [c[0] for c in CASES])
def test_ort_models_train_like_the_onnx_models_and_the_reference(case_id, rewritten):
    _, opt, options = next(c for c in CASES if c[0] == case_id)
    out, summary = rewritten(case_id)
    assert summary["ort_format"] == ORT_FILES and summary["notes"] == [], summary
    assert ort_files(out) == ORT_FILES
    parallel = bool(options.get("parallel_safe"))
    by_onnx = train(out, opt, ".onnx", parallel=parallel)
    by_ort = train(out, opt, ".ort", parallel=parallel)
    assert_bit_identical(by_ort, by_onnx, f"{case_id}: .ort vs .onnx")
    losses, evals, weights = by_ort
    schedule, batch = SPEC.schedule(STEPS), SPEC.eval_batch()
    inner_state = options.get("inner_state", "keep")
    ref = reference_run(SPEC, opt, schedule, batch, K, ALPHA, inner_state=inner_state)
    assert_trajectory_close(losses, evals, ref.losses, ref.eval_losses, TOL)
    for t in range(1, STEPS + 1):
        if t % K:  # a sync may reach the raw weights at the next forward
            assert max_param_diff(weights[t - 1], ref.params[t - 1], SPEC.trainable) <= TOL, f"weights after step {t}"
    plain = reference_run(SPEC, opt, schedule, batch)
    away = max(per_step_diff(losses, plain.losses).max(), per_step_diff(evals, plain.eval_losses).max())
    assert away > MARGIN, f"the .ort run is indistinguishable from plain {opt.kind} ({away:.2g})"


@pytest.mark.parametrize("case_id", [c[0] for c in CASES])
def test_the_sets_operator_list_holds_every_operator_of_its_models(case_id, rewritten, ort_input):
    _, opt, options = next(c for c in CASES if c[0] == case_id)
    out, _ = rewritten(case_id)
    per_model = {m: operators(out / f"{m}.required_operators.config") for m in MODELS}
    merged = operators(out / "required_operators.config")
    assert merged == set().union(*per_model.values())
    before = {m: operators(ort_input(opt) / f"{m}.required_operators.config") for m in MODELS}
    training, optimizer = names(per_model["training_model"]), names(per_model["optimizer_model"])
    # The sync If, its in-place writes, and the alias of the parameters (Reshape when parallel-safe).
    assert {"If", "InPlaceAccumulatorV2"} <= training
    alias = "Reshape" if options.get("parallel_safe") else "PassThrough"
    assert alias in training and alias not in names(before["training_model"])
    assert "If" in names(per_model["eval_model"]) and "If" not in names(before["eval_model"])
    if options.get("inner_state") == "reset":
        assert "If" in optimizer and "If" not in names(before["optimizer_model"])
    else:
        assert per_model["optimizer_model"] == before["optimizer_model"]
    assert names(merged) >= {"If", alias, "InPlaceAccumulatorV2"}
    # The lists name their models where they are, not in the staging folder.
    for config in out.glob("*.config"):
        listed = [line[4:] for line in config.read_text().splitlines() if line.startswith("# - ")]
        assert listed and all(Path(p).parent == out.resolve() for p in listed), config


@pytest.mark.parametrize("opt", [ADAMW, SGD_CFG], ids=lambda o: o.kind)
def test_finalize_after_training_writes_the_plain_sets_ort_format(opt, ort_input, tmp_path):
    """Trained from its .ort models up to a sync step (the sync pending in the checkpoint),
    finalized by default (the input holds .ort copies): the plain set's .ort models are the
    original graphs again (the operators generate_artifacts listed), and continue exactly like its
    .onnx models, on the Lookahead reference."""
    out = tmp_path / "lookahead"
    onnx_lookahead.rewrite(ort_input(opt), out, k=K, alpha=ALPHA)
    steps = K + 3
    schedule, batch = SPEC.schedule(steps), SPEC.eval_batch()
    loop = StockLoop(out, opt.lr, models=".ort")
    for t in range(K):
        loop.step(schedule[t])
    loop.save(tmp_path / "saved")
    plain = tmp_path / "plain"
    summary = onnx_lookahead.finalize(out, plain, checkpoint=tmp_path / "saved")
    assert summary["ort_format"] == ORT_FILES and summary["notes"] == [], summary
    for m in MODELS:
        assert operators(plain / f"{m}.required_operators.config") == operators(
            ort_input(opt) / f"{m}.required_operators.config"), m
    rest = schedule[K:]
    by_onnx = train(plain, opt, ".onnx", schedule=rest)
    by_ort = train(plain, opt, ".ort", schedule=rest)
    assert_bit_identical(by_ort, by_onnx, "finalized .ort vs .onnx")
    ref = reference_run(SPEC, opt, schedule, batch, K, ALPHA)
    plain_ref = reference_run(SPEC, opt, schedule, batch)
    losses = by_ort[0]
    assert np.abs(np.asarray(losses) - np.asarray(ref.losses[K:])).max() <= TOL
    assert np.abs(np.asarray(losses) - np.asarray(plain_ref.losses[K:])).max() > MARGIN
    # No sync after the first continued step: the plain loop holds the Lookahead reference's weights.
    assert max_param_diff(by_ort[2][0], ref.params[K], SPEC.trainable) <= TOL


def test_by_default_only_an_input_with_ort_copies_gets_them(ort_input, stock_artifacts, tmp_path):
    without = stock_artifacts(SPEC, ADAMW)
    summary = onnx_lookahead.rewrite(without, tmp_path / "none")
    assert summary["ort_format"] == [] and ort_files(tmp_path / "none") == []
    summary = onnx_lookahead.rewrite(without, tmp_path / "forced", ort_format=True)
    assert summary["ort_format"] == ORT_FILES == ort_files(tmp_path / "forced")
    # Asked not to: the unchanged optimizer model keeps its copies, the others are left out.
    summary = onnx_lookahead.rewrite(ort_input(ADAMW), tmp_path / "off", ort_format=False)
    assert summary["ort_format"] == []
    assert ort_files(tmp_path / "off") == ["optimizer_model.ort", "optimizer_model.required_operators.config"]
    for name in ort_files(tmp_path / "off"):
        assert (tmp_path / "off" / name).read_bytes() == (ort_input(ADAMW) / name).read_bytes()
    assert len(summary["notes"]) == 2 and all("not carried over" in n for n in summary["notes"])
    # finalize follows its input the same way.
    summary = onnx_lookahead.finalize(tmp_path / "none", tmp_path / "plain_none")
    assert summary["ort_format"] == [] and ort_files(tmp_path / "plain_none") == []
    summary = onnx_lookahead.finalize(tmp_path / "none", tmp_path / "plain_forced", ort_format=True)
    assert ort_files(tmp_path / "plain_forced") == ORT_FILES
    # --force replaces an earlier output that holds the ORT format.
    onnx_lookahead.rewrite(without, tmp_path / "forced", ort_format=True, force=True, k=3)
    assert onnx_lookahead.inspect(tmp_path / "forced")["lookahead"]["k"] == 3


def test_the_console_script_takes_ort_format(ort_input, stock_artifacts, lookahead_cli, tmp_path):
    without = stock_artifacts(SPEC, SGD_CFG)
    res = lookahead_cli.run_ok("rewrite", without, "--output", tmp_path / "cli", "--ort-format")
    assert f"wrote the ORT format too: {', '.join(ORT_FILES)}" in res.stderr.splitlines()
    assert ort_files(tmp_path / "cli") == ORT_FILES
    lookahead_cli.run_ok("rewrite", ort_input(SGD_CFG), "--output", tmp_path / "auto")
    assert ort_files(tmp_path / "auto") == ORT_FILES
    res = lookahead_cli.run_ok("rewrite", ort_input(SGD_CFG), "--output", tmp_path / "off", "--no-ort-format")
    assert ort_files(tmp_path / "off") == ["optimizer_model.ort", "optimizer_model.required_operators.config"]
    assert len([line for line in res.stderr.splitlines() if line.startswith("note:")]) == 2
    lookahead_cli.run_ok("finalize", tmp_path / "cli", "--output", tmp_path / "plain", "--ort-format")
    assert ort_files(tmp_path / "plain") == ORT_FILES
    lookahead_cli.run_ok("rewrite", without, "--output", tmp_path / "cli", "--ort-format", "--force")
    # The console script's set trains from its .ort models like from its .onnx ones.
    assert_bit_identical(train(tmp_path / "cli", SGD_CFG, ".ort", steps=6),
                         train(tmp_path / "cli", SGD_CFG, ".onnx", steps=6), "console script")


def staging_left(folder) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(".onnx-lookahead-")]


def test_a_failed_conversion_leaves_nothing(ort_input, lookahead_cli, tmp_path, monkeypatch):
    """The converter itself fails (an optimization level it does not know, through the variable
    it reads): no output, no staging folder, an earlier output under --force untouched."""
    src = ort_input(ADAMW)
    earlier = tmp_path / "earlier"
    onnx_lookahead.rewrite(src, earlier)
    snapshot = {n: (earlier / n).read_bytes() for n in os.listdir(earlier)}
    monkeypatch.setenv("ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL", "fastest")
    expected = "cannot write the ORT format of its models: ValueError: Invalid optimization level of fastest"
    with pytest.raises(onnx_lookahead.Error, match=expected):
        onnx_lookahead.rewrite(src, tmp_path / "out")
    with pytest.raises(onnx_lookahead.Error, match=expected):
        onnx_lookahead.rewrite(src, earlier, force=True, k=3)
    with pytest.raises(onnx_lookahead.Error, match=expected):
        onnx_lookahead.finalize(earlier, tmp_path / "plain")
    res = lookahead_cli.run("rewrite", src, "--output", tmp_path / "cli", "--ort-format")
    assert res.returncode == 1 and res.stderr == (
        f"error: cannot rewrite {src}: {tmp_path / 'cli'}: {expected}\n"), res.stderr
    assert sorted(os.listdir(tmp_path)) == ["earlier"], "no output, no staging folder"
    assert {n: (earlier / n).read_bytes() for n in os.listdir(earlier)} == snapshot
    # Without conversion the same call works: the failure was the converter's.
    onnx_lookahead.rewrite(src, tmp_path / "off", ort_format=False)


def test_the_converters_level_names_its_files(ort_input, tmp_path, monkeypatch):
    """ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL=basic: the converter's own names
    (training_model.basic.ort, ...); the tool knows them (a later --force replaces the set, the
    binary's rules leave them out with their model)."""
    monkeypatch.setenv("ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL", "basic")
    out = tmp_path / "basic"
    summary = onnx_lookahead.rewrite(ort_input(SGD_CFG), out)
    expected = sorted([f"{m}.basic.ort" for m in MODELS] + [f"{m}.required_operators.basic.config" for m in MODELS]
                      + ["required_operators.basic.config"])
    assert summary["ort_format"] == expected and ort_files(out) == expected
    assert_bit_identical(train(out, SGD_CFG, ".basic.ort", steps=6), train(out, SGD_CFG, ".onnx", steps=6), "basic")
    onnx_lookahead.rewrite(ort_input(SGD_CFG), out, force=True)
    monkeypatch.delenv("ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL")
    summary = onnx_lookahead.finalize(out, tmp_path / "plain")
    assert summary["ort_format"] == ORT_FILES == ort_files(tmp_path / "plain")


def test_refusals(tmp_path):
    with pytest.raises(onnx_lookahead.Error, match="--ort-format applies to ONNX Runtime training artifacts; .* is a model with training_info"):
        onnx_lookahead.rewrite(FIXTURES / "training_info_sgd.onnx", tmp_path / "m.onnx", ort_format=True)
    with pytest.raises(onnx_lookahead.Error, match="ort_format must be None"):
        onnx_lookahead.rewrite(FIXTURES / "ort_sgd", tmp_path / "x", ort_format="yes")
    assert os.listdir(tmp_path) == []


def test_without_onnxruntime_training(ort_input, tmp_path):
    """Only the installed onnx_lookahead on the path (`-S`: no site-packages, so no ONNX Runtime):
    ort_format=True is refused with the fix before anything is written; the default writes the set
    without the copies it cannot make, and says so."""
    (tmp_path / "path").mkdir()
    (tmp_path / "path" / "onnx_lookahead").symlink_to(PACKAGE, target_is_directory=True)
    code = f"""
import sys; sys.path.insert(0, {str(tmp_path / 'path')!r})
import onnx_lookahead
try:
    onnx_lookahead.rewrite({str(ort_input(ADAMW))!r}, {str(tmp_path / 'forced')!r}, ort_format=True)
except onnx_lookahead.Error as e:
    print("refused:", e)
summary = onnx_lookahead.rewrite({str(ort_input(ADAMW))!r}, {str(tmp_path / 'auto')!r})
print("notes:", summary["notes"][0])
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    res = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    refused, note = res.stdout.splitlines()
    assert refused == (
        f"refused: cannot rewrite {ort_input(ADAMW)}: invalid option: writing the ORT format (--ort-format, "
        "ort_format=True) needs ONNX Runtime's training API (onnxruntime-training-cpu 1.19.2), which is not "
        'installed: pip install "onnx-lookahead[ort]"')
    assert note.startswith("notes: ORT-format copies not written: writing the ORT format"), note
    assert not (tmp_path / "forced").exists()
    assert ort_files(tmp_path / "auto") == ["optimizer_model.ort", "optimizer_model.required_operators.config"]


def test_a_prefixed_set_gets_prefixed_names(ort_input, tmp_path):
    """generate_artifacts(prefix="m_") names every file with the prefix: so does the conversion,
    the set's list included, and ORT trains from the prefixed .ort models."""
    src = tmp_path / "prefixed"
    src.mkdir()
    for name in os.listdir(ort_input(SGD_CFG)):
        (src / f"m_{name}").write_bytes((ort_input(SGD_CFG) / name).read_bytes())
    summary = onnx_lookahead.rewrite(src, tmp_path / "out")
    assert summary["ort_format"] == [f"m_{n}" for n in ORT_FILES] == ort_files(tmp_path / "out")
    from lookahead_testkit.ort import CheckpointState, Module, Optimizer
    d = tmp_path / "out"
    state = CheckpointState.load_checkpoint(str(d / "m_checkpoint"))
    module = Module(str(d / "m_training_model.ort"), state, str(d / "m_eval_model.ort"))
    optimizer = Optimizer(str(d / "m_optimizer_model.ort"), module)
    module.train()
    x, target = SPEC.schedule(1)[0][0]
    assert np.isfinite(float(module(x, target)))
    optimizer.step()
