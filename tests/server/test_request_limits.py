"""Every string a request body carries has a maximum length (issue 16: a 1 MB user id in failed logins grew the
append-only audit trail by 150 MiB in half a second). Walks the OpenAPI schema of every operation's body, JSON and
form alike; path and query strings are bounded by the HTTP server's request-line limit instead."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def database_url(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('db')}/server.db"


def _unbounded(spec: dict) -> list[str]:
    comps = spec["components"]["schemas"]
    seen: set[str] = set()
    out: list[str] = []

    def walk(schema: dict, where: str) -> None:
        if "$ref" in schema:
            name = schema["$ref"].split("/")[-1]
            if name in seen:
                return
            seen.add(name)
            schema, where = comps[name], name
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in schema.get(key, []):
                walk(sub, where)
        if schema.get("type") == "string" and "maxLength" not in schema and "enum" not in schema \
                and "const" not in schema and "contentMediaType" not in schema \
                and schema.get("format") not in ("date", "date-time", "binary"):
            out.append(where)
        if schema.get("type") == "array":
            walk(schema.get("items", {}), where + "[]")
        for name, prop in schema.get("properties", {}).items():
            walk(prop, f"{where}.{name}")
        if isinstance(schema.get("additionalProperties"), dict):
            walk(schema["additionalProperties"], where + ".*")

    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for content in op.get("requestBody", {}).get("content", {}).values():
                walk(content["schema"], f"{method.upper()} {path}")
    return sorted(set(out))


def test_every_string_of_every_request_body_is_bounded(app):
    assert _unbounded(app.openapi()) == []


def test_a_megabyte_user_id_is_refused_before_it_reaches_the_audit_trail(client):
    r = client.post("/api/v1/auth/token", data={"username": "u" * 1_000_000, "password": "whatever-1"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "username"]
