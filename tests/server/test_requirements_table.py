"""docs/requirements.md maps each requirement to the doors that enforce it and the tests that check it; a table
that names a test or an endpoint that does not exist says something untrue, so it is checked here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "docs" / "requirements.md"


def _rows() -> list[list[str]]:
    rows = [line.split("|")[1:-1] for line in TABLE.read_text().splitlines() if re.match(r"^\| \d+ \|", line)]
    return [[c.strip() for c in r] for r in rows]


def test_every_requirement_of_the_domain_has_a_row():
    domain = (ROOT.parent / "shared" / "domain.md")
    numbers = [int(r[0]) for r in _rows()]
    assert numbers == list(range(1, len(numbers) + 1))
    if domain.exists():  # the shared folder sits beside the checkout in the workplace, not in a fresh clone
        wanted = len(re.findall(r"^\| \d+ \|", domain.read_text(), flags=re.M))
        assert len(numbers) == wanted


def test_every_test_named_in_the_table_exists():
    named = {t for row in _rows() for t in re.findall(r"`(tests/[^`]+)`", row[-1])}
    assert named, "the table names tests"
    missing = sorted(t for t in named if not (ROOT / t).exists())
    assert missing == []


@pytest.fixture(scope="module")
def database_url(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('db')}/server.db"


def test_every_endpoint_named_in_the_table_exists(app):
    paths = app.openapi()["paths"]
    named = {(m, p) for row in _rows() for m, p in re.findall(r"`(GET|POST|PUT) (/api/v1/[^`]+)`", row[3])}
    assert named, "the table names endpoints"
    missing = sorted(f"{m} {p}" for m, p in named if m.lower() not in paths.get(p, {}))
    assert missing == []
