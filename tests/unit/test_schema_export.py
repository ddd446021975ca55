"""The committed JSON Schema says what the Structs say: it cannot drift from the code.

The comparison is of meaning: a field renamed, added, removed or retyped fails it, while a library
laying out docstrings differently does not (``export.meaning``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from blackboard.schemas.export import json_schema, meaning, render
from blackboard.schemas.registry import COMMAND_TYPES, EVENT_TYPES

COMMITTED = Path(__file__).resolve().parents[2] / "schemas" / "jsonschema" / "blackboard.schema.json"
REGENERATE = "schemas changed: run `python -m blackboard.schemas.export > schemas/jsonschema/blackboard.schema.json`"


def generated() -> Any:
    return json.loads(render())


def test_the_committed_schema_says_what_the_structs_say() -> None:
    assert meaning(json.loads(COMMITTED.read_text())) == meaning(generated()), REGENERATE


def test_a_docstring_laid_out_differently_means_the_same() -> None:
    doc = generated()
    reflowed = copy.deepcopy(doc)
    description = reflowed["$defs"]["AddCost"]["description"]
    reflowed["$defs"]["AddCost"]["description"] = "\n    " + description.replace(" ", "\n        ", 2) + "\n"
    assert reflowed != doc and meaning(reflowed) == meaning(doc)


def test_a_changed_field_means_something_else() -> None:
    doc = generated()
    for change in (_rename_a_field, _retype_a_field, _drop_a_field, _reword_a_description):
        changed = copy.deepcopy(doc)
        change(changed["$defs"]["AddCost"])
        assert meaning(changed) != meaning(doc), change.__name__


def _rename_a_field(struct: dict[str, Any]) -> None:
    struct["properties"]["cost"] = struct["properties"].pop("amount")


def _retype_a_field(struct: dict[str, Any]) -> None:
    struct["properties"]["amount"]["type"] = "number"


def _drop_a_field(struct: dict[str, Any]) -> None:
    del struct["properties"]["reason"]


def _reword_a_description(struct: dict[str, Any]) -> None:
    struct["description"] = "Something else entirely."


def test_every_command_and_event_is_described() -> None:
    doc = json_schema()
    assert set(doc["commands"]) == set(COMMAND_TYPES) and set(doc["events"]) == set(EVENT_TYPES)
    money = doc["$defs"]["AddCost"]["properties"]["amount"]
    assert money["type"] == "string" and "pattern" in money
