#!/bin/bash
# usage: count.sh PROXY_BIN CLIENTS OUTDIR : strace -c and malloc counts (uprobes) per request, proxy and nginx worker
set -u
BIN=$1; C=$2; OUT=$3; mkdir -p $OUT
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
target/release/pkcv-bench --proxy-bin $BIN -c $C --warmup-secs 3 --measure-secs 24 --rsa-secs 0.3 \
  --nginx-floor --no-direct --out-dir $OUT/bench > $OUT/bench.out 2> $OUT/bench.err &
BENCH=$!
sleep 4
CONF=$(ls -td /tmp/pkcv-bench-nginx-*/nginx.conf | head -1)
STATUS=$(grep -o 'listen 127.0.0.1:[0-9]*;' $CONF | tail -1 | grep -o '[0-9.]*:[0-9]*')
MASTER=$(cat $(dirname $CONF)/nginx.pid)
WORKER=$(pgrep -P $MASTER | head -1)
PROXY=$(pgrep -f "$BIN serve" | head -1)
PCONF=$(tr '\0' ' ' < /proc/$PROXY/cmdline | grep -o '/tmp/pkcv-bench-[^ ]*toml')
ADMIN=$(grep admin_listen $PCONF | grep -o '127[0-9.:]*')
nreq() { curl -s http://$STATUS/ | awk 'NR==3{print $3}'; }
preq() { curl -s http://$ADMIN/metrics | awk '/^pkcv_proxy_requests_total/{s+=$2} END{printf "%d", s}'; }
sleep 2
n0=$(nreq); timeout -s INT 8 strace -c -f -p $WORKER -o $OUT/strace-nginx.txt 2>/dev/null; n1=$(nreq)
m0=$(nreq); perf stat -e probe_libc:malloc,probe_libc:realloc,probe_libc:calloc -p $WORKER -o $OUT/malloc-nginx.txt -- sleep 6; m1=$(nreq)
echo "nginx strace requests $((n1-n0)) malloc requests $((m1-m0))" > $OUT/counts.txt
while ! grep -q "c=$C *nginx" $OUT/bench.err; do sleep 1; done
sleep 6
n0=$(preq); timeout -s INT 8 strace -c -f -p $PROXY -o $OUT/strace-proxy.txt 2>/dev/null; n1=$(preq)
m0=$(preq); perf stat -e probe_libc:malloc,probe_libc:realloc,probe_libc:calloc -p $PROXY -o $OUT/malloc-proxy.txt -- sleep 6; m1=$(preq)
echo "proxy strace requests $((n1-n0)) malloc requests $((m1-m0))" >> $OUT/counts.txt
wait $BENCH
cat $OUT/counts.txt
for w in nginx proxy; do
  r=$(awk -v w=$w '$1==w{print $4}' $OUT/counts.txt); m=$(awk -v w=$w '$1==w{print $7}' $OUT/counts.txt)
  echo "== $w syscalls/request"; awk -v r=$r '/^ *[0-9.]+ +[0-9.]+ +[0-9]+ +[0-9]+/{n=$4; name=$NF; if (n/r>=0.01) printf "  %-14s %6.2f\n", name, n/r} /total/{printf "  %-14s %6.2f\n", "total", $(NF-2)/r}' $OUT/strace-$w.txt
  echo "== $w allocator calls/request"; awk -v r=$m '/probe_libc/{gsub(",","",$1); printf "  %-22s %6.2f\n", $2, $1/r}' $OUT/malloc-$w.txt
done
