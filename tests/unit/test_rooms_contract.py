"""The rooms' import contract covers every module of the wiring package, so none can slip past it."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_wiring_module_and_room_is_a_layer_of_the_contract() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")
    named = {name.strip() for layer in contract["layers"] for name in layer.replace("|", ":").split(":")}
    mapped = config["tool"]["setuptools"]["package-dir"]
    rooms = {package.split(".")[1] for package in mapped if package.count(".") == 1}
    wiring = {p.stem for p in (ROOT / "blackboard").glob("*.py") if p.stem != "__init__"}
    wiring |= {p.parent.name for p in (ROOT / "blackboard").glob("*/__init__.py")}
    assert rooms | wiring == named, f"not in the contract: {sorted((rooms | wiring) - named)}"
