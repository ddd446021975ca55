"""The command tools: one per command type, its input schema taken from the Structs the server decodes with.

A tool's arguments are the command's envelope without ``type`` (the tool names it): ``stream``,
``payload`` (the type's payload Struct, with its field types, lengths, patterns and defaults),
``dry_run``, ``expected_version``, ``command_id``, ``correlation_id``, ``causation_id`` and ``agent``.
The schemas are built by ``blackboard.schemas.command_schema``, as the OpenAPI contract's are.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from blackboard.integrations.mcp.backend import Answer, Backend
from blackboard.schemas.api import CommandRequest
from blackboard.schemas.command_schema import command_schema, envelope_fields
from blackboard.schemas.registry import COMMAND_TYPES, SYSTEM_COMMANDS

DEFS = "#/$defs/{name}"
Run = Callable[[Backend, dict[str, Any]], Awaitable[Answer]]

DRY_RUN = {"type": "boolean", "default": False,
           "description": "true: decide against current state and append nothing; the answer says whether the "
                          "command would be accepted, the events it would append, the fields they would change "
                          "(from → to) and the rules checked. Use it to check a command before sending it."}


@dataclass(frozen=True)
class ToolDef:
    """A tool: its name, what it does, the JSON Schema of its arguments, and what calling it does."""

    name: str
    description: str
    input_schema: dict[str, Any]
    run: Run
    read_only: bool = True
    #: Whether it may undo or overwrite what others wrote (rollbacks), as opposed to adding to it.
    destructive: bool = False


def tool_name(command_type: str) -> str:
    """``project.create`` → ``project_create``: tool names of LLM APIs admit no dots."""
    return command_type.replace(".", "_")


def object_schema(types: list[Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The references to ``types`` and the definitions they name, referenced as ``#/$defs/<name>``."""
    refs, defs = msgspec.json.schema_components(types, ref_template=DEFS)
    return list(refs), defs


def command_input_schema(command_type: str) -> dict[str, Any]:
    """A self-contained JSON Schema (its ``$defs`` inside) of the arguments of ``command_type``'s tool."""
    category, payload_type = COMMAND_TYPES[command_type]
    (_, payload_ref), defs = object_schema([CommandRequest, payload_type])
    common = envelope_fields(defs.pop("CommandRequest")) | {"dry_run": DRY_RUN}
    schema = command_schema(command_type, category, payload_ref, common, with_type=False)
    return schema | {"$defs": defs}


def _describe(command_type: str) -> str:
    category, payload_type = COMMAND_TYPES[command_type]
    doc = " ".join((payload_type.__doc__ or "").split())
    system = (" Sent by Blackboard's own process managers: it needs an API key of mode 'sys'."
              if command_type in SYSTEM_COMMANDS else "")
    return (f"Send the command {command_type} to a {category} stream ('{category}:<id>'). {doc}{system} "
            "Accepted: the events appended, the stream's new version and the position (reads after it see it). "
            "Rejected by a rule: a tool error with the rule's code, message and details; nothing was appended.")


def _sender(command_type: str) -> Run:
    async def run(backend: Backend, arguments: dict[str, Any]) -> Answer:
        return await backend.command(command_type, arguments)

    return run


def command_tools() -> list[ToolDef]:
    """One tool per command type, in the registry's order."""
    return [ToolDef(name=tool_name(name), description=_describe(name), input_schema=command_input_schema(name),
                    run=_sender(name), read_only=False)
            for name in COMMAND_TYPES]
