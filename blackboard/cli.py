"""The ``blackboard`` command: run the service, read the log, inspect and verify it, measure."""

from __future__ import annotations

import asyncio
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
    from blackboard import doctor as doctor_
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
    grpc_port: Annotated[int | None, cyclopts.Parameter(help="serve the gRPC query API on this port (0: any)")] = None,
    role: Annotated[list[str] | None, cyclopts.Parameter(help="command, projector, query (default: all)")] = None,
) -> None:
    """Run Blackboard in one process: command API, decider, projector and query API.

    With no BLACKBOARD_POSTGRES_URL an embedded PostgreSQL keeps its data in --data-dir; with no
    BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS the log is a PostgreSQL table; Redis only when configured.
    """
    import uvicorn

    from blackboard.app import Runtime, roles_from
    from blackboard.http_app import build_app
    from blackboard.logs import configure_logging
    from blackboard.tracing import configure_tracing

    configure_logging()
    configure_tracing()
    settings = _settings(data_dir=data_dir, host=host, port=port, grpc_port=grpc_port)
    runtime = Runtime(settings, _postgres_url(settings), roles=roles_from(role or []))
    engine = "kafka" if settings.kafka_bootstrap_servers else "postgres"
    console.print(f"[bold]blackboard {__version__}[/] log={engine} roles={','.join(sorted(runtime.roles))} "
                  f"→ http://{settings.host}:{settings.port}  (OpenAPI: /schema)"
                  + (f", gRPC {settings.host}:{settings.grpc_port}" if settings.grpc_port is not None else ""))
    # A stopping process lets its requests finish; a routed command may wait for a partition that is
    # changing hands (its own leaving causes that), so it gets its route timeout.
    graceful = 5.0 if settings.decider_mode == "all" else settings.route_timeout_seconds + 5
    uvicorn.run(build_app(runtime), host=settings.host, port=settings.port, log_level="warning",
                timeout_graceful_shutdown=int(graceful))


@app.command
async def tail(
    *,
    from_beginning: bool = False,
    follow: bool = False,
    partition: int | None = None,
    from_offset: Annotated[int | None, cyclopts.Parameter(help="first offset to read (every chosen partition)")] = None,
    to_offset: Annotated[int | None, cyclopts.Parameter(help="stop before this offset (exclusive)")] = None,
    stream: str | None = None,
    type: str | None = None,
    actor: str | None = None,
    correlation_id: str | None = None,
    since: Annotated[str | None, cyclopts.Parameter(help="ISO-8601; occurred_at at or after it")] = None,
    until: Annotated[str | None, cyclopts.Parameter(help="ISO-8601; occurred_at before it")] = None,
    format: Literal["text", "json", "raw"] = "text",
    data_dir: Path | None = None,
) -> None:
    """Print the events of the log (either engine): new ones, a range, or everything, optionally following.

    text is for reading; json is one line per event with partition, offset, every envelope field, the
    payload as stored and, for an older schema version, the upcast payload; raw is one line per record with
    key, headers and value as stored. Undecodable records are always shown, with the reason.
    """
    from blackboard import ops
    from blackboard import tail as tailing
    from blackboard.events.log import UnknownTopic

    settings = _settings(data_dir=data_dir)
    try:
        condition = tailing.Filter(stream, type, actor, correlation_id,
                                   tailing.parse_time(since) if since else None,
                                   tailing.parse_time(until) if until else None)
        if (from_offset or 0) < 0 or (to_offset or 0) < 0:
            raise ValueError("--from-offset and --to-offset must not be negative")
    except ValueError as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        raise SystemExit(1) from exc
    async with ops.opened_log(settings, _postgres_url(settings)) as log:
        try:
            ends = await ops.end_offsets(log, settings.events_topic)
            spans = tailing.plan(ends, partition=partition, from_beginning=from_beginning,
                                 from_offset=from_offset, to_offset=to_offset, follow=follow)
        except (UnknownTopic, ValueError) as exc:
            console.print(f"[red]{escape(str(exc))}[/]")
            raise SystemExit(1) from exc
        await tailing.tail(log, settings.events_topic, spans, condition, _tail_printer(format))


