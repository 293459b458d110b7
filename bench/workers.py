#!/usr/bin/env python3
"""`football-realtime serve --workers N` measured: accepts/s and deliveries/s with 1 and
2 workers (or any list), in one run, on one Redis (issue 15, item 6).

    .venv/bin/python bench/workers.py                      # N=2,000, K=200, 1 and 2 workers, 3 reps
    .venv/bin/python bench/workers.py --workers 1,2,4 --reps 5 --n 4000

Each session starts its own `serve --workers W` (the benchmark target of
`project_target.py`: JWT subscribers, INFO logs, no access log) on a free port with
`REALTIME_BROKER_URL` pointing at a redis-server this script starts on a free port (its
own temporary directory, flushed between sessions), waits until every worker answers
on its own port, and runs the same load client as `run.py` (`loadclient.py`: accept
phase, then the throughput phase; no latency phase). Unlike `run.py` nothing is pinned:
the workers and the load client share the machine's cores as a deployment would, so on
a machine with fewer than W + 1 cores the client competes with the workers (its CPU
use is printed). Sessions alternate 1, 2, 1, 2, ... so drift in machine load hits both.
Server CPU is utime+stime summed over every worker process during the client's run.

Every loop is bounded (count and time). Output: a Markdown table on stdout, and every
session's raw record in bench/results/workers-STAMP.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from project_target import project_target  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_block(n: int) -> int:
    """A free port P with P + 1 .. P + n free too (worker k also listens on P + k)."""
    for _ in range(100):
        port = free_port()
        held = []
        try:
            for k in range(1, n + 1):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port + k))
            return port
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    sys.exit(f"no block of {n + 1} free ports")


def cpu_us(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0
    rest = data[data.rfind(b")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) * 1_000_000 // CLK_TCK


def wait_http(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET /realtime/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


class Redis:
    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            sys.exit("redis-server is needed (apt-get install redis-server)")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="frt-bench-redis-")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--save", "", "--appendonly", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self.command(b"PING").startswith(b"+PONG"):
            if time.monotonic() > deadline:
                self.stop()
                sys.exit("redis-server did not start")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, *args: bytes) -> bytes:
        wire = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(wire)
                return s.recv(64)
        except OSError:
            return b""

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def session(a: argparse.Namespace, redis: Redis, workers: int, target: dict, logdir: str) -> dict:
    redis.command(b"FLUSHALL")
    port = free_port_block(workers if workers > 1 else 0)
    env = {**os.environ, **target["env"], "REALTIME_BROKER_URL": redis.url}
    log_path = os.path.join(logdir, f"serve-w{workers}-{port}.log")
    cmd = [a.python, "-m", "football_realtime", "serve", "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(workers)]  # fmt: skip
    rec: dict = {"workers": workers, "n": a.n, "port": port, "loadavg_start": os.getloadavg()[0]}
    with open(log_path, "wb") as log:
        srv = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        ports = [port] if workers == 1 else [port + k for k in range(1, workers + 1)]
        if not all(wait_http(p, deadline) for p in ports):
            rec["error"] = f"server did not start (rc={srv.poll()})"
            return rec
        if workers == 1:
            pids = [srv.pid]
        else:
            with open(log_path, errors="replace") as f:
                pids = [int(p) for p in re.findall(r"worker \d+ started: pid (\d+)", f.read())]
        time.sleep(a.warm_s)
        ccmd = [a.python, os.path.join(HERE, "loadclient.py"), "--host", "127.0.0.1",
                "--port", str(port), "--server-pid", str(pids[0]),
                "--target", json.dumps(target["wire"]), "--n", str(a.n), "--k", str(a.k),
                "--max-tp-s", str(a.max_tp_s), "--lat-rate", "0", "--settle-s", "1",
                "--conc", str(a.conc), "--window-deliveries", str(a.window_deliveries),
                "--max-total-s", str(a.session_timeout)]  # fmt: skip
        c0, t0 = sum(cpu_us(p) for p in pids), time.monotonic()
        try:
            cp = subprocess.run(ccmd, capture_output=True, timeout=a.session_timeout + 60)
        except subprocess.TimeoutExpired:
            rec["error"] = "client timeout"
            return rec
        rec["server_cpu_util"] = round(
            (sum(cpu_us(p) for p in pids) - c0) / 1e6 / max(time.monotonic() - t0, 1e-9), 3
        )
        try:
            rec.update(json.loads(cp.stdout.decode().strip().splitlines()[-1]))
        except Exception:
            rec["error"] = "client failed: " + cp.stderr.decode()[-800:]
        return rec
    finally:
        if srv.poll() is None:
            srv.send_signal(signal.SIGTERM)
            try:
                srv.wait(30)
            except subprocess.TimeoutExpired:
                srv.kill()
                srv.wait()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(records: list[dict], worker_counts: list[int]) -> str:
    rows = []
    base: dict[str, float] = {}
    for w in worker_counts:
        ok = [r for r in records if r["workers"] == w and "error" not in r]
        acc = [r["accept"]["accepts_per_s"] for r in ok if "accept" in r]
        dl = [r["throughput"]["deliveries_per_s"] for r in ok if "throughput" in r]
        lost = sum(r.get("throughput", {}).get("lost", 0) for r in ok)
        ccpu = [r["accept"]["client_cpu_util"] for r in ok if "accept" in r]
        scpu = [r["server_cpu_util"] for r in ok if "server_cpu_util" in r]
        m_acc, m_dl = median(acc), median(dl)
        if w == worker_counts[0]:
            base = {"acc": m_acc, "dl": m_dl}
        rows.append(
            f"| {w} | {m_acc:,.0f} ({', '.join(f'{x:,.0f}' for x in acc)}) "
            f"| {m_dl:,.0f} ({', '.join(f'{x:,.0f}' for x in dl)}) "
            f"| {m_acc / base['acc']:.2f}x / {m_dl / base['dl']:.2f}x "
            f"| {median(scpu):.2f} | {median(ccpu):.2f} | {lost} |"
        )
    head = (
        "| workers | accepts/s median (each rep) | deliveries/s median (each rep) "
        f"| vs {worker_counts[0]} worker(s) (accepts / deliveries) | server CPUs busy "
        "| client CPU (accept phase) | lost |\n|---|---|---|---|---|---|---|"
    )
    return head + "\n" + "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--n", type=int, default=2000, help="subscribers")
    ap.add_argument("--k", type=int, default=200, help="messages in the throughput phase")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--conc",
        type=int,
        default=50,
        help="handshakes in flight (run.py: 100). The runs in docs/performance.md used "
        "50: before REALTIME_REDIS_MAX_CONNECTIONS (a pool that waits) 100 on one instance "
        "ran out of redis-py's default pool of 100 connections",
    )
    ap.add_argument("--max-tp-s", type=float, default=8.0)
    ap.add_argument(
        "--window-deliveries",
        type=int,
        default=100_000,
        help="deliveries in flight in the throughput phase (run.py: 20,000, i.e. 10 events "
        "at N=2,000). Through Redis each event takes a publish, a read and a fan-out "
        "before the window moves, so a small window measures that round trip, not what "
        "the workers can deliver; 100,000 (50 events) keeps them busy",
    )
    ap.add_argument("--warm-s", type=float, default=1.0)
    ap.add_argument("--session-timeout", type=float, default=120.0)
    ap.add_argument("--python", default=os.path.join(ROOT, ".venv", "bin", "python"))
    a = ap.parse_args()
    counts = [int(x) for x in a.workers.split(",")]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    outdir = os.path.join(HERE, "results")
    os.makedirs(outdir, exist_ok=True)
    logdir = tempfile.mkdtemp(prefix="frt-bench-workers-")
    # One user per subscriber, as in production (and as run.py does at its larger sizes).
    target = project_target(a.python, users=a.n, workdir=logdir)
    redis = Redis()
    records = []
    try:
        for rep in range(a.reps):
            for w in counts:
                rec = session(a, redis, w, target, logdir)
                rec["rep"] = rep
                records.append(rec)
                tp = rec.get("throughput", {})
                print(
                    f"rep {rep + 1} workers {w}: accepts/s {rec.get('accept', {}).get('accepts_per_s')}"
                    f" deliveries/s {tp.get('deliveries_per_s')} lost {tp.get('lost')}"
                    f" load {rec['loadavg_start']:.2f} {rec.get('error', '')}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        redis.stop()
    raw = os.path.join(outdir, f"workers-{stamp}.jsonl")
    with open(raw, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    print(
        f"run {stamp}: N={a.n} subscribers, K={a.k}, {a.conc} handshakes in flight, "
        f"{a.window_deliveries} deliveries in flight, "
        f"{a.reps} reps, {os.cpu_count()} CPUs, "
        f"Redis broker; raw: {os.path.relpath(raw, ROOT)}, server logs: {logdir}\n"
    )
    print(summarize(records, counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
