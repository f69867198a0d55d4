"""The ``onnx-lookahead`` console script: the Rust command line, run in this process."""
from __future__ import annotations

import sys

from . import _native


def main() -> None:
    sys.stdout.flush()
    sys.exit(_native.run_cli(sys.argv))
