"""Settings from flags and ``BLACKBOARD_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _path(value: Path | None) -> str | None:
    return str(value) if value is not None else None


class LogSettings(BaseSettings):
    """The settings of the logs, read on their own at start-up (``blackboard/logs.py``), before the others."""

    model_config = SettingsConfigDict(env_prefix="BLACKBOARD_", extra="ignore")

    log_level: Literal["debug", "info", "warning", "error", "critical"] | None = Field(
        default=None, description="least level logged, ours and the libraries' (default: info for 'up', warning "
                                  "for the other commands, warning for the libraries)")
    access_log: bool = Field(default=False, description="log one JSON line per HTTP request (uvicorn's access log)")


class Settings(LogSettings):
    """Every setting has a ``BLACKBOARD_`` environment variable; secrets print masked.

    With no Kafka servers the log is the PostgreSQL engine; with no PostgreSQL URL an
    embedded PostgreSQL keeps its data under ``data_dir``; with no Redis URL there is no cache.
    """

    model_config = SettingsConfigDict(env_prefix="BLACKBOARD_", extra="ignore")

    data_dir: Path = Field(default=Path(".blackboard"), description="where the embedded PostgreSQL keeps its data")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    grpc_port: int | None = Field(
        default=None, ge=0, le=65535,
        description="port of the gRPC query service (0: any free port); without it no gRPC server runs")
    kafka_bootstrap_servers: str | None = Field(default=None, description="e.g. localhost:9092; selects the Kafka log")
    # Kafka in production (events/kafka.py, events/kafka/security.py): every client gets the same security.
    kafka_replication_factor: int | None = Field(
        default=None, ge=1, le=16, description="replicas of every topic created (default: 3, or the broker count)")
    kafka_min_insync_replicas: int | None = Field(
        default=None, ge=1, le=16, description="min.insync.replicas of every topic created (default: 2 with 3+ "
                                               "replicas, else 1)")
    kafka_idempotence: Literal["auto", "on", "off"] = Field(
        default="auto", description="idempotent producer: 'auto' where the broker gives a producer id (one warning "
                                    "line otherwise), 'on' refuses to start without it")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(default=None, description="CA bundle (default: the system's)")
    kafka_ssl_certfile: Path | None = Field(default=None, description="client certificate (mutual TLS)")
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_check_hostname: bool = True
    postgres_url: SecretStr | None = Field(default=None, description="read models (and the log, without Kafka)")
    redis_url: SecretStr | None = Field(default=None, description="cache; optional")
    startup_timeout_seconds: float = Field(
        default=120.0, gt=0, le=3600,
        description="how long a role waits at start for its broker, PostgreSQL and Redis before it gives up")
    partitions: int = Field(default=8, ge=1, le=4096, description="partitions of the commands and events topics")
    topic_prefix: str = Field(default="", description="prefix of every topic name")
    read_schema: str = Field(
        default="blackboard", pattern=r"^[a-z_][a-z0-9_]{0,39}$",
        description="base name of the read-model schemas: a rebuild's is '<name>_g<N>', the live one's pointer "
                    "is in '<name>_control'")
    log_schema: str = Field(default="blackboard_log", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    log_compaction_seconds: float = Field(
        default=60.0, ge=0, le=86_400,
        description="PostgreSQL log: seconds between two compactions of the compacted topics (the partition "
                    "owners' snapshots), run by the command role as a broker's log cleaner would; 0: never")
    redis_prefix: str = "bb:"
    cache_ttl_seconds: int = Field(default=3600, ge=1)
    # who may call (blackboard/auth.py, blackboard/jwt_tokens.py; docs/security.md)
    api_keys: SecretStr | None = Field(
        default=None,
        description="'sha256:<hex of the key>=principal:rw|ro|sys[:tenant],…' (or the key itself in place of "
                    "'sha256:<hex>'); without keys or a JWKS every caller is 'anonymous' with every right, and the "
                    "server binds loopback only",
    )
    jwt_jwks_file: Path | None = Field(default=None, description="JWKS of the token issuer, as a file")
    jwt_jwks_url: str | None = Field(default=None, description="JWKS of the token issuer, fetched and cached")
    jwt_issuer: str | None = Field(default=None, description="the 'iss' every token must carry")
    jwt_audience: str | None = Field(default=None, description="the 'aud' every token must carry")
    jwt_tenant_claim: str = Field(default="tenant", min_length=1, description="the claim naming the tenant")
    jwt_leeway_seconds: float = Field(default=30.0, ge=0, le=300, description="clock skew allowed on exp and nbf")
    jwt_algorithms: str = Field(default="RS256,RS384,RS512,PS256,PS384,PS512,ES256,ES384,ES512,EdDSA",
                                description="signature algorithms accepted (asymmetric only)")
    jwt_jwks_refresh_seconds: float = Field(
        default=30.0, ge=0, le=3600, description="least time between two JWKS refreshes for an unknown 'kid'")
    jwt_jwks_max_age_seconds: float = Field(
        default=3600.0, gt=0, le=86400, description="a JWKS from a URL is fetched again once this old")
    protect_metrics_and_schema: bool = Field(
        default=False, description="/metrics and /schema need a credential (any that may read)")
    rate_limit_per_second: int | None = Field(
        default=None, ge=1, description="requests per second per principal (per client address when anonymous); "
                                        "counted in Redis when configured, else per process")
    rate_limit_per_tenant_per_second: int | None = Field(
        default=None, ge=1, description="requests per second of all the principals of one tenant together")
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="largest accepted request body")
    consistency_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    projector_batch_size: int = Field(default=2000, ge=1, le=100_000)
    projector_process: bool = Field(
        default=True, description="'blackboard up' with the projector and another role runs the projector in a "
                                  "child process of its own (a core of its own), not in the process that serves HTTP")
    cache_warm_projects: int = Field(
        default=1000, ge=0, le=1_000_000, description="projects put in Redis at start, most recently changed first")
    sweep_reservations: bool = Field(
        default=True, description="release expired budget reservations every second (process that decides only)")
    process_managers: bool = Field(
        default=True, description="run the process managers (claim expiry, nodes offline, dependencies, budget "
                                  "alerts, sagas) in the process that decides")
    # deciders (command_api/service.py)
    decider_mode: Literal["all", "group", "none"] = Field(
        default="all",
        description="'all': this process decides every partition (embedded default); 'group': decider processes "
                    "share the partitions through a group over the commands topic; 'none': decide nothing, route "
                    "every command to its owner")
    member_id: str | None = Field(
        default=None, max_length=100, description="this process's name in the deciders' group (default: random)")
    decider_group: str | None = Field(
        default=None, max_length=100, description="the deciders' group (default: '<topic prefix>deciders')")
    session_timeout_seconds: float = Field(
        default=10.0, ge=1, le=300, description="a decider silent this long loses its partitions to the others")
    route_timeout_seconds: float = Field(
        default=30.0, gt=0, le=600, description="how long a routed command waits for its owner's answer")
    command_timeout_seconds: float = Field(
        default=5.0, gt=0, le=600,
        description="how long a command waits for its owner's decision and the log's acknowledgement; then 503 "
                    "outcome_pending with Retry-After (it stays queued and is decided at most once)")
    # checkpoints (large, compressed, claim-check)
    blob_schema: str = Field(
        default="blackboard_blobs", pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="schema of the content-addressed blob store; never rebuilt with the read models")
    checkpoint_max_bytes: int = Field(default=64 * 1_048_576, ge=1, description="largest checkpoint accepted")
    checkpoint_inline_bytes: int = Field(
        default=256 * 1024, ge=0, le=512 * 1024,
        description="largest compressed checkpoint carried inside its event; larger ones go to the blob store")
    # partition snapshots (command_api/snapshots.py)
    snapshot_every: int = Field(
        default=100_000, ge=0,
        description="events appended to a partition between two snapshots of its owner; 0: no snapshots "
                    "(a restore then reads the partition from offset 0)")

    # the idempotency memory of each partition owner (command_api/known.py)
    known_max_commands: int = Field(
        default=100_000, ge=256,
        description="most command ids a partition owner remembers (the oldest is forgotten first; a repeat of a "
                    "forgotten one is decided again); a snapshot keeps the same ones")
    known_max_bytes: int = Field(
        default=64 * 1_048_576, ge=1_048_576,
        description="most bytes of remembered outcomes per partition owner (estimated as encoded); the 256 "
                    "newest are kept whatever their size")

    # the read pool (query role): bounded so that a slow PostgreSQL answers 503 instead of hanging requests
    read_pool_min_size: int = Field(default=1, ge=0, le=1000, description="connections the read pool keeps open")
    read_pool_max_size: int = Field(default=10, ge=1, le=1000, description="most connections of the read pool")
    read_pool_acquire_timeout_seconds: float = Field(
        default=2.0, gt=0, le=300,
        description="longest wait of a read for a free connection; then 503 read_pool_exhausted with Retry-After")
    read_statement_timeout_seconds: float = Field(
        default=10.0, gt=0, le=3600,
        description="longest statement of a read (PostgreSQL statement_timeout); then 503 statement_timeout")
    read_row_security: bool = Field(
        default=False,
        description="run each read of a request as the role blackboard_tenant_reader with the caller's tenant, so "
                    "that PostgreSQL's row-level security shows it that tenant's rows only (docs/security.md)")
    # recovery (the embedded or external PostgreSQL going away)
    postgres_recovery_seconds: float = Field(
        default=30.0, gt=0, le=3600,
        description="how long PostgreSQL may stay unreachable, the embedded one restarted meanwhile, before "
                    "/health/live fails so that an orchestrator restarts the process")

    @model_validator(mode="after")
    def _replicas_cover_insync(self) -> Settings:
        rf, isr = self.kafka_replication_factor, self.kafka_min_insync_replicas
        if rf is not None and isr is not None and isr > rf:
            raise ValueError(f"kafka_min_insync_replicas ({isr}) exceeds kafka_replication_factor ({rf})")
        return self

    @model_validator(mode="after")
    def _jwt_is_complete(self) -> Settings:
        if self.jwt_jwks_file is not None and self.jwt_jwks_url is not None:
            raise ValueError("give jwt_jwks_file or jwt_jwks_url, not both")
        if self.jwt_enabled and not (self.jwt_issuer and self.jwt_audience):
            raise ValueError("with a JWKS, jwt_issuer and jwt_audience are required: every token is checked for both")
        refused = [a for a in self.jwt_algorithm_list if a.lower() == "none" or a.upper().startswith("HS")]
        if refused or not self.jwt_algorithm_list:
            raise ValueError(f"jwt_algorithms takes asymmetric algorithms only, not {', '.join(refused) or 'none'}")
        return self

    @property
    def jwt_enabled(self) -> bool:
        return self.jwt_jwks_file is not None or self.jwt_jwks_url is not None

    @property
    def jwt_algorithm_list(self) -> list[str]:
        return [a.strip() for a in self.jwt_algorithms.split(",") if a.strip()]

    @property
    def has_credentials(self) -> bool:
        """Whether any credential is configured: without one every caller is ``anonymous``."""
        keys = self.api_keys.get_secret_value() if self.api_keys is not None else ""
        return any(entry.strip() for entry in keys.split(",")) or self.jwt_enabled

    def kafka_client_options(self) -> dict[str, Any]:
        """The security keyword arguments of every Kafka client (``KafkaSecurity.client_options``)."""
        from blackboard.events.kafka.security import KafkaSecurity

        return KafkaSecurity(
            protocol=self.kafka_security_protocol, sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username, sasl_password=_secret(self.kafka_sasl_password),
            ssl_cafile=_path(self.kafka_ssl_cafile), ssl_certfile=_path(self.kafka_ssl_certfile),
            ssl_keyfile=_path(self.kafka_ssl_keyfile), ssl_key_password=_secret(self.kafka_ssl_key_password),
            ssl_check_hostname=self.kafka_ssl_check_hostname,
        ).client_options()

    @property
    def events_topic(self) -> str:
        return f"{self.topic_prefix}events"

    @property
    def commands_topic(self) -> str:
        return f"{self.topic_prefix}commands"

    @property
    def results_topic(self) -> str:
        return f"{self.topic_prefix}command-results"

    @property
    def deciders_group(self) -> str:
        """Deciders of different topic prefixes on one broker never share a group."""
        return self.decider_group or f"{self.topic_prefix}deciders"

    @property
    def commands_dead_letters_topic(self) -> str:
        return f"{self.topic_prefix}commands-dead-letters"

    # partition snapshots (command_api/snapshots.py)
    @property
    def snapshots_topic(self) -> str:
        """The compacted topic of partition owners' snapshots (one partition per events partition)."""
        return f"{self.topic_prefix}snapshots"
