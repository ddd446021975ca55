"""The Kafka security settings reach every aiokafka client the project opens, and incomplete ones are refused.

No broker here can authenticate (tansu takes neither SASL nor TLS), so each client is constructed for real
against a port where nothing listens, and the keyword arguments it was given are recorded on the way in.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from typing import Any

import aiokafka
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr

from blackboard.app import open_log
from blackboard.config import Settings
from blackboard.events.kafka import KafkaLog, membership
from blackboard.events.kafka import log as kafka
from blackboard.events.kafka.security import KafkaSecurity
from blackboard.events.log import LogUnavailable


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every aiokafka client constructed meanwhile: (kind, its keyword arguments)."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def recording(cls: type) -> type:
        class Recorded(cls):  # type: ignore[misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                seen.append((cls.__name__, kwargs))
                super().__init__(*args, **kwargs)
        return Recorded

    producer, consumer = recording(aiokafka.AIOKafkaProducer), recording(aiokafka.AIOKafkaConsumer)
    monkeypatch.setattr(kafka, "AIOKafkaProducer", producer)
    monkeypatch.setattr(kafka, "AIOKafkaConsumer", consumer)
    monkeypatch.setattr(kafka, "AIOKafkaAdminClient", recording(AIOKafkaAdminClient))
    monkeypatch.setattr(membership, "AIOKafkaConsumer", consumer)
    yield seen


def _sasl_ssl_settings(port: int) -> Settings:
    return Settings(kafka_bootstrap_servers=f"127.0.0.1:{port}", kafka_security_protocol="SASL_SSL",
                    kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="bb",
                    kafka_sasl_password=SecretStr("s3cret"),
                    kafka_ssl_check_hostname=False, kafka_replication_factor=3, kafka_min_insync_replicas=2)


async def test_every_client_gets_the_same_security(opened: list[tuple[str, dict[str, Any]]]) -> None:
    log = open_log(_sasl_ssl_settings(_closed_port()), "unused")
    assert isinstance(log, KafkaLog) and (log.replication_factor, log.min_insync_replicas) == (3, 2)
    with pytest.raises(LogUnavailable):
        await log.start()  # the producer is the first to find nobody listening
    opened_by_start = len(opened)
    for opening in (lambda: log.reader("events")._ensure(),
                    lambda: log.membership("deciders", "commands", member_id="m-1").start(_nothing, _nothing)):
        with pytest.raises(LogUnavailable):
            await opening()
    kinds = [kind for kind, _ in opened]
    assert opened_by_start >= 1 and kinds.count("AIOKafkaConsumer") >= 2, kinds
    contexts = set()
    for kind, kwargs in opened:
        assert kwargs["security_protocol"] == "SASL_SSL", kind
        assert (kwargs["sasl_mechanism"], kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == \
            ("SCRAM-SHA-512", "bb", "s3cret"), kind
        assert isinstance(kwargs["ssl_context"], ssl.SSLContext) and not kwargs["ssl_context"].check_hostname
        assert kwargs["ssl_context"].verify_mode == ssl.CERT_REQUIRED, "the broker's certificate is still verified"
        contexts.add(id(kwargs["ssl_context"]))
    assert len(contexts) == 1, "one TLS context for every client"


async def test_the_admin_and_probe_get_it_too(opened: list[tuple[str, dict[str, Any]]],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """start() opens the producer, the admin client and the probe in turn: let each start succeed in order."""
    async def started(self: Any) -> None:
        return None
    monkeypatch.setattr(aiokafka.AIOKafkaProducer, "start", started)
    monkeypatch.setattr(AIOKafkaAdminClient, "start", started)
    log = open_log(_sasl_ssl_settings(_closed_port()), "unused")
    with pytest.raises(LogUnavailable):
        await log.start()  # the probe, a consumer, is the one that finds nobody
    assert [k for k, _ in opened] == ["AIOKafkaProducer", "AIOKafkaAdminClient", "AIOKafkaConsumer"]
    assert all(kw["sasl_plain_password"] == "s3cret" and "ssl_context" in kw for _, kw in opened)


async def _nothing(partitions: frozenset[int]) -> None:
    return None


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    assert Settings().kafka_client_options() == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize(("security", "message"), [
    (KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "bb", None), "needs a SASL mechanism, username and password"),
    (KafkaSecurity("SASL_SSL", None, "bb", "pw"), "needs a SASL mechanism"),
    (KafkaSecurity("PLAINTEXT", ssl_cafile="ca.pem"), "use SSL or SASL_SSL"),
    (KafkaSecurity("SSL", ssl_certfile="client.pem"), "needs its key"),
])
def test_incomplete_settings_are_refused(security: KafkaSecurity, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        security.client_options()


def test_insync_replicas_cannot_exceed_the_replicas() -> None:
    with pytest.raises(ValueError, match="exceeds kafka_replication_factor"):
        Settings(kafka_replication_factor=1, kafka_min_insync_replicas=2)
