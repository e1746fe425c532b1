#!/bin/bash
# Issue #23, thread-per-core as landed: the A/B session. base = the work-stealing runtime
# (e6cf389), tpc = thread-per-core; the same release profile, `--no-default-features`.
#   BASE=... TPC=... crates/bench/results/thread-per-core/session.sh
# Waits for a quiet machine (no CI, cargo or rustc), then alternates the binaries, three runs
# each: the nginx floor at 1, 16, 256 and 1,024 clients; one client against the direct path
# (added latency); an overload step (max_in_flight = 64).
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
OUT=crates/bench/results/thread-per-core
B=target/release/pkcv-bench
BASE=${BASE:-/tmp/tpc/pkcv-proxy.base}
TPC=${TPC:-/tmp/tpc/pkcv-proxy.tpc}
deadline=$(( $(date +%s) + 900 ))
while pgrep -f '\.ci/run|cargo |rustc' >/dev/null && [ "$(date +%s)" -lt $deadline ]; do sleep 20; done
echo "start $(date); busy: $(pgrep -fa '\.ci/run|cargo |rustc' | wc -l)"
run() {
  name=$1; shift
  echo "=== $name $(date +%T) busy=$(pgrep -f '\.ci/run|cargo |rustc' | wc -l)"
  "$@" --out-dir "$OUT/$name" 2>/dev/null | grep -E '^ +[0-9]+ (direct|nginx|proxy)|RSA-2048 sign|RSS|refused'
}
for i in 1 2 3; do
  run "floor-base$i" $B --proxy-bin "$BASE" -c 1,16,256,1024 --nginx-floor --no-direct
  run "floor-tpc$i" $B --proxy-bin "$TPC" -c 1,16,256,1024 --nginx-floor --no-direct
done
for i in 1 2 3; do
  run "latency-base$i" $B --proxy-bin "$BASE" -c 1 --warmup-secs 2 --measure-secs 8
  run "latency-tpc$i" $B --proxy-bin "$TPC" -c 1 --warmup-secs 2 --measure-secs 8
done
run overload-base $B --proxy-bin "$BASE" -c 64,1024 --warmup-secs 2 --measure-secs 8 --no-direct --max-in-flight 64
run overload-tpc $B --proxy-bin "$TPC" -c 64,1024 --warmup-secs 2 --measure-secs 8 --no-direct --max-in-flight 64
echo "end $(date)"
