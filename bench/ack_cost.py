"""Server CPU per client message, acks alone (issue 16): where an ack's cost goes.

Starts ``python -m football_realtime serve`` (the benchmark target's settings, durable
sessions on), connects ``--n`` subscribers (premium JWT, ``session_id=new``, subscribed
to ``matches``), publishes ``--events`` events, then runs phases in which no event is
published and every subscriber sends one message per ``--interval`` seconds (spread
evenly over the interval, as the coalescing clients' timers are), ``--rounds`` times:

* ``ack``: cumulative acks, each one offset further (so each is timed and recorded);
* ``heartbeat``: heartbeats, which get a reply (for comparison: any client message).

Each phase ends with one heartbeat per subscriber, answered only once everything the
subscriber sent before was handled. The server's CPU (utime + stime of its process)
over the phase, divided by the messages, is the cost per message.

``--profile cprofile`` runs the server under cProfile, enabled during the ack phase
only (SIGUSR1 toggles it), and prints the top functions; ``--profile callgrind`` runs it
under ``valgrind --tool=callgrind`` with instrumentation on during each phase only
(``callgrind_control -i``) and reports instructions per message (reproducible on a
noisy machine).

    .venv/bin/python bench/ack_cost.py --n 1000 --rounds 20
    .venv/bin/python bench/ack_cost.py --n 200 --rounds 10 --profile callgrind
    .venv/bin/python bench/ack_cost.py --src /tmp/ack-old   # another source tree
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from loadclient import client_frame, make_payload, proc_cpu_split_us  # noqa: E402
from project_target import ADMIN_TOKEN, project_target  # noqa: E402

ROOT = os.path.dirname(HERE)
VENV_PY = os.path.join(ROOT, ".venv", "bin", "python")
EPOCH_RE = re.compile(rb'"epoch":"([^"]+)"')

#: Run the service with SIGUSR1 toggling cProfile (stats dumped on each disable).
CPROFILE_WRAPPER = """
import cProfile, os, signal, sys
prof = None
def toggle(sig, frame):
    global prof
    if prof is None:
        prof = cProfile.Profile()
        prof.enable()
    else:
        prof.disable()
        prof.dump_stats(os.environ["ACK_COST_PROFILE"])
        prof = None
signal.signal(signal.SIGUSR1, toggle)
from football_realtime.cli import main
sys.exit(main(sys.argv[1:]))
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sub(asyncio.Protocol):
    def __init__(self, req: bytes) -> None:
        self.req = req
        self.tr: asyncio.Transport | None = None
        self.buf = bytearray()
        self.up = False
        self.epoch: bytes | None = None
        self.events = 0
        self.errors = 0
        self.replies = 0
        self.waiter: asyncio.Future[None] | None = None
        self.want: tuple[str, int] = ("", 0)

    def connection_made(self, tr: asyncio.BaseTransport) -> None:
        self.tr = tr  # type: ignore[assignment]
        self.tr.write(self.req)

    def data_received(self, data: bytes) -> None:
        if not self.up:
            self.buf += data
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            assert self.buf.startswith(b"HTTP/1.1 101"), bytes(self.buf[:200])
            self.up = True
            data = bytes(self.buf[i + 4 :])
            self.buf.clear()
            self.send(b'{"type":"subscribe","data":{"subscription_type":"matches"}}')
        self.buf += data
        # Counting on the raw bytes (frames unparsed): enough for these markers.
        b = bytes(self.buf)
        if self.epoch is None:
            m = EPOCH_RE.search(b)
            if m and b'"message_ack"' in b:
                self.epoch = m.group(1)
        self.errors = b.count(b'"event_type":"error"')
        self.events = b.count(b'"event_type":"match_score_changed"')
        self.replies = b.count(b'"type":"heartbeat"')
        self._check()

    def _check(self) -> None:
        w = self.waiter
        if w is None or w.done():
            return
        what, n = self.want
        if self.epoch is not None if what == "epoch" else getattr(self, what) >= n:
            w.set_result(None)

    def wait(self, what: str, n: int = 0) -> asyncio.Future[None]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.want = (what, n)
        self._check()
        return self.waiter

    def send(self, payload: bytes) -> None:
        assert self.tr is not None
        self.tr.write(client_frame(payload))

    def reset(self) -> None:
        self.buf.clear()
        self.events = self.replies = self.errors = 0


