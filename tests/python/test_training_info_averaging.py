"""End-to-end: `rewrite --scheme ema|swa` on ModelProto.training_info models.

Each test builds a training_info model (tinfo_models: SGD, Momentum standard/nesterov, Adam,
Adagrad, several weights per optimizer node, two TrainingInfoProto entries, with and without an
initialization), rewrites it with the console script, trains it in the package's reference
runtime (onnx_lookahead.training_info: ONNX Runtime and onnx.reference backends) and compares at
every step with NumPy (ctx: "Semantics"):

- training is the inner optimizer's, untouched: the weights and losses equal those of the plain
  model in the same runtime (bit for bit) and the NumPy plain reference (tinfo_reference);
- EMA: the average starts as the initial weights; after step t with t % N == 0,
  ema <- D*ema + (1-D)*p_t (D and 1-D rounded to float32, as the graph holds them);
- SWA: after step t >= S with (t-S) % C == 0, n <- n+1, w = float32(1/n), swa <- (1-w)*swa + w*p_t;
  the sample count is per TrainingInfoProto entry, as is the step counter;
- run_inference() reads the averaged weights (the record's eval_weights), weights="current" the
  current ones.

The averaged state is found through the rewrite's record (model metadata "onnx_lookahead.record":
parameters[].state[0], counters, shared), the documented place; nothing else about the names or
structure the rewrite adds is assumed. Every run also checks that the average differs from the
current weights (> 1e-4), so agreement proves something.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Optional

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import tinfo_models as tm
import tinfo_reference as ref
from onnx_lookahead import training_info as rt

DECAY, SWA_START, STEPS, ATOL, GAP = 0.8, 2, 9, 1e-5, 1e-4
RECORD_KEY = "onnx_lookahead.record"

MODELS = {
    "sgd_mlp": lambda: tm.single_model("sgd"),
    "sgd_linear_no_initialization": lambda: tm.single_model("sgd", network="linear", with_initialization=False),
    "momentum": lambda: tm.single_model("momentum"),
    "momentum_nesterov": lambda: tm.single_model("momentum", mode="nesterov"),
    "adam": lambda: tm.single_model("adam", init_optimizer_state=True),
    "adagrad": lambda: tm.single_model("adagrad"),
    "two_independent": lambda: tm.two_algorithm_model(coupled=False),
    "two_coupled": lambda: tm.two_algorithm_model(coupled=True),
}


@dataclass(frozen=True)
class Scheme:
    kind: str  # "ema" | "swa"
    every: int
    start: int = SWA_START  # SWA only

    def __str__(self) -> str:
        return f"{self.kind}-every{self.every}" + (f"-start{self.start}" if self.kind == "swa" else "")

    @property
    def flags(self) -> list:
        if self.kind == "ema":
            return ["--scheme", "ema", "--decay", DECAY, "--every", self.every]
        return ["--scheme", "swa", "--swa-start", self.start, "--every", self.every]

    @property
    def settings(self) -> dict:
        if self.kind == "ema":
            return {"decay": DECAY, "every": self.every}
        return {"swa_start": self.start, "every": self.every}

    def updates_after(self, t: int) -> bool:
        first = self.every if self.kind == "ema" else self.start
        return t >= first and (t - first) % self.every == 0


SCHEMES = [Scheme("ema", 1), Scheme("ema", 2), Scheme("swa", 1), Scheme("swa", 2)]


# NumPy reference of the average (training itself: tinfo_reference.plain_reference_run)


@dataclass
class Expected:
    weights: Dict[str, np.ndarray]  # current weights after the step (plain training)
    averaged: Dict[str, np.ndarray]
    samples: List[int]  # per TrainingInfoProto entry (SWA)
    losses: Dict[str, float]


def reference(spec, feeds, scheme: Scheme, initial=None, offsets=None) -> List[Expected]:
    """Plain training, and the average of each entry's weights on that entry's step count
    (``offsets``: an entry's count ahead of the session's steps)."""
    initial = initial if initial is not None else spec.initial_weights
    offsets = offsets or [0] * len(spec.algorithms)
    plain = ref.plain_reference_run(spec, feeds, initial_weights=initial)
    average = {w: np.asarray(v, np.float64).copy() for w, v in initial.items()}
    samples = [0] * len(spec.algorithms)
    rest = float(np.float32(1 - DECAY))
    out = []
    for t, record in enumerate(plain, start=1):
        for index, algorithm in enumerate(spec.algorithms):
            if not scheme.updates_after(t + offsets[index]):
                continue
            if scheme.kind == "ema":  # lerp, as the graph computes it
                for w in algorithm.weights:
                    average[w] = average[w] + rest * (record.weights[w] - average[w])
                continue
            samples[index] += 1
            take = float(np.float32(1) / np.float32(samples[index]))
            keep = float(np.float32(1) - np.float32(take))
            for w in algorithm.weights:
                average[w] = keep * average[w] + take * record.weights[w]
        out.append(Expected(record.weights, {w: v.copy() for w, v in average.items()}, list(samples), record.losses))
    return out


def predictions(spec, weights, x) -> Dict[str, np.ndarray]:
    return {head.pred: ref.forward(head, weights, x)[head.pred] for head in spec.heads}


# Rewriting, the record, running


def rewrite(cli, spec, tmp_path, scheme: Scheme, name: str = "rewritten") -> onnx.ModelProto:
    source, out = tmp_path / "model.onnx", tmp_path / f"{name}.onnx"
    onnx.save(spec.model, str(source))
    cli.run_ok("rewrite", source, "--output", out, *scheme.flags)
    return onnx.load(str(out))


def record_of(model: onnx.ModelProto) -> dict:
    values = [p.value for p in model.metadata_props if p.key == RECORD_KEY]
    assert len(values) == 1, f"the model carries {len(values)} {RECORD_KEY}"
    return json.loads(values[0])


def entry_of(model: onnx.ModelProto, name: str) -> int:
    """The TrainingInfoProto whose algorithm holds (and binds) the state tensor ``name``."""
    holders = [i for i, info in enumerate(model.training_info)
               if any(t.name == name for t in info.algorithm.initializer)
               and any(b.key == name for b in info.update_binding)]
    assert len(holders) == 1, f"{name} is held by entries {holders}"
    return holders[0]


@dataclass
class Layout:
    """What the record says about the averaged state."""

    averaged: Dict[str, str]  # weight -> its average's state tensor
    counters: List[str]  # per entry, in entry order
    samples: List[str]  # per entry (SWA), in entry order

    @classmethod
    def of(cls, model: onnx.ModelProto, spec, scheme: Scheme) -> "Layout":
        rec = record_of(model)
        assert rec["scheme"] == scheme.kind and rec["settings"] == scheme.settings, rec
        assert rec["eval_weights"] == "averaged", rec
        averaged = {p["name"]: p["state"][0] for p in rec["parameters"]}
        assert set(averaged) == set(spec.weight_names)
        counters = sorted(rec["counters"], key=lambda c: entry_of(model, c))
        samples = sorted(rec.get("shared", []), key=lambda s: entry_of(model, s))
        n = len(spec.algorithms)
        assert [entry_of(model, c) for c in counters] == list(range(n)), "one step counter per entry"
        if scheme.kind == "swa":
            assert [entry_of(model, s) for s in samples] == list(range(n)), "one sample count per entry"
        else:
            assert samples == []
        return cls(averaged, counters, samples)


@dataclass
class Observed:
    losses: Dict[str, float]
    weights: Dict[str, np.ndarray]
    averaged: Dict[str, np.ndarray]
    counters: List[int]
    samples: List[float]
    eval_default: Dict[str, np.ndarray]
    eval_current: Dict[str, np.ndarray]


def observe(session, spec, layout: Optional[Layout], outputs, eval_x) -> Observed:
    state = session.state
    return Observed(
        losses={name: float(outputs[name]) for name in spec.losses},
        weights={w: state[w] for w in spec.weight_names},
        averaged={w: state[layout.averaged[w]] for w in spec.weight_names} if layout else {},
        counters=[int(state[c]) for c in layout.counters] if layout else [],
        samples=[float(np.asarray(state[s]).reshape(-1)[0]) for s in layout.samples] if layout else [],
        eval_default=session.run_inference({"X": eval_x}) if layout else {},
        eval_current=session.run_inference({"X": eval_x}, weights="current"),
    )


def train(session, spec, layout, feeds, eval_x) -> List[Observed]:
    return [observe(session, spec, layout, session.step(feed), eval_x) for feed in feeds]


def data(spec, steps: int = STEPS):
    return tm.batches(spec, steps), tm.batches(spec, 1, batch=16, seed=321)[0]["X"]


@lru_cache(maxsize=None)
def plain_runtime(name: str, backend: str, steps: int) -> tuple:
    """The un-rewritten model trained from initialize() in the same runtime (per step)."""
    spec = MODELS[name]()
    feeds, eval_x = data(spec, steps)
    session = rt.TrainingSession(spec.model, backend=backend)
    session.initialize()
    return tuple(train(session, spec, None, feeds, eval_x))


def assert_follows(spec, observed: List[Observed], expected: List[Expected], scheme: Scheme,
                   eval_x, baseline=None, first_step: int = 1, offsets=None) -> None:
    """Every step: training untouched, the average, the counters and samples, both evaluations."""
    assert len(observed) == len(expected)
    offsets = offsets or [0] * len(spec.algorithms)
    gaps = []
    for step, (got, want) in enumerate(zip(observed, expected), start=first_step):
        at = f"step {step}"
        for w in spec.weight_names:
            np.testing.assert_allclose(got.weights[w], want.weights[w], rtol=0, atol=ATOL, err_msg=f"{at}: {w}")
            np.testing.assert_allclose(got.averaged[w], want.averaged[w], rtol=0, atol=ATOL,
                                       err_msg=f"{at}: average of {w}")
        for name, value in want.losses.items():
            assert abs(got.losses[name] - value) <= ATOL, f"{at}: {name} {got.losses[name]} != {value}"
        assert got.counters == [step + o for o in offsets], f"{at}: step counters {got.counters}"
        if scheme.kind == "swa":
            assert got.samples == [float(n) for n in want.samples], f"{at}: samples {got.samples} != {want.samples}"
        for pred, value in predictions(spec, want.averaged, eval_x).items():
            np.testing.assert_allclose(got.eval_default[pred], value, rtol=0, atol=ATOL,
                                       err_msg=f"{at}: run_inference() (averaged) {pred}")
        for pred, value in predictions(spec, want.weights, eval_x).items():
            np.testing.assert_allclose(got.eval_current[pred], value, rtol=0, atol=ATOL,
                                       err_msg=f"{at}: run_inference(weights='current') {pred}")
        gaps.append(max(np.abs(got.averaged[w] - got.weights[w]).max() for w in spec.weight_names))
        previous = observed[step - first_step - 1].averaged if step > first_step else None
        _assert_one_update(spec, scheme, got, previous, step, offsets)
    if baseline is not None:  # the plain model in the same runtime: training is untouched, bit for bit
        for step, (got, plain) in enumerate(zip(observed, baseline), start=first_step):
            for w in spec.weight_names:
                np.testing.assert_array_equal(got.weights[w], plain.weights[w], err_msg=f"step {step}: {w} vs plain")
            assert got.losses == plain.losses, f"step {step}: losses {got.losses} != plain {plain.losses}"
            for pred in plain.eval_current:
                np.testing.assert_array_equal(got.eval_current[pred], plain.eval_current[pred],
                                              err_msg=f"step {step}: current eval vs plain")
    assert gaps[-1] > GAP, f"average and current weights agree ({gaps}): the test would prove nothing"
    last = observed[-1]
    eval_gap = max(np.abs(last.eval_default[p] - last.eval_current[p]).max() for p in last.eval_default)
    assert eval_gap > GAP, f"averaged and current evaluation agree ({eval_gap})"


def _assert_one_update(spec, scheme: Scheme, got: Observed, previous, step: int, offsets) -> None:
    """The step's update from the runtime's own previous average and weights, in float32 as the
    graph computes it (ctx: bit for bit or within 1e-6); SWA's first sample is the weight exactly."""
    for index, algorithm in enumerate(spec.algorithms):
        count = step + offsets[index]
        if not scheme.updates_after(count):
            if previous is not None:
                for w in algorithm.weights:
                    np.testing.assert_array_equal(got.averaged[w], previous[w], err_msg=f"step {step}: {w} moved")
            continue
        if scheme.kind == "swa" and got.samples[index] == 1.0:
            for w in algorithm.weights:
                np.testing.assert_array_equal(got.averaged[w], got.weights[w], err_msg=f"step {step}: first sample {w}")
            continue
        if previous is None:
            continue
        for w in algorithm.weights:
            before, now = previous[w].astype(np.float32), got.weights[w].astype(np.float32)
            if scheme.kind == "ema":  # lerp: ema + (1 - D) * (p - ema)
                want = before + np.float32(1 - DECAY) * (now - before)
            else:
                take = np.float32(1) / np.float32(got.samples[index])
                want = (np.float32(1) - take) * before + take * now
            np.testing.assert_allclose(got.averaged[w], want, rtol=0, atol=1e-6, err_msg=f"step {step}: update of {w}")


