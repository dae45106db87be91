"""The agent's helpers use only what their protocol in edge/parts.py names (issue 14: narrow wiring)."""

from __future__ import annotations

import ast
from pathlib import Path

from edge import parts

ROOT = Path(__file__).resolve().parents[2]


def _read_attributes(source: Path) -> set[str]:
    """Every X in `self.parts.X` or `parts.X` in the module."""
    found = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Attribute):
            v = node.value
            if (isinstance(v, ast.Attribute) and v.attr == "parts") or (isinstance(v, ast.Name) and v.id == "parts"):
                found.add(node.attr)
    return found


def test_each_helper_reads_only_what_its_protocol_names():
    for module, proto in (("serverlink", parts.LinkParts), ("buildfiles", parts.GuardParts),
                          ("http_api", parts.ApiParts)):
        allowed = set(proto.__annotations__)
        used = _read_attributes(ROOT / "edge" / f"{module}.py")
        assert used, module
        assert used <= allowed, f"edge/{module}.py uses {sorted(used - allowed)} beyond {proto.__name__}"


def test_the_agent_parts_satisfy_every_protocol():
    fields = set(parts.AgentParts.__dataclass_fields__)
    for proto in (parts.LinkParts, parts.GuardParts, parts.ApiParts):
        assert set(proto.__annotations__) <= fields, proto.__name__
