#!/usr/bin/env bash
# Offline check of the container image (Dockerfile), with podman. No registry is reachable here,
# so the Rust base image cannot be pulled: the binary is built on the host and the Dockerfile's
# final stage is built from it (`--build-arg ROOTFS=prebuilt`, the same FROM scratch stage that
# `docker build .` ends in). Steps:
#   1. installs podman and runc (apt) if missing;
#   2. builds target/release/ringcast if missing (cargo build --release --locked --bin ringcast);
#      IMAGE_BIN=path uses another glibc ringcast binary;
#   3. deploy/make-rootfs.sh: binary + its ldd libraries + loader + /etc/passwd,group + /tmp;
#   4. podman build --isolation chroot (vfs storage) of the Dockerfile;
#   5. checks the image: contents (no shell), size (< 40 MB), user 10001, entrypoint, ports;
#      that it refuses to start without RINGCAST_PUBLIC_IP or with the development secret;
#   6. runs it: /healthz 200, /readyz 200, /metrics with ringcast_build_info, process uid 10001;
#      then `podman stop -t 20`: /readyz 503 while draining, exit code 0;
#   7. removes the container, and the image unless KEEP_IMAGE=1.
# Usage: ./scripts/check-image.sh     (as root, or with sudo; idempotent; ~30 s with the tools)
# Ends with "image: N passed, M failed" and exits non-zero if anything failed.
#
# How podman runs in this sandbox (Debian bookworm, podman 4.3, as root), and why each flag:
#   --storage-driver vfs     no overlay mounts needed (nor fuse-overlayfs); the image is small.
#   --root/--runroot         a private store under .cache/image-check: nothing else is touched,
#                            and the intermediate stage image is removed with the store's images.
#   --isolation chroot       builds without a runtime (the prebuilt path has no RUN step anyway).
#   --runtime runc           crun 1.8 refuses this machine's cgroups ("cgroups in hybrid mode not
#                            supported, drop all controllers from cgroupv2": cgroup v1 with a
#                            cgroup2 mount that has a controller); runc handles hybrid mode.
#                            (--cgroups=disabled would need crun.)
#   --cgroup-manager cgroupfs, --events-backend file: no systemd or journald here.
#   --ulimit nofile/nproc    podman asks for nofile=1048576 and nproc=4194304 by default; without
#                            CAP_SYS_RESOURCE the runtime cannot raise its hard limits (nproc is
#                            32768 in conmon here), so `setrlimit ... Operation not permitted`.
#                            The limits given are at most the caller's hard limits.
#   --network host           no bridge: the checks talk only to 127.0.0.1 (the server's HTTP
#                            address is loopback; gRPC binds 0.0.0.0 to exercise the non-loopback
#                            path with a real secret). Ports are picked free, so a server already
#                            on 8080/50051 does not matter.
# The default seccomp profile blocks io_uring, so the server uses recvmmsg (as under Docker).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

IMAGE=${IMAGE:-localhost/ringcast:check}
CONTAINER=ringcast-image-check
MAX_IMAGE_MB=40
bin=${IMAGE_BIN:-$root/target/release/ringcast}
cache="$root/.cache/image-check"

step() { printf '\n==> %s\n' "$*"; }
passed=0 failed=0
work=$(mktemp -d)
# check NAME CMD...: runs CMD (a function: in a subshell with `set -e`, which an `if` would turn
# off), counts it, shows the end of its output.
check() {
    local name=$1 rc
    shift
    set +e
    (
        set -e
        "$@"
    ) >"$work/out" 2>&1
    rc=$?
    set -e
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        printf 'ok    %s\n' "$name"
        [ ! -s "$work/out" ] || sed 's/^/      /' "$work/out" | tail -n 8
    else
        failed=$((failed + 1))
        printf 'FAIL  %s\n' "$name"
        sed 's/^/      /' "$work/out" | tail -n 40
    fi
}

