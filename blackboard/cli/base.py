"""The ``blackboard`` application and what its commands share: settings, the database URL, output."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import cyclopts
import msgspec
from rich.console import Console
from rich.table import Table

from blackboard import __version__
from blackboard.config import Settings

app = cyclopts.App(name="blackboard", version=__version__,
                   help="Blackboard: an event-sourced state store for multi-agent pipelines.")
#: Messages and progress go to stderr: stdout is each command's output, a table or a JSON document.
console = Console(stderr=True)

Format = Literal["text", "json"]
R = TypeVar("R", bound=msgspec.Struct)


def load_settings(**overrides: Any) -> Settings:
    """The settings from the environment, with the flags that were given on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def postgres_url(settings: Settings) -> str:
    """The configured PostgreSQL, else the embedded one under ``data_dir`` (started when it is not running)."""
    if settings.postgres_url is not None:
        return settings.postgres_url.get_secret_value()
    from blackboard.embedded import start_embedded_postgres

    return start_embedded_postgres(settings.data_dir)


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
