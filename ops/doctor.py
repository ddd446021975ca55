"""``blackboard doctor``: is this installation able to run, and is it running well?

It checks, each with a short timeout, and says what is wrong rather than stopping at the first
problem: the configuration (every setting, secrets masked), reaching the broker, PostgreSQL and
Redis, the topics' partition counts and replication (``ops/replication.py``), the events topic's
retention, the read-model migrations, and whether the projection is moving.

Note: on the PostgreSQL log, opening the log creates its schema when missing, as every command does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal, TypeVar

import asyncpg
import msgspec
import redis.asyncio as aioredis
from pydantic import BaseModel, SecretStr, ValidationError

from blackboard.events.log import PartitionedLog, UnknownTopic
from blackboard.ops.offsets import PROJECTION
from blackboard.ops.replication import replication_checks
from blackboard.ops.settings import OpsSettings
from blackboard.projector.migrate import migrations, quote_ident

Status = Literal["ok", "warn", "fail", "skip"]
T = TypeVar("T")


class Check(msgspec.Struct, frozen=True):
    name: str
    status: Status
    detail: str


class SettingView(msgspec.Struct, frozen=True):
    """One setting as configured; ``value`` is masked when ``secret``, ``None`` when unset."""

    name: str
    env: str
    value: str | None
    required: bool
    secret: bool
    description: str


class DoctorReport(msgspec.Struct, frozen=True):
    """``ok`` is false when any check failed; ``warn`` and ``skip`` do not fail the report."""

    ok: bool
    settings: list[SettingView]
    checks: list[Check]

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]


async def read_schema_of(settings: OpsSettings, conn: asyncpg.Connection) -> str:
    """The PostgreSQL schema that holds the live read models.

    Note: the one place that answers this, and it may ask the database, so that a schema chosen at
    run time (a rebuild swapped in) can be resolved here without touching the checks.
    """
    del conn  # today the schema is the configured one
    return settings.read_schema


# ── configuration ───────────────────────────────────────────────────────────────────────


def mask(secret: str) -> str:
    """A secret for display: a URL keeps all but its password (and query), anything else is ``***``."""
    scheme, sep, rest = secret.partition("://")
    if not sep or not scheme.replace("+", "").isalnum():
        return "***"
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    path, question, _ = path.partition("?")
    return f"{scheme}://{netloc}{slash}{path}{'?***' if question else ''}"


def settings_view(settings: BaseModel) -> list[SettingView]:
    """Every field of the settings model with its value (secrets masked), whether it is required, and what it is for."""
    views = []
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        secret = "SecretStr" in str(field.annotation)
        shown = None if value is None else str(value)
        if isinstance(value, SecretStr):
            shown = mask(value.get_secret_value())
        views.append(SettingView(name, f"BLACKBOARD_{name.upper()}", shown, field.is_required(), secret,
                                 field.description or ""))
    return views


def invalid_settings(exc: ValidationError) -> DoctorReport:
    """The report when the settings cannot even be built: every invalid variable, none of the other checks."""
    errors = "; ".join(f"BLACKBOARD_{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
    return DoctorReport(False, [], [Check("configuration", "fail", errors)])


def _configuration(settings: OpsSettings) -> Check:
    engine = f"Kafka at {settings.kafka_bootstrap_servers}" if settings.kafka_bootstrap_servers else "PostgreSQL"
    database = "given" if settings.postgres_url is not None else f"embedded under {settings.data_dir}"
    cache = "Redis" if settings.redis_url is not None else "no cache"
    return Check("configuration", "ok", f"log: {engine}; PostgreSQL: {database}; {cache}")


# ── pure verdicts ───────────────────────────────────────────────────────────────────────


def partition_checks(settings: OpsSettings, counts: Mapping[str, int | None]) -> list[Check]:
    """One check per topic from its partition count (``None``: missing).

    The events topic must have ``settings.partitions``; commands and results must have as many as events.
    """
    events = counts.get(settings.events_topic)
    checks = []
    for topic in (settings.events_topic, settings.commands_topic, settings.results_topic):
        count = counts.get(topic)
        expected = settings.partitions if topic == settings.events_topic else events
        name = f"topic {topic}"
        if count is None:
            checks.append(Check(name, "warn", "does not exist yet (`blackboard up` creates it)"))
        elif expected is not None and count != expected:
            whose = "BLACKBOARD_PARTITIONS is" if topic == settings.events_topic else f"{settings.events_topic} has"
            checks.append(Check(name, "fail", f"has {count} partitions; {whose} {expected}"))
        else:
            checks.append(Check(name, "ok", f"{count} partitions"))
    return checks


def retention_problems(config: Mapping[str, str]) -> list[str]:
    """Why a topic with ``config`` could lose records; empty when it keeps every record forever."""
    problems = []
    if config.get("retention.ms") != "-1":
        problems.append(f"retention.ms is {config.get('retention.ms', 'unset (the broker default)')}, not -1")
    if config.get("retention.bytes", "-1") != "-1":
        problems.append(f"retention.bytes is {config['retention.bytes']}, not -1")
    if "compact" in config.get("cleanup.policy", "delete"):
        problems.append(f"cleanup.policy is {config['cleanup.policy']}: compaction drops events")
    return problems


class StoredOffset(msgspec.Struct, frozen=True):
    next_offset: int
    age_seconds: float


def projection_check(ends: Mapping[int, int], stored: Mapping[int, StoredOffset], stuck_after: float) -> Check:
    """``fail`` when a partition has lag and its offset has not moved for ``stuck_after`` seconds.

    A partition with lag and no stored offset at all is a ``warn``: the projector may just be starting.
    """
    lags = {p: end - (stored[p].next_offset if p in stored else 0) for p, end in ends.items()}
    behind = {p: lag for p, lag in lags.items() if lag > 0}
    if not behind:
        return Check("projection", "ok", "caught up (lag 0)")
    stuck = [f"partition {p}: lag {lag}, offset stored {stored[p].age_seconds:.0f} s ago"
             for p, lag in behind.items() if p in stored and stored[p].age_seconds > stuck_after]
    if stuck:
        return Check("projection", "fail", f"stuck for over {stuck_after:g} s: " + "; ".join(stuck))
    unseen = sorted(p for p in behind if p not in stored)
    if unseen:
        return Check("projection", "warn", f"lag {sum(behind.values())}; no offset stored yet for partitions "
                                           f"{unseen}: is a projector running?")
    return Check("projection", "ok", f"lag {sum(behind.values())}, moving")


def missing_migrations(applied: set[int]) -> tuple[list[str], list[int]]:
    """The shipped migrations not applied (by name), and applied versions this build does not know."""
    shipped = migrations()
    return ([m.name for m in shipped if m.version not in applied],
            sorted(applied - {m.version for m in shipped}))


# ── the checks ──────────────────────────────────────────────────────────────────────────


async def diagnose(settings: OpsSettings, postgres_url: str, *, open_log: Callable[[], PartitionedLog],
                   timeout: float = 3.0, stuck_after: float = 60.0) -> DoctorReport:
    """Run every check; each step waits at most ``timeout`` seconds.

    ``open_log`` makes (without starting) the log the settings select. The report lists the settings
    when they are a pydantic model (as ``blackboard.config.Settings`` is).
    """
    checks = [_configuration(settings)]
    async with (_log(settings, open_log, postgres_url, timeout, checks) as log,
                _postgres(postgres_url, timeout, checks) as conn):
        if settings.redis_url is not None:
            checks.append(await _redis(settings.redis_url.get_secret_value(), timeout))
        ends = await _topics(log, settings, timeout, checks) if log is not None else None
        if log is None:
            checks.append(Check("topics", "skip", "the log is unreachable"))
        if conn is None:
            checks += [Check("migrations", "skip", "PostgreSQL is unreachable"),
                       Check("projection", "skip", "PostgreSQL is unreachable")]
        else:
            schema = await read_schema_of(settings, conn)
            migrated = await _migrations(conn, schema, timeout, checks)
            checks.append(await _projection(conn, schema, settings.events_topic, ends if migrated else None,
                                            timeout, stuck_after))
    view = settings_view(settings) if isinstance(settings, BaseModel) else []
    return DoctorReport(all(c.status != "fail" for c in checks), view, checks)


async def _bounded(step: Awaitable[T], timeout: float) -> T:
    return await asyncio.wait_for(step, timeout)


def _reason(exc: BaseException, timeout: float) -> str:
    return f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"


@contextlib.asynccontextmanager
async def _log(settings: OpsSettings, open_log: Callable[[], PartitionedLog], postgres_url: str, timeout: float,
               checks: list[Check]) -> AsyncIterator[PartitionedLog | None]:
    """The started log, or ``None`` (and a failed check) when it cannot be reached."""
    log = open_log()
    name = "broker" if settings.kafka_bootstrap_servers else "log (PostgreSQL)"
    where = settings.kafka_bootstrap_servers or mask(postgres_url)
    try:
        await _bounded(log.start(), timeout)
    except Exception as exc:
        checks.append(Check(name, "fail", f"unreachable at {where}: {_reason(exc, timeout)}"))
        with contextlib.suppress(Exception):
            await log.close()
        yield None
        return
    checks.append(Check(name, "ok", f"reachable at {where}"))
    try:
        yield log
    finally:
        await log.close()


@contextlib.asynccontextmanager
async def _postgres(url: str, timeout: float, checks: list[Check]) -> AsyncIterator[asyncpg.Connection | None]:
    try:
        conn: asyncpg.Connection = await _bounded(asyncpg.connect(url, timeout=timeout), timeout + 1)
        version = await _bounded(conn.fetchval("SHOW server_version"), timeout)
    except Exception as exc:
        checks.append(Check("postgres", "fail", f"unreachable at {mask(url)}: {_reason(exc, timeout)}"))
        yield None
        return
    checks.append(Check("postgres", "ok", f"PostgreSQL {version} at {mask(url)}"))
    try:
        yield conn
    finally:
        await conn.close(timeout=timeout)


async def _redis(url: str, timeout: float) -> Check:
    client = aioredis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        await _bounded(client.ping(), timeout + 1)
        return Check("redis", "ok", f"answers at {mask(url)}")
    except Exception as exc:
        return Check("redis", "fail", f"unreachable at {mask(url)}: {_reason(exc, timeout)}")
    finally:
        await client.aclose()


async def _topics(log: PartitionedLog, settings: OpsSettings, timeout: float,
                  checks: list[Check]) -> dict[int, int] | None:
    """Partition and retention checks; return the events topic's end offsets when it exists."""
    try:
        counts = {t: await _bounded(_count(log, t), timeout)
                  for t in (settings.events_topic, settings.commands_topic, settings.results_topic)}
    except Exception as exc:
        checks.append(Check("topics", "fail", f"cannot describe the topics: {_reason(exc, timeout)}"))
        return None
    checks += partition_checks(settings, counts)
    checks += await _replication(log, [t for t, n in counts.items() if n is not None], timeout)
    if counts[settings.events_topic] is None:
        return None
    checks.append(await _retention(log, settings.events_topic, timeout))
    try:
        return await _bounded(_ends(log, settings.events_topic), timeout * 4)
    except Exception as exc:
        checks.append(Check("end offsets", "fail", f"{settings.events_topic}: {_reason(exc, timeout)}"))
        return None


