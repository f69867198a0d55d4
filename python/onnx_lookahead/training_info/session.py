"""TrainingSession: one compiled graph per algorithm, run many times."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np
import onnx
import onnx.external_data_helper
from onnx import GraphProto, ModelProto, NodeProto, TensorProto, helper, numpy_helper
from .lowering import lower_training_ops
from .model import (
    BACKENDS,
    ModelLike,
    TrainingModelError,
    _model_with_graph,
    _reject_gradient_ops,
    check_training_model,
    concatenate_graphs,
    load_model,
    state_variable_names,
)

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
            try:
                import onnxruntime
            except ModuleNotFoundError as error:
                if error.name != "onnxruntime":
                    raise
                raise ImportError(
                    'the "ort" backend needs ONNX Runtime, which is not installed: '
                    'pip install "onnx-lookahead[training-info]" (or use backend="reference")'
                ) from None

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
        self._averaged = _averaged_weights(self.model)
        self.eval_weights = _recorded_eval_weights(self.model)

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

    def run_inference(self, feeds: Mapping[str, np.ndarray], weights: Optional[str] = None) -> Dict[str, np.ndarray]:
        """Run ModelProto.graph alone with the weights of the current state.

        ``weights``: ``"current"`` (the weights training continues from) or ``"averaged"`` (the
        average an onnx-lookahead rewrite keeps: Lookahead's slow weights, the EMA, SWA); default:
        what the rewrite chose for evaluation (``eval_weights``), else the current weights.
        """
        unknown = [name for name in feeds if name not in self._inference_feeds]
        if unknown:
            raise KeyError(f"unknown feed(s) {unknown}; ModelProto.graph takes {self._inference_feeds}")
        weights = self.eval_weights if weights is None else _weights_id(weights)
        if weights == "averaged" and not self._averaged:
            raise ValueError("the model keeps no averaged weights (it was not rewritten by onnx-lookahead)")
        inputs = {name: np.asarray(value) for name, value in feeds.items()}
        for name in self._inference_state:
            source = self._averaged.get(name, name) if weights == "averaged" else name
            inputs[name] = self._state[source]
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


_RECORD = "onnx_lookahead.record"


def _record(model: ModelProto) -> dict:
    import json

    for prop in model.metadata_props:
        if prop.key == _RECORD:
            try:
                return json.loads(prop.value)
            except ValueError:
                return {}
    return {}


def _weights_id(name: str) -> str:
    aliases = {"current": "current", "lookahead": "current", "averaged": "averaged", "slow": "averaged"}
    if name not in aliases:
        raise ValueError(f'weights must be "current" or "averaged", got {name!r}')
    return aliases[name]


def _recorded_eval_weights(model: ModelProto) -> str:
    return _weights_id(_record(model).get("eval_weights", "current"))


def _averaged_weights(model: ModelProto) -> Dict[str, str]:
    """Each wrapped weight's averaged state tensor (the first of its state), by weight name."""
    return {p["name"]: p["state"][0] for p in _record(model).get("parameters", []) if p.get("state")}
