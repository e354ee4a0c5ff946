"""The house layout, checked from the source: which package may import which, and where torch may appear
(``engine/`` and ``*/backends/`` only)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "ingestion", "retrieval", "reranking", "api")
# What each package may import of the others: engine is the leaf; retrieval and reranking use only engine;
# nothing imports api.
ALLOWED = {
    "engine": set(),
    "retrieval": {"engine"},
    "reranking": {"engine"},
    "ingestion": {"retrieval", "engine"},
    "api": {"engine", "ingestion", "retrieval", "reranking"},
}
HEAVY = {"torch", "transformers", "sentence_transformers", "triton"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_what_the_layout_allows(package: str) -> None:
    for path in modules(package):
        crossing = (imports(path) & set(PACKAGES)) - {package} - ALLOWED[package]
        assert not crossing, f"{path.relative_to(ROOT)} imports {sorted(crossing)}"


@pytest.mark.parametrize("package", PACKAGES)
def test_torch_and_transformers_only_in_backends(package: str) -> None:
    for path in modules(package):
        if "backends" in path.parts or path.parts[len(ROOT.parts)] == "engine":
            continue
        heavy = imports(path) & HEAVY
        assert not heavy, f"{path.relative_to(ROOT)} imports {sorted(heavy)} outside a backends/ module"


def test_the_api_imports_without_loading_torch() -> None:
    code = (
        "import sys, api.app, api.cli, ingestion.worker, retrieval, reranking; "
        "print(','.join(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.strip() == ""
