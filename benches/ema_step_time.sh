#!/usr/bin/env bash
# Install the package into the pinned venv, then run the EMA step-time benchmark (it rewrites with
# the package's Python API, so no separate binary is needed).
# Arguments go to benches/ema_step_time.py (see its --help).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$("$repo/tests/python/install_package.sh")"
exec "$python" "$repo/benches/ema_step_time.py" "$@"
