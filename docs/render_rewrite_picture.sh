#!/usr/bin/env bash
# Reproduces docs/rewrite_ort_adamw.png: the bundled ORT AdamW artifacts rewritten with the default
# options (k=5, alpha=0.5) into a temporary folder, drawn with `inspect --format dot`, rendered by
# Graphviz left to right at a modest resolution. Needs cargo and Graphviz's `dot`
# (Debian: apt-get install graphviz).
#
# Usage: docs/render_rewrite_picture.sh [OUTPUT.png]   (default: docs/rewrite_ort_adamw.png)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
output="${1:-docs/rewrite_ort_adamw.png}"
command -v dot >/dev/null || { echo "render_rewrite_picture.sh: Graphviz's dot is not on PATH" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cargo build --quiet --release --locked
tool=target/release/onnx-lookahead
# The folder's name is the picture's last title line.
"$tool" rewrite fixtures/ort_adamw --output "$work/ort_adamw" 2>/dev/null
"$tool" inspect "$work/ort_adamw" --format dot > "$work/rewrite.dot"
dot -Tpng -Gdpi=72 "$work/rewrite.dot" -o "$output"
echo "wrote $output"
