#!/usr/bin/env bash
# Fuzzing on the stable toolchain (crates/fuzz): every target for a bounded time on its
# committed seed corpus, then the regression tests. Exits non-zero on any failure; a failing
# input is written to crates/fuzz/crashes/ and the log says how to reproduce it.
#
#   FUZZ_SECONDS  time per target (default 60; CI uses at most 60)
#   FUZZ_SEED     mutator seed (default: from the clock, printed in the log)
#   FUZZ_TARGETS  targets to run (default: all, from `pkcv-fuzz list`)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
case "$seconds" in
  '' | *[!0-9]*) echo "FUZZ_SECONDS must be a whole number of seconds, not '$seconds'"; exit 2 ;;
esac

echo "== fuzz: build (release)"
cargo build --locked --release -p pkcv-fuzz
bin=target/release/pkcv-fuzz

targets=${FUZZ_TARGETS:-$("$bin" list | tr '\n' ' ')}
seed_args=()
if [ -n "${FUZZ_SEED:-}" ]; then
  seed_args=(--seed "$FUZZ_SEED")
fi

failed=()
for target in $targets; do
  echo "== fuzz: $target for ${seconds}s"
  if ! "$bin" "$target" --seconds "$seconds" "${seed_args[@]}"; then
    failed+=("$target")
  fi
done

echo "== fuzz: regression tests"
cargo test --locked -p pkcv-fuzz

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failing targets: ${failed[*]} (inputs in crates/fuzz/crashes/; see the log above to reproduce)"
  exit 1
fi
echo "fuzz: every target ran ${seconds}s clean"