def start(model, spec, scheme, backend="ort", initialize=True):
    rt.check_training_model(model)
    session = rt.TrainingSession(model, backend=backend)
    assert session.eval_weights == "averaged"
    if initialize:
        session.initialize()
    return session, Layout.of(model, spec, scheme)


# 1. Every update kind, both backends


@pytest.mark.parametrize("scheme", SCHEMES, ids=str)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_average_follows_the_reference_on_ort(name, scheme, lookahead_cli, tmp_path):
    spec = MODELS[name]()
    feeds, eval_x = data(spec)
    session, layout = start(rewrite(lookahead_cli, spec, tmp_path, scheme), spec, scheme)
    assert_follows(spec, train(session, spec, layout, feeds, eval_x), reference(spec, feeds, scheme), scheme,
                   eval_x, baseline=plain_runtime(name, "ort", STEPS))


@pytest.mark.parametrize("scheme", [Scheme("ema", 2), Scheme("swa", 1)], ids=str)
@pytest.mark.parametrize("name", ["adam", "two_coupled", "momentum_nesterov"])
def test_average_follows_the_reference_on_the_onnx_reference_backend(name, scheme, lookahead_cli, tmp_path):
    spec = MODELS[name]()
    feeds, eval_x = data(spec, 6)
    session, layout = start(rewrite(lookahead_cli, spec, tmp_path, scheme), spec, scheme, backend="reference")
    assert_follows(spec, train(session, spec, layout, feeds, eval_x), reference(spec, feeds, scheme), scheme,
                   eval_x, baseline=plain_runtime(name, "reference", 6))


