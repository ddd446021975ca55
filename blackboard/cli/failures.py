"""What the CLI says when a service it needs is not there: one line, never a traceback.

The line names the service, what was tried (its address, without a password) and the setting that
points at it. A failure that is not about reaching a service is left to propagate as it is.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from urllib.parse import urlsplit

from blackboard.config import Settings


class CliError(Exception):
    """A failure the CLI reports in one line and exits 1 on: what is wrong and what to change."""


class SaidByTheFailureLine(logging.Filter):
    """Drops the broker client's own lines about a connection it could not make: the command's failure line
    says the same, with the setting to change. (Installed on the CLI's log handler; ``up`` makes its own.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith("aiokafka") and str(record.msg).startswith("Unable connect to"))


def unreachable(exc: BaseException, settings: Settings | None) -> str | None:
    """One line for ``exc`` when it says that the server, PostgreSQL, the broker or Redis could not be reached;
    ``None`` when it says something else."""
    for cause in _causes(exc):
        line = _describe(cause, settings)
        if line is not None:
            return line
    return None


def _describe(exc: BaseException, settings: Settings | None) -> str | None:
    import httpx

    reason = _reason(exc)
    if isinstance(exc, httpx.TransportError):
        url = str(exc.request.url) if _has_request(exc) else "the server"
        return (f"the Blackboard server at {url} did not answer ({reason}); is `blackboard up` running there? "
                "Its address: --url, BLACKBOARD_URL, or BLACKBOARD_HOST and BLACKBOARD_PORT")
    if _is_kafka(exc):
        servers = settings.kafka_bootstrap_servers if settings else None
        return (f"the broker at {servers or 'the configured servers'} could not be reached ({reason}); "
                "check BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS and that the broker runs")
    if _is_redis(exc):
        redis = settings.redis_url.get_secret_value() if settings and settings.redis_url else None
        where = _without_secret(redis) if redis else "the configured URL"
        return f"Redis at {where} could not be reached ({reason}); check BLACKBOARD_REDIS_URL and that Redis runs"
    if _is_postgres(exc):
        postgres = settings.postgres_url.get_secret_value() if settings and settings.postgres_url else None
        where = _without_secret(postgres) if postgres else "the embedded server"
        return (f"PostgreSQL at {where} could not be reached ({reason}); check BLACKBOARD_POSTGRES_URL (or "
                "BLACKBOARD_DATA_DIR for the embedded one) and that PostgreSQL runs")
    return None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the exceptions of a group it is, and what caused each, outermost first (each once)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    named = text if text.startswith(type(exc).__name__) else f"{type(exc).__name__}: {text}"
    return named[:200] if text else type(exc).__name__


def _has_request(exc: BaseException) -> bool:
    try:
        return getattr(exc, "request", None) is not None
    except RuntimeError:  # httpx raises when an error was made without a request
        return False


def _is_kafka(exc: BaseException) -> bool:
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

    return isinstance(exc, KafkaConnectionError | KafkaTimeoutError)


def _is_redis(exc: BaseException) -> bool:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return isinstance(exc, RedisConnectionError | RedisTimeoutError)


def _is_postgres(exc: BaseException) -> bool:
    """A connection to PostgreSQL failed: asyncpg's own errors of connecting, or an OS error raised inside it."""
    import asyncpg

    if isinstance(exc, asyncpg.CannotConnectNowError | asyncpg.ConnectionDoesNotExistError
                  | asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
        return True
    if isinstance(exc, OSError | TimeoutError):
        return any("asyncpg" in frame.filename for frame in traceback.extract_tb(exc.__traceback__))
    return False


def _without_secret(url: str) -> str:
    """``url`` with its password replaced by ``***``: what was tried, safe to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
