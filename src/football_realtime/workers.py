"""``football-realtime serve --workers N``: N processes on one port (issue 15, item 6).

A supervisor process forks N workers. Each worker is a whole instance of the service
(its own event loop, hub, broker connection and instance id ``<id>-<k>``) and binds its
own listening socket to the same address with ``SO_REUSEPORT``, so the kernel spreads
new connections over the workers (by a hash of the client's address and port) without a
shared accept queue. The workers share events through the Redis broker, as instances on
several machines do; a memory broker is refused (``Settings`` says why).

* **Start.** The supervisor binds the address first (``SO_REUSEPORT``, not listening):
  that resolves port 0, refuses at once an address another program holds, and keeps the
  port while workers restart. A worker listens only once its app has started, so no
  connection waits on a worker that is not ready.
* **Metrics per process.** Worker k also listens on ``port + k`` (without
  ``SO_REUSEPORT``): Prometheus scrapes each worker there as its own target, and
  ``/realtime/stats`` there is that worker's (its ``cluster`` section sums them all).
  On the shared port, a request reaches whichever worker the kernel picks.
* **Drain.** SIGTERM or SIGINT to the supervisor is passed to every worker as SIGTERM:
  each stops listening and closes its connections as ``serve`` does (``connection_status``
  closing, then 1012), within ``REALTIME_SHUTDOWN_TIMEOUT``. The supervisor exits 0 once
  they have all ended cleanly (1 otherwise; a worker still running 5 s after its
  deadline is killed).
* **Orphans.** A worker whose supervisor dies without a word (SIGKILL) gets SIGTERM
  from the kernel (``PR_SET_PDEATHSIG``) and drains: no worker outlives it.
* **Crash.** A worker that dies while the supervisor is not stopping is started again
  with a new instance id (``<id>-<k>.<n>``; the dead one's registry entries expire on
  their own). One that fails to start (exit 3, uvicorn's startup failure: a bad
  certificate, its port + k taken, an app that fails its startup) stops the whole
  service with exit 3; one that dies again and again within a second of starting stops
  it (exit 1) after 5 tries.

Fork, not spawn: the supervisor has built nothing with a thread or an event loop when
it forks, and a worker starts in milliseconds from the imported modules. Linux only
(elsewhere ``SO_REUSEPORT`` does not spread connections, or does not exist).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass
from types import FrameType

from pydantic import SecretStr

from .config import Settings
from .logs import configure_logging
from .serve import serve_on

log = logging.getLogger("football_realtime.workers")

#: uvicorn's exit status for a server that failed to start (``uvicorn.config``).
STARTUP_FAILURE = 3
#: A worker that dies within this many seconds of starting counts as failing at once.
QUICK_DEATH = 1.0
#: Quick deaths in a row after which the supervisor gives up.
MAX_QUICK_DEATHS = 5
#: Seconds past REALTIME_SHUTDOWN_TIMEOUT after which a draining worker is killed.
KILL_GRACE = 5.0


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``(host, port)`` with ``SO_REUSEPORT``, not listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def private_socket(host: str, port: int) -> socket.socket:
    """The worker's own address (``port + k``): a plain bound socket."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class Worker:
    index: int
    pid: int
    instance_id: str
    started: float


