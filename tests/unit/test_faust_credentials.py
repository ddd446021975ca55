"""A faust app reaches a secured broker with the same SASL and TLS settings as the server's own clients."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import trustme
from pydantic import SecretStr

from blackboard.config import Settings
from blackboard.integrations.faust import broker_credentials


def test_plaintext_needs_no_credentials() -> None:
    assert broker_credentials(Settings().kafka_client_options()) is None


def test_sasl_over_tls_carries_the_mechanism_the_user_and_the_ca() -> None:
    ca = trustme.CA()
    with ca.cert_pem.tempfile() as cafile:
        settings = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                            kafka_sasl_username="bb", kafka_sasl_password=SecretStr("s3cret"),
                            kafka_ssl_cafile=Path(cafile))
        credentials = broker_credentials(settings.kafka_client_options())
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password) == ("bb", "s3cret")
    assert credentials.mechanism.value == "SCRAM-SHA-512" and credentials.protocol.value == "SASL_SSL"
    assert isinstance(credentials.ssl_context, ssl.SSLContext)


def test_tls_alone_is_ssl_credentials() -> None:
    ca = trustme.CA()
    with ca.cert_pem.tempfile() as cafile:
        settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=Path(cafile))
        credentials = broker_credentials(settings.kafka_client_options())
    assert isinstance(credentials, faust.SSLCredentials) and credentials.protocol.value == "SSL"
