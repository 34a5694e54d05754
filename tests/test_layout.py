"""The layout's rules, checked on the source: no import cycles between keyhouse's modules (not even
through an import inside a function), and dependencies pointing one way.

    kit  <-  auth  <-  models  <-  graphql (the shared layer)  <-  keys  <-  usage, audit,
    organizations, webhooks, leaks  <-  operators  <-  graphql.schema and graphql.view, runtime,
    main, cli

Between features: usage, audit, organizations, webhooks and leaks build on keys; keys imports
none of them, and they import none of each other. The operator plane builds on organizations and
usage; none of the features imports it. The dashboard only serves files: it imports nothing of
the app.
Every import counts, wherever it is written.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"

# Leaves any module may import: the settings and the process's metrics.
LEAVES = ("app.config", "app.metrics")
# What each part of the app may import from the app (besides itself and the leaves).
KIT = ("app.kit",)
AUTH = (*KIT, "app.auth")
MODELS = (*AUTH, "app.models")
GRAPHQL_LAYER = (*MODELS, "app.graphql", "app.runtime")
KEYS = (*GRAPHQL_LAYER, "app.keys")
ALLOWED: dict[str, tuple[str, ...]] = {
    "app.kit": KIT,
    "app.auth": AUTH,
    "app.models": MODELS,
    "app.keys": KEYS,
    "app.usage": (*KEYS, "app.usage"),
    "app.audit": (*KEYS, "app.audit"),
    "app.organizations": (*KEYS, "app.organizations"),
    "app.webhooks": (*KEYS, "app.webhooks"),
    "app.leaks": (*KEYS, "app.leaks"),
    # The operator plane acts on organizations and reads usage; none of them imports it.
    "app.operators": (*KEYS, "app.operators", "app.organizations", "app.usage"),
    "app.dashboard": ("app.dashboard",),
}
# The graphql package is the shared layer but for the two modules where the features meet.
GRAPHQL_MEETING_POINTS = ("app.graphql.schema", "app.graphql.view")


def _module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path for path in APP.rglob("*.py") if "migrations" not in path.parts
    }


def _imports(path: Path, known: set[str]) -> Iterator[str]:
    """Every app module ``path`` imports, at any depth of the file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from app.kit import db`` imports the module app.kit.db.
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            if name in known:
                yield name


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: set(_imports(path, known)) - {name} for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _part_of(module: str) -> str | None:
    if _within(module, GRAPHQL_MEETING_POINTS):
        return None
    if _within(module, ("app.graphql",)):
        return "app.graphql"
    return next((part for part in ALLOWED if _within(module, (part,))), None)


def test_no_module_imports_itself_through_others() -> None:
    assert _cycles(_graph()) == []


def test_every_import_points_down_the_layers() -> None:
    allowed = {**ALLOWED, "app.graphql": GRAPHQL_LAYER}
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if (part := _part_of(module)) is not None
        for target in targets
        if target not in LEAVES and not _within(target, allowed[part])
    )
    assert wrong == []


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from app.keys import service\n")

    assert list(_imports(source, {"app.keys", "app.keys.service"})) == [
        "app.keys",
        "app.keys.service",
    ]


def test_the_checker_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
