#!/usr/bin/env bash
# Every check and test Switchyard has: formatting, clippy, and the whole test
# suite. Installs what the tests need when it is missing. Exits non-zero if
# anything fails or if no test ran.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_test_tools

echo "==> cargo fmt --check" >&2
cargo fmt --all -- --check
echo "==> cargo clippy" >&2
cargo clippy --workspace --all-targets -- -D warnings
echo "==> cargo build" >&2
cargo build --workspace --bins
echo "==> static binaries for the test images" >&2
scripts/build-images.sh --binaries-only
echo "==> cargo test" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --lib --bins --tests --no-fail-fast 2>&1 | tee "$log" || status=$?
read -r passed failed < <(awk '/^test result:/ {
  for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }
} END { print p + 0, f + 0 }' "$log")
echo "total: $passed passed, $failed failed"
if [ "$status" != 0 ]; then exit "$status"; fi
if [ "$passed" = 0 ]; then echo "no test ran" >&2; exit 1; fi