# 2. Two TrainingInfoProto entries: a counter and a sample count each


@pytest.mark.parametrize("scheme", [Scheme("swa", 2), Scheme("ema", 2)], ids=str)
@pytest.mark.parametrize("name", ["two_independent", "two_coupled"])
def test_each_entry_counts_its_own_steps_and_samples(name, scheme, lookahead_cli, tmp_path):
    """Entry 1's counter is moved one step ahead after initialize(): its updates (and SWA samples)
    follow its own count, entry 0's follow the session's steps."""
    spec = MODELS[name]()
    feeds, eval_x = data(spec)
    session, layout = start(rewrite(lookahead_cli, spec, tmp_path, scheme), spec, scheme)
    assert len(layout.counters) == 2 and len(layout.samples) == (2 if scheme.kind == "swa" else 0)
    session.set_state({layout.counters[1]: np.array(1, np.int64)})
    offsets = [0, 1]
    expected = reference(spec, feeds, scheme, offsets=offsets)
    if scheme.kind == "swa":
        assert any(e.samples[0] != e.samples[1] for e in expected), "the entries' sample counts never differ"
    unshifted = reference(spec, feeds, scheme)
    assert max(np.abs(a.averaged[w] - b.averaged[w]).max()
               for a, b in zip(expected, unshifted) for w in spec.algorithms[1].weights) > GAP, "the shift changes nothing"
    observed = train(session, spec, layout, feeds, eval_x)
    assert_follows(spec, observed, expected, scheme, eval_x, baseline=plain_runtime(name, "ort", STEPS),
                   offsets=offsets)


