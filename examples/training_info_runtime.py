#!/usr/bin/env python3
"""A small reference runtime for ONNX models that carry ``ModelProto.training_info``.

Why this exists
---------------
The ONNX format can describe a complete training loop inside one model file:
``ModelProto.training_info`` holds one or more ``TrainingInfoProto`` entries, each with an
``initialization`` graph (resets the model), an ``algorithm`` graph (one training iteration) and
bindings that say which state variable receives which output.  No released runtime executes that
part of the format, so a model rewritten by ``onnx-lookahead`` for this format could not be trained
anywhere.  This module is the missing piece: a few hundred lines that follow the semantics written
in onnx.proto / docs/IR.md literally, small enough to audit, and good enough to train small models.

How a model is trained with it
------------------------------
::

    from training_info_runtime import TrainingSession, check_training_model

    check_training_model("model.onnx")          # the ONNX checker ignores training_info
    session = TrainingSession("model.onnx")     # backend="ort" (default) or "reference"
    session.initialize()                        # run every initialization graph once
    for batch in batches:                       # e.g. {"X": features, "Y": labels}
        outputs = session.step(batch)           # one training iteration; outputs of the algorithms
        print(outputs["loss"])
    predictions = session.run_inference({"X": features})   # ModelProto.graph at the current state
    onnx.save(session.to_model(), "trained.onnx")          # state written back into initializers

A saved model resumes where it stopped: the constructor pre-initialises every state variable from
its initializer, so create a session on ``trained.onnx`` and call ``step`` without ``initialize``.

From a shell::

    python training_info_runtime.py describe model.onnx
    python training_info_runtime.py check model.onnx
    python training_info_runtime.py train model.onnx --feeds batch.npz --steps 100 --save out.onnx

Semantics implemented (see ``TrainingInfoProto`` in onnx.proto)
--------------------------------------------------------------
* State variables are the keys of every ``initialization_binding`` and ``update_binding``; each
  starts from the initializer of the same name (in ``ModelProto.graph`` or in the algorithm of the
  same ``TrainingInfoProto``).
* ``initialize()`` resets every state variable to its initializer value and then runs each
  ``initialization`` graph in order, assigning its outputs per ``initialization_binding``.
* ``step(feeds)`` runs every ``algorithm`` in order.  An algorithm executes as the concatenation of
  ``ModelProto.graph`` and the algorithm graph (inputs, initializers, outputs, nodes and value_info
  appended in that order); state initializers become graph inputs that are fed the current state.
  After each algorithm its outputs are assigned per ``update_binding`` before the next one runs, so a
  later algorithm sees the weights an earlier one just updated.  Binding values may be outputs of the
  algorithm or of ``ModelProto.graph``.

Backends
--------
``"ort"`` runs each concatenated graph in ``onnxruntime.InferenceSession``.  ONNX Runtime has no
kernels for the ``ai.onnx.preview.training`` operators, so Momentum, Adam and Adagrad are first
rewritten into standard ONNX operators, term by term from their operator definitions.
``"reference"`` runs the graphs in ``onnx.reference.ReferenceEvaluator``, which implements those
three operators natively; it is slow but independent of the lowering, which makes it a good cross
check.  Neither backend can run the ``Gradient`` operator (it needs automatic differentiation of the
graph); write gradients as explicit operators in the algorithm instead.  Sessions are built once per
graph when the ``TrainingSession`` is created, not once per step.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np
import onnx
import onnx.external_data_helper
from onnx import GraphProto, ModelProto, NodeProto, TensorProto, helper, numpy_helper

__all__ = [
    "TRAINING_DOMAIN",
    "TrainingModelError",
    "UnsupportedOperatorError",
    "TrainingSession",
    "check_training_model",
    "concatenate_graphs",
    "lower_training_ops",
    "load_model",
    "state_variable_names",
]

TRAINING_DOMAIN = "ai.onnx.preview.training"
#: The operators of TRAINING_DOMAIN that the "ort" backend lowers to standard ONNX operators.
LOWERABLE_OPS = ("Momentum", "Adam", "Adagrad")
BACKENDS = ("ort", "reference")

ModelLike = Union[str, bytes, "os.PathLike[str]", ModelProto]


class TrainingModelError(ValueError):
    """The model's training_info breaks a rule of the format (bad binding, invalid graph, ...)."""


class UnsupportedOperatorError(NotImplementedError):
    """The model uses an operator that this runtime cannot execute (the Gradient operator)."""


