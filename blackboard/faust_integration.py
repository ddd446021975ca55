"""Deprecated name of :mod:`blackboard.integrations.faust`, kept for one release: import that instead."""

from __future__ import annotations

import warnings

from blackboard.integrations.faust import (
    CODEC_NAME,
    BlackboardCodec,
    BlackboardEvent,
    BlackboardSchema,
    CommandClient,
    CommandFailed,
    CommandResult,
    EventsTopic,
    command_id_for,
    decode_message,
    events_topic,
)

__all__ = [
    "CODEC_NAME",
    "BlackboardCodec",
    "BlackboardEvent",
    "BlackboardSchema",
    "CommandClient",
    "CommandFailed",
    "CommandResult",
    "EventsTopic",
    "command_id_for",
    "decode_message",
    "events_topic",
]

warnings.warn("blackboard.faust_integration is now blackboard.integrations.faust; the old name goes in the "
              "next release", DeprecationWarning, stacklevel=2)