# 3. Save and resume; 4. re-initialisation

RESUME_SCHEMES = [Scheme("ema", 3), Scheme("swa", 3, start=2)]


@pytest.mark.parametrize("scheme", RESUME_SCHEMES, ids=str)
@pytest.mark.parametrize("name", ["adam", "two_independent"])
def test_a_model_saved_mid_interval_resumes_the_trajectory(name, scheme, lookahead_cli, tmp_path):
    """Saved after 7 steps (EMA every 3: updates 3, 6, next 9; SWA from 2 every 3: samples 2, 5,
    next 8), a new session on the saved file continues to step 11 on the reference trajectory."""
    spec = MODELS[name]()
    feeds, eval_x = data(spec, 11)
    expected = reference(spec, feeds, scheme)
    session, layout = start(rewrite(lookahead_cli, spec, tmp_path, scheme), spec, scheme)
    observed = train(session, spec, layout, feeds[:7], eval_x)
    saved = tmp_path / "saved.onnx"
    onnx.save(session.to_model(), str(saved))
    resumed = rt.TrainingSession(str(saved), backend="ort")
    assert resumed.eval_weights == "averaged"
    state = resumed.state
    assert [int(state[c]) for c in layout.counters] == [7] * len(spec.algorithms)
    if scheme.kind == "swa":
        assert [float(state[s].reshape(-1)[0]) for s in layout.samples] == [2.0] * len(spec.algorithms)
    for w in spec.weight_names:  # the loaded average is the saved one, before any step
        np.testing.assert_allclose(state[layout.averaged[w]], expected[6].averaged[w], rtol=0, atol=ATOL)
    observed += train(resumed, spec, layout, feeds[7:], eval_x)
    assert_follows(spec, observed, expected, scheme, eval_x)
    if scheme.kind == "swa":
        assert observed[-1].samples == [4.0] * len(spec.algorithms)  # samples 8 and 11 after the resume


