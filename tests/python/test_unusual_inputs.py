"""Whenever the tool accepts an input, its output is valid; whenever it refuses, it refuses cleanly.

One parametrized test over a table of valid but unusual inputs (issue 7): float16 / double /
bfloat16 / mixed weights, nested subgraphs, external data, unusual names, IR versions and opsets,
every optimizer, and ORT artifacts with the same kinds of oddities (lookahead_testkit/unusual.py
builds them). Every input is checked to be valid first: onnx.checker (full) and, for training_info,
every concatenated graph ++ algorithm; the reference runtime or stock ORT trains the original.

Each case states what a user expects:
- "accept": exit 0, and every output model passes onnx.checker.check_model(full_check=True) (for
  training_info also every graph ++ algorithm, initialization graph and binding, via
  training_info_runtime.check_training_model), every checkpoint loads with
  CheckpointState.load_checkpoint, `inspect --format json` reports k, alpha and exactly the
  expected parameters with Lookahead; the output trains k+1 steps where the original does
  (ORT: the stock loop, compared with the original artifacts plus a host-side sync; training_info:
  the reference runtime, compared with the original up to and including the first sync);
- "refuse": non-zero exit, exactly one `error:` line on stderr, no output and no leftovers.
In both cases the input is unchanged, byte for byte.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import onnx
import pytest

import tinfo_models as tm
from onnx_lookahead import training_info as rt
from lookahead_testkit import unusual as u
from lookahead_testkit import zoo
from lookahead_testkit.model import TANH_MLP
from lookahead_testkit.ort import CheckpointState, Module, Optimizer
from lookahead_testkit.reference import ADAMW, SGD_CFG

K, ALPHA = 2, 0.5
STEPS = K + 1
ORT_TOL = 1e-5
CHECKPOINT_MAGIC = b"ODTC"  # the FlatBuffers file identifier of ORT training checkpoints


@dataclass(frozen=True)
class Case:
    id: str
    expect: str  # "accept" | "refuse"
    why: str  # why a user expects that
    # training_info: the input, how it is stored, where the output goes, which backend runs it
    ti: Optional[Callable[[], u.TiInput]] = None
    external: Optional[str] = None  # location of the weights' external data file
    external_algorithm: Optional[str] = None  # location of the algorithm initializers' data file
    out_dir: str = "same"  # "same" folder as the input, or "other"
    file_names: tuple = ("model.onnx", "rewritten model.onnx")  # input, output
    backend: Optional[str] = "ort"  # None: no runtime can run the ORIGINAL (checker only)
    sync_check: bool = True  # compare the first sync with the original run (else: only run it)
    # ORT artifacts: the zoo model (or any object with schedule/eval_batch) and how to generate
    model: object = None
    opt: object = None
    generate: dict = field(default_factory=dict)
    make_artifacts: Optional[Callable[[Path], Path]] = None
    post: Optional[Callable[[Path], None]] = None  # changes the generated artifacts directory
    trains: bool = True  # False: stock ORT cannot train the ORIGINAL either
    wrapped: tuple = ()  # ORT: trainable parameters that get Lookahead
    frozen: tuple = ()  # ORT: parameters reported without Lookahead

    @property
    def kind(self) -> str:
        return "ti" if self.ti is not None else "ort"


def ti(id, build, expect="accept", why="valid input: the rewrite must work", **kw):
    return Case(id, expect, why, ti=build, **kw)


def ort(id, model, opt, expect="accept", why="valid artifacts: the rewrite must work", **kw):
    if model is not None and hasattr(model, "trainable"):
        kw.setdefault("wrapped", model.trainable)
        kw.setdefault("frozen", model.frozen)
    return Case(id, expect, why, model=model, opt=opt, **kw)


# ---------------------------------------------------------------------------------- the table
def _unusual(fn, node=None, **kw):
    """ti_linear(**kw) with every value name renamed by fn, every node name by node(old, output)."""
    return lambda: u.rename_all(u.ti_linear(**kw), fn, node)


INJECTED_WORDS = {"W": "step", "B": "slow", "X": "k", "Y": "alpha", "loss": "one", "pred": "sync",
                  "W_new": "lookahead", "B_new": "fast", "lr": "zero", "mm": "phase", "diff": "count",
                  "two": "period", "g_pred": "is_sync", "W_init": "step_initial", "B_init": "then"}


TI_CASES = [  # backend: the reference runtime's backend that trains the input (None: none can)
    ti("ti_float16", lambda: u.ti_linear(dtypes=(u.H,))),
    ti("ti_double", lambda: u.ti_linear(dtypes=(u.D,))),
    ti("ti_bfloat16", lambda: u.ti_linear(dtypes=(u.BF,)), backend=None),  # neither runtime runs bfloat16 state
    ti("ti_mixed_float_double", lambda: u.ti_linear(dtypes=(u.F, u.D))),
    ti("ti_mixed_float_double_reference_backend", lambda: u.ti_linear(dtypes=(u.F, u.D)), backend="reference"),
    ti("ti_mixed_float16_bfloat16_float", lambda: u.ti_linear(dtypes=(u.H, u.BF, u.F)), backend=None),
    # onnx.reference's Adam returns float32 for double inputs, so only the ORT backend runs this
    ti("ti_double_adam", lambda: u.ti_linear(dtypes=(u.D,), optimizer="adam")),
    ti("ti_momentum", lambda: u.ti_from_spec(tm.single_model("momentum"))),
    ti("ti_adam", lambda: u.ti_from_spec(tm.single_model("adam", init_optimizer_state=True))),
    ti("ti_adagrad", lambda: u.ti_from_spec(tm.single_model("adagrad"))),
    ti("ti_two_training_info_entries", lambda: u.ti_from_spec(tm.two_algorithm_model(coupled=False))),
    ti("ti_no_initialization", lambda: u.ti_linear(initialization=False)),
    ti("ti_initialization_without_bindings", u.initialization_without_bindings),
    ti("ti_150_weights", lambda: u.ti_linear(decayed=((2,),) * 148)),
    ti("ti_file_names_without_extension", lambda: u.ti_linear(), file_names=("model", "out.pb"),
       why="the format is detected from the content (README)"),
    ti("ti_nested_if_in_algorithm", lambda: u.ti_linear(nested_if=True)),
    ti("ti_loop_in_algorithm", lambda: u.ti_linear(loop=True)),  # onnx.reference runs this Loop wrong
    ti("ti_if_in_main_graph", lambda: u.ti_linear(if_main=True)),
    ti("ti_subgraphs_float16", lambda: u.ti_linear(dtypes=(u.H,), nested_if=True, loop=True, if_main=True)),
    ti("ti_weight_updated_in_main_graph", lambda: u.ti_linear(update_in_main=True)),
    ti("ti_rank0_and_zero_size_weights", lambda: u.ti_linear(decayed=((), (0,), (2, 0, 3), (1,)))),
    ti("ti_weights_also_graph_inputs", lambda: u.ti_linear(weights_as_inputs=True, update_in_main=True)),
    ti("ti_update_by_local_function", lambda: u.ti_linear(function_update=True)),
    ti("ti_typed_data_fields", lambda: u.typed_fields(u.ti_linear(dtypes=(u.F, u.D, u.H), int_state=True))),
    ti("ti_typed_data_fields_bfloat16", lambda: u.typed_fields(u.ti_linear(dtypes=(u.BF,))), backend=None),
    ti("ti_one_value_bound_to_two_weights", u.tied_update),
    ti("ti_weight_also_main_graph_output", u.weight_as_output),
    ti("ti_cross_entry_initialization", u.cross_entry_initialization, sync_check=False,
       why="valid; the first-sync values are not checked: README documents that a weight another "
           "entry initialises keeps its slow copy across initialize()"),
    ti("ti_int64_state_not_wrapped", lambda: u.ti_linear(int_state=True),
       why="an integer state variable is not a weight: accepted, and only the float weights wrapped"),
    *[ti(f"ti_ir{ir}_opset11", lambda ir=ir: u.ti_linear(opset=11, ir_version=ir)) for ir in (7, 8, 9, 10)],
    *[ti(f"ti_opset{o}", lambda o=o: u.ti_linear(opset=o, nested_if=True, loop=True, if_main=True))
      for o in range(10, 22)],
    # unusual names (every value name renamed; node names as stated)
    ti("ti_names_unicode", _unusual(lambda n: f"ü{n}✓ 名前")),
    ti("ti_names_spaces", _unusual(lambda n: f"my {n} tensor ")),
    ti("ti_names_slash_colon_dot", _unusual(lambda n: f"/model/layer.0/{n}:0", nested_if=True, loop=True)),
    ti("ti_names_json_specials", _unusual(lambda n: f'{n}"q\\b\t{{}}\n')),
    ti("ti_names_1000_chars", _unusual(lambda n: n + "_" + "x" * 1000)),
    ti("ti_names_lookahead_single_underscore", _unusual(lambda n: f"lookahead_{n}", if_main=True),
       why="only the prefix lookahead__ (two underscores) is reserved"),
    ti("ti_names_injected_words", _unusual(lambda n: INJECTED_WORDS.get(n, n), lambda old, out: out)),
    ti("ti_tensor_names_equal_node_names",
       _unusual(lambda n: n, lambda old, out: {"mm": "W", "pred": "B", "diff": "Y", "sq": "X"}.get(out, out))),
    ti("ti_names_unicode_momentum",
       lambda: u.rename_all(u.ti_from_spec(tm.single_model("momentum")), lambda n: f"Σ/{n}.ω")),
    # external data: one file, every main-graph initializer at its own offset
    ti("ti_external_same_folder", lambda: u.ti_linear(), external="weights.bin"),
    ti("ti_external_other_folder", lambda: u.ti_linear(), external="weights.bin", out_dir="other"),
    ti("ti_external_subfolder_same_folder", lambda: u.ti_linear(update_in_main=True), external="data/w 1.bin"),
    ti("ti_external_subfolder_other_folder", lambda: u.ti_linear(dtypes=(u.F, u.D)), external="data/w.bin",
       out_dir="other"),
    ti("ti_external_dot_segment", lambda: u.ti_linear(), external="./a/./w.bin", out_dir="other"),
    ti("ti_external_dotdot_inside_folder", lambda: u.ti_linear(), external="a/b/../w.bin", expect="refuse",
       why="documented (README): a location with `..` is refused, even one that stays inside the folder"),
    # the runtime reads external data of ModelProto.graph only, so it cannot run these inputs
    ti("ti_external_algorithm_state_same_folder", lambda: u.ti_linear(optimizer="momentum"), external="w.bin",
       external_algorithm="state/algo.bin", backend=None),
    ti("ti_external_algorithm_state_other_folder", lambda: u.ti_linear(optimizer="adam"), external="w.bin",
       external_algorithm="state/algo.bin", out_dir="other", backend=None),
    ti("ti_external_float16_unicode_other_folder",
       lambda: u.rename_all(u.ti_linear(dtypes=(u.H,)), lambda n: f"ü{n}"), external="dätä/wéights.bin",
       out_dir="other"),
    # refusals
    ti("ti_reserved_prefix", u.reserved(), "refuse", "lookahead__ names are reserved (README: name clash)"),
    ti("ti_reserved_prefix_newline_in_name", u.reserved(newline=True), "refuse",
       "reserved prefix; the error stays ONE line with line breaks (\\n, \\r) in the name"),
    ti("ti_opset9", lambda: u.ti_linear(opset=9), "refuse", "the injected Mod needs opset >= 10 (documented)"),
    ti("ti_no_float_weight", u.only_counter, "refuse", "nothing to wrap: no update of a float weight"),
]

_PYTORCH = ("encoder.layers.0.weight", "encoder.layers.0.bias", "a/b:0", "head.bias")
_UNICODE = ("gewicht.ä/β:0", "偏置 bias", "层 2/权重", "b 2 ✓")
_INJECTED = ("lookahead_step", "step", "slow", "lookahead_slow_W")
_NEAR = ("W.1", "W/1", "W:1", "W 1")
ORT_CASES = [
    ort("ort_pytorch_names_adamw", u.linear_model("pytorch", _PYTORCH), ADAMW),
    ort("ort_pytorch_names_sgd", u.linear_model("pytorch", _PYTORCH), SGD_CFG),
    ort("ort_unicode_names", u.linear_model("unicode", _UNICODE), SGD_CFG),
    ort("ort_long_parameter_name", u.linear_model("long", ("w" * 1000, "b1", "W2", "b2")), ADAMW),
    ort("ort_names_lookahead_single_underscore", u.linear_model("words", _INJECTED), SGD_CFG),
    ort("ort_names_equal_but_punctuation", u.linear_model("near", _NEAR), ADAMW),
    ort("ort_reserved_prefix", u.linear_model("reserved", ("lookahead__slow__W", "b1", "W2", "b2")), ADAMW,
        "refuse", "lookahead__ names are reserved (README: name clash)"),
    ort("ort_if_in_graph", zoo.IF_SIDE, SGD_CFG),
    ort("ort_loop_in_graph", u.LOOP_SIDE, ADAMW),
    ort("ort_float16_weight", u.cast_model("f16", u.H), ADAMW, trains=False,
        why="valid ONNX; stock ORT cannot load the original checkpoint (float16): the output must be "
            "as valid as the input"),
    ort("ort_double_weight", u.cast_model("f64", u.D), SGD_CFG, trains=False,
        why="valid ONNX; stock ORT has no double InPlaceAccumulatorV2: the output must be as valid"),
    ort("ort_prefix_adamw", zoo.FROZEN_LAST, ADAMW, generate={"prefix": "mnist_"}),
    ort("ort_prefix_sgd", zoo.ONE_TRAINABLE, SGD_CFG, generate={"prefix": "a b.ü_"}),
    *[ort(f"ort_opset{o}", u.opset_model(o), (ADAMW, SGD_CFG)[o % 2]) for o in range(11, 22)],
    ort("ort_all_frozen_but_one_adamw", u.all_frozen_but_one(), ADAMW),
    ort("ort_all_frozen_but_one_sgd", u.all_frozen_but_one(), SGD_CFG),
    ort("ort_checkpoint_data", TANH_MLP, ADAMW, make_artifacts=u.checkpoint_data_artifacts,
        wrapped=tuple(TANH_MLP.param_names), frozen=tuple(f"{p}.slow" for p in TANH_MLP.param_names)),
    ort("ort_without_eval_model", zoo.FROZEN_MIDDLE, ADAMW, post=u.without_eval,
        why="the eval model is optional (README)"),
    ort("ort_extra_files_and_folders", zoo.SHARED, SGD_CFG, post=u.extra_files,
        why="other files of the folder are copied unchanged (README)"),
    ort("ort_trained_checkpoint_with_optimizer_state_and_properties", zoo.EMBEDDING, ADAMW,
        post=u.trained(zoo.EMBEDDING, ADAMW), why="resuming a plain run with Lookahead"),
    ort("ort_nominal_checkpoint_beside", zoo.FROZEN_FIRST, SGD_CFG, generate={"nominal_checkpoint": True},
        why="generate_artifacts(nominal_checkpoint=True) writes both; each must fit the output models"),
]
CASES = TI_CASES + ORT_CASES
assert len({c.id for c in CASES}) == len(CASES)


# ------------------------------------------------------------------------------------ helpers
def _files(root: Path) -> dict:
    """relative path -> bytes of every file under root (or of root itself)."""
    if root.is_file():
        return {root.name: root.read_bytes()}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _is_checkpoint(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(8)[4:8] == CHECKPOINT_MAGIC


def _check_inspect(cli, path, fmt, flags):
    report = cli.inspect(path)
    assert report["format"] == fmt
    lookahead = {key: report["lookahead"][key] for key in ("k", "alpha")}
    assert lookahead == {"k": K, "alpha": pytest.approx(ALPHA)}, report["lookahead"]
    # Freshly rewritten: no step taken (training_info counts steps; ORT: cycle position 0).
    assert report["lookahead"].get("position", 0) == 0, report["lookahead"]
    assert report["lookahead"].get("sync_pending", False) is False, report["lookahead"]
    got = {p["name"]: p["lookahead"] for p in report["parameters"] if p["name"] in flags or p["lookahead"]}
    assert got == flags, f"inspect: parameters with Lookahead {got}, expected {flags}"


def _assert_refused(res, out: Path, new_entries: set):
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode != 0, f"expected a refusal, the tool accepted:\n{res.stdout}{res.stderr}"
    assert len(lines) == 1 and lines[0].startswith("error:"), f"expected one error line:\n{res.stderr!r}"
    assert not out.exists(), "a refused rewrite must not leave its output"
    assert not new_entries, f"a refused rewrite left {new_entries}"


# ---------------------------------------------------------------------------------- training_info
def _tol(array):
    eps = np.finfo(array.dtype).eps if array.dtype.kind == "f" else 0
    return 8 * eps * max(1.0, float(np.max(np.abs(array)))) if array.size else 0


def _ti_run(path, feeds, backend, what):
    """Train the model file `path` in the reference runtime, as its manual says (from the path):
    -> (state after initialize(), state after every step)."""
    try:
        session = rt.TrainingSession(str(path), backend=backend)
        session.initialize()
        start = session.state
        states = []
        for feed in feeds:
            session.step(feed)
            states.append(session.state)
    except Exception as error:  # noqa: BLE001 - the runtime and its backends raise many types
        pytest.fail(f"the reference runtime ({backend}) cannot train the {what}: {error}", pytrace=False)
    return start, states


def _assert_first_sync(case, inp: u.TiInput, original, rewritten):
    """Up to step k-1 the rewritten model trains exactly like the original; at step k every wrapped
    weight is init + alpha * (original_k - init), every other state variable the original's; step
    k+1 runs and is finite."""
    (start, orig), (start_rw, rew) = original, rewritten
    for name in start:
        np.testing.assert_array_equal(start_rw[name], start[name], err_msg=f"initialize(): {name}")
    moved = 0.0
    for t in range(1, K + 1):
        for name, value in orig[t - 1].items():
            got = rew[t - 1][name].astype(np.float64)
            want = value.astype(np.float64)
            if t == K and name in inp.wrapped:
                init = start[name].astype(np.float64)
                want = init + ALPHA * (want - init)
                moved = max(moved, float(np.max(np.abs(got - value.astype(np.float64)), initial=0)))
            assert np.max(np.abs(got - want), initial=0) <= _tol(value), f"step {t}: {name}"
    assert moved > 1e-3, "the rewritten model did not sync at step k"
    assert all(np.all(np.isfinite(v.astype(np.float64))) for v in rew[K].values())


def _run_ti(case: Case, cli, tmp_path: Path):
    inp = case.ti()
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    src = src_dir / case.file_names[0]
    if case.external_algorithm:
        inp = u.externalize_algorithm(inp, src_dir, case.external_algorithm)
    if case.external:
        u.save_external(inp.model, src, case.external)
        assert case.external in u.external_locations(src)
        assert len(set(u.external_locations(src)[case.external])) >= 2, "several tensors at several offsets"
    else:
        onnx.save(inp.model, str(src))
    # the input is valid: checker (full), and every graph ++ algorithm, initialization, binding
    onnx.checker.check_model(str(src), full_check=True)
    rt.check_training_model(u.load_resolved(src))
    out_parent = src_dir if case.out_dir == "same" else tmp_path / "other out"
    out_parent.mkdir(exist_ok=True)
    out = out_parent / case.file_names[1]
    before_in, before_out = _files(src_dir), set(p.name for p in out_parent.iterdir())

    res = cli.run("rewrite", src, "--output", out, "-k", K, "--alpha", ALPHA)
    after_in = _files(src_dir)
    assert {p: after_in.get(p) for p in before_in} == before_in, "the input changed"
    if case.out_dir != "same":
        assert set(after_in) == set(before_in), "files appeared beside the input"
    new_entries = set(p.name for p in out_parent.iterdir()) - before_out
    if case.expect == "refuse":
        _assert_refused(res, out, new_entries)
        return
    assert res.returncode == 0, f"refused a valid input ({res.returncode}):\n{res.stderr}"
    external = [x for x in (case.external, case.external_algorithm) if x and case.out_dir != "same"]
    allowed = {out.name} | {next(part for part in Path(x).parts if part != ".") for x in external}
    assert new_entries <= allowed, f"unexpected files beside the output: {new_entries - allowed}"

    onnx.checker.check_model(str(out), full_check=True)
    # every graph ++ algorithm (full check), initialization graph and binding, external data read in
    rt.check_training_model(u.load_resolved(out))
    if case.external:
        assert case.external in u.external_locations(out), "the weights stay external data"
    if case.external_algorithm:
        assert case.external_algorithm in u.external_locations(out), "the algorithm state stays external"
    _check_inspect(cli, out, "training-info", {w: True for w in inp.wrapped})
    if case.backend is not None:
        feeds = inp.feeds(STEPS)
        original = _ti_run(src, feeds, case.backend, "input")
        rewritten = _ti_run(out, feeds, case.backend, "output")
        if case.sync_check:
            _assert_first_sync(case, inp, original, rewritten)


# ------------------------------------------------------------------------------------------ ORT
def _view(tmp: Path, prefix: str, *directories: Path) -> Path:
    """A folder `tmp` with the unprefixed artifact names the stock loop opens, linked to the
    files of `directories`."""
    tmp.mkdir()
    for directory in directories:
        for name in ("training_model.onnx", "eval_model.onnx", "optimizer_model.onnx", "checkpoint", "checkpoint.data"):
            if (directory / f"{prefix}{name}").exists() and not (tmp / name).exists():
                (tmp / name).symlink_to(directory / f"{prefix}{name}")
    return tmp


def _stage(fn):
    try:
        return fn(), None
    except Exception as error:  # noqa: BLE001 - ORT raises its own types
        return None, error


def _properties(checkpoint: Path) -> dict:
    return dict(CheckpointState.load_checkpoint(str(checkpoint)).properties)


def _module(directory: Path, prefix: str, state):
    evaluate = directory / f"{prefix}eval_model.onnx"
    return Module(str(directory / f"{prefix}training_model.onnx"), state,
                  str(evaluate) if evaluate.exists() else None)


def _module_parameters(directory: Path, prefix: str, checkpoint: str) -> int:
    """Number of parameter elements of a Module over the directory's models and `checkpoint`."""
    return _module(directory, prefix, CheckpointState.load_checkpoint(str(directory / checkpoint))).get_parameters_size(False)


