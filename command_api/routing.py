"""Commands that travel through the log: in on the ``commands`` topic, answered on ``command-results``.

Three parts, each engine-neutral (they see only the ``PartitionedLog`` interface):

* ``CommandIntake`` (the owner's side) reads ``commands[p]`` of every partition decided in this
  process and hands each record to the partition's owner, in offset order, from one past the
  highest offset already answered (a restore learns it from ``command-results``). A record that is
  not a valid command is answered with a rejection and set aside on the dead-letter topic with
  its reason; it never stops the partition.
* ``ResultsTail`` (every process) follows ``command-results`` and hands each answer to whoever
  in this process waits for it; it keeps the most recent ones for ``GET /v1/commands/{id}``.
* ``route`` (the sender's side) puts a command whose partition another process decides on
  ``commands[p]`` and waits for its answer.

Any Kafka client can do what ``route`` does: a record on ``commands`` whose value is the JSON body
of ``POST /v1/commands`` gets the same validation, idempotency and outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import msgspec
import structlog

from blackboard.command_api import metrics
from blackboard.command_api.errors import IdempotencyKeyReused, StreamUnreadable, Unavailable
from blackboard.command_api.owner import PartitionOwner, Submission, submission
from blackboard.command_api.results import StoredOutcome, answer_of
from blackboard.domain.decoding import InvalidCommand, validate_command
from blackboard.events.log import PartitionedLog, Record, StoredRecord
from blackboard.events.partitioner import partition_for
from blackboard.events.tracing import current_trace_headers
from blackboard.schemas.api import DryRun, Outcome, Rejected
from blackboard.schemas.auth import TENANT_PATTERN
from blackboard.schemas.envelope import stream_partition_key
from blackboard.schemas.tenancy import scope_id

if TYPE_CHECKING:
    from collections.abc import Awaitable

log = structlog.get_logger(__name__)

#: The actor of a record that names none: who may write the commands topic is the broker's ACLs' business.
TOPIC_ACTOR = "commands-topic"
#: Most records the intake hands to the owners at once (each owner decides its share as one group commit).
INTAKE_BATCH = 1000


def command_record(sub: Submission, *, routed_by: str) -> Record:
    """The record that carries ``sub`` on the commands topic: the ``POST /v1/commands`` body, actor (and tenant) in
    headers."""
    headers = [("actor", sub.actor.encode()), ("routed_by", routed_by.encode()),
               ("content-type", b"application/json")]
    if sub.tenant is not None:
        headers.append(("tenant", sub.tenant.encode()))
    traceparent, tracestate = current_trace_headers()
    headers += [(name, value.encode()) for name, value in (("traceparent", traceparent), ("tracestate", tracestate))
                if value]
    return Record(key=stream_partition_key(sub.stream).encode(), value=msgspec.json.encode(sub.request),
                  headers=tuple(headers))


class ResultsTail:
    """Follows ``command-results`` (every partition, from a little before its end when started).

    Note: it keeps the last ``keep`` answers it saw, so ``GET /v1/commands/{id}`` can answer for a
    command decided in another process; older ones are the owner's to tell.
    """

    def __init__(self, log_: PartitionedLog, topic: str, partitions: int, *, keep: int = 100_000,
                 backlog: int = 5_000) -> None:
        self.log, self.topic, self.partitions = log_, topic, partitions
        self.keep, self.backlog = keep, backlog
        self.recent: OrderedDict[str, StoredOutcome] = OrderedDict()
        self._waiters: dict[str, list[asyncio.Future[StoredOutcome]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()

    async def start(self) -> None:
        starts = {p: max(0, await self.log.end_offset(self.topic, p) - self.backlog) for p in range(self.partitions)}
        self._task = asyncio.create_task(self._follow(starts), name="results-tail")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for futures in self._waiters.values():
            for f in futures:
                if not f.done():
                    f.cancel()

    def wait(self, command_id: str) -> asyncio.Future[StoredOutcome]:
        """A future of the next answer to ``command_id`` seen from now on."""
        future: asyncio.Future[StoredOutcome] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(command_id, []).append(future)
        return future

    def forget(self, command_id: str, future: asyncio.Future[StoredOutcome]) -> None:
        futures = self._waiters.get(command_id, [])
        with contextlib.suppress(ValueError):
            futures.remove(future)
        if not futures:
            self._waiters.pop(command_id, None)

    def outcome_of(self, command_id: str) -> StoredOutcome | None:
        return self.recent.get(command_id)

    async def _follow(self, starts: Mapping[int, int]) -> None:
        while True:
            reader = self.log.reader(self.topic)
            try:
                for p, offset in starts.items():
                    await reader.seek(p, offset)
                while True:
                    for rec in await reader.read(max_records=5000, timeout=1.0):
                        self._seen(rec)
                        starts = {**starts, rec.partition: rec.offset + 1}
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the log went away: read again from where we were
                log.warning("results_tail.failed", error=repr(exc))
                await asyncio.sleep(1.0)
            finally:
                await reader.close()

    def _seen(self, rec: StoredRecord) -> None:
        try:
            stored = msgspec.json.decode(rec.value or b"", type=StoredOutcome)
        except msgspec.DecodeError:
            return
        if stored.remember or stored.command_id not in self.recent:
            self.recent[stored.command_id] = stored
            self.recent.move_to_end(stored.command_id)
            while len(self.recent) > self.keep:
                self.recent.popitem(last=False)
        for future in self._waiters.pop(stored.command_id, []):
            if not future.done():
                future.set_result(stored)


async def route(log_: PartitionedLog, tail: ResultsTail, sub: Submission, *, topic: str, partition: int,
                routed_by: str, timeout: float) -> tuple[Outcome | DryRun, bool]:
    """Put ``sub`` on ``commands[partition]`` and wait (up to ``timeout`` seconds) for its owner's answer."""
    future = tail.wait(sub.command_id)
    try:
        await log_.append(topic, partition, [command_record(sub, routed_by=routed_by)])
        try:
            stored = await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise Unavailable(
                f"the owner of partition {partition} did not answer within {timeout:g}s; retry with the same "
                "command_id (it is decided at most once)", code="route_timeout") from None
    finally:
        tail.forget(sub.command_id, future)
    return answer_of(stored)


