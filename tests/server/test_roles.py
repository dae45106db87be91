"""Role × endpoint matrix: every endpoint checks who asks; each role is refused where it must be."""

from __future__ import annotations

import re

from fastapi.routing import APIRoute

ROLES = ("admin", "operator", "production_manager", "quality_engineer", "design_engineer", "clinician")
# Open by design: logging in, and the liveness and readiness probes of load balancers.
OPEN = {("POST", "/api/v1/auth/token"), ("GET", "/healthz"), ("GET", "/readyz")}


def guard_of(route):
    """The require(...) dependency of a route, found in its dependency tree."""
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if hasattr(dep.call, "allowed_roles"):
            return dep.call
        stack.extend(dep.dependencies)
    return None


def api_routes(app):
    """(full path, APIRoute) for every route; included routers are mounted under /api/v1."""
    for route in app.routes:
        if isinstance(route, APIRoute):
            if not route.include_in_schema:
                continue  # the API's own documentation pages and the redirect to the pages: no data behind them
            yield route.path, route
        elif hasattr(route, "original_router"):  # FastAPI's included-router wrapper
            for sub in route.original_router.routes:
                yield "/api/v1" + sub.path, sub


def endpoints(app):
    for path, route in api_routes(app):
        for method in sorted(route.methods):
            yield method, re.sub(r"\{(\w+):\w+\}", r"{\1}", path), route  # {name:path} is {name} in OpenAPI


def test_matrix_covers_the_openapi_schema(app):
    documented = {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops}
    assert documented == {(m, p) for m, p, _ in endpoints(app)}


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_every_endpoint_is_guarded(app):
    unguarded = [(m, p) for m, p, r in endpoints(app) if (m, p) not in OPEN and guard_of(r) is None]
    assert unguarded == []


def test_matrix_people(plant, app):
    checked = 0
    for method, path, route in endpoints(app):
        guard = guard_of(route)
        if guard is None:
            continue
        for role in ROLES:
            if role in guard.allowed_roles:
                continue
            r = plant.client.request(method, concrete(path), headers=plant.h(role), json={})
            assert r.status_code == 403, (method, path, role, r.text)
            assert r.json() == {"code": "role_not_allowed", "detail": f"Role {role} may not do this; allowed: "
                                + (", ".join(guard.allowed_roles) or "edge agents only")}, (method, path, role)
            checked += 1
    assert checked > 150


def test_matrix_unauthenticated_and_agents(plant, app):
    m = plant.machine()
    for method, path, route in endpoints(app):
        guard = guard_of(route)
        if guard is None:
            continue
        r = plant.client.request(method, concrete(path), json={})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (method, path)
        if not guard.allows_agents:
            r = plant.client.request(method, concrete(path), headers=m["agent"], json={})
            assert (r.status_code, r.json()["code"]) == (403, "agent_not_allowed"), (method, path)


def test_key_rules(app):
    """Spot-check a few rules a quality engineer relies on."""
    rules = {(m, p): guard_of(r) for m, p, r in endpoints(app)}
    assert rules[("POST", "/api/v1/qualification/requalifications/{requalification_id}/approve")].allowed_roles == \
        ("quality_engineer",)
    assert rules[("POST", "/api/v1/designs/iterations/{iteration_id}/signatures")].allowed_roles == \
        ("design_engineer", "clinician")
    assert rules[("POST", "/api/v1/gate/decisions")].allowed_roles == ("operator",)
    assert rules[("POST", "/api/v1/gate/decisions")].allows_agents is True
    assert rules[("POST", "/api/v1/users")].allowed_roles == ("admin",)
    assert rules[("POST", "/api/v1/agents")].allowed_roles == ("admin",)
    assert rules[("POST", "/api/v1/nonconformities/{nc_id}/disposition")].allowed_roles == ("quality_engineer",)


def test_deactivated_user_token_stops_working(plant):
    u = plant.call("POST", "/users", "admin", 201, json={"username": "temp.worker", "full_name": "Tim Temp",
                                                         "role": "operator", "password": "temporary-pass-1"})
    headers = plant.login("temp.worker", "temporary-pass-1")
    plant.call("GET", "/auth/me", headers)
    plant.call("PATCH", f"/users/{u['id']}", "admin", json={"active": False, "reason": "left the company"})
    r = plant.client.get("/api/v1/auth/me", headers=headers)
    assert r.status_code == 401 and r.json()["code"] == "token_stale"
    r = plant.client.post("/api/v1/users", headers=plant.h("admin"), json={
        "username": "temp.worker", "full_name": "Someone Else", "role": "operator", "password": "another-pass-1"})
    assert r.status_code == 409 and r.json()["detail"] == ("User id 'temp.worker' exists or existed; user ids are "
                                                           "never reused")


def test_account_locks_after_failed_logins(plant):
    plant.call("POST", "/users", "admin", 201, json={"username": "lock.me", "full_name": "Lou Lock",
                                                     "role": "operator", "password": "lock-me-pass-1"})
    for _ in range(5):
        assert plant.client.post("/api/v1/auth/token", data={"username": "lock.me", "password": "bad"}).status_code == 401
    r = plant.client.post("/api/v1/auth/token", data={"username": "lock.me", "password": "lock-me-pass-1"})
    # Locked: even the right password is refused, in the words any failure gets (tests/server/auth).
    assert r.status_code == 401 and r.json()["code"] == "login_failed"