@pytest.mark.parametrize("scheme", [Scheme("ema", 2), Scheme("swa", 1)], ids=str)
@pytest.mark.parametrize("name", ["adam", "momentum", "two_independent", "sgd_linear_no_initialization"])
def test_initialize_restarts_the_average(name, scheme, lookahead_cli, tmp_path):
    """After training, initialize() (the entries' initialization, where they have one) puts the
    average back at the initial weights, the counters and SWA's sample counts at 0; training
    then follows the reference from the start."""
    spec = MODELS[name]()
    feeds, eval_x = data(spec)
    session, layout = start(rewrite(lookahead_cli, spec, tmp_path, scheme), spec, scheme)
    train(session, spec, layout, feeds[:5], eval_x)
    session.initialize()
    state = session.state
    if name != "sgd_linear_no_initialization":  # the initialization's values, not the initializers'
        gap = max(np.abs(spec.initial_weights[w] - spec.initializer_weights[w]).max() for w in spec.weight_names)
        assert gap > GAP
    for w in spec.weight_names:
        np.testing.assert_array_equal(state[w], spec.initial_weights[w], err_msg=w)
        np.testing.assert_array_equal(state[layout.averaged[w]], spec.initial_weights[w], err_msg=f"average of {w}")
    assert [int(state[c]) for c in layout.counters] == [0] * len(spec.algorithms)
    assert [float(state[s].reshape(-1)[0]) for s in layout.samples] == [0.0] * len(layout.samples)
    assert_follows(spec, train(session, spec, layout, feeds, eval_x), reference(spec, feeds, scheme), scheme,
                   eval_x, baseline=plain_runtime(name, "ort", STEPS))


