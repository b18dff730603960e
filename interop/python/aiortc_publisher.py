"""An aiortc participant that publishes a synthetic camera and microphone to Ringcast.

Used by interop/browser/test-aiortc-chromium.mjs (aiortc publishes, Chromium subscribes), and
usable by hand:

    .venv/bin/python interop/python/aiortc_publisher.py --grpc-addr 127.0.0.1:50051 --token JWT

It Joins with the participant token (publish grant), offers one sendonly VP8 video track (a
moving test pattern: a diagonal gradient that scrolls, with a bright square crossing it, so
every frame differs) and one sendonly Opus audio track (a sine tone), sends the offer with
Signaling.Publish, applies Ringcast's answer and waits until the peer connection is connected.

Progress goes to stdout as JSON lines, one object each, with an "event" field:
    {"event": "joined", "participant": sid, "room": name}
    {"event": "published", "tracks": [{"sid", "kind", "mime_type"}], "offer": sdp, "answer": sdp}
    {"event": "connected", "after_s": s}
    {"event": "stats", "at_s": s, "video": {...outbound-rtp...}, "audio": {...}}   (every second)
    {"event": "closed", "reason": ...}
    {"event": "error", "message": ...}  (then exit status 1)
Logs go to stderr. It stops cleanly (pc.close(), Signaling.Leave, exit 0) when its stdin
closes or on SIGTERM / SIGINT. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import math
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import aioice.ice
import av
import grpc
import numpy as np
from aiortc import AudioStreamTrack, VideoStreamTrack
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ringcast_helpers import (  # noqa: E402 - after the sys.path line
    generate_stubs,
    loopback_host_addresses,
    prefer_codecs,
)

VIDEO_CLOCK = 90_000
RPC_TIMEOUT = 10.0
GATHER_TIMEOUT = 10.0
CONNECT_TIMEOUT = 20.0
CLOSE_TIMEOUT = 5.0

T0 = time.monotonic()


def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def log(msg: str) -> None:
    print(f"[aiortc_publisher {time.monotonic() - T0:7.2f}s] {msg}", file=sys.stderr, flush=True)


class MovingPattern(VideoStreamTrack):
    """width x height YUV 4:2:0 frames at `fps`: a scrolling gradient and a moving square."""

    def __init__(self, width: int, height: int, fps: int):
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        y, x = np.mgrid[0:height, 0:width]
        self.gradient = ((x + y) % 256).astype(np.uint8)
        self.count = 0
        self.start = None

    async def recv(self):
        if self.start is None:
            self.start = time.time()
        else:
            wait = self.start + self.count / self.fps - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        n = self.count
        self.count += 1
        w, h = self.width, self.height
        luma = self.gradient + np.uint8((3 * n) % 256)  # wraps around in uint8
        side = max(8, h // 6) & ~1
        sx = (5 * n) % max(1, w - side)
        sy = (h - side) // 2
        luma[sy : sy + side, sx : sx + side] = 235
        chroma_u = np.full((h // 2, w // 2), (128 + 2 * n) % 256, np.uint8)
        chroma_v = np.full((h // 2, w // 2), 128, np.uint8)
        yuv = np.concatenate([luma, chroma_u.reshape(h // 4, w), chroma_v.reshape(h // 4, w)])
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = round(n * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return frame


class Tone(AudioStreamTrack):
    """A mono sine tone in 20 ms frames (the base class keeps the timing and the sample rate)."""

    def __init__(self, hz: float):
        super().__init__()
        self.hz = hz

    async def recv(self):
        frame = await super().recv()  # silence, paced in real time, pts in samples
        n = frame.samples
        t = (np.arange(n) + frame.pts) / frame.sample_rate
        pcm = (np.sin(2 * math.pi * self.hz * t) * 6000).astype("<i2").tobytes()
        plane = frame.planes[0]
        plane.update(pcm + bytes(plane.buffer_size - len(pcm)))
        return frame


async def poll_until(predicate, timeout: float, what: str) -> None:
    """Returns once predicate() is true (checked every 50 ms); raises after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not done within {timeout} s")
        await asyncio.sleep(0.05)


def watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Sets `stop` when stdin reaches EOF (the driver closed it or died)."""

    def reader():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=reader, name="stdin-watch", daemon=True).start()


async def outbound_stats(pc: RTCPeerConnection) -> dict:
    out = {}
    report = await pc.getStats()
    for s in report.values():
        if s.type == "outbound-rtp":
            out[s.kind] = {"ssrc": s.ssrc, "packetsSent": s.packetsSent, "bytesSent": s.bytesSent}
    return out


async def run(args) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if not args.no_stdin_watch:
        watch_stdin(loop, stop)

    pb = generate_stubs(Path(tempfile.mkdtemp(prefix="ringcast-stubs-")))
    m = pb.msg
    md = [("authorization", f"Bearer {args.token}")]
    channel = grpc.insecure_channel(args.grpc_addr)
    sig_stub = pb.grpc.SignalingStub(channel)

    async def rpc(method, request):
        return await asyncio.to_thread(method, request, metadata=md, timeout=RPC_TIMEOUT)

    pc = None
    joined = False
    try:
        j = await rpc(sig_stub.Join, m.JoinRequest(name="aiortc publisher"))
        joined = True
        emit("joined", participant=j.participant.sid, identity=j.participant.identity, room=j.room.name)

        # No ICE servers: nothing leaves the machine (aiortc defaults to a public STUN server).
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        states = []

        @pc.on("connectionstatechange")
        def _on_state():
            states.append(pc.connectionState)
            log(f"connectionState={pc.connectionState}")

        audio = pc.addTransceiver(Tone(args.tone_hz), direction="sendonly")
        video = pc.addTransceiver(MovingPattern(args.width, args.height, args.fps), direction="sendonly")
        # Opus and VP8 (with RTX, so that Ringcast can ask for repairs either way).
        for transceiver, codecs in ((audio, ["audio/opus"]), (video, ["video/vp8", "video/rtx"])):
            prefer_codecs(transceiver, *codecs)
        await pc.setLocalDescription(await pc.createOffer())
        await poll_until(lambda: pc.iceGatheringState == "complete", GATHER_TIMEOUT, "ICE gathering")
        offer = pc.localDescription.sdp
        pub = await rpc(
            sig_stub.Publish,
            m.PublishRequest(sdp_offer=offer, track_names={audio.mid: "tone", video.mid: "pattern"}),
        )
        tracks = [
            {"sid": t.sid, "kind": m.TrackKind.Name(t.kind), "mime_type": t.mime_type} for t in pub.tracks
        ]
        emit("published", tracks=tracks, rejected=[str(r) for r in pub.rejected], offer=offer, answer=pub.sdp_answer)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=pub.sdp_answer, type="answer"))

        deadline = time.monotonic() + CONNECT_TIMEOUT
        while pc.connectionState != "connected":
            if pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
                raise RuntimeError(
                    f"connectionState {pc.connectionState!r} (states {states}), wanted 'connected' "
                    f"within {CONNECT_TIMEOUT} s"
                )
            if stop.is_set():
                break
            await asyncio.sleep(0.05)
        else:
            emit("connected", after_s=round(time.monotonic() - T0, 2))

        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), args.stats_interval)
            except asyncio.TimeoutError:
                pass
            if pc.connectionState in ("failed", "closed"):
                raise RuntimeError(f"connectionState became {pc.connectionState!r}")
            emit("stats", at_s=round(time.monotonic() - T0, 2), **(await outbound_stats(pc)))
        emit("closed", reason="stdin closed or signal")
        return 0
    except Exception as e:  # noqa: BLE001 - reported to the driver, then exit 1
        emit("error", message=f"{type(e).__name__}: {e}")
        log(f"failed: {type(e).__name__}: {e}")
        return 1
    finally:
        if pc is not None:
            try:
                await asyncio.wait_for(pc.close(), CLOSE_TIMEOUT)
            except Exception as e:  # noqa: BLE001 - best effort while stopping
                log(f"pc.close(): {type(e).__name__}: {e}")
        if joined:
            try:
                await rpc(sig_stub.Leave, m.LeaveRequest())
            except grpc.RpcError as e:
                log(f"Leave: {e.code()} {e.details()}")
        channel.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grpc-addr", required=True, help="host:port of Ringcast's gRPC API")
    ap.add_argument("--token", required=True, help="participant token (grants.room, publish)")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--tone-hz", type=float, default=440.0)
    ap.add_argument("--stats-interval", type=float, default=1.0, help="seconds between stats lines")
    ap.add_argument("--no-stdin-watch", action="store_true", help="run until a signal, ignoring stdin")
    args = ap.parse_args()
    if args.width % 4 or args.height % 4:
        ap.error("--width and --height must be multiples of 4")
    # aioice leaves 127.0.0.1 out of its host candidates; offer only loopback instead.
    aioice.ice.get_host_addresses = loopback_host_addresses
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
