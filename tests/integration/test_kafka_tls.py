"""The Kafka engine's end-to-end test through TLS, and a broker certificate from the wrong CA refused clearly.

tansu speaks no TLS, so a small proxy on loopback terminates TLS in front of it with a certificate the test
makes (``trustme``). Kafka clients connect wherever the broker's metadata sends them, so the tansu here
advertises the proxy's address: after bootstrap every connection still goes through TLS.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trustme

from blackboard.app import open_log
from blackboard.config import Settings
from blackboard.events.log import LogUnavailable
from tests.integration import test_end_to_end as end_to_end
from tests.integration.harness import settings_for
from tests.proxy import Forwarder
from tests.services import Tansu, free_port


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def proxy_port() -> int:
    return free_port()


@pytest.fixture
def broker(proxy_port: int) -> Iterator[Tansu]:
    """A tansu of this test's own whose metadata advertises the proxy, not itself."""
    tansu = Tansu(advertised_port=proxy_port)
    yield tansu
    tansu.stop()


@pytest.fixture
async def proxy(ca: trustme.CA, broker: Tansu, proxy_port: int) -> AsyncIterator[Forwarder]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    tls = Forwarder(proxy_port, broker.port, context)
    await tls.start()
    yield tls
    await tls.stop()


def _tls_settings(proxy: Forwarder, cafile: Path, pg_url: str, topic_prefix: str, redis_url: str,
                  redis_prefix: str) -> Settings:
    return settings_for("kafka", pg_url=pg_url, topic_prefix=topic_prefix, kafka=f"127.0.0.1:{proxy.port}",
                        redis_url=redis_url, redis_prefix=redis_prefix, kafka_security_protocol="SSL",
                        kafka_ssl_cafile=cafile)


async def test_the_end_to_end_test_passes_over_tls(proxy: Forwarder, ca_file: Path, pg_url: str, topic_prefix: str,
                                                   redis_url: str, redis_prefix: str) -> None:
    """The hostname is checked too: the proxy's certificate names 127.0.0.1."""
    settings = _tls_settings(proxy, ca_file, pg_url, topic_prefix, redis_url, redis_prefix)
    assert settings.kafka_ssl_check_hostname
    await end_to_end.test_command_to_row_and_back(settings)
    assert proxy.connections >= 3, "the producer, the admin client and the consumers all came through TLS"


async def test_a_certificate_from_another_ca_is_refused_with_the_setting_to_fix(
        proxy: Forwarder, tmp_path: Path, pg_url: str, topic_prefix: str, redis_url: str, redis_prefix: str) -> None:
    wrong = tmp_path / "wrong-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(wrong))
    settings = _tls_settings(proxy, wrong, pg_url, topic_prefix, redis_url, redis_prefix)
    log = open_log(settings, pg_url)
    with pytest.raises(LogUnavailable) as refused:
        await log.start()
    message = str(refused.value)
    assert "certificate is refused" in message and "BLACKBOARD_KAFKA_SSL_CAFILE" in message, message
    assert "unable to get local issuer certificate" in message, message

