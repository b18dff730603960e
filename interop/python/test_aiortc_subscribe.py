"""Interop: aiortc SUBSCRIBES through Ringcast, with transport-cc off (REMB only).

aiortc implements no transport-cc feedback: its receivers estimate the downlink themselves (from
the abs-send-time header extension) and send REMB. So this is the path where Ringcast's
per-subscriber congestion control has only the subscriber's REMB to go on, with a stack that is
not libwebrtc's.

One server (one shard, io-uring). An aiortc publisher publishes VP8 video (a moving test
pattern) and Opus audio (a tone) with Join + Publish. An aiortc subscriber (subscribe grant
only) Joins, reads its Events stream until SubscriberOfferReady, calls Subscribe, answers
(SubscribeAnswer), and answers again whenever a newer offer is announced. Then:
- the subscriber's answer has no transport-cc (no transport-wide-cc extmap, no
  `a=rtcp-fb:* transport-cc`) and keeps goog-remb and abs-send-time on the video;
- its tracks decode: video frames with width and height > 0 and audio frames, both counts
  growing over a 2 s window;
- /metrics: RTP forwarded, no srtp_auth_failed drops, `ringcast_subscriber_estimate_bps` present
  with a positive value (the estimate came from aiortc's REMB), and
  `ringcast_twcc_feedback_received_total` still 0 (nobody sent transport-cc feedback);
- the Events stream carries SubscriptionQualityChanged for the video track with layers=1 and,
  once REMB arrived, a positive estimate_bps.

Every wait is bounded; a failure message carries the client state, the events, the relevant
metrics, the SDP and the server log tail.
"""

from __future__ import annotations

import asyncio
import threading
import time

import aioice.ice
import grpc
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from aiortc_publisher import MovingPattern, Tone
from ringcast_helpers import (
    RPC_TIMEOUT,
    admin_token,
    close_quietly,
    loopback_host_addresses,
    md,
    metric_lines,
    metric_sum,
    mint,
    parse_metrics,
    prefer_codecs,
    run_bounded,
    start_server,
    unique,
)

TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"

GATHER_TIMEOUT = 10.0  # s, aiortc ICE gathering
CONNECT_TIMEOUT = 20.0  # s, until a pc's connectionState is "connected"
OFFER_TIMEOUT = 10.0  # s, until the subscriber's Events stream says SubscriberOfferReady
FIRST_FRAMES_TIMEOUT = 15.0  # s, until the first decoded video and audio frames
GROWTH_WINDOW = 2.0  # s, over which the decoded frame counts must grow
MIN_VIDEO_GROWTH = 15  # frames in the window (the publisher sends 30 fps)
MIN_AUDIO_GROWTH = 40  # frames in the window (20 ms Opus frames: 100 in 2 s)
METRICS_TIMEOUT = 10.0  # s, until /metrics shows a subscriber estimate
QUALITY_TIMEOUT = 10.0  # s, until a SubscriptionQualityChanged with an estimate arrives
CLOSE_TIMEOUT = 5.0  # s, pc.close()
CASE_TIMEOUT = 60.0  # s, the whole asyncio part
SERVER_LOG_LEVEL = "info,ringcast_datapath=debug,ringcast_sfu=debug,ringcast_control=debug"

METRIC_PREFIXES = (
    "ringcast_rtp_forwarded_total",
    "ringcast_subscriber_estimate_bps",
    "ringcast_twcc_feedback_received_total",
    "ringcast_twcc_feedback_sent_total",
    "ringcast_srtp_packets_in_total",
    "ringcast_transports_connected_total",
    "ringcast_drops_total",
    "ringcast_packets_out_total",
)


