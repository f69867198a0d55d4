#!/usr/bin/env bash
# Regenerates src/compat/data/ (what each ONNX Runtime training release loads) by probing the
# releases themselves: one pinned venv per release (tests/python/releases/, the same venvs the
# cross-release tests use), probe_release.py run in each, twice (the second time with every
# contrib operator name any release registers, so each name is tried in every release).
#
# Usage: bash docs/experiments/ort_releases/make_tables.sh        (about 5 minutes; 2 cores)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
data="$repo/src/compat/data"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
setup="$repo/tests/python/setup_venv.sh"
releases=(1.16 1.17 1.18 1.19)
declare -A python
for release in 1.16 1.17 1.18; do
    python[$release]="$(bash "$setup" "$repo/tests/python/releases/ort-$release.txt" "ort-$release-venv")"
done
python[1.19]="$(bash "$setup" "$repo/tests/python/releases/ort-1.19-newest-onnx.txt" "ort-1.19-newest-onnx-venv")"

# The schemas of the newest onnx (1.19's venv has it): every operator version there is.
"${python[1.19]}" "$here/dump_schemas.py" >"$work/schemas.jsonl"
for release in "${releases[@]}"; do
    "${python[$release]}" "$here/probe_release.py" "$work/schemas.jsonl" >"$work/first-$release.txt" 2>/dev/null &
done
wait
cat "$work"/first-*.txt | awk '$1 == "contrib" { print $3 }' | sort -u >"$work/names.txt"
for release in "${releases[@]}"; do
    "${python[$release]}" "$here/probe_release.py" "$work/schemas.jsonl" "$work/names.txt" >"$data/ort-$release.txt" 2>/dev/null &
done
wait
"${python[1.19]}" "$here/schema_table.py" <"$work/schemas.jsonl" >"$data/onnx-schemas.txt"
ls -l "$data"
