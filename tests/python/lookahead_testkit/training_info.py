"""ONNX-standard training models (ModelProto.training_info): build an SGD example, run one step.

No released runtime executes training_info, so the fixture generator and its test check such models
here: per the ONNX IR spec, one training iteration runs the concatenation of ModelProto.graph and
the algorithm graph (inputs, initializers, outputs, nodes, value_info appended in that order), then
assigns the outputs named by update_binding to their state variables. onnx.reference evaluates the
concatenated graph; onnx.checker alone would not look at training_info at all.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from .model import IR_VERSION, MlpSpec


def sgd_training_model(spec: MlpSpec, lr: float) -> onnx.ModelProto:
    """spec's inference model plus a training_info that trains it with plain SGD on MSE loss.

    Supported specs: MSE loss, hidden layers with tanh, linear output (explicit backward below).
    algorithm: input `target`; gradients by explicit ops; outputs `<P>_new = P - lr * dL/dP` for
    every trainable P and `loss`; update_binding P <- <P>_new. initialization: Constant nodes with
    the initial weights, initialization_binding P <- <P>_init.
    """
    assert spec.loss == "mse" and not spec.frozen
    assert all(act == "tanh" for _, act in spec.layers[:-1]) and spec.layers[-1][1] == "none"
    model = spec.onnx_model()
    params = spec.init_params()
    n = len(spec.layers)

    def act_name(i):  # the main graph's activation feeding layer i+1
        return spec.input_name if i == 0 else f"h{i}"

    nodes = [
        helper.make_node("Sub", [spec.output_name, "target"], ["ti_diff"]),
        helper.make_node("Mul", ["ti_diff", "ti_diff"], ["ti_sq"]),
        helper.make_node("ReduceMean", ["ti_sq"], ["loss"], keepdims=0),
        helper.make_node("Size", ["ti_diff"], ["ti_numel_i"]),
        helper.make_node("Cast", ["ti_numel_i"], ["ti_numel"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["ti_two", "ti_numel"], ["ti_scale"]),
        helper.make_node("Mul", ["ti_diff", "ti_scale"], [f"ti_ga{n}"]),  # dL/d(pre-activation of layer n)
    ]
    for i in range(n, 0, -1):
        ga = f"ti_ga{i}"
        nodes += [
            helper.make_node("Transpose", [act_name(i - 1)], [f"ti_hT{i}"]),
            helper.make_node("MatMul", [f"ti_hT{i}", ga], [f"ti_gW{i}"]),
            helper.make_node("ReduceSum", [ga, "ti_axis0"], [f"ti_gb{i}"], keepdims=0),
        ]
        if i > 1:  # back through W_i and the tanh of layer i-1: ga_{i-1} = (ga_i W_i^T) * (1 - h^2)
            h = act_name(i - 1)
            nodes += [
                helper.make_node("Transpose", [f"W{i}"], [f"ti_WT{i}"]),
                helper.make_node("MatMul", [ga, f"ti_WT{i}"], [f"ti_gh{i - 1}"]),
                helper.make_node("Mul", [h, h], [f"ti_hsq{i - 1}"]),
                helper.make_node("Sub", ["ti_one", f"ti_hsq{i - 1}"], [f"ti_dtanh{i - 1}"]),
                helper.make_node("Mul", [f"ti_gh{i - 1}", f"ti_dtanh{i - 1}"], [f"ti_ga{i - 1}"]),
            ]
    outputs = []
    for name in spec.param_names:
        grad = f"ti_g{name}"
        nodes += [helper.make_node("Mul", ["lr", grad], [f"ti_step_{name}"]),
                  helper.make_node("Sub", [name, f"ti_step_{name}"], [f"{name}_new"])]
        outputs.append(helper.make_tensor_value_info(f"{name}_new", TensorProto.FLOAT, params[name].shape))
    outputs.append(helper.make_tensor_value_info("loss", TensorProto.FLOAT, []))
    algorithm = helper.make_graph(
        nodes, "sgd_step",
        [helper.make_tensor_value_info("target", TensorProto.FLOAT, ["N", spec.n_out])], outputs,
        [numpy_helper.from_array(np.array(lr, np.float32), "lr"),
         numpy_helper.from_array(np.array(2.0, np.float32), "ti_two"),
         numpy_helper.from_array(np.array(1.0, np.float32), "ti_one"),
         numpy_helper.from_array(np.array([0], np.int64), "ti_axis0")])
    initialization = helper.make_graph(
        [helper.make_node("Constant", [], [f"{p}_init"], value=numpy_helper.from_array(params[p], f"{p}_value"))
         for p in spec.param_names],
        "init", [], [helper.make_tensor_value_info(f"{p}_init", TensorProto.FLOAT, params[p].shape)
                     for p in spec.param_names])
    model.training_info.append(helper.make_training_info(
        algorithm, [(p, f"{p}_new") for p in spec.param_names],
        initialization, [(p, f"{p}_init") for p in spec.param_names]))
    onnx.checker.check_model(model)
    onnx.checker.check_model(concatenated_model(model))
    return model


def concatenated_model(model: onnx.ModelProto, index: int = 0) -> onnx.ModelProto:
    """The graph one training iteration runs: ModelProto.graph followed by training_info[index].algorithm."""
    algorithm = model.training_info[index].algorithm
    graph = onnx.GraphProto()
    graph.CopyFrom(model.graph)
    graph.name = f"{model.graph.name}+{algorithm.name}"
    graph.input.extend(algorithm.input)
    graph.initializer.extend(algorithm.initializer)
    graph.output.extend(algorithm.output)
    graph.node.extend(algorithm.node)
    graph.value_info.extend(algorithm.value_info)
    return helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=IR_VERSION)


def train_step(model: onnx.ModelProto, feeds: dict[str, np.ndarray], index: int = 0) -> dict[str, np.ndarray]:
    """Run one iteration of training_info[index]: apply its update_binding to the model (in place)
    and return every algorithm output. State variables are read from the graphs' initializers."""
    outputs = [o.name for o in model.training_info[index].algorithm.output]
    values = dict(zip(outputs, ReferenceEvaluator(concatenated_model(model, index)).run(outputs, feeds)))
    inits = {t.name: t for g in (model.graph, model.training_info[index].algorithm) for t in g.initializer}
    for binding in model.training_info[index].update_binding:
        inits[binding.key].CopyFrom(numpy_helper.from_array(values[binding.value], binding.key))
    return values

