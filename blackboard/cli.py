"""The ``blackboard`` command: run the service, read the log, measure."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import cyclopts
import msgspec
from rich.console import Console

from blackboard import __version__
from blackboard.config import Settings

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
