#!/usr/bin/env bash
# Profiles `ringcast` (one shard, core 0) while `loadtest` (core 1) runs a scenario, and renders
# an SVG flamegraph with inferno. perf uses the software clock (cpu-clock): this kind of machine
# has no hardware counters. Prints the top frames (self time) too.
# Usage: ./scripts/flamegraph.sh [loadtest flags...]   (default: the livestream, 500 subscribers)
# Output: target/flamegraph.svg, target/perf.top.txt
set -euo pipefail
cd "$(dirname "$0")/.."
sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
command -v perf >/dev/null 2>&1 || $sudo_cmd apt-get install -y -q linux-perf
command -v inferno-flamegraph >/dev/null 2>&1 || cargo install --locked inferno@0.12.3
cargo build --release --locked --bin ringcast --bin loadtest
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--subscribers 500 --video-only --duration 15s)
grpc=$((20000 + RANDOM % 20000)); http=$((grpc + 1))
taskset -c 0 target/release/ringcast --shards 1 --grpc-addr 127.0.0.1:$grpc --http-addr 127.0.0.1:$http \
    --udp-port-base 0 --log-level warn &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$grpc) 2>/dev/null && break; sleep 0.1; done
taskset -c 1 target/release/loadtest --grpc-addr http://127.0.0.1:$grpc --pin-core 1 --server-pid $server \
    --decrypt-every 8 --ramp-rate 300 --quiet "${args[@]}" &
lt=$!
# Skip the ramp: profile the steady state.
sleep 8
perf record -e cpu-clock -F 999 -g -p $server -o target/perf.data -- sleep 6
wait $lt || true
perf script -i target/perf.data 2>/dev/null | inferno-collapse-perf > target/perf.folded
inferno-flamegraph < target/perf.folded > target/flamegraph.svg
perf report -i target/perf.data --no-children --sort symbol --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -25 > target/perf.top.txt
echo "flamegraph: target/flamegraph.svg"
cat target/perf.top.txt
