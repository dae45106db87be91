"""The import structure (issue 14): import-linter's contracts hold, and no module imports itself back through others,
counting imports inside functions (they hid an 11-module cycle in the server before)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def import_graph(package: str) -> dict[str, set[str]]:
    """module -> modules of the same root package it imports anywhere in its body (functions included)."""
    root = ROOT / package
    modules = {}
    for path in root.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                    base = ".".join(parts + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    graph[name].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_the_server_has_no_import_cycle_even_through_imports_inside_functions():
    assert cycles(import_graph("server")) == []


def test_the_edge_has_no_import_cycle_even_through_type_only_imports():
    # The server link, build-file guard and local API take the agent's parts (edge/parts.py), not the agent.
    assert cycles(import_graph("edge")) == []


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")  # import-linter's console script, in the same venv
    done = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "0 broken" in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]


def test_routers_hold_no_query():
    """Thin routers: HTTP in, one service call, the answer out; every query and rule lives in a service."""
    found = []
    for path in sorted((ROOT / "server").glob("*/router.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            on_session = isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "session"
            if name == "select" or (on_session and name in ("get", "scalar", "scalars", "execute", "query")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert not found, found