# ---------------------------------------------------------------------------------------------
# Reading the format
# ---------------------------------------------------------------------------------------------


def load_model(model: ModelLike) -> ModelProto:
    """Return a ModelProto from a path, serialized bytes or a ModelProto (which is not copied).

    External data is loaded too, so state variables stored outside the .onnx file get values:
    ``onnx.load`` resolves it for ``ModelProto.graph`` only, so the tensors of the training_info
    graphs are resolved here, relative to the model's folder like the main graph's.
    """
    if isinstance(model, ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model))
    loaded = onnx.load(model)
    base_dir = os.path.dirname(os.fspath(model))
    for info in loaded.training_info:
        for graph in (info.initialization, info.algorithm):
            for tensor in _graph_tensors(graph):
                if onnx.external_data_helper.uses_external_data(tensor):
                    onnx.external_data_helper.load_external_data_for_tensor(tensor, base_dir)
                    tensor.data_location = onnx.TensorProto.DEFAULT
                    del tensor.external_data[:]
    return loaded


def _graph_tensors(graph: GraphProto):
    """Every TensorProto of a graph: initializers and tensor attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g)
            for sub in attr.graphs:
                yield from _graph_tensors(sub)


def state_variable_names(model: ModelProto) -> List[str]:
    """Names of all state variables, in first-seen order.

    The format defines them as the keys of every initialization_binding and update_binding.
    """
    names: Dict[str, None] = {}
    for info in model.training_info:
        for binding in itertools.chain(info.initialization_binding, info.update_binding):
            names.setdefault(binding.key, None)
    return list(names)


def concatenate_graphs(main: GraphProto, algorithm: GraphProto, name: Optional[str] = None) -> GraphProto:
    """The graph an algorithm executes as: ``main`` followed by ``algorithm``, field by field.

    Inputs, initializers, outputs, nodes, value_info and sparse initializers are appended in that
    order, which is how the format defines the execution of ``TrainingInfoProto.algorithm``.  The
    result may be invalid (for example duplicated names); ``check_training_model`` reports that.
    """
    graph = GraphProto()
    graph.CopyFrom(main)
    graph.name = name or f"{main.name}+{algorithm.name}"
    graph.input.extend(algorithm.input)
    graph.initializer.extend(algorithm.initializer)
    graph.sparse_initializer.extend(algorithm.sparse_initializer)
    graph.output.extend(algorithm.output)
    graph.node.extend(algorithm.node)
    graph.value_info.extend(algorithm.value_info)
    return graph


def _model_with_graph(template: ModelProto, graph: GraphProto) -> ModelProto:
    """A model with ``template``'s header (IR version, opsets, functions) around ``graph``.

    training_info is dropped: the resulting model is a plain inference model that any runtime or
    the ONNX checker can handle.
    """
    model = ModelProto()
    model.CopyFrom(template)
    del model.training_info[:]
    model.graph.CopyFrom(graph)
    return model


def _iter_graphs(graph: GraphProto) -> Iterable[GraphProto]:
    """``graph`` and every subgraph nested in node attributes (If, Loop, Scan bodies)."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _iter_graphs(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    yield from _iter_graphs(sub)


def _iter_nodes(graph: GraphProto) -> Iterable[NodeProto]:
    for sub in _iter_graphs(graph):
        yield from sub.node


def _find_gradient_ops(graph: GraphProto) -> List[str]:
    return [
        node.name or (node.output[0] if node.output else "<unnamed>")
        for node in _iter_nodes(graph)
        if node.domain == TRAINING_DOMAIN and node.op_type == "Gradient"
    ]