# --- tools ---------------------------------------------------------------------------------------
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
apt_need=()
command -v podman >/dev/null 2>&1 || apt_need+=(podman)
command -v runc >/dev/null 2>&1 || apt_need+=(runc)
command -v curl >/dev/null 2>&1 || apt_need+=(curl)
command -v objcopy >/dev/null 2>&1 || apt_need+=(binutils)
command -v python3 >/dev/null 2>&1 || apt_need+=(python3)
if ((${#apt_need[@]})); then
    step "installing ${apt_need[*]} (apt)"
    timeout 300 $sudo_cmd apt-get update -q
    DEBIAN_FRONTEND=noninteractive timeout 600 $sudo_cmd apt-get install -y -q --no-install-recommends "${apt_need[@]}"
fi

mkdir -p "$cache"
# Limits the runtime may set (see above): the caller's hard limits, capped.
hard_nofile=$(ulimit -Hn)
[ "$hard_nofile" = unlimited ] && hard_nofile=1048576
[ "$hard_nofile" -le 65536 ] || hard_nofile=65536
podman_=(podman --storage-driver vfs --root "$cache/storage" --runroot "$cache/run"
    --runtime runc --cgroup-manager cgroupfs --events-backend file)
[ -z "$sudo_cmd" ] || podman_=("$sudo_cmd" "${podman_[@]}")
run_flags=(--network host --ulimit "nofile=$hard_nofile:$hard_nofile" --ulimit nproc=4096:4096)
pm() { timeout 120 "${podman_[@]}" "$@"; }

cleanup() {
    pm rm -f -i "$CONTAINER" >/dev/null 2>&1 || true
    if [ "${KEEP_IMAGE:-0}" = 1 ]; then
        pm image prune -f >/dev/null 2>&1 || true # the build's intermediate stage
    else
        pm rmi -a -f >/dev/null 2>&1 || true
        rm -rf "$cache/context"
    fi
    rm -rf "$work"
}
trap cleanup EXIT
# The store records its absolute path: start a new one if the checkout moved (or it is broken).
pm info >/dev/null 2>&1 || { $sudo_cmd rm -rf "$cache/storage" "$cache/run"; pm info >/dev/null; }
# A container left by an interrupted run.
pm rm -f -i "$CONTAINER" >/dev/null 2>&1 || true

step "tools"
echo "$(podman --version), runc $(runc --version | head -n 1 | awk '{print $3}')"

# --- binary and root filesystem ------------------------------------------------------------------
t0=$SECONDS
if [ ! -x "$bin" ]; then
    step "cargo build --release --locked --bin ringcast"
    timeout 1800 cargo build --release --locked --bin ringcast
fi
step "root filesystem (deploy/make-rootfs.sh $bin)"
ctx="$cache/context"
rm -rf "$ctx"
mkdir -p "$ctx"
deploy/make-rootfs.sh "$bin" "$ctx/rootfs"
(cd "$ctx/rootfs" && find . -type f -printf '%-45p %s\n' | sort)

# --- build ---------------------------------------------------------------------------------------
step "podman build --isolation chroot --build-arg ROOTFS=prebuilt -f Dockerfile"
build() {
    timeout 300 "${podman_[@]}" build --isolation chroot --pull=never --build-arg ROOTFS=prebuilt \
        -f "$root/Dockerfile" -t "$IMAGE" "$ctx"
}
check "image builds from the Dockerfile (prebuilt root filesystem)" build

# --- the image -----------------------------------------------------------------------------------
step "image"
inspect() { pm image inspect --format "$1" "$IMAGE"; }
image_size() {
    local bytes
    bytes=$(inspect '{{.Size}}')
    pm save -q --format oci-archive -o "$work/image.tar" "$IMAGE" >/dev/null
    printf 'size %s bytes (%s MB); gzip-compressed archive %s bytes\n' "$bytes" \
        "$((bytes / 1000000))" "$(gzip -c "$work/image.tar" | wc -c)"
    rm -f "$work/image.tar"
    [ "$bytes" -lt $((MAX_IMAGE_MB * 1000000)) ]
}
check "image size under $MAX_IMAGE_MB MB" image_size
config_is() { # config_is FORMAT EXPECTED
    local got
    got=$(inspect "$1")
    echo "$1 = $got"
    [ "$got" = "$2" ]
}
check "runs as user 10001:10001" config_is '{{.Config.User}}' "10001:10001"
check "entrypoint /usr/local/bin/ringcast" config_is '{{json .Config.Entrypoint}}' '["/usr/local/bin/ringcast"]'
exposed() {
    local ports
    # shellcheck disable=SC2016 # a Go template, not shell
    ports=$(inspect '{{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}')
    echo "exposed: $ports"
    for p in 50051/tcp 8080/tcp; do [[ " $ports" == *" $p "* ]]; done
    # podman keeps the range as written; Docker lists every port of it.
    [[ " $ports" == *" 40000-40063/udp "* ]] ||
        { [[ " $ports" == *" 40000/udp "* ]] && [[ " $ports" == *" 40063/udp "* ]]; }
}
check "exposes 50051/tcp, 8080/tcp, 40000-40063/udp" exposed
contents() {
    pm create --name "$CONTAINER" "$IMAGE" >/dev/null
    pm export -o "$work/fs.tar" "$CONTAINER"
    pm rm -f "$CONTAINER" >/dev/null
    tar -tvf "$work/fs.tar" | awk '$1 !~ /^d/ { print $1, $2, $NF }'
    local names
    names=$(tar -tf "$work/fs.tar" | sed 's#^\./##')
    rm -f "$work/fs.tar"
    # The server, its libraries and loader, the users, the config; no shell or other tools.
    grep -qx 'usr/local/bin/ringcast' <<<"$names"
    grep -qx 'lib64/ld-linux-x86-64.so.2' <<<"$names"
    grep -qx 'etc/passwd' <<<"$names"
    grep -qx 'etc/ringcast/ringcast.toml' <<<"$names"
    ! grep -qE '(^|/)(sh|bash|busybox)$' <<<"$names"
}
check "contents: binary, libraries, loader, users, config; no shell" contents

# Runs the image with no network use (--print-config or a refused config) and shows its output.
run_once() {
    timeout 60 "${podman_[@]}" run --rm "${run_flags[@]}" "$@" "$IMAGE" --print-config 2>&1
}
refuses() { # refuses EXPECTED-MESSAGE ENV...
    local want=$1 out
    shift
    if out=$(run_once "$@"); then
        echo "started, but should have refused: $out"
        return 1
    fi
    echo "$out" | tail -n 2
    grep -q "$want" <<<"$out"
}
check "refuses to start without RINGCAST_PUBLIC_IP" refuses "public_ips is empty" \
    -e RINGCAST_API_SECRET=image-check-secret-0123456789
check "refuses the development API secret" refuses "development API secret" \
    -e RINGCAST_PUBLIC_IP=127.0.0.1
defaults() {
    local out
    out=$(run_once -e RINGCAST_PUBLIC_IP=192.0.2.10 -e RINGCAST_API_SECRET=image-check-secret-0123456789)
    echo "$out" | grep -E 'addr|public_ips'
    grep -qx 'grpc_addr = "0.0.0.0:50051"' <<<"$out"
    grep -qx 'http_addr = "0.0.0.0:8080"' <<<"$out"
    grep -qx 'public_ips = \["192.0.2.10"\]' <<<"$out"
}
check "defaults: listens on 0.0.0.0:50051 and 0.0.0.0:8080 (--print-config)" defaults

# --- a running server ----------------------------------------------------------------------------
step "podman run (host network, free ports)"
read -r grpc_port http_port udp_port < <(python3 - <<'EOF'
import socket
socks = [socket.socket(socket.AF_INET, t) for t in (socket.SOCK_STREAM, socket.SOCK_STREAM, socket.SOCK_DGRAM)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
echo "gRPC 0.0.0.0:$grpc_port, HTTP 127.0.0.1:$http_port, media UDP 127.0.0.1:$udp_port"
base="http://127.0.0.1:$http_port"
start() {
    pm run -d --name "$CONTAINER" "${run_flags[@]}" \
        -e RINGCAST_PUBLIC_IP=127.0.0.1 -e RINGCAST_API_KEY=image-check \
        -e RINGCAST_API_SECRET=image-check-secret-0123456789 \
        -e RINGCAST_GRPC_ADDR="0.0.0.0:$grpc_port" -e RINGCAST_HTTP_ADDR="127.0.0.1:$http_port" \
        -e RINGCAST_UDP_PORT_BASE="$udp_port" -e RINGCAST_SHARDS=1 -e RINGCAST_DRAIN_GRACE_SECS=3 \
        "$IMAGE"
}
check "container starts" start
# wait_for PATH STATUS [BODY-REGEX]: polls for up to 30 s.
wait_for() {
    local path=$1 want=$2 regex=${3:-} code=""
    for _ in $(seq 1 60); do
        code=$(curl -s -o "$work/body" -w '%{http_code}' --max-time 2 "$base$path" || true)
        if [ "$code" = "$want" ] && { [ -z "$regex" ] || grep -qE "$regex" "$work/body"; }; then
            echo "GET $path: $code"
            [ -z "$regex" ] || grep -E "$regex" "$work/body"
            return 0
        fi
        sleep 0.5
    done
    echo "GET $path: last status '$code', wanted $want"
    head -c 400 "$work/body" 2>/dev/null || true
    pm logs "$CONTAINER" 2>&1 | tail -n 20
    return 1
}
check "/healthz answers 200" wait_for /healthz 200
check "/readyz answers 200" wait_for /readyz 200
check "/metrics has ringcast_build_info" wait_for /metrics 200 '^ringcast_build_info'
process_uid() {
    local pid
    pm top "$CONTAINER" user huser group pid args
    pid=$(pm inspect --format '{{.State.Pid}}' "$CONTAINER")
    grep -E '^(Uid|Gid):' "/proc/$pid/status"
    grep -qE '^Uid:\s+10001\s+10001\s+10001\s+10001$' "/proc/$pid/status"
    grep -qE '^Gid:\s+10001\s+10001\s+10001\s+10001$' "/proc/$pid/status"
}
check "server process runs as uid/gid 10001" process_uid

step "podman stop -t 20 (SIGTERM: drain, then exit)"
timeout 60 "${podman_[@]}" stop -t 20 "$CONTAINER" >"$work/stop.out" 2>&1 &
stop_job=$!
check "/readyz answers 503 while draining" wait_for /readyz 503
stop_rc=0
wait "$stop_job" || stop_rc=$?
stopped() {
    [ "$stop_rc" -eq 0 ] || { cat "$work/stop.out"; echo "podman stop: exit $stop_rc"; return 1; }
    local code
    code=$(pm inspect --format '{{.State.ExitCode}}' "$CONTAINER")
    pm logs "$CONTAINER" 2>&1 | tail -n 3
    echo "exit code $code"
    [ "$code" = 0 ]
}
check "exits 0 after SIGTERM" stopped

echo
echo "elapsed $((SECONDS - t0)) s"
if [ "${KEEP_IMAGE:-0}" = 1 ]; then
    echo "kept $IMAGE: ${podman_[*]} images"
fi
echo "image: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
