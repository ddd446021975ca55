"""docker-compose.yml (and its three-broker override) is valid Compose and means what the code needs.

No Docker engine runs here, so the files are checked as data: against the Compose specification's JSON
schema (the copy vendored by check-jsonschema), and for their meaning: every Blackboard service runs a
command the CLI knows, with only settings that exist, reaching services that are defined, after
`migrate` and its dependencies' health.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from blackboard.app import ROLES
from blackboard.cli import app
from blackboard.config import Settings

ROOT = Path(__file__).resolve().parents[2]
BASE, THREE = ROOT / "docker-compose.yml", ROOT / "docker-compose.redpanda-3.yml"
DEPENDENCIES = {"redpanda", "postgres", "redis"}


def _load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def _merged() -> dict[str, Any]:
    """The base with the override applied the way Compose merges: maps by key, lists and scalars replaced."""
    def merge(a: Any, b: Any) -> Any:
        if isinstance(a, dict) and isinstance(b, dict):
            return {k: merge(a[k], b[k]) if k in a and k in b else b.get(k, a.get(k)) for k in {*a, *b}}
        return b
    result: dict[str, Any] = merge(_load(BASE), _load(THREE))
    return result


def _ours(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from this repository's image."""
    return {n: s for n, s in doc["services"].items() if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"}


@pytest.mark.parametrize("path", [BASE, THREE], ids=lambda p: p.name)
def test_the_file_follows_the_compose_specification(path: Path) -> None:
    schema = json.loads((resources.files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json").read_text())
    jsonschema.validate(_load(path), schema)


@pytest.mark.parametrize("doc", [_load(BASE), _merged()], ids=["one-broker", "three-brokers"])
def test_every_blackboard_service_has_what_it_needs(doc: dict[str, Any]) -> None:
    services, ours = doc["services"], _ours(doc)
    assert set(ours) == {"migrate", "decider-1", "decider-2", "projector", "query"}
    fields = {f"BLACKBOARD_{name.upper()}" for name in Settings.model_fields}
    for name, service in ours.items():
        env = service["environment"]
        assert set(env) <= fields, f"{name}: unknown settings {set(env) - fields}"
        for key in ("BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS", "BLACKBOARD_POSTGRES_URL"):
            assert key in env, f"{name} lacks {key}: it would fall back to the embedded mode"
        hosts = re.findall(r"(?:^|[,@/])([a-z][a-z0-9-]*):\d+", ",".join(str(v) for v in env.values()))
        assert hosts and set(hosts) <= set(services), f"{name} names hosts that are not services: {hosts}"
        command, _, _ = app.parse_args(service["command"])  # raises on an unknown command or flag
        assert command.__name__ in {"up", "migrate"}
        Settings(**{k.removeprefix("BLACKBOARD_").lower(): v for k, v in env.items()})  # values validate


def test_the_roles_cover_all_three_and_the_deciders_share_a_group() -> None:
    ours = _ours(_load(BASE))
    roles = {s["command"][s["command"].index("--role") + 1] for s in ours.values() if "--role" in s["command"]}
    assert roles == ROLES
    deciders = [s["environment"] for s in ours.values() if "command" in s["command"]]
    assert len(deciders) == 2
    assert all(e["BLACKBOARD_DECIDER_MODE"] == "group" for e in deciders)
    assert len({e["BLACKBOARD_MEMBER_ID"] for e in deciders}) == 2
    managers = [e.get("BLACKBOARD_PROCESS_MANAGERS", "true") for e in deciders]
    assert sorted(managers) == ["false", "true"], "the process managers run in exactly one decider"
    partitions = {s["environment"]["BLACKBOARD_PARTITIONS"] for s in ours.values()}
    assert len(partitions) == 1, "every role must agree on the partitions"


@pytest.mark.parametrize("doc", [_load(BASE), _merged()], ids=["one-broker", "three-brokers"])
def test_start_order_follows_health_and_migrate_runs_first(doc: dict[str, Any]) -> None:
    services = doc["services"]
    for name, service in services.items():
        if name == "migrate":
            assert service["restart"] == "no" and service["command"] == ["migrate"]
            continue
        assert service.get("restart") in {"unless-stopped", "always"}, f"{name} is not restarted"
        assert service["healthcheck"]["test"] and not service["healthcheck"].get("disable"), f"{name}: no health"
        for dep, how in service.get("depends_on", {}).items():
            wanted = "service_completed_successfully" if dep == "migrate" else "service_healthy"
            assert how["condition"] in {wanted, "service_started"}, f"{name} -> {dep}"
    for name, service in _ours(doc).items():
        needs = service["depends_on"]
        assert DEPENDENCIES - {"redis"} <= set(needs), name
        assert all(needs[d]["condition"] == "service_healthy" for d in DEPENDENCIES & set(needs)), name
        if name != "migrate":
            assert needs["migrate"]["condition"] == "service_completed_successfully", name
            assert "/health/ready" in " ".join(service["healthcheck"]["test"]), name


@pytest.mark.parametrize("doc", [_load(BASE), _merged()], ids=["one-broker", "three-brokers"])
def test_state_lives_in_named_volumes_and_the_broker_has_a_host_listener(doc: dict[str, Any]) -> None:
    services, volumes = doc["services"], set(doc["volumes"])
    for name in ("postgres", *(n for n in services if n.startswith("redpanda"))):
        used = {v.split(":")[0] for v in services[name]["volumes"]}
        assert used and used <= volumes, name
    brokers = {n: s for n, s in services.items() if n.startswith("redpanda")}
    for name, broker in brokers.items():
        advertised = next(a for a in broker["command"] if a.startswith("--advertise-kafka-addr="))
        host_port = re.search(r"external://localhost:(\d+)", advertised)
        assert host_port, f"{name} advertises no host listener"
        assert f"{host_port[1]}:{host_port[1]}" in broker["ports"], f"{name} does not publish {host_port[1]}"
        assert f"internal://{name}:9092" in advertised
    bootstrap = {b.split(":")[0] for b in _ours(doc)["projector"]["environment"]
                 ["BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS"].split(",")}
    assert bootstrap == set(brokers)
