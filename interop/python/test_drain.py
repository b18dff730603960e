"""Interop: SIGTERM during a live session drains gracefully.

The requirement: on SIGTERM the node stops accepting new rooms and joins (readiness false, gRPC
health NOT_SERVING, Join and CreateRoom answer UNAVAILABLE), keeps media flowing for the
configured grace period, then closes the transports and exits 0.

The live session is aiortc publishing Opus and VP8 (as in test_aiortc_publish.py) with the
participant's Events stream open. The server runs with `--drain-grace-secs 4`. After SIGTERM the
test polls, every 250 ms and for most of the grace period, /readyz, /healthz, /metrics (decrypted
RTP must keep growing), aiortc's connection state and the Events stream; it checks gRPC health,
Join and CreateRoom once the node is draining; then it waits for the exit and for the end of the
session on both sides:
- the Events stream delivers exactly one more event, ParticipantLeft for the publisher with
  reason LEAVE_REASON_SERVER_SHUTDOWN, no earlier than the grace period, and then ends with OK;
- aiortc receives the server's DTLS close_notify, so its peer connection closes (without it,
  aiortc would only notice after ICE consent expires, about 30 s later).

Every observation is time-stamped relative to SIGTERM; the timeline is printed (-rP) and is in
every failure message, with the server log.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
import urllib.error
import urllib.request

import aioice.ice
import grpc
import pytest
from aiortc import (
    AudioStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ringcast_helpers import (
    RPC_TIMEOUT,
    admin_token,
    close_quietly,
    md,
    metric_lines,
    metric_sum,
    mint,
    parse_metrics,
    run_bounded,
    start_server,
    unique,
)

GRACE = 4  # s, --drain-grace-secs
# How long after SIGTERM the "during grace" checks run: most of the grace period, leaving
# margin for the 250 ms metrics publication and scheduling on a loaded machine.
OBSERVE_UNTIL = GRACE - 0.6
MEDIA_WINDOW = (2.0, OBSERVE_UNTIL)  # s after SIGTERM: decrypted RTP must grow inside it
MIN_RTP_IN_WINDOW = 20  # aiortc sends ~50 audio + ~30-90 video packets per second
DRAINING_WITHIN = 2.0  # s after SIGTERM until /readyz says 503 and health NOT_SERVING
EXIT_WITHIN = GRACE + 10.0  # s after SIGTERM until the process has exited
CLOSE_WITHIN = 5.0  # s after the exit until aiortc's connection has closed
EVENTS_END_WITHIN = 5.0  # s after the exit until the Events stream has ended

MIN_RTP_BEFORE = 50  # decrypted RTP before SIGTERM: the session is live
GATHER_TIMEOUT = 10.0
CONNECT_TIMEOUT = 20.0
METRICS_TIMEOUT = 15.0
CLOSE_TIMEOUT = 5.0
CASE_TIMEOUT = 90.0  # s, the whole asyncio part
SERVER_LOG_LEVEL = "info,ringcast_datapath=debug,ringcast_sfu=debug,ringcast_control=debug"

METRIC_PREFIXES = (
    "ringcast_srtp_packets_in_total",
    "ringcast_transports_connected_total",
    "ringcast_dtls_handshakes_total",
    "ringcast_packets_in_total",
    "ringcast_packets_out_total",
    "ringcast_drops_total",
    "ringcast_shard_transports",
)


class NoCloseNotify(AssertionError):
    """aiortc's peer connection did not close after the exit: no DTLS close_notify reached it."""


BACKENDS = ["io-uring", "recvmmsg"]


@pytest.fixture
def loopback_ice(monkeypatch):
    """aioice leaves 127.0.0.1 out of its host candidates; offer only loopback instead."""

    def loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"] if use_ipv4 else []

    monkeypatch.setattr(aioice.ice, "get_host_addresses", loopback_only)


class _LogCapture(logging.Handler):
    """Keeps aiortc's and aioice's log records that say how the connection ended."""

    MARKERS = ("DTLS shutdown by remote party", "Consent to send expired")

    def __init__(self, clock):
        super().__init__(logging.DEBUG)
        self.clock = clock
        self.records: list[tuple[float, str]] = []

    def emit(self, record):
        msg = record.getMessage()
        if any(m in msg for m in self.MARKERS):
            self.records.append((self.clock(), f"{record.name}: {msg}"))