@pytest.mark.parametrize("scheme", [Scheme("ema", 1), Scheme("swa", 2)], ids=str)
def test_without_initialize_the_average_starts_at_the_initializers(scheme, lookahead_cli, tmp_path):
    """A session that never runs initialize() trains from the stored initializers; so does the average."""
    spec = MODELS["adam"]()
    feeds, eval_x = data(spec)
    session, layout = start(rewrite(lookahead_cli, spec, tmp_path, scheme), spec, scheme, initialize=False)
    expected = reference(spec, feeds, scheme, initial=spec.initializer_weights)
    assert_follows(spec, train(session, spec, layout, feeds, eval_x), expected, scheme, eval_x)


# 5. finalize


UNTRAINED = [(name, [Scheme("ema", 2), Scheme("swa", 1)][i % 2]) for i, name in enumerate(sorted(MODELS))]


@pytest.mark.parametrize("name,scheme", UNTRAINED, ids=[f"{n}-{s}" for n, s in UNTRAINED])
def test_finalize_of_an_untrained_rewrite_gives_back_the_model(name, scheme, lookahead_cli, tmp_path):
    spec = MODELS[name]()
    rewrite(lookahead_cli, spec, tmp_path, scheme)
    back = tmp_path / "back.onnx"
    lookahead_cli.run_ok("finalize", tmp_path / "rewritten.onnx", "--output", back)
    assert back.read_bytes() == (tmp_path / "model.onnx").read_bytes()


@pytest.mark.parametrize("scheme", [Scheme("ema", 2), Scheme("swa", 2)], ids=str)
@pytest.mark.parametrize("name", ["adam", "two_independent"])
def test_finalize_of_a_trained_model_takes_the_chosen_weights(name, scheme, lookahead_cli, tmp_path):
    """Trained 5 steps (mid-interval) and saved; finalize --weights current|averaged|(default =
    averaged) gives the plain model with those weights (and the trained optimizer state); the
    plain model at the current weights trains on along the plain reference."""
    import onnx_lookahead

    spec = MODELS[name]()
    feeds, eval_x = data(spec)
    expected = reference(spec, feeds, scheme)
    session, layout = start(rewrite(lookahead_cli, spec, tmp_path, scheme), spec, scheme)
    train(session, spec, layout, feeds[:5], eval_x)
    trained = tmp_path / "trained.onnx"
    onnx.save(session.to_model(), str(trained))
    state = session.state
    gap = max(np.abs(state[w] - state[layout.averaged[w]]).max() for w in spec.weight_names)
    assert gap > GAP, f"current and averaged weights agree ({gap})"
    original_names = {t.name for t in spec.model.graph.initializer}
    for choice in ("current", "averaged", None):
        out = tmp_path / f"plain_{choice}.onnx"
        lookahead_cli.run_ok("finalize", trained, "--output", out, *(["--weights", choice] if choice else []))
        plain = onnx.load(str(out))
        onnx.checker.check_model(plain, full_check=True)
        assert not any(p.key == RECORD_KEY for p in plain.metadata_props)
        values = {t.name: numpy_helper.to_array(t) for t in plain.graph.initializer}
        assert set(values) == original_names, sorted(set(values) ^ original_names)
        assert len(plain.training_info) == len(spec.model.training_info)
        for info, original in zip(plain.training_info, spec.model.training_info):
            for field in ("update_binding", "initialization_binding"):
                assert [(b.key, b.value) for b in getattr(info, field)] == \
                    [(b.key, b.value) for b in getattr(original, field)], field
            assert [t.name for t in info.algorithm.initializer] == [t.name for t in original.algorithm.initializer]
            for t in info.algorithm.initializer:  # optimizer state and counts as trained
                if t.name in state:
                    np.testing.assert_array_equal(numpy_helper.to_array(t), state[t.name], err_msg=t.name)
        for w in spec.weight_names:
            if choice == "current":
                want, exact = expected[4].weights[w], state[w]
            else:
                want, exact = expected[4].averaged[w], state[layout.averaged[w]]
            np.testing.assert_allclose(values[w], want, rtol=0, atol=ATOL, err_msg=f"{choice}: {w}")
            np.testing.assert_array_equal(values[w], exact, err_msg=f"{choice}: {w}")
        if choice == "current":  # the plain model trains on where the rewritten one stood
            resumed = rt.TrainingSession(str(out), backend="ort")
            for step, feed in enumerate(feeds[5:], start=6):
                resumed.step(feed)
                for w in spec.weight_names:
                    np.testing.assert_allclose(resumed.state[w], expected[step - 1].weights[w], rtol=0, atol=ATOL,
                                               err_msg=f"step {step}: {w}")
    report = onnx_lookahead.finalize(trained, tmp_path / "api.onnx")
    assert report["weights"] == "averaged", report
    assert (tmp_path / "api.onnx").read_bytes() == (tmp_path / "plain_None.onnx").read_bytes()


