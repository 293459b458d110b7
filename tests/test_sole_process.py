"""The memory broker refuses to be one of several workers (issue 15, item 6).

``uvicorn football_realtime.main:app --workers 2`` on ``memory://`` used to start without
a word and deliver each event to about half the clients. Now the second worker refuses
to start, and says what to do; on a Redis broker the same command runs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from football_realtime.sole_process import REFUSAL, claim_listeners

from .redis_server import RedisServer
from .support import ADMIN, TIMEOUT, free_port

CHILD_CLAIMS = (
    "import socket, sys\n"
    "from football_realtime.sole_process import SharedListener, claim_listeners\n"
    "s = socket.socket(fileno=int(sys.argv[1]))\n"
    "try:\n"
    "    claim_listeners()\n"
    "except SharedListener:\n"
    "    sys.exit(7)\n"
)


def claim_in_child(sock: socket.socket) -> int:
    """Another process holding ``sock`` (as a forked worker would) tries to claim it."""
    fd = sock.fileno()
    r = subprocess.run(
        [sys.executable, "-c", CHILD_CLAIMS, str(fd)],
        pass_fds=(fd,),
        timeout=TIMEOUT * 4,
        capture_output=True,
    )
    return r.returncode


@pytest.mark.parametrize("listen", [True, False], ids=["listening", "bound"])
def test_a_second_process_on_the_same_socket_is_refused(listen: bool) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        if listen:
            sock.listen()
        assert claim_in_child(sock) == 0  # alone: runs (gunicorn -w 1, uvicorn --fd)
        claim = claim_listeners()
        try:
            assert claim.fds, "the bound socket was not found"
            assert claim_in_child(sock) == 7
            # Locks belong to the process: another app in this process is not refused.
            claim_listeners().release()
        finally:
            claim.release()
        assert claim_in_child(sock) == 0  # released: the next one runs


def test_client_sockets_are_not_claimed() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=TIMEOUT) as client:
            claim = claim_listeners()
            try:
                inode = os.fstat(client.fileno()).st_ino
                locked = {os.fstat(fd).st_ino for fd in claim.fds}
                assert len(claim.fds) >= 1 and inode not in locked
            finally:
                claim.release()


def run_uvicorn_workers(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "football_realtime.main:app",
            "--workers",
            "2",
            "--port",
            str(port),
        ],
        env={**os.environ, "REALTIME_ADMIN_TOKEN": ADMIN, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_uvicorn_workers_on_memory_refuse_to_start() -> None:
    port = free_port()
    proc = run_uvicorn_workers({"REALTIME_BROKER_URL": "memory://"}, port)
    try:
        _, err = proc.communicate(timeout=TIMEOUT * 6)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = err.decode(errors="replace")
    assert REFUSAL in stderr, stderr[-3000:]
    assert "uvicorn --workers N" in stderr and "REALTIME_BROKER_URL=redis://" in stderr
    # uvicorn's supervisor stops every worker when one fails to start. uvicorn 0.55
    # then exits with status 0 (it does not pass a worker's failure on); gunicorn
    # exits with 3 (a worker boot error halts it). Either way nothing keeps serving.
    assert proc.returncode in (0, 3)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with RedisServer() as r:
        yield r


def test_uvicorn_workers_on_redis_start(redis: RedisServer) -> None:
    port = free_port()
    proc = run_uvicorn_workers({"REALTIME_BROKER_URL": redis.url}, port)
    try:
        deadline = time.monotonic() + TIMEOUT * 4
        while True:
            assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
            assert time.monotonic() < deadline, "uvicorn --workers 2 did not become healthy"
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/realtime/health", timeout=0.5)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        # Both workers register in the cluster registry (one Redis, one service).
        deadline = time.monotonic() + TIMEOUT * 4
        while True:
            body = httpx.get(f"http://127.0.0.1:{port}/realtime/stats", timeout=TIMEOUT).json()
            if len(body["cluster"]["instances"]) == 2:
                break
            assert time.monotonic() < deadline, body.get("cluster")
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.communicate(timeout=TIMEOUT * 4)
