"""The house layout, checked from the source: the import graph of the product, computed from the AST.

- No import cycle between files (lazy imports inside functions count too).
- Imports follow the direction ``engine <- {retrieval, reranking} <- ingestion <- api``: ``engine``
  imports none of the others, ``retrieval`` and ``reranking`` only ``engine`` (not each other),
  ``ingestion`` also ``retrieval``, and nothing imports ``api``.
- torch, transformers, sentence-transformers and triton only in ``engine/`` and ``*/backends/`` modules,
  and the API, the CLI and the worker import without loading them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "retrieval", "reranking", "ingestion", "api")
ALLOWED = {
    "engine": set(),
    "retrieval": {"engine"},
    "reranking": {"engine"},
    "ingestion": {"engine", "retrieval"},
    "api": {"engine", "retrieval", "reranking", "ingestion"},
}
HEAVY = {"torch", "transformers", "sentence_transformers", "triton"}


def _files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            files[name.removesuffix(".__init__")] = path
    return files


FILES = _files()


def _imported(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every dotted name ``module`` imports (with the line), relative imports made absolute."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            yield base, node.lineno
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno


def _resolve(name: str) -> str | None:
    while name and name not in FILES:
        name = name.rpartition(".")[0]
    return name or None


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {module: set() for module in FILES}
    for module, path in FILES.items():
        for name, _ in _imported(module, path):
            target = _resolve(name)
            # A module importing its own package's __init__ is how Python loads it, not a cycle.
            if target and target != module and not module.startswith(target + "."):
                edges[module].add(target)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one file (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_checker_sees_a_cycle_and_the_packages() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert {name.split(".")[0] for name in FILES} == set(PACKAGES)


def test_no_import_cycle_between_files() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_follow_the_layers(package: str) -> None:
    against = []
    for module, path in FILES.items():
        if module.split(".")[0] != package:
            continue
        for name, line in _imported(module, path):
            top = name.split(".")[0]
            if top in PACKAGES and top != package and top not in ALLOWED[package]:
                against.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not against, "\n".join(against)


@pytest.mark.parametrize("package", PACKAGES)
def test_torch_and_transformers_only_in_the_engine_and_backends(package: str) -> None:
    found = []
    for module, path in FILES.items():
        if module.split(".")[0] != package or package == "engine" or "backends" in path.parts:
            continue
        heavy = {name.split(".")[0] for name, _ in _imported(module, path)} & HEAVY
        if heavy:
            found.append(f"{path.relative_to(ROOT)} imports {sorted(heavy)}")
    assert not found, "\n".join(found)


def test_the_api_imports_without_loading_torch() -> None:
    code = (
        "import sys, api.app, api.cli, ingestion.worker, retrieval, reranking, engine; "
        "print(','.join(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.strip() == ""
