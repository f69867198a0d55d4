"""Tests of the reference training_info runtime (`onnx_lookahead.training_info`, installed).

They pin three things the Lookahead end-to-end tests rely on: the runtime follows the format's
semantics (compared with an independent NumPy reference at every step), the two backends agree,
and the lowering of Momentum/Adam/Adagrad to standard operators matches onnx.reference on the raw
operators, including the branches (T == 0, Nesterov, regularization) that small models rarely hit.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import tinfo_models as tm
import tinfo_reference as ref
from onnx_lookahead import training_info as rt

ATOL = 1e-5
STEPS = 12

MODELS = {
    "sgd_linear_no_initialization": lambda: tm.single_model("sgd", network="linear", with_initialization=False),
    "sgd_mlp": lambda: tm.single_model("sgd"),
    "momentum": lambda: tm.single_model("momentum"),
    "momentum_nesterov": lambda: tm.single_model("momentum", mode="nesterov", norm_coefficient=0.05),
    "adam": lambda: tm.single_model("adam", init_optimizer_state=True),
    "adam_linear": lambda: tm.single_model("adam", network="linear", lr=0.05),
    "adagrad": lambda: tm.single_model("adagrad"),
    "two_independent": lambda: tm.two_algorithm_model(coupled=False),
    "two_coupled": lambda: tm.two_algorithm_model(coupled=True),
}


def _train(spec, backend, feeds, eval_feeds=None):
    """Run the runtime; per step: (algorithm outputs, weights, eval losses per label)."""
    session = rt.TrainingSession(spec.model, backend=backend)
    session.initialize()
    trace = []
    for feed in feeds:
        outputs = session.step(feed)
        state = session.state
        eval_losses = {}
        if eval_feeds is not None:
            predictions = session.run_inference({"X": eval_feeds["X"]})
            eval_losses = {
                head.label: ref.mse_from_predictions(predictions[head.pred], eval_feeds[head.label])
                for head in spec.heads
            }
        trace.append((outputs, {w: state[w] for w in spec.weight_names}, eval_losses))
    return session, trace


def _assert_matches_reference(spec, trace, records):
    assert len(trace) == len(records)
    for step, ((outputs, weights, eval_losses), record) in enumerate(zip(trace, records), start=1):
        for name in spec.weight_names:
            np.testing.assert_allclose(weights[name], record.weights[name], rtol=0, atol=ATOL, err_msg=f"step {step} {name}")
        for name, value in record.losses.items():
            assert abs(float(outputs[name]) - value) <= ATOL, f"step {step} {name}"
        for label, value in record.eval_losses.items():
            assert abs(eval_losses[label] - value) <= ATOL, f"step {step} eval {label}"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_builders_pass_the_full_check(name):
    rt.check_training_model(MODELS[name]().model)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_ort_backend_matches_numpy_reference_every_step(name):
    spec = MODELS[name]()
    feeds = tm.batches(spec, STEPS)
    eval_feeds = tm.batches(spec, 1, batch=16, seed=123)[0]
    records = ref.plain_reference_run(spec, feeds, eval_feeds)
    _, trace = _train(spec, "ort", feeds, eval_feeds)
    _assert_matches_reference(spec, trace, records)
    # The model must actually learn something, otherwise matching proves little.
    for head in spec.heads:
        before = ref.loss(head, {w: v.astype(np.float64) for w, v in spec.initial_weights.items()}, eval_feeds)
        assert records[-1].eval_losses[head.label] < before, head.label


def test_reference_backend_matches_numpy_reference():
    spec = MODELS["two_coupled"]()
    feeds = tm.batches(spec, 6)
    _, trace = _train(spec, "reference", feeds)
    _assert_matches_reference(spec, trace, ref.plain_reference_run(spec, feeds))


@pytest.mark.parametrize("name", ["momentum", "momentum_nesterov", "adam", "adagrad", "two_independent"])
def test_ort_and_reference_backends_agree(name):
    spec = MODELS[name]()
    feeds = tm.batches(spec, STEPS)
    sessions = [rt.TrainingSession(spec.model, backend=b) for b in ("ort", "reference")]
    for session in sessions:
        session.initialize()
    for feed in feeds:
        outputs = [s.step(feed) for s in sessions]
        for key in outputs[0]:
            np.testing.assert_allclose(outputs[0][key], outputs[1][key], rtol=0, atol=ATOL, err_msg=key)
        states = [s.state for s in sessions]
        assert set(states[0]) == set(states[1])
        for key in states[0]:  # weights, optimizer state and the update count
            assert states[0][key].dtype == states[1][key].dtype, key
            np.testing.assert_allclose(states[0][key], states[1][key], rtol=0, atol=ATOL, err_msg=key)


def test_state_starts_at_initializers_and_initialize_resets():
    spec = tm.single_model("adam", init_optimizer_state=True)
    session = rt.TrainingSession(spec.model)
    for w in spec.weight_names:  # pre-initialised from the same-name initializer
        np.testing.assert_array_equal(session.state[w], spec.initializer_weights[w])
    session.initialize()
    after_init = session.state
    for w in spec.weight_names:
        np.testing.assert_array_equal(after_init[w], spec.initial_weights[w])
    assert after_init["T"] == 0

    feeds = tm.batches(spec, 5)
    first = [session.step(f)["loss"] for f in feeds]
    assert session.state["T"] == 5
    assert not np.allclose(session.state["W1"], after_init["W1"])

    session.initialize()
    for key, value in after_init.items():
        np.testing.assert_array_equal(session.state[key], value, err_msg=key)
    second = [session.step(f)["loss"] for f in feeds]
    np.testing.assert_array_equal(first, second)


def test_saved_model_resumes_from_its_state(tmp_path):
    spec = tm.single_model("momentum")
    feeds = tm.batches(spec, 8)
    straight = rt.TrainingSession(spec.model)
    straight.initialize()
    for feed in feeds:
        straight.step(feed)

    first = rt.TrainingSession(spec.model)
    first.initialize()
    for feed in feeds[:3]:
        first.step(feed)
    path = tmp_path / "checkpoint.onnx"
    onnx.save(first.to_model(), str(path))
    resumed = rt.TrainingSession(str(path))  # no initialize(): continue from the initializers
    for feed in feeds[3:]:
        resumed.step(feed)
    for key, value in straight.state.items():
        np.testing.assert_array_equal(resumed.state[key], value, err_msg=key)


def test_sessions_are_built_once_not_per_step(monkeypatch):
    import onnxruntime

    built = []
    original = onnxruntime.InferenceSession

    def counting(*args, **kwargs):
        built.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", counting)
    spec = tm.two_algorithm_model(coupled=False)
    session = rt.TrainingSession(spec.model)
    count = len(built)
    assert count == 5  # 2 algorithms + 2 initializations + the inference graph
    session.initialize()
    for feed in tm.batches(spec, 4):
        session.step(feed)
        session.run_inference({"X": feed["X"]})
    assert len(built) == count


def _counter_model(value_from_main_graph: bool):
    """Smallest stateful model: a counter bound from an output of the main or algorithm graph."""
    one = onnx.numpy_helper.from_array(np.array(1.0, np.float32), "one")
    count = onnx.numpy_helper.from_array(np.array(0.0, np.float32), "count")
    graph_nodes = [helper.make_node("Mul", ["x", "count"], ["y"])]
    graph_outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])]
    algorithm_nodes = [helper.make_node("Identity", ["y"], ["y_seen"])]
    algorithm_outputs = [helper.make_tensor_value_info("y_seen", TensorProto.FLOAT, [])]
    if value_from_main_graph:
        graph_nodes.append(helper.make_node("Add", ["count", "one"], ["count_next"]))
        graph_outputs.append(helper.make_tensor_value_info("count_next", TensorProto.FLOAT, []))
    else:
        algorithm_nodes.append(helper.make_node("Add", ["count", "one"], ["count_next"]))
        algorithm_outputs.append(helper.make_tensor_value_info("count_next", TensorProto.FLOAT, []))
    graph = helper.make_graph(
        graph_nodes, "main", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [])], graph_outputs,
        initializer=[one, count],
    )
    algorithm = helper.make_graph(algorithm_nodes, "algorithm", [], algorithm_outputs)
    model = helper.make_model(graph, ir_version=tm.IR_VERSION, opset_imports=[helper.make_opsetid("", tm.OPSET)])
    model.training_info.append(helper.make_training_info(algorithm, [("count", "count_next")], None, None))
    return model


@pytest.mark.parametrize("from_main", [True, False])
def test_update_binding_from_main_graph_or_algorithm_output(from_main):
    session = rt.TrainingSession(_counter_model(from_main))
    seen = [float(session.step({"x": np.array(2.0, np.float32)})["y_seen"]) for _ in range(3)]
    assert seen == [0.0, 2.0, 4.0]  # each step sees the count bound by the previous one
    assert float(session.state["count"]) == 3.0
    assert float(session.run_inference({"x": np.array(1.0, np.float32)})["y"]) == 3.0


def test_unknown_feed_is_rejected():
    spec = tm.single_model("sgd")
    session = rt.TrainingSession(spec.model)
    feed = dict(tm.batches(spec, 1)[0], Z=np.zeros(1, np.float32))
    with pytest.raises(KeyError, match="Z"):
        session.step(feed)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _mutated(mutate):
    model = tm.single_model("momentum").model
    mutate(model)
    return model


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: setattr(m.training_info[0].update_binding[0], "key", "nope"), "update_binding key 'nope'"),
        (lambda m: setattr(m.training_info[0].update_binding[0], "value", "nope"), "value 'nope' is not an output"),
        (lambda m: setattr(m.training_info[0].update_binding[1], "key", "W1"), "already bound"),
        (lambda m: setattr(m.training_info[0].initialization_binding[0], "key", "nope"), "initialization_binding key"),
        (lambda m: setattr(m.training_info[0].initialization_binding[0], "value", "nope"), "not an output of the initialization"),
        (lambda m: m.training_info[0].ClearField("initialization"), "no initialization graph"),
        (lambda m: m.training_info[0].algorithm.node[3].input.__setitem__(0, "ghost"), "not a valid ONNX graph"),
    ],
)
def test_check_training_model_reports_broken_training_info(mutate, message):
    model = _mutated(mutate)
    onnx.checker.check_model(model, full_check=True)  # the ONNX checker does not notice
    with pytest.raises(rt.TrainingModelError, match=message):
        rt.check_training_model(model)


def test_key_bound_by_two_training_infos_is_rejected():
    model = tm.two_algorithm_model(coupled=True).model
    model.training_info[1].update_binding[0].key = "W1"
    with pytest.raises(rt.TrainingModelError, match="already bound by training_info\\[0\\]"):
        rt.check_training_model(model)


@pytest.mark.parametrize("backend", rt.BACKENDS)
def test_gradient_operator_is_refused_clearly(backend):
    model = tm.single_model("sgd").model
    algorithm = model.training_info[0].algorithm
    algorithm.node.append(
        helper.make_node("Gradient", ["W1", "X"], ["dW1_auto"], domain=tm.TRAINING_DOMAIN, xs=["W1"], zs=["X"], y="loss")
    )
    with pytest.raises(rt.UnsupportedOperatorError, match="Gradient operator"):
        rt.TrainingSession(model, backend=backend, check=False)


# ---------------------------------------------------------------------------------------------
# Lowering against onnx.reference on the raw operators
# ---------------------------------------------------------------------------------------------

SHAPES = [(3, 4), (5,), ()]


def _operator_model(op_type, slots, attrs, dtype, r_dtype):
    """A graph with one training operator over len(SHAPES) tensors, everything a graph input."""
    elem, r_elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), helper.np_dtype_to_tensor_dtype(np.dtype(r_dtype))
    groups = ["X", "G"] + list(slots)
    inputs = [helper.make_tensor_value_info("R", r_elem, []), helper.make_tensor_value_info("T", TensorProto.INT64, [])]
    for group in groups:
        inputs += [helper.make_tensor_value_info(f"{group}{i}", elem, s) for i, s in enumerate(SHAPES)]
    out_groups = ["X"] + list(slots)
    outputs = [helper.make_tensor_value_info(f"{g}{i}_new", elem, s) for g in out_groups for i, s in enumerate(SHAPES)]
    node = helper.make_node(
        op_type, [i.name for i in inputs], [o.name for o in outputs], domain=tm.TRAINING_DOMAIN, **attrs
    )
    graph = helper.make_graph([node], "op", inputs, outputs)
    return helper.make_model(graph, ir_version=tm.IR_VERSION, opset_imports=tm.OPSET_IMPORTS)


def _operator_feeds(slots, dtype, r_dtype, t, seed):
    rng = np.random.default_rng(seed)
    feeds = {"R": np.array(rng.uniform(0.01, 0.2), r_dtype), "T": np.array(t, np.int64)}
    for group in ["X", "G"] + list(slots):
        for i, shape in enumerate(SHAPES):
            value = rng.normal(size=shape)
            if group == "H":  # accumulated squares are never negative
                value = np.abs(value)
            feeds[f"{group}{i}"] = np.asarray(value, dtype)
    return feeds


OPERATOR_CASES = {
    "momentum_standard": ("Momentum", ("V",), {"alpha": 0.9, "beta": 0.7, "mode": "standard", "norm_coefficient": 0.1}),
    "momentum_nesterov": ("Momentum", ("V",), {"alpha": 0.8, "beta": 0.6, "mode": "nesterov", "norm_coefficient": 0.05}),
    "momentum_no_regularization": ("Momentum", ("V",), {"alpha": 0.5, "beta": 1.0, "mode": "standard", "norm_coefficient": 0.0}),
    "adam_defaults": ("Adam", ("V", "H"), {}),
    "adam_regularized": (
        "Adam", ("V", "H"),
        {"alpha": 0.8, "beta": 0.95, "epsilon": 1e-4, "norm_coefficient": 0.1, "norm_coefficient_post": 0.05},
    ),
    "adagrad_defaults": ("Adagrad", ("H",), {}),
    "adagrad_decay": ("Adagrad", ("H",), {"decay_factor": 0.3, "epsilon": 1e-3, "norm_coefficient": 0.2}),
}


@pytest.mark.parametrize("t", [0, 1, 2, 7, 50])
@pytest.mark.parametrize("case", sorted(OPERATOR_CASES))
@pytest.mark.parametrize("dtype, r_dtype", [(np.float32, np.float32), (np.float64, np.float32), (np.float32, np.float64)])
def test_lowering_matches_reference_evaluator(case, t, dtype, r_dtype):
    from onnx.reference import ReferenceEvaluator
    import onnxruntime

    op_type, slots, attrs = OPERATOR_CASES[case]
    model = _operator_model(op_type, slots, attrs, dtype, r_dtype)
    lowered = rt.lower_training_ops(model)
    assert not any(n.domain == tm.TRAINING_DOMAIN for n in lowered.graph.node)
    assert all(o.domain != tm.TRAINING_DOMAIN for o in lowered.opset_import)
    onnx.checker.check_model(lowered, full_check=True)
    session = onnxruntime.InferenceSession(lowered.SerializeToString(), providers=["CPUExecutionProvider"])
    evaluator = ReferenceEvaluator(model)
    names = [o.name for o in model.graph.output]
    for seed in range(3):
        feeds = _operator_feeds(slots, dtype, r_dtype, t, seed)
        expected = evaluator.run(names, feeds)
        actual = session.run(names, feeds)
        for name, e, a in zip(names, expected, actual):
            assert a.dtype == np.dtype(dtype), name
            assert a.shape == np.shape(e), name
            np.testing.assert_allclose(a, np.asarray(e, np.float64), rtol=2.5e-7, atol=2.5e-7, err_msg=f"{name} seed {seed}")


@pytest.mark.parametrize("t", [0, 3])
def test_lowering_matches_numpy_formulas_in_float64(t):
    """Cross-check the lowering with this file's own formulas, not only with onnx.reference."""
    import onnxruntime

    cases = {
        "Momentum": (("V",), {"alpha": 0.9, "beta": 0.7, "mode": "nesterov", "norm_coefficient": 0.1}),
        "Adam": (("V", "H"), {"alpha": 0.8, "beta": 0.95, "epsilon": 1e-4, "norm_coefficient": 0.1, "norm_coefficient_post": 0.05}),
        "Adagrad": (("H",), {"decay_factor": 0.3, "epsilon": 1e-3, "norm_coefficient": 0.2}),
    }
    for op_type, (slots, attrs) in cases.items():
        model = _operator_model(op_type, slots, attrs, np.float64, np.float64)
        session = onnxruntime.InferenceSession(rt.lower_training_ops(model).SerializeToString(), providers=["CPUExecutionProvider"])
        feeds = _operator_feeds(slots, np.float64, np.float64, t, 11)
        got = dict(zip([o.name for o in model.graph.output], session.run(None, feeds)))
        r = float(feeds["R"])
        # Attributes are stored as float32 in the model; the formulas must see the same values.
        attrs = {k: float(np.float32(v)) if isinstance(v, float) else v for k, v in attrs.items()}
        for i in range(len(SHAPES)):
            x, g = feeds[f"X{i}"], feeds[f"G{i}"]
            if op_type == "Momentum":
                expected = ref.momentum_update(r, t, x, g, feeds[f"V{i}"], **attrs)
            elif op_type == "Adam":
                expected = ref.adam_update(r, t, x, g, feeds[f"V{i}"], feeds[f"H{i}"], **attrs)
            else:
                expected = ref.adagrad_update(r, t, x, g, feeds[f"H{i}"], **attrs)
            for group, value in zip(["X"] + list(slots), expected):
                np.testing.assert_allclose(got[f"{group}{i}_new"], value, rtol=1e-12, atol=1e-12, err_msg=f"{op_type} {group}{i}")


