#!/usr/bin/env bash
# The project's one test command (README "Test", .ci/run): sets up everything it needs on a fresh
# machine (the pinned Python venv under target/ with this clone pip-installed into it, flatc for
# the generated-code check), then runs
# every Rust test (unit, snapshot, CLI through the binary, generated-code freshness), a short
# smoke run of the fuzz targets, and every Python end-to-end test (ONNX Runtime training 1.19.2,
# the older releases 1.16-1.18 in venvs of their own, and the training_info runtime), and prints
# how many of each ran.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log_dir="target/test-logs"
mkdir -p "$log_dir"

echo "== python environment and package (pip install of this clone into the pinned venv)"
python="$(bash tests/python/install_package.sh)"
"$python" --version
"$(dirname "$python")/onnx-lookahead" --version
"$python" -c "import onnx_lookahead; print('installed', onnx_lookahead.__version__, 'at', onnx_lookahead.__file__)"

echo "== ONNX Runtime training releases for the cross-release tests (pinned venvs, tests/python/releases/)"
for requirements in tests/python/releases/ort-*.txt; do
    name="$(basename "$requirements" .txt)-venv"
    release_python="$(bash tests/python/setup_venv.sh "$requirements" "$name")"
    "$release_python" -c "import onnxruntime, onnx; print('$name:', 'onnxruntime', onnxruntime.__version__, 'onnx', onnx.__version__)"
done

echo "== onnxruntime-web harness (Debian's chromium, the pinned npm packages in tests/web/node_modules)"
chromium="$(bash tests/web/setup.sh)"
node --version
node -e "for (const v of ['1.17', '1.18', '1.19']) console.log('onnxruntime-web', require('./tests/web/node_modules/ort-web-' + v + '/package.json').version); console.log('playwright-core', require('./tests/web/node_modules/playwright-core/package.json').version)"
echo "browser: $chromium"

echo "== build (release)"
cargo build --release --locked

echo "== rust tests"
# Snapshots must match as committed; never write new ones in this run.
INSTA_UPDATE=no cargo test --release --locked 2>&1 | tee "$log_dir/rust.log"
rust_passed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($i == "passed;") n += $(i - 1) } END { print n + 0 }' "$log_dir/rust.log")

echo "== fuzz smoke (coverage-guided, 10 s per target; the long runs: fuzz/README.md)"
bash fuzz/run.sh --seconds 10 --smoke 2>&1 | tee "$log_dir/fuzz.log"
fuzz_summary=$(grep -E '^fuzz total' "$log_dir/fuzz.log" | tail -n 1)

echo "== python end-to-end tests (through the installed package and its console script)"
env -u ONNX_LOOKAHEAD_BIN "$python" -m pytest tests/python -q 2>&1 | tee "$log_dir/python.log"
python_summary=$(grep -E '^[0-9]+ passed' "$log_dir/python.log" | tail -n 1)

echo "== summary: rust ${rust_passed} passed; python ${python_summary}; ${fuzz_summary}"
