"""Builders of small ONNX models that carry ``ModelProto.training_info``.

No exporter emits training_info, so the tests build their models by hand with ``onnx.helper``.
Every builder returns a ``ModelSpec``: the ModelProto plus a plain description of what it computes
(network layout, which algorithm updates which weights with which optimizer and hyperparameters,
initial values).  The NumPy reference in ``tinfo_reference.py`` reads only that description, never
the graph, so a bug in a graph builder cannot hide in a matching bug of the reference.

Gradients are written as explicit operators in the algorithm graph (MatMul/Transpose/ReduceSum
and a ReLU mask): the ``Gradient`` operator of ai.onnx.preview.training cannot run anywhere today.

The models use IR version 10 and ai.onnx opset 21, the newest pair ONNX Runtime 1.19.2 loads, and
ai.onnx.preview.training opset 1 for the optimizer operators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 10
OPSET = 21
TRAINING_DOMAIN = "ai.onnx.preview.training"
OPSET_IMPORTS = [helper.make_opsetid("", OPSET), helper.make_opsetid(TRAINING_DOMAIN, 1)]

OPTIMIZERS = ("sgd", "momentum", "adam", "adagrad")
#: Optimizer state tensors kept per weight, in the operator's input order after X and G.
OPTIMIZER_SLOTS = {"sgd": (), "momentum": ("V",), "adam": ("V", "H"), "adagrad": ("H",)}


# ---------------------------------------------------------------------------------------------
# Plain descriptions (what the NumPy reference reads)
# ---------------------------------------------------------------------------------------------


@dataclass
class Layer:
    """``z = x @ w + b``; with ``relu`` set, ``relu = Relu(z)`` feeds the next layer."""

    x: str
    w: str
    b: str
    z: str
    relu: Optional[str] = None


@dataclass
class Head:
    """A stack of dense layers trained with a mean-squared-error loss against ``label``."""

    layers: List[Layer]
    label: str

    @property
    def pred(self) -> str:
        return self.layers[-1].z

    @property
    def weights(self) -> List[str]:
        return [name for layer in self.layers for name in (layer.w, layer.b)]


@dataclass
class Optimizer:
    """Optimizer kind, learning rate and the operator attributes (defaults filled in)."""

    kind: str
    lr: float
    attrs: Dict[str, object] = field(default_factory=dict)


@dataclass
class AlgorithmSpec:
    """One TrainingInfoProto: the head whose loss it minimises and the weights it updates."""

    head: Head
    weights: List[str]
    optimizer: Optimizer
    loss: str  # name of the algorithm output that reports the loss before the update


@dataclass
class ModelSpec:
    model: onnx.ModelProto
    heads: List[Head]
    algorithms: List[AlgorithmSpec]
    initial_weights: Dict[str, np.ndarray]  # the values initialize() gives the weights
    initializer_weights: Dict[str, np.ndarray]  # the values stored in ModelProto.graph.initializer
    input_dim: int
    output_dims: Dict[str, int]  # label name -> width

    @property
    def weight_names(self) -> List[str]:
        return [w for algorithm in self.algorithms for w in algorithm.weights]

    @property
    def losses(self) -> List[str]:
        return [a.loss for a in self.algorithms]


def batches(spec: ModelSpec, steps: int, batch: int = 8, seed: int = 0) -> List[Dict[str, np.ndarray]]:
    """One feed dict per step: a fresh input batch and labels from a fixed smooth target.

    Batches change every step so that a runtime which, say, reused the first feed would be caught;
    the target function is the same for every ``seed``, so an evaluation batch measures learning.
    """
    target_rng = np.random.default_rng(1234)  # one target function for all seeds (train and eval)
    targets = {label: target_rng.normal(size=(spec.input_dim, width)) for label, width in spec.output_dims.items()}
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(steps):
        x = rng.normal(size=(batch, spec.input_dim)).astype(np.float32)
        feed = {"X": x}
        for label, projection in targets.items():
            feed[label] = np.tanh(x @ projection).astype(np.float32)
        feeds.append(feed)
    return feeds


# ---------------------------------------------------------------------------------------------
# Graph pieces
# ---------------------------------------------------------------------------------------------


def _tensor(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _constant(output: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [output], name=output, value=_tensor(output, array))


def _float_info(name: str, shape: Sequence) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _forward_nodes(head: Head) -> List[onnx.NodeProto]:
    nodes = []
    for layer in head.layers:
        product = f"{layer.z}_matmul"
        nodes.append(helper.make_node("MatMul", [layer.x, layer.w], [product], name=product))
        nodes.append(helper.make_node("Add", [product, layer.b], [layer.z], name=layer.z))
        if layer.relu:
            nodes.append(helper.make_node("Relu", [layer.z], [layer.relu], name=layer.relu))
    return nodes


def _loss_and_gradient_nodes(head: Head, loss: str, prefix: str) -> Tuple[List[onnx.NodeProto], Dict[str, str]]:
    """Nodes computing ``loss = mean((pred - label)^2)`` and the gradient of every weight.

    Returns the nodes and a map weight name -> gradient tensor name.  The algorithm reads the
    forward activations of ModelProto.graph by name, which the concatenation makes legal.
    ``prefix`` keeps names apart when one algorithm serves several heads.
    """
    p = prefix
    nodes = [
        helper.make_node("Sub", [head.pred, head.label], [f"{p}diff"]),
        helper.make_node("Mul", [f"{p}diff", f"{p}diff"], [f"{p}squared"]),
        helper.make_node("ReduceMean", [f"{p}squared"], [loss], keepdims=0),
        # d loss / d pred = 2 * diff / number_of_elements
        helper.make_node("Size", [f"{p}diff"], [f"{p}count_i64"]),
        helper.make_node("Cast", [f"{p}count_i64"], [f"{p}count"], to=TensorProto.FLOAT),
        helper.make_node("Div", [f"{p}two", f"{p}count"], [f"{p}scale"]),
        helper.make_node("Mul", [f"{p}diff", f"{p}scale"], [f"{p}d_{head.pred}"]),
    ]
    nodes.insert(0, _constant(f"{p}two", np.array(2.0, np.float32)))
    nodes.insert(0, _constant(f"{p}axis0", np.array([0], np.int64)))
    gradients: Dict[str, str] = {}
    upstream = f"{p}d_{head.pred}"
    for index in reversed(range(len(head.layers))):
        layer = head.layers[index]
        g_w, g_b = f"{p}grad_{layer.w}", f"{p}grad_{layer.b}"
        nodes += [
            helper.make_node("Transpose", [layer.x], [f"{p}{layer.x}_T"]),
            helper.make_node("MatMul", [f"{p}{layer.x}_T", upstream], [g_w]),
            helper.make_node("ReduceSum", [upstream, f"{p}axis0"], [g_b], keepdims=0),
        ]
        gradients[layer.w], gradients[layer.b] = g_w, g_b
        if index == 0:
            break
        previous = head.layers[index - 1]
        d_act, mask = f"{p}d_{previous.relu}", f"{p}mask_{previous.z}"
        nodes += [
            helper.make_node("Transpose", [layer.w], [f"{p}{layer.w}_T"]),
            helper.make_node("MatMul", [upstream, f"{p}{layer.w}_T"], [d_act]),
            # ReLU derivative: 1 where z > 0, else 0
            helper.make_node("Greater", [previous.z, f"{p}zero"], [f"{mask}_bool"]),
            helper.make_node("Cast", [f"{mask}_bool"], [mask], to=TensorProto.FLOAT),
            helper.make_node("Mul", [d_act, mask], [f"{p}d_{previous.z}"]),
        ]
        upstream = f"{p}d_{previous.z}"
    if len(head.layers) > 1:
        nodes.insert(0, _constant(f"{p}zero", np.array(0.0, np.float32)))
    return nodes, gradients


def _optimizer_nodes(
    optimizer: Optimizer,
    weights: List[str],
    gradients: Dict[str, str],
    shapes: Dict[str, Tuple[int, ...]],
    prefix: str,
) -> Tuple[
    List[onnx.NodeProto], List[TensorProto], List[Tuple[str, str]], Dict[str, str], List[onnx.ValueInfoProto]
]:
    """The update of ``weights``: nodes, algorithm initializers, bindings, new-weight names and
    the extra algorithm outputs (new optimizer state) that the bindings read.

    SGD is plain arithmetic (W - lr * G).  The other optimizers are ONE preview-training node over
    all weights, with their state (one zero tensor per weight and slot, and the int64 update count
    T starting at 0) in algorithm.initializer, bound back with the update count incremented.
    """
    p = prefix
    lr = f"{p}lr"
    initializers = [_tensor(lr, np.array(optimizer.lr, np.float32))]
    new_weight = {w: f"{p}{w}_new" for w in weights}
    bindings = [(w, new_weight[w]) for w in weights]
    if optimizer.kind == "sgd":
        nodes = []
        for w in weights:
            nodes.append(helper.make_node("Mul", [lr, gradients[w]], [f"{p}{w}_step"]))
            nodes.append(helper.make_node("Sub", [w, f"{p}{w}_step"], [new_weight[w]]))
        return nodes, initializers, bindings, new_weight, []

    slots = OPTIMIZER_SLOTS[optimizer.kind]
    state_outputs: List[onnx.ValueInfoProto] = []
    count, count_new = f"{p}T", f"{p}T_new"
    initializers.append(_tensor(count, np.array(0, np.int64)))
    initializers.append(_tensor(f"{p}one_i64", np.array(1, np.int64)))
    inputs = [lr, count] + list(weights) + [gradients[w] for w in weights]
    outputs = [new_weight[w] for w in weights]
    for slot in slots:
        for w in weights:
            state = f"{p}{slot}_{w}"
            initializers.append(_tensor(state, np.zeros(shapes[w], np.float32)))
            inputs.append(state)
            outputs.append(f"{state}_new")
            bindings.append((state, f"{state}_new"))
            state_outputs.append(_float_info(f"{state}_new", shapes[w]))
    op_type = {"momentum": "Momentum", "adam": "Adam", "adagrad": "Adagrad"}[optimizer.kind]
    nodes = [
        helper.make_node(op_type, inputs, outputs, name=f"{p}{op_type}", domain=TRAINING_DOMAIN, **optimizer.attrs),
        helper.make_node("Add", [count, f"{p}one_i64"], [count_new]),
    ]
    bindings.append((count, count_new))
    state_outputs.append(helper.make_tensor_value_info(count_new, TensorProto.INT64, []))
    return nodes, initializers, bindings, new_weight, state_outputs


def _optimizer(kind: str, lr: Optional[float] = None, **attrs) -> Optimizer:
    """An Optimizer with every operator attribute written out (no reliance on defaults)."""
    defaults = {
        "sgd": (0.1, {}),
        "momentum": (0.05, {"alpha": 0.9, "beta": 0.8, "mode": "standard", "norm_coefficient": 0.01}),
        "adam": (
            0.02,
            {"alpha": 0.85, "beta": 0.99, "epsilon": 1e-6, "norm_coefficient": 0.01, "norm_coefficient_post": 0.001},
        ),
        "adagrad": (0.1, {"decay_factor": 0.1, "epsilon": 1e-6, "norm_coefficient": 0.01}),
    }
    default_lr, default_attrs = defaults[kind]
    return Optimizer(kind, default_lr if lr is None else lr, {**default_attrs, **attrs})


# ---------------------------------------------------------------------------------------------
# Model assembly
# ---------------------------------------------------------------------------------------------


def _mlp_head(prefix: str, in_dim: int, hidden: int, out_dim: int, label: str) -> Tuple[Head, Dict[str, Tuple[int, ...]]]:
    layers = [
        Layer(x="X", w=f"{prefix}W1", b=f"{prefix}B1", z=f"{prefix}Z1", relu=f"{prefix}A1"),
        Layer(x=f"{prefix}A1", w=f"{prefix}W2", b=f"{prefix}B2", z=f"{prefix}pred"),
    ]
    shapes = {
        f"{prefix}W1": (in_dim, hidden),
        f"{prefix}B1": (hidden,),
        f"{prefix}W2": (hidden, out_dim),
        f"{prefix}B2": (out_dim,),
    }
    return Head(layers, label), shapes


def _linear_head(prefix: str, in_dim: int, out_dim: int, label: str) -> Tuple[Head, Dict[str, Tuple[int, ...]]]:
    layers = [Layer(x="X", w=f"{prefix}W", b=f"{prefix}B", z=f"{prefix}pred")]
    return Head(layers, label), {f"{prefix}W": (in_dim, out_dim), f"{prefix}B": (out_dim,)}


def _build(
    heads: List[Tuple[Head, Dict[str, Tuple[int, ...]], int]],
    algorithms: List[Tuple[Head, List[str], Optimizer, str]],
    in_dim: int,
    seed: int,
    with_initialization: bool,
    init_optimizer_state: bool,
) -> ModelSpec:
    """Assemble ModelProto.graph (all heads) and one TrainingInfoProto per algorithm tuple.

    Initializers of the weights and the values the initialization graphs produce differ on
    purpose, so a test can tell "pre-initialised from the initializer" from "initialized".
    """
    rng = np.random.default_rng(seed)
    shapes: Dict[str, Tuple[int, ...]] = {}
    for _, head_shapes, _ in heads:
        shapes.update(head_shapes)
    initial = {w: (rng.normal(size=s) * 0.5).astype(np.float32) for w, s in shapes.items()}
    stored = {w: (v + 0.25).astype(np.float32) for w, v in initial.items()}
    if not with_initialization:
        initial = {w: v.copy() for w, v in stored.items()}

    main_nodes = [node for head, _, _ in heads for node in _forward_nodes(head)]
    graph = helper.make_graph(
        main_nodes,
        "tinfo_main",
        [_float_info("X", ["batch", in_dim])],
        [_float_info(head.pred, ["batch", out_dim]) for head, _, out_dim in heads],
        initializer=[_tensor(w, stored[w]) for w in shapes],
    )

    infos = []
    algorithm_specs = []
    for index, (head, weights, optimizer, loss) in enumerate(algorithms):
        prefix = f"a{index}_" if len(algorithms) > 1 else ""
        loss_nodes, gradients = _loss_and_gradient_nodes(head, loss, prefix)
        opt_nodes, opt_initializers, bindings, new_weights, state_outputs = _optimizer_nodes(
            optimizer, weights, gradients, shapes, prefix
        )
        out_dim = next(d for h, _, d in heads if h is head)
        algorithm = helper.make_graph(
            loss_nodes + opt_nodes,
            f"tinfo_algorithm_{index}",
            [_float_info(head.label, ["batch", out_dim])],
            [_float_info(loss, [])] + [_float_info(new_weights[w], shapes[w]) for w in weights] + state_outputs,
            initializer=opt_initializers,
        )
        initialization = None
        init_bindings: List[Tuple[str, str]] = []
        if with_initialization:
            init_nodes, init_outputs = [], []
            for w in weights:
                init_nodes.append(_constant(f"{prefix}{w}_init", initial[w]))
                init_outputs.append(_float_info(f"{prefix}{w}_init", shapes[w]))
                init_bindings.append((w, f"{prefix}{w}_init"))
            if init_optimizer_state:
                for tensor in opt_initializers:
                    if any(key == tensor.name for key, _ in bindings):
                        zero = np.zeros_like(numpy_helper.to_array(tensor))
                        init_nodes.append(_constant(f"{tensor.name}_init", zero))
                        init_outputs.append(
                            helper.make_tensor_value_info(f"{tensor.name}_init", tensor.data_type, list(zero.shape))
                        )
                        init_bindings.append((tensor.name, f"{tensor.name}_init"))
            initialization = helper.make_graph(init_nodes, f"tinfo_initialization_{index}", [], init_outputs)
        infos.append(helper.make_training_info(algorithm, bindings, initialization, init_bindings or None))
        algorithm_specs.append(AlgorithmSpec(head, list(weights), optimizer, loss))

    model = helper.make_model(graph, ir_version=IR_VERSION, opset_imports=OPSET_IMPORTS, producer_name="tinfo_models")
    model.training_info.extend(infos)
    return ModelSpec(
        model=model,
        heads=[h for h, _, _ in heads],
        algorithms=algorithm_specs,
        initial_weights=initial,
        initializer_weights=stored,
        input_dim=in_dim,
        output_dims={h.label: d for h, _, d in heads},
    )


def single_model(
    kind: str,
    network: str = "mlp",
    seed: int = 0,
    with_initialization: bool = True,
    init_optimizer_state: bool = False,
    lr: Optional[float] = None,
    **attrs,
) -> ModelSpec:
    """One TrainingInfoProto that trains every weight of a linear or 2-layer MLP regressor.

    ``kind`` is one of OPTIMIZERS; for the preview-training optimizers every weight (W1, B1, W2, B2
    for the MLP) goes through ONE optimizer node.  ``attrs`` override operator attributes, e.g.
    ``mode="nesterov"``.
    """
    in_dim, hidden, out_dim = 4, 5, 2
    if network == "mlp":
        head, shapes = _mlp_head("", in_dim, hidden, out_dim, "Y")
    elif network == "linear":
        head, shapes = _linear_head("", in_dim, out_dim, "Y")
    else:
        raise ValueError(network)
    return _build(
        [(head, shapes, out_dim)],
        [(head, head.weights, _optimizer(kind, lr, **attrs), "loss")],
        in_dim,
        seed,
        with_initialization,
        init_optimizer_state,
    )


def two_algorithm_model(coupled: bool, seed: int = 1) -> ModelSpec:
    """A model with TWO TrainingInfoProto entries updating different weights.

    ``coupled=False``: two independent heads on the same input, a linear head (Momentum) and an
    MLP head (Adam), each algorithm minimising its own loss.  ``coupled=True``: one MLP whose first
    layer is updated by the first algorithm (Adam) and whose second layer by the second (SGD) on
    the same loss, so the second algorithm's gradient depends on the first algorithm's update of
    the same step (the format assigns update_binding before the next algorithm runs).
    """
    in_dim = 3
    if coupled:
        head, shapes = _mlp_head("", in_dim, 4, 2, "Y")
        return _build(
            [(head, shapes, 2)],
            [
                (head, ["W1", "B1"], _optimizer("adam"), "loss_first"),
                (head, ["W2", "B2"], _optimizer("sgd"), "loss_second"),
            ],
            in_dim,
            seed,
            True,
            False,
        )
    linear, linear_shapes = _linear_head("lin_", in_dim, 1, "Y_lin")
    mlp, mlp_shapes = _mlp_head("mlp_", in_dim, 4, 2, "Y_mlp")
    return _build(
        [(linear, linear_shapes, 1), (mlp, mlp_shapes, 2)],
        [
            (linear, linear.weights, _optimizer("momentum", mode="nesterov"), "loss_lin"),
            (mlp, mlp.weights, _optimizer("adam"), "loss_mlp"),
        ],
        in_dim,
        seed,
        True,
        True,
    )
