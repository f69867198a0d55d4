"""The ``onnx-lookahead`` console script: the Rust command line, run in this process."""
from __future__ import annotations

import sys

from . import _native
from ._ort_format import Converter


def main() -> None:
    sys.stdout.flush()
    # With the package's converter: --ort-format (and the default when the input has .ort copies).
    sys.exit(_native.run_cli(sys.argv, Converter()))
