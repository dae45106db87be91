"""Schemathesis (an implementation we did not write) fuzzes the whole API of the real server process, with data in
it, as several roles, with all of its checks (issue 16): no server error, every status and response documented in
the schema, content types and headers as declared, 405s that list every method of the resource in `Allow`, and the
negative-data and auth checks. Each role fuzzes the operations it is admitted to (the refusals of every other role
are the role × endpoint matrix's job, tests/server/test_roles.py); the open ones (log-in, health) go with the admin.
Bounded to 8 examples per operation, and the coverage phase runs once per operation (as the first role
admitted to it), so `make test` stays under 20 minutes; the exit code and the summary say
whether any check failed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fastapi.routing import APIRoute

from uikit import UiServer

ST = [sys.executable, str(Path(__file__).resolve().parent / "schemathesis_serial_ast.py")]
# Logging out, changing one's password or one's own account would end the fuzzing session itself.
EXCLUDED = ["--exclude-path", "/api/v1/auth/logout", "--exclude-path", "/api/v1/auth/password",
            "--exclude-path-regex", r"^/api/v1/users/\{user_id\}$"]


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory, influxdb):
    """The real server, reading the session's real InfluxDB (a history read without it answers 503, rightly)."""
    influxdb.create_database("fuzz")
    server = UiServer(tmp_path_factory.mktemp("fuzz-server"), env={
        "AMTRACE_INFLUX_URL": influxdb.url, "AMTRACE_INFLUX_DATABASE": "fuzz",
        "AMTRACE_LOGIN_RATE_PER_MIN": "1000"}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def seeded(plant):
    """Records the fuzzer can reach: a released job with its devices, a nonconformity, a case and design."""
    ctx = plant.ready(devices=2)
    assert plant.gate(ctx)["allowed"]
    plant.call("POST", "/nonconformities", "quality_engineer", 201, json={
        "kind": "surface", "description": "fuzz target", "device_code": ctx["job"]["devices"][0]["device_code"]})
    return ctx


def _admitted(app, role: str) -> list[str]:
    """The operation ids of the API that admit role (people's roles from each endpoint's require(...) guard)."""
    ids = {(m.upper(), p): op["operationId"] for p, ops in app.openapi()["paths"].items() for m, op in ops.items()}
    out = []
    for route in app.routes:
        routes = ([(route.path, route)] if isinstance(route, APIRoute) else
                  [("/api/v1" + r.path, r) for r in getattr(getattr(route, "original_router", None), "routes", [])])
        for path, r in routes:
            stack, roles = list(r.dependant.dependencies), None
            while stack and roles is None:
                dep = stack.pop()
                roles = getattr(dep.call, "allowed_roles", None)
                stack.extend(dep.dependencies)
            if (roles is None and role == "admin") or (roles is not None and role in roles):
                out += [ids[(m, path)] for m in r.methods if (m, path) in ids]
    return sorted(set(out))


ROLES = ["admin", "quality_engineer", "production_manager", "operator"]


def _schemathesis(argv: list[str], cwd: Path):
    run = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=cwd)
    for _ in range(2):
        if run.returncode == 0 or "AST constructor recursion depth mismatch" not in run.stdout:
            break
        # CPython 3.11's ast.parse is not safe across threads (gh-106905): serialised by the wrapper, and should
        # it strike anyway, an interpreter fault is not a finding: run again.
        run = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=cwd)
    return run


@pytest.mark.slow
@pytest.mark.parametrize("role", ROLES)
def test_no_operation_answers_a_server_error(ui_server, plant, seeded, role, tmp_path, app):
    token = plant.login(plant.users[role]["username"], "correct-horse-battery")["Authorization"]
    admitted = _admitted(app, role)
    assert len(admitted) >= 10, admitted
    # The coverage phase (boundary and negative values of every parameter: schema work, the same for every role)
    # runs once per operation, as the first role in ROLES admitted to it; every role fuzzes all it is admitted to.
    earlier = {op for r in ROLES[:ROLES.index(role)] for op in _admitted(app, r)}
    new, known = [op for op in admitted if op not in earlier], [op for op in admitted if op in earlier]
    base = [*ST, "run", f"{ui_server.url}/openapi.json", "-H", f"Authorization: {token}", "--checks", "all",
            "-n", "8", "--workers", "2", "--seed", "20261204", *EXCLUDED]
    generated = 0
    for ops, phases in ((new, "examples,coverage,fuzzing"), (known, "fuzzing")):
        if not ops:
            continue
        run = _schemathesis([*base, "--phases", phases, *sum((["--include-operation-id", i] for i in ops), [])],
                            tmp_path)
        (Path(ui_server.log).parent / f"schemathesis-{role}-{phases.split(',')[-2 if ',' in phases else 0]}.txt"
         ).write_text(run.stdout)
        summary = re.search(r"(\d+) generated, (.*)", run.stdout)
        assert summary is not None, run.stdout[-3000:]
        assert run.returncode == 0 and "failed" not in summary.group(2), run.stdout[-6000:]
        generated += int(summary.group(1))
    assert generated > 8 * len(admitted), "the fuzzer reached the operations"
    log = Path(ui_server.log).read_text()
    assert "Traceback" not in log, log[-3000:]
