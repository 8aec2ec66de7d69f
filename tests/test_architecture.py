"""The layout holds: layers from one table (llmpopcorn.LAYERS), arrows only pointing
down, no import cycle (lazy imports included), a small package top, a docstring for every
subpackage, and no private Pipeline member used outside the pipeline."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import llmpopcorn

SRC = Path(llmpopcorn.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = ["llmpopcorn", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}


def _resolve(target: str) -> str | None:
    """The package module that ``target`` (a module or a name in one) lives in."""
    parts = target.split(".")
    while parts:
        name = ".".join(parts)
        if name in MODULES:
            return name
        parts.pop()
    return None


def _runtime_nodes(tree: ast.AST):
    """Every node but those under ``if TYPE_CHECKING:`` (imports for type checkers only,
    never executed)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def import_graph(modules: dict[str, Path] = MODULES) -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its body (lazy imports in
    functions included, type-checking-only imports not); relative imports resolved
    against the module's package."""
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            for target in targets:
                if target.startswith("llmpopcorn"):
                    found = _resolve(target)
                    if found and found != name:
                        graph[name].add(found)
    return graph


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def upward_imports(graph: dict[str, set[str]], layers=llmpopcorn.LAYERS) -> list[str]:
    rank = {name: i for i, name in enumerate(layers)}
    found = []
    for module, targets in graph.items():
        for target in targets:
            a, b = _layer(module), _layer(target)
            if a is None or b is None or a == b:
                continue
            if a not in rank or b not in rank:
                found.append(f"{module} -> {target}: a layer missing from llmpopcorn.LAYERS")
            elif rank[b] > rank[a]:
                found.append(f"{module} ({a}) imports {target} ({b}), a higher layer")
    return sorted(found)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(set(graph) | {t for ts in graph.values() for t in ts}):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
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


def test_every_import_points_down_the_layers():
    assert upward_imports(import_graph()) == []


def test_no_import_cycle_lazy_imports_included():
    assert cycles(import_graph()) == []


def test_the_checks_can_fail():
    """The two checks find a planted upward import and a planted cycle."""
    graph = {
        "llmpopcorn.core.types": {"llmpopcorn.pipeline.core"},
        "llmpopcorn.pipeline.core": {"llmpopcorn.pipeline.report"},
        "llmpopcorn.pipeline.report": {"llmpopcorn.pipeline.core"},
    }
    assert upward_imports(graph) == [
        "llmpopcorn.core.types (core) imports llmpopcorn.pipeline.core (pipeline), a higher layer"
    ]
    assert cycles(graph) == [["llmpopcorn.pipeline.core", "llmpopcorn.pipeline.report"]]
    assert "missing from" in upward_imports({"llmpopcorn.attic.x": {"llmpopcorn.core.types"}})[0]


def test_the_package_top_is_small_and_every_subpackage_says_what_it_owns():
    entries = sorted(
        p.name
        for p in SRC.iterdir()
        if not p.name.startswith(("_", ".")) or p.name == "__init__.py"
    )
    assert len(entries) <= 12, entries
    assert set(llmpopcorn.LAYERS) <= set(entries)
    for layer in llmpopcorn.LAYERS:
        doc = ast.get_docstring(ast.parse((SRC / layer / "__init__.py").read_text()))
        assert doc and len(doc) > 60, f"{layer}/__init__.py needs a docstring saying what it owns"


def test_no_private_pipeline_member_is_used_outside_the_pipeline():
    """Batches, the study, the web studio and MCP call the pipeline's public stages."""
    found = []
    for name, path in MODULES.items():
        if _layer(name) == "pipeline":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and "pipeline" in ast.unparse(node.value).lower()
            ):
                found.append(f"{name}: {ast.unparse(node)}")
    assert found == []


def test_lazy_imports_count_and_type_checking_imports_do_not(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from llmpopcorn.pipeline.core import Pipeline\n"
        "def f():\n    from llmpopcorn.core.types import Idea\n",
        encoding="utf-8",
    )
    graph = import_graph({"llmpopcorn.backends.m": module})
    assert graph["llmpopcorn.backends.m"] == {"llmpopcorn.core.types"}
