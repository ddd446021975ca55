"""JSON Schema of every command payload and event, generated from the Structs (never hand-copied).

``python -m blackboard.schemas.export > schemas/jsonschema/blackboard.schema.json`` regenerates the
committed file; a test fails when the two differ.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

from blackboard.schemas.api import CommandRequest, Outcome
from blackboard.schemas.registry import COMMAND_TYPES, EVENT_TYPES


def json_schema() -> dict[str, Any]:
    """One document: ``commands`` and ``events`` by wire name (events with their schema version)."""
    commands = {name: cls for name, (_, cls) in COMMAND_TYPES.items()}
    events = {name: cls for name, (cls, _) in EVENT_TYPES.items()}
    types: list[Any] = [CommandRequest, Outcome, *commands.values(), *events.values()]
    refs, components = msgspec.json.schema_components(types, ref_template="#/$defs/{name}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Blackboard commands and events",
        "commands": {name: {"payload": ref} for name, ref in zip(commands, refs[2:2 + len(commands)], strict=True)},
        "events": {
            name: {"schema_version": EVENT_TYPES[name][1], "payload": ref}
            for name, ref in zip(events, refs[2 + len(commands):], strict=True)
        },
        "command_request": refs[0],
        "outcome": refs[1],
        "$defs": components,
    }


def meaning(doc: Any) -> Any:
    """``doc`` with every ``description`` reduced to its words: what a schema says, not how it is laid out.

    Note: descriptions come from docstrings, and how a docstring's lines are indented in the output is
    the encoder's choice (msgspec 0.23 changed it). Drift checks compare this, so a reformatted
    docstring passes while a renamed, added, removed or retyped field fails.
    """
    if isinstance(doc, dict):
        return {key: " ".join(value.split()) if key == "description" and isinstance(value, str) else meaning(value)
                for key, value in doc.items()}
    if isinstance(doc, list):
        return [meaning(item) for item in doc]
    return doc


def render() -> bytes:
    return msgspec.json.format(msgspec.json.encode(json_schema()), indent=2) + b"\n"


if __name__ == "__main__":
    sys.stdout.buffer.write(render())
