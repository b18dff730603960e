#!/usr/bin/env bash
# The end-to-end benchmark: builds the release `ringcast` and `loadtest`, then sweeps subscribers
# in the livestream, audio-room, meeting and simulcast (without and with congestion control)
# scenarios on both IO backends, one shard core against a loadtest on the other core, and
# writes benches/RESULTS.md and benches/e2e.png (a partial run replaces only its own sections).
# Environment: E2E_SECS (per point, default 10), E2E_BACKENDS (io-uring,recvmmsg),
# E2E_SCENARIOS (livestream,audio,meeting,simulcast), E2E_MAX (largest N, 4000). Takes 10-30
# minutes; e.g. `E2E_SCENARIOS=simulcast E2E_BACKENDS=io-uring ./scripts/bench-e2e.sh` alone.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || {
    sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get install -y -q fonts-dejavu-core
}
# A target directory shared with another checkout holds whichever binary was linked last, and
# a build that finds this checkout fresh does not link it again: touching the binaries' roots
# makes the build link this tree's, and the benchmark runs private copies of them.
touch sfu/src/main.rs loadtest/src/main.rs
cargo build --release --locked --bin ringcast --bin loadtest
target="${CARGO_TARGET_DIR:-target}"
bins="$(mktemp -d)"
trap 'rm -rf "$bins"' EXIT
cp "$target/release/ringcast" "$target/release/loadtest" "$bins/"
export RINGCAST_BIN="${RINGCAST_BIN:-$bins/ringcast}" LOADTEST_BIN="${LOADTEST_BIN:-$bins/loadtest}"
cargo bench --locked -p ringcast-benches --bench e2e
