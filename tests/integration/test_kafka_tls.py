"""The Kafka engine's end-to-end test through TLS, and a broker certificate from the wrong CA refused clearly.

tansu speaks no TLS, so a small proxy on loopback terminates TLS in front of it with a certificate the test
makes (``trustme``). Kafka clients connect wherever the broker's metadata sends them, so the tansu here
advertises the proxy's address: after bootstrap every connection still goes through TLS.
"""

from __future__ import annotations

import asyncio
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
from tests.services import Tansu, free_port


class TlsProxy:
    """TLS on a loopback port, each connection piped in plain text to ``upstream``."""

    def __init__(self, port: int, upstream: int, context: ssl.SSLContext) -> None:
        self.port, self.upstream, self.context = port, upstream, context
        #: Connections whose TLS handshake succeeded.
        self.connections = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.context)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.upstream)
            await asyncio.gather(_pipe(client_r, broker_w), _pipe(broker_r, client_w))
        except OSError:
            pass
        finally:
            client_w.close()
            self._tasks.discard(task)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        sink.close()


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
async def proxy(ca: trustme.CA, broker: Tansu, proxy_port: int) -> AsyncIterator[TlsProxy]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    tls = TlsProxy(proxy_port, broker.port, context)
    await tls.start()
    yield tls
    await tls.stop()


def _tls_settings(proxy: TlsProxy, cafile: Path, pg_url: str, topic_prefix: str, redis_url: str,
                  redis_prefix: str) -> Settings:
    return settings_for("kafka", pg_url=pg_url, topic_prefix=topic_prefix, kafka=f"127.0.0.1:{proxy.port}",
                        redis_url=redis_url, redis_prefix=redis_prefix, kafka_security_protocol="SSL",
                        kafka_ssl_cafile=cafile)


async def test_the_end_to_end_test_passes_over_tls(proxy: TlsProxy, ca_file: Path, pg_url: str, topic_prefix: str,
                                                   redis_url: str, redis_prefix: str) -> None:
    """The hostname is checked too: the proxy's certificate names 127.0.0.1."""
    settings = _tls_settings(proxy, ca_file, pg_url, topic_prefix, redis_url, redis_prefix)
    assert settings.kafka_ssl_check_hostname
    await end_to_end.test_command_to_row_and_back(settings)
    assert proxy.connections >= 3, "the producer, the admin client and the consumers all came through TLS"


async def test_a_certificate_from_another_ca_is_refused_with_the_setting_to_fix(
        proxy: TlsProxy, tmp_path: Path, pg_url: str, topic_prefix: str, redis_url: str, redis_prefix: str) -> None:
    wrong = tmp_path / "wrong-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(wrong))
    settings = _tls_settings(proxy, wrong, pg_url, topic_prefix, redis_url, redis_prefix)
    log = open_log(settings, pg_url)
    with pytest.raises(LogUnavailable) as refused:
        await log.start()
    message = str(refused.value)
    assert "certificate is refused" in message and "BLACKBOARD_KAFKA_SSL_CAFILE" in message, message
    assert "unable to get local issuer certificate" in message, message

