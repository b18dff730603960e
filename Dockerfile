# syntax=docker/dockerfile:1
# Ringcast server image: the `ringcast` binary (glibc, OpenSSL) with exactly the shared libraries it
# links, on an empty base (FROM scratch), running as uid/gid 10001. About 18 MB.
#
#   docker build -t ringcast .          # or: podman build -t ringcast .
#   docker run --rm --network host \
#       -e RINGCAST_PUBLIC_IP=203.0.113.7 -e RINGCAST_API_KEY=mykey \
#       -e RINGCAST_API_SECRET=a-secret-of-16-bytes-or-more ringcast
#
# The image listens on 0.0.0.0 (gRPC + gRPC-Web 50051, HTTP /healthz /readyz /metrics 8080) and
# takes media on UDP 40000 + shard (one shard per available core unless RINGCAST_SHARDS is set).
# It refuses to start without RINGCAST_PUBLIC_IP (the candidate address clients reach) and
# without a real RINGCAST_API_SECRET. Defaults: deploy/ringcast.toml; every setting can be
# overridden with RINGCAST_* variables or flags after the image name (`ringcast --help`).
#
# Stages: build (cargo, in the Rust image) -> rootfs (deploy/make-rootfs.sh collects the binary,
# its ldd libraries, the loader, /etc/passwd and /etc/group) -> the final scratch image.
# Offline, without the Rust image: build the binary on the host, run deploy/make-rootfs.sh into
# CONTEXT/rootfs and build with `--build-arg ROOTFS=prebuilt -f Dockerfile CONTEXT`; the final
# stage is the same (scripts/check-image.sh does this with podman). Needs BuildKit (Docker 23+)
# or podman/buildah, which skip the stages the chosen ROOTFS does not use.

ARG RUST_IMAGE=rust:1.95-bookworm
# Where the root filesystem comes from: "rootfs" (built from source here) or "prebuilt".
ARG ROOTFS=rootfs

# --- build: the release binary ----------------------------------------------------------------
# The Rust image (buildpack-deps) has gcc, make, pkg-config and libssl-dev. The .proto files are
# compiled in Rust (protox): no protoc needed.
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ringcast

# --- rootfs: binary + shared libraries + users, in /rootfs ------------------------------------
FROM build AS rootfs
RUN deploy/make-rootfs.sh target/release/ringcast /rootfs

# --- prebuilt: the same tree, made on the host (the build context holds rootfs/) ---------------
FROM scratch AS prebuilt
COPY rootfs/ /rootfs/

FROM ${ROOTFS} AS selected

# --- the image ---------------------------------------------------------------------------------
FROM scratch
COPY --from=selected /rootfs/ /
ENV RINGCAST_CONFIG=/etc/ringcast/ringcast.toml
USER 10001:10001
# gRPC + gRPC-Web, HTTP (health, metrics), media (one UDP port per shard; 64 covers 64 cores).
EXPOSE 50051/tcp 8080/tcp 40000-40063/udp
# SIGTERM starts the drain (RINGCAST_DRAIN_GRACE_SECS, default 10 s): stop with a longer timeout.
STOPSIGNAL SIGTERM
LABEL org.opencontainers.image.title="ringcast" \
      org.opencontainers.image.description="Ringcast WebRTC SFU" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/usr/local/bin/ringcast"]
