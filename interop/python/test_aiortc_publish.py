"""Interop: aiortc publishes audio (Opus) and video (VP8) to a real Ringcast server.

An independent WebRTC stack (aiortc: aioice, pyOpenSSL DTLS, libsrtp) goes through the whole
publisher path: CreateRoom, Join, Publish (its SDP offer, Ringcast's ICE-lite answer), ICE
connectivity checks against the room's shard, the DTLS handshake (Ringcast is the DTLS server)
and SRTP. Media is not forwarded yet, so success is read from the server's /metrics: packets
authenticated and decrypted, the SRTP profile of the connected transport, no auth failures.

Each case starts its own server with one shard on an ephemeral UDP port
(`--udp-port-base 0`), on one datapath backend, accepting one SRTP profile. aiortc offers all
three profiles, so the server's restriction decides which one is used.

Every wait is bounded; a failure message carries the server log and the relevant metrics.
"""

from __future__ import annotations

import asyncio
import time

import aioice.ice
import grpc
import pytest
from aiortc import (
    AudioStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)

from ringcast_helpers import (
    admin_token,
    call,
    close_quietly,
    loopback_host_addresses,
    metric_lines,
    metric_sum,
    mint,
    parse_metrics,
    prefer_codecs,
    run_bounded,
    start_server,
    unique,
)

BACKENDS = ["io-uring", "recvmmsg"]
PROFILES = ["AEAD_AES_128_GCM", "AEAD_AES_256_GCM", "AES_CM_128_HMAC_SHA1_80"]

# What /metrics calls each backend flag value.
BACKEND_LABEL = {"io-uring": "io_uring", "recvmmsg": "recvmmsg"}
# What OpenSSL (aiortc's DTLS) calls each profile.
OPENSSL_PROFILE = {
    "AEAD_AES_128_GCM": b"SRTP_AEAD_AES_128_GCM",
    "AEAD_AES_256_GCM": b"SRTP_AEAD_AES_256_GCM",
    "AES_CM_128_HMAC_SHA1_80": b"SRTP_AES128_CM_SHA1_80",
}

MIN_RTP = 50  # decrypted RTP packets the server must count
MIN_RTCP = 1  # decrypted SRTCP packets (aiortc sends a sender report every 0.5-1.5 s)
GATHER_TIMEOUT = 10.0  # s, aiortc ICE gathering
CONNECT_TIMEOUT = 20.0  # s, until pc.connectionState == "connected"
METRICS_TIMEOUT = 15.0  # s, until the counters reach what we expect
CLOSE_TIMEOUT = 5.0  # s, pc.close()
# Debug for our crates (shown in failure messages), not for h2/tonic.
SERVER_LOG_LEVEL = "info,ringcast_datapath=debug,ringcast_sfu=debug,ringcast_control=debug"
CASE_TIMEOUT = 60.0  # s, the whole asyncio part of one case

METRIC_PREFIXES = (
    "ringcast_srtp_packets_in_total",
    "ringcast_transports_connected_total",
    "ringcast_dtls_handshakes_total",
    "ringcast_stun_checks_total",
    "ringcast_stun_check_failures_total",
    "ringcast_packets_in_total",
    "ringcast_packets_out_total",
    "ringcast_drops_total",
    "ringcast_datapath_backend",
    "ringcast_shard_transports",
)


