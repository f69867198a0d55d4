"""Silencing C++ logging: ORT's gradient builder and artifact generation print from C++, past
Python's sys.stdout, so the file descriptors themselves are pointed at /dev/null for a while.
Imports nothing of ORT, so the release venvs' worker (releases/worker.py) uses it too."""
from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def quiet_fds():
    """Silence stdout/stderr at the file-descriptor level for the duration of the block."""
    saved = [os.dup(1), os.dup(2)]
    sys.stdout.flush()
    sys.stderr.flush()
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
