"""The client distribution keeps in step with the server: the same command types with the same fields,
types, constraints and defaults; the same version; and no import of the server."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest
from blackboard_client import commands as sdk

from blackboard.schemas.registry import COMMAND_TYPES

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "clients" / "python"


def _strip(schema: Any) -> Any:
    """A JSON Schema without the words that may differ (docstrings become titles and descriptions of objects)."""
    if isinstance(schema, dict):
        out = {k: _strip(v) for k, v in schema.items() if k not in ("title",)}
        if out.get("type") == "object":
            out.pop("description", None)
        return out
    if isinstance(schema, list):
        return [_strip(v) for v in schema]
    return schema


def test_the_client_has_a_builder_for_every_command_type_and_no_other() -> None:
    assert sorted(sdk.COMMANDS) == sorted(COMMAND_TYPES)


@pytest.mark.parametrize("name", sorted(COMMAND_TYPES))
def test_each_builder_has_the_servers_fields_types_constraints_and_defaults(name: str) -> None:
    server, client = COMMAND_TYPES[name][1], sdk.COMMANDS[name]
    theirs = msgspec.inspect.type_info(server)
    ours = msgspec.inspect.type_info(client)
    assert isinstance(theirs, msgspec.inspect.StructType) and isinstance(ours, msgspec.inspect.StructType)
    assert [(f.name, f.required, f.default) for f in ours.fields] == \
           [(f.name, f.required, f.default) for f in theirs.fields], "run scripts/sdk_commands.py"
    assert _strip(msgspec.json.schema(client)) == _strip(msgspec.json.schema(server)), "run scripts/sdk_commands.py"


def test_the_generated_modules_are_what_the_generator_writes_today() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import sdk_commands
    finally:
        sys.path.pop(0)
    package = SDK / "src/blackboard_client/commands"
    written = sdk_commands.sources()
    assert {p.name for p in package.glob("*.py")} == set(written), "run scripts/sdk_commands.py"
    for name, text in written.items():
        assert (package / name).read_text() == text, f"{name}: run scripts/sdk_commands.py"


def test_the_client_is_versioned_with_the_server() -> None:
    server = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    client = tomllib.loads((SDK / "pyproject.toml").read_text())["project"]
    assert client["version"] == server
    assert sorted(d.split(">")[0].split("=")[0] for d in client["dependencies"]) == ["httpx", "msgspec", "stamina"]


def test_the_client_imports_nothing_of_the_server() -> None:
    server_import = re.compile(r"^\s*(import blackboard\b(?!_)|from blackboard[. ])", re.MULTILINE)
    for path in (SDK / "src").rglob("*.py"):
        assert not server_import.search(path.read_text()), path
    probe = ("import sys, blackboard_client, blackboard_client.worker; "
             "print([m for m in sys.modules if m == 'blackboard' or m.startswith('blackboard.')])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
