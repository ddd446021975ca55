"""Repairing the read models: ``dead-letters``, ``replay`` (rebuild, dry run, generations) and ``verify``."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Literal

import cyclopts
from rich.markup import escape

from blackboard.cli.base import Format, app, console, load_settings, postgres_url, show
from blackboard.cli.render import (
    Generations,
    dead_letter_table,
    dead_letters_table,
    dry_run_table,
    generations_table,
    replay_table,
    resolution_table,
    verify_table,
)

dead_letters_app = cyclopts.App(name="dead-letters", help="Records the projector set aside, with the reason.")
app.command(dead_letters_app)

DeadLetterStatus = Literal["open", "held", "applied", "skipped"]


@dead_letters_app.command(name="list")
async def dead_letters_list(*, limit: int = 50, status: DeadLetterStatus | None = None, format: Format = "text",
                            data_dir: Path | None = None) -> None:
    """The newest dead letters: id, position, stream, status, reason, when."""
    from blackboard.connect import read_pool
    from blackboard.ops.dead_letters import dead_letters

    settings = load_settings(data_dir=data_dir)
    async with read_pool(settings, postgres_url(settings)) as pool:
        report = await dead_letters(pool, limit=limit, status=status)
    show(report, format, dead_letters_table)


@dead_letters_app.command(name="retry")
async def dead_letters_retry(id: int, /, *, format: Format = "text", data_dir: Path | None = None) -> None:
    """Apply dead letter ID again with today's code, then the letters its stream held behind it, in order.

    Exit code 1 when it fails again (it stays open with the new reason) or cannot be retried.
    """
    await _resolve(id, skip=False, format=format, data_dir=data_dir)


@dead_letters_app.command(name="skip")
async def dead_letters_skip(id: int, /, *, reason: str, operator: str | None = None, format: Format = "text",
                            data_dir: Path | None = None) -> None:
    """Give up on dead letter ID (its stream only takes its version) and release the letters held behind it.

    The decision is recorded in the log after the skipped record, with --reason and --operator (default:
    the login name), so that rebuilds, verify and the command side's restore apply it too; the stream
    then takes commands again.
    """
    await _resolve(id, skip=True, format=format, data_dir=data_dir, operator=operator or getpass.getuser(),
                   reason=reason)


async def _resolve(id_: int, *, skip: bool, format: Format, data_dir: Path | None, operator: str = "",
                   reason: str = "") -> None:
    from blackboard.connect import resolve_dead_letter
    from blackboard.projector.dead_letters import DeadLetterError

    settings = load_settings(data_dir=data_dir)
    try:
        outcome = await resolve_dead_letter(settings, postgres_url(settings), id_, skip=skip, operator=operator,
                                            reason=reason)
    except DeadLetterError as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        raise SystemExit(1) from exc
    show(outcome, format, resolution_table)
    if outcome.open:
        raise SystemExit(1)


@dead_letters_app.command(name="show")
async def dead_letters_show(id: int, /, *, format: Format = "text", data_dir: Path | None = None) -> None:
    """One dead letter with its headers, key and value (text when UTF-8, else hex)."""
    from blackboard.connect import read_pool
    from blackboard.ops.dead_letters import dead_letter

    settings = load_settings(data_dir=data_dir)
    async with read_pool(settings, postgres_url(settings)) as pool:
        detail = await dead_letter(pool, id)
    if detail is None:
        console.print(f"[red]no dead letter with id {id}[/]")
        raise SystemExit(1)
    show(detail, format, dead_letter_table)


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

    from blackboard.connect import log_factory, opened_log, quiet_logging
    from blackboard.projector import replay as replaying
    from blackboard.projector.generations import GenerationError

    settings = load_settings(data_dir=data_dir)
    url = postgres_url(settings)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:>10,.0f} events/s"), TimeRemainingColumn(),
               TextColumn("[dim]{task.fields[positions]}"))
    with Progress(*columns, console=console, disable=format != "text" or not console.is_terminal) as bar:
        task = bar.add_task("catch-up", total=None, rate=0.0, positions="")

        def progress(p: replaying.Progress) -> None:
            positions = " ".join(f"{k}:{v}" for k, v in sorted(p.positions.items()))
            bar.update(task, description=p.phase, completed=p.done, total=p.total, rate=p.events_per_second,
                       positions=positions)

        try:
            async with opened_log(settings, url) as log:
                report = await replaying.replay(log, url, base=settings.read_schema, topic=settings.events_topic,
                                                batch_size=batch_size, swap=swap,
                                                handover_seconds=handover_seconds, on_progress=progress,
                                                open_log=log_factory(settings, url), workers=workers,
                                                worker_setup=quiet_logging)
        except GenerationError as exc:
            console.print(f"[red]{escape(str(exc))}[/]")
            raise SystemExit(1) from exc
    show(report, format, replay_table)


@replay_app.command(name="dry-run")
async def replay_dry_run(*, batch_size: int = 10_000, workers: int | None = None, format: Format = "text",
                         data_dir: Path | None = None) -> None:
    """Fold the whole log with today's projection code into a scratch schema, compare it with the live
    read models table by table, report the dead letters it would make, and drop it: nothing live changes.

    Exit code 0 when every table is equal, 1 otherwise.
    """
    from blackboard.connect import dry_run, opened_log

    settings = load_settings(data_dir=data_dir)
    url = postgres_url(settings)
    async with opened_log(settings, url) as log:
        report = await dry_run(log, settings, url, batch_size=batch_size, workers=workers)
    show(report, format, dry_run_table)
    if not report.equal:
        raise SystemExit(1)


@replay_app.command(name="list")
async def replay_list(*, format: Format = "text", data_dir: Path | None = None) -> None:
    """Every generation of the read models: number, schema, state (building, live, retired, abandoned)."""
    import asyncpg

    from blackboard.projector import generations

    settings = load_settings(data_dir=data_dir)
    conn = await asyncpg.connect(postgres_url(settings))
    try:
        report = Generations(await generations.listing(conn, settings.read_schema))
    finally:
        await conn.close()
    show(report, format, generations_table)


@replay_app.command(name="drop")
async def replay_drop(*, building: bool = False, format: Format = "text", data_dir: Path | None = None) -> None:
    """Drop the schemas of retired and abandoned generations (--building: also of unfinished ones;
    refused while a rebuild runs). The live generation is never dropped."""
    import asyncpg

    from blackboard.projector import generations

    settings = load_settings(data_dir=data_dir)
    conn = await asyncpg.connect(postgres_url(settings))
    try:
        if building and not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext('blackboard.replay:' || $1))",
                                                settings.read_schema):
            console.print("[red]a rebuild is running; its schema is not dropped[/]")
            raise SystemExit(1)
        report = Generations(await generations.drop(conn, settings.read_schema, building_too=building))
    finally:
        await conn.close()
    show(report, format, generations_table)


@app.command
async def verify(*, timeout: float = 60.0, format: Format = "text", data_dir: Path | None = None) -> None:
    """Rebuild the read models from offset 0 in a temporary schema and compare them with the live ones.

    Exit code 0 when every table is equal, 1 otherwise (or when a side did not catch up in --timeout seconds).
    """
    from blackboard.connect import opened_log, read_pool
    from blackboard.ops import verify as verifying

    settings = load_settings(data_dir=data_dir)
    url = postgres_url(settings)
    try:
        async with opened_log(settings, url) as log, read_pool(settings, url) as pool:
            report = await verifying.verify(log, pool, url, settings, timeout=timeout)
    except verifying.VerifyTimeout as exc:
        console.print(f"[red]{exc}[/]")
        raise SystemExit(1) from exc
    show(report, format, verify_table)
    if not report.equal:
        raise SystemExit(1)