@pytest.fixture
def loopback_ice(monkeypatch):
    """aioice leaves 127.0.0.1 out of its host candidates; offer only loopback instead."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", loopback_host_addresses)


class EventsReader(threading.Thread):
    """Reads one participant's Events stream into a list, time-stamped."""

    def __init__(self, stub, request, token: str, clock, deadline: float):
        super().__init__(daemon=True)
        self.clock = clock
        self.call = None
        self._stub, self._request, self._token, self._deadline = stub, request, token, deadline
        self.events: list[tuple[float, object]] = []
        self.ended: str | None = None
        self.opened = threading.Event()

    def run(self):
        try:
            self.call = self._stub.Events(
                self._request, metadata=md(self._token), timeout=self._deadline
            )
            self.opened.set()
            for ev in self.call:
                self.events.append((self.clock(), ev))
            self.ended = "OK"
        except grpc.RpcError as e:
            self.ended = f"{e.code().name}: {e.details()}"
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.ended = f"exception {e!r}"
        finally:
            self.opened.set()

    def of(self, kind: str) -> list:
        return [getattr(e, kind) for _, e in list(self.events) if e.WhichOneof("event") == kind]

    def cancel(self):
        if self.call is not None:
            self.call.cancel()


def _event_str(ev) -> str:
    kind = ev.WhichOneof("event")
    body = getattr(ev, kind) if kind else ev
    return f"{kind}{{{str(body).strip().replace(chr(10), ', ')}}}"


def _media_sections(sdp: str) -> list[list[str]]:
    """The lines of each m= section (the session part left out)."""
    out: list[list[str]] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            out.append([line])
        elif out:
            out[-1].append(line)
    return out


class Receiver:
    """Pulls frames from one remote track and counts what decodes."""

    def __init__(self, track, clock):
        self.track = track
        self.kind = track.kind
        self.clock = clock
        self.frames = 0
        self.sized = 0  # video frames with width and height > 0
        self.samples = 0  # audio samples
        self.first_at: float | None = None
        self.last_size: tuple[int, int] | None = None
        self.sizes: set[tuple[int, int]] = set()
        self.ended: str | None = None
        self.task = asyncio.ensure_future(self._pull())

    async def _pull(self):
        try:
            while True:
                frame = await self.track.recv()
                self.frames += 1
                if self.first_at is None:
                    self.first_at = self.clock()
                if self.kind == "video":
                    if frame.width > 0 and frame.height > 0:
                        self.sized += 1
                    self.last_size = (frame.width, frame.height)
                    self.sizes.add(self.last_size)
                else:
                    self.samples += frame.samples
        except MediaStreamError:
            self.ended = "track ended"
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.ended = f"{type(e).__name__}: {e}"

    def count(self) -> int:
        return self.sized if self.kind == "video" else self.frames

    def summary(self) -> str:
        extra = (
            f"sized={self.sized} sizes={sorted(self.sizes)}"
            if self.kind == "video"
            else f"samples={self.samples}"
        )
        return f"{self.kind}: frames={self.frames} {extra} ended={self.ended}"


