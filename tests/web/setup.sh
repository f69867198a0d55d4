#!/usr/bin/env bash
# Make the browser harness ready to run (tests/web/README.md): Debian's chromium (apt-get, when
# /usr/bin/chromium is missing) and the pinned npm packages of tests/web/package-lock.json in
# tests/web/node_modules (`npm ci --ignore-scripts`: onnxruntime-web 1.17.3, 1.18.0, 1.19.2 and
# playwright-core, which downloads no browser). Idempotent: node_modules is reinstalled only when
# package-lock.json changed since the last complete install (its SHA-256 is kept in
# node_modules/.lock.sha256, written last), so a second run takes well under a second.
#
# Usage: tests/web/setup.sh        (prints the chromium path on stdout; progress goes to stderr)
# Env:   CHROMIUM  another browser to use instead of installing Debian's (must exist)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

chromium="${CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$chromium" ]]; then
    if [[ -n "${CHROMIUM:-}" ]]; then
        echo "setup.sh: CHROMIUM=$CHROMIUM is not an executable file" >&2
        exit 1
    fi
    echo "setup.sh: installing Debian's chromium (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    # A source that cannot be reached makes `apt-get update` exit non-zero although Debian's own
    # lists were updated; the install below tells whether chromium can be had.
    apt-get update -qq >"$log" 2>&1 || true
    if ! apt-get install -y -qq --no-install-recommends chromium >>"$log" 2>&1; then
        echo "setup.sh: apt-get install chromium failed:" >&2
        cat "$log" >&2
        exit 1
    fi
fi
# (Debian's wrapper prints "[: N: unexpected operator" from /etc/chromium.d/dev-shm when /dev/shm
# shows up twice in findmnt: harmless.)
"$chromium" --version >&2 2>/dev/null

stamp="$here/node_modules/.lock.sha256"
want="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "setup.sh: npm ci in tests/web" >&2
    if ! (cd "$here" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >"$log" 2>&1; then
        echo "setup.sh: npm ci failed:" >&2
        cat "$log" >&2
        exit 1
    fi
    echo "$want" >"$stamp"
fi
echo "$chromium"
