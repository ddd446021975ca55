"""The ``blackboard`` command: run the service, read the log, inspect and verify it, measure."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import cyclopts
import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from blackboard import __version__
from blackboard.config import Settings

if TYPE_CHECKING:
    from blackboard import ops

app = cyclopts.App(name="blackboard", version=__version__,
                   help="Blackboard: an event-sourced state store for multi-agent pipelines.")
console = Console(stderr=True)


def _settings(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _postgres_url(settings: Settings) -> str:
    if settings.postgres_url is not None:
        return settings.postgres_url.get_secret_value()
    from blackboard.embedded import start_embedded_postgres

    return start_embedded_postgres(settings.data_dir)


@app.command
def up(
    *,
    data_dir: Path | None = None,
    host: str | None = None,
    port: int | None = None,
    role: Annotated[list[str] | None, cyclopts.Parameter(help="command, projector, query (default: all)")] = None,
) -> None:
    """Run Blackboard in one process: command API, decider, projector and query API.

    With no BLACKBOARD_POSTGRES_URL an embedded PostgreSQL keeps its data in --data-dir; with no
    BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS the log is a PostgreSQL table; Redis only when configured.
    """
    import uvicorn

    from blackboard.app import Runtime, build_app, roles_from
    from blackboard.logs import configure_logging

    configure_logging()
    settings = _settings(data_dir=data_dir, host=host, port=port)
    runtime = Runtime(settings, _postgres_url(settings), roles=roles_from(role or []))
    engine = "kafka" if settings.kafka_bootstrap_servers else "postgres"
    console.print(f"[bold]blackboard {__version__}[/] log={engine} roles={','.join(sorted(runtime.roles))} "
                  f"→ http://{settings.host}:{settings.port}  (OpenAPI: /schema)")
    uvicorn.run(build_app(runtime), host=settings.host, port=settings.port, log_level="warning",
                timeout_graceful_shutdown=5)


@app.command
async def tail(
    *,
    from_beginning: bool = False,
    follow: bool = False,
    stream: str | None = None,
    format: Literal["text", "json"] = "text",
    data_dir: Path | None = None,
) -> None:
    """Print the decoded events of the log (either engine), optionally only one stream."""
    from blackboard.app import open_log
    from blackboard.events.codec import UndecodableRecord, from_record

    settings = _settings(data_dir=data_dir)
    log = open_log(settings, _postgres_url(settings))
    await log.start()
    out = Console(highlight=False, soft_wrap=True)
    try:
        partitions = await log.partition_count(settings.events_topic)
        reader = log.reader(settings.events_topic)
        ends = {p: await log.end_offset(settings.events_topic, p) for p in range(partitions)}
        for p in range(partitions):
            await reader.seek(p, 0 if from_beginning else ends[p])
        seen = dict.fromkeys(range(partitions), -1)
        while True:
            records = await reader.read(max_records=1000, timeout=1.0)
            for rec in records:
                seen[rec.partition] = rec.offset
                try:
                    env = from_record(rec).envelope
                except UndecodableRecord as exc:
                    out.print(f"[red]{rec.partition}:{rec.offset} undecodable: {exc}[/]")
                    continue
                if stream is None or env.stream == stream:
                    _print_event(out, rec.partition, rec.offset, env, format)
            if not follow and all(seen[p] + 1 >= ends[p] for p in ends):
                break
    finally:
        await log.close()


def _print_event(out: Console, partition: int, offset: int, env: Any, format: str) -> None:
    payload = msgspec.json.decode(env.payload)
    if format == "json":
        doc = {f: getattr(env, f) for f in env.__struct_fields__ if f != "payload"}
        doc.update(partition=partition, offset=offset, payload=payload)
        sys.stdout.write(msgspec.json.encode(doc).decode() + "\n")
        return
    out.print(f"[dim]{partition}:{offset}[/] {env.occurred_at:%Y-%m-%d %H:%M:%S} [bold]{env.stream}[/]"
              f"@{env.stream_version} [cyan]{env.type}[/] actor={env.actor} cmd={env.command_id} "
              f"{msgspec.json.encode(payload).decode()}")


@app.command
def bench(
    *,
    clients: int = 16,
    commands: int = 2000,
    projects: int = 20,
    backlog: int = 20000,
    runs: int = 3,
) -> None:
    """Measure the HTTP command path (commands/s, p50/p99) and the projector's events/s on a backlog.

    Starts its own embedded server in a temporary directory; prints how it measured.
    """
    from blackboard.bench import run_bench

    run_bench(clients=clients, commands=commands, projects=projects, backlog=backlog, runs=runs)


# ── operator commands ───────────────────────────────────────────────────────────────────

Format = Literal["text", "json"]
R = TypeVar("R", bound=msgspec.Struct)
dead_letters_app = cyclopts.App(name="dead-letters", help="Records the projector set aside, with the reason.")
app.command(dead_letters_app)


def _show(report: R, format: Format, render: Callable[[R], Table]) -> None:
    """``report`` as one JSON document on stdout, or rendered for a terminal."""
    if format == "json":
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        Console(highlight=False).print(render(report))


@app.command
async def topics(*, format: Format = "text", data_dir: Path | None = None) -> None:
    """Partitions and exact end offsets of the events, commands and command-results topics."""
    from blackboard import ops

    settings = _settings(data_dir=data_dir)
    async with ops.opened_log(settings, _postgres_url(settings)) as log:
        report = await ops.topics(log, settings)
    _show(report, format, _topics_table)


@app.command
async def lag(*, format: Format = "text", data_dir: Path | None = None) -> None:
    """The projection's stored next offset, the log's end offset and the lag, per partition of events."""
    from blackboard import ops

    settings = _settings(data_dir=data_dir)
    url = _postgres_url(settings)
    async with ops.opened_log(settings, url) as log, ops.read_pool(settings, url) as pool:
        report = await ops.lag(log, pool, settings)
    _show(report, format, _lag_table)


@dead_letters_app.command(name="list")
async def dead_letters_list(*, limit: int = 50, format: Format = "text", data_dir: Path | None = None) -> None:
    """The newest dead letters: id, position, reason, when."""
    from blackboard import ops

    settings = _settings(data_dir=data_dir)
    async with ops.read_pool(settings, _postgres_url(settings)) as pool:
        report = await ops.dead_letters(pool, limit=limit)
    _show(report, format, _dead_letters_table)


@dead_letters_app.command(name="show")
async def dead_letters_show(id: int, /, *, format: Format = "text", data_dir: Path | None = None) -> None:
    """One dead letter with its headers, key and value (text when UTF-8, else hex)."""
    from blackboard import ops

    settings = _settings(data_dir=data_dir)
    async with ops.read_pool(settings, _postgres_url(settings)) as pool:
        detail = await ops.dead_letter(pool, id)
    if detail is None:
        console.print(f"[red]no dead letter with id {id}[/]")
        raise SystemExit(1)
    _show(detail, format, _dead_letter_table)


@app.command
async def verify(*, timeout: float = 60.0, format: Format = "text", data_dir: Path | None = None) -> None:
    """Rebuild the read models from offset 0 in a temporary schema and compare them with the live ones.

    Exit code 0 when every table is equal, 1 otherwise (or when a side did not catch up in --timeout seconds).
    """
    from blackboard import ops

    settings = _settings(data_dir=data_dir)
    url = _postgres_url(settings)
    try:
        async with ops.opened_log(settings, url) as log, ops.read_pool(settings, url) as pool:
            report = await ops.verify(log, pool, url, settings, timeout=timeout)
    except ops.VerifyTimeout as exc:
        console.print(f"[red]{exc}[/]")
        raise SystemExit(1) from exc
    _show(report, format, _verify_table)
    if not report.equal:
        raise SystemExit(1)


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name in columns:
        table.add_column(name, justify="right" if name in _NUMERIC else "left")
    return table


_NUMERIC = frozenset({"id", "partition", "offset", "end offset", "next offset", "lag", "live rows", "rebuilt rows"})


def _topics_table(report: ops.TopicsReport) -> Table:
    table = _table(f"topics ({report.engine} log), {report.total} records", "topic", "partition", "end offset")
    for topic in report.topics:
        if not topic.exists:
            table.add_row(escape(topic.name), "—", "missing", end_section=True)
        for p in topic.partitions:
            table.add_row(escape(topic.name), str(p.partition), str(p.end_offset))
        if topic.exists:
            table.add_row(f"[bold]{escape(topic.name)}[/]", "all", f"[bold]{topic.total}[/]", end_section=True)
    return table


def _lag_table(report: ops.LagReport) -> Table:
    table = _table(f"projection {report.projection!r} on {escape(report.topic)}", "partition", "next offset",
                   "end offset", "lag")
    for p in report.partitions:
        stored = "—" if p.next_offset is None else str(p.next_offset)
        table.add_row(str(p.partition), stored, str(p.end_offset), str(p.lag))
    table.add_row("[bold]total[/]", "", "", f"[bold]{report.total}[/]")
    return table


def _dead_letters_table(report: ops.DeadLettersReport) -> Table:
    table = _table(f"{len(report.dead_letters)} of {report.total} dead letters, newest first",
                   "id", "position", "reason", "created at")
    for d in report.dead_letters:
        table.add_row(str(d.id), escape(f"{d.topic}/{d.partition}/{d.offset}"), escape(d.reason),
                      f"{d.created_at:%Y-%m-%d %H:%M:%S}")
    return table


def _dead_letter_table(d: ops.DeadLetterDetail) -> Table:
    table = _table(f"dead letter {d.id}", "field", "value")
    for name, value in (("projection", d.projection), ("position", f"{d.topic}/{d.partition}/{d.offset}"),
                        ("reason", d.reason), ("created at", f"{d.created_at:%Y-%m-%d %H:%M:%S %z}"),
                        ("headers", msgspec.json.encode(d.headers).decode()),
                        ("key", _bytes_text(d.key)), ("value", _bytes_text(d.value))):
        table.add_row(name, escape(value))
    return table


def _bytes_text(data: ops.Bytes | None) -> str:
    return "—" if data is None else f"({data.encoding}) {data.data}"


def _verify_table(report: ops.VerifyReport) -> Table:
    verdict = "[green]all equal[/]" if report.equal else "[red]DIFFERENT[/]"
    table = _table(f"read models vs a rebuild from offset 0: {verdict}", "table", "result", "live rows",
                   "rebuilt rows", "differing keys")
    for t in report.tables:
        result = "[green]OK[/]" if t.equal else "[red]DIFFERENT[/]"
        keys = ", ".join("/".join(str(part) for part in key) for key in t.differing_keys)
        table.add_row(t.table, result, str(t.live_rows), str(t.rebuilt_rows), escape(keys))
    if any(report.live_offsets.get(p, 0) > end for p, end in report.targets.items()):
        table.caption = ("the live projection moved past the rebuilt offsets meanwhile: "
                         "rows changed since may differ for that reason alone")
    return table


def main() -> None:
    app()


if __name__ == "__main__":
    main()
