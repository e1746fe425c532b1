#!/bin/bash
# usage: perf.sh PROXY_BIN CLIENTS OUTDIR : perf record (flat, 8 s) of the proxy and of the nginx worker during their steps
WARMUP=4 MEASURE=16
. "$(dirname "$0")/start.sh"
sleep 4
perf record -F 2999 -g -p $WORKER -o $OUT/nginx.data -- sleep 8 2>/dev/null
wait_for_proxy_step
perf record -F 2999 -g -p $PROXY -o $OUT/proxy.data -- sleep 8 2>/dev/null
wait $BENCH
