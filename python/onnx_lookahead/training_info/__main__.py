"""The command line: `python -m onnx_lookahead.training_info describe|check|train ...`."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np
import onnx
import onnx.external_data_helper
from onnx import GraphProto, ModelProto, NodeProto, TensorProto, helper, numpy_helper
import argparse
import sys

from .model import BACKENDS, _iter_nodes, check_training_model, load_model, state_variable_names
from .session import TrainingSession

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


if __name__ == "__main__":  # python -m onnx_lookahead.training_info
    sys.exit(main())
