#!/usr/bin/env bash
# Builds the fuzz targets with coverage instrumentation on stable Rust (libfuzzer-sys plus the
# sancov flags cargo-fuzz would pass; see fuzz/README.md) and runs each for a given time, up to
# one target per core at once. Prints one line per target (executions, exec/s, corpus size,
# findings) and a total; exits 1 if any target found something (crash, timeout, out of memory).
#
#   bash fuzz/run.sh [--seconds N] [--target NAME|all] [--jobs J] [--smoke] [--strict-validation]
#
#   --seconds N   time per target (default 60)
#   --target T    onnx_model, checkpoint, external_data, rewrite, or all (default)
#   --jobs J      targets run at once (default: the number of cores)
#   --smoke       quick check for the test command: the fast-building `smoke` profile and a
#                 throw-away corpus (otherwise: the `release` profile and fuzz/corpus/<target>,
#                 kept between runs)
#   --strict-validation  rewrite target: count the library's internal-validation refusals
#                 (Error::Validation) as findings
#
# Findings are written to fuzz/artifacts/<target>/ (crash-*, timeout-*, oom-*); replay one with
# `fuzz/target/<host>/<profile>/<target> <file>`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

all_targets=(onnx_model checkpoint external_data rewrite)
seconds=60
target=all
jobs=$(nproc 2>/dev/null || echo 2)
smoke=0
strict=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --target) target="$2"; shift 2 ;;
        --jobs) jobs="$2"; shift 2 ;;
        --smoke) smoke=1; shift ;;
        --strict-validation) strict=1; shift ;;
        -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [[ "$target" == all ]]; then
    targets=("${all_targets[@]}")
elif [[ " ${all_targets[*]} " == *" $target "* ]]; then
    targets=("$target")
else
    echo "run.sh: unknown target $target (one of: ${all_targets[*]}, all)" >&2
    exit 2
fi
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -ge 1 ]] || { echo "run.sh: --seconds needs a positive integer" >&2; exit 2; }
[[ "$jobs" =~ ^[0-9]+$ && "$jobs" -ge 1 ]] || { echo "run.sh: --jobs needs a positive integer" >&2; exit 2; }

# libfuzzer-sys compiles libFuzzer (C++17) with the system C++ compiler.
if ! command -v c++ >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing a C++ compiler (g++) for libFuzzer"
        apt-get update -qq && apt-get install -y -qq g++ >/dev/null
    else
        echo "run.sh: needs a C++ compiler (c++), e.g. Debian's g++" >&2
        exit 1
    fi
fi

profile=release
[[ $smoke -eq 1 ]] && profile=smoke
host=$(rustc -vV | sed -n 's/^host: //p')
# Coverage for libFuzzer (inline 8-bit counters + PC table, comparison tracing), as cargo-fuzz
# sets it, minus the sanitizer (-Zsanitizer needs nightly). --target keeps these flags away from
# build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
unset CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS
echo "== build (profile $profile, target $host)"
build_start=$SECONDS
cargo build --locked --profile "$profile" --target "$host" --target-dir target --bins
echo "== built in $((SECONDS - build_start)) s"
bin_dir="target/$host/$profile"

work=$(mktemp -d "$( [[ -d /dev/shm ]] && echo /dev/shm || echo "${TMPDIR:-/tmp}")/onnx-lookahead-fuzz-run.XXXXXX")
trap 'rm -rf "$work"' EXIT
export FUZZ_WORKDIR="$work/scratch" FUZZ_SEED_DIR="$work/seeds"
[[ $strict -eq 1 ]] && export FUZZ_STRICT_VALIDATION=1

findings_of() { # artifact files of a target, one per line
    ls -1 "artifacts/$1" 2>/dev/null | grep -E '^(crash|timeout|oom|leak)-' || true
}

run_target() {
    local t="$1" corpus
    if [[ $smoke -eq 1 ]]; then corpus="$work/corpus/$t"; else corpus="corpus/$t"; fi
    mkdir -p "$corpus" "artifacts/$t"
    findings_of "$t" > "$work/$t.before"
    local start=$SECONDS rc=0
    # -timeout: an input running longer is a finding (hang); the outer timeout is a safety net.
    timeout $((seconds + 300)) "$bin_dir/$t" "$corpus" "$FUZZ_SEED_DIR/$t" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -dict=onnx.dict -artifact_prefix="artifacts/$t/" > "$work/$t.log" 2>&1 || rc=$?
    local elapsed=$((SECONDS - start))
    local execs rate corpus_size new found
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -n 1)
    if [[ -z "$execs" ]]; then # no final stats: take the last status line
        execs=$(grep -oE '^#[0-9]+' "$work/$t.log" | tail -n 1 | tr -d '#')
    fi
    execs=${execs:-0}
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/$t.log" | tail -n 1)
    corpus_size=$(find "$corpus" -type f | wc -l)
    new=$(comm -13 "$work/$t.before" <(findings_of "$t"))
    found=$(printf '%s' "$new" | grep -c . || true)
    printf 'fuzz %-14s %12s executions in %4d s (%s exec/s), corpus %5d inputs, findings %d\n' \
        "$t" "$execs" "$elapsed" "${rate:-?}" "$corpus_size" "$found" > "$work/$t.summary"
    if [[ -n "$new" ]]; then
        while read -r f; do echo "  finding: fuzz/artifacts/$t/$f" >> "$work/$t.summary"; done <<< "$new"
        grep -m 3 -E 'panicked at|^(thread .* panicked)|ERROR: libFuzzer' "$work/$t.log" \
            | sed 's/^/  /' >> "$work/$t.summary" || true
    elif [[ $rc -ne 0 ]]; then
        echo "  (the fuzzer exited with status $rc; last lines of its log:)" >> "$work/$t.summary"
        tail -n 5 "$work/$t.log" | sed 's/^/  /' >> "$work/$t.summary"
        echo 1 > "$work/$t.failed"
    fi
    echo "$execs $found" > "$work/$t.numbers"
}

echo "== fuzzing ${targets[*]}: $seconds s each, $jobs at once"
running=0
for t in "${targets[@]}"; do
    if [[ $running -ge $jobs ]]; then
        wait -n || true
        running=$((running - 1))
    fi
    run_target "$t" &
    running=$((running + 1))
done
wait

total_execs=0
total_found=0
failed=0
for t in "${targets[@]}"; do
    cat "$work/$t.summary"
    read -r execs found < "$work/$t.numbers"
    total_execs=$((total_execs + execs))
    total_found=$((total_found + found))
    [[ -f "$work/$t.failed" ]] && failed=1
done
echo "fuzz total: $total_execs executions, $total_found findings"
if [[ $total_found -gt 0 || $failed -ne 0 ]]; then
    exit 1
fi
