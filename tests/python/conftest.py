"""Make the runtime in examples/ and the helpers next to this file importable from the tests."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
for path in (HERE, REPO / "examples"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