def _http_status(url: str, timeout: float = 2.0) -> int | str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception as e:  # noqa: BLE001 - recorded in the timeline
        return f"error {e!r}"


def _prefer(transceiver, *mime_types: str) -> None:
    caps = RTCRtpSender.getCapabilities(transceiver.kind).codecs
    chosen = [c for m in mime_types for c in caps if c.mimeType.lower() == m]
    assert chosen, f"aiortc has none of {mime_types}: {[c.mimeType for c in caps]}"
    transceiver.setCodecPreferences(chosen)


class EventsReader(threading.Thread):
    """Reads one participant's Events stream, time-stamping each event and the end."""

    def __init__(self, stub, request, token: str, clock):
        super().__init__(daemon=True)
        self.clock = clock
        self.call = None
        self._stub, self._request, self._token = stub, request, token
        self.events: list[tuple[float, object]] = []
        self.ended: tuple[float, str] | None = None  # (when, "OK" or the error status)
        self.opened = threading.Event()

    def run(self):
        try:
            # Bounded: the whole case is shorter than this deadline.
            self.call = self._stub.Events(
                self._request, metadata=md(self._token), timeout=CASE_TIMEOUT
            )
            self.opened.set()
            for ev in self.call:
                self.events.append((self.clock(), ev))
            self.ended = (self.clock(), "OK")
        except grpc.RpcError as e:
            self.ended = (self.clock(), f"{e.code().name}: {e.details()}")
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.ended = (self.clock(), f"exception {e!r}")
        finally:
            self.opened.set()

    def cancel(self):
        if self.call is not None:
            self.call.cancel()


def _event_str(ev) -> str:
    kind = ev.WhichOneof("event")
    body = getattr(ev, kind) if kind else ev
    return f"{kind}{{{str(body).strip().replace(chr(10), ', ')}}}"


