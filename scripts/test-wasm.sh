#!/usr/bin/env bash
# The core's unit tests compiled to wasm32-unknown-unknown and run under
# Node by wasm-bindgen-test-runner (the cargo runner for that target). It
# runs only #[wasm_bindgen_test]s: the core's test modules import
# `test_support::test`, which is that attribute there and libtest's
# #[test] elsewhere. Proptest and the tests needing threads are native only.
# Needs: rustup target wasm32-unknown-unknown, node, and wasm-bindgen-cli
# at the version of wasm-bindgen in Cargo.lock (.ci/run installs both).
# Extra arguments go to cargo test (e.g. a test name filter).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
runner=$(command -v wasm-bindgen-test-runner || echo "$HOME/.cargo/bin/wasm-bindgen-test-runner")
if [ ! -x "$runner" ]; then
  echo "wasm-bindgen-test-runner not found: cargo install wasm-bindgen-cli --version =$want --locked" >&2
  exit 1
fi
have=$("$runner" --version | awk '{ print $2 }')
if [ "$have" != "$want" ]; then
  echo "$runner is $have, Cargo.lock pins wasm-bindgen $want:" \
    "cargo install wasm-bindgen-cli --version =$want --locked" >&2
  exit 1
fi
command -v node >/dev/null || { echo "node not found (the tests run under Node)" >&2; exit 1; }

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER="$runner" \
  cargo test -p missive-core --lib --target wasm32-unknown-unknown --locked "$@" 2>&1 \
  | tee "$log" || status=$?
summary=$(grep -E '^test result:' "$log" | tail -n 1 || true)
passed=$(sed -nE 's/.* ([0-9]+) passed;.*/\1/p' <<<"$summary")
if [ "$status" -ne 0 ] || [ -z "$passed" ] || [ "$passed" -eq 0 ]; then
  echo "wasm32 unit tests FAILED (status $status): ${summary:-no test summary}" >&2
  exit 1
fi
echo "wasm32-unknown-unknown under Node ($(node --version)): $passed core unit tests passed"