async def _replication(log: PartitionedLog, topics: list[str], timeout: float) -> list[Check]:
    """Replicas and ``min.insync.replicas`` of each existing topic against the settings (Kafka only)."""
    try:
        return [Check(*c) for c in await replication_checks(log, topics, timeout)]
    except Exception as exc:
        return [Check("replication", "warn", f"cannot tell: {_reason(exc, timeout)}")]


async def _count(log: PartitionedLog, topic: str) -> int | None:
    try:
        return await log.partition_count(topic)
    except UnknownTopic:
        return None


async def _ends(log: PartitionedLog, topic: str) -> dict[int, int]:
    return {p: await log.end_offset(topic, p) for p in range(await log.partition_count(topic))}


async def _retention(log: PartitionedLog, topic: str, timeout: float) -> Check:
    name = f"retention {topic}"
    try:
        config = (await _bounded(log.describe_topic(topic), timeout)).config
    except Exception as exc:
        return Check(name, "warn", f"cannot tell: {_reason(exc, timeout)}")
    if config is None:
        return Check(name, "warn", f"the {log.engine} log cannot tell the topic's configuration")
    problems = retention_problems(config)
    if problems:
        return Check(name, "fail", "events would be deleted: " + "; ".join(problems))
    return Check(name, "ok", "keeps every event forever")