class Case:
    """The publisher, the subscriber, and everything needed to explain a failure."""

    def __init__(self, server, pb):
        self.server = server
        self.pb = pb
        self.t0 = time.monotonic()
        self.pub_pc: RTCPeerConnection | None = None
        self.sub_pc: RTCPeerConnection | None = None
        self.events: EventsReader | None = None
        self.receivers: list[Receiver] = []
        self.states: list[tuple[float, str]] = []
        self.negotiations: list[dict] = []  # version, offer, answer, mids, rejected
        self.answered_version = 0
        self.sub_tok = ""
        self.sig = None
        self.notes: list[tuple[float, str]] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    def note(self, what: str) -> None:
        self.notes.append((self.now(), what))

    # --- diagnostics ---------------------------------------------------------------

    def explain(self, what: str, metrics: str | None = None) -> str:
        if metrics is None:
            time.sleep(0.3)  # shards publish their counters every 250 ms
            metrics = self.server.metrics_text()
        pcs = []
        for name, pc in (("publisher", self.pub_pc), ("subscriber", self.sub_pc)):
            if pc is not None:
                pcs.append(
                    f"{name}: connectionState={pc.connectionState} "
                    f"iceConnectionState={pc.iceConnectionState}"
                )
        events = [] if self.events is None else list(self.events.events)
        quality = [(t, e) for t, e in events if e.WhichOneof("event") == "subscription_quality"]
        other = [(t, e) for t, e in events if e.WhichOneof("event") not in
                 ("subscription_quality", "active_speakers")]
        last = self.negotiations[-1] if self.negotiations else {}
        return (
            f"{what}\n"
            f"--- {self.now():.1f} s in\n"
            f"--- peers:\n" + "\n".join(pcs) + "\n"
            f"state changes: {', '.join(f'{t:.2f}s {s}' for t, s in self.states)}\n"
            f"--- receivers:\n" + "\n".join(r.summary() for r in self.receivers) + "\n"
            f"--- notes:\n" + "\n".join(f"{t:7.2f} s {w}" for t, w in self.notes) + "\n"
            f"--- subscriber events ({len(events)}, ended={self.events and self.events.ended}):\n"
            + "\n".join(f"{t - self.t0:7.2f} s {_event_str(e)}" for t, e in other)
            + f"\n--- subscriptionQuality events ({len(quality)}), last 5:\n"
            + "\n".join(f"{t - self.t0:7.2f} s {_event_str(e)}" for t, e in quality[-5:])
            + f"\n--- metrics:\n{metric_lines(metrics, *METRIC_PREFIXES)}\n"
            f"--- latest subscriber offer (v{last.get('version')}):\n{last.get('offer', '')}\n"
            f"--- subscriber answer:\n{last.get('answer', '')}\n"
            f"--- server log (tail):\n{self.server.log_tail(80)}"
        )

    # --- helpers ------------------------------------------------------------------------

    async def rpc(self, method, request, token):
        return await asyncio.to_thread(method, request, metadata=md(token), timeout=RPC_TIMEOUT)

    def watch(self, pc, name: str) -> None:
        @pc.on("connectionstatechange")
        def _on_state():
            self.states.append((self.now(), f"{name} {pc.connectionState}"))

    async def gathered(self, pc) -> None:
        deadline = time.monotonic() + GATHER_TIMEOUT
        while pc.iceGatheringState != "complete":
            if time.monotonic() > deadline:
                pytest.fail(self.explain(f"ICE gathering not complete after {GATHER_TIMEOUT} s"))
            await asyncio.sleep(0.05)

    async def connected(self, pc, name: str) -> None:
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while pc.connectionState != "connected":
            if pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
                pytest.fail(
                    self.explain(
                        f"{name} connectionState is {pc.connectionState!r} "
                        f"(wanted 'connected' within {CONNECT_TIMEOUT} s)"
                    )
                )
            await asyncio.sleep(0.05)

    def announced(self) -> int:
        """The highest SubscriberOfferReady version the subscriber's Events stream carried."""
        return max((o.offer_version for o in self.events.of("subscriber_offer_ready")), default=0)

    async def negotiate(self) -> None:
        """One Subscribe / SubscribeAnswer round on the subscriber pc."""
        m = self.pb.msg
        offer = await self.rpc(self.sig.Subscribe, m.SubscribeRequest(), self.sub_tok)
        if offer.offer_version == self.answered_version:
            return
        rec = {
            "version": offer.offer_version,
            "offer": offer.sdp_offer,
            "mids": dict(offer.mid_to_track_sid),
            "answer": "",
        }
        self.negotiations.append(rec)
        pc = self.sub_pc
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp_offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self.gathered(pc)
        rec["answer"] = pc.localDescription.sdp
        try:
            res = await self.rpc(
                self.sig.SubscribeAnswer,
                m.SubscribeAnswerRequest(sdp_answer=rec["answer"], offer_version=offer.offer_version),
                self.sub_tok,
            )
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION:
                self.note(f"answer to v{offer.offer_version} outdated: {e.details()}")
                return  # a newer offer is announced; the loop fetches it
            raise
        rec["rejected"] = [f"{r.mid}: {r.reason}" for r in res.rejected]
        self.answered_version = offer.offer_version
        self.note(
            f"answered v{offer.offer_version}: mids {rec['mids']}, rejected {rec['rejected']}"
        )

    async def keep_negotiated(self) -> None:
        """Answers every newer offer the Events stream announces (publishes can come late)."""
        while True:
            if self.announced() > self.answered_version:
                await self.negotiate()
            await asyncio.sleep(0.05)

    async def decoding(self, timeout: float) -> None:
        """Waits until a video and an audio receiver have decoded at least one frame."""
        deadline = time.monotonic() + timeout
        while True:
            kinds = {r.kind for r in self.receivers if r.count() > 0}
            if {"audio", "video"} <= kinds:
                return
            if time.monotonic() > deadline:
                pytest.fail(
                    self.explain(f"no decoded frames of {sorted({'audio', 'video'} - kinds)} "
                                 f"within {timeout} s")
                )
            await asyncio.sleep(0.05)

    # --- the flow ------------------------------------------------------------------------

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
        self.sig = sig = self.pb.grpc.SignalingStub(channel)
        room_name = unique("aiortc-subscribe")
        room = await self.rpc(rooms.CreateRoom, m.CreateRoomRequest(name=room_name), admin_token())
        assert room.shard == 0, room

        # --- the publisher: aiortc, VP8 + Opus ----------------------------------------------
        pub_tok = mint("aiortc-pub", room=room_name, publish=True)
        await self.rpc(sig.Join, m.JoinRequest(name="aiortc publisher"), pub_tok)
        self.pub_pc = pub = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.watch(pub, "publisher")
        audio = pub.addTransceiver(Tone(440.0), direction="sendonly")
        video = pub.addTransceiver(MovingPattern(320, 240, 30), direction="sendonly")
        prefer_codecs(audio, "audio/opus")
        prefer_codecs(video, "video/vp8", "video/rtx")
        await pub.setLocalDescription(await pub.createOffer())
        await self.gathered(pub)
        published = await self.rpc(
            sig.Publish,
            m.PublishRequest(
                sdp_offer=pub.localDescription.sdp,
                track_names={audio.mid: "tone", video.mid: "pattern"},
            ),
            pub_tok,
        )
        assert list(published.rejected) == [], self.explain(f"rejected: {published.rejected}")
        tracks = {m.TrackKind.Name(t.kind): t.sid for t in published.tracks}
        video_sid = tracks.get("TRACK_KIND_VIDEO")
        audio_sid = tracks.get("TRACK_KIND_AUDIO")
        assert video_sid and audio_sid, self.explain(f"published tracks {published.tracks}")
        await pub.setRemoteDescription(
            RTCSessionDescription(sdp=published.sdp_answer, type="answer")
        )
        await self.connected(pub, "publisher")
        self.note(f"publisher connected: video {video_sid}, audio {audio_sid}")

        # --- the subscriber: aiortc, subscribe grant only -----------------------------------
        self.sub_tok = mint("aiortc-sub", room=room_name, subscribe=True)
        joined = await self.rpc(sig.Join, m.JoinRequest(name="aiortc subscriber"), self.sub_tok)
        assert joined.participant.can_subscribe and not joined.participant.can_publish, joined
        self.events = EventsReader(
            self.pb.grpc.SignalingStub(events_channel), m.EventsRequest(), self.sub_tok,
            time.monotonic, CASE_TIMEOUT,
        )
        self.events.start()
        await asyncio.to_thread(self.events.opened.wait, RPC_TIMEOUT)

        self.sub_pc = sub = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.watch(sub, "subscriber")

        @sub.on("track")
        def _on_track(track):
            self.note(f"ontrack {track.kind}")
            self.receivers.append(Receiver(track, self.now))

        deadline = time.monotonic() + OFFER_TIMEOUT
        while self.announced() == 0:
            if self.events.ended is not None or time.monotonic() > deadline:
                pytest.fail(self.explain(f"no SubscriberOfferReady within {OFFER_TIMEOUT} s"))
            await asyncio.sleep(0.05)
        await self.negotiate()
        negotiator = asyncio.ensure_future(self.keep_negotiated())
        try:
            return await self._receive(m, sub, video_sid, audio_sid)
        finally:
            negotiator.cancel()
            try:
                await negotiator
            except asyncio.CancelledError:
                pass

    async def _receive(self, m, sub, video_sid: str, audio_sid: str) -> dict:
        # The answer: no transport-cc, so Ringcast has only REMB for this subscriber.
        rec = self.negotiations[-1]
        assert rec.get("rejected") == [], self.explain(f"SubscribeAnswer rejected {rec}")
        assert sorted(rec["mids"].values()) == sorted([video_sid, audio_sid]), self.explain(
            f"the offer carries {rec['mids']}, wanted both published tracks"
        )
        answer = rec["answer"]
        assert TWCC_URI not in answer, self.explain("aiortc answered with transport-wide-cc")
        assert not any(
            l.startswith("a=rtcp-fb:") and l.split()[-1] == "transport-cc"
            for l in answer.splitlines()
        ), self.explain("aiortc answered with rtcp-fb transport-cc")
        videos = [s for s in _media_sections(answer) if s[0].startswith("m=video")]
        assert len(videos) == 1, self.explain(f"{len(videos)} video m-lines in the answer")
        assert any(l.endswith(" goog-remb") for l in videos[0]), self.explain(
            "aiortc's video answer lacks goog-remb"
        )
        assert any(ABS_SEND_TIME_URI in l for l in videos[0]), self.explain(
            "aiortc's video answer lacks abs-send-time (its REMB estimator needs it)"
        )
        offered = [s for s in _media_sections(rec["offer"]) if s[0].startswith("m=video")]
        assert offered and any(ABS_SEND_TIME_URI in l for l in offered[0]), self.explain(
            "Ringcast's video offer lacks abs-send-time"
        )

        await self.connected(sub, "subscriber")
        self.note("subscriber connected")

        # --- decoded media ---------------------------------------------------------------
        await self.decoding(FIRST_FRAMES_TIMEOUT)
        first = {r.kind: r.first_at for r in self.receivers if r.first_at is not None}
        before = {r.kind: r.count() for r in self.receivers}
        await asyncio.sleep(GROWTH_WINDOW)
        after = {r.kind: r.count() for r in self.receivers}
        grew = {k: after[k] - before.get(k, 0) for k in after}
        video_rx = next(r for r in self.receivers if r.kind == "video")
        assert grew.get("video", 0) >= MIN_VIDEO_GROWTH, self.explain(
            f"decoded video frames grew by {grew.get('video', 0)} in {GROWTH_WINDOW} s "
            f"(want >= {MIN_VIDEO_GROWTH})"
        )
        assert grew.get("audio", 0) >= MIN_AUDIO_GROWTH, self.explain(
            f"decoded audio frames grew by {grew.get('audio', 0)} in {GROWTH_WINDOW} s "
            f"(want >= {MIN_AUDIO_GROWTH})"
        )
        assert video_rx.last_size == (320, 240), self.explain(
            f"video frames are {video_rx.last_size}, the publisher sends 320x240"
        )

        # --- /metrics: forwarded, no auth failures, an estimate from REMB, no transport-cc ---
        deadline = time.monotonic() + METRICS_TIMEOUT
        while True:
            text = await asyncio.to_thread(self.server.metrics_text)
            s = parse_metrics(text)
            forwarded = metric_sum(s, "ringcast_rtp_forwarded_total")
            auth_failed = metric_sum(s, "ringcast_drops_total", reason="srtp_auth_failed")
            twcc_in = metric_sum(s, "ringcast_twcc_feedback_received_total")
            estimates = [v for n, ls, v in s if n == "ringcast_subscriber_estimate_bps"]
            est_count = metric_sum(s, "ringcast_subscriber_estimate_bps_count")
            assert auth_failed == 0, self.explain(
                f"{auth_failed:.0f} SRTP/SRTCP packets failed authentication", text
            )
            assert twcc_in == 0, self.explain(
                f"{twcc_in:.0f} transport-cc feedback packets received: aiortc sends none", text
            )
            if forwarded > 0 and est_count > 0 and any(v > 0 for v in estimates):
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    self.explain(
                        f"after {METRICS_TIMEOUT} s: {forwarded:.0f} RTP forwarded (want > 0), "
                        f"ringcast_subscriber_estimate_bps {estimates} (count {est_count:.0f}; "
                        f"want a positive value: the estimate from aiortc's REMB)",
                        text,
                    )
                )
            await asyncio.sleep(0.25)

        # --- Events: SubscriptionQualityChanged for the video track ------------------------
        deadline = time.monotonic() + QUALITY_TIMEOUT
        while True:
            quality = [q for q in self.events.of("subscription_quality") if q.track_sid == video_sid]
            if any(q.estimate_bps > 0 for q in quality):
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    self.explain(
                        f"{len(quality)} subscriptionQuality events for {video_sid}, none with "
                        f"estimate_bps > 0 within {QUALITY_TIMEOUT} s"
                    )
                )
            await asyncio.sleep(0.1)
        assert all(q.layers == 1 for q in quality), self.explain(
            f"layers {sorted({q.layers for q in quality})} for a track without simulcast"
        )
        assert all(q.current_layer in (-1, 0) and q.target_layer == 0 for q in quality), (
            self.explain(f"layers of a one-layer track: "
                         f"{[(q.current_layer, q.target_layer) for q in quality]}")
        )
        assert quality[-1].current_layer == 0, self.explain(
            f"the latest quality event says current_layer {quality[-1].current_layer}"
        )
        others = {q.track_sid for q in self.events.of("subscription_quality")} - {video_sid}
        assert not others, self.explain(f"subscriptionQuality for other tracks {others}")

        final = await asyncio.to_thread(self.server.metrics_text)
        fs = parse_metrics(final)
        assert metric_sum(fs, "ringcast_twcc_feedback_received_total") == 0, self.explain(
            "transport-cc feedback received", final
        )
        audio_rx = next(r for r in self.receivers if r.kind == "audio")
        return {
            "negotiations": [n["version"] for n in self.negotiations],
            "first_video_s": round(first["video"], 2),
            "first_audio_s": round(first["audio"], 2),
            "video_frames": video_rx.frames,
            "video_size": video_rx.last_size,
            "audio_frames": audio_rx.frames,
            "grew_in_window": grew,
            "rtp_forwarded": int(metric_sum(fs, "ringcast_rtp_forwarded_total")),
            "estimate_bps_quantiles": {
                ls.get("quantile"): v
                for n, ls, v in fs
                if n == "ringcast_subscriber_estimate_bps"
            },
            "estimate_bps_count": int(metric_sum(fs, "ringcast_subscriber_estimate_bps_count")),
            "quality_events": len(quality),
            "quality_estimates_bps": [q.estimate_bps for q in quality],
            "twcc_feedback_received": 0,
        }

    async def close(self) -> None:
        for r in self.receivers:
            r.task.cancel()
        await close_quietly(self.sub_pc, CLOSE_TIMEOUT)
        await close_quietly(self.pub_pc, CLOSE_TIMEOUT)


def test_aiortc_subscribe_remb_only(pb, tmp_path, loopback_ice):
    server = start_server(
        tmp_path,
        lambda attempt: [
            "--media-backend", "io-uring",
            "--udp-port-base", "0",
            "--shards", "1",
            "--public-ip", "127.0.0.1",
            "--drain-grace-secs", "0",
            "--log-level", SERVER_LOG_LEVEL,
        ],
        name="ringcast-aiortc-subscribe",
    )
    try:
        case = Case(server, pb)
        result = asyncio.run(run_bounded(case, CASE_TIMEOUT))
    finally:
        code = server.stop()
    print(f"aiortc subscriber (REMB only): {result}")  # shown with -rP
    assert code == 0, f"ringcast exited {code} on SIGTERM\n{server.log_tail(40)}"
