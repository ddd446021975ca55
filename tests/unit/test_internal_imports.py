"""Every ``from blackboard… import name`` in the repository names a module and a name that exist.

Note: mypy runs with ``ignore_missing_imports`` (some libraries ship no types), which also lets an import
of a project module that has moved or gone pass the type check; a test that imports it would still fail,
but only when it runs. This catches it for every file, tests and benchmarks included.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Where the project's own Python lives, as checked out (the rooms install as ``blackboard.<room>``).
FOLDERS = ("blackboard", "schemas", "domain", "events", "command_api", "projector", "query_api", "processes",
           "ops", "integrations", "benchmarks", "tests", "scripts")


def _imports() -> list[tuple[str, str, str]]:
    found = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                        and node.module.split(".")[0] == "blackboard":
                    found += [(str(path.relative_to(ROOT)), node.module, alias.name) for alias in node.names]
    return found


def _resolves(module: str, name: str) -> bool:
    try:
        imported = importlib.import_module(module)
    except ImportError:
        return False
    if name == "*" or hasattr(imported, name):
        return True
    try:
        importlib.import_module(f"{module}.{name}")
    except ImportError:
        return False
    return True


def test_every_project_import_names_something_that_exists() -> None:
    imports = _imports()
    assert len(imports) > 500  # the walk found the code
    missing = [f"{path}: from {module} import {name}" for path, module, name in imports if not _resolves(module, name)]
    assert missing == []