class CommandIntake:
    """Reads ``commands[p]`` of the partitions this process decides and hands each command to its owner.

    Note: it waits for the answers to one read before the next, so a failed group commit is read
    again from ``owner.commands_offset`` (one past the highest offset answered): a command read twice
    is answered twice, decided once (its ``command_id``).
    """

    def __init__(self, log_: PartitionedLog, *, topic: str, results_topic: str, dead_letters_topic: str,
                 partitions: int, owners: Callable[[], Mapping[int, PartitionOwner]]) -> None:
        self.log, self.topic, self.results_topic = log_, topic, results_topic
        self.dead_letters_topic, self.partitions = dead_letters_topic, partitions
        self.owners = owners
        self.changed = asyncio.Event()
        self.set_aside = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="command-intake")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            self.changed.clear()
            owners = dict(self.owners())
            ready = [o for o in owners.values() if o.ready.is_set()]
            if not ready:
                await _first(self.changed.wait(), *(o.ready.wait() for o in owners.values()))
                continue
            try:
                await self._read(owners, {o.partition: o for o in ready})
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("intake.failed", error=repr(exc))
                await asyncio.sleep(0.5)

    async def _read(self, owners: Mapping[int, PartitionOwner], ready: Mapping[int, PartitionOwner]) -> None:
        reader = self.log.reader(self.topic)
        try:
            for p, owner in ready.items():
                await reader.seek(p, owner.commands_offset)
            # Owners that were not ready when this read began (one may have become ready meanwhile:
            # its wait then returns at once, and the next read takes it in).
            # Tasks, not coroutines: a read failing at once cancels ``wake`` before it starts, and coroutines
            # handed to it would then never be awaited.
            unready = [o.ready.wait() for p, o in owners.items() if p not in ready]
            waits = [asyncio.ensure_future(w) for w in (self.changed.wait(), *unready)]
            wake = asyncio.ensure_future(_first(*waits))
            try:
                while not wake.done():
                    records = await reader.read(max_records=INTAKE_BATCH, timeout=0.5)
                    if records and not await self._deliver(ready, records):
                        await asyncio.sleep(0.2)  # an owner that lost its partition answers so until revoked
                        return  # a group failed: read again from what its owner answered last
            finally:
                for w in (wake, *waits):
                    w.cancel()
        finally:
            await reader.close()

    async def _deliver(self, owners: Mapping[int, PartitionOwner], records: list[StoredRecord]) -> bool:
        """Hand ``records`` to their owners and wait for every answer; ``False`` when one must be read again."""
        futures = []
        for rec in records:
            owner = owners.get(rec.partition)
            if owner is None or rec.offset < owner.commands_offset:
                continue
            sub = await self._submission(owner, rec)
            if sub is not None:
                owner.submit(sub)  # an owner stopped meanwhile answers at once: this read is then done again
                futures.append(sub.future)
        answers = await asyncio.gather(*futures, return_exceptions=True)
        return all(not isinstance(a, BaseException) or isinstance(a, IdempotencyKeyReused | StreamUnreadable)
                   for a in answers)

    async def _submission(self, owner: PartitionOwner, rec: StoredRecord) -> Submission | None:
        """The command ``rec`` carries, or ``None`` when it is not one (then it is answered and set aside here)."""
        headers = {name: value.decode("utf-8", "replace") for name, value in rec.headers}
        command_id = _command_id_of(rec.value) or f"commands-{rec.partition}-{rec.offset}"
        # Trusted as far as the broker's authentication and ACLs on the commands topic allow (docs/security.md).
        # The body names its ids as its tenant does; the submission scopes them (schemas/tenancy.py).
        tenant = headers.get("tenant") or None
        if tenant is not None and not TENANT_PATTERN.match(tenant):
            await self._set_aside(owner, rec, command_id, "invalid_tenant",
                                  f"the tenant header {tenant[:64]!r} is not a tenant name", {})
            return None
        try:
            valid = validate_command(rec.value or b"")
        except InvalidCommand as exc:
            # Answered under the id as its tenant's commands are known (``GET /v1/commands/{id}`` of that tenant).
            details: dict[str, object] = {"errors": [msgspec.to_builtins(e) for e in exc.errors]}
            await self._set_aside(owner, rec, scope_id(tenant, command_id), exc.code, str(exc), details)
            return None
        req = valid.request
        if req.command_id is None:
            req = msgspec.structs.replace(req, command_id=command_id)
        sub = submission(req, valid.payload, actor=headers.get("actor") or TOPIC_ACTOR, tenant=tenant,
                         fingerprint=valid.fingerprint, source_offset=rec.offset)
        right = partition_for(stream_partition_key(sub.stream), self.partitions)
        if right != rec.partition:
            await self._set_aside(owner, rec, sub.command_id, "wrong_partition",
                                  f"{sub.stream} belongs on partition {right} of {self.topic}, "
                                  f"not {rec.partition} (partition by the murmur2 of the record key)",
                                  {"partition": right})
            return None
        return sub

    async def _set_aside(self, owner: PartitionOwner, rec: StoredRecord, command_id: str, code: str, message: str,
                         details: dict[str, object]) -> None:
        """Answer a record that is not a valid command with a rejection, and keep it with its reason."""
        log.warning("intake.set_aside", partition=rec.partition, offset=rec.offset, code=code, reason=message)
        letter = Record(key=rec.key, value=rec.value, headers=(
            *rec.headers, ("reason", message.encode()), ("code", code.encode()),
            ("source_topic", self.topic.encode()), ("source_partition", str(rec.partition).encode()),
            ("source_offset", str(rec.offset).encode())))
        await self.log.append(self.dead_letters_topic, rec.partition, [letter])
        metrics.DEAD_LETTERS.inc()
        stored = StoredOutcome(command_id, "", "", Rejected(command_id, code, message, details), remember=False,
                               commands_offset=rec.offset)
        await self.log.append(self.results_topic, rec.partition, [Record(
            key=rec.key, value=msgspec.json.encode(stored),
            headers=(("type", b"command.outcome"), ("command_id", command_id.encode())))])
        owner.commands_offset = max(owner.commands_offset, rec.offset + 1)
        self.set_aside += 1


class _CommandId(msgspec.Struct):
    command_id: str | None = None


def _command_id_of(value: bytes | None) -> str | None:
    """The ``command_id`` of a record, when it can be read even though the rest of it is wrong."""
    try:
        found = msgspec.json.decode(value or b"", type=_CommandId).command_id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return found if found and len(found) <= 128 else None


async def _first(*waits: Awaitable[object]) -> None:
    """Return when the first of ``waits`` is done; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
