"""Real nginx in front of real instances, configured by deploy/nginx.conf itself.

The test renders the file with only two rewrites (the ``listen`` port and the upstream
server addresses) and runs nginx in the foreground with its own prefix and temp dirs.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from .support import TIMEOUT, free_port

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
)
DEPLOY_CONF = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"

_UPSTREAM = re.compile(r"(upstream websocket \{)(.*?)(\n\})", re.S)
_SERVER_LINE = re.compile(r"^(\s*)server\s+\S+(.*;)\s*$", re.M)


def render(conf: str, port: int, upstreams: list[int], logdir: Path) -> str:
    """deploy/nginx.conf for these ports; fails loudly if the file's shape changed."""
    block = _UPSTREAM.search(conf)
    assert block is not None, "deploy/nginx.conf has no `upstream websocket { }` block"
    body = block.group(2)
    lines = _SERVER_LINE.findall(body)
    assert lines, "the upstream block lists no servers"
    indent, params = lines[0]
    servers = "".join(f"\n{indent}server 127.0.0.1:{p}{params}" for p in upstreams)
    kept = _SERVER_LINE.sub("", body).rstrip()
    conf = conf[: block.start(2)] + kept + servers + conf[block.end(2) :]
    assert "listen 80;" in conf, "deploy/nginx.conf must `listen 80;`"
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{port};")
    conf = conf.replace("/var/log/nginx/", f"{logdir}/")
    return conf


class Nginx:
    def __init__(self, upstreams: list[int]) -> None:
        if NGINX is None:
            raise RuntimeError(
                "nginx is not installed (apt-get install nginx-light); the nginx tests "
                "need a real one"
            )
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="frt-nginx-"))
        self.dir.chmod(0o755)
        site = render(DEPLOY_CONF.read_text(), self.port, upstreams, self.dir)
        (self.dir / "realtime.conf").write_text(site)
        d = self.dir
        (d / "nginx.conf").write_text(
            f"""
worker_processes 2;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {d}/realtime.conf;
}}
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/realtime/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        d = self.dir
        check = subprocess.run(
            [
                str(NGINX),
                "-t",
                "-p",
                str(d),
                "-e",
                str(d / "error.log"),
                "-c",
                str(d / "nginx.conf"),
            ],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen(
            [str(NGINX), "-p", str(d), "-e", str(d / "error.log"), "-c", str(d / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (d / "error.log").read_text()
            try:
                httpx.get(f"{self.http_url}/realtime/health", timeout=0.5)
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not start")

    def error_log(self) -> str:
        return (self.dir / "error.log").read_text(errors="replace")

    def access_log(self) -> str:
        p = self.dir / "realtime.access.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
