"""Reading and checking the format: state variables, concatenated graphs, binding rules."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np
import onnx
import onnx.external_data_helper
from onnx import GraphProto, ModelProto, NodeProto, TensorProto, helper, numpy_helper

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
