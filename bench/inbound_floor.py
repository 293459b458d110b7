"""The floor under an ack: server CPU per small inbound message on uvloop when the
protocol's ``data_received`` does nothing (issue 16: what no ack handling can go below).

A raw TCP server on uvloop (pinned to CPU 0) with a protocol that discards what it
reads; ``--n`` clients (CPU 1) each send one 70-byte masked WebSocket-sized frame per
``--interval`` seconds, spread evenly, ``--rounds`` times. The server's utime and stime
over the phase, divided by the messages, is the cost of the read alone: the epoll
wake-up, the ``read`` system call and uvloop's callback. Compare with
``bench/ack_cost.py`` (the same pacing against the service, acks handled).

    .venv/bin/python bench/inbound_floor.py --n 1000 --rounds 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys

import uvloop

FRAME = b"\x81\xc0" + b"\x00" * 4 + b"x" * 64


def cpu_s(pid: int) -> tuple[float, float]:
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    rest = data[data.rfind(b")") + 2 :].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(rest[11]) / tck, int(rest[12]) / tck


class Discard(asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        pass


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(Discard, "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    await asyncio.Event().wait()


async def drive(a: argparse.Namespace, port: int, pid: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    writers = []
    for _ in range(a.n):
        tr, _p = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        writers.append(tr)
    await asyncio.sleep(1)
    u0, s0 = cpu_s(pid)
    t0 = loop.time()
    total = a.n * a.rounds
    sent = 0
    while sent < total:
        due = min(total, int((loop.time() - t0) / a.interval * a.n) + 1)
        while sent < due:
            writers[sent % a.n].write(FRAME)
            sent += 1
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.5)
    u1, s1 = cpu_s(pid)
    for tr in writers:
        tr.close()
    return {
        "messages": total,
        "user_us_per_message": round(1e6 * (u1 - u0) / total, 2),
        "sys_us_per_message": round(1e6 * (s1 - s0) / total, 2),
        "us_per_message": round(1e6 * (u1 - u0 + s1 - s0) / total, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="clients")
    ap.add_argument("--rounds", type=int, default=20, help="messages per client")
    ap.add_argument("--interval", type=float, default=0.25, help="seconds between a client's")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve is not None:
        uvloop.run(serve(a.serve))
        return
    port = a.port
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    srv = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, __file__, "--serve", str(port)],
        stdout=subprocess.PIPE,
    )
    try:
        assert srv.stdout is not None
        srv.stdout.readline()
        os.sched_setaffinity(0, {1})
        print(uvloop.run(drive(a, port, srv.pid)))
    finally:
        srv.kill()
        srv.wait()


if __name__ == "__main__":
    main()
