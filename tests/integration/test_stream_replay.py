"""``blackboard stream``: one stream's events and the command side's state after each, from the real log."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import datetime
from typing import Any

import msgspec
import pytest

from blackboard.cli import inspect as inspecting
from blackboard.config import Settings
from blackboard.domain.decider import fold
from blackboard.domain.registry import DECIDERS
from blackboard.events.partitioner import partition_for
from blackboard.schemas.registry import decode_event
from tests.integration.harness import command, read_events, running, settings_for

PROJECT = {"title": "Trailer", "currency": "EUR", "budget_total": "100.00", "global_spec": {"style": "noir"}}


@pytest.fixture
def pg_settings(pg_url: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings of a test on the PostgreSQL log; the CLI run in-process reads the same ones from the environment."""
    monkeypatch.setenv("BLACKBOARD_POSTGRES_URL", pg_url)
    monkeypatch.setenv("BLACKBOARD_TOPIC_PREFIX", topic_prefix)
    monkeypatch.setenv("BLACKBOARD_PARTITIONS", "4")
    return settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix)


async def _traffic(settings: Settings) -> None:
    """A project with costs, a refused cost and two shot updates; a task with a skill, claimed."""
    async with running(settings, roles=frozenset({"command"})) as (client, _):
        sent: list[tuple[str, str, dict[str, Any]]] = [
            ("project.create", "project:p-1", PROJECT),
            ("task.create", "task:t-1", {"name": "render", "required_skills": ["gpu"]}),
            ("project.add_cost", "project:p-1", {"amount": "60.00", "reason": "render"}),
            ("project.update_shot", "project:p-1",
             {"shot_id": "s-1", "patch": {"status": "draft", "prompt": "rain"}, "expected_version": 0}),
            ("project.add_cost", "project:p-1", {"amount": "50.00", "reason": "too much"}),
            ("task.claim", "task:t-1", {"node": "n-1", "skills": ["gpu"]}),
            ("project.update_shot", "project:p-1",
             {"shot_id": "s-1", "patch": {"status": "review", "prompt": None}, "expected_version": 1}),
            ("project.add_cost", "project:p-1", {"amount": "12.5", "reason": "voice"}),
        ]
        for type_, stream, payload in sent:
            await command(client, type_, stream, payload)