class Supervisor:
    """Runs ``settings.workers`` worker processes until told to stop."""

    def __init__(
        self,
        settings: Settings,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
    ) -> None:
        admin = settings.admin_token
        self.generated_token = admin is None
        if admin is None:  # one token for every worker, printed once
            admin = SecretStr(secrets.token_urlsafe(24))
        self.settings = settings.model_copy(update={"admin_token": admin})
        self.ssl_certfile = ssl_certfile
        self.ssl_keyfile = ssl_keyfile
        self.workers: dict[int, Worker] = {}  # pid -> worker
        self.generation: dict[int, int] = {}
        self.quick_deaths: dict[int, int] = {}
        self.stop_signal: int | None = None
        self.failed: int | None = None
        self.port = settings.port
        self.reserve: socket.socket | None = None
        self.supervisor_pid = os.getpid()

    # -- the supervisor ----------------------------------------------------------

    def run(self) -> int:
        s = self.settings
        if not hasattr(socket, "SO_REUSEPORT") or not sys.platform.startswith("linux"):
            log.error("--workers needs Linux (SO_REUSEPORT); run one process per port instead")
            return 2
        try:
            self.reserve = reuseport_socket(s.host, s.port)
        except OSError as exc:
            log.error("cannot bind %s:%s: %s", s.host, s.port, exc)
            return 1
        self.port = self.reserve.getsockname()[1]
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        if self.generated_token:
            token = s.admin_token.get_secret_value() if s.admin_token else ""
            print(
                "football-realtime: REALTIME_ADMIN_TOKEN is not set; generated admin token "
                f"for this run (every worker): {token}",
                file=sys.stderr,
                flush=True,
            )
        log.info(
            "supervisor %d: %d workers on %s:%d (SO_REUSEPORT); worker k also on port %d+k",
            os.getpid(),
            s.workers,
            s.host,
            self.port,
            self.port,
        )
        for k in range(1, s.workers + 1):
            self._spawn(k)
        try:
            while self.workers and self.stop_signal is None and self.failed is None:
                self._reap()
                time.sleep(0.05)
            return self._drain()
        finally:
            self.reserve.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum

    def _spawn(self, k: int) -> None:
        n = self.generation.get(k, 0)
        self.generation[k] = n + 1
        base = f"{self.settings.instance_id}-{k}"
        instance_id = base if n == 0 else f"{base}.{n}"
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the worker (covered by the end-to-end tests)
            code = STARTUP_FAILURE
            try:
                code = self._worker(k, instance_id)
            except BaseException:  # serve_on catches the app's failures: this is ours
                log.exception("worker %d could not start", k)
            finally:
                with contextlib.suppress(BaseException):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        self.workers[pid] = Worker(k, pid, instance_id, time.monotonic())
        log.info("worker %d started: pid %d, instance %s", k, pid, instance_id)

    def _reap(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.workers.clear()
                return
            if pid == 0:
                return
            w = self.workers.pop(pid, None)
            if w is None:
                continue
            self._exited(w, status)

    def _exited(self, w: Worker, status: int) -> None:
        how = _describe(status)
        if self.stop_signal is not None:
            log.info("worker %d (pid %d) %s", w.index, w.pid, how)
            return
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == STARTUP_FAILURE:
            log.error("worker %d (pid %d) failed to start; stopping", w.index, w.pid)
            self.failed = STARTUP_FAILURE
            return
        quick = time.monotonic() - w.started < QUICK_DEATH
        self.quick_deaths[w.index] = self.quick_deaths.get(w.index, 0) + 1 if quick else 0
        if self.quick_deaths[w.index] >= MAX_QUICK_DEATHS:
            log.error(
                "worker %d (pid %d) %s, %d times in a row within %.0f s of starting; stopping",
                w.index,
                w.pid,
                how,
                MAX_QUICK_DEATHS,
                QUICK_DEATH,
            )
            self.failed = 1
            return
        log.warning("worker %d (pid %d) %s; starting it again", w.index, w.pid, how)
        self._spawn(w.index)

    def _drain(self) -> int:
        """Pass the stop on to every worker and wait for them (then kill stragglers)."""
        for w in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signal.SIGTERM)
        if self.workers:
            log.info("stopping %d workers", len(self.workers))
        deadline = time.monotonic() + self.settings.shutdown_timeout + KILL_GRACE
        clean = True
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                if time.monotonic() > deadline:
                    for w in self.workers.values():
                        log.error("worker %d (pid %d) did not stop in time: killed", w.index, w.pid)
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(w.pid, signal.SIGKILL)
                    deadline = float("inf")
                    clean = False
                time.sleep(0.05)
                continue
            gone = self.workers.pop(pid, None)
            if gone is None:
                continue
            log.info("worker %d (pid %d) %s", gone.index, gone.pid, _describe(status))
            clean = clean and _ended_cleanly(status)
        if self.failed is not None:
            return self.failed
        log.info("supervisor %d: every worker has stopped", os.getpid())
        return 0 if clean else 1

    # -- a worker ----------------------------------------------------------------

    def _worker(self, k: int, instance_id: str) -> int:  # pragma: no cover - in the child
        """Run one instance of the service in this (forked) process; its exit status."""
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _drain_when_orphaned(self.supervisor_pid)
        if self.reserve is not None:
            self.reserve.close()
        settings = self.settings.model_copy(update={"instance_id": instance_id})
        configure_logging(settings)
        sockets = [reuseport_socket(settings.host, self.port)]
        try:
            sockets.append(private_socket(settings.host, self.port + k))
        except OSError as exc:
            log.error(
                "worker %d cannot bind its own port %s:%d (port + %d, for /metrics): %s",
                k,
                settings.host,
                self.port + k,
                k,
                exc,
            )
            return STARTUP_FAILURE
        return serve_on(settings, sockets, self.ssl_certfile, self.ssl_keyfile)


def _drain_when_orphaned(supervisor: int) -> None:  # pragma: no cover - in the child
    """Have the kernel send this worker SIGTERM (a graceful drain) if the supervisor
    dies without passing a stop on (SIGKILL, a crash): no worker outlives it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != supervisor:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was ended by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.WEXITSTATUS(status)}"


def _ended_cleanly(status: int) -> bool:
    """Exit 0, or the SIGTERM we sent (uvicorn re-raises it after its graceful exit)."""
    if os.WIFSIGNALED(status):
        return os.WTERMSIG(status) == signal.SIGTERM
    return os.WEXITSTATUS(status) == 0


def run_workers(
    settings: Settings, ssl_certfile: str | None = None, ssl_keyfile: str | None = None
) -> int:
    """``serve --workers N`` (N > 1): the supervisor; returns its exit status."""
    configure_logging(settings)
    return Supervisor(settings, ssl_certfile, ssl_keyfile).run()


__all__ = ["Supervisor", "reuseport_socket", "run_workers"]