def test_lowering_inside_a_subgraph():
    """Optimizer nodes inside If branches are lowered too (a rewrite may put them there)."""
    import onnxruntime
    from onnx.reference import ReferenceEvaluator

    inner = _operator_model("Adagrad", ("H",), {"decay_factor": 0.1}, np.float32, np.float32).graph
    branch = helper.make_graph(list(inner.node), "then", [], list(inner.output))
    other = helper.make_graph(
        [helper.make_node("Identity", [f"{g}{i}"], [f"{g}{i}_else"]) for g in ("X", "H") for i in range(len(SHAPES))],
        "else", [],
        [helper.make_tensor_value_info(f"{g}{i}_else", TensorProto.FLOAT, s) for g in ("X", "H") for i, s in enumerate(SHAPES)],
    )
    outputs = [helper.make_tensor_value_info(f"out_{o.name}", TensorProto.FLOAT, None) for o in inner.output]
    node = helper.make_node("If", ["flag"], [o.name for o in outputs], then_branch=branch, else_branch=other)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("flag", TensorProto.BOOL, [])] + list(inner.input), outputs
    )
    model = helper.make_model(graph, ir_version=tm.IR_VERSION, opset_imports=tm.OPSET_IMPORTS)
    lowered = rt.lower_training_ops(model)
    session = onnxruntime.InferenceSession(lowered.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = dict(_operator_feeds(("H",), np.float32, np.float32, 4, 0), flag=np.array(True))
    expected = ReferenceEvaluator(model).run(None, feeds)
    for e, a in zip(expected, session.run(None, feeds)):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def test_command_line_describe_check_train(tmp_path):
    spec = tm.single_model("adam")
    model_path, feeds_path, out_path = tmp_path / "m.onnx", tmp_path / "b.npz", tmp_path / "trained.onnx"
    onnx.save(spec.model, str(model_path))
    np.savez(feeds_path, **tm.batches(spec, 1)[0])
    def run(*args):
        command = [sys.executable, "-m", "onnx_lookahead.training_info", *args]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        return done.stdout

    assert "update_binding W1 <- W1_new" in run("describe", str(model_path))
    assert "OK" in run("check", str(model_path))
    out = run("train", str(model_path), "--feeds", str(feeds_path), "--steps", "3", "--save", str(out_path))
    assert out.count("loss=") == 3
    trained = rt.TrainingSession(str(out_path))
    assert int(trained.state["T"]) == 3
