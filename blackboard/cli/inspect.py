"""Reading a running system: ``tail``, ``stream``, ``topics``, ``lag``, ``partitions``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import cyclopts
import msgspec
from rich.console import Console
from rich.markup import escape

from blackboard.cli.base import Format, app, console, load_settings, postgres_url, server_url, show, table
from blackboard.cli.render import lag_table, topics_table


@app.command
async def tail(
    *,
    from_beginning: bool = False,
    follow: bool = False,
    partition: int | None = None,
    from_offset: Annotated[int | None, cyclopts.Parameter(help="first offset to read (every chosen partition)")] = None,
    to_offset: Annotated[int | None, cyclopts.Parameter(help="stop before this offset (exclusive)")] = None,
    last: Annotated[int, cyclopts.Parameter(help="without --from-beginning or --from-offset: start with the last N "
                                                 "records of each partition (0: only new ones)")] = 10,
    stream: str | None = None,
    type: str | None = None,
    actor: str | None = None,
    correlation_id: str | None = None,
    since: Annotated[str | None, cyclopts.Parameter(help="ISO-8601; occurred_at at or after it")] = None,
    until: Annotated[str | None, cyclopts.Parameter(help="ISO-8601; occurred_at before it")] = None,
    format: Literal["text", "json", "raw"] = "text",
    data_dir: Path | None = None,
) -> None:
    """Print the events of the log (either engine): the last ones, a range, or everything, optionally following.

    Bare, it prints the last 10 records of each partition and stops; --follow then waits for new ones.

    text is for reading; json is one line per event with partition, offset, every envelope field, the
    payload as stored and, for an older schema version, the upcast payload; raw is one line per record with
    key, headers and value as stored. Undecodable records are always shown, with the reason.
    """
    from blackboard.connect import opened_log
    from blackboard.events.log import UnknownTopic
    from blackboard.ops import tail as tailing
    from blackboard.ops.offsets import end_offsets

    settings = load_settings(data_dir=data_dir)
    try:
        condition = tailing.Filter(stream, type, actor, correlation_id,
                                   tailing.parse_time(since) if since else None,
                                   tailing.parse_time(until) if until else None)
        if (from_offset or 0) < 0 or (to_offset or 0) < 0 or last < 0:
            raise ValueError("--from-offset, --to-offset and --last must not be negative")
    except ValueError as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        raise SystemExit(1) from exc
    async with opened_log(settings, postgres_url(settings)) as log:
        try:
            ends = await end_offsets(log, settings.events_topic)
            spans = tailing.plan(ends, partition=partition, from_beginning=from_beginning,
                                 from_offset=from_offset, to_offset=to_offset, follow=follow, last=last)
        except (UnknownTopic, ValueError) as exc:
            console.print(f"[red]{escape(str(exc))}[/]")
            raise SystemExit(1) from exc
        await tailing.tail(log, settings.events_topic, spans, condition, _tail_printer(format))


def _tail_printer(format: str) -> Callable[[Any], None]:
    """Write one record to stdout in ``format``, flushed, so that a followed tail can be piped."""
    from blackboard.ops import tail as tailing

    out = Console(highlight=False, soft_wrap=True)

    def emit(item: tailing.Decoded) -> None:
        if format == "text":
            out.print(tailing.as_text(item))
            return
        doc = tailing.as_raw(item.record) if format == "raw" else tailing.as_json(item)
        sys.stdout.write(msgspec.json.encode(doc).decode() + "\n")
        sys.stdout.flush()

    return emit


@app.command
async def stream(
    name: str,
    /,
    *,
    at_version: int | None = None,
    at_time: str | None = None,
    format: Literal["text", "json"] = "text",
    data_dir: Path | None = None,
) -> None:
    """Replay one stream: its events in order and the command side's state after each.

    --at-version N or --at-time ISO prints only the state then. Exit code 1 for an unknown stream.
    """
    from blackboard.connect import opened_log
    from blackboard.ops import streams

    settings = load_settings(data_dir=data_dir)
    try:
        at = None if at_time is None else streams.parse_time(at_time)
        if at is not None and at_version is not None:
            raise ValueError("give --at-version or --at-time, not both")
        async with opened_log(settings, postgres_url(settings)) as log:
            replay = await streams.read_stream(log, settings.events_topic, name)
        report: streams.StreamReplay | streams.StreamState = replay
        if at_version is not None:
            report = streams.state_at_version(name, replay.topic, replay.partition, replay.events, at_version)
        elif at is not None:
            report = streams.state_at_time(name, replay.topic, replay.partition, replay.events, at)
    except (ValueError, streams.StreamNotFound) as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        raise SystemExit(1) from None
    if format == "json":
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        Console(highlight=False, soft_wrap=True).print("\n".join(escape(line) for line in streams.text_lines(report)))


@app.command
async def topics(*, format: Format = "text", data_dir: Path | None = None) -> None:
    """Partitions, exact end offsets, sizes in bytes and configuration of the events, commands and results topics.

    Sizes are known on the PostgreSQL log (key, value and headers as stored) and shown as 'unknown' on Kafka.
    """
    from blackboard.connect import opened_log
    from blackboard.ops.topics import topics as topics_of

    settings = load_settings(data_dir=data_dir)
    async with opened_log(settings, postgres_url(settings)) as log:
        report = await topics_of(log, settings)
    show(report, format, topics_table)


@app.command
async def lag(*, sample_seconds: float = 1.0, format: Format = "text", data_dir: Path | None = None) -> None:
    """The projection's stored next offset, the log's end offset, the lag and the time to catch up, per partition.

    The projection's rate comes from reading its stored offsets twice, --sample-seconds apart (0: no estimate).
    """
    from blackboard.connect import opened_log, read_pool
    from blackboard.ops.lag import lag as lag_of

    settings = load_settings(data_dir=data_dir)
    url = postgres_url(settings)
    async with opened_log(settings, url) as log, read_pool(settings, url) as pool:
        report = await lag_of(log, pool, settings, sample_seconds=max(0.0, sample_seconds))
    show(report, format, lag_table)


@app.command
async def partitions(
    *urls: str, api_key: Annotated[str | None, cyclopts.Parameter(env_var="BLACKBOARD_API_KEY")] = None,
    format: Format = "text",
) -> None:
    """Who decides which partition: member, writer epoch, restored-at offset, queue depth, last snapshot.

    Asks GET /v1/partitions of each running command process given by URL (default: BLACKBOARD_URL, else
    http://BLACKBOARD_HOST:BLACKBOARD_PORT, which is http://127.0.0.1:8080 unless set).
    """
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    reports = []
    async with httpx.AsyncClient(headers=headers, timeout=10.0) as client:
        for url in urls or (server_url(),):
            response = await client.get(url.rstrip("/") + "/v1/partitions")
            if response.status_code != 200:
                console.print(f"[red]{escape(url)}: {response.status_code} {escape(response.text[:200])}[/]")
                raise SystemExit(1)
            reports.append({"url": url, **response.json()})
    if format == "json":
        sys.stdout.write(msgspec.json.encode(reports).decode() + "\n")
        return
    shown = table("partitions decided", "partition", "member", "epoch", "restored at", "next offset",
                  "commands offset", "queue", "streams", "last snapshot", "url")
    for report in reports:
        for p in report["partitions"]:
            snapshot = p.get("last_snapshot") or {}
            shown.add_row(str(p["partition"]), escape(str(p["member"])), str(p["epoch"]), str(p["restored_at"]),
                          str(p["next_offset"]), str(p["commands_offset"]), str(p["queue_depth"]), str(p["streams"]),
                          str(snapshot.get("events_offset", "none")), escape(report["url"]))
    Console(highlight=False).print(shown)