def _tail_printer(format: str) -> Callable[[Any], None]:
    """Write one record to stdout in ``format``, flushed, so that a followed tail can be piped."""
    from blackboard import tail as tailing

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
    from blackboard import ops, streams

    settings = _settings(data_dir=data_dir)
    try:
        at = None if at_time is None else streams.parse_time(at_time)
        if at is not None and at_version is not None:
            raise ValueError("give --at-version or --at-time, not both")
        async with ops.opened_log(settings, _postgres_url(settings)) as log:
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
def bench(
    *,
    clients: int = 16,
    commands: int = 2000,
    projects: int = 20,
    backlog: int = 20000,
    runs: int = 3,
    suite: Literal["commands", "replay", "reads", "claims", "restore", "deciders"] = "commands",
    events: int = 1_000_000,
    batch_size: int = 10_000,
    reads: int = 5000,
    tasks: int = 2000,
    deciders: str = "1,2,3",
    workers: int | None = None,
) -> None:
    """Measure, on its own embedded PostgreSQL in a temporary directory, and print how it measured.

    --suite commands: the HTTP command path (commands/s, p50/p99), the command service without HTTP,
    and the projector's events/s on a backlog. --suite replay: a rebuild of --events events
    (end to end, events/s; --workers processes share the catch-up, by default one per core) beside the raw
    read rate of the log and PostgreSQL's COPY rate.
    --suite reads: --reads project reads with and without Redis, batch gets of 100 shots (reads/s,
    p50/p99), and the freshness lag from a command's answer to a read showing it (p50/p99).
    --suite claims: --tasks tasks claimed by 10 and by 50 workers (claims/s, claim p50/p99).
    --suite restore: a partition owner's restore over --events events in one partition, from the full log,
    from a snapshot at the end, and from a snapshot at 90% plus the tail (seconds, events/s); on Kafka when
    BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS is set.
    --suite deciders: --deciders counts of decider processes (default 1,2,3) sharing the partitions; 64 projects,
    --commands add_cost per run from --clients clients to random processes (commands/s, p50/p99), in total and
    split into the fast path (sent to the partition's owner) and the routed one; on Kafka when
    BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS is set.
    """
    # --suite deciders: fast path vs routed path (blackboard/bench_deciders.py).
    if suite == "deciders":
        from blackboard.bench_deciders import run_deciders_bench

        run_deciders_bench(deciders=deciders, clients=clients, commands=commands, runs=runs)
        return
    # --suite restore: partition snapshots (blackboard/bench_restore.py).
    if suite == "restore":
        from blackboard.bench_restore import run_restore_bench

        run_restore_bench(events=events, runs=runs)
        return
    if suite == "claims":
        from blackboard.bench_claims import run_claims_bench

        run_claims_bench(tasks=tasks, runs=runs)
        return
    if suite == "reads":
        from blackboard.bench import run_reads_bench

        run_reads_bench(clients=clients, reads=reads, projects=projects, runs=runs)
        return
    if suite == "replay":
        from blackboard.bench_replay import run_replay_bench

        run_replay_bench(events=events, runs=runs, batch_size=batch_size, workers=workers)
        return
    from blackboard.bench import run_bench

    run_bench(clients=clients, commands=commands, projects=projects, backlog=backlog, runs=runs)


