"""docker-compose.yml's Blackboard services, run as local processes: the compose file cannot drift from the code.

No Docker engine runs here. Each Blackboard service of the file is started with its own command (after the
image's entrypoint, ``blackboard``) and its own environment, with only what a container network gives for
free replaced: the hostnames of the compose dependencies by the suite's tansu, PostgreSQL and redis-server,
and each container port by a free local port. The one-shot ``migrate`` runs first and must exit 0; then the
roles start, commands flow to the deciders, one decider is killed with -9 mid-load, and every acknowledged
command must be in the log exactly once, with read models (served by the query process) equal to a fresh
rebuild of the log.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import yaml

from tests.integration.harness import Process
from tests.integration.test_deciders import COST, Load, _check, _create_projects, until_owned
from tests.services import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
#: The image's entrypoint (deploy/Dockerfile): the CLI, which `python -m blackboard.cli` is.
ENTRYPOINT = [sys.executable, "-m", "blackboard.cli"]
#: The port every role listens on inside its container (the image's EXPOSE and healthcheck).
CONTAINER_HTTP_PORT = 8080
#: A Kafka bootstrap list: host:port, comma-separated.
ADDRESSES = re.compile(r"[\w.-]+:\d+(,[\w.-]+:\d+)*")


def blackboard_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the Blackboard image, by name."""
    image = next(s["image"] for s in compose["services"].values() if "build" in s)
    return {name: s for name, s in compose["services"].items() if s.get("image") == image}


class Localizer:
    """Rewrites a container's environment for a local process: compose hostnames → the suite's services."""

    def __init__(self, *, kafka: str, pg_url: str, redis_url: str) -> None:
        self.kafka, self.pg_url, self.redis_url = kafka, pg_url, redis_url

    def value(self, raw: str, ports: dict[int, int]) -> str:
        if raw.isdigit() and int(raw) in ports:
            return str(ports[int(raw)])  # a container port the service publishes
        if "://" not in raw and not ADDRESSES.fullmatch(raw):
            return raw  # not an address: a mode, a count, a member id
        host = urlsplit(raw if "://" in raw else f"kafka://{raw}").hostname
        if host == "postgres":
            return self.pg_url  # the test's own database: credentials and name are the fixture's
        if host == "redis":
            local, path = urlsplit(self.redis_url), urlsplit(raw).path
            return urlunsplit((local.scheme, local.netloc, path, "", ""))
        if host == "redpanda":
            return self.kafka
        raise AssertionError(f"{raw!r} reaches {host!r}, which is none of the dependencies this test provides")

    def environment(self, service: dict[str, Any], ports: dict[int, int], isolation: dict[str, str]) -> dict[str, str]:
        env = {k: self.value(str(v), ports) for k, v in (service.get("environment") or {}).items()}
        # The port of the HTTP API is the image's default inside a container; here each process needs its own.
        return {**env, "BLACKBOARD_PORT": str(ports[CONTAINER_HTTP_PORT]), **isolation}


