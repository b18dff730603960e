#!/usr/bin/env bash
# Runs every check Ringcast has, installing what is missing first: system packages (apt: build
# tools, OpenSSL headers, Chromium, Firefox ESR, Node.js), Rust components, cargo-fuzz, a Python venv and the
# npm packages for the tests with peers that are not ours.
# Then: cargo fmt --check, cargo clippy -D warnings, all Rust tests, a short run of every fuzz
# target, the Helm chart checks, headless Chromium publishing through gRPC-Web, three Chromium
# pages in a room, aiortc publishing to a Chromium subscriber, a Chromium subscriber behind 5 %
# loss recovering with NACKs, a Chromium subscriber behind a 400 kbit/s bottleneck taking a
# lower simulcast layer and recovering, the demo page in two tabs, a Firefox ESR page
# (simulcast) and a Chromium page in one room, and the Python tests (grpcio against every RPC; aiortc publishing
# over both IO backends and all SRTP profiles).
# Usage: ./scripts/test.sh            (from anywhere; ~10 min on 2 cores from a clean target/)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

# --- system packages -------------------------------------------------------------------------
apt_need=()
command -v pkg-config >/dev/null 2>&1 || apt_need+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || apt_need+=(libssl-dev)
command -v cc >/dev/null 2>&1 || apt_need+=(build-essential)
command -v python3 >/dev/null 2>&1 || apt_need+=(python3 python3-venv)
command -v node >/dev/null 2>&1 || apt_need+=(nodejs npm)
[ -x /usr/bin/chromium ] || apt_need+=(chromium)
[ -x /usr/bin/firefox-esr ] || apt_need+=(firefox-esr)
if ((${#apt_need[@]})); then
    step "installing ${apt_need[*]}"
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q "${apt_need[@]}"
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

# --- Python venv for tests with clients that are not ours -------------------------------------
venv="$root/.venv"
req="$root/interop/python/requirements.txt"
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$venv/.requirements"; then
    step "python venv ($venv)"
    python3 -m venv "$venv" || { rm -rf "$venv"; python3 -m venv --without-pip "$venv" && "$venv/bin/python" -m ensurepip; }
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
    cp "$req" "$venv/.requirements"
fi

# --- Rust ------------------------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "module import cycles"
python3 scripts/module-cycles.py
step "cargo test"
cargo test --workspace --locked

# --- fuzz targets: a short bounded run of each, from the browser-fixture corpus ---------------
# cargo-fuzz needs nightly flags (-Zsanitizer); RUSTC_BOOTSTRAP lets the one stable toolchain
# accept them. Set RINGCAST_FUZZ_SECS=0 to skip, or higher for a longer run.
fuzz_secs=${RINGCAST_FUZZ_SECS:-20}
if [ "$fuzz_secs" -gt 0 ]; then
    command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz@0.13.2
    for target in $(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz list); do
        step "fuzz $target for ${fuzz_secs}s"
        mkdir -p "fuzz/corpus/$target"
        case "$target" in
            sdp_*) cp control/tests/fixtures/sdp/*.sdp "fuzz/corpus/$target/" ;;
            stun_*) cp datapath/tests/fixtures/stun/*.bin "fuzz/corpus/$target/" ;;
        esac
        if [ -d "fuzz/seeds/$target" ]; then cp fuzz/seeds/"$target"/* "fuzz/corpus/$target/"; fi
        (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$target" -- \
            -max_total_time="$fuzz_secs" -max_len=8192 2>&1 | tail -n 25)
    done
fi

# --- the Helm chart ---------------------------------------------------------------------------
cargo build --locked --bin ringcast
step "helm chart checks"
./scripts/check-helm.sh
step "container image: build with podman, run, health, non-root, SIGTERM"
./scripts/check-image.sh

# --- peers that are not ours -------------------------------------------------------------------
export RINGCAST_BIN="$root/target/debug/ringcast"
step "headless Chromium: publishing through gRPC-Web, three pages in a room (both IO backends), aiortc -> Chromium, one subscriber behind 5 % loss (NACK), a simulcast publisher behind 5 % loss (upstream NACK, RTX), the demo page in two tabs; Firefox ESR (simulcast) with Chromium in one room"
(cd interop/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error && node --test test-publish.mjs test-pubsub.mjs test-aiortc-chromium.mjs test-loss-nack.mjs test-upstream-loss.mjs test-congestion.mjs test-demo.mjs test-firefox.mjs)
step "python: grpcio on every RPC, aiortc publishing (both IO backends, every SRTP profile), SIGTERM drain"
"$venv/bin/python" -m pytest -q -p no:cacheprovider interop/python
