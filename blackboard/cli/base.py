"""The ``blackboard`` application and what its commands share: settings, the database URL, output."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import cyclopts
import msgspec
from rich.console import Console
from rich.table import Table

from blackboard import __version__
from blackboard.cli.failures import CliError
from blackboard.config import Settings

app = cyclopts.App(name="blackboard", version=__version__,
                   help="Blackboard: an event-sourced state store for multi-agent pipelines.")
#: Messages and progress go to stderr: stdout is each command's output, a table or a JSON document.
console = Console(stderr=True)

Format = Literal["text", "json"]
#: ``--url`` of a command that asks a running server (``server_url`` when not given).
ServerUrl = Annotated[str | None, cyclopts.Parameter(
    env_var="BLACKBOARD_URL", help="the service's base URL (default: http://BLACKBOARD_HOST:BLACKBOARD_PORT)")]
R = TypeVar("R", bound=msgspec.Struct)


def load_settings(**overrides: Any) -> Settings:
    """The settings from the environment, with the flags that were given on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def postgres_url(settings: Settings, *, create: bool = False) -> str:
    """The configured PostgreSQL, else the embedded one under ``data_dir`` (started when it is not running).

    Only with ``create`` is an embedded server made where there is none: a command that reads what a
    running Blackboard wrote, run from the wrong folder, says so instead of starting an empty one.
    """
    if settings.postgres_url is not None:
        return settings.postgres_url.get_secret_value()
    if not create and not (settings.data_dir / "postgres" / "PG_VERSION").is_file():
        raise CliError(f"no PostgreSQL: BLACKBOARD_POSTGRES_URL is not set and there is no embedded PostgreSQL "
                       f"under {settings.data_dir.resolve()} (BLACKBOARD_DATA_DIR or --data-dir); run this where "
                       "`blackboard up` keeps its data, or set one of them")
    from blackboard.embedded import start_embedded_postgres

    return start_embedded_postgres(settings.data_dir)


def server_url(given: str | None = None) -> str:
    """The base URL of the running server a client command asks: ``given`` (``--url``), else
    ``BLACKBOARD_URL``, else ``http://BLACKBOARD_HOST:BLACKBOARD_PORT`` (a wildcard host asked on loopback)."""
    if given:
        return given.rstrip("/")
    if os.environ.get("BLACKBOARD_URL"):
        return os.environ["BLACKBOARD_URL"].rstrip("/")
    settings = load_settings()
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.host, settings.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.port}"


def show(report: R, format: Format, render: Callable[[R], Table]) -> None:
    """``report`` as one JSON document on stdout, or rendered for a terminal."""
    if format == "json":
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        Console(highlight=False).print(render(report))


def table(title: str, *columns: str) -> Table:
    """A table titled on the left; the columns that hold numbers are right-aligned."""
    result = Table(title=title, title_justify="left")
    for name in columns:
        result.add_column(name, justify="right" if name in _NUMERIC else "left")
    return result


_NUMERIC = frozenset({"epoch", "restored at", "commands offset", "queue", "streams",
                      "id", "partition", "offset", "end offset", "next offset", "lag", "live rows", "rebuilt rows",
                      "bytes", "events/s", "eta"})
