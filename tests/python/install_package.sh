#!/usr/bin/env bash
# Build the onnx-lookahead Python package from this clone and install it into the pinned venv
# (target/py-venv), exactly as a user's `pip install <clone>` does (PEP 517, maturin), replacing an
# earlier install. The end-to-end tests and the benchmarks then run the installed package: its API,
# its console script `onnx-lookahead`, and onnx_lookahead.training_info.
#
# Usage: tests/python/install_package.sh      (prints the venv's python path on stdout)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="$("$here/setup_venv.sh")"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# Its own cargo target folder: the extension (feature `python`) does not evict the plain release
# build of the command line that the Rust tests use.
export CARGO_TARGET_DIR="$repo/target/python-package"
if ! "$python" -m pip install --disable-pip-version-check --no-input --no-deps --force-reinstall \
        "$repo" >"$log" 2>&1; then
    echo "install_package.sh: pip install $repo failed:" >&2
    cat "$log" >&2
    exit 1
fi
echo "$python"
