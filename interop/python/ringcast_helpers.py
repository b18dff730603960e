"""Shared helpers for the Python interop tests: the server process, tokens, gRPC calls, metrics.

Nothing here is specific to one test file; the fixtures built on it are in conftest.py and in
the test modules. Environment: RINGCAST_BIN overrides the server binary
(default <repo>/target/debug/ringcast).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PROTO_ROOT = REPO / "proto" / "proto"
PROTO_FILE = "ringcast/v1/ringcast.proto"
SDP_FIXTURES = REPO / "control" / "tests" / "fixtures" / "sdp"

API_KEY = "devkey"
API_SECRET = "devsecret-for-local-testing-only"

RPC_TIMEOUT = 10.0  # seconds, every unary call
STARTUP_TIMEOUT = 20.0  # seconds, until gRPC health answers SERVING


# ---------------------------------------------------------------------------
# Stubs generated from the .proto at test time


def generate_stubs(out: Path):
    """Generates ringcast_pb2 / ringcast_pb2_grpc into `out` and imports them."""
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        PROTO_FILE,
    ]
    res = subprocess.run(cmd, cwd=PROTO_ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"protoc failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    sys.path.insert(0, str(out))
    try:
        pb2 = importlib.import_module("ringcast.v1.ringcast_pb2")
        pb2_grpc = importlib.import_module("ringcast.v1.ringcast_pb2_grpc")
    finally:
        sys.path.remove(str(out))

    class Stubs:
        msg = pb2
        grpc = pb2_grpc

    return Stubs


# ---------------------------------------------------------------------------
# The server process


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _udp_range_free(base: int, count: int) -> bool:
    socks = []
    try:
        for port in range(base, base + count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.bind(("0.0.0.0", port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def free_udp_base(count: int) -> int:
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000)
        if _udp_range_free(base, count):
            return base
    raise RuntimeError("no free UDP port range found")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Server:
    def __init__(self, proc: subprocess.Popen, grpc_addr: str, http_addr: str, log_path: Path):
        self.proc = proc
        self.grpc_addr = grpc_addr
        self.http_addr = http_addr
        self.log_path = log_path

    def log_tail(self, n: int = 60) -> str:
        """The last `n` lines of the server's stdout+stderr, without colour codes."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(_ANSI.sub("", text).splitlines()[-n:])

    def metrics(self, timeout: float = 2.0) -> str:
        """The Prometheus text of GET /metrics."""
        with urllib.request.urlopen(f"http://{self.http_addr}/metrics", timeout=timeout) as r:
            return r.read().decode()

    def metrics_text(self) -> str:
        """GET /metrics, or why it failed (for failure messages and polls that retry)."""
        try:
            return self.metrics()
        except Exception as e:  # noqa: BLE001 - only for the failure message
            return f"(GET /metrics failed: {e!r})"

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 10 s; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