def _reject_gradient_ops(graph: GraphProto, where: str) -> None:
    """Fail early, with an explanation, instead of letting a backend fail with 'unknown op'."""
    found = _find_gradient_ops(graph)
    if found:
        raise UnsupportedOperatorError(
            f"{where} uses the {TRAINING_DOMAIN} Gradient operator (node(s) {found}). Neither "
            "backend of this runtime can execute it: it needs automatic differentiation of the "
            "graph, which ONNX Runtime and onnx.reference do not provide for ONNX-standard training "
            "models. Express the gradients with explicit operators in the algorithm graph instead."
        )


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def check_training_model(model: ModelLike, full_check: bool = True) -> None:
    """Validate a model including its training_info; raise on the first kind of problem found.

    ``onnx.checker.check_model`` never looks at training_info, so a model with an algorithm that
    cannot run or a binding to a name that does not exist passes it.  This helper runs the checker
    on the model, then on every concatenated ``ModelProto.graph ++ algorithm`` graph and every
    initialization graph, and finally checks the bindings against the rules of the format:

    * initialization_binding: key is an initializer of ModelProto.graph or of the same algorithm;
      value is an output of the initialization graph; keys unique within the binding; the
      initialization graph has no inputs and is present whenever there are bindings.
    * update_binding: key is an initializer of ModelProto.graph or of the same algorithm; value is
      an output of the algorithm or of ModelProto.graph; keys unique across all update bindings.

    Raises ``TrainingModelError`` (listing every binding problem) or the checker's error wrapped in
    a ``TrainingModelError`` that says which graph failed.
    """
    model = load_model(model)
    _run_checker(model, "ModelProto.graph", full_check)

    main_initializers = {t.name for t in model.graph.initializer}
    main_outputs = {o.name for o in model.graph.output}
    problems: List[str] = []
    update_keys_seen: Dict[str, int] = {}

    for index, info in enumerate(model.training_info):
        label = f"training_info[{index}]"
        algorithm_initializers = {t.name for t in info.algorithm.initializer}
        allowed_keys = main_initializers | algorithm_initializers

        if info.HasField("algorithm"):
            concatenated = _model_with_graph(model, concatenate_graphs(model.graph, info.algorithm))
            _run_checker(concatenated, f"{label}: ModelProto.graph ++ algorithm", full_check)
        else:
            problems.append(f"{label}: has no algorithm graph")

        has_initialization = info.HasField("initialization")
        if has_initialization:
            if len(info.initialization.input) > 0:
                problems.append(
                    f"{label}: the initialization graph must have no inputs, it has "
                    f"{[i.name for i in info.initialization.input]}"
                )
            _run_checker(
                _model_with_graph(model, info.initialization), f"{label}: initialization", full_check
            )
        elif len(info.initialization_binding) > 0:
            problems.append(f"{label}: has initialization_binding but no initialization graph")

        init_outputs = {o.name for o in info.initialization.output}
        init_keys_seen = set()
        for binding in info.initialization_binding:
            if binding.key in init_keys_seen:
                problems.append(f"{label}: initialization_binding key {binding.key!r} appears twice")
            init_keys_seen.add(binding.key)
            if binding.key not in allowed_keys:
                problems.append(
                    f"{label}: initialization_binding key {binding.key!r} is not an initializer of "
                    "ModelProto.graph or of this algorithm"
                )
            if binding.value not in init_outputs:
                problems.append(
                    f"{label}: initialization_binding value {binding.value!r} is not an output of "
                    "the initialization graph"
                )

        algorithm_outputs = {o.name for o in info.algorithm.output}
        for binding in info.update_binding:
            if binding.key in update_keys_seen:
                problems.append(
                    f"{label}: update_binding key {binding.key!r} is already bound by "
                    f"training_info[{update_keys_seen[binding.key]}]"
                )
            else:
                update_keys_seen[binding.key] = index
            if binding.key not in allowed_keys:
                problems.append(
                    f"{label}: update_binding key {binding.key!r} is not an initializer of "
                    "ModelProto.graph or of this algorithm"
                )
            if binding.value not in algorithm_outputs | main_outputs:
                problems.append(
                    f"{label}: update_binding value {binding.value!r} is not an output of the "
                    "algorithm or of ModelProto.graph"
                )

    if problems:
        raise TrainingModelError("invalid training_info:\n  " + "\n  ".join(problems))


def _run_checker(model: ModelProto, what: str, full_check: bool) -> None:
    try:
        onnx.checker.check_model(model, full_check=full_check)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise TrainingModelError(f"{what} is not a valid ONNX graph: {error}") from error


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


# ---------------------------------------------------------------------------------------------
# Backends: one compiled graph, run many times
# ---------------------------------------------------------------------------------------------


class _Runner:
    """A graph prepared once for repeated execution; ``run`` returns every graph output by name."""

    def __init__(self, model: ModelProto, backend: str, what: str, providers: Optional[Sequence[str]]):
        _reject_gradient_ops(model.graph, what)
        self.what = what
        self.input_names = [i.name for i in model.graph.input]
        self.output_names = [o.name for o in model.graph.output]
        if backend == "ort":
            import onnxruntime

            lowered = lower_training_ops(model)
            try:
                self._session = onnxruntime.InferenceSession(
                    lowered.SerializeToString(), providers=list(providers or ["CPUExecutionProvider"])
                )
            except Exception as error:  # ORT raises its own exception types
                raise TrainingModelError(f"onnxruntime cannot load {what}: {error}") from error
            self._run = lambda feeds: self._session.run(self.output_names, feeds)
        elif backend == "reference":
            from onnx.reference import ReferenceEvaluator

            self._evaluator = ReferenceEvaluator(model)
            self._run = lambda feeds: self._evaluator.run(self.output_names, feeds)
        else:
            raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        values = self._run(dict(feeds))
        return {name: np.asarray(value) for name, value in zip(self.output_names, values)}


