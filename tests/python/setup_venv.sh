#!/usr/bin/env bash
# Create (or reuse) the pinned Python environment for the end-to-end tests, fixtures and benchmarks.
#
# The venv lives at <repo>/target/py-venv, beside the Rust build output, so `cargo clean` removes it
# and git never sees it. It is rebuilt only when tests/python/requirements.txt changes: the SHA-256
# of that file is kept in target/py-venv/.requirements.sha256 and written only after a complete,
# successful install, so an interrupted install is redone on the next call.
#
# Usage: tests/python/setup_venv.sh [REQUIREMENTS NAME]   (prints the venv's python path on stdout)
#        Without arguments: tests/python/requirements.txt into target/py-venv. With them: another
#        pinned venv at target/NAME, e.g. an older ONNX Runtime release from tests/python/releases/.
# Env:   PYTHON   interpreter to build the venv with (default: python3; 3.11 is what is pinned for)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
req="${1:-$here/requirements.txt}"
venv="$repo/target/${2:-py-venv}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "$venv/bin/python"
    exit 0
fi

rm -rf "$venv"
mkdir -p "$repo/target"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! { "${PYTHON:-python3}" -m venv "$venv" &&
       "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req"; } >"$log" 2>&1; then
    echo "setup_venv.sh: creating $venv failed:" >&2
    cat "$log" >&2
    exit 1
fi
echo "$want" >"$stamp"
echo "$venv/bin/python"
