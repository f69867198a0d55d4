#!/usr/bin/env bash
# Build the release binary and the pinned venv, then run the ORT step-time benchmark.
# Arguments go to benches/ort_step_time.py (see its --help).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${ONNX_LOOKAHEAD_BIN:-}" ]]; then
    cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
fi
python="$("$repo/tests/python/setup_venv.sh")"
exec "$python" "$repo/benches/ort_step_time.py" "$@"