def _train_without_eval(directory: Path, prefix: str, lr: float, schedule) -> list:
    module = _module(directory, prefix, CheckpointState.load_checkpoint(str(directory / f"{prefix}checkpoint")))
    optimizer = Optimizer(str(directory / f"{prefix}optimizer_model.onnx"), module)
    optimizer.set_learning_rate(lr)
    module.train()
    losses = []
    for (batch,) in schedule:
        losses.append(float(module(*batch)))
        optimizer.step()
        module.lazy_reset_grad()
    return losses


def _run_ort(case: Case, cli, tmp_path: Path):
    src = tmp_path / "in"
    if case.make_artifacts:
        case.make_artifacts(src)
    else:
        zoo.generate(case.model, case.opt, src, **case.generate)
    if case.post:
        case.post(src)
    prefix = case.generate.get("prefix", "")
    for model in src.glob("*.onnx"):
        onnx.checker.check_model(str(model), full_check=True)
    for ckpt in (p for p in src.iterdir() if p.is_file() and _is_checkpoint(p)):
        if case.trains:
            CheckpointState.load_checkpoint(str(ckpt))
    out = tmp_path / "out"
    before_in, before_tmp = _files(src), set(p.name for p in tmp_path.iterdir())
    res = cli.run("rewrite", src, "--output", out, "-k", K, "--alpha", ALPHA)
    assert _files(src) == before_in, "the input changed"
    new_entries = set(p.name for p in tmp_path.iterdir()) - before_tmp - {"out"}
    if case.expect == "refuse":
        _assert_refused(res, out, new_entries)
        return
    assert res.returncode == 0, f"refused valid artifacts ({res.returncode}):\n{res.stderr}"
    assert not new_entries, f"leftovers beside the output: {new_entries}"
    rewritten = {f"{prefix}{n}" for n in ("training_model.onnx", "eval_model.onnx", "checkpoint", "checkpoint.data",
                                          "nominal_checkpoint")}
    after = _files(out)
    for name, data in before_in.items():  # the optimizer model and any other file: byte for byte
        if name not in rewritten:
            assert after.get(name) == data, f"{name} was not copied unchanged"

    for model in out.glob("*.onnx"):
        onnx.checker.check_model(str(model), full_check=True)
    checkpoints = sorted(p.name for p in out.iterdir() if p.is_file() and _is_checkpoint(p))
    assert f"{prefix}checkpoint" in checkpoints
    main = f"{prefix}checkpoint"
    for name in checkpoints:
        # every checkpoint loads; with the output's models it gives a Module with the same
        # parameters as the main checkpoint wherever the input's did with the input's models
        _, orig_error = _stage(lambda: CheckpointState.load_checkpoint(str(src / name)))
        _, error = _stage(lambda: CheckpointState.load_checkpoint(str(out / name)))
        if case.trains or orig_error is None:
            assert error is None, f"{name} does not load: {error}"
            got, recorded = _properties(out / name), {}
            for key in [k for k in got if k.startswith("onnx_lookahead.")]:
                recorded[key] = got.pop(key)
            assert got == _properties(src / name), f"{name}: properties changed"
            if name == main:  # the rewrite records itself in the checkpoint it extends
                assert recorded["onnx_lookahead.k"] == K, recorded
                assert recorded["onnx_lookahead.alpha"] == pytest.approx(ALPHA), recorded
        orig_size, _ = _stage(lambda: _module_parameters(src, prefix, name))
        if orig_size is not None and orig_size == _module_parameters(src, prefix, main):
            size, error = _stage(lambda: _module_parameters(out, prefix, name))
            want = _module_parameters(out, prefix, main)
            assert size == want, (f"{name} does not fit the output's models: a Module over it has "
                                  f"{size} parameter elements, over {main} {want} ({error})")
    flags = {**{n: True for n in case.wrapped}, **{n: False for n in case.frozen}}
    _check_inspect(cli, out, "ort-artifacts", flags)
    if not case.trains:
        return
    schedule, batch = case.model.schedule(STEPS), case.model.eval_batch()
    evals = src if (src / f"{prefix}eval_model.onnx").exists() else tmp_path / "eval"
    ref = zoo.host_lookahead_run(_view(tmp_path / "view_in", prefix, src, evals), case.opt.lr, schedule, batch, K, ALPHA)
    if evals == src:
        run = zoo.rewritten_run(_view(tmp_path / "view_out", prefix, out), case.opt.lr, schedule, batch)
        zoo.assert_runs_close(f"{case.id}: rewritten vs original + host sync", run, ref, ORT_TOL)
    else:  # the stock loop without an eval model: the training losses
        got = _train_without_eval(out, prefix, case.opt.lr, schedule)
        np.testing.assert_allclose(got, [float(step[0][0]) for step in ref.outputs], rtol=0, atol=ORT_TOL)


# ----------------------------------------------------------------------------------------- test
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.id}-{c.expect}")
def test_unusual_input(case, lookahead_cli, tmp_path):
    (_run_ti if case.kind == "ti" else _run_ort)(case, lookahead_cli, tmp_path)
