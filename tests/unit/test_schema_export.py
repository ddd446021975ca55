"""The committed JSON Schema is what the Structs generate: it cannot drift from the code."""

from __future__ import annotations

from pathlib import Path

from blackboard.schemas.export import json_schema, render
from blackboard.schemas.registry import COMMAND_TYPES, EVENT_TYPES

COMMITTED = Path(__file__).resolve().parents[2] / "schemas" / "jsonschema" / "blackboard.schema.json"


def test_the_committed_schema_is_the_generated_one() -> None:
    assert COMMITTED.read_bytes() == render(), (
        "schemas changed: run `python -m blackboard.schemas.export > schemas/jsonschema/blackboard.schema.json`")


def test_every_command_and_event_is_described() -> None:
    doc = json_schema()
    assert set(doc["commands"]) == set(COMMAND_TYPES) and set(doc["events"]) == set(EVENT_TYPES)
    money = doc["$defs"]["AddCost"]["properties"]["amount"]
    assert money["type"] == "string" and "pattern" in money