class Service(Process):
    """One compose service as a local process: the entrypoint, then the service's own command."""

    def __init__(self, name: str, service: dict[str, Any], env: dict[str, str], port: int) -> None:
        self.name, self.port = name, port
        entrypoint = service.get("entrypoint")
        args = [*ENTRYPOINT, *entrypoint[1:]] if entrypoint else list(ENTRYPOINT)
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([*args, *service["command"]], env={**os.environ, **env},
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        self.url = f"http://127.0.0.1:{port}"

    def roles(self) -> set[str]:
        """The roles its `up` command asks for."""
        args: list[str] = list(self.proc.args)  # type: ignore[arg-type]
        return {args[i + 1] for i, a in enumerate(args) if a == "--role"}


def _published(service: dict[str, Any]) -> dict[int, int]:
    """Container port → a free local port, for each port the service publishes, and the HTTP port."""
    inside = {int(str(p).split(":")[-1].split("/")[0]) for p in service.get("ports", [])}
    return {port: free_port() for port in inside | {CONTAINER_HTTP_PORT}}


@pytest.fixture
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


@pytest.fixture
def localizer(kafka_bootstrap: str, pg_url: str, redis_url: str) -> Localizer:
    return Localizer(kafka=kafka_bootstrap, pg_url=pg_url, redis_url=redis_url)


@pytest.fixture
def started(compose: dict[str, Any], localizer: Localizer, topic_prefix: str,
            redis_prefix: str) -> Iterator[dict[str, Service]]:
    """Every Blackboard service of the file as a process: the one-shot ones run to their end first."""
    # Isolation from the other tests sharing the suite's broker and Redis, nothing more.
    isolation = {"BLACKBOARD_TOPIC_PREFIX": topic_prefix, "BLACKBOARD_REDIS_PREFIX": redis_prefix}
    services = blackboard_services(compose)
    one_shot = {n: s for n, s in services.items() if s.get("restart") == "no"}
    assert "migrate" in one_shot and len(services) > len(one_shot), sorted(services)
    running: dict[str, Service] = {}
    try:
        for name, service in one_shot.items():
            ports = _published(service)
            job = Service(name, service, localizer.environment(service, ports, isolation), ports[CONTAINER_HTTP_PORT])
            code = job.proc.wait(120)
            assert code == 0, f"{name} exited with {code}: {job.output()}"
            job.log.close()
        for name, service in services.items():
            if name not in one_shot:
                assert {"migrate"} <= set(service["depends_on"]), f"{name} must start after migrate"
                ports = _published(service)
                running[name] = Service(name, service, localizer.environment(service, ports, isolation),
                                        ports[CONTAINER_HTTP_PORT])
        yield running
    finally:
        for proc in running.values():
            if proc.proc.poll() is None:
                proc.stop()


def _deciders(compose: dict[str, Any], running: dict[str, Service]) -> list[Service]:
    services = compose["services"]
    return [s for n, s in running.items()
            if "command" in s.roles() and services[n]["environment"].get("BLACKBOARD_DECIDER_MODE") == "group"]


async def test_the_compose_services_decide_project_and_answer_through_a_kill_minus_nine(
    compose: dict[str, Any], started: dict[str, Service], kafka_bootstrap: str, pg_url: str, topic_prefix: str
) -> None:
    for proc in started.values():
        await proc.ready(120)
    assert set().union(*(p.roles() for p in started.values())) == {"command", "projector", "query"}
    deciders = _deciders(compose, started)
    assert len(deciders) >= 2, "the file must run several deciders"
    query = next(p for p in started.values() if p.roles() == {"query"})
    partitions = int(compose["services"][deciders[0].name]["environment"]["BLACKBOARD_PARTITIONS"])
    await until_owned(deciders, partitions=partitions, timeout=120)
    await _create_projects(deciders[0].url)

    load = Load([d.url for d in deciders])
    clients = [asyncio.create_task(load.client()) for _ in range(6)]
    await asyncio.sleep(3)
    victim, survivors = deciders[-1], deciders[:-1]
    victim.kill9()
    load.urls.remove(victim.url)
    await until_owned(survivors, partitions=partitions, timeout=120)
    await asyncio.sleep(2)
    load.stop.set()
    await asyncio.gather(*clients)
    assert len(load.acked()) > 50, "the load must have been acknowledged"

    acked_before = {cid: r.json() for cid, r in load.answers.items() if r.status_code == 200}
    async with httpx.AsyncClient(timeout=30) as client:
        # Every command again, same id: an acknowledged one answers its first outcome and is decided nowhere twice.
        for cid, project in load.sent.items():
            body = {"type": "project.add_cost", "stream": f"project:p-{project}", "command_id": cid,
                    "payload": {"amount": str(COST), "reason": "load"}}
            r = await client.post(f"{survivors[0].url}/v1/commands", json=body)
            assert r.status_code in (200, 409), r.text
            if cid in acked_before:
                assert r.status_code == 200 and r.headers.get("idempotent-replayed") == "true"
                assert r.json()["position"] == acked_before[cid]["position"]
            load.answers.setdefault(cid, r)
    await _check("kafka", pg_url, topic_prefix, kafka_bootstrap, load, query.url)
