#!/usr/bin/env bash
# Runs every property test of the workspace with many cases and a fresh seed, and prints each
# property's case count and time (README, "Property tests"). CI runs the same properties with
# 100,000 cases each and a fixed seed.
#
#   scripts/proptest-soak.sh [CASES]     # CASES per property; default 2,000,000
#
# PROPTEST_RNG_SEED replays a run (the seed is printed first); THREADS sets how many
# properties run at once (default 2). A failing property prints its shrunk input and the
# script exits non-zero. Builds the dev profile, as CI does.
set -euo pipefail

cases="${1:-2000000}"
seed="${PROPTEST_RNG_SEED:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}"
cd "$(dirname "$0")/.."

# Every property runs through `impulse_test_support::prop::check`; these filters select them
# (the `proptests` modules, and the two properties that live with their example tests).
filters=(proptests any_bytes_decode_or_fail_and_events_round_trip any_edit_of_a_signed_request)

echo "Property soak: ${cases} cases per property, seed ${seed}"
start=${SECONDS}
status=0
PROPTEST_CASES="${cases}" PROPTEST_RNG_SEED="${seed}" \
    cargo test --workspace --exclude impulse-tests --exclude impulse-benches --lib --bins -- \
    --nocapture --test-threads="${THREADS:-2}" "${filters[@]}" >"${TMPDIR:-/tmp}/proptest-soak.log" 2>&1 ||
    status=$?
# A property prints one line when it passes; a failure prints its shrunk input.
grep -oE 'property [a-z0-9_:]+: [0-9]+ cases in [^ ]+' "${TMPDIR:-/tmp}/proptest-soak.log" || true
grep -E -A40 'property [a-z0-9_:]+ failed' "${TMPDIR:-/tmp}/proptest-soak.log" || true
echo "Property soak: $((SECONDS - start)) s, exit status ${status} (seed ${seed}; log in ${TMPDIR:-/tmp}/proptest-soak.log)"
exit "${status}"
