"""Momentum, Adam and Adagrad of ai.onnx.preview.training rewritten into standard ONNX operators."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np
import onnx
import onnx.external_data_helper
from onnx import GraphProto, ModelProto, NodeProto, TensorProto, helper, numpy_helper
from .model import TRAINING_DOMAIN, LOWERABLE_OPS, TrainingModelError, UnsupportedOperatorError, _iter_graphs, _iter_nodes, _reject_gradient_ops

# ---------------------------------------------------------------------------------------------
# Lowering of ai.onnx.preview.training operators to standard ONNX operators
# ---------------------------------------------------------------------------------------------


class _NameMaker:
    """Fresh tensor/node names that collide with nothing in the model, in any scope."""

    def __init__(self, model: ModelProto, prefix: str = "tinfo_lowered"):
        self._taken = set()
        for graph in _iter_graphs(model.graph):
            self._taken.update(v.name for v in itertools.chain(graph.input, graph.output, graph.value_info))
            self._taken.update(t.name for t in graph.initializer)
            for node in graph.node:
                self._taken.update(node.input)
                self._taken.update(node.output)
                self._taken.add(node.name)
        self._prefix = prefix
        self._counter = itertools.count()

    def __call__(self, hint: str) -> str:
        while True:
            name = f"{self._prefix}_{next(self._counter)}_{hint}"
            if name not in self._taken:
                self._taken.add(name)
                return name


class _Emitter:
    """Appends standard nodes to a list; each helper returns the new output name."""

    def __init__(self, names: _NameMaker, tag: str):
        self.nodes: List[NodeProto] = []
        self._names = names
        self._tag = tag

    def op(self, op_type: str, inputs: Sequence[str], **attributes) -> str:
        output = self._names(f"{self._tag}_{op_type}")
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=output, **attributes))
        return output

    def op_into(self, op_type: str, inputs: Sequence[str], output: str) -> None:
        """Like ``op`` but writes the given (original) output name."""
        self.nodes.append(
            helper.make_node(op_type, list(inputs), [output], name=self._names(f"{self._tag}_{op_type}"))
        )

    def const(self, value: float, elem_type: int, hint: str = "c") -> str:
        """A scalar constant; the Python float is rounded once to the tensor's element type."""
        array = np.array(value, dtype=helper.tensor_dtype_to_np_dtype(elem_type))
        output = self._names(f"{self._tag}_{hint}")
        self.nodes.append(
            helper.make_node(
                "Constant", [], [output], name=output, value=numpy_helper.from_array(array, output)
            )
        )
        return output


def _collect_elem_types(model: ModelProto) -> Dict[str, int]:
    """Element type of every named value, from ONNX type inference over all scopes."""
    inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    types: Dict[str, int] = {}
    for graph in _iter_graphs(inferred.graph):
        for value in itertools.chain(graph.input, graph.output, graph.value_info):
            if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
                types[value.name] = value.type.tensor_type.elem_type
        for tensor in graph.initializer:
            types[tensor.name] = tensor.data_type
    return types


def _attribute_values(node: NodeProto) -> Dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _decode(value: object) -> object:
    return value.decode() if isinstance(value, bytes) else value


def _split_groups(node: NodeProto, groups: int) -> int:
    """Number of optimized tensors n for a node whose inputs are R, T, then ``groups`` blocks of n."""
    count = len(node.input) - 2
    if count <= 0 or count % groups != 0:
        raise TrainingModelError(
            f"{node.op_type} node {node.name!r} has {len(node.input)} inputs; expected 2 + "
            f"{groups}*n (R, T and {groups} groups of n tensors)"
        )
    n = count // groups
    if len(node.output) > (groups - 1) * n:
        raise TrainingModelError(
            f"{node.op_type} node {node.name!r} has {len(node.output)} outputs; expected at most "
            f"{(groups - 1) * n}"
        )
    return n


