"""The benchmark target for this project: `python -m football_realtime serve` with its
real features on (indexed filters, tiers, metrics when present), driven through its public
interface (subscribe message on /realtime/ws, events published by POST /realtime/broadcast).

Authentication: once the service has JWT tiers (``Settings.jwt_secret``), subscribers connect
with a `premium` token in the ``token`` query parameter, so JWT verification is part of the
accept cost and tier rendering part of the fan-out; before that they connect anonymously.
Switching is the one line ``AUTH = ...`` below.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

ADMIN_TOKEN = "bench-admin-token"
JWT_SECRET = "bench-jwt-secret-0123456789abcdef0123456789abcdef"

#: "jwt" (premium token per subscriber), "anonymous", or "auto" (jwt when the service has it).
AUTH = "auto"


def _service_has_jwt(python: str, env: dict[str, str]) -> bool:
    code = (
        "from football_realtime.config import Settings;print('jwt_secret' in Settings.model_fields)"
    )
    out = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, timeout=60, env={**os.environ, **env}
    )
    return out.stdout.strip() == "True"


def premium_tokens(python: str, n: int, path: str) -> None:
    """``n`` premium-tier JWTs, one per user (``bench-user-<i>``), one per line in ``path``:
    every subscriber is its own user, as in production (one user's connections are
    capped and each hears about the others' subscriptions)."""
    code = (
        "import jwt, time, sys\n"
        "exp = int(time.time()) + 86400\n"
        f"with open({path!r}, 'w') as f:\n"
        f"    for i in range({n}):\n"
        "        u = f'bench-user-{i}'\n"
        "        t = jwt.encode({'sub': u, 'user_id': u, 'tier': 'premium', 'exp': exp},"
        f" {JWT_SECRET!r}, algorithm='HS256')\n"
        "        f.write('/realtime/ws?token=' + t + '\\n')\n"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError("could not make JWTs: " + out.stderr[-400:])


def premium_token(python: str) -> str:
    """A premium-tier JWT signed with JWT_SECRET, valid for a day (PyJWT, HS256)."""
    code = (
        "import jwt, time, sys;"
        f"print(jwt.encode({{'sub': 'bench-user', 'user_id': 'bench-user', 'tier': 'premium',"
        f" 'exp': int(time.time()) + 86400}}, {JWT_SECRET!r}, algorithm='HS256'))"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError("could not make a JWT: " + out.stderr[-400:])
    return out.stdout.strip()


def project_target(
    python: str,
    extra_env: dict[str, str] | None = None,
    users: int = 0,
    workdir: str = "/tmp",
    acks: bool = False,
) -> dict:
    """``acks``: every subscriber opens a durable session (``session_id=new``) and acks
    what it receives as this project's clients do (cumulative, at most every 250 ms or at
    100 events; loadclient.py), so the server validates, times and stores each ack."""
    auth = AUTH
    if auth == "auto":
        auth = "jwt" if _service_has_jwt(python, extra_env or {}) else "anonymous"
    env = {
        "REALTIME_ADMIN_TOKEN": ADMIN_TOKEN,
        "REALTIME_LOG_LEVEL": "info",
        # The per-handshake access-log line is off, as for the peers (no peer logs per
        # connection); its cost is measured separately in docs/performance.md.
        "REALTIME_ACCESS_LOG": "false",
        "REALTIME_MAX_CONNECTIONS": "200000",
        # One load client on 127.0.0.1 with one user's token opens every connection: the
        # per-address and per-user limits stay enforced (counted), just above N.
        "REALTIME_MAX_CONNECTIONS_PER_IP": "200000",
        "REALTIME_MAX_CONNECTIONS_PER_USER": "200000",
    }
    sub_path = "/realtime/ws"
    sub_paths_file = None
    if auth == "jwt":
        env["REALTIME_JWT_SECRET"] = JWT_SECRET
        sub_path += "?token=" + premium_token(python)
        if users:
            sub_paths_file = os.path.join(workdir, f"bench-tokens-{users}.txt")
            if not os.path.exists(sub_paths_file):
                premium_tokens(python, users, sub_paths_file)
    if acks:
        # One durable session per subscriber (one user may hold them all when anonymous).
        env["REALTIME_MAX_SESSIONS_PER_USER"] = "200000"
        sep = "&" if "?" in sub_path else "?"
        sub_path += sep + "session_id=new"
        if sub_paths_file:
            acked = sub_paths_file.replace(".txt", "-sessions.txt")
            if not os.path.exists(acked):
                with open(sub_paths_file) as src, open(acked, "w") as dst:
                    for line in src:
                        if line.strip():
                            dst.write(line.strip() + "&session_id=new\n")
            sub_paths_file = acked
    env.update(extra_env or {})
    return {
        "desc": f"this project: python -m football_realtime serve ({auth} subscribers"
        + (", durable sessions, every subscriber acks)" if acks else ")"),
        "cmd": [python, "-m", "football_realtime", "serve", "--host", "{host}", "--port", "{port}"],
        "env": env,
        "auth": auth,
        "wire": {
            "sub_path": sub_path,
            "subscribe_msg": json.dumps(
                {"type": "subscribe", "data": {"subscription_type": "matches"}},
                separators=(",", ":"),
            ),
            "ready_mark": "message_ack",
            "publish": "http",
            "http_path": "/realtime/broadcast",
            "http_headers": {"Authorization": "Bearer " + ADMIN_TOKEN},
            "ack": acks,
            **({"sub_paths_file": sub_paths_file} if sub_paths_file else {}),
        },
    }


def project_versions(python: str) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, sys;"
        "print(sys.version.split()[0]);"
        "[print(p, m.version(p)) for p in ('football-realtime','fastapi','starlette','uvicorn',"
        "'uvloop','httptools','websockets','orjson','pydantic','pyjwt')]"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    lines = out.stdout.split("\n")
    v = {"python": lines[0]} if lines and lines[0] else {}
    for line in lines[1:]:
        if line.strip():
            k, val = line.split()
            v[k] = val
    v["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    v["project_python"] = os.path.realpath(python)
    return v
