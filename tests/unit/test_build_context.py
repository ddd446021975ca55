"""scripts/build_context.py selects the files of the image's build context by Docker's .dockerignore rules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_context", ROOT / "scripts" / "build_context.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_context"] = module
    spec.loader.exec_module(module)
    return module


bc = _load()


@pytest.mark.parametrize(("patterns", "path", "out"), [
    ("tests", "tests/unit/test_x.py", True),             # a directory excludes what it holds
    ("tests", "events/tests/x.py", False),               # a bare name matches at the root only (not .gitignore)
    ("**/__pycache__", "events/__pycache__/a.pyc", True),
    ("**/__pycache__", "__pycache__/a.pyc", True),       # **/ also matches no directory at all
    ("*.md", "README.md", True),
    ("*.md", "docs/a.md", False),                        # * stays within one segment
    ("docs/**/*.md", "docs/a/b/c.md", True),
    ("/build", "build/x", True),                         # a leading slash is the root
    ("docker-compose*.yml", "docker-compose.redpanda-3.yml", True),
    ("ca?he", "cache/x", True),
    ("*.md\n!README.md", "README.md", False),            # an exception re-includes; the last match decides
    ("!README.md\n*.md", "README.md", True),
])
def test_patterns_follow_dockers_rules(patterns: str, path: str, out: bool) -> None:
    assert bc.excluded(path, bc.parse(patterns)) is out


def test_character_classes_are_refused_rather_than_misread() -> None:
    with pytest.raises(ValueError, match="character classes"):
        bc.parse("[ab]c")


def test_the_context_keeps_every_package_folder_and_drops_the_rest(tmp_path: Path) -> None:
    rules = bc.parse((ROOT / ".dockerignore").read_text())
    files = bc.context_files(ROOT, rules)
    assert "pyproject.toml" in files and "README.md" in files
    for entry in ROOT.iterdir():  # every folder that is a package reaches the image
        if (entry / "__init__.py").exists() and entry.name != "tests":
            assert f"{entry.name}/__init__.py" in files, entry.name
    assert not [f for f in files if f.startswith((".git/", ".venv/", "tests/")) or "__pycache__" in f]
