"""The layers of the code base, as the README draws them, enforced.

    salesflow_cli ─► producers, stream_app, mart_builder ─► salesflow (the shared core)

The stages meet only through the shared core (the typed state contract in
`salesflow.tables`, topic names, the codec); the core imports no stage; nothing but the CLI
imports the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("producers", "stream_app", "mart_builder")
PACKAGES = ("salesflow", "salesflow_cli", *STAGES)


def imported_packages(package: str) -> dict[str, set[str]]:
    """module path -> the project packages it imports (at any depth of the file)."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            found |= {name.split(".")[0] for name in names} & set(PACKAGES)
        out[str(path.relative_to(ROOT))] = found
    return out


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_only_the_core(stage):
    others = set(PACKAGES) - {stage, "salesflow"}
    bad = {module: found & others for module, found in imported_packages(stage).items()
           if found & others}
    assert not bad, bad


def test_the_core_imports_no_stage_and_no_cli():
    bad = {module: found - {"salesflow"} for module, found in imported_packages(
        "salesflow").items() if found - {"salesflow"}}
    assert not bad, bad
