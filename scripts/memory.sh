#!/usr/bin/env bash
# Server memory per subscriber: starts the release `ringcast` (one shard, core 0), samples its
# RSS and jemalloc's allocated bytes (C allocations included: jemalloc is the process's malloc)
# once idle and then every 2 s while a livestream loadtest with N subscribers runs on core 1,
# and prints the steady state (the median of the samples taken with every transport up) and
# what each subscriber adds over the idle server.
# Usage: ./scripts/memory.sh [N, default 1000] [loadtest flags, e.g. --video-kbps 300]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000}"
shift || true
cargo build --release --locked --bin ringcast --bin loadtest
grpc=50151
http=8181
taskset -c 0 target/release/ringcast --shards 1 --log-level warn --grpc-addr "127.0.0.1:$grpc" \
    --http-addr "127.0.0.1:$http" --udp-port-base 0 >/dev/null 2>&1 &
server=$!
trap 'kill -9 $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -sf "127.0.0.1:$http/healthz" >/dev/null && break
    sleep 0.1
done
sample() {
    local rss alloc transports
    rss=$(awk '/^VmRSS/ {print $2 * 1024}' "/proc/$server/status")
    read -r alloc transports < <(curl -s "127.0.0.1:$http/metrics" | awk '
        /^ringcast_jemalloc_bytes\{kind="allocated"\}/ {a = $2}
        /^ringcast_shard_transports\{/ {t += $2}
        END {printf "%d %d\n", a, t}')
    echo "$rss $alloc $transports"
}
read -r idle_rss idle_alloc _ < <(sample)
taskset -c 1 target/release/loadtest --grpc-addr "http://127.0.0.1:$grpc" --subscribers "$n" \
    --video-only --duration 16s --pin-core 1 --ramp-rate 300 --decrypt-every 8 --quiet "$@" \
    >/tmp/ringcast-memory-loadtest.txt 2>&1 &
lt=$!
samples=()
while kill -0 "$lt" 2>/dev/null; do
    sleep 2
    read -r rss alloc transports < <(sample) || break
    # Steady state: every subscriber transport and the publisher's are up.
    [ "$transports" -ge $((n + 1)) ] && samples+=("$rss $alloc")
done
wait "$lt" || { cat /tmp/ringcast-memory-loadtest.txt; exit 1; }
[ "${#samples[@]}" -gt 0 ] || { echo "no steady-state sample"; exit 1; }
median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
rss=$(printf '%s\n' "${samples[@]}" | cut -d' ' -f1 | median)
alloc=$(printf '%s\n' "${samples[@]}" | cut -d' ' -f2 | median)
awk -v n="$n" -v ir="$idle_rss" -v ia="$idle_alloc" -v r="$rss" -v a="$alloc" -v k="${#samples[@]}" 'BEGIN {
    printf "idle:          RSS %.1f MiB, jemalloc allocated %.1f MiB\n", ir / 1048576, ia / 1048576
    printf "%d subscribers: RSS %.1f MiB, jemalloc allocated %.1f MiB (median of %d samples)\n", n, r / 1048576, a / 1048576, k
    printf "per subscriber: RSS %.1f KiB, allocated %.1f KiB (over idle: %.1f, %.1f KiB)\n", r / n / 1024, a / n / 1024, (r - ir) / n / 1024, (a - ia) / n / 1024
}'