class _Lowering:
    """Builds the standard-operator replacement of one training operator node.

    Scalar learning-rate factors (bias correction, decay) are computed in double precision and
    rounded once to each tensor's element type, like the operator definitions written with real
    numbers; the element-wise parts run in the tensors' own element type, in the order of the
    pseudo code of the definitions, so rounding follows them closely.
    """

    def __init__(self, node: NodeProto, types: Mapping[str, int], names: _NameMaker):
        self.node = node
        self.types = types
        self.emit = _Emitter(names, node.op_type.lower())
        self.attributes = {k: _decode(v) for k, v in _attribute_values(node).items()}
        self._cache: Dict[tuple, str] = {}
        self.R, self.T = node.input[0], node.input[1]

    def attr(self, name: str, required: bool = False) -> object:
        """The node's attribute, else the operator schema's default.

        Defaults come from the schema, where they are stored as float32 like any attribute in a
        model: an omitted ``beta`` then behaves exactly like ``beta=0.999`` written explicitly
        (0.999 rounded to float32), which is also what onnx.reference uses.
        """
        if name in self.attributes:
            return self.attributes[name]
        if required:
            raise TrainingModelError(
                f"{self.node.op_type} node {self.node.name!r} lacks the required attribute {name!r}"
            )
        schema = onnx.defs.get_schema(self.node.op_type, 1, TRAINING_DOMAIN)
        return _decode(helper.get_attribute_value(schema.attributes[name].default_value))

    def elem_type(self, name: str) -> int:
        if name not in self.types:
            raise TrainingModelError(
                f"cannot lower {self.node.op_type} node {self.node.name!r}: the element type of "
                f"{name!r} is unknown (declare it in the graph's inputs, initializers or value_info)"
            )
        return self.types[name]

    def cached(self, key: tuple, make: Callable[[], str]) -> str:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    # Scalars shared by all tensors of the node -------------------------------------------------

    def t_positive(self) -> str:
        """Boolean scalar ``T > 0`` (the definitions switch behaviour on the first iteration)."""
        return self.cached(
            ("t>0",),
            lambda: self.emit.op("Greater", [self.T, self.emit.const(0, self.elem_type(self.T), "zero")]),
        )

    def as_double(self, name: str) -> str:
        return self.cached(("f64", name), lambda: self.emit.op("Cast", [name], to=TensorProto.DOUBLE))

    def const(self, value: float, elem_type: int, hint: str) -> str:
        return self.cached(("const", float(value), elem_type), lambda: self.emit.const(value, elem_type, hint))

    def cast(self, name: str, elem_type: int) -> str:
        """``name`` in ``elem_type``; no node when R (or a factor) already has that type."""
        if self.types.get(name) == elem_type:
            return name
        return self.cached(("cast", name, elem_type), lambda: self.emit.op("Cast", [name], to=elem_type))

    # Shared per-tensor pieces --------------------------------------------------------------

    def regularized_gradient(self, x: str, g: str, dtype: int) -> str:
        """``norm_coefficient * X + G`` (gradient of 0.5 * norm_coefficient * ||X||^2 added)."""
        coefficient = self.const(float(self.attr("norm_coefficient")), dtype, "norm_coefficient")
        return self.emit.op("Add", [self.emit.op("Mul", [coefficient, x]), g])

    def outputs(self, group: int, n: int, i: int) -> Optional[str]:
        """Original output name of tensor ``i`` in output group ``group`` (None if omitted)."""
        index = group * n + i
        if index < len(self.node.output) and self.node.output[index]:
            return self.node.output[index]
        return None

    def write(self, value: str, group: int, n: int, i: int) -> None:
        target = self.outputs(group, n, i)
        if target is not None:
            self.emit.op_into("Identity", [value], target)

    # The three operators --------------------------------------------------------------------

    def momentum(self) -> List[NodeProto]:
        n = _split_groups(self.node, 3)
        alpha = float(self.attr("alpha", required=True))
        beta = float(self.attr("beta", required=True))
        self.attr("norm_coefficient", required=True)
        mode = self.attr("mode", required=True)
        if mode not in ("standard", "nesterov"):
            raise TrainingModelError(f"Momentum node {self.node.name!r}: unknown mode {mode!r}")
        for i in range(n):
            x, g, v = (self.node.input[2 + k * n + i] for k in range(3))
            dtype = self.elem_type(x)
            g_reg = self.regularized_gradient(x, g, dtype)
            # beta_adjusted = T > 0 ? beta : 1
            beta_adjusted = self.cached(
                ("beta_adjusted", dtype),
                lambda: self.emit.op(
                    "Where", [self.t_positive(), self.const(beta, dtype, "beta"), self.const(1.0, dtype, "one")]
                ),
            )
            v_new = self.emit.op(
                "Add",
                [
                    self.emit.op("Mul", [self.const(alpha, dtype, "alpha"), v]),
                    self.emit.op("Mul", [beta_adjusted, g_reg]),
                ],
            )
            r = self.cast(self.R, dtype)
            if mode == "standard":
                direction = v_new
            else:  # Nesterov: step along G_regularized + alpha * V_new
                direction = self.emit.op(
                    "Add", [g_reg, self.emit.op("Mul", [self.const(alpha, dtype, "alpha"), v_new])]
                )
            x_new = self.emit.op("Sub", [x, self.emit.op("Mul", [r, direction])])
            self.write(x_new, 0, n, i)
            self.write(v_new, 1, n, i)
        return self.emit.nodes

    def adam(self) -> List[NodeProto]:
        n = _split_groups(self.node, 4)
        alpha = float(self.attr("alpha"))
        beta = float(self.attr("beta"))
        epsilon = float(self.attr("epsilon"))
        norm_post = float(self.attr("norm_coefficient_post"))

        def r_adjusted_double() -> str:
            # T > 0 ? R * sqrt(1 - beta^T) / (1 - alpha^T) : R, evaluated in double.  At T == 0 the
            # unused branch is 0/0; Where discards it, so no NaN reaches the result.
            d = TensorProto.DOUBLE
            r, t = self.as_double(self.R), self.as_double(self.T)
            one = self.const(1.0, d, "one")
            beta_t = self.emit.op("Pow", [self.const(beta, d, "beta"), t])
            alpha_t = self.emit.op("Pow", [self.const(alpha, d, "alpha"), t])
            corrected = self.emit.op(
                "Div",
                [
                    self.emit.op("Mul", [r, self.emit.op("Sqrt", [self.emit.op("Sub", [one, beta_t])])]),
                    self.emit.op("Sub", [one, alpha_t]),
                ],
            )
            return self.emit.op("Where", [self.t_positive(), corrected, r])

        for i in range(n):
            x, g, v, h = (self.node.input[2 + k * n + i] for k in range(4))
            dtype = self.elem_type(x)
            g_reg = self.regularized_gradient(x, g, dtype)
            v_new = self.emit.op(
                "Add",
                [
                    self.emit.op("Mul", [self.const(alpha, dtype, "alpha"), v]),
                    self.emit.op("Mul", [self.const(1.0 - alpha, dtype, "one_minus_alpha"), g_reg]),
                ],
            )
            h_new = self.emit.op(
                "Add",
                [
                    self.emit.op("Mul", [self.const(beta, dtype, "beta"), h]),
                    self.emit.op(
                        "Mul",
                        [self.const(1.0 - beta, dtype, "one_minus_beta"), self.emit.op("Mul", [g_reg, g_reg])],
                    ),
                ],
            )
            h_sqrt = self.emit.op("Add", [self.emit.op("Sqrt", [h_new]), self.const(epsilon, dtype, "epsilon")])
            r_adjusted = self.cast(self.cached(("r_adjusted",), r_adjusted_double), dtype)
            x_new = self.emit.op(
                "Sub", [x, self.emit.op("Mul", [r_adjusted, self.emit.op("Div", [v_new, h_sqrt])])]
            )
            # Post-update regularization: X_final = (1 - norm_coefficient_post) * X_new
            x_final = self.emit.op("Mul", [self.const(1.0 - norm_post, dtype, "one_minus_norm_post"), x_new])
            self.write(x_final, 0, n, i)
            self.write(v_new, 1, n, i)
            self.write(h_new, 2, n, i)
        return self.emit.nodes

    def adagrad(self) -> List[NodeProto]:
        n = _split_groups(self.node, 3)
        decay = float(self.attr("decay_factor"))
        epsilon = float(self.attr("epsilon"))

        def rate_double() -> str:
            # r = R / (1 + T * decay_factor), evaluated in double.
            d = TensorProto.DOUBLE
            denominator = self.emit.op(
                "Add",
                [
                    self.const(1.0, d, "one"),
                    self.emit.op("Mul", [self.as_double(self.T), self.const(decay, d, "decay_factor")]),
                ],
            )
            return self.emit.op("Div", [self.as_double(self.R), denominator])

        for i in range(n):
            x, g, h = (self.node.input[2 + k * n + i] for k in range(3))
            dtype = self.elem_type(x)
            g_reg = self.regularized_gradient(x, g, dtype)
            h_new = self.emit.op("Add", [h, self.emit.op("Mul", [g_reg, g_reg])])
            h_adaptive = self.emit.op(
                "Add", [self.emit.op("Sqrt", [h_new]), self.const(epsilon, dtype, "epsilon")]
            )
            r = self.cast(self.cached(("rate",), rate_double), dtype)
            x_new = self.emit.op(
                "Sub", [x, self.emit.op("Div", [self.emit.op("Mul", [r, g_reg]), h_adaptive])]
            )
            self.write(x_new, 0, n, i)
            self.write(h_new, 1, n, i)
        return self.emit.nodes


