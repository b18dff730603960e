#!/usr/bin/env bash
# The end-to-end benchmark: builds the release `ringcast` and `loadtest`, then sweeps subscribers
# in the livestream, audio-room and meeting scenarios on both IO backends, one shard core
# against a loadtest on the other core, and writes benches/RESULTS.md and benches/e2e.png.
# Environment: E2E_SECS (per point, default 10), E2E_BACKENDS (io-uring,recvmmsg),
# E2E_SCENARIOS (livestream,audio,meeting), E2E_MAX (largest N, 4000). Takes 10-30 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || {
    sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get install -y -q fonts-dejavu-core
}
cargo build --release --locked --bin ringcast --bin loadtest
cargo bench --locked -p ringcast-benches --bench e2e