# 6. Refusals; 7. inspect

REFUSALS = {
    "ema_without_decay": ["--scheme", "ema"],
    "swa_without_swa_start": ["--scheme", "swa"],
    "ema_with_alpha": ["--scheme", "ema", "--decay", "0.8", "--alpha", "0.5"],
    "swa_with_inner_state": ["--scheme", "swa", "--swa-start", "2", "--inner-state", "reset"],
    "decay_above_one": ["--scheme", "ema", "--decay", "1.5"],
    "ema_every_zero": ["--scheme", "ema", "--decay", "0.8", "--every", "0"],
    "swa_every_zero": ["--scheme", "swa", "--swa-start", "2", "--every", "0"],
}


def _assert_refused(res, needle: Optional[str] = None) -> None:
    lines = res.stderr.strip().splitlines()
    assert res.returncode != 0, f"accepted: {res.stdout}{res.stderr}"
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert needle is None or needle in lines[0], lines[0]


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals(case, lookahead_cli, tmp_path):
    source, out = tmp_path / "model.onnx", tmp_path / "out.onnx"
    onnx.save(MODELS["momentum"]().model, str(source))
    _assert_refused(lookahead_cli.run("rewrite", source, "--output", out, *REFUSALS[case]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.parametrize("first,again", [
    (Scheme("ema", 1), ["--scheme", "swa", "--swa-start", "2"]),
    (Scheme("swa", 2), ["--scheme", "ema", "--decay", "0.9"]),
    (Scheme("swa", 1), ["-k", "3", "--alpha", "0.5"]),
], ids=["ema-then-swa", "swa-then-ema", "swa-then-lookahead"])
def test_a_rewritten_model_is_not_rewritten_again(first, again, lookahead_cli, tmp_path):
    rewrite(lookahead_cli, MODELS["adam"](), tmp_path, first)
    before = sorted(p.name for p in tmp_path.iterdir())
    _assert_refused(lookahead_cli.run("rewrite", tmp_path / "rewritten.onnx", "--output", tmp_path / "again.onnx",
                                      *again))
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("scheme,steps,to_update,samples", [
    (Scheme("swa", 3, start=2), 7, 1, 2.0),  # samples at 2 and 5, next at 8
    (Scheme("swa", 2, start=4), 1, 3, 0.0),  # before the first sample
    (Scheme("ema", 3), 7, 2, None),  # updates at 3 and 6, next at 9
], ids=["swa-mid-interval", "swa-before-start", "ema-mid-interval"])
def test_inspect_tells_where_a_saved_model_stands(scheme, steps, to_update, samples, lookahead_cli, tmp_path):
    spec = MODELS["momentum"]()
    feeds, eval_x = data(spec, steps)
    session, layout = start(rewrite(lookahead_cli, spec, tmp_path, scheme), spec, scheme)
    train(session, spec, layout, feeds, eval_x)
    saved = tmp_path / "saved.onnx"
    onnx.save(session.to_model(), str(saved))
    averaging = lookahead_cli.inspect(saved)["averaging"]
    assert averaging["scheme"] == scheme.kind and averaging["settings"] == scheme.settings, averaging
    assert averaging["steps_to_update"] == to_update, averaging
    if samples is None:
        assert not averaging.get("shared"), averaging
    else:
        assert averaging["shared"] == {"samples": samples}, averaging


# The recorded evaluation weights; a subset of the weights


def test_eval_weights_current_is_what_run_inference_and_finalize_then_read(lookahead_cli, tmp_path):
    """`--eval-weights current`: the record says so, run_inference() and finalize default to the
    current weights; weights="averaged" still reads the average."""
    scheme = Scheme("ema", 1)
    spec = MODELS["momentum"]()
    feeds, eval_x = data(spec, 4)
    source, out = tmp_path / "model.onnx", tmp_path / "rewritten.onnx"
    onnx.save(spec.model, str(source))
    lookahead_cli.run_ok("rewrite", source, "--output", out, *scheme.flags, "--eval-weights", "current")
    model = onnx.load(str(out))
    assert record_of(model)["eval_weights"] == "current"
    session = rt.TrainingSession(model, backend="ort")
    assert session.eval_weights == "current"
    session.initialize()
    for feed in feeds:
        session.step(feed)
    want = reference(spec, feeds, scheme)[-1]
    averaged = {p["name"]: p["state"][0] for p in record_of(model)["parameters"]}
    for what, got, weights in [("default", session.run_inference({"X": eval_x}), want.weights),
                               ("averaged", session.run_inference({"X": eval_x}, weights="averaged"), want.averaged)]:
        for pred, value in predictions(spec, weights, eval_x).items():
            np.testing.assert_allclose(got[pred], value, rtol=0, atol=ATOL, err_msg=f"{what}: {pred}")
    trained, plain = tmp_path / "trained.onnx", tmp_path / "plain.onnx"
    onnx.save(session.to_model(), str(trained))
    lookahead_cli.run_ok("finalize", trained, "--output", plain)
    values = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(plain)).graph.initializer}
    state = session.state
    for w in spec.weight_names:
        np.testing.assert_array_equal(values[w], state[w], err_msg=w)
        assert np.abs(state[w] - state[averaged[w]]).max() > GAP, w


