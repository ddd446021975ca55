"""Every metric the Grafana dashboard and the alert rules query is exported by a running `blackboard up`.

A renamed metric would otherwise leave a panel empty and an alert silent, which nobody notices until the
day it should have fired.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import yaml

from benchmarks.server import Server
from tests.integration.test_metrics import sample

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "blackboard.json"
RULES = ROOT / "deploy" / "k8s" / "base" / "monitoring.yaml"
#: The series a Prometheus metric family of each type exposes, by suffix.
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"), "untyped": ("",)}


def queried() -> dict[str, set[str]]:
    """Metric name → where it is queried (a dashboard panel or an alert)."""
    exprs: list[tuple[str, str]] = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        exprs += [(f"panel {panel['title']!r}", t["expr"]) for t in panel["targets"]]
    for doc in yaml.safe_load_all(RULES.read_text()):
        if doc and doc["kind"] == "PrometheusRule":
            exprs += [(f"alert {r['alert']}", r["expr"]) for g in doc["spec"]["groups"] for r in g["rules"]]
    names: dict[str, set[str]] = {}
    for where, expr in exprs:
        found = re.findall(r"\b(blackboard_[a-z0-9_]+)\b", expr)
        assert found, f"{where} queries no blackboard metric: {expr}"
        for name in found:
            names.setdefault(name, set()).add(where)
    return names


def exported(text: str) -> set[str]:
    """Every series name the exposition can contain: its samples, and each declared family's suffixes
    (a labelled family has no sample before its first observation)."""
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        base = family.removesuffix("_total") if kind == "counter" else family
        names |= {base + suffix for suffix in SUFFIXES[kind]}
    return names


async def test_every_dashboard_and_alert_metric_is_exported(pg_url: str, topic_prefix: str) -> None:
    wanted = queried()
    assert len(wanted) >= 15, sorted(wanted)  # the parsing found the queries
    server = Server({"BLACKBOARD_POSTGRES_URL": pg_url, "BLACKBOARD_TOPIC_PREFIX": topic_prefix,
                     "BLACKBOARD_PARTITIONS": "2", "BLACKBOARD_CONSISTENCY_TIMEOUT_SECONDS": "0.2"}, [])
    try:
        await server.ready()
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            # A routed request makes the HTTP middleware's families; a token far ahead times out.
            late = await client.get("/v1/projects/none", params={"consistent_with": "0:1000000"})
            assert late.status_code == 503 and late.json()["code"] == "consistency_timeout"
            text = (await client.get("/metrics")).text
    finally:
        server.stop()
    have = exported(text)
    missing = {name: sorted(where) for name, where in wanted.items() if name not in have}
    assert not missing, f"queried but not exported: {missing}"
    # The values the alerts compare: one process deciding both partitions, each restored from the log.
    assert sample(text, "blackboard_decider_partitions") == sample(text, "blackboard_decider_owned_partitions") == 2
    assert sample(text, "blackboard_decider_restores_total", source="log") == 2
    assert sample(text, "blackboard_consistency_timeouts_total") == 1