class Drain:
    """The session, SIGTERM, and what was observed."""

    def __init__(self, server, pb):
        self.server = server
        self.pb = pb
        self.pc: RTCPeerConnection | None = None
        self.t0 = time.monotonic()
        self.t_sig: float | None = None  # monotonic time of SIGTERM
        self.timeline: list[tuple[float, str]] = []
        self.events: EventsReader | None = None
        self.logs = _LogCapture(time.monotonic)

    # --- bookkeeping -------------------------------------------------------------

    def rel(self, t: float | None = None) -> float:
        """Seconds from SIGTERM to monotonic time `t` (default now); negative before it, and
        from the start of the case while SIGTERM has not been sent."""
        t = time.monotonic() if t is None else t
        return t - (self.t_sig if self.t_sig is not None else self.t0)

    def note(self, what: str) -> None:
        self.timeline.append((time.monotonic(), what))

    def timeline_text(self) -> str:
        """Every observation, in order, in seconds after SIGTERM."""
        rows = list(self.timeline)
        rows += [(t, f"aiortc log: {m}") for t, m in self.logs.records]
        if self.events is not None:
            rows += [(t, f"Events: {_event_str(e)}") for t, e in self.events.events]
            if self.events.ended:
                rows.append((self.events.ended[0], f"Events stream ended: {self.events.ended[1]}"))
        rows.sort(key=lambda r: r[0])
        return "\n".join(f"{self.rel(t):+7.2f} s  {w}" for t, w in rows)

    def metrics_for_message(self) -> str:
        text = self.server.metrics_text()
        if text.startswith("(GET /metrics failed"):
            return text
        return metric_lines(text, *METRIC_PREFIXES)

    def explain(self, what: str) -> str:
        return (
            f"{what}\n"
            f"--- timeline (seconds after SIGTERM):\n{self.timeline_text()}\n"
            f"--- process: returncode={self.server.proc.poll()}\n"
            f"--- aiortc: connectionState={self.pc.connectionState if self.pc else None}\n"
            f"--- metrics:\n{self.metrics_for_message()}\n"
            f"--- server log (tail):\n{self.server.log_tail(80)}"
        )

    async def rpc(self, method, request, token):
        return await asyncio.to_thread(
            method, request, metadata=md(token), timeout=RPC_TIMEOUT
        )

    async def rpc_code(self, method, request, token) -> grpc.StatusCode:
        try:
            await self.rpc(method, request, token)
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return e.code()

    async def rtp(self) -> float | None:
        text = await asyncio.to_thread(self.server.metrics_text)
        if text.startswith("(GET /metrics failed"):
            return None
        return metric_sum(parse_metrics(text), "ringcast_srtp_packets_in_total", kind="rtp")

    # --- the flow --------------------------------------------------------------------

    async def run(self) -> dict:
        channel = grpc.insecure_channel(self.server.grpc_addr)
        events_channel = grpc.insecure_channel(self.server.grpc_addr)
        try:
            return await self._run(channel, events_channel)
        finally:
            if self.events is not None:
                self.events.cancel()
            channel.close()
            events_channel.close()

    async def _run(self, channel, events_channel) -> dict:
        m = self.pb.msg
        rooms = self.pb.grpc.RoomServiceStub(channel)
        sig = self.pb.grpc.SignalingStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        http = f"http://{self.server.http_addr}"

        # --- a live session: Join, Events open, aiortc publishing ------------------------
        room_name = unique("drain")
        await self.rpc(rooms.CreateRoom, m.CreateRoomRequest(name=room_name), admin_token())
        tok = mint("drain-pub", room=room_name, publish=True, subscribe=True)
        joined = await self.rpc(sig.Join, m.JoinRequest(), tok)
        pub_sid = joined.participant.sid

        self.events = EventsReader(
            self.pb.grpc.SignalingStub(events_channel), m.EventsRequest(), tok, time.monotonic
        )
        self.events.start()
        await asyncio.to_thread(self.events.opened.wait, RPC_TIMEOUT)

        self.pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

        @pc.on("connectionstatechange")
        def _on_state():
            self.note(f"aiortc connectionState -> {pc.connectionState}")

        audio = pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        video = pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
        _prefer(audio, "audio/opus")
        _prefer(video, "video/vp8", "video/rtx")

        await pc.setLocalDescription(await pc.createOffer())
        deadline = time.monotonic() + GATHER_TIMEOUT
        while pc.iceGatheringState != "complete":
            if time.monotonic() > deadline:
                pytest.fail(self.explain(f"ICE gathering not complete after {GATHER_TIMEOUT} s"))
            await asyncio.sleep(0.05)
        pub = await self.rpc(
            sig.Publish,
            m.PublishRequest(
                sdp_offer=pc.localDescription.sdp, track_names={"0": "mic", "1": "camera"}
            ),
            tok,
        )
        assert list(pub.rejected) == [], self.explain(f"m-lines rejected: {pub.rejected}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=pub.sdp_answer, type="answer"))

        dtls = pc.getTransceivers()[0].sender.transport

        @dtls.on("statechange")
        def _on_dtls():
            self.note(f"aiortc DTLS transport -> {dtls.state}")

        deadline = time.monotonic() + CONNECT_TIMEOUT
        while pc.connectionState != "connected":
            if pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
                pytest.fail(self.explain(f"aiortc connectionState {pc.connectionState!r}"))
            await asyncio.sleep(0.05)

        deadline = time.monotonic() + METRICS_TIMEOUT
        while (rtp := await self.rtp() or 0) < MIN_RTP_BEFORE:
            if time.monotonic() > deadline:
                pytest.fail(self.explain(f"only {rtp:.0f} RTP decrypted before SIGTERM"))
            await asyncio.sleep(0.25)
        # The Events stream is live: it has told this participant its publisher connected.
        deadline = time.monotonic() + METRICS_TIMEOUT
        while not any(
            e.WhichOneof("event") == "transport_state"
            and e.transport_state.role == m.TRANSPORT_ROLE_PUBLISHER
            and e.transport_state.state == m.TRANSPORT_STATE_CONNECTED
            for _, e in self.events.events
        ):
            if self.events.ended is not None or time.monotonic() > deadline:
                pytest.fail(self.explain("no publisher CONNECTED event on the Events stream"))
            await asyncio.sleep(0.05)
        events_before = len(self.events.events)

        # --- SIGTERM ----------------------------------------------------------------------
        rtp_at_sig = await self.rtp() or 0
        self.t_sig = time.monotonic()
        self.server.proc.send_signal(signal.SIGTERM)
        self.note(f"SIGTERM sent (decrypted RTP {rtp_at_sig:.0f})")

        # Readiness false, liveness true.
        deadline = self.t_sig + DRAINING_WITHIN
        while (ready := await asyncio.to_thread(_http_status, f"{http}/readyz")) != 503:
            if time.monotonic() > deadline:
                pytest.fail(self.explain(f"/readyz still answers {ready!r}"))
            await asyncio.sleep(0.05)
        self.note("/readyz 503")
        live = await asyncio.to_thread(_http_status, f"{http}/healthz")
        self.note(f"/healthz {live}")
        assert live == 200, self.explain(f"/healthz answers {live!r} while draining")

        # gRPC health: both services NOT_SERVING.
        NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("ringcast.v1.Signaling", "ringcast.v1.RoomService"):
            while True:
                r = await asyncio.to_thread(
                    health.Check,
                    health_pb2.HealthCheckRequest(service=service),
                    timeout=RPC_TIMEOUT,
                )
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
                if r.status == NOT_SERVING:
                    break
                if time.monotonic() > deadline:
                    pytest.fail(self.explain(f"gRPC health for {service} is {status}"))
                await asyncio.sleep(0.05)
            self.note(f"gRPC health {service}: {status}")

        # No new joins, no new rooms.
        other = mint("drain-late", room=room_name, publish=True, subscribe=True)
        code = await self.rpc_code(sig.Join, m.JoinRequest(), other)
        self.note(f"Join (new identity, existing room): {code.name}")
        assert code == grpc.StatusCode.UNAVAILABLE, self.explain(f"Join while draining: {code}")
        code = await self.rpc_code(
            rooms.CreateRoom, m.CreateRoomRequest(name=unique("drain-new")), admin_token()
        )
        self.note(f"CreateRoom (new name): {code.name}")
        assert code == grpc.StatusCode.UNAVAILABLE, self.explain(
            f"CreateRoom while draining: {code}"
        )

        # Media keeps flowing, the connection and the Events stream stay up.
        samples: list[tuple[float, float]] = []
        last_ready = None
        while self.rel() < OBSERVE_UNTIL:
            rtp = await self.rtp()
            t = self.rel()
            if rtp is None:
                pytest.fail(self.explain(f"GET /metrics failed {t:.2f} s after SIGTERM"))
            samples.append((t, rtp))
            self.note(f"/metrics: decrypted RTP {rtp:.0f}")
            ready = await asyncio.to_thread(_http_status, f"{http}/readyz")
            if ready != last_ready:
                self.note(f"/readyz {ready}")
                last_ready = ready
            assert ready == 503, self.explain(f"/readyz answers {ready!r} during the drain")
            assert self.server.proc.poll() is None, self.explain(
                f"the server exited {t:.2f} s after SIGTERM, within the {GRACE} s grace period"
            )
            assert pc.connectionState == "connected", self.explain(
                f"aiortc is {pc.connectionState!r} {t:.2f} s after SIGTERM, within the grace"
            )
            assert self.events.ended is None, self.explain(
                f"the Events stream ended {t:.2f} s after SIGTERM, within the grace period"
            )
            await asyncio.sleep(0.25)
        lo, hi = MEDIA_WINDOW
        in_window = [v for t, v in samples if lo <= t <= hi]
        before_window = [v for t, v in samples if t < lo]
        assert len(in_window) >= 2 and before_window, self.explain(
            f"too few /metrics samples: {samples}"
        )
        grew = in_window[-1] - before_window[-1]
        assert grew >= MIN_RTP_IN_WINDOW, self.explain(
            f"decrypted RTP grew by {grew:.0f} from ~{lo} s to ~{hi} s after SIGTERM "
            f"(want >= {MIN_RTP_IN_WINDOW}): media stopped during the grace period"
        )
        new_events = [e for _, e in _drain_events(self.events.events[events_before:])]
        assert not new_events, self.explain(f"events during the grace period: {new_events}")
        self.note(f"still connected, Events stream open, RTP +{grew:.0f} in [{lo}, {hi}] s")

        # --- the end of the grace period ----------------------------------------------------
        deadline = self.t_sig + EXIT_WITHIN
        while (rc := self.server.proc.poll()) is None:
            if time.monotonic() > deadline:
                pytest.fail(
                    self.explain(f"the server has not exited {EXIT_WITHIN} s after SIGTERM")
                )
            await asyncio.sleep(0.05)
        t_exit = self.rel()
        self.note(f"process exited, code {rc}")
        assert t_exit >= GRACE, self.explain(f"the server exited before the {GRACE} s grace")
        assert rc == 0, self.explain(f"the server exited with code {rc}")

        deadline = time.monotonic() + EVENTS_END_WITHIN
        while self.events.ended is None:
            if time.monotonic() > deadline:
                pytest.fail(self.explain("the Events stream is still open after the exit"))
            await asyncio.sleep(0.05)
        after = _drain_events(self.events.events[events_before:])
        assert len(after) == 1, self.explain(
            f"after SIGTERM the Events stream delivered {[_event_str(e) for _, e in after]}, "
            f"wanted exactly one ParticipantLeft"
        )
        t_left, left_ev = self.rel(after[0][0]), after[0][1]
        assert left_ev.WhichOneof("event") == "participant_left", self.explain(
            f"last event {_event_str(left_ev)}"
        )
        left = left_ev.participant_left
        assert (left.identity, left.sid) == ("drain-pub", pub_sid), self.explain(
            f"ParticipantLeft for {left.identity}/{left.sid}, wanted drain-pub/{pub_sid}"
        )
        assert left.reason == m.LEAVE_REASON_SERVER_SHUTDOWN, self.explain(
            f"ParticipantLeft reason {m.LeaveReason.Name(left.reason)}"
        )
        assert t_left >= GRACE - 0.1, self.explain(
            f"ParticipantLeft arrived {t_left:.2f} s after SIGTERM, before the {GRACE} s grace"
        )
        assert self.events.ended[1] == "OK", self.explain(
            f"the Events stream ended with {self.events.ended[1]}, not OK"
        )

        # aiortc: the server's close_notify closes the connection.
        deadline = time.monotonic() + CLOSE_WITHIN
        while pc.connectionState not in ("closed", "failed"):
            if time.monotonic() > deadline:
                raise NoCloseNotify(
                    self.explain(
                        f"aiortc is still {pc.connectionState!r} {CLOSE_WITHIN} s after the exit: "
                        f"no DTLS close_notify reached it"
                    )
                )
            await asyncio.sleep(0.05)
        t_closed = self.rel()
        close_notify = [
            self.rel(t) for t, msg in self.logs.records if "DTLS shutdown by remote party" in msg
        ]
        if not close_notify:
            raise NoCloseNotify(
                self.explain(
                    f"aiortc went {pc.connectionState!r} without receiving the server's "
                    f"close_notify"
                )
            )
        return {
            "readyz_503_s": round(next(self.rel(t) for t, w in self.timeline if w == "/readyz 503"),
                                  2),
            "rtp_grew_in_window": int(grew),
            "events_left_s": round(t_left, 2),
            "exit_s": round(t_exit, 2),
            "close_notify_s": round(close_notify[0], 2),
            "aiortc_closed_s": round(t_closed, 2),
            "aiortc_final_state": pc.connectionState,
        }

    async def close(self) -> None:
        await close_quietly(self.pc, CLOSE_TIMEOUT)


def _drain_events(timed_events):
    """The events a drain may cause. Dynacast pauses the video of a track nobody subscribes to
    3 s after it was published (TrackLayersWanted), whenever that falls: not one of them."""
    return [(t, e) for t, e in timed_events if e.WhichOneof("event") != "track_layers_wanted"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigterm_drains_live_session(backend, pb, tmp_path, loopback_ice):
    server = start_server(
        tmp_path,
        lambda attempt: [
            "--udp-port-base", "0",
            "--shards", "1",
            "--media-backend", backend,
            "--public-ip", "127.0.0.1",
            "--drain-grace-secs", str(GRACE),
            "--log-level", SERVER_LOG_LEVEL,
        ],
        name=f"ringcast-drain-{backend}",
    )
    case = Drain(server, pb)
    # "DTLS shutdown by remote party" is a debug record, "Consent to send expired" an info one.
    loggers = [
        (logging.getLogger("aiortc.rtcdtlstransport"), logging.DEBUG),
        (logging.getLogger("aioice.ice"), logging.INFO),
    ]
    levels = [lg.level for lg, _ in loggers]
    for lg, level in loggers:
        lg.addHandler(case.logs)
        lg.setLevel(level)
    try:
        result = asyncio.run(run_bounded(case, CASE_TIMEOUT))
    finally:
        for (lg, _), level in zip(loggers, levels):
            lg.removeHandler(case.logs)
            lg.setLevel(level)
        server.stop()  # a no-op once it has exited; otherwise SIGTERM (cuts the drain short)
    print(f"drain {backend}: {result}")  # shown with -rP
    print("timeline (seconds after SIGTERM):\n" + case.timeline_text())
