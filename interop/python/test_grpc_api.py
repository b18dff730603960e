"""Independent-client interop test for the Ringcast gRPC API.

A client that is not ours (Python, the official grpcio stack, PyJWT) drives a real
`ringcast` server process through RoomService and Signaling, using only what
proto/proto/ringcast/v1/ringcast.proto documents:

- stubs are generated from the .proto at test time with grpc_tools.protoc;
- access tokens are minted here with PyJWT (HS256, the claims the .proto describes),
  as a customer backend using any JWT library would, and also via CreateAccessToken;
- every wait is bounded (RPC deadlines, timeouts on stream reads, server start-up).

Run from the repository root:
    python3 -m venv /tmp/rcvenv
    /tmp/rcvenv/bin/pip install -r interop/python/requirements.txt
    /tmp/rcvenv/bin/python -m pytest -q interop/python

Environment: RINGCAST_BIN overrides the server binary (default <repo>/target/debug/ringcast).
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time

import grpc
import jwt
import pytest

from ringcast_helpers import (
    API_KEY,
    API_SECRET,
    RPC_TIMEOUT,
    SDP_FIXTURES,
    admin_token,
    call,
    free_udp_base,
    md,
    mint,
    start_server,
    unique,
)

EVENT_TIMEOUT = 10.0  # seconds, waiting for one expected event
SHARDS = 2


# ---------------------------------------------------------------------------
# The server process (one for the whole session) and its stubs


@pytest.fixture(scope="session")
def server(tmp_path_factory, request):
    tmp_dir = tmp_path_factory.mktemp("ringcast_server")
    srv = start_server(
        tmp_dir,
        lambda attempt: [
            "--udp-port-base", str(free_udp_base(SHARDS)),
            "--shards", str(SHARDS),
            "--drain-grace-secs", "0",
            "--public-ip", "127.0.0.1",
        ],
    )
    request.addfinalizer(srv.stop)
    return srv


@pytest.fixture(scope="session")
def channel(server):
    ch = grpc.insecure_channel(server.grpc_addr)
    yield ch
    ch.close()


@pytest.fixture(scope="session")
def rooms(channel, pb):
    return pb.grpc.RoomServiceStub(channel)


@pytest.fixture(scope="session")
def sig(channel, pb):
    return pb.grpc.SignalingStub(channel)


# ---------------------------------------------------------------------------
# Status checks


def expect_status(code: grpc.StatusCode, method, request, token, contains: str | None = None):
    with pytest.raises(grpc.RpcError) as info:
        call(method, request, token)
    err = info.value
    assert err.code() == code, (
        f"{method._method if hasattr(method, '_method') else method}: expected {code}, "
        f"got {err.code()}: {err.details()!r}"
    )
    assert err.details(), "the status message should say what to fix"
    if contains is not None:
        assert contains in err.details(), f"{contains!r} not in {err.details()!r}"
    return err


# ---------------------------------------------------------------------------
# Events stream, read in a background thread


class _End:
    def __init__(self, error):
        self.error = error


class Events:
    """One Signaling.Events stream; events are queued by a reader thread."""

    def __init__(self, sig, pb, token: str, deadline: float = 120.0):
        self.call = sig.Events(pb.msg.EventsRequest(), metadata=md(token), timeout=deadline)
        self.q: queue.Queue = queue.Queue()
        self.ended: _End | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for ev in self.call:
                self.q.put(ev)
            self.q.put(_End(None))
        except grpc.RpcError as e:
            self.q.put(_End(e))

    def next(self, timeout: float = EVENT_TIMEOUT):
        """The next event, or an _End when the stream ended; raises on timeout."""
        if self.ended is not None:
            return self.ended
        try:
            item = self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event within {timeout} s") from None
        if isinstance(item, _End):
            self.ended = item
        return item

    def wait_for(self, kind: str, pred=lambda e: True, timeout: float = EVENT_TIMEOUT):
        """Skips events until one of oneof `kind` matching `pred`; returns (event, skipped)."""
        deadline = time.monotonic() + timeout
        skipped = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind} event within {timeout} s; saw {skipped}")
            item = self.next(left)
            if isinstance(item, _End):
                raise AssertionError(
                    f"Events stream ended ({item.error!r}) before {kind}; saw {skipped}"
                )
            if item.WhichOneof("event") == kind and pred(getattr(item, kind)):
                return getattr(item, kind), skipped
            skipped.append(item)

    def drain(self, quiet: float = 0.3):
        """Events that arrive until none comes for `quiet` seconds (bounded)."""
        out = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                item = self.q.get(timeout=quiet)
            except queue.Empty:
                break
            if isinstance(item, _End):
                self.ended = item
                break
            out.append(item)
        return out

    def close(self):
        self.call.cancel()
        self.thread.join(timeout=5)


# ---------------------------------------------------------------------------
# SDP helpers (a minimal client-side answerer)


def sdp_lines(sdp: str) -> list[str]:
    return [l for l in sdp.splitlines() if l]


def media_sections(sdp: str) -> list[list[str]]:
    sections: list[list[str]] = []
    for line in sdp_lines(sdp):
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
    return sections


def session_part(sdp: str) -> list[str]:
    out = []
    for line in sdp_lines(sdp):
        if line.startswith("m="):
            break
        out.append(line)
    return out


def answer_subscriber_offer(offer: str) -> str:
    """What a receive-only WebRTC client answers: first codec (+ its rtx), recvonly, DTLS active."""
    ufrag, pwd = "pyIc", "interopPasswordForIce0123"
    digest = hashlib.sha256(b"ringcast-python-interop").hexdigest().upper()
    fingerprint = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
    out = ["v=0", "o=- 4242424242 2 IN IP4 127.0.0.1", "s=-", "t=0 0"]
    out += [l for l in session_part(offer) if l.startswith("a=group:BUNDLE")]
    out.append("a=msid-semantic: WMS")
    for sec in media_sections(offer):
        kind, port, proto, *pts = sec[0][2:].split(" ")
        attrs = [l[2:] for l in sec[1:] if l.startswith("a=")]
        mid = next(a[4:] for a in attrs if a.startswith("mid:"))
        chosen = pts[:1]
        if pts:
            apt = f"apt={pts[0]}"
            for a in attrs:
                if a.startswith("fmtp:") and a.split(" ", 1)[1:] == [apt]:
                    chosen.append(a[5:].split(" ", 1)[0])
        port = "0" if port == "0" else "9"
        out.append(f"m={kind} {port} {proto} {' '.join(chosen)}")
        out += [
            "c=IN IP4 0.0.0.0",
            "a=rtcp:9 IN IP4 0.0.0.0",
            f"a=ice-ufrag:{ufrag}",
            f"a=ice-pwd:{pwd}",
            f"a=fingerprint:sha-256 {fingerprint}",
            "a=setup:active",
            f"a=mid:{mid}",
            "a=recvonly" if "sendonly" in attrs else "a=inactive",
            "a=rtcp-mux",
        ]
        for a in attrs:
            head = a.split(" ", 1)[0]
            for prefix in ("rtpmap:", "fmtp:", "rtcp-fb:"):
                if head.startswith(prefix) and head[len(prefix):] in chosen:
                    out.append(f"a={a}")
    return "\r\n".join(out) + "\r\n"


# ---------------------------------------------------------------------------
# Tests


def test_room_lifecycle(rooms, pb):
    m = pb.msg
    tok = admin_token()
    name = unique("interop-room")
    req = m.CreateRoomRequest(name=name, max_participants=5, empty_timeout_secs=300, metadata="{\"x\":1}")

    before_ms = int(time.time() * 1000)
    room = call(rooms.CreateRoom, req, tok)
    assert room.name == name
    assert room.sid.startswith("RM_"), room.sid
    assert room.max_participants == 5
    assert room.empty_timeout_secs == 300
    assert room.metadata == "{\"x\":1}"
    assert room.num_participants == 0
    assert room.shard < 2, "the server runs --shards 2"
    assert abs(room.created_at_unix_ms - before_ms) < 60_000

    # Idempotent with the same settings: the same room comes back.
    again = call(rooms.CreateRoom, req, tok)
    assert again.sid == room.sid
    assert again == room

    # Different settings: ALREADY_EXISTS.
    expect_status(
        grpc.StatusCode.ALREADY_EXISTS,
        rooms.CreateRoom,
        m.CreateRoomRequest(name=name, max_participants=6, empty_timeout_secs=300, metadata="{\"x\":1}"),
        tok,
    )

    got = call(rooms.GetRoom, m.GetRoomRequest(name=name), tok)
    assert got == room

    listed = call(rooms.ListRooms, m.ListRoomsRequest(), tok)
    assert name in [r.name for r in listed.rooms]
    only = call(rooms.ListRooms, m.ListRoomsRequest(names=[name]), tok)
    assert [r.name for r in only.rooms] == [name]
    assert only.rooms[0].sid == room.sid
    none = call(rooms.ListRooms, m.ListRoomsRequest(names=[unique("no-such-room")]), tok)
    assert list(none.rooms) == []

    call(rooms.DeleteRoom, m.DeleteRoomRequest(name=name), tok)
    expect_status(grpc.StatusCode.NOT_FOUND, rooms.GetRoom, m.GetRoomRequest(name=name), tok)

    # Deleted and created again: a new sid.
    recreated = call(rooms.CreateRoom, req, tok)
    assert recreated.sid.startswith("RM_") and recreated.sid != room.sid
    call(rooms.DeleteRoom, m.DeleteRoomRequest(name=name), tok)


def test_auth_errors(rooms, sig, pb):
    m = pb.msg
    room = unique("interop-auth")
    call(rooms.CreateRoom, m.CreateRoomRequest(name=room), admin_token())
    try:
        # No token at all.
        expect_status(grpc.StatusCode.UNAUTHENTICATED, rooms.ListRooms, m.ListRoomsRequest(), None)
        expect_status(grpc.StatusCode.UNAUTHENTICATED, sig.Join, m.JoinRequest(), None)
        # Signed with another secret.
        forged = mint("mallory", admin=True, secret="not-the-server-secret-at-all-0123456789")
        expect_status(grpc.StatusCode.UNAUTHENTICATED, rooms.ListRooms, m.ListRoomsRequest(), forged)
        forged_p = mint("mallory", room=room, publish=True, subscribe=True, secret="wrong-secret-xyz-wrong-secret-xyz-wrong")
        expect_status(grpc.StatusCode.UNAUTHENTICATED, sig.Join, m.JoinRequest(), forged_p)
        # Expired an hour ago.
        expired = mint("old", admin=True, nbf_offset=-7200, exp_offset=-3600)
        expect_status(grpc.StatusCode.UNAUTHENTICATED, rooms.ListRooms, m.ListRoomsRequest(), expired)
        expired_p = mint("old", room=room, subscribe=True, nbf_offset=-7200, exp_offset=-3600)
        expect_status(grpc.StatusCode.UNAUTHENTICATED, sig.Join, m.JoinRequest(), expired_p)
        # Issued for another API key.
        other_key = mint("x", admin=True, issuer="some-other-key")
        expect_status(grpc.StatusCode.UNAUTHENTICATED, rooms.ListRooms, m.ListRoomsRequest(), other_key)
        # A participant token on RoomService: known caller, not allowed.
        participant = mint("alice", room=room, publish=True, subscribe=True)
        expect_status(grpc.StatusCode.PERMISSION_DENIED, rooms.ListRooms, m.ListRoomsRequest(), participant)
        expect_status(
            grpc.StatusCode.PERMISSION_DENIED, rooms.GetRoom, m.GetRoomRequest(name=room), participant
        )
    finally:
        call(rooms.DeleteRoom, m.DeleteRoomRequest(name=room), admin_token())


def test_signaling_errors(rooms, sig, pb):
    m = pb.msg
    tok = admin_token()

    # Join a room that does not exist.
    ghost = unique("interop-ghost")
    expect_status(
        grpc.StatusCode.NOT_FOUND,
        sig.Join,
        m.JoinRequest(),
        mint("alice", room=ghost, publish=True, subscribe=True),
    )

    room = unique("interop-sigerr")
    call(rooms.CreateRoom, m.CreateRoomRequest(name=room), tok)
    try:
        # Malformed SDP: INVALID_ARGUMENT naming the line.
        pub = mint("pub", room=room, publish=True, subscribe=True)
        call(sig.Join, m.JoinRequest(), pub)
        err = expect_status(
            grpc.StatusCode.INVALID_ARGUMENT,
            sig.Publish,
            m.PublishRequest(sdp_offer="v=0\r\nbogus\r\n"),
            pub,
        )
        assert "line 2" in err.details(), err.details()

        # No publish grant: PERMISSION_DENIED, even with a good offer.
        viewer = mint("viewer", room=room, publish=False, subscribe=True)
        call(sig.Join, m.JoinRequest(), viewer)
        offer = (SDP_FIXTURES / "chromium156-publish-offer.sdp").read_bytes().decode()
        expect_status(
            grpc.StatusCode.PERMISSION_DENIED, sig.Publish, m.PublishRequest(sdp_offer=offer), viewer
        )

        # SubscribeAnswer before any Subscribe: FAILED_PRECONDITION.
        answer = (SDP_FIXTURES / "chromium156-subscribe-answer.sdp").read_bytes().decode()
        expect_status(
            grpc.StatusCode.FAILED_PRECONDITION,
            sig.SubscribeAnswer,
            m.SubscribeAnswerRequest(sdp_answer=answer, offer_version=1),
            viewer,
        )
        call(sig.Leave, m.LeaveRequest(), viewer)
        call(sig.Leave, m.LeaveRequest(), pub)
    finally:
        call(rooms.DeleteRoom, m.DeleteRoomRequest(name=room), tok)


def test_two_participants_flow(rooms, sig, pb):
    m = pb.msg
    tok = admin_token()
    room_name = unique("interop-flow")
    streams: list[Events] = []
    try:
        room = call(rooms.CreateRoom, m.CreateRoomRequest(name=room_name), tok)

        # --- Alice: token from CreateAccessToken (the server mints it) ---
        minted = call(
            rooms.CreateAccessToken,
            m.CreateAccessTokenRequest(
                room=room_name, identity="alice", name="Alice", can_publish=True,
                can_subscribe=True, ttl_secs=600,
            ),
            tok,
        )
        now_ms = int(time.time() * 1000)
        assert abs(minted.expires_at_unix_ms - (now_ms + 600_000)) < 60_000
        # It is a plain HS256 JWT any library can verify with the API secret.
        claims = jwt.decode(minted.token, API_SECRET, algorithms=["HS256"], issuer=API_KEY)
        assert claims["sub"] == "alice"
        assert claims["name"] == "Alice"
        assert claims["grants"]["room"] == room_name
        assert claims["grants"]["publish"] is True and claims["grants"]["subscribe"] is True
        assert not claims["grants"].get("admin", False)
        assert claims["exp"] * 1000 == minted.expires_at_unix_ms
        alice_tok = minted.token

        a_join = call(sig.Join, m.JoinRequest(), alice_tok)
        assert a_join.room.name == room_name and a_join.room.sid == room.sid
        assert a_join.participant.identity == "alice"
        assert a_join.participant.name == "Alice"
        assert a_join.participant.sid.startswith("PA_")
        assert a_join.participant.can_publish and a_join.participant.can_subscribe
        assert list(a_join.others) == []
        assert len(a_join.candidates) >= 1
        for c in a_join.candidates:
            assert not c.candidate.startswith("candidate:"), c.candidate
            assert " udp " in c.candidate.lower(), c.candidate
        a_events = Events(sig, pb, alice_tok)
        streams.append(a_events)

        # --- Bob: token minted here with PyJWT; a subscriber only ---
        bob_tok = mint("bob", room=room_name, subscribe=True, publish=False, name="Bob")
        b_join = call(sig.Join, m.JoinRequest(), bob_tok)
        assert b_join.participant.identity == "bob" and b_join.participant.name == "Bob"
        assert not b_join.participant.can_publish and b_join.participant.can_subscribe
        assert [p.identity for p in b_join.others] == ["alice"]
        assert b_join.others[0].sid == a_join.participant.sid
        b_events = Events(sig, pb, bob_tok)
        streams.append(b_events)

        joined, _ = a_events.wait_for("participant_joined", lambda e: e.participant.identity == "bob")
        assert joined.participant.sid == b_join.participant.sid

        # --- Alice publishes Chromium's real offer (audio + simulcast video) ---
        offer = (SDP_FIXTURES / "chromium156-publish-offer.sdp").read_bytes().decode()
        pub = call(
            sig.Publish,
            m.PublishRequest(sdp_offer=offer, track_names={"0": "mic", "1": "camera"}),
            alice_tok,
        )
        answer_lines = sdp_lines(pub.sdp_answer)
        assert "a=ice-lite" in answer_lines, pub.sdp_answer
        assert "a=setup:passive" in answer_lines, pub.sdp_answer
        assert "a=setup:actpass" not in answer_lines
        assert len(media_sections(pub.sdp_answer)) == 2
        assert list(pub.rejected) == [], pub.rejected
        assert len(pub.tracks) == 2, pub.tracks
        by_kind = {t.kind: t for t in pub.tracks}
        audio = by_kind[m.TRACK_KIND_AUDIO]
        video = by_kind[m.TRACK_KIND_VIDEO]
        assert audio.mid == "0" and audio.name == "mic"
        assert video.mid == "1" and video.name == "camera"
        assert audio.mime_type.lower() == "audio/opus", audio.mime_type
        assert video.mime_type.lower() == "video/vp8", video.mime_type
        assert list(video.rids) == ["q", "h", "f"]
        assert list(audio.rids) == []
        for t in (audio, video):
            assert t.sid.startswith("TR_"), t.sid
            assert t.publisher_identity == "alice"
            assert not t.muted
        track_sids = {audio.sid, video.sid}

        # --- Bob hears both tracks and is told to renegotiate ---
        published = set()
        last_ready = None
        deadline = time.monotonic() + EVENT_TIMEOUT
        while (len(published) < 2 or last_ready is None) and time.monotonic() < deadline:
            item = b_events.next(deadline - time.monotonic())
            assert not isinstance(item, _End), f"Bob's Events ended: {item.error!r}"
            kind = item.WhichOneof("event")
            if kind == "track_published":
                assert item.track_published.track.publisher_identity == "alice"
                published.add(item.track_published.track.sid)
            elif kind == "subscriber_offer_ready":
                last_ready = item.subscriber_offer_ready.offer_version
        assert published == track_sids
        assert last_ready is not None, "no SubscriberOfferReady for Bob"
        for item in b_events.drain():  # later SubscriberOfferReady (one per track) may follow
            if item.WhichOneof("event") == "subscriber_offer_ready":
                last_ready = item.subscriber_offer_ready.offer_version

        # --- Bob: Subscribe -> Ringcast's offer ---
        sub = call(sig.Subscribe, m.SubscribeRequest(), bob_tok)
        assert sub.offer_version == last_ready, (sub.offer_version, last_ready)
        sections = media_sections(sub.sdp_offer)
        assert len(sections) == 2, sub.sdp_offer
        for sec in sections:
            assert "a=sendonly" in sec, sec
        assert "a=ice-lite" in sdp_lines(sub.sdp_offer)
        assert set(sub.mid_to_track_sid.values()) == track_sids
        assert len(sub.mid_to_track_sid) == 2

        answer = answer_subscriber_offer(sub.sdp_offer)
        stale = sub.offer_version - 1 if sub.offer_version > 0 else sub.offer_version + 1
        expect_status(
            grpc.StatusCode.FAILED_PRECONDITION,
            sig.SubscribeAnswer,
            m.SubscribeAnswerRequest(sdp_answer=answer, offer_version=stale),
            bob_tok,
        )
        ok = call(
            sig.SubscribeAnswer,
            m.SubscribeAnswerRequest(sdp_answer=answer, offer_version=sub.offer_version),
            bob_tok,
        )
        assert list(ok.rejected) == [], ok.rejected

        # --- RoomService views ---
        parts = call(rooms.ListParticipants, m.ListParticipantsRequest(room=room_name), tok)
        by_id = {p.identity: p for p in parts.participants}
        assert set(by_id) == {"alice", "bob"}
        assert {t.sid for t in by_id["alice"].tracks} == track_sids
        assert list(by_id["bob"].tracks) == []
        assert set(by_id["bob"].subscribed_track_sids) == track_sids
        assert call(rooms.GetRoom, m.GetRoomRequest(name=room_name), tok).num_participants == 2

        # --- MutePublishedTrack ---
        muted = call(
            rooms.MutePublishedTrack,
            m.MutePublishedTrackRequest(room=room_name, identity="alice", track_sid=video.sid, muted=True),
            tok,
        )
        assert muted.sid == video.sid and muted.muted
        ev, _ = b_events.wait_for("track_muted", lambda e: e.track_sid == video.sid)
        assert ev.muted and ev.publisher_identity == "alice"
        unmuted = call(
            rooms.MutePublishedTrack,
            m.MutePublishedTrackRequest(room=room_name, identity="alice", track_sid=video.sid, muted=False),
            tok,
        )
        assert not unmuted.muted
        ev, _ = b_events.wait_for("track_muted", lambda e: e.track_sid == video.sid)
        assert not ev.muted
        expect_status(
            grpc.StatusCode.NOT_FOUND,
            rooms.MutePublishedTrack,
            m.MutePublishedTrackRequest(room=room_name, identity="alice", track_sid="TR_doesnotexist", muted=True),
            tok,
        )

        # --- UpdateSubscriptions: drop audio, then take it back ---
        upd = call(
            rooms.UpdateSubscriptions,
            m.UpdateSubscriptionsRequest(room=room_name, identity="bob", track_sids=[audio.sid], subscribe=False),
            tok,
        )
        assert list(upd.subscribed_track_sids) == [video.sid]
        ready, _ = b_events.wait_for("subscriber_offer_ready")
        sub2 = call(sig.Subscribe, m.SubscribeRequest(), bob_tok)
        assert sub2.offer_version >= ready.offer_version > sub.offer_version
        assert set(sub2.mid_to_track_sid.values()) == {video.sid}
        upd = call(
            rooms.UpdateSubscriptions,
            m.UpdateSubscriptionsRequest(room=room_name, identity="bob", track_sids=[audio.sid], subscribe=True),
            tok,
        )
        assert set(upd.subscribed_track_sids) == track_sids
        b_events.wait_for("subscriber_offer_ready")
        sub3 = call(sig.Subscribe, m.SubscribeRequest(), bob_tok)
        assert set(sub3.mid_to_track_sid.values()) == track_sids
        # Answering the older offer now is refused.
        expect_status(
            grpc.StatusCode.FAILED_PRECONDITION,
            sig.SubscribeAnswer,
            m.SubscribeAnswerRequest(sdp_answer=answer, offer_version=sub.offer_version),
            bob_tok,
        )
        ok3 = call(
            sig.SubscribeAnswer,
            m.SubscribeAnswerRequest(sdp_answer=answer_subscriber_offer(sub3.sdp_offer), offer_version=sub3.offer_version),
            bob_tok,
        )
        assert list(ok3.rejected) == [], ok3.rejected

        # --- RemoveParticipant: Bob hears Alice leave (REMOVED) ---
        call(rooms.RemoveParticipant, m.RemoveParticipantRequest(room=room_name, identity="alice"), tok)
        left, skipped = b_events.wait_for("participant_left", lambda e: e.identity == "alice")
        assert left.sid == a_join.participant.sid
        assert left.reason == m.LEAVE_REASON_REMOVED, m.LeaveReason.Name(left.reason)
        parts = call(rooms.ListParticipants, m.ListParticipantsRequest(room=room_name), tok)
        assert [p.identity for p in parts.participants] == ["bob"]
        assert list(parts.participants[0].subscribed_track_sids) == []
        # Alice's own stream says she was removed, or just ends.
        item = None
        for _ in range(20):
            item = a_events.next()
            if isinstance(item, _End) or item.WhichOneof("event") == "participant_left":
                break
        if not isinstance(item, _End):
            assert item.WhichOneof("event") == "participant_left", item
            assert item.participant_left.identity == "alice"
            assert item.participant_left.reason == m.LEAVE_REASON_REMOVED

        # --- Bob leaves; the room is empty ---
        call(sig.Leave, m.LeaveRequest(), bob_tok)
        parts = call(rooms.ListParticipants, m.ListParticipantsRequest(room=room_name), tok)
        assert list(parts.participants) == []
        assert call(rooms.GetRoom, m.GetRoomRequest(name=room_name), tok).num_participants == 0

        # --- DeleteRoom ---
        call(rooms.DeleteRoom, m.DeleteRoomRequest(name=room_name), tok)
        expect_status(grpc.StatusCode.NOT_FOUND, rooms.GetRoom, m.GetRoomRequest(name=room_name), tok)
    finally:
        for s in streams:
            s.close()
        try:
            rooms.DeleteRoom(m.DeleteRoomRequest(name=room_name), metadata=md(tok), timeout=RPC_TIMEOUT)
        except grpc.RpcError:
            pass


def test_rejoin_replaces_and_new_events_stream_ends_old(rooms, sig, pb):
    m = pb.msg
    tok = admin_token()
    room_name = unique("interop-replace")
    call(rooms.CreateRoom, m.CreateRoomRequest(name=room_name), tok)
    streams: list[Events] = []
    try:
        carol = mint("carol", room=room_name, subscribe=True)
        first = call(sig.Join, m.JoinRequest(), carol)
        s1 = Events(sig, pb, carol)
        streams.append(s1)
        time.sleep(0.2)  # let s1 be attached before s2 replaces it
        # Opening a new stream ends the previous one.
        s2 = Events(sig, pb, carol)
        streams.append(s2)
        end = s1.next()
        assert isinstance(end, _End), f"first Events stream still open, got {end}"
        assert end.error is None or end.error.code() != grpc.StatusCode.DEADLINE_EXCEEDED, end.error

        # A second Join with the same identity replaces the session: the old stream
        # ends with ParticipantLeft(REPLACED).
        second = call(sig.Join, m.JoinRequest(name="Carol 2"), carol)
        assert second.participant.sid != first.participant.sid
        assert second.participant.name == "Carol 2"
        assert list(second.others) == []
        left, _ = s2.wait_for("participant_left", lambda e: e.identity == "carol")
        assert left.sid == first.participant.sid
        assert left.reason == m.LEAVE_REASON_REPLACED, m.LeaveReason.Name(left.reason)
        end = s2.next()
        assert isinstance(end, _End), f"replaced session's stream still open, got {end}"
        parts = call(rooms.ListParticipants, m.ListParticipantsRequest(room=room_name), tok)
        assert [(p.identity, p.sid) for p in parts.participants] == [("carol", second.participant.sid)]

        # DeleteRoom disconnects everyone: the live stream says ROOM_DELETED, or ends.
        s3 = Events(sig, pb, carol)
        streams.append(s3)
        time.sleep(0.2)
        call(rooms.DeleteRoom, m.DeleteRoomRequest(name=room_name), tok)
        item = s3.next()
        if not isinstance(item, _End):
            assert item.WhichOneof("event") == "participant_left", item
            assert item.participant_left.reason == m.LEAVE_REASON_ROOM_DELETED
            item = s3.next()
        assert isinstance(item, _End), f"stream still open after DeleteRoom, got {item}"
    finally:
        for s in streams:
            s.close()
        try:
            rooms.DeleteRoom(m.DeleteRoomRequest(name=room_name), metadata=md(tok), timeout=RPC_TIMEOUT)
        except grpc.RpcError:
            pass