def _state_as_inputs(graph: GraphProto, state_names: Iterable[str]) -> GraphProto:
    """A copy of ``graph`` whose state initializers are graph inputs instead.

    That is how the current state reaches the graph at every step without rebuilding the session.
    An initializer that already has a same-name graph input (a default value) just loses its
    initializer.
    """
    state = set(state_names)
    result = GraphProto()
    result.CopyFrom(graph)
    existing_inputs = {i.name for i in result.input}
    kept = []
    for tensor in result.initializer:
        if tensor.name not in state:
            kept.append(tensor)
            continue
        if tensor.name not in existing_inputs:
            result.input.append(
                helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
            )
    del result.initializer[:]
    result.initializer.extend(kept)
    return result


@dataclass
class _Algorithm:
    """One TrainingInfoProto, prepared: its runners and its bindings."""

    index: int
    runner: _Runner
    feed_names: List[str]  # inputs the caller provides (not state)
    state_inputs: List[str]  # inputs fed from the state
    own_outputs: List[str]  # outputs of the algorithm graph itself
    update_binding: List[tuple]
    initialization: Optional[_Runner]
    initialization_binding: List[tuple] = field(default_factory=list)


class TrainingSession:
    """Trains a model that carries ``ModelProto.training_info``.

    Parameters
    ----------
    model:
        Path, serialized bytes or ModelProto.  It is not modified.
    backend:
        ``"ort"`` (ONNX Runtime, preview training operators lowered to standard ones) or
        ``"reference"`` (``onnx.reference.ReferenceEvaluator``).
    check:
        Run ``check_training_model`` first (recommended: ONNX tooling does not validate bindings).
    providers:
        ONNX Runtime execution providers (default CPU).

    State starts at the initializer values (so a saved, trained model resumes where it stopped);
    call ``initialize()`` to reset it by running the initialization graphs.
    """

    def __init__(
        self,
        model: ModelLike,
        backend: str = "ort",
        check: bool = True,
        providers: Optional[Sequence[str]] = None,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
        self.model = load_model(model)
        self.backend = backend
        if len(self.model.training_info) == 0:
            raise TrainingModelError("the model has no training_info: there is nothing to train")
        for index, info in enumerate(self.model.training_info):
            _reject_gradient_ops(info.algorithm, f"training_info[{index}].algorithm")
            _reject_gradient_ops(info.initialization, f"training_info[{index}].initialization")
        if check:
            check_training_model(self.model)

        self.state_names = state_variable_names(self.model)
        self._initial_state = self._initializer_values()
        self._state: Dict[str, np.ndarray] = {k: v.copy() for k, v in self._initial_state.items()}
        self.step_count = 0

        main_state = [t.name for t in self.model.graph.initializer if t.name in self._initial_state]
        main_outputs = {o.name for o in self.model.graph.output}
        self._algorithms: List[_Algorithm] = []
        for index, info in enumerate(self.model.training_info):
            # An algorithm initializer is state only if this TrainingInfoProto binds it: the format
            # lets no other entry bind it, and another entry's state of the same name is unrelated.
            bound_here = {b.key for b in itertools.chain(info.initialization_binding, info.update_binding)}
            own_state = [t.name for t in info.algorithm.initializer if t.name in bound_here]
            graph = _state_as_inputs(
                concatenate_graphs(self.model.graph, info.algorithm), main_state + own_state
            )
            runner = _Runner(
                _model_with_graph(self.model, graph), backend, f"training_info[{index}].algorithm", providers
            )
            state_set = set(main_state + own_state)
            initialization = None
            if info.HasField("initialization") and len(info.initialization_binding) > 0:
                initialization = _Runner(
                    _model_with_graph(self.model, info.initialization),
                    backend,
                    f"training_info[{index}].initialization",
                    providers,
                )
            # Also checked by check_training_model; repeated because check=False skips that.
            readable = main_outputs | {o.name for o in info.algorithm.output}
            for binding in info.update_binding:
                if binding.value not in readable:
                    raise TrainingModelError(
                        f"training_info[{index}]: update_binding value {binding.value!r} is not an "
                        "output of the algorithm or of ModelProto.graph"
                    )
            self._algorithms.append(
                _Algorithm(
                    index=index,
                    runner=runner,
                    feed_names=[n for n in runner.input_names if n not in state_set],
                    state_inputs=[n for n in runner.input_names if n in state_set],
                    own_outputs=[o.name for o in info.algorithm.output],
                    update_binding=[(b.key, b.value) for b in info.update_binding],
                    initialization=initialization,
                    initialization_binding=[(b.key, b.value) for b in info.initialization_binding],
                )
            )

        inference_graph = _state_as_inputs(self.model.graph, main_state)
        self._inference = _Runner(_model_with_graph(self.model, inference_graph), backend, "ModelProto.graph", providers)
        self._inference_state = [n for n in self._inference.input_names if n in set(main_state)]
        self._inference_feeds = [n for n in self._inference.input_names if n not in set(main_state)]

    # -- state -----------------------------------------------------------------------------

    def _initializer_values(self) -> Dict[str, np.ndarray]:
        """Pre-initialisation of every state variable from its same-name initializer."""
        values: Dict[str, np.ndarray] = {}
        main = {t.name: t for t in self.model.graph.initializer}
        for index, info in enumerate(self.model.training_info):
            own = {t.name: t for t in info.algorithm.initializer}
            for binding in itertools.chain(info.initialization_binding, info.update_binding):
                tensor = own.get(binding.key, main.get(binding.key))
                if tensor is None:
                    raise TrainingModelError(
                        f"training_info[{index}]: state variable {binding.key!r} has no initializer "
                        "in ModelProto.graph or in this algorithm"
                    )
                values.setdefault(binding.key, numpy_helper.to_array(tensor).copy())
        return values

    @property
    def state(self) -> Dict[str, np.ndarray]:
        """Current value of every state variable (copies: changing them does not train)."""
        return {name: value.copy() for name, value in self._state.items()}

    def set_state(self, values: Mapping[str, np.ndarray]) -> None:
        """Overwrite some state variables (for example to restore a checkpoint)."""
        for name, value in values.items():
            if name not in self._state:
                raise KeyError(f"{name!r} is not a state variable; state variables: {self.state_names}")
            self._assign(name, value, "set_state")

    def _assign(self, name: str, value: np.ndarray, origin: str) -> None:
        """Store a bound value, keeping the state variable's dtype and shape.

        A change of floating-point width is rounded back (onnx.reference computes some optimizer
        results in float64); a change of kind or shape is a modelling error and raises.
        """
        current = self._state[name]
        value = np.asarray(value)
        if value.shape != current.shape:
            raise TrainingModelError(
                f"{origin}: state variable {name!r} has shape {current.shape}, the bound value has "
                f"shape {value.shape}"
            )
        if value.dtype != current.dtype:
            if value.dtype.kind != current.dtype.kind:
                raise TrainingModelError(
                    f"{origin}: state variable {name!r} is {current.dtype}, the bound value is {value.dtype}"
                )
            value = value.astype(current.dtype)
        self._state[name] = value.copy()

    # -- training --------------------------------------------------------------------------

    def initialize(self) -> None:
        """Reset the model: state back to the initializers, then run each initialization graph.

        Initialization graphs have no inputs; their outputs are assigned per
        initialization_binding, TrainingInfoProto by TrainingInfoProto, in order.
        """
        self._state = {k: v.copy() for k, v in self._initial_state.items()}
        for algorithm in self._algorithms:
            if algorithm.initialization is None:
                continue
            outputs = algorithm.initialization.run({})
            for key, value in algorithm.initialization_binding:
                self._assign(key, outputs[value], f"training_info[{algorithm.index}] initialization")
        self.step_count = 0

    @property
    def feed_names(self) -> List[str]:
        """Inputs that ``step`` needs from the caller (data, labels, ...), across all algorithms."""
        names: Dict[str, None] = {}
        for algorithm in self._algorithms:
            for name in algorithm.feed_names:
                names.setdefault(name, None)
        return list(names)

    def step(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run one training iteration and return the outputs of the algorithm graphs.

        Every algorithm runs in order on the current state; its update_binding is applied before
        the next algorithm runs.  When two algorithms have an output of the same name, the later
        one's value is returned.
        """
        known = set(self.feed_names)
        unknown = [name for name in feeds if name not in known]
        if unknown:
            raise KeyError(f"unknown feed(s) {unknown}; the algorithms take {sorted(known)}")
        results: Dict[str, np.ndarray] = {}
        for algorithm in self._algorithms:
            inputs = {name: np.asarray(feeds[name]) for name in algorithm.feed_names if name in feeds}
            inputs.update({name: self._state[name] for name in algorithm.state_inputs})
            outputs = algorithm.runner.run(inputs)
            for key, value in algorithm.update_binding:
                self._assign(key, outputs[value], f"training_info[{algorithm.index}] update")
            results.update({name: outputs[name] for name in algorithm.own_outputs})
        self.step_count += 1
        return results

    def run_inference(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run ModelProto.graph alone with the weights of the current state."""
        unknown = [name for name in feeds if name not in self._inference_feeds]
        if unknown:
            raise KeyError(f"unknown feed(s) {unknown}; ModelProto.graph takes {self._inference_feeds}")
        inputs = {name: np.asarray(value) for name, value in feeds.items()}
        inputs.update({name: self._state[name] for name in self._inference_state})
        return self._inference.run(inputs)

    def to_model(self) -> ModelProto:
        """A copy of the model with the current state written into its initializers.

        Saving it checkpoints the training: every state variable (weights, optimizer state,
        counters, Lookahead slow weights) lives in an initializer, and a new session on the saved
        model continues from exactly this state.
        """
        model = ModelProto()
        model.CopyFrom(self.model)
        graphs = [model.graph] + [info.algorithm for info in model.training_info]
        for graph in graphs:
            for tensor in graph.initializer:
                if tensor.name in self._state:
                    tensor.CopyFrom(numpy_helper.from_array(self._state[tensor.name], tensor.name))
        return model


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _describe(model: ModelProto) -> str:
    lines = [f"ir_version {model.ir_version}; opsets " + ", ".join(
        f"{o.domain or 'ai.onnx'}:{o.version}" for o in model.opset_import
    )]
    lines.append(f"ModelProto.graph inputs: {[i.name for i in model.graph.input]}")
    lines.append(f"ModelProto.graph outputs: {[o.name for o in model.graph.output]}")
    for index, info in enumerate(model.training_info):
        lines.append(f"training_info[{index}]:")
        lines.append(f"  algorithm inputs: {[i.name for i in info.algorithm.input]}")
        lines.append(f"  algorithm outputs: {[o.name for o in info.algorithm.output]}")
        ops = sorted({(n.domain or 'ai.onnx') + '::' + n.op_type for n in _iter_nodes(info.algorithm)})
        lines.append(f"  algorithm operators: {ops}")
        for binding in info.initialization_binding:
            lines.append(f"  initialization_binding {binding.key} <- {binding.value}")
        for binding in info.update_binding:
            lines.append(f"  update_binding {binding.key} <- {binding.value}")
    lines.append(f"state variables: {state_variable_names(model)}")
    return "\n".join(lines)


def _format_value(value: np.ndarray) -> str:
    return f"{value.item():.8g}" if value.size == 1 else f"<{value.dtype} {list(value.shape)}>"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description="Validate and train ONNX models that carry ModelProto.training_info."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    describe = commands.add_parser("describe", help="print graphs, bindings and state variables")
    describe.add_argument("model")
    check = commands.add_parser("check", help="checker on every concatenated graph + binding rules")
    check.add_argument("model")
    train = commands.add_parser("train", help="initialize, then run training steps on one batch")
    train.add_argument("model")
    train.add_argument("--feeds", required=True, help=".npz file whose arrays are fed by name each step")
    train.add_argument("--steps", type=int, default=1)
    train.add_argument("--backend", choices=BACKENDS, default="ort")
    train.add_argument(
        "--resume", action="store_true", help="start from the initializers instead of running initialization"
    )
    train.add_argument("--save", help="write the model with the trained state in its initializers")
    args = parser.parse_args(argv)

    model = load_model(args.model)
    if args.command == "describe":
        print(_describe(model))
        return 0
    if args.command == "check":
        check_training_model(model)
        print(f"{args.model}: OK ({len(model.training_info)} training_info entries)")
        return 0

    session = TrainingSession(model, backend=args.backend)
    if not args.resume:
        session.initialize()
    with np.load(args.feeds) as data:
        feeds = {name: data[name] for name in data.files}
    for step in range(1, args.steps + 1):
        outputs = session.step(feeds)
        print(f"step {step}: " + ", ".join(f"{k}={_format_value(v)}" for k, v in outputs.items()))
    if args.save:
        onnx.save(session.to_model(), args.save)
        print(f"saved {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
