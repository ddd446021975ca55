"""The JSON Schema of a command of each type as a client sends it, taken from the Structs.

One object per command type: its ``type`` fixed, its stream named in its aggregate's category, its
payload's Struct, and the envelope's other fields (``command_id``, ``expected_version``, ``dry_run``,
``agent``, …) as ``CommandRequest`` declares them. The OpenAPI contract (a union discriminated by
``type``) and the MCP tools (one tool per type, the type given by the tool) are both built from it.
"""

from __future__ import annotations

from typing import Any

#: The envelope's fields that each command type fixes itself; the others it shares with every type.
ENVELOPE_ONLY = ("type", "stream", "payload")

#: A stream's id after its category: what the command validation accepts (``domain.decoding``).
STREAM_ID = "[A-Za-z0-9][A-Za-z0-9._-]{0,127}"


def stream_schema(category: str) -> dict[str, Any]:
    """A stream of ``category``: ``project:p-1`` for a project command."""
    return {"type": "string", "pattern": f"^{category}:{STREAM_ID}$",
            "description": f"the {category} stream the command goes to"}


def envelope_fields(envelope: dict[str, Any]) -> dict[str, Any]:
    """The properties every command carries besides its own type, stream and payload, from the JSON Schema of
    ``CommandRequest``."""
    return {key: value for key, value in envelope["properties"].items() if key not in ENVELOPE_ONLY}


def command_schema(name: str, category: str, payload: dict[str, Any], common: dict[str, Any], *,
                   with_type: bool = True) -> dict[str, Any]:
    """The object a client sends for command ``name``: ``payload`` is its Struct's schema (or a reference to
    it), ``common`` the envelope's shared fields; ``with_type=False`` leaves ``type`` out, for a caller that
    names the type some other way (an MCP tool per type)."""
    typed = {"type": {"type": "string", "enum": [name]}} if with_type else {}
    return {
        "type": "object", "title": name, "additionalProperties": False,
        "required": [*(["type"] if with_type else []), "stream", "payload"],
        "properties": {**typed, "stream": stream_schema(category), "payload": payload, **common},
    }
