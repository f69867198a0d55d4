#!/usr/bin/env bash
# Build the release binary and the pinned venv (with the package), then run the graph-size scaling benchmark.
# Arguments go to benches/graph_scale.py (see its --help). Takes about 10 minutes (more with
# --baseline, whose runs stop at --timeout).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${ONNX_LOOKAHEAD_BIN:-}" ]]; then
    cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
    export ONNX_LOOKAHEAD_BIN="$repo/target/release/onnx-lookahead"
fi
# The venv with the package installed (the test kit imports onnx_lookahead.ort).
python="$("$repo/tests/python/install_package.sh")"
exec "$python" "$repo/benches/graph_scale.py" "$@"
