#!/bin/bash
# usage: perf.sh PROXY_BIN CLIENTS OUTDIR : perf record (flat, 8 s) of the proxy and of the nginx worker during their steps
set -u
BIN=$1; C=$2; OUT=$3; mkdir -p $OUT
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
target/release/pkcv-bench --proxy-bin $BIN -c $C --warmup-secs 4 --measure-secs 16 --rsa-secs 0.3 \
  --nginx-floor --no-direct --out-dir $OUT/bench > $OUT/bench.out 2> $OUT/bench.err &
BENCH=$!
sleep 4
CONF=$(ls -td /tmp/pkcv-bench-nginx-*/nginx.conf | head -1)
MASTER=$(cat $(dirname $CONF)/nginx.pid)
WORKER=$(pgrep -P $MASTER | head -1)
PROXY=$(pgrep -f "$BIN serve" | head -1)
sleep 4
perf record -F 2999 -g -p $WORKER -o $OUT/nginx.data -- sleep 8 2>/dev/null
while ! grep -q "c=$C *nginx" $OUT/bench.err; do sleep 1; done
sleep 6
perf record -F 2999 -g -p $PROXY -o $OUT/proxy.data -- sleep 8 2>/dev/null
wait $BENCH
