#!/bin/bash
# usage: count.sh PROXY_BIN CLIENTS OUTDIR : strace -c and malloc counts (uprobes) per request, proxy and nginx worker
WARMUP=3 MEASURE=24
. "$(dirname "$0")/start.sh"
nreq() { curl -s http://$STATUS/ | awk 'NR==3{print $3}'; }
preq() { curl -s http://$ADMIN/metrics | awk '/^pkcv_proxy_requests_total/{s+=$2} END{printf "%d", s}'; }
sleep 2
n0=$(nreq); timeout -s INT 8 strace -c -f -p $WORKER -o $OUT/strace-nginx.txt 2>/dev/null; n1=$(nreq)
m0=$(nreq); perf stat -e probe_libc:malloc,probe_libc:realloc,probe_libc:calloc -p $WORKER -o $OUT/malloc-nginx.txt -- sleep 6; m1=$(nreq)
echo "nginx strace requests $((n1-n0)) malloc requests $((m1-m0))" > $OUT/counts.txt
wait_for_proxy_step
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