def upgrade_request(host: str, port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def publish(host: str, port: int, k: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    for i in range(k):
        body = make_payload(i, 0)
        writer.write(
            (
                f"POST /realtime/broadcast HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {ADMIN_TOKEN}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 2"), head[:200]
        n = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        await reader.readexactly(n)
    writer.close()


async def paced(subs: list[Sub], rounds: int, interval: float, make: object) -> None:
    """Every subscriber sends ``make(sub, round)`` once per interval, spread evenly."""
    loop = asyncio.get_running_loop()
    n = len(subs)
    t0 = loop.time()
    sent = 0
    total = n * rounds
    while sent < total:
        due = min(total, int((loop.time() - t0) / interval * n) + 1)
        while sent < due:
            r, i = divmod(sent, n)
            payload = make(subs[i], r)  # type: ignore[operator]
            if payload is not None:
                subs[i].send(payload)
            sent += 1
        await asyncio.sleep(0.005)


async def drive(a: argparse.Namespace, host: str, port: int, pid: int, paths: list[str]) -> dict:
    loop = asyncio.get_running_loop()
    subs: list[Sub] = []
    for start in range(0, a.n, 50):
        batch = []
        for i in range(start, min(a.n, start + 50)):
            sub = Sub(upgrade_request(host, port, paths[i]))
            subs.append(sub)
            batch.append(loop.create_connection(lambda s=sub: s, host, port))
        await asyncio.gather(*batch)
    log(f"{len(subs)} connected")
    await asyncio.gather(*(s.wait("epoch") for s in subs))
    log("subscribed")
    await publish(host, port, a.events)
    await asyncio.gather(*(s.wait("events", a.events) for s in subs))
    assert all(s.events == a.events for s in subs)
    log(f"{a.events} events received by each")
    acked = [0]  # offsets start at 1 on a fresh memory broker; each ack one further

    def ack(sub: Sub, r: int) -> bytes:
        off = acked[0] + r + 1
        return b'{"type":"ack","data":{"positions":{"matches":{"epoch":"%s","offset":%d}}}}' % (
            sub.epoch,
            off,
        )

    def heartbeat(sub: Sub, r: int) -> bytes:
        return b'{"type":"heartbeat"}'

    def idle(sub: Sub, r: int) -> None:
        return None

    idle_us = 0
    out: dict = {"n": a.n, "rounds": a.rounds, "interval": a.interval}
    phases = [("idle", idle), ("ack", ack), ("heartbeat", heartbeat)] * a.reps
    for name, make in phases:
        for s in subs:
            s.reset()
        await asyncio.sleep(0.3)
        if a.profile == "cprofile" and name == "ack":
            os.kill(pid, signal.SIGUSR1)
        if a.profile == "callgrind":
            subprocess.run(["callgrind_control", "-i", "on", str(pid)], capture_output=True)  # noqa: ASYNC221
        (u0, s0), t0 = proc_cpu_split_us(pid), time.monotonic()
        await paced(subs, a.rounds, a.interval, make)
        for s in subs:
            s.send(b'{"type":"heartbeat"}')
        want = 1 + (a.rounds if name == "heartbeat" else 0)
        await asyncio.gather(*(s.wait("replies", want) for s in subs))
        (u1, s1), t1 = proc_cpu_split_us(pid), time.monotonic()
        c0, c1 = u0 + s0, u1 + s1
        if a.profile == "callgrind":
            subprocess.run(["callgrind_control", "-i", "off", str(pid)], capture_output=True)  # noqa: ASYNC221
            subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True)  # noqa: ASYNC221
        if a.profile == "cprofile" and name == "ack":
            os.kill(pid, signal.SIGUSR1)
        msgs = a.n * (a.rounds + (0 if name == "idle" else 1))
        errors = sum(s.errors for s in subs)
        rec = {
            "phase": name,
            "messages": msgs,
            "errors": errors,
            "seconds": round(t1 - t0, 2),
            "server_cpu_s": round((c1 - c0) / 1e6, 3),
            "server_sys_s": round((s1 - s0) / 1e6, 3),
            "us_per_message": round((c1 - c0) / msgs, 1),
        }
        if name == "idle":
            idle_us = c1 - c0
        else:
            # Over the idle phase (same length, one heartbeat each): the messages alone.
            rec["us_per_message_over_idle"] = round((c1 - c0 - idle_us) / (a.n * a.rounds), 1)
        out.setdefault(name, []).append(rec)
        print(json.dumps(rec), flush=True)
        if name == "ack":
            acked[0] += a.rounds
    for s in subs:
        if s.tr is not None:
            s.tr.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="subscribers")
    ap.add_argument("--events", type=int, default=40, help="events published before the phases")
    ap.add_argument("--rounds", type=int, default=20, help="messages per subscriber per phase")
    ap.add_argument("--interval", type=float, default=0.25, help="seconds between a subscriber's")
    ap.add_argument("--reps", type=int, default=1, help="ack + heartbeat phase pairs")
    ap.add_argument("--profile", choices=("none", "cprofile", "callgrind"), default="none")
    ap.add_argument("--src", default=None, help="run the service from this source tree")
    ap.add_argument("--python", default=VENV_PY)
    ap.add_argument("--server-cpu", default="0", help="taskset CPU list for the server")
    a = ap.parse_args()
    assert a.rounds * a.reps <= a.events, "--events must be at least --rounds x --reps"
    host, port = "127.0.0.1", free_port()
    # One user (premium JWT) per subscriber, as bench/run.py does: a user's other
    # connections hear about each subscription change.
    target = project_target(a.python, users=a.n, workdir="/tmp", acks=True)
    with open(target["wire"]["sub_paths_file"]) as f:
        paths = [line.strip() for line in f if line.strip()]
    env = {**os.environ, **target["env"]}
    if a.src:
        env["PYTHONPATH"] = os.path.join(os.path.abspath(a.src), "src")
    tmp = tempfile.mkdtemp(prefix="ack-cost-")
    args = ["serve", "--host", host, "--port", str(port)]
    if a.profile == "cprofile":
        env["ACK_COST_PROFILE"] = os.path.join(tmp, "ack.prof")
        cmd = [a.python, "-c", CPROFILE_WRAPPER, *args]
    elif a.profile == "callgrind":
        cmd = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={tmp}/callgrind.out.%p",
            a.python,
            "-m",
            "football_realtime",
            *args,
        ]
    else:
        cmd = [a.python, "-m", "football_realtime", *args]
    cmd = ["taskset", "-c", a.server_cpu, *cmd]
    log_file = open(f"{tmp}/server.log", "w")  # noqa: SIM115 - open while the server runs
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        deadline = time.monotonic() + (600 if a.profile == "callgrind" else 60)
        while True:
            try:
                socket.create_connection((host, port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"server did not start; see {tmp}/server.log") from None
                time.sleep(0.2)
        pid = proc.pid
        if a.profile == "callgrind":
            # taskset execs valgrind, which runs python in the same process.
            pass
        out = asyncio.run(drive(a, host, port, pid, paths))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log_file.close()
    out["tmp"] = tmp
    if a.profile == "cprofile":
        import pstats

        st = pstats.Stats(os.path.join(tmp, "ack.prof"))
        st.sort_stats("tottime").print_stats(35)
        st.sort_stats("cumulative").print_stats(35)
    if a.profile == "callgrind":
        # One dump per phase, in order (callgrind.out.<pid>.1, .2, ...).
        dumps = sorted(
            (f for f in os.listdir(tmp) if re.fullmatch(r"callgrind\.out\.\d+\.\d+", f)),
            key=lambda f: int(f.rsplit(".", 1)[1]),
        )
        names = ["idle", "ack", "heartbeat"] * a.reps
        idle_ir = 0
        for name, f in zip(names, dumps, strict=False):
            with open(os.path.join(tmp, f), errors="replace") as fh:
                txt = fh.read()
            m = re.search(r"^totals: (\d+)", txt, re.M)
            total = int(m.group(1)) if m else 0
            if name == "idle":
                idle_ir = total
                print(f"idle: {total:,} instructions ({f})")
                continue
            per = (total - idle_ir) / (a.n * a.rounds)
            out.setdefault(f"{name}_instructions_per_message", []).append(round(per))
            print(f"{name}: {total:,} instructions, {per:,.0f} per message over idle ({f})")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
