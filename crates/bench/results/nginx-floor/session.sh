#!/bin/bash
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
deadline=$(( $(date +%s) + 900 ))
while pgrep -f '\.ci/run|cargo |rustc' >/dev/null && [ $(date +%s) -lt $deadline ]; do sleep 20; done
echo "start $(date); busy: $(pgrep -fa '\.ci/run|cargo |rustc' | wc -l)"
B=target/release/pkcv-bench
run() { name=$1; shift; echo "=== $name $(date +%T) busy=$(pgrep -f '\.ci/run|cargo |rustc' | wc -l)"; "$@" -c 1,16,256,1024 --nginx-floor --no-direct --out-dir crates/bench/results/nginx-floor/$name 2>/dev/null | grep -E '^ +[0-9]+ (nginx|proxy)|RSA-2048 sign|RSS'; }
run base1 $B --proxy-bin /tmp/perfwt/pkcv-proxy.base
run tpc1 env TPC_THREADS=2 $B --proxy-bin /tmp/perfwt/pkcv-proxy.tpc
run w1 $B --proxy-bin /tmp/perfwt/pkcv-proxy.base --proxy-worker-threads 1
run base2 $B --proxy-bin /tmp/perfwt/pkcv-proxy.base
run tpc2 env TPC_THREADS=2 $B --proxy-bin /tmp/perfwt/pkcv-proxy.tpc
echo "end $(date)"
