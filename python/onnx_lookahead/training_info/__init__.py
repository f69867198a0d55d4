"""A small reference runtime for ONNX models that carry ``ModelProto.training_info``.

Why this exists
---------------
The ONNX format can describe a complete training loop inside one model file:
``ModelProto.training_info`` holds one or more ``TrainingInfoProto`` entries, each with an
``initialization`` graph (resets the model), an ``algorithm`` graph (one training iteration) and
bindings that say which state variable receives which output.  No released runtime executes that
part of the format, so a model rewritten by ``onnx-lookahead`` for this format could not be trained
anywhere.  This package is the missing piece: a few hundred lines that follow the semantics written
in onnx.proto / docs/IR.md literally, small enough to audit, and good enough to train small models.

How a model is trained with it
------------------------------
::

    from onnx_lookahead.training_info import TrainingSession, check_training_model

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

    python -m onnx_lookahead.training_info describe model.onnx
    python -m onnx_lookahead.training_info check model.onnx
    python -m onnx_lookahead.training_info train model.onnx --feeds batch.npz --steps 100 --save out.onnx

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

Install with ``pip install "onnx-lookahead[training-info]"``: onnx, and one ONNX Runtime build for
the ``"ort"`` backend (onnxruntime-training-cpu 1.19.2 up to Python 3.12, so that it coexists with
the ``[ort]`` extra; onnxruntime from Python 3.13).  Importing this package without onnx, or with
two ONNX Runtime builds installed over each other, raises ImportError with the fix.
"""

from .._runtime import require_onnx

# Before the submodules import onnx: without it, say which extra to install.
require_onnx("onnx_lookahead.training_info")

from .lowering import lower_training_ops
from .model import (
    BACKENDS,
    LOWERABLE_OPS,
    TRAINING_DOMAIN,
    TrainingModelError,
    UnsupportedOperatorError,
    check_training_model,
    concatenate_graphs,
    load_model,
    state_variable_names,
)
from .session import TrainingSession

__all__ = [
    "BACKENDS",
    "LOWERABLE_OPS",
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