async def _migrations(conn: asyncpg.Connection, schema: str, timeout: float, checks: list[Check]) -> bool:
    """Append the migrations check; return whether the schema has the bookkeeping table at all."""
    try:
        rows = await _bounded(conn.fetch(f"SELECT version FROM {quote_ident(schema)}.schema_migrations"), timeout)
    except asyncpg.UndefinedTableError:
        checks.append(Check("migrations", "fail", f"schema {schema!r} was never migrated (`blackboard up` does)"))
        return False
    except Exception as exc:
        checks.append(Check("migrations", "fail", f"cannot read {schema}.schema_migrations: {_reason(exc, timeout)}"))
        return False
    missing, unknown = missing_migrations({int(r["version"]) for r in rows})
    if missing:
        checks.append(Check("migrations", "fail", f"schema {schema!r} lacks {', '.join(missing)}"))
    elif unknown:
        checks.append(Check("migrations", "warn", f"schema {schema!r} has versions {unknown} this build does "
                                                  f"not know: is an older build running against it?"))
    else:
        checks.append(Check("migrations", "ok", f"all {len(migrations())} applied in {schema!r}"))
    return True


_STORED = """
SELECT partition, next_offset, extract(epoch FROM now() - updated_at)::float8 AS age
FROM {schema}.projection_offsets WHERE projection = $1 AND topic = $2
"""


async def _projection(conn: asyncpg.Connection, schema: str, topic: str, ends: dict[int, int] | None,
                      timeout: float, stuck_after: float) -> Check:
    """The projection's verdict; skipped without the events topic's end offsets (or a migrated schema)."""
    if ends is None:
        return Check("projection", "skip", "needs the events topic and a migrated read schema")
    try:
        rows: list[Any] = await _bounded(conn.fetch(_STORED.format(schema=quote_ident(schema)), PROJECTION, topic),
                                         timeout)
    except Exception as exc:
        return Check("projection", "fail", f"cannot read the stored offsets: {_reason(exc, timeout)}")
    stored = {int(r["partition"]): StoredOffset(int(r["next_offset"]), float(r["age"])) for r in rows}
    return projection_check(ends, stored, stuck_after)
