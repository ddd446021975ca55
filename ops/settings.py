"""The settings the operator tools read, as a protocol: the wiring's settings satisfy it without being imported."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pydantic import SecretStr


class OpsSettings(Protocol):
    """What the operator tools read of the configuration (``blackboard.config.Settings`` has all of it)."""

    @property
    def events_topic(self) -> str: ...

    @property
    def commands_topic(self) -> str: ...

    @property
    def results_topic(self) -> str: ...

    @property
    def read_schema(self) -> str:
        """Base name of the read-model schemas; the live generation's is resolved from it."""
        ...

    @property
    def partitions(self) -> int: ...

    @property
    def kafka_bootstrap_servers(self) -> str | None: ...

    @property
    def postgres_url(self) -> SecretStr | None: ...

    @property
    def data_dir(self) -> Path: ...

    @property
    def redis_url(self) -> SecretStr | None: ...

    @property
    def redis_prefix(self) -> str: ...

    @property
    def cache_ttl_seconds(self) -> int: ...
