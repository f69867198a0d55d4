#!/usr/bin/env bash
# Build the release binary and the pinned venv (with the package), then run the ORT step-time benchmark.
# Arguments go to benches/ort_step_time.py (see its --help).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${ONNX_LOOKAHEAD_BIN:-}" ]]; then
    cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
    export ONNX_LOOKAHEAD_BIN="$repo/target/release/onnx-lookahead"
fi
# The venv with the package installed (the test kit imports onnx_lookahead.ort).
python="$("$repo/tests/python/install_package.sh")"
exec "$python" "$repo/benches/ort_step_time.py" "$@"