def _lower_graph(graph: GraphProto, types: Mapping[str, int], names: _NameMaker) -> None:
    """Lower ``graph`` in place, nested subgraphs first.

    Subgraphs are rewritten before their parent's node list is rebuilt because rebuilding copies
    the nodes: a subgraph edited afterwards would be a detached copy.
    """
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _lower_graph(attribute.g, types, names)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    _lower_graph(sub, types, names)
    if not any(node.domain == TRAINING_DOMAIN for node in graph.node):
        return
    replacement: List[NodeProto] = []
    for node in graph.node:
        if node.domain != TRAINING_DOMAIN:
            replacement.append(node)
            continue
        lowering = _Lowering(node, types, names)
        if node.op_type == "Momentum":
            replacement.extend(lowering.momentum())
        elif node.op_type == "Adam":
            replacement.extend(lowering.adam())
        elif node.op_type == "Adagrad":
            replacement.extend(lowering.adagrad())
        else:
            raise UnsupportedOperatorError(
                f"{TRAINING_DOMAIN} operator {node.op_type!r} has no lowering in this runtime"
            )
    del graph.node[:]
    graph.node.extend(replacement)


def lower_training_ops(model: ModelProto) -> ModelProto:
    """Return a copy of ``model`` whose Momentum/Adam/Adagrad nodes are standard ONNX operators.

    Works on ``model.graph`` and all its subgraphs; ``training_info`` is left untouched (lower the
    concatenated graphs instead, as ``TrainingSession`` does).  The opset import of the training
    domain is removed when no node uses it any more, so runtimes that do not know the domain load
    the result.  Raises ``UnsupportedOperatorError`` for the Gradient operator.
    """
    _reject_gradient_ops(model.graph, "the model")
    lowered = ModelProto()
    lowered.CopyFrom(model)
    if not any(n.domain == TRAINING_DOMAIN for n in _iter_nodes(lowered.graph)):
        return lowered

    types = _collect_elem_types(lowered)
    names = _NameMaker(lowered)
    _lower_graph(lowered.graph, types, names)

    still_used = {n.domain for n in _iter_nodes(lowered.graph)}
    still_used.update(n.domain for f in lowered.functions for n in f.node)
    if TRAINING_DOMAIN not in still_used:
        kept = [o for o in lowered.opset_import if o.domain != TRAINING_DOMAIN]
        del lowered.opset_import[:]
        lowered.opset_import.extend(kept)
    return lowered
