"""How the project's Kafka clients authenticate and encrypt: one set of options for every one of them.

``KafkaLog`` passes ``KafkaSecurity.client_options()`` to each aiokafka client it opens (the producer, the
admin client, the probe, every reader and the deciders' group member), so no client can be left on
PLAINTEXT while the others use TLS.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka.helpers import create_ssl_context

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True)
class KafkaSecurity:
    """The broker's security protocol, SASL credentials and TLS files; the defaults are PLAINTEXT."""

    protocol: Protocol = "PLAINTEXT"
    sasl_mechanism: Mechanism | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: str | None = None
    ssl_check_hostname: bool = True

    def client_options(self) -> dict[str, Any]:
        """The keyword arguments every aiokafka client takes for this protocol; ``ValueError`` when incomplete."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol.startswith("SASL_"):
            if not (self.sasl_mechanism and self.sasl_username and self.sasl_password is not None):
                raise ValueError(f"security protocol {self.protocol} needs a SASL mechanism, username and password")
            # aiokafka takes the SCRAM credentials under the PLAIN names too.
            options |= {"sasl_mechanism": self.sasl_mechanism, "sasl_plain_username": self.sasl_username,
                        "sasl_plain_password": self.sasl_password}
        if self.protocol.endswith("SSL"):
            options["ssl_context"] = self._ssl_context()
        elif self.ssl_cafile or self.ssl_certfile:
            raise ValueError(f"TLS files are set but the security protocol is {self.protocol}: use SSL or SASL_SSL")
        return options

    def _ssl_context(self) -> Any:
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        # Without a CA file the system's trust store verifies the broker, as for any TLS server.
        context = create_ssl_context(cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile,
                                     password=self.ssl_key_password)
        context.check_hostname = self.ssl_check_hostname  # the certificate is verified either way
        return context


async def tls_failure(bootstrap_servers: str, context: ssl.SSLContext, timeout: float = 5.0) -> str | None:
    """Why a TLS handshake with the first bootstrap server fails, naming the setting to fix; ``None`` when it
    succeeds or nobody answers.

    aiokafka reports a refused handshake only as a broker it could not bootstrap from; this says why.
    """
    host, _, port = bootstrap_servers.split(",")[0].strip().rpartition(":")
    host = host.strip("[]")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port), ssl=context, server_hostname=host), timeout)
    except ssl.SSLCertVerificationError as exc:
        return (f"TLS with {host}:{port}: the broker's certificate is refused ({exc.verify_message}); "
                "BLACKBOARD_KAFKA_SSL_CAFILE must name the CA that signed it"
                + (" and its name must match the address (BLACKBOARD_KAFKA_SSL_CHECK_HOSTNAME)"
                   if exc.verify_code == 62 else ""))  # X509_V_ERR_HOSTNAME_MISMATCH
    except ssl.SSLError as exc:
        return (f"TLS with {host}:{port} failed ({exc.reason or exc}); is that listener TLS? "
                "(BLACKBOARD_KAFKA_SECURITY_PROTOCOL)")
    except (OSError, TimeoutError, ValueError):
        return None
    writer.close()
    try:
        await writer.wait_closed()
    except (OSError, ssl.SSLError):
        pass
    return None
