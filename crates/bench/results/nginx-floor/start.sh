# Sourced by count.sh and perf.sh: BIN CLIENTS OUT from the arguments, then starts pkcv-bench
# (the nginx floor, then the proxy, WARMUP and MEASURE seconds a step) in the background and
# finds what to attach to: BENCH (its pid), WORKER (the nginx worker), PROXY, and the
# request counters' addresses STATUS (nginx stub_status) and ADMIN (the proxy's admin port).
# `wait_for_proxy_step` returns once the proxy's step has run for a few seconds.
set -u
BIN=$1; C=$2; OUT=$3; mkdir -p "$OUT"
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
target/release/pkcv-bench --proxy-bin "$BIN" -c "$C" --warmup-secs "$WARMUP" --measure-secs "$MEASURE" \
  --rsa-secs 0.3 --nginx-floor --no-direct --out-dir "$OUT/bench" > "$OUT/bench.out" 2> "$OUT/bench.err" &
BENCH=$!
sleep 4
CONF=$(ls -td /tmp/pkcv-bench-nginx-*/nginx.conf | head -1)
STATUS=$(grep -o 'listen 127.0.0.1:[0-9]*;' "$CONF" | tail -1 | grep -o '[0-9.]*:[0-9]*')
MASTER=$(cat "$(dirname "$CONF")/nginx.pid")
WORKER=$(pgrep -P "$MASTER" | head -1)
PROXY=$(pgrep -f "$BIN serve" | head -1)
PCONF=$(tr '\0' ' ' < "/proc/$PROXY/cmdline" | grep -o '/tmp/pkcv-bench-[^ ]*toml')
ADMIN=$(grep admin_listen "$PCONF" | grep -o '127[0-9.:]*')
wait_for_proxy_step() {
  while ! grep -q "c=$C *nginx" "$OUT/bench.err"; do sleep 1; done
  sleep 6
}
