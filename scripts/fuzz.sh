#!/usr/bin/env bash
# The fuzz targets, run longer than in ./scripts/test.sh: the request
# validation and wire conversions (switchyard-model, switchyard-proto), the
# store's codecs, history entries and snapshot chunks, instance records and
# backup files (cd-registry, switchyard-proto). They are proptest properties
# named fuzz_*, so they run on stable Rust; the test suite runs each with
# proptest's default 256 cases.
#
#   scripts/fuzz.sh            # 50,000 cases per target
#   scripts/fuzz.sh 1000000    # as many as you like
#
# A failure prints the smallest input proptest found and saves it under
# proptest-regressions/, where the next run tries it first.
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${1:-50000}"
echo "==> fuzz targets, $cases cases each" >&2
PROPTEST_CASES="$cases" cargo test --release -p switchyard-model -p switchyard-proto -p cd-registry --lib fuzz_
