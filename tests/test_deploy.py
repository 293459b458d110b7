"""deploy/: the Kubernetes manifests, the Dockerfile and the Grafana dashboard.

No cluster here: the manifests are rendered with `kubectl kustomize`, validated
against the Kubernetes OpenAPI schemas and cross-checked with each other, with
Settings and with what the container test checks of the image (its tag, port,
probes, user, read-only root). The image itself is built and run by
scripts/image-test.sh (tests/container_checks.py); here the Dockerfile is parsed,
and its CMD, ENV and HEALTHCHECK are run for real against a service process.
See docs/deployment.md for what is tested where.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from football_realtime.docs_config import replace_generated, setting_specs
from football_realtime.edges.metrics import METRICS

from .container_checks import APP_UID, CONTAINER_PORT, HEALTH_PATH, LIVE_PATH, image_tag
from .scrape import scrape
from .support import ADMIN, TIMEOUT, RunningServer, ServeProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
GRAFANA = DEPLOY / "grafana"
K8S_VERSION = "1.33"
#: Settings that other branches define (the security work pins REALTIME_JWT_SECRET in
#: its issue). Once one lands in Settings this test fails: drop it from here.
PENDING_SETTINGS: set[str] = set()


def settings_env() -> set[str]:
    return {s.env for s in setting_specs()}


def load_k8s() -> dict[tuple[str, str], dict[str, Any]]:
    docs: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is None or doc.get("kind") == "Kustomization":
                continue
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict[str, Any]]:
    return load_k8s()


def container(k8s: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    pod = k8s[("Deployment", "football-realtime")]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    return dict(c)


def test_manifests_are_valid_kubernetes(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert {kind for kind, _ in k8s} >= {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "StatefulSet",
    }
    for (_kind, name), doc in k8s.items():
        # strict: unknown fields (a misspelt "readinessProb") are errors too
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "football-realtime", name
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {"secret.example.yaml"}  # secrets are created, not committed


def test_deployment_probes_ports_and_drain(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    dep = k8s[("Deployment", "football-realtime")]
    spec = dep["spec"]
    assert spec["replicas"] == 3
    pod = spec["template"]["spec"]
    c = container(k8s)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    config = k8s[("ConfigMap", "football-realtime-config")]["data"]
    assert ports == {"http": int(config["REALTIME_PORT"])}
    assert config["REALTIME_HOST"] == "0.0.0.0"

    ready = c["readinessProbe"]["httpGet"]
    live = c["livenessProbe"]["httpGet"]
    assert ready["path"] == "/realtime/health" and ready["port"] in ports
    assert live["path"] == "/realtime/health/live" and live["port"] in ports
    ann = spec["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/path"] == "/metrics"
    assert int(ann["prometheus.io/port"]) == ports["http"]

    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False

    # Drain arithmetic: preStop sleep + the service's own shutdown wait + a margin
    # must fit in the grace period, or the kubelet kills a draining pod.
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    shutdown = int(config.get("REALTIME_SHUTDOWN_TIMEOUT", 10))
    assert pod["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + shutdown + 5
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_the_liveness_and_readiness_paths_answer(server: RunningServer) -> None:
    import httpx

    assert httpx.get(server.http_url + "/realtime/health", timeout=TIMEOUT).status_code == 200
    live = httpx.get(server.http_url + "/realtime/health/live", timeout=TIMEOUT)
    assert live.status_code == 200 and live.json()["status"] == "alive"


def test_labels_selectors_and_service(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    dep = k8s[("Deployment", "football-realtime")]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    svc = k8s[("Service", "football-realtime")]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    port_names = {p["name"] for p in container(k8s)["ports"]}
    for p in svc["spec"]["ports"]:
        assert p["targetPort"] in port_names
    pdb = k8s[("PodDisruptionBudget", "football-realtime")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] < dep["spec"]["replicas"]
    spread = dep["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
    assert spread["labelSelector"]["matchLabels"].items() <= pod_labels.items()


def test_env_names_are_settings_and_secrets_exist(
    k8s: dict[tuple[str, str], dict[str, Any]],
) -> None:
    assert not PENDING_SETTINGS & settings_env(), (
        "a pending setting has landed in Settings: remove it from PENDING_SETTINGS"
    )
    known = settings_env() | PENDING_SETTINGS
    c = container(k8s)
    config = k8s[("ConfigMap", "football-realtime-config")]
    secret = k8s[("Secret", "football-realtime-secrets")]
    names = {e["name"] for e in c["env"]} | set(config["data"])
    assert names <= known, names - known
    # every ConfigMap value is valid for its setting (the service would refuse it)
    r = subprocess.run(
        [sys.executable, "-m", "football_realtime", "config", "--json"],
        env={"PATH": os.environ.get("PATH", ""), **config["data"]},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["REALTIME_PORT"] == int(config["data"]["REALTIME_PORT"])

    (ref,) = c["envFrom"]
    assert ref["configMapRef"]["name"] == config["metadata"]["name"]
    secret_keys = set(secret["stringData"])
    for e in c["env"]:
        src = e.get("valueFrom", {}).get("secretKeyRef")
        if src is not None:
            assert src["name"] == secret["metadata"]["name"]
            assert src["key"] in secret_keys
    secret_env = {e["name"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert secret_env == {"REALTIME_ADMIN_TOKEN", "REALTIME_JWT_SECRET", "REALTIME_BROKER_URL"}
    # No secret sits in the ConfigMap.
    secret_settings = {s.env for s in setting_specs() if s.secret} | PENDING_SETTINGS
    assert not secret_settings & set(config["data"])
    assert "REALTIME_BROKER_URL" not in config["data"]  # it carries the Redis password


def test_redis_dependency(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    sts = k8s[("StatefulSet", "football-realtime-redis")]
    svc = k8s[("Service", sts["spec"]["serviceName"])]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    redis_url = urlsplit(k8s[("Secret", "football-realtime-secrets")]["stringData"]["redis-url"])
    assert redis_url.scheme == "redis"
    assert redis_url.hostname == svc["metadata"]["name"]
    assert redis_url.port == svc["spec"]["ports"][0]["port"]
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    args = " ".join(c["args"])
    assert "--appendonly yes" in args and "noeviction" in args
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] in {
        m["name"] for m in c["volumeMounts"]
    }


# -- Dockerfile ------------------------------------------------------------------------


def dockerfile() -> list[dict[str, Any]]:
    return list(DockerfileParser(str(DEPLOY / "Dockerfile")).structure)


def stages() -> list[list[dict[str, Any]]]:
    out: list[list[dict[str, Any]]] = []
    for ins in dockerfile():
        if ins["instruction"] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def final_stage() -> list[dict[str, Any]]:
    return stages()[-1]


def instruction(stage: list[dict[str, Any]], name: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == name]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for value in instruction(final_stage(), "ENV"):
        for tok in shlex.split(value):
            k, _, v = tok.partition("=")
            env[k] = v
    return env


def test_dockerfile_essentials() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    args = dict(
        tok.split("=", 1)
        for i in dockerfile()
        if i["instruction"] == "ARG"
        for tok in [i["value"]]
        if "=" in tok
    )
    froms = [i["value"] for i in dockerfile() if i["instruction"] == "FROM"]
    assert len(froms) == 3, froms  # dashboard, build, runtime
    assert froms[0].endswith("AS dashboard") and "NODE_IMAGE" in froms[0]
    assert "slim" in args["PYTHON_IMAGE"] and "slim" in args["NODE_IMAGE"]
    final = final_stage()
    assert "PYTHON_IMAGE" in final[0]["value"]
    # non-root
    (user,) = instruction(final, "USER")
    assert user.split(":")[0] not in ("0", "root")
    assert int(user.split(":")[0]) >= 1000
    # dashboard assets built in, from the node stage
    assert any("--from=dashboard" in v for v in instruction(stages()[1], "COPY"))
    assert "npm run build" in text and "npm ci" in text
    # port and health
    env = dockerfile_env()
    assert instruction(final, "EXPOSE") == [env["REALTIME_PORT"]]
    (health,) = instruction(final, "HEALTHCHECK")
    assert "/realtime/health" in health and "CMD" in health
    assert instruction(final, "STOPSIGNAL") == ["SIGTERM"]
    (cmd,) = instruction(final, "CMD")
    assert json.loads(cmd) == ["football-realtime", "serve"]  # exec form: signals reach it
    # every REALTIME_* it sets is a setting, with a valid value
    realtime_env = {k: v for k, v in env.items() if k.startswith("REALTIME_")}
    assert set(realtime_env) <= settings_env()
    # COPY sources exist (globs may match nothing by design, as long as one source does)
    for stage in stages():
        for value in instruction(stage, "COPY"):
            parts = [p for p in shlex.split(value) if not p.startswith("--")]
            sources = parts[:-1]
            if "--from=" in value:
                continue
            assert any((ROOT / s.rstrip("/")).exists() for s in sources), value
            for s in sources:
                if not re.search(r"[\[*?]", s):
                    assert (ROOT / s.rstrip("/")).exists(), s
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("**") + 1 :]  # everything excluded, then a short allow-list
    assert "!src/" in ignore and "dashboard/node_modules" in ignore
    # the dashboard links the TypeScript client (file:../clients/js) and builds it
    assert (
        json.loads((ROOT / "dashboard" / "package.json").read_text())["dependencies"][
            "@football-realtime/client"
        ]
        == "file:../clients/js"
    )
    assert {"!clients/js/package.json", "!clients/js/package-lock.json", "!clients/js/src/"} <= set(
        ignore
    )
    assert "!requirements-runtime.lock" in ignore
    assert "pip install --require-hashes -r requirements-runtime.lock" in text
    assert not text.startswith("# syntax=")  # a frontend image to pull: none is reachable


def healthcheck_command() -> list[str]:
    (health,) = instruction(final_stage(), "HEALTHCHECK")
    return list(json.loads(health.split("CMD", 1)[1].strip()))


def test_image_cmd_env_and_healthcheck_run_for_real() -> None:
    """The final stage's CMD with its ENV starts a healthy service (host and port
    overridden: tests bind 127.0.0.1 on a free port), and its HEALTHCHECK command
    passes against it and fails against a dead port."""
    (cmd,) = instruction(final_stage(), "CMD")
    port = free_port()
    env = {k: v for k, v in dockerfile_env().items() if k.startswith(("REALTIME_", "PYTHON"))}
    env.update(
        {
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
            "REALTIME_HOST": "127.0.0.1",
            "REALTIME_PORT": str(port),
            "REALTIME_ADMIN_TOKEN": ADMIN,
        }
    )
    argv = json.loads(cmd)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sp = ServeProcess(proc, port)
    try:
        health = healthcheck_command()
        assert health[0] == "python"
        health[0] = sys.executable
        check_env = {"REALTIME_PORT": str(port)}
        deadline = TIMEOUT * 3
        ok = subprocess.run(health, env=check_env, timeout=deadline)
        waited = 0.0
        while ok.returncode != 0 and waited < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.1)
            waited += 0.1
            ok = subprocess.run(health, env=check_env, timeout=deadline)
        assert ok.returncode == 0
        m = scrape(sp.http_url)
        assert m.value("realtime_connections_active") == 0
    finally:
        proc.terminate()
        try:
            out = proc.communicate(timeout=TIMEOUT * 2)[0].decode()
        finally:
            sp.stop()
    # REALTIME_LOG_FORMAT=json from the image: every line is a JSON object
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines and all(json.loads(line)["logger"] for line in lines)
    dead = subprocess.run(
        health,
        env={"REALTIME_PORT": str(free_port())},
        capture_output=True,
        timeout=TIMEOUT * 2,
    )
    assert dead.returncode != 0


def lock_entries(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """``name -> (version, hashes)`` of a uv/pip-compile lock file."""
    entries: dict[str, tuple[str, frozenset[str]]] = {}
    name = ""
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if m:
            name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
            entries[name] = (m.group(2), frozenset())
            continue
        h = re.search(r"--hash=(sha256:[0-9a-f]{64})", line)
        if h and name:
            version, hashes = entries[name]
            entries[name] = (version, hashes | {h.group(1)})
    return entries


def test_the_image_lock_is_the_runtime_part_of_the_full_lock() -> None:
    """requirements-runtime.lock (the image) pins the same versions, with the same
    hashes, as requirements.lock (CI): scripts/lock.sh writes both."""
    full = lock_entries(ROOT / "requirements.lock")
    runtime = lock_entries(ROOT / "requirements-runtime.lock")
    assert runtime and all(hashes for _, hashes in runtime.values())
    assert runtime.items() <= full.items(), {k: v for k, v in runtime.items() if full.get(k) != v}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = {
        re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~; ]", dep, maxsplit=1)[0]).lower()
        for dep in project["project"]["dependencies"]
    }
    assert wanted | {"setuptools", "wheel"} <= set(runtime)  # + the build backend
    assert not {"pytest", "mypy", "ruff", "kubernetes-validate"} & set(runtime)


# -- what the container test checks --------------------------------------------------


KUBECTL = shutil.which("kubectl")


@pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not installed (scripts/setup.sh installs kubernetes-client)"
)
def test_kustomize_renders_valid_manifests_of_the_tested_image(
    k8s: dict[tuple[str, str], dict[str, Any]],
) -> None:
    assert KUBECTL is not None
    r = subprocess.run(
        [KUBECTL, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    rendered = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert rendered == set(k8s) - {("Secret", "football-realtime-secrets")}
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == image_tag()  # what scripts/image-test.sh builds and runs


def test_k8s_runs_the_image_as_the_container_test_checks_it(
    k8s: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """The Deployment runs the image the way tests/container_checks.py proved it works."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    (img,) = kustomization["images"]
    assert f"{img['name']}:{img['newTag']}" == image_tag()
    c = container(k8s)
    pod = k8s[("Deployment", "football-realtime")]["spec"]["template"]["spec"]
    assert c["image"].split(":")[0] == img["name"]
    # port, probes
    assert [p["containerPort"] for p in c["ports"]] == [CONTAINER_PORT]
    assert instruction(final_stage(), "EXPOSE") == [str(CONTAINER_PORT)]
    assert c["readinessProbe"]["httpGet"]["path"] == HEALTH_PATH
    assert c["livenessProbe"]["httpGet"]["path"] == LIVE_PATH
    (health,) = instruction(final_stage(), "HEALTHCHECK")
    assert HEALTH_PATH in health
    # user: the image's USER, and the pod's
    (user,) = instruction(final_stage(), "USER")
    assert user == f"{APP_UID}:{APP_UID}"
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["runAsGroup"] == APP_UID
    # read-only root with a writable /tmp (docker run --read-only --tmpfs /tmp)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    (tmp,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == tmp["name"]]
    assert vol["emptyDir"]["medium"] == "Memory"


