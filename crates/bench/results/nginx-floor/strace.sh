#!/bin/bash
# usage: strace.sh PROXY_BIN CLIENTS OUTDIR
# Runs pkcv-bench (nginx floor, then proxy) with long steps; attaches strace -c -f to the nginx
# worker during the nginx step and to the proxy during the proxy step, for 8 s each, and
# divides by the requests counted by stub_status / pkcv_proxy_requests_total over the same span.
set -u
BIN=$1; C=$2; OUT=$3; mkdir -p $OUT
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
target/release/pkcv-bench --proxy-bin $BIN -c $C --warmup-secs 4 --measure-secs 16 --rsa-secs 0.3 \
  --nginx-floor --no-direct --out-dir $OUT/bench > $OUT/bench.out 2> $OUT/bench.err &
BENCH=$!
sleep 4
CONF=$(ls -td /tmp/pkcv-bench-nginx-*/nginx.conf | head -1)
STATUS=$(grep -A1 'server {' $CONF | grep -o 'listen 127.0.0.1:[0-9]*;' | tail -1 | grep -o '[0-9.]*:[0-9]*')
MASTER=$(cat $(dirname $CONF)/nginx.pid)
WORKER=$(pgrep -P $MASTER | head -1)
PROXY=$(pgrep -f "$BIN serve" | head -1)
PCONF=$(tr '\0' ' ' < /proc/$PROXY/cmdline | grep -o '/tmp/pkcv-bench-[^ ]*toml')
ADMIN=$(grep admin_listen $PCONF | grep -o '127[0-9.:]*')
sleep 4
n0=$(curl -s http://$STATUS/ | awk 'NR==3{print $3}')
timeout -s INT 8 strace -c -f -p $WORKER -o $OUT/strace-nginx.txt
n1=$(curl -s http://$STATUS/ | awk 'NR==3{print $3}')
echo "nginx requests during strace: $((n1-n0))" > $OUT/counts.txt
# wait for the proxy step (progress line for nginx printed)
while ! grep -q "c=$C *nginx" $OUT/bench.err; do sleep 1; done
sleep 6
p0=$(curl -s http://$ADMIN/metrics | awk '/^pkcv_proxy_requests_total/{s+=$2} END{print s}')
timeout -s INT 8 strace -c -f -p $PROXY -o $OUT/strace-proxy.txt
p1=$(curl -s http://$ADMIN/metrics | awk '/^pkcv_proxy_requests_total/{s+=$2} END{print s}')
echo "proxy requests during strace: $(echo "$p1-$p0" | bc)" >> $OUT/counts.txt
wait $BENCH
cat $OUT/counts.txt
