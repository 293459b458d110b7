"""The dashboard: the committed build matches its sources, ships in the wheel, and works
end to end in a real headless Chromium (dashboard/e2e/demo.e2e.mjs)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ..support import UNIT

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboard"
STATIC = ROOT / "src" / "football_realtime" / "static"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def source_hash(root: Path, inputs: list[str]) -> str:
    """Twin of sourceHash() in dashboard/vite.config.ts."""
    files: list[Path] = []
    for name in inputs:
        p = root / name
        if p.is_dir():
            files += [f for f in p.rglob("*") if f.is_file() and not f.name.endswith(".test.ts")]
        else:
            files.append(p)
    h = hashlib.sha256()
    rel = sorted(Path(os.path.relpath(f, root)).as_posix() for f in files)
    for name in rel:
        h.update(name.encode())
        h.update(b"\0")
        h.update((root / name).read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def test_committed_build_matches_the_dashboard_sources() -> None:
    info = json.loads((STATIC / "build-info.json").read_text())
    assert source_hash(DASHBOARD, info["inputs"]) == info["source_sha256"], (
        "src/football_realtime/static is stale (the dashboard or clients/js changed): run "
        "`npm --prefix dashboard run build` and commit the result"
    )
    index = (STATIC / "index.html").read_text()
    for ref in (p.split('"')[0] for p in index.split('="/assets/')[1:]):
        assert (STATIC / "assets" / ref).is_file(), ref


def test_wheel_ships_the_dashboard(tmp_path: Path) -> None:
    # Build from a copy: an in-tree build/ directory could carry stale files into the wheel.
    src = tmp_path / "src"
    shutil.copytree(
        ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(src)],
        check=True,
        timeout=120,
        cwd=tmp_path,
    )  # fmt: skip
    wheel = next((tmp_path / "dist").glob("football_realtime-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "football_realtime/static/index.html" in names
    assets = [n for n in names if n.startswith("football_realtime/static/assets/")]
    assert any(n.endswith(".js") for n in assets) and any(n.endswith(".css") for n in assets)
    assert "football_realtime/demo/simulation.py" in names


def test_dashboard_in_headless_chromium() -> None:
    node = shutil.which("node")
    missing = [
        what
        for what, ok in (
            ("node (Node.js 20+)", node is not None),
            (f"Chromium at {CHROMIUM} (apt-get install chromium)", Path(CHROMIUM).exists()),
            (
                "dashboard/node_modules (npm --prefix dashboard ci)",
                (DASHBOARD / "node_modules" / "playwright-core").is_dir(),
            ),
        )
        if not ok
    ]
    if missing:
        pytest.fail(
            "the browser test needs: " + "; ".join(missing) + " (scripts/setup installs them)"
        )
    assert node is not None
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "CHROMIUM": CHROMIUM,
        "ARTIFACTS": str(ROOT / "artifacts"),
        "E2E_UNIT": str(UNIT),
    }
    r = subprocess.run(
        [node, str(DASHBOARD / "e2e" / "demo.e2e.mjs")],
        env=env,
        capture_output=True,
        text=True,
        timeout=90 * UNIT,
    )
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (ROOT / "artifacts" / "dashboard.png").stat().st_size > 10_000