def _spawn(tmp_dir: Path, name: str, args: list[str], env_extra: dict[str, str]) -> Server:
    binary = Path(os.environ.get("RINGCAST_BIN", REPO / "target" / "debug" / "ringcast"))
    if not binary.is_file():
        pytest.fail(f"server binary not found: {binary} (build it, or set RINGCAST_BIN)")
    grpc_addr = f"127.0.0.1:{free_tcp_port()}"
    http_addr = f"127.0.0.1:{free_tcp_port()}"
    # Only what we pass: no RINGCAST_* from the caller's environment (e.g. RINGCAST_CONFIG).
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGCAST_")}
    env["RINGCAST_API_KEY"] = API_KEY
    env["RINGCAST_API_SECRET"] = API_SECRET
    env.update(env_extra)
    log_path = tmp_dir / f"{name}.log"
    log = open(log_path, "wb")
    try:
        proc = subprocess.Popen(
            [str(binary), "--grpc-addr", grpc_addr, "--http-addr", http_addr, *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    finally:
        log.close()
    return Server(proc, grpc_addr, http_addr, log_path)


def _wait_serving(server: Server) -> bool:
    """True once grpc.health.v1.Health/Check says SERVING; False if the process died."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with grpc.insecure_channel(server.grpc_addr) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                return False
            try:
                r = health.Check(
                    health_pb2.HealthCheckRequest(service="ringcast.v1.RoomService"),
                    timeout=1.0,
                )
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    server.stop()
    pytest.fail(
        f"ringcast did not report SERVING within {STARTUP_TIMEOUT:.0f} s\n{server.log_tail()}"
    )


def start_server(
    tmp_dir: Path,
    args_for_attempt,
    *,
    name: str = "ringcast",
    env_extra: dict[str, str] | None = None,
    attempts: int = 3,
) -> Server:
    """Starts ringcast and waits until it serves; the caller stops it.

    `args_for_attempt(attempt)` gives the flags after --grpc-addr/--http-addr (which are picked
    here). A port picked free can be taken before the server binds it, so a server that exits
    during start-up is retried with new ports.
    """
    srv = None
    for attempt in range(attempts):
        srv = _spawn(tmp_dir, f"{name}-{attempt}", list(args_for_attempt(attempt)), env_extra or {})
        if _wait_serving(srv):
            return srv
        srv.stop()
    pytest.fail(f"ringcast exited during start-up ({attempts} attempts)\n{srv.log_tail()}")


# ---------------------------------------------------------------------------
# Tokens, minted here with PyJWT


def mint(
    identity: str,
    *,
    room: str = "",
    admin: bool = False,
    publish: bool = False,
    subscribe: bool = False,
    name: str | None = None,
    secret: str = API_SECRET,
    issuer: str = API_KEY,
    nbf_offset: int = -10,
    exp_offset: int = 600,
) -> str:
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": identity,
        "nbf": now + nbf_offset,
        "exp": now + exp_offset,
        "grants": {"room": room, "admin": admin, "publish": publish, "subscribe": subscribe},
    }
    if name is not None:
        claims["name"] = name
    return jwt.encode(claims, secret, algorithm="HS256")


def admin_token() -> str:
    return mint("interop-backend", admin=True)


def md(token: str | None):
    return [] if token is None else [("authorization", f"Bearer {token}")]


def call(method, request, token):
    return method(request, metadata=md(token), timeout=RPC_TIMEOUT)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------------
# Prometheus text format (just what the tests read)

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) for every sample line."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group(2) or ""))
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out.append((m.group(1), labels, value))
    return out


def metric_sum(samples, name: str, **labels: str) -> float:
    """The sum of `name` over all samples whose labels include `labels` (0 if none)."""
    return sum(
        v
        for n, ls, v in samples
        if n == name and all(ls.get(k) == want for k, want in labels.items())
    )


def metric_lines(text: str, *prefixes: str) -> str:
    """The sample lines of `text` whose name starts with one of `prefixes` (for messages)."""
    return "\n".join(
        l for l in text.splitlines() if l and not l.startswith("#") and l.startswith(prefixes)
    )


# ---------------------------------------------------------------------------
# aiortc (imported lazily: only the aiortc tests and aiortc_publisher.py need it)


def loopback_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """A stand-in for aioice.ice.get_host_addresses, which leaves 127.0.0.1 out: only loopback."""
    return ["127.0.0.1"] if use_ipv4 else []


def prefer_codecs(transceiver, *mime_types: str) -> None:
    """Offer only these codecs (in this order, lower-case mime types) on an aiortc `transceiver`."""
    from aiortc import RTCRtpSender

    caps = RTCRtpSender.getCapabilities(transceiver.kind).codecs
    chosen = [c for m in mime_types for c in caps if c.mimeType.lower() == m]
    assert chosen, f"aiortc has none of {mime_types}: {[c.mimeType for c in caps]}"
    transceiver.setCodecPreferences(chosen)


async def close_quietly(pc, timeout: float) -> None:
    """Closes an aiortc peer connection after a case, best effort: the case's own result (or
    failure) is what counts, not how the teardown went."""
    if pc is not None and pc.connectionState != "closed":
        try:
            await asyncio.wait_for(pc.close(), timeout)
        except Exception:  # noqa: BLE001 - best effort after a failure
            pass


async def run_bounded(case, timeout: float) -> dict:
    """Runs `case.run()` within `timeout` s, failing with `case.explain(...)` if it doesn't
    finish, and always ends with `case.close()`."""
    try:
        return await asyncio.wait_for(case.run(), timeout)
    except asyncio.TimeoutError:
        pytest.fail(case.explain(f"the case did not finish within {timeout} s"))
    finally:
        await case.close()