@app.command
def worker(
    *,
    url: str = "http://127.0.0.1:8080",
    node: str,
    skills: list[str] | None = None,
    capacity: int = 1,
    ttl_seconds: int = 30,
    api_key: Annotated[str | None, cyclopts.Parameter(env_var="BLACKBOARD_API_KEY")] = None,
) -> None:
    """Run a demo worker: register --node, heartbeat, claim tasks and run them (each sleeps payload.seconds).

    A starting point for a real one: ``blackboard.worker.Worker`` with your own handler.
    """
    import socket

    from blackboard.worker import Worker, sleeping_handler

    w = Worker(url, node, sleeping_handler, skills=skills or [], capacity=capacity, ttl_seconds=ttl_seconds,
               hostname=socket.gethostname(), api_key=api_key)
    console.print(f"worker {node} → {url} (skills: {', '.join(w.skills) or 'none'}, capacity {capacity})")
    asyncio.run(w.run())


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
    """Partitions, exact end offsets, sizes in bytes and configuration of the events, commands and results topics.

    Sizes are known on the PostgreSQL log (key, value and headers as stored) and shown as 'unknown' on Kafka.
    """
    from blackboard import ops

    settings = _settings(data_dir=data_dir)
    async with ops.opened_log(settings, _postgres_url(settings)) as log:
        report = await ops.topics(log, settings)
    _show(report, format, _topics_table)


@app.command
async def lag(*, sample_seconds: float = 1.0, format: Format = "text", data_dir: Path | None = None) -> None:
    """The projection's stored next offset, the log's end offset, the lag and the time to catch up, per partition.

    The projection's rate comes from reading its stored offsets twice, --sample-seconds apart (0: no estimate).
    """
    from blackboard import ops

    settings = _settings(data_dir=data_dir)
    url = _postgres_url(settings)
    async with ops.opened_log(settings, url) as log, ops.read_pool(settings, url) as pool:
        report = await ops.lag(log, pool, settings, sample_seconds=max(0.0, sample_seconds))
    _show(report, format, _lag_table)


@app.command
async def partitions(
    *urls: str, api_key: str | None = None, format: Format = "text",
) -> None:
    """Who decides which partition: member, writer epoch, restored-at offset, queue depth, last snapshot.

    Asks GET /v1/partitions of each running command process given by URL (default http://127.0.0.1:8080).
    """
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    reports = []
    async with httpx.AsyncClient(headers=headers, timeout=10.0) as client:
        for url in urls or ("http://127.0.0.1:8080",):
            response = await client.get(url.rstrip("/") + "/v1/partitions")
            if response.status_code != 200:
                console.print(f"[red]{escape(url)}: {response.status_code} {escape(response.text[:200])}[/]")
                raise SystemExit(1)
            reports.append({"url": url, **response.json()})
    if format == "json":
        sys.stdout.write(msgspec.json.encode(reports).decode() + "\n")
        return
    table = _table("partitions decided", "partition", "member", "epoch", "restored at", "next offset",
                   "commands offset", "queue", "streams", "last snapshot", "url")
    for report in reports:
        for p in report["partitions"]:
            snapshot = p.get("last_snapshot") or {}
            table.add_row(str(p["partition"]), escape(str(p["member"])), str(p["epoch"]), str(p["restored_at"]),
                          str(p["next_offset"]), str(p["commands_offset"]), str(p["queue_depth"]), str(p["streams"]),
                          str(snapshot.get("events_offset", "none")), escape(report["url"]))
    Console(highlight=False).print(table)


DeadLetterStatus = Literal["open", "held", "applied", "skipped"]


@dead_letters_app.command(name="list")
async def dead_letters_list(*, limit: int = 50, status: DeadLetterStatus | None = None, format: Format = "text",
                            data_dir: Path | None = None) -> None:
    """The newest dead letters: id, position, stream, status, reason, when."""
    from blackboard import ops

    settings = _settings(data_dir=data_dir)
    async with ops.read_pool(settings, _postgres_url(settings)) as pool:
        report = await ops.dead_letters(pool, limit=limit, status=status)
    _show(report, format, _dead_letters_table)


@dead_letters_app.command(name="retry")
async def dead_letters_retry(id: int, /, *, format: Format = "text", data_dir: Path | None = None) -> None:
    """Apply dead letter ID again with today's code, then the letters its stream held behind it, in order.

    Exit code 1 when it fails again (it stays open with the new reason) or cannot be retried.
    """
    await _resolve(id, skip=False, format=format, data_dir=data_dir)