# -- Grafana and docs ----------------------------------------------------------------------


def test_grafana_dashboard_queries_only_exported_series(server: RunningServer) -> None:
    dash = json.loads((GRAFANA / "football-realtime.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 30
    m = scrape(server.http_url)
    exported = {name for name, _ in m.samples} | set(m.families)
    # histogram/gauge-histogram series exist once something was observed; the
    # family names tell which suffixes they carry
    for fam, kind in m.families.items():
        if kind in ("histogram", "gaugehistogram"):
            exported |= {fam + s for s in ("_bucket", "_sum", "_count", "_gsum", "_gcount")}
        if kind == "counter":  # labelled counters have no series before the first event
            exported.add(fam + "_total")
    used = set()
    for e in exprs:
        used |= set(re.findall(r"\b((?:realtime|process|python)_[a-z_]+)\b", e))
    assert used - exported == set(), used - exported
    # every metric family of the service is on the dashboard somewhere
    for spec in METRICS:
        if spec.name == "instance_info":
            continue
        assert any(spec.exposed in u for u in used), spec.exposed
    # the committed JSON is the generator's output
    spec = importlib.util.spec_from_file_location("build_dashboard", GRAFANA / "build_dashboard.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (GRAFANA / "football-realtime.json").read_text(encoding="utf-8") == gen.render(), (
        "run python deploy/grafana/build_dashboard.py"
    )
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert dash["uid"] == "football-realtime"


def test_operations_doc_lists_every_metric() -> None:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    assert replace_generated(text) == text, (
        "docs/operations.md is out of date: "
        "python -m football_realtime.docs_config --write docs/operations.md"
    )
    for spec in METRICS:
        assert f"`{spec.exposed}`" in text
    exposed = {spec.exposed for spec in METRICS}
    for name in set(re.findall(r"\brealtime_[a-z_]+\b", text)):
        stem = re.sub(r"_(bucket|sum|count|gsum|gcount)$", "", name)
        assert name in exposed or stem in exposed, f"docs name {name}, which is not exported"
