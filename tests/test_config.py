"""The configuration reference, `football-realtime config`, and serve's flags."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from football_realtime.cli import build_parser, main
from football_realtime.config import Settings
from football_realtime.docs_config import (
    BEGIN,
    END,
    reference,
    replace_generated,
    setting_specs,
)
from football_realtime.docs_config import main as docs_main

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DOC = ROOT / "docs" / "configuration.md"


def settings_env_names() -> set[str]:
    return {s.env for s in setting_specs()}


def test_docs_reference_is_generated_from_the_model() -> None:
    text = CONFIG_DOC.read_text(encoding="utf-8")
    assert replace_generated(text) == text, (
        "docs/configuration.md is out of date: "
        "python -m football_realtime.docs_config --write docs/configuration.md"
    )
    generated = text[text.index(BEGIN) : text.index(END)]
    for spec in setting_specs():
        assert f"| `{spec.env}` |" in generated, spec.env
        if spec.flag:
            assert f"`{spec.flag}`" in generated
    # Nothing in the page names a variable the model does not have.
    mentioned = set(re.findall(r"\bREALTIME_[A-Z0-9_]+\b", text))
    assert mentioned <= settings_env_names(), mentioned - settings_env_names()


def test_a_change_to_the_model_makes_the_docs_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    text = CONFIG_DOC.read_text(encoding="utf-8")
    field = Settings.model_fields["ping_interval"]
    monkeypatch.setattr(field, "description", "Changed without regenerating the docs.")
    assert replace_generated(text) != text


def test_every_setting_is_described_and_has_a_flag_unless_secret() -> None:
    parser = build_parser()
    serve_flags = set()
    for action in parser._subparsers._group_actions[0].choices["serve"]._actions:  # type: ignore[union-attr]
        serve_flags.update(action.option_strings)
    for spec in setting_specs():
        assert spec.description, f"{spec.name} has no description"
        if spec.secret:
            assert spec.flag is None
            assert "--" + spec.name.replace("_", "-") not in serve_flags
        else:
            assert spec.flag in serve_flags, spec.flag
    assert "--ssl-certfile" in serve_flags


def test_docs_module_check_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text(f"# x\n\n{BEGIN}\nold\n{END}\n", encoding="utf-8")
    assert docs_main(["--check", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert docs_main(["--write", str(stale)]) == 0
    assert reference() in stale.read_text(encoding="utf-8")
    # the module entry point, as the docs tell people to run it
    r = subprocess.run(
        [sys.executable, "-m", "football_realtime.docs_config", "--check", str(stale)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr


def run_config(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": "/usr/bin:/bin", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "football_realtime", "config", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=30,
    )


def test_config_refuses_invalid_values_naming_the_variable() -> None:
    r = run_config(env={"REALTIME_PORT": "eighty", "REALTIME_LOG_FORMAT": "xml"})
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert any(line.startswith("invalid configuration: REALTIME_PORT") for line in lines)
    assert any("REALTIME_LOG_FORMAT" in line and "'text' or 'json'" in line for line in lines)

    r = run_config("--max-connections", "0")
    assert r.returncode == 2
    assert "REALTIME_MAX_CONNECTIONS (given as --max-connections)" in r.stderr
    assert "greater than or equal to 1" in r.stderr


def test_config_prints_the_effective_values_with_secrets_redacted() -> None:
    env = {
        "REALTIME_ADMIN_TOKEN": "s3cr3t-admin",
        "REALTIME_BROKER_URL": "redis://:hunter2@redis:6379/0",
        "REALTIME_HISTORY_SIZE": "500",
    }
    r = run_config("--port", "9100", "--no-access-log", env=env)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "s3cr3t" not in out and "hunter2" not in out
    assert "REALTIME_ADMIN_TOKEN=<redacted>  # environment" in out
    assert "REALTIME_BROKER_URL=redis://:***@redis:6379/0  # environment" in out
    assert "REALTIME_HISTORY_SIZE=500  # environment" in out
    assert "REALTIME_PORT=9100  # flag --port" in out
    assert "REALTIME_ACCESS_LOG=false  # flag --access-log" in out
    assert "REALTIME_PING_INTERVAL=25.0  # default" in out
    for name in settings_env_names():
        assert re.search(rf"^{name}=", out, re.MULTILINE), name

    # A flag wins over the environment; --json gives the same values.
    r = run_config("--json", "--history-size", "7", env=env)
    data = json.loads(r.stdout)
    assert data["REALTIME_HISTORY_SIZE"] == 7
    assert data["REALTIME_ADMIN_TOKEN"] == "<redacted>"
    assert set(data) == settings_env_names()


def test_config_markdown_is_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--markdown"]) == 0
    assert capsys.readouterr().out.strip() == reference().strip()


def test_serve_refuses_invalid_values_before_starting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REALTIME_SHUTDOWN_TIMEOUT", "-1")
    assert main(["serve", "--port", "8"]) == 2
    err = capsys.readouterr().err
    assert "REALTIME_SHUTDOWN_TIMEOUT = '-1'" in err


def test_session_critical_types_default_list_and_validation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().session_critical_types == [
        "match_score_changed",
        "match_status_changed",
        "match_ended",
        "prediction_created",
        "prediction_updated",
        "prediction_completed",
    ]
    monkeypatch.setenv("REALTIME_SESSION_CRITICAL_TYPES", " match_ended , odds_updated ")
    assert Settings().session_critical_types == ["match_ended", "odds_updated"]
    monkeypatch.setenv("REALTIME_SESSION_CRITICAL_TYPES", '["match_ended", "match_ended"]')
    assert Settings().session_critical_types == ["match_ended"]
    monkeypatch.setenv("REALTIME_SESSION_CRITICAL_TYPES", "")
    assert Settings().session_critical_types == []
    for bad, words in (
        ("goal,match_ended", "unknown event type(s) 'goal'"),
        ("connection_status", "unknown event type(s) 'connection_status'"),
        ('["match_ended"', "not a JSON list"),
    ):
        monkeypatch.setenv("REALTIME_SESSION_CRITICAL_TYPES", bad)
        with pytest.raises(ValueError, match=re.escape(words)):
            Settings()


def test_serve_refuses_an_unknown_critical_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "8", "--session-critical-types", "goal"]) == 2
    err = capsys.readouterr().err
    assert "REALTIME_SESSION_CRITICAL_TYPES" in err
    assert "unknown event type(s) 'goal'; publishable event types are: " in err
    assert "match_score_changed" in err