async def _stream(capsys: pytest.CaptureFixture[str], name: str, *args: str) -> Any:
    """``blackboard stream NAME ARGS --format json``, in-process: the JSON document it printed."""
    options: dict[str, Any] = {"format": "json"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        options[flag.removeprefix("--").replace("-", "_")] = int(value) if flag == "--at-version" else value
    capsys.readouterr()  # what the services logged meanwhile is not the command's output
    await inspecting.stream(name, **options)
    return msgspec.json.decode(capsys.readouterr().out)


async def _fold(settings: Settings, stream: str, first: int) -> Any:
    """What the deciders' ``evolve`` makes of the first ``first`` events of ``stream``, as builtins."""
    async with _log(settings) as log:
        events = [e.envelope for e in await read_events(log, settings.events_topic) if e.envelope.stream == stream]
    decider = DECIDERS[stream.partition(":")[0]]
    decoded = [decode_event(e.type, e.schema_version, e.payload) for e in events[:first]]
    return msgspec.to_builtins(fold(decider, decider.initial_state, decoded))


def _log(settings: Settings) -> Any:
    from blackboard.connect import opened_log

    assert settings.postgres_url is not None
    return opened_log(settings, settings.postgres_url.get_secret_value())


async def test_the_replay_shows_every_event_and_the_state_after_it(
        pg_settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    await _traffic(pg_settings)
    doc = await _stream(capsys, "project:p-1")
    assert (doc["stream"], doc["version"], doc["partition"]) == ("project:p-1", 5, partition_for("p-1", 4))
    events = doc["events"]
    assert [(e["version"], e["type"]) for e in events] == [
        (1, "project.created"), (2, "project.cost_added"), (3, "project.shot_updated"),
        (4, "project.shot_updated"), (5, "project.cost_added")]
    offsets = [e["position"]["offset"] for e in events]
    assert offsets == sorted(offsets) and {e["position"]["partition"] for e in events} == {doc["partition"]}
    assert events[1]["payload"] == {"amount": "60.00", "reason": "render", "artifact_id": None}
    assert all(e["actor"] == "anonymous" and e["command_id"] and e["error"] is None for e in events)
    setters = {"status": {"by": "anonymous", "version": 2}, "prompt": {"by": "anonymous", "version": 2}}
    assert events[-1]["state"] == {
        "title": "Trailer", "status": "draft", "currency": "EUR",
        "budget": {"total": "100.00", "spent": "72.50", "reserved": "0"},
        "spec": {"doc": {"style": "noir"}, "version": 1}, "reservations": {}, "dna": {}, "artifacts": {},
        "shots": {"s-1": {"fields": {"status": "review"}, "version": 2, "setters": setters}}, "alerts": {}}
    for n, step in enumerate(events, start=1):
        assert step["state"] == await _fold(pg_settings, "project:p-1", n)


async def test_the_state_at_a_version_is_the_fold_of_its_first_events(
        pg_settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    await _traffic(pg_settings)
    for stream, last in (("project:p-1", 5), ("task:t-1", 2)):
        for n in range(last + 1):
            at = await _stream(capsys, stream, "--at-version", str(n))
            assert (at["stream"], at["version"]) == (stream, n)
            assert at["state"] == await _fold(pg_settings, stream, n)
    task = await _stream(capsys, "task:t-1", "--at-version", "2")
    expected = {"name": "render", "priority": 0, "payload": {}, "status": "claimed", "required_skills": ["gpu"],
                "depends_on": []}
    assert {k: task["state"][k] for k in expected} == expected


async def test_the_state_at_a_time(pg_settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    await _traffic(pg_settings)
    events = (await _stream(capsys, "project:p-1"))["events"]
    for step in events:
        at = await _stream(capsys, "project:p-1", "--at-time", step["occurred_at"])
        # Events of one instant are one command's: the state at that time is after the last of them.
        until = [e for e in events if _time(e["occurred_at"]) <= _time(step["occurred_at"])]
        assert (at["version"], at["state"]) == (until[-1]["version"], until[-1]["state"])
    before = await _stream(capsys, "project:p-1", "--at-time", "2000-01-01T00:00:00Z")
    assert (before["version"], before["state"], before["occurred_at"]) == (0, None, None)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_text_output_and_refusals(pg_settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    await _traffic(pg_settings)
    capsys.readouterr()
    await inspecting.stream("task:t-1")
    text = capsys.readouterr().out
    assert "task:t-1: 2 events" in text and "task.claimed@1 actor=anonymous" in text
    assert '"status":"claimed"' in text
    refusals: list[tuple[str, dict[str, Any], str]] = [
        ("task:t-404", {}, "stream 'task:t-404' has no events in"),
        ("robot:r-1", {}, "unknown category 'robot'"),
        ("no-colon", {}, "is not of the form"),
        ("task:t-1", {"at_version": 3}, "task:t-1 is at version 2; it has no version 3"),
        ("task:t-1", {"at_time": "yesterday"}, "is not an ISO 8601 time"),
    ]
    for name, args, message in refusals:
        with pytest.raises(SystemExit) as exited:
            await inspecting.stream(name, **args)
        assert exited.value.code == 1
        assert message in capsys.readouterr().err.replace("\n", "")


async def test_the_command_line_in_a_subprocess(pg_settings: Settings) -> None:
    await _traffic(pg_settings)
    env = {**os.environ}
    ok = await _cli(env, "stream", "project:p-1", "--at-version", "2", "--format", "json")
    assert ok.returncode == 0, ok.stderr
    assert msgspec.json.decode(ok.stdout)["state"]["budget"]["spent"] == "60.00"
    unknown = await _cli(env, "stream", "project:p-404")
    assert unknown.returncode == 1 and "has no events" in unknown.stderr


async def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "blackboard.cli", *args], env=env,
                                   capture_output=True, text=True, timeout=60)
