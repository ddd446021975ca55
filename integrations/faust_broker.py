"""A faust app's broker credentials from the server's settings: the same SASL and TLS as every server client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faust


def broker_credentials(options: Mapping[str, Any]) -> faust.types.auth.CredentialsT | None:
    """The SASL and TLS settings every Kafka client of the server uses, as a faust app's ``broker_credentials``.

    ``options`` are the aiokafka client options the server's settings give (``Settings.kafka_client_options()``),
    so a stream processor reaches a secured broker exactly as the roles do; ``None`` for PLAINTEXT.
    """
    protocol = options.get("security_protocol", "PLAINTEXT")
    context = options.get("ssl_context")
    if protocol.startswith("SASL_"):
        return faust.SASLCredentials(username=options["sasl_plain_username"], password=options["sasl_plain_password"],
                                     ssl_context=context, mechanism=options["sasl_mechanism"])
    if context is not None:
        return faust.SSLCredentials(context)
    return None
