"""ONNX Runtime's ORT format of an output artifacts set, written the way
``generate_artifacts(ort_format=True)`` writes it: per model ``convert_onnx_models_to_ort(model,
output_dir=..., optimization_styles=[OptimizationStyle.Fixed])`` (an InferenceSession on the CPU
provider at ORT_ENABLE_ALL, unless ``ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL`` says
otherwise) gives ``<model>.ort`` and ``<model>.required_operators.config``; then
``create_config_from_models`` lists the operators of all of them in one file for the set.

The Rust core decides when to convert and calls :class:`Converter` on the staged output folder
before renaming it into place (src/formats/ort_artifacts/ort_format.rs), and checks what it wrote.
Plain ``onnxruntime`` cannot load training or optimizer models (``com.microsoft`` training
operators); onnxruntime-training can, hence the same requirement as ``onnx_lookahead.ort``.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import pathlib
from typing import Iterator, List, Optional, Sequence

from ._runtime import require_training_api

LEVEL_VARIABLE = "ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL"


class Converter:
    """The converter the Rust core calls (``available`` first, then ``convert``)."""

    def available(self) -> Optional[str]:
        """None when the conversion can run in this environment, else why not, with the fix."""
        try:
            require_training_api("writing the ORT format (--ort-format, ort_format=True)")
        except ImportError as error:
            return str(error)
        return None

    def convert(self, folder: str, destination: str, models: Sequence[str], merged_config: str) -> List[str]:
        """Converts ``models`` (file names in ``folder``); writes the operators of all of them to
        ``merged_config``; returns the names of the files written. The operator lists name their
        models at ``destination``, where ``folder`` is renamed to."""
        root = logging.getLogger()
        handlers = list(root.handlers)
        from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort
        from onnxruntime.tools.ort_format_model import create_config_from_models

        # Importing ORT's tools runs logging.basicConfig: the caller's logging stays the caller's.
        root.handlers[:] = handlers
        staged = pathlib.Path(folder).resolve()
        # The converter names its files after the level it used ("all" adds nothing).
        level = os.environ.get(LEVEL_VARIABLE, "all")
        suffix = "" if level == "all" else f".{level}"
        written: List[str] = []
        converted: List[pathlib.Path] = []
        # The converter prints its progress on stdout, which belongs to the caller, and logs each
        # operator list it writes at INFO.
        with contextlib.redirect_stdout(io.StringIO()), _quiet_logger("ort_format_model.utils"):
            for model in models:
                stem = model[: -len(".onnx")] if model.endswith(".onnx") else model
                convert_onnx_models_to_ort(
                    staged / model, output_dir=staged, optimization_styles=[OptimizationStyle.Fixed]
                )
                names = [f"{stem}{suffix}.ort", f"{stem}.required_operators{suffix}.config"]
                for name in names:
                    if not (staged / name).is_file():
                        raise RuntimeError(f"convert_onnx_models_to_ort wrote no {name}")
                written += names
                converted.append(staged / names[0])
            merged = f"{merged_config[: -len('.config')]}{suffix}.config"
            create_config_from_models(converted, staged / merged, enable_type_reduction=False)
        written.append(merged)
        for name in written:
            if name.endswith(".config"):
                _name_destination(staged / name, staged, pathlib.Path(destination))
        return written


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _name_destination(config: pathlib.Path, staged: pathlib.Path, destination: pathlib.Path) -> None:
    """The operator list's header names the models it was made from: name them where they will
    be, not in the staging folder that is renamed."""
    text = config.read_text()
    fixed = text.replace(f"# - {staged}{os.sep}", f"# - {destination}{os.sep}")
    if fixed != text:
        config.write_text(fixed)