@pytest.fixture
def loopback_ice(monkeypatch):
    """aioice leaves 127.0.0.1 out of its host candidates; offer only loopback instead."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", loopback_host_addresses)


def _candidate_ports(sdp: str) -> list[tuple[str, int]]:
    """(address, port) of every a=candidate line."""
    out = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            f = line.split()
            out.append((f[4], int(f[5])))
    return out


class Case:
    """One publish attempt and everything needed to explain a failure."""

    def __init__(self, server, pb, backend: str, profile: str):
        self.server = server
        self.pb = pb
        self.backend = backend
        self.profile = profile
        self.pc: RTCPeerConnection | None = None
        self.states: list[tuple[float, str]] = []
        self.t0 = time.monotonic()
        self.offer = ""
        self.answer = ""

    # --- diagnostics ---------------------------------------------------------

    def client_state(self) -> str:
        pc = self.pc
        if pc is None:
            return "no peer connection"
        lines = [
            f"connectionState={pc.connectionState} iceConnectionState={pc.iceConnectionState} "
            f"iceGatheringState={pc.iceGatheringState}",
            "state changes: " + ", ".join(f"{t:.2f}s {s}" for t, s in self.states),
        ]
        for tr in pc.getTransceivers():
            dtls = tr.sender.transport
            ice = dtls.transport
            ssl = getattr(dtls, "_ssl", None)
            selected = ssl.get_selected_srtp_profile() if ssl is not None else None
            lines.append(
                f"mid={tr.mid} {tr.kind}: dtls={dtls.state} role={getattr(dtls, '_role', '?')} "
                f"srtp={selected!r} ice={ice.state}"
            )
        return "\n".join(lines)

    async def client_sent(self) -> int:
        if self.pc is None:
            return 0
        report = await self.pc.getStats()
        return sum(s.packetsSent for s in report.values() if s.type == "outbound-rtp")

    def explain(self, what: str, metrics: str | None = None) -> str:
        if metrics is None:
            time.sleep(0.3)  # shards publish their counters every 250 ms
            metrics = self.server.metrics_text()
        return (
            f"{what}\n"
            f"--- case: --media-backend {self.backend} --srtp-profile {self.profile}, "
            f"{time.monotonic() - self.t0:.1f} s in\n"
            f"--- aiortc:\n{self.client_state()}\n"
            f"--- metrics:\n{metric_lines(metrics, *METRIC_PREFIXES)}\n"
            f"--- offer:\n{self.offer}\n--- answer:\n{self.answer}\n"
            f"--- server log (tail):\n{self.server.log_tail(80)}"
        )

    # --- the flow ---------------------------------------------------------------

    async def rpc(self, method, request, token):
        return await asyncio.to_thread(call, method, request, token)

    async def run(self) -> dict:
        m = self.pb.msg
        channel = grpc.insecure_channel(self.server.grpc_addr)
        try:
            return await self._run(m, channel)
        finally:
            channel.close()

    async def _run(self, m, channel) -> dict:
        rooms = self.pb.grpc.RoomServiceStub(channel)
        sig = self.pb.grpc.SignalingStub(channel)
        room_name = unique("aiortc-publish")
        room = await self.rpc(rooms.CreateRoom, m.CreateRoomRequest(name=room_name), admin_token())
        assert room.shard == 0, room
        tok = mint("aiortc-pub", room=room_name, publish=True)
        joined = await self.rpc(sig.Join, m.JoinRequest(), tok)
        assert joined.participant.can_publish

        # No ICE servers: nothing leaves the machine (aiortc defaults to a public STUN server).
        self.pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

        @pc.on("connectionstatechange")
        def _on_state():
            self.states.append((time.monotonic() - self.t0, pc.connectionState))

        audio = pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        video = pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
        prefer_codecs(audio, "audio/opus")
        prefer_codecs(video, "video/vp8", "video/rtx")

        await pc.setLocalDescription(await pc.createOffer())
        deadline = time.monotonic() + GATHER_TIMEOUT
        while pc.iceGatheringState != "complete":
            if time.monotonic() > deadline:
                pytest.fail(self.explain(f"ICE gathering not complete after {GATHER_TIMEOUT} s"))
            await asyncio.sleep(0.05)
        self.offer = pc.localDescription.sdp
        offered = _candidate_ports(self.offer)
        assert offered and all(a == "127.0.0.1" for a, _ in offered), (
            f"the loopback patch did not apply; offered candidates {offered}"
        )

        pub = await self.rpc(
            sig.Publish,
            m.PublishRequest(sdp_offer=self.offer, track_names={"0": "mic", "1": "camera"}),
            tok,
        )
        self.answer = pub.sdp_answer
        assert list(pub.rejected) == [], self.explain(f"m-lines rejected: {pub.rejected}")
        mimes = sorted(t.mime_type.lower() for t in pub.tracks)
        assert mimes == ["audio/opus", "video/vp8"], self.explain(f"published tracks {pub.tracks}")
        answered = _candidate_ports(self.answer)
        assert answered, self.explain("the answer has no a=candidate")
        assert all(port != 0 for _, port in answered), self.explain(
            "--udp-port-base 0: the candidates must carry the shard's real port"
        )
        assert any(a == "127.0.0.1" for a, _ in answered), self.explain(
            "--public-ip 127.0.0.1: the answer must carry a loopback candidate"
        )

        await pc.setRemoteDescription(RTCSessionDescription(sdp=self.answer, type="answer"))

        deadline = time.monotonic() + CONNECT_TIMEOUT
        while pc.connectionState != "connected":
            if pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
                pytest.fail(
                    self.explain(
                        f"aiortc connectionState is {pc.connectionState!r} "
                        f"(wanted 'connected' within {CONNECT_TIMEOUT} s)"
                    )
                )
            await asyncio.sleep(0.05)
        connected_after = time.monotonic() - self.t0

        # The client's side of the DTLS-SRTP negotiation: the profile the server allowed.
        for tr in pc.getTransceivers():
            selected = tr.sender.transport._ssl.get_selected_srtp_profile()
            assert selected == OPENSSL_PROFILE[self.profile], self.explain(
                f"aiortc negotiated {selected!r}, the server accepts only {self.profile}"
            )

        # The server's side, from /metrics (published every 250 ms).
        want_backend = BACKEND_LABEL[self.backend]
        deadline = time.monotonic() + METRICS_TIMEOUT
        while True:
            text = await asyncio.to_thread(self.server.metrics_text)
            s = parse_metrics(text)
            rtp = metric_sum(s, "ringcast_srtp_packets_in_total", kind="rtp")
            rtcp = metric_sum(s, "ringcast_srtp_packets_in_total", kind="rtcp")
            connected = metric_sum(
                s, "ringcast_transports_connected_total", srtp_profile=self.profile
            )
            auth_failed = metric_sum(s, "ringcast_drops_total", reason="srtp_auth_failed")
            assert auth_failed == 0, self.explain(
                f"{auth_failed:.0f} SRTP/SRTCP packets failed authentication", text
            )
            if rtp >= MIN_RTP and rtcp >= MIN_RTCP and connected >= 1:
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    self.explain(
                        f"after {METRICS_TIMEOUT} s: {rtp:.0f} RTP decrypted (want >= {MIN_RTP}), "
                        f"{rtcp:.0f} RTCP decrypted (want >= {MIN_RTCP}), "
                        f"{connected:.0f} transports connected with {self.profile} (want >= 1), "
                        f"aiortc sent {await self.client_sent()} RTP packets",
                        text,
                    )
                )
            await asyncio.sleep(0.25)

        sent = await self.client_sent()
        backends = {
            ls.get("backend"): v for n, ls, v in s if n == "ringcast_datapath_backend"
        }
        assert backends.get(want_backend) == 1 and all(
            v == 0 for b, v in backends.items() if b != want_backend
        ), self.explain(f"datapath backend gauge {backends}, wanted {want_backend}", text)
        other_profiles = {
            p: metric_sum(s, "ringcast_transports_connected_total", srtp_profile=p)
            for p in PROFILES
            if p != self.profile
        }
        assert not any(other_profiles.values()), self.explain(
            f"transports connected with profiles the server was told not to accept: "
            f"{other_profiles}",
            text,
        )
        dtls_failed = metric_sum(s, "ringcast_dtls_handshakes_total", result="failed")
        assert dtls_failed == 0, self.explain(f"{dtls_failed:.0f} DTLS handshakes failed", text)
        assert metric_sum(s, "ringcast_stun_checks_total") >= 1, self.explain("no STUN checks", text)
        # The server cannot have decrypted more than aiortc sent (read after the metrics).
        assert rtp <= sent, self.explain(f"server decrypted {rtp:.0f} RTP, aiortc sent {sent}", text)

        await asyncio.wait_for(pc.close(), CLOSE_TIMEOUT)
        drops = {
            ls.get("reason"): v for n, ls, v in s if n == "ringcast_drops_total" and v
        }
        return {
            "connected_after_s": round(connected_after, 2),
            "rtp_decrypted": int(rtp),
            "rtcp_decrypted": int(rtcp),
            "aiortc_rtp_sent": sent,
            "drops": drops,
        }

    async def close(self) -> None:
        await close_quietly(self.pc, CLOSE_TIMEOUT)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_aiortc_publish(backend, profile, pb, tmp_path, loopback_ice):
    server = start_server(
        tmp_path,
        lambda attempt: [
            "--media-backend", backend,
            "--srtp-profile", profile,
            "--udp-port-base", "0",
            "--shards", "1",
            "--public-ip", "127.0.0.1",
            "--drain-grace-secs", "0",
            "--log-level", SERVER_LOG_LEVEL,
        ],
        name=f"ringcast-{backend}-{profile}",
    )
    try:
        case = Case(server, pb, backend, profile)
        result = asyncio.run(run_bounded(case, CASE_TIMEOUT))
    finally:
        code = server.stop()
    print(f"{backend} {profile}: {result}")  # shown with -rP
    assert code == 0, f"ringcast exited {code} on SIGTERM\n{server.log_tail(40)}"