@pytest.mark.parametrize("scheme", [Scheme("ema", 2), Scheme("swa", 1)], ids=str)
def test_a_subset_of_a_nodes_weights(scheme, lookahead_cli, tmp_path):
    """`--exclude 'B*'`: only W1 and W2 (of one Adam node) are averaged; evaluation reads their
    averages and the biases' current values; training is untouched."""
    spec = MODELS["adam"]()
    feeds, eval_x = data(spec)
    source, out = tmp_path / "model.onnx", tmp_path / "rewritten.onnx"
    onnx.save(spec.model, str(source))
    lookahead_cli.run_ok("rewrite", source, "--output", out, *scheme.flags, "--exclude", "B*")
    model = onnx.load(str(out))
    averaged = {p["name"]: p["state"][0] for p in record_of(model)["parameters"]}
    assert sorted(averaged) == ["W1", "W2"]
    session = rt.TrainingSession(model, backend="ort")
    session.initialize()
    expected = reference(spec, feeds, scheme)
    baseline = plain_runtime("adam", "ort", STEPS)
    for step, (feed, want, plain) in enumerate(zip(feeds, expected, baseline), start=1):
        session.step(feed)
        state = session.state
        for w in spec.weight_names:
            np.testing.assert_array_equal(state[w], plain.weights[w], err_msg=f"step {step}: {w}")
        for w in averaged:
            np.testing.assert_allclose(state[averaged[w]], want.averaged[w], rtol=0, atol=ATOL,
                                       err_msg=f"step {step}: average of {w}")
        mixed = {**want.weights, **{w: want.averaged[w] for w in averaged}}
        for pred, value in predictions(spec, mixed, eval_x).items():
            np.testing.assert_allclose(session.run_inference({"X": eval_x})[pred], value, rtol=0, atol=ATOL,
                                       err_msg=f"step {step}: {pred}")
    assert max(np.abs(state[averaged[w]] - state[w]).max() for w in averaged) > GAP
