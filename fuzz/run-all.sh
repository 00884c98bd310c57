#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS seconds (default 20),
# on the stable toolchain (`-O --sanitizer none`), one after the other.
#
#   fuzz/run-all.sh [SECONDS]
#
# Each run starts from the committed seeds (fuzz/corpus/<target>/) and the
# regression inputs (fuzz/regressions/<target>/); what it discovers goes to
# fuzz/target/run-all/corpus/<target>/ (ignored by git), crashes to
# fuzz/artifacts/<target>/. Installs cargo-fuzz if it is missing.
# Exits non-zero if any target crashed; prints executions and exec/s.
set -uo pipefail
secs="${1:-20}"
fuzz_dir="$(cd "$(dirname "$0")" && pwd)"
cd "$fuzz_dir/.."
export CARGO_TERM_COLOR=never

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --version 0.13.2 --locked || exit 1
fi

targets=$(cargo fuzz list)
echo "==> building fuzz targets: $(echo $targets)"
start=$(date +%s)
cargo fuzz build -O --sanitizer none || exit 1
echo "==> build took $(( $(date +%s) - start )) s"

passed=0
failed=0
summary=""
for t in $targets; do
  work="$fuzz_dir/target/run-all/corpus/$t"
  log="$fuzz_dir/target/run-all/$t.log"
  mkdir -p "$work" "$fuzz_dir/corpus/$t"
  dirs=("$work" "$fuzz_dir/corpus/$t")
  [ -d "$fuzz_dir/regressions/$t" ] && dirs+=("$fuzz_dir/regressions/$t")
  echo "==> $t: ${secs} s"
  cargo fuzz run -O --sanitizer none "$t" "${dirs[@]}" -- \
    -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
  speed=$(grep -E '^stat::average_exec_per_sec' "$log" | awk '{print $2}')
  line="$t: ${runs:-?} executions, ${speed:-?} exec/s"
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    echo "    $line"
  else
    failed=$((failed + 1))
    line="$line, FAILED (exit $rc)"
    echo "    $line"
    grep -E -A8 "panicked at|ERROR: libFuzzer|Test unit written" "$log" | head -40
  fi
  summary="$summary$line"$'\n'
done

echo "==> summary"
printf '%s' "$summary"
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
