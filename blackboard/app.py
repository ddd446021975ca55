"""Process start-up: the services a process runs, wired to one log and one PostgreSQL, behind one HTTP app."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg
import redis.asyncio as aioredis
import structlog

from blackboard.auth import Gate, gate_for
from blackboard.command_api.claims import ClaimService
from blackboard.command_api.expiry import run_sweeper
from blackboard.command_api.service import CommandService, submit_json
from blackboard.command_api.snapshots import SNAPSHOT_TOPIC_CONFIG
from blackboard.config import Settings
from blackboard.embedded import exit_on_stop_signals
from blackboard.events.log import PartitionedLog, UnknownTopic
from blackboard.pools import open_read_pool
from blackboard.processes.budget import BudgetAlerts
from blackboard.processes.cluster import cluster_managers
from blackboard.processes.manager import Intent
from blackboard.processes.runtime import Appended, ProcessRuntime
from blackboard.processes.saga import ArtifactSaga
from blackboard.projector import generations
from blackboard.projector.cache import DocumentCache
from blackboard.projector.generations import Generation, GenerationWatch
from blackboard.projector.migrate import create_pool, migrate
from blackboard.projector.runtime import Projector
from blackboard.projector_process import ProjectorProcess
from blackboard.query_api import cluster
from blackboard.query_api.consistency import OffsetWatch
from blackboard.query_api.reads import ReadService
from blackboard.recovery import PostgresWatch
from blackboard.schemas.tenancy import is_default, unscope_command

if TYPE_CHECKING:
    from blackboard.query_api.grpc import GrpcServer

log = structlog.get_logger(__name__)

ROLES = frozenset({"command", "projector", "query"})
#: Longest wait for each step of a shutdown.
STOP_SECONDS = 5.0
#: Longest wait, when a new generation goes live, for it to catch up with the old before reads move.
SWITCH_SECONDS = 10.0


def open_log(settings: Settings, postgres_url: str) -> PartitionedLog:
    """The log engine the settings select: Kafka when bootstrap servers are given, else PostgreSQL."""
    if settings.kafka_bootstrap_servers:
        from blackboard.events.kafka import KafkaLog

        return KafkaLog(settings.kafka_bootstrap_servers, replication_factor=settings.kafka_replication_factor,
                        min_insync_replicas=settings.kafka_min_insync_replicas,
                        security=settings.kafka_client_options(), idempotence=settings.kafka_idempotence)
    from blackboard.events.postgres import PostgresLog

    return PostgresLog(postgres_url, schema=settings.log_schema)


def topics_of(settings: Settings) -> dict[str, dict[str, str]]:
    """Every topic the roles use, with the configuration it is created with (events keep everything forever)."""
    forever = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}
    kept = (settings.events_topic, settings.commands_topic, settings.results_topic,
            settings.commands_dead_letters_topic)
    return {**{topic: forever for topic in kept}, settings.snapshots_topic: dict(SNAPSHOT_TOPIC_CONFIG)}


async def ensure_topics(log_: PartitionedLog, settings: Settings) -> int:
    """Create the topics when missing (``topics_of``); return their partition count."""
    try:
        partitions = await log_.partition_count(settings.events_topic)
    except UnknownTopic:
        partitions = settings.partitions
    for topic, config in topics_of(settings).items():
        await log_.create_topic(topic, partitions, config=config)
    return partitions


@dataclass
class Runtime:
    """Everything one process runs; ``roles`` picks among command, projector and query."""

    settings: Settings
    postgres_url: str
    roles: frozenset[str] = ROLES
    log: PartitionedLog | None = None
    pool: asyncpg.Pool | None = None
    #: The query role's reads: a pool of its own, bounded in size, acquire wait and statement time.
    read_pool: asyncpg.Pool | None = None
    redis: aioredis.Redis | None = None
    cache: DocumentCache | None = None
    commands: CommandService | None = None
    projector: Projector | None = None
    watch: OffsetWatch | None = None
    reads: ReadService | None = None
    generation: Generation | None = None
    generation_watch: GenerationWatch | None = None
    partitions: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    projector_task: asyncio.Task[None] | None = None
    #: The gRPC query server (``settings.grpc_port`` set and the query role) and the port it bound.
    grpc: GrpcServer | None = None
    grpc_port: int | None = None
    #: Claims of the next task (command role): candidates from the read model, decided by the tasks' owners.
    claims: ClaimService | None = None
    #: The process managers' host (command role, ``settings.process_managers``).
    processes: ProcessRuntime | None = None
    #: Notices PostgreSQL going away, restarts the embedded one, and says when the process is no longer live.
    postgres_watch: PostgresWatch | None = None
    #: Run the projector in a child process of its own (``blackboard up``; ``settings.projector_process``),
    #: the projector role then being left out of ``roles``.
    projector_apart: bool = False
    projector_process: ProjectorProcess | None = None
    _gate: Gate | None = None

    @property
    def gate(self) -> Gate:
        """Authentication, scopes and rate limits, one for both transports (they share the limiter's counts)."""
        if self._gate is None:
            self._gate = gate_for(self.settings, lambda: self.redis)
        return self._gate

    async def start(self) -> None:
        s = self.settings
        if self.projector_apart:  # first: the child starts (imports, connects) while this process does
            self.projector_process = ProjectorProcess(s, self.postgres_url)
            self.projector_process.start()
        self.log = open_log(s, self.postgres_url)
        await self.log.start()
        self.partitions = await ensure_topics(self.log, s)
        self.generation = await self._live_generation()
        self.pool = await self._open_generation(self.generation)
        if s.redis_url is not None:
            self.redis = aioredis.from_url(s.redis_url.get_secret_value(), socket_timeout=1.0,
                                           socket_connect_timeout=1.0)
            self.cache = self._cache_of(self.generation)
        if "command" in self.roles:
            self.commands = CommandService(
                self.log, events_topic=s.events_topic, results_topic=s.results_topic, partitions=self.partitions,
                commands_topic=s.commands_topic, dead_letters_topic=s.commands_dead_letters_topic,
                mode=s.decider_mode, member_id=s.member_id, group=s.deciders_group,
                session_timeout=s.session_timeout_seconds, route_timeout=s.route_timeout_seconds,
                command_timeout=s.command_timeout_seconds,
                snapshots_topic=s.snapshots_topic, snapshot_every=s.snapshot_every,
                known_max_commands=s.known_max_commands, known_max_bytes=s.known_max_bytes)
            await self.commands.start()
            compact_forever = getattr(self.log, "compact_forever", None)  # the PostgreSQL log's log cleaner
            if compact_forever is not None and s.log_compaction_seconds:
                self.tasks.append(asyncio.create_task(compact_forever(s.log_compaction_seconds), name="compaction"))
        if "projector" in self.roles:
            self._start_projector(self.pool, self.cache)
        if "command" in self.roles:
            assert self.commands is not None
            self.claims = ClaimService(self.commands, lambda skills, limit, exclude, tenant: cluster.claim_candidates(
                self._current_pool(), skills, limit, exclude, tenant=tenant))
            if s.process_managers:
                self.processes = self._process_runtime()
                self.tasks.append(asyncio.create_task(self.processes.run(), name="processes"))
        if "command" in self.roles and self.settings.sweep_reservations:
            assert self.commands is not None
            self.tasks.append(asyncio.create_task(run_sweeper(self._current_pool, self.commands), name="sweeper"))
        if "query" in self.roles:
            self.read_pool = await open_read_pool(s, self.postgres_url, self.generation.schema)
            self.watch, self.reads = await self._read_side(self.pool, self.read_pool, self.cache)
            warmed = await self.reads.warm(s.cache_warm_projects)
            if warmed:
                log.info("cache.warmed", projects=warmed)
            if s.grpc_port is not None:
                await self._start_grpc(s.grpc_port)
        if self.roles & {"projector", "query"}:
            self.generation_watch = GenerationWatch(self.postgres_url, s.read_schema, self.generation, self._switch)
            self.generation_watch.start()
        self.postgres_watch = PostgresWatch(self.postgres_url, recovery_seconds=s.postgres_recovery_seconds)
        self.tasks.append(asyncio.create_task(self.postgres_watch.run(), name="postgres-watch"))
        if self.projector_process is not None:  # ready once the child projects, as with a projector task
            if not await self.projector_process.wait_projecting(s.startup_timeout_seconds):
                log.warning("projector_process.not_started", seconds=s.startup_timeout_seconds)

    def live(self) -> bool:
        """Whether the process can still recover by itself (``/health/live``): false once PostgreSQL has been
        unreachable longer than ``postgres_recovery_seconds``, the embedded one restarted meanwhile."""
        return self.postgres_watch is None or self.postgres_watch.live()

    async def _start_grpc(self, port: int) -> None:
        # Imported here: a process without gRPC never loads grpc and protoc.
        from blackboard.query_api.grpc import start_grpc

        # A getter, not the service: a generation switch replaces ``self.reads``.
        self.grpc = await start_grpc(lambda: self.reads, self.settings.host, port,
                                     lambda presented, peer: self.gate.admit(presented, peer, reads=True))
        self.grpc_port = self.grpc.port

    def _process_runtime(self) -> ProcessRuntime:
        """The process managers, sending their commands to this process's command service."""
        commands, log_ = self.commands, self.log
        assert commands is not None and log_ is not None

        async def send(i: Intent) -> Any:
            # A manager derives its commands from stored ids; they are sent as their tenant would name them.
            tenant, stream, payload = unscope_command(i.stream, i.type, i.payload)
            return await submit_json(commands, stream=stream, type_=i.type, payload=payload,
                                     command_id=i.command_id, actor=f"process:{i.manager}",
                                     tenant=None if is_default(tenant) else tenant,
                                     correlation_id=i.correlation_id, causation_id=i.cause_event_id)

        managers = [*cluster_managers(), BudgetAlerts(), ArtifactSaga()]
        # What this process appends reaches the managers in memory rather than read back from the log; the
        # PostgreSQL log only, whose reads return at once what it acknowledged.
        appended = Appended(self.settings.events_topic) if log_.engine == "postgres" else None
        if appended is not None:
            commands.on_appended(appended.put)
        return ProcessRuntime(log_, topic=self.settings.events_topic, managers=managers, send=send, appended=appended)

    def _current_pool(self) -> asyncpg.Pool:
        assert self.pool is not None
        return self.pool

    async def _live_generation(self) -> Generation:
        conn = await asyncpg.connect(self.postgres_url)
        try:
            return await generations.live(conn, self.settings.read_schema)
        finally:
            await conn.close()

    async def _open_generation(self, generation: Generation) -> asyncpg.Pool:
        pool = await create_pool(self.postgres_url, generation.schema)
        try:
            await migrate(pool, generation.schema)
        except BaseException:
            await pool.close()
            raise
        return pool

    def _cache_of(self, generation: Generation) -> DocumentCache | None:
        if self.redis is None:
            return None
        return DocumentCache(self.redis, prefix=generations.cache_prefix(self.settings.redis_prefix, generation.number),
                             ttl_seconds=self.settings.cache_ttl_seconds)

    def _start_projector(self, pool: asyncpg.Pool, cache: DocumentCache | None) -> None:
        assert self.log is not None
        self.projector = Projector(self.log, pool, topic=self.settings.events_topic, cache=cache,
                                   batch_size=self.settings.projector_batch_size)
        self.projector_task = asyncio.create_task(self.projector.run(), name="projector")

    async def _read_side(self, pool: asyncpg.Pool, read_pool: asyncpg.Pool,
                         cache: DocumentCache | None) -> tuple[OffsetWatch, ReadService]:
        """The offsets watch (it holds a listening connection: not one of the bounded read pool's) and the reads."""
        watch = OffsetWatch(pool, topic=self.settings.events_topic)
        await watch.start()
        reads = ReadService(read_pool, watch, cache=cache, partitions=self.partitions,
                            consistency_timeout=self.settings.consistency_timeout_seconds)
        return watch, reads

    async def _switch(self, generation: Generation) -> None:
        """Move the projector and the reads to a generation that has just become live.

        Note: the reads move only once the new schema has caught up with everything the old one
        served (bounded by ``SWITCH_SECONDS``), so no reader sees a version older than one it has
        already read. Requests already running finish on the old pool, which closes after them.
        """
        pool = await self._open_generation(generation)
        cache = self._cache_of(generation)
        old_pool, old_watch, old_task, old_reads = self.pool, self.watch, self.projector_task, self.read_pool
        if "projector" in self.roles:
            self._start_projector(pool, cache)
        if old_task is not None:
            old_task.cancel()
            await _bounded("previous projector", asyncio.gather(old_task, return_exceptions=True))
        if "query" in self.roles:
            if old_pool is not None:
                await _bounded("catching up with the previous generation", _caught_up(pool, old_pool),
                               SWITCH_SECONDS)
            self.read_pool = await open_read_pool(self.settings, self.postgres_url, generation.schema)
            self.watch, self.reads = await self._read_side(pool, self.read_pool, cache)
        self.pool, self.cache, self.generation = pool, cache, generation
        if old_watch is not None:
            await _bounded("previous offset watch", old_watch.stop())
        for old in (old_pool, old_reads if old_reads is not self.read_pool else None):
            if old is not None and not await _bounded("previous read-model pool", old.close()):
                old.terminate()

    async def stop(self) -> None:
        """Stop everything; each step is bounded, so a stuck connection cannot hang a shutdown."""
        if self.grpc is not None:  # first: no new call may start on a read side that is closing
            await _bounded("grpc server", self.grpc.stop())
        if self.generation_watch is not None:
            await _bounded("generation watch", self.generation_watch.stop())
        if self.projector_process is not None:
            await self.projector_process.stop(STOP_SECONDS)
        if self.processes is not None:  # between two reads, so that its reader closes in order
            await self.processes.stop()
            running = [t for t in self.tasks if t.get_name() == "processes"]
            await _bounded("process managers", asyncio.gather(*running, return_exceptions=True))
        background = [*self.tasks, *([self.projector_task] if self.projector_task else [])]
        for task in background:
            task.cancel()
        await _bounded("background tasks", asyncio.gather(*background, return_exceptions=True))
        if self.commands:
            await _bounded("command service", self.commands.stop())
        if self.watch:
            await _bounded("offset watch", self.watch.stop())
        if self.redis is not None:
            await _bounded("redis", self.redis.aclose())
        if self.read_pool is not None and not await _bounded("read pool", self.read_pool.close()):
            self.read_pool.terminate()
        if self.pool is not None:
            if not await _bounded("read-model pool", self.pool.close()):
                # A connection still checked out (a task cancelled mid-query) would make close() wait forever.
                self.pool.terminate()
        if self.log is not None:
            await _bounded("log", self.log.close())


_OFFSETS = "SELECT partition, next_offset FROM projection_offsets WHERE projection = 'main'"


async def _caught_up(new: asyncpg.Pool, old: asyncpg.Pool) -> None:
    """Return once every partition of ``new`` has reached ``old``'s offsets (as they are when asked)."""
    while True:
        try:
            behind = {r["partition"]: r["next_offset"] for r in await old.fetch(_OFFSETS)}
            ahead = {r["partition"]: r["next_offset"] for r in await new.fetch(_OFFSETS)}
        except (OSError, asyncpg.PostgresError) as exc:  # cannot tell: move the reads rather than stall
            log.warning("generation.catch_up_unknown", error=repr(exc))
            return
        if all(ahead.get(p, 0) >= o for p, o in behind.items()):
            return
        await asyncio.sleep(0.05)


async def _bounded(what: str, step: Awaitable[Any], seconds: float = STOP_SECONDS) -> bool:
    """Await ``step`` for at most ``seconds``; ``False`` (and a log line) when it did not finish."""
    try:
        await asyncio.wait_for(step, seconds)
        return True
    except TimeoutError:
        log.warning("shutdown.step_timed_out", step=what, seconds=seconds)
        return False


def roles_from(spec: Iterable[str]) -> frozenset[str]:
    roles = frozenset(r.strip() for r in spec if r.strip())
    unknown = roles - ROLES
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; choose from {sorted(ROLES)}")
    return roles or ROLES


def serve(app: Any, **uvicorn_options: Any) -> None:
    """Serve ``app`` with uvicorn until a signal stops the process; every stopping signal shuts it down
    gracefully (requests finish, the runtime stops), then exits normally, so ``atexit`` cleanups run
    (the embedded PostgreSQL stops with the process that started it)."""
    import uvicorn

    from blackboard.config import LogSettings
    from blackboard.http_server import GatheringHttpToolsProtocol
    from blackboard.logs import with_request_context

    exit_on_stop_signals(interrupt=True)
    # The logs are configured once, as JSON (blackboard/logs.py): uvicorn must not install its own text ones.
    uvicorn_options.update(log_config=None, log_level=None, access_log=LogSettings().access_log)
    uvicorn_options.setdefault("http", GatheringHttpToolsProtocol)
    with _as_sigterm(signal.SIGHUP, signal.SIGQUIT):
        uvicorn.run(with_request_context(app), **uvicorn_options)


@contextlib.contextmanager
def _as_sigterm(*signals: signal.Signals) -> Iterator[None]:
    """While serving, ``signals`` (which uvicorn does not catch) ask for the same graceful stop as SIGTERM."""
    previous = {sig: signal.signal(sig, lambda *_: signal.raise_signal(signal.SIGTERM)) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
