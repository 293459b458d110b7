"""One process per listening socket: the memory broker's guard against worker islands.

The ``memory://`` broker keeps events inside one process. A process manager that forks
workers (``uvicorn --workers N``, ``gunicorn -w N``, and the like) binds the listening
socket once and hands the same socket to every worker, so the kernel spreads clients
over processes that do not see each other's events: an event published to one worker
reaches only that worker's clients, without a word. Issue 15, item 6.

:func:`claim_listeners` tells that case apart from every legitimate one by what the
workers share: the listening socket itself. When the broker starts (the app's lifespan),
it looks for server sockets (listening, or bound and not connected) this process
already holds. A single ``uvicorn`` or ``football-realtime serve`` binds its socket only
after the lifespan, so it holds none and nothing is checked; a worker holds the one its
process manager bound and handed down. For each, it takes a
POSIX record lock (``fcntl.lockf``) on a file in the temporary directory named after
the socket's inode; the lock lives as long as the process. A second process holding the
same socket finds the lock taken and refuses to start (``SharedListener``), with a
message that says what to do. One worker under a process manager (``gunicorn -w 1``,
``uvicorn --fd``, systemd socket activation) takes the lock and runs.

The lock files are empty and stay in place (removing one while another process opens
it could leave two processes each holding a lock on a different file); they exist only
for sockets a process held before its broker started, a few per test run.

Record locks belong to the process, not to the open file: several apps in one process
(tests) never conflict with each other; the lock is released when the process exits,
however it exits. A process manager's reload that starts a new worker before the old
one has gone (gunicorn's ``HUP``) is refused the same way: restart instead (a memory
broker loses its history on any restart). Linux (``/proc/self/fd``) and systems with
``/dev/fd``; elsewhere, or when the lock file cannot be opened, nothing is checked.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import tempfile

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: Where the lock files live (a test may point it elsewhere).
LOCK_DIR = tempfile.gettempdir()

REFUSAL = (
    "refusing to start: REALTIME_BROKER_URL is memory://, which keeps events inside one "
    "process, and another process is serving the same listening socket (a process "
    "manager runs several workers: uvicorn --workers N, gunicorn -w N, or similar). Each "
    "worker would be an island: an event published to one would reach only its own "
    "clients. Run one worker process (uvicorn without --workers, gunicorn -w 1), or set "
    "REALTIME_BROKER_URL=redis://HOST:PORT/DB so that every worker shares the events; "
    "`football-realtime serve --workers N` then runs N processes on one port "
    "(docs/scaling.md)."
)


class SharedListener(RuntimeError):
    """Another process serves the same listening socket while the broker is memory://."""


def _fd_dir() -> str | None:
    for path in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(path):
            return path
    return None


def _serves(s: socket.socket) -> bool:
    """Whether ``s`` is a server socket: listening, or a stream socket bound to an
    address and not connected (uvicorn's parent binds the socket its workers share and
    each worker starts listening only once its lifespan is done)."""
    if s.type != socket.SOCK_STREAM:
        return False
    accept_conn = getattr(socket, "SO_ACCEPTCONN", None)
    if accept_conn is not None and s.getsockopt(socket.SOL_SOCKET, accept_conn):
        return True
    try:
        s.getpeername()
        return False  # connected: a client socket, never shared by workers
    except OSError:
        pass
    name = s.getsockname()
    if s.family in (socket.AF_INET, socket.AF_INET6):
        return bool(name[1])  # port 0: not bound
    return bool(name)  # AF_UNIX: bound to a path


def served_sockets() -> list[tuple[int, int]]:
    """``(st_dev, st_ino)`` of every server socket (listening, or bound and not
    connected) this process holds."""
    where = _fd_dir()
    if where is None:
        return []
    found = []
    for name in os.listdir(where):
        try:
            fd = int(name)
            st = os.fstat(fd)
        except (ValueError, OSError):
            continue  # the directory's own descriptor, already closed
        if not stat.S_ISSOCK(st.st_mode):
            continue
        try:
            # A duplicate of the descriptor (family and type read from it); the
            # original stays untouched.
            with socket.socket(fileno=os.dup(fd)) as s:
                serves = _serves(s)
        except OSError:
            continue
        if serves:
            found.append((st.st_dev, st.st_ino))
    return sorted(set(found))


class ListenerClaim:
    """The locks this process holds on its listening sockets; ``release`` drops them."""

    def __init__(self, fds: list[int]) -> None:
        self.fds = fds

    def release(self) -> None:
        fds, self.fds = self.fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing drops the record lock


def claim_listeners() -> ListenerClaim:
    """Lock every server socket this process holds; raise :class:`SharedListener`
    if another process holds one of them locked (it serves the same socket)."""
    fds: list[int] = []
    claim = ListenerClaim(fds)
    if fcntl is None:  # pragma: no cover - Windows
        return claim
    for dev, ino in served_sockets():
        path = os.path.join(LOCK_DIR, f"football-realtime-listener-{dev}-{ino}.lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            continue  # e.g. another user's file: cannot tell, do not refuse
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            claim.release()
            raise SharedListener(REFUSAL) from None
        fds.append(fd)
    return claim


__all__ = ["REFUSAL", "ListenerClaim", "SharedListener", "claim_listeners", "served_sockets"]