@dead_letters_app.command(name="skip")
async def dead_letters_skip(id: int, /, *, format: Format = "text", data_dir: Path | None = None) -> None:
    """Give up on dead letter ID (its stream only takes its version) and release the letters held behind it."""
    await _resolve(id, skip=True, format=format, data_dir=data_dir)


async def _resolve(id_: int, *, skip: bool, format: Format, data_dir: Path | None) -> None:
    from blackboard import ops
    from blackboard.projector.runtime import DeadLetterError

    settings = _settings(data_dir=data_dir)
    try:
        outcome = await ops.resolve_dead_letter(settings, _postgres_url(settings), id_, skip=skip)
    except DeadLetterError as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        raise SystemExit(1) from exc
    _show(outcome, format, _resolution_table)
    if outcome.open:
        raise SystemExit(1)


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


replay_app = cyclopts.App(name="replay", help="Rebuild the read models from the log into a new generation.")
app.command(replay_app)


@replay_app.default
async def replay(*, batch_size: int = 10_000, swap: bool = True, handover_seconds: float = 3.0,
                 workers: int | None = None, format: Format = "text", data_dir: Path | None = None) -> None:
    """Rebuild the read models from offset 0 into a new schema, follow the tail, then swap atomically.

    Reads answer from the live schema until the swap. Ctrl-C leaves the live schema untouched and
    the partial one marked abandoned ('blackboard replay drop' removes it). With --no-swap the new
    generation is built and left beside the live one. --workers: how many processes share the
    catch-up, each folding some of the partitions (default: one per core, from 100,000 records).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from blackboard import ops
    from blackboard.projector import replay as replaying
    from blackboard.projector.generations import GenerationError

    settings = _settings(data_dir=data_dir)
    url = _postgres_url(settings)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:>10,.0f} events/s"), TimeRemainingColumn(),
               TextColumn("[dim]{task.fields[positions]}"))
    with Progress(*columns, console=console, disable=format != "text" or not console.is_terminal) as bar:
        task = bar.add_task("catch-up", total=None, rate=0.0, positions="")

        def show(p: replaying.Progress) -> None:
            positions = " ".join(f"{k}:{v}" for k, v in sorted(p.positions.items()))
            bar.update(task, description=p.phase, completed=p.done, total=p.total, rate=p.events_per_second,
                       positions=positions)

        try:
            async with ops.opened_log(settings, url) as log:
                report = await replaying.replay(log, url, base=settings.read_schema, topic=settings.events_topic,
                                                batch_size=batch_size, swap=swap,
                                                handover_seconds=handover_seconds, on_progress=show,
                                                open_log=ops.log_factory(settings, url), workers=workers,
                                                worker_setup=ops.quiet_logging)
        except GenerationError as exc:
            console.print(f"[red]{escape(str(exc))}[/]")
            raise SystemExit(1) from exc
    _show(report, format, _replay_table)


@replay_app.command(name="dry-run")
async def replay_dry_run(*, batch_size: int = 10_000, workers: int | None = None, format: Format = "text",
                         data_dir: Path | None = None) -> None:
    """Fold the whole log with today's projection code into a scratch schema, compare it with the live
    read models table by table, report the dead letters it would make, and drop it: nothing live changes.

    Exit code 0 when every table is equal, 1 otherwise.
    """
    from blackboard import ops

    settings = _settings(data_dir=data_dir)
    url = _postgres_url(settings)
    async with ops.opened_log(settings, url) as log:
        report = await ops.dry_run(log, settings, url, batch_size=batch_size, workers=workers)
    _show(report, format, _dry_run_table)
    if not report.equal:
        raise SystemExit(1)


@replay_app.command(name="list")
async def replay_list(*, format: Format = "text", data_dir: Path | None = None) -> None:
    """Every generation of the read models: number, schema, state (building, live, retired, abandoned)."""
    import asyncpg

    from blackboard.projector import generations

    settings = _settings(data_dir=data_dir)
    conn = await asyncpg.connect(_postgres_url(settings))
    try:
        report = Generations(await generations.listing(conn, settings.read_schema))
    finally:
        await conn.close()
    _show(report, format, _generations_table)


@replay_app.command(name="drop")
async def replay_drop(*, building: bool = False, format: Format = "text", data_dir: Path | None = None) -> None:
    """Drop the schemas of retired and abandoned generations (--building: also of unfinished ones;
    refused while a rebuild runs). The live generation is never dropped."""
    import asyncpg

    from blackboard.projector import generations

    settings = _settings(data_dir=data_dir)
    conn = await asyncpg.connect(_postgres_url(settings))
    try:
        if building and not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext('blackboard.replay:' || $1))",
                                                settings.read_schema):
            console.print("[red]a rebuild is running; its schema is not dropped[/]")
            raise SystemExit(1)
        report = Generations(await generations.drop(conn, settings.read_schema, building_too=building))
    finally:
        await conn.close()
    _show(report, format, _generations_table)


class Generations(msgspec.Struct, frozen=True):
    generations: list[Any]


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


@app.command
async def doctor(*, timeout: float = 3.0, stuck_seconds: float = 60.0, format: Format = "text",
                 data_dir: Path | None = None) -> None:
    """Check the configuration, the broker, PostgreSQL and Redis, the topics, the migrations and the projection.

    Each check waits at most --timeout seconds; the projection counts as stuck when it has lag and its stored
    offset has not moved for --stuck-seconds. Exit code 1, with the list of problems, when any check fails.
    """
    from pydantic import ValidationError

    from blackboard import doctor as checkup

    try:
        settings = _settings(data_dir=data_dir)
    except ValidationError as exc:
        report = checkup.invalid_settings(exc)
    else:
        report = await checkup.diagnose(settings, _postgres_url(settings), timeout=timeout,
                                        stuck_after=stuck_seconds)
    if format == "json":
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        Console(highlight=False).print(_settings_table(report), _checks_table(report))
    if not report.ok:
        console.print(f"[red]{len(report.problems)} problem(s):[/]")
        for check in report.problems:
            console.print(f"[red]- {escape(check.name)}: {escape(check.detail)}[/]")
        raise SystemExit(1)


_STATUS_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def _settings_table(report: doctor_.DoctorReport) -> Table:
    table = _table("settings (secrets masked)", "setting", "variable", "value", "required")
    for s in report.settings:
        value = "—" if s.value is None else escape(s.value)
        table.add_row(s.name, s.env, value, "required" if s.required else "optional")
    return table


def _checks_table(report: doctor_.DoctorReport) -> Table:
    verdict = "[green]healthy[/]" if report.ok else "[red]PROBLEMS[/]"
    table = _table(f"checks: {verdict}", "check", "status", "detail")
    for c in report.checks:
        style = _STATUS_STYLE[c.status]
        table.add_row(escape(c.name), f"[{style}]{c.status}[/]", escape(c.detail))
    return table


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name in columns:
        table.add_column(name, justify="right" if name in _NUMERIC else "left")
    return table


_NUMERIC = frozenset({"epoch", "restored at", "commands offset", "queue", "streams",
                      "id", "partition", "offset", "end offset", "next offset", "lag", "live rows", "rebuilt rows",
                      "bytes", "events/s", "eta"})


def _topics_table(report: ops.TopicsReport) -> Table:
    table = _table(f"topics ({report.engine} log), {report.total} records", "topic", "partition", "end offset",
                   "bytes", "config")
    for topic in report.topics:
        if not topic.exists:
            table.add_row(escape(topic.name), "—", "missing", "", "", end_section=True)
        for p in topic.partitions:
            table.add_row(escape(topic.name), str(p.partition), str(p.end_offset), _size(p.size_bytes), "")
        if topic.exists:
            config = _config_text(topic.config)
            table.add_row(f"[bold]{escape(topic.name)}[/]", "all", f"[bold]{topic.total}[/]",
                          f"[bold]{_size(topic.size_bytes)}[/]", escape(config), end_section=True)
    return table


def _config_text(config: dict[str, str] | None) -> str:
    return "unknown" if config is None else ", ".join(f"{k}={v}" for k, v in sorted(config.items()))


def _size(size: int | None) -> str:
    return "unknown" if size is None else str(size)


def _lag_table(report: ops.LagReport) -> Table:
    sampled = f", rate over {report.sample_seconds:g} s" if report.sample_seconds else ""
    table = _table(f"projection {report.projection!r} on {escape(report.topic)}{sampled}", "partition",
                   "next offset", "end offset", "lag", "events/s", "eta")
    for p in report.partitions:
        stored = "—" if p.next_offset is None else str(p.next_offset)
        rate = "—" if p.rate is None else f"{p.rate:.1f}"
        table.add_row(str(p.partition), stored, str(p.end_offset), str(p.lag), rate,
                      _eta(p.lag, p.eta_seconds, sampled=bool(report.sample_seconds)))
    table.add_row("[bold]total[/]", "", "", f"[bold]{report.total}[/]", "",
                  f"[bold]{_eta(report.total, report.eta_seconds, sampled=bool(report.sample_seconds))}[/]")
    return table


def _eta(lag: int, seconds: float | None, *, sampled: bool) -> str:
    """``∞`` when the lag will not shrink at the measured rate, ``—`` when no rate was measured."""
    if seconds is None:
        return "∞" if sampled else "—"
    return f"{seconds:.1f} s"


def _replay_table(r: Any) -> Table:
    table = _table(f"generation {r.generation} ({r.schema}): {'live' if r.swapped else 'built, not live'}",
                   "measure", "value")
    for name in ("previous", "records", "applied", "dead_letters", "seconds", "events_per_second", "workers"):
        table.add_row(name, str(getattr(r, name)))
    return table


def _dry_run_table(r: ops.DryRunReport) -> Table:
    table = _table(f"dry run: {r.records} records, {r.applied} applied, {r.dead_letters} dead letters, "
                   f"{r.seconds} s", "table", "live rows", "rebuilt rows", "equal", "differing keys")
    for t in r.tables:
        table.add_row(t.table, str(t.live_rows), str(t.rebuilt_rows), "yes" if t.equal else "[red]no[/]",
                      escape(", ".join(map(str, t.differing_keys))))
    return table


def _generations_table(report: Generations) -> Table:
    table = _table("generations of the read models", "number", "schema", "state", "created", "swapped")
    for g in report.generations:
        table.add_row(str(g.number), g.schema, g.state, f"{g.created_at:%Y-%m-%d %H:%M:%S}",
                      f"{g.swapped_at:%Y-%m-%d %H:%M:%S}" if g.swapped_at else "")
    return table


def _resolution_table(r: Any) -> Table:
    table = _table(f"dead letters of {r.stream or 'an unknown stream'}", "outcome", "ids")
    for name in ("applied", "skipped", "open", "held"):
        table.add_row(name, ", ".join(map(str, getattr(r, name))) or "-")
    return table


def _dead_letters_table(report: ops.DeadLettersReport) -> Table:
    table = _table(f"{len(report.dead_letters)} of {report.total} dead letters, newest first",
                   "id", "position", "stream", "status", "reason", "created at")
    for d in report.dead_letters:
        table.add_row(str(d.id), escape(f"{d.topic}/{d.partition}/{d.offset}"), escape(d.stream or "?"), d.status,
                      escape(d.reason), f"{d.created_at:%Y-%m-%d %H:%M:%S}")
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
    """The ``blackboard`` command. Logs go to stderr, warnings and worse (``up`` logs from info): stdout
    is each command's output, a table or a JSON document another program may read."""
    import logging

    from blackboard.logs import configure_logging

    configure_logging(logging.WARNING)
    app()


if __name__ == "__main__":
    main()
