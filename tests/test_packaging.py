"""The two installs: `amtrace[edge]` and `amtrace[server]` each declare every library their code imports, neither
pulls the other's, and each command says which extra is missing instead of a traceback."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!\[;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _declared(*extras: str) -> set[str]:
    reqs = list(PROJECT["dependencies"]) + [r for e in extras for r in PROJECT["optional-dependencies"][e]]
    return {_name(r) for r in reqs}


def _imported_distributions(package: str) -> dict[str, set[str]]:
    """Third-party distributions the package imports (functions and type-only imports included), and where."""
    stdlib = set(sys.stdlib_module_names)
    dists = importlib.metadata.packages_distributions()
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            for name in names:
                top = name.split(".")[0]
                if top in stdlib or top in ("edge", "server", "__future__"):
                    continue
                for dist in dists.get(top, [top]):
                    found.setdefault(dist.lower().replace("_", "-"), set()).add(str(path.relative_to(ROOT)))
    return found


def test_each_program_declares_every_library_it_imports_in_its_own_extra():
    for package, extra in (("edge", "edge"), ("server", "server")):
        missing = {d: sorted(w)[:2] for d, w in _imported_distributions(package).items() if d not in _declared(extra)}
        assert not missing, f"{package}/ imports libraries its extra '{extra}' lacks: {missing}"


def test_neither_install_pulls_the_other_programs_libraries():
    edge, server = _declared("edge"), _declared("server")
    assert not edge & {"fastapi", "uvicorn", "sqlalchemy", "alembic", "reportlab", "matplotlib", "psycopg"}
    assert not server & {"asyncua", "paho-mqtt", "pymodbus", "trimesh", "numpy-stl", "scipy", "influxdb-client"}
    assert {"edge", "server"} <= {m for r in PROJECT["optional-dependencies"]["dev"]
                                  for m in re.findall(r"amtrace\[([^\]]+)\]", r) for m in m.split(",")}


def test_the_commands_name_the_missing_extra():
    """Run with the libraries made unimportable (sys.modules[name] = None, as an install without them)."""
    def run(code: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)

    server = run("import sys; sys.modules['fastapi'] = sys.modules['reportlab'] = None\n"
                 "from server.entry import main; raise SystemExit(main(['migrate']))")
    assert server.returncode == 3, server.stderr
    assert "lacks the server's libraries (fastapi, reportlab)" in server.stderr
    assert "pip install 'amtrace[server]'" in server.stderr and "Traceback" not in server.stderr
    edge = run("import sys; sys.modules['asyncua'] = None\n"
               "from edge.cli import main; raise SystemExit(main(['status']))")
    assert edge.returncode == 3 and "lacks the edge's libraries (asyncua)" in edge.stderr, edge.stderr
    assert "pip install 'amtrace[edge]'" in edge.stderr
    # Reading machine files needs no protocol library.
    check = run("import sys; sys.modules['asyncua'] = sys.modules['pymodbus'] = None\n"
                "from edge.cli import main; raise SystemExit(main(['check-config']))")
    assert check.returncode == 0 and "hip-01.yaml: ok (hip_press, modbus" in check.stdout, check.stderr


def test_the_agent_and_the_server_share_one_contract():
    """The server's agent API serves the models the edge reads (edge/contract.py), and both bound text alike."""
    from edge import contract
    from server.agents import schemas
    from server.limits import TEXT_MAX

    for name in ("AgentContext", "HeartbeatIn", "IdentityIn", "IdentityOut", "BuildFileCheckIn", "ExcursionIn",
                 "ExcursionOut", "CycleWindow"):
        assert getattr(schemas, name) is getattr(contract, name), name
    assert contract.TEXT_MAX == TEXT_MAX
