#!/usr/bin/env bash
# Build the release binary and the pinned venv (with the package), then run the large-model benchmark.
# Arguments go to benches/large_models.py (see its --help). Needs ~10 GiB free under --work
# (default: the system temp dir) and takes about 10 minutes, most of it in generate_artifacts.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${ONNX_LOOKAHEAD_BIN:-}" ]]; then
    cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
    export ONNX_LOOKAHEAD_BIN="$repo/target/release/onnx-lookahead"
fi
# The venv with the package installed (the test kit imports onnx_lookahead.ort).
python="$("$repo/tests/python/install_package.sh")"
exec "$python" "$repo/benches/large_models.py" "$@"
