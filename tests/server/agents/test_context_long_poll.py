"""Context by long poll: the server answers the moment a commit changes a machine's context, not at the next look."""

from __future__ import annotations

import threading
import time

import pytest


@pytest.fixture
def no_recheck(app):
    """Only a commit can end a wait early: the periodic re-read (for other server processes) is pushed out."""
    changes = app.state.context_changes
    before, changes.recheck_s = changes.recheck_s, 120.0
    yield
    changes.recheck_s = before


def _context(plant, m: dict, **params):
    r = plant.client.get(f"/api/v1/agents/machines/{m['id']}/context", headers=m["agent"], params=params)
    assert r.status_code == 200, r.text
    return r.headers["ETag"], r.json()


def test_a_commit_that_changes_the_context_ends_the_wait_with_the_new_context(plant, no_recheck):
    ctx = plant.ready()
    m = ctx["machine"]
    tag, body = _context(plant, m)
    assert body["job_id"] == str(ctx["job"]["id"]) and body["open_nonconformities"] == []

    def failed_check():
        time.sleep(0.5)
        r = plant.client.post(f"/api/v1/agents/machines/{m['id']}/build-file-checks", headers=m["agent"], json={
            "job_id": ctx["job"]["id"], "file_name": "cup.stl", "sha256": "ab" * 32, "passed": False,
            "detail": "hash differs from the approved design"})
        assert r.status_code == 201, r.text

    thread = threading.Thread(target=failed_check)
    thread.start()
    asked = time.monotonic()
    new_tag, new = _context(plant, m, wait_s=60, known=tag)
    waited = time.monotonic() - asked
    thread.join()
    # Woken by the commit: the wait (60 s) and the re-read (120 s) were both far off.
    assert waited < 30, f"the long poll answered only after {waited:.1f} s"
    assert new_tag != tag
    assert [nc["kind"] for nc in new["open_nonconformities"]] == ["build_file_mismatch"]


def test_an_unchanged_context_is_answered_when_the_wait_ends(plant, no_recheck):
    m = plant.machine()
    tag, body = _context(plant, m)
    asked = time.monotonic()
    same_tag, same = _context(plant, m, wait_s=1.0, known=tag)
    assert time.monotonic() - asked >= 1.0, "answered before the wait ended although nothing changed"
    assert (same_tag, same) == (tag, body)


def test_a_stale_etag_is_answered_at_once_and_another_machines_change_does_not_wake(plant, no_recheck):
    m, other = plant.machine(), plant.machine()
    tag, _ = _context(plant, m)
    stale, _ = _context(plant, m, wait_s=60, known="0" * 32)
    assert stale == tag

    def change_other():
        time.sleep(0.3)
        # A commit on another machine's rows (its identity) wakes nobody waiting on this one.
        plant.report_identity(other, software="5.0.0")

    thread = threading.Thread(target=change_other)
    thread.start()
    asked = time.monotonic()
    again, _ = _context(plant, m, wait_s=1.5, known=tag)
    thread.join()
    assert again == tag and time.monotonic() - asked >= 1.5


def test_wait_is_bounded_and_the_scope_still_checked(plant):
    a, b = plant.machine(), plant.machine()
    r = plant.client.get(f"/api/v1/agents/machines/{a['id']}/context", headers=a["agent"], params={"wait_s": 61})
    assert r.status_code == 422
    r = plant.client.get(f"/api/v1/agents/machines/{b['id']}/context", headers=a["agent"], params={"wait_s": 5})
    assert r.status_code == 403 and r.json()["code"] == "agent_scope"
    r = plant.client.get(f"/api/v1/agents/machines/{a['id']}/context", params={"wait_s": 5})
    assert r.status_code == 401
