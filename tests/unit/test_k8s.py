"""The Kubernetes manifests mean what the code needs (scripts/check-k8s renders and validates their form).

Read from the base and the overlays' own files, without kubectl: every setting exists, every role runs a
command the CLI knows after the migrate Job, is probed on its health endpoints, is bounded and runs
unprivileged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from blackboard.app import ROLES
from blackboard.cli import app
from blackboard.config import Settings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
FIELDS = {f"BLACKBOARD_{name.upper()}" for name in Settings.model_fields}


def _objects() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    docs = [d for f in kustomization["resources"] for d in yaml.safe_load_all((K8S / "base" / f).read_text())]
    return [d for d in docs if d]


def _of(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _objects() if d["kind"] == kind}


def _pods() -> dict[str, dict[str, Any]]:
    return {name: d["spec"]["template"]["spec"] for name, d in {**_of("Deployment"), **_of("Job")}.items()}


def test_every_setting_named_exists() -> None:
    config, secret = _of("ConfigMap")["blackboard"]["data"], _of("Secret")["blackboard"]["stringData"]
    assert set(config) | set(secret) <= FIELDS
    for overlay in ("dev", "prod"):
        doc = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
        literals = [lit.split("=")[0] for g in doc.get("configMapGenerator", []) for lit in g["literals"]]
        assert literals and set(literals) <= FIELDS, overlay
    for pod in _pods().values():
        env = {e["name"] for c in pod["containers"] for e in c.get("env", [])}
        assert env <= FIELDS


def test_every_role_runs_after_migrate_and_the_roles_cover_all_three() -> None:
    job = _of("Job")["blackboard-migrate"]["spec"]["template"]["spec"]
    assert job["containers"][0]["args"] == ["migrate"] and job["restartPolicy"] == "OnFailure"
    roles = set()
    for name, deployment in _of("Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        args = pod["containers"][0]["args"]
        command, bound, _ = app.parse_args(args)
        assert command.__name__ == "up", name
        roles |= set(bound.arguments["role"])
        wait = pod["initContainers"][0]
        assert {"name": "JOB", "value": "blackboard-migrate"} in wait["env"], name
        assert pod["serviceAccountName"] == "blackboard" and pod["automountServiceAccountToken"], name
        assert pod["enableServiceLinks"] is False, name  # else Services inject BLACKBOARD_*_PORT variables
    assert roles == ROLES
    script = _of("ConfigMap")["blackboard-wait-for-migrate"]["data"]["wait_for_migrate.py"]
    compile(script, "wait_for_migrate.py", "exec")  # the init container's program is valid Python
    assert "/apis/batch/v1/namespaces/" in script and "succeeded" in script
    role = _of("Role")["blackboard-wait-for-migrate"]["rules"][0]
    assert role["resourceNames"] == ["blackboard-migrate"] and role["verbs"] == ["get"]
    app.parse_args(["migrate"])  # the Job's command exists


@pytest.mark.parametrize("name", sorted(_pods()))
def test_every_pod_is_probed_bounded_and_unprivileged(name: str) -> None:
    pod = _pods()[name]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]) <= set(container["resources"]["limits"])
    if name == "blackboard-migrate":
        return
    main = pod["containers"][0]
    assert main["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert main["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert main["startupProbe"]["httpGet"]["path"] == "/health/live"


def test_deciders_share_a_group_keep_a_budget_and_the_query_api_autoscales() -> None:
    deciders = _of("Deployment")["blackboard-decider"]
    env = {e["name"]: e for e in deciders["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["BLACKBOARD_DECIDER_MODE"]["value"] == "group"
    assert env["BLACKBOARD_MEMBER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # The process managers run once: not in the scaled deciders, in one replica that never overlaps.
    assert env["BLACKBOARD_PROCESS_MANAGERS"]["value"] == "false"
    processes = _of("Deployment")["blackboard-processes"]["spec"]
    managers = {e["name"]: e["value"] for e in processes["template"]["spec"]["containers"][0]["env"]}
    assert managers == {"BLACKBOARD_DECIDER_MODE": "none", "BLACKBOARD_PROCESS_MANAGERS": "true"}
    assert processes["replicas"] == 1 and processes["strategy"]["type"] == "Recreate"
    budget = _of("PodDisruptionBudget")["blackboard-decider"]
    assert budget["spec"]["selector"]["matchLabels"] == deciders["spec"]["selector"]["matchLabels"]
    hpa = _of("HorizontalPodAutoscaler")["blackboard-query"]
    assert hpa["spec"]["scaleTargetRef"]["name"] in _of("Deployment")
    grace = deciders["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > Settings().route_timeout_seconds, "a stopping decider is killed while routed commands wait"


def test_every_service_selects_pods_and_is_scraped() -> None:
    labels = [d["spec"]["template"]["metadata"]["labels"] for d in _of("Deployment").values()]
    for name, service in _of("Service").items():
        selector = service["spec"]["selector"]
        assert any(selector.items() <= pod.items() for pod in labels), name
        assert "http" in {p["name"] for p in service["spec"]["ports"]}, name
    monitor = _of("ServiceMonitor")["blackboard"]
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    common = {k: v for entry in kustomization["labels"] for k, v in entry["pairs"].items()}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= common.items()
    assert monitor["spec"]["endpoints"][0]["port"] == "http"


def test_the_roles_bind_beyond_loopback_only_with_a_credential() -> None:
    # A role bound to 0.0.0.0 refuses to start without a credential: the manifests must provide one.
    config, secret = _of("ConfigMap")["blackboard"]["data"], _of("Secret")["blackboard"]["stringData"]
    assert config["BLACKBOARD_HOST"] == "0.0.0.0"
    assert "BLACKBOARD_API_KEYS" in secret or "BLACKBOARD_JWT_JWKS_URL" in config
    assert all(key.startswith("sha256:") for key in secret.get("BLACKBOARD_API_KEYS", "sha256:").split(","))
