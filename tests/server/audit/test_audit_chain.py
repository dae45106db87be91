"""Audit trail: append-only in the database, hash-chained; tampering with an entry or a signed record is
detected by the API and by `amtrace-server audit verify`, which say where."""

from __future__ import annotations

import time
from contextlib import contextmanager

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from server.cli import main as cli_main

PASSWORD = "correct-horse-battery"


@contextmanager
def attacker(plant):
    """A database administrator who switches off the append-only protection and edits rows directly."""
    engine = plant.app.state.engine
    pg = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        if pg:
            conn.execute(text("ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_append_only"))
        else:
            conn.execute(text("DROP TRIGGER audit_entries_no_update"))
            conn.execute(text("DROP TRIGGER audit_entries_no_delete"))
        yield conn
        if pg:
            conn.execute(text("ALTER TABLE audit_entries ENABLE TRIGGER audit_entries_append_only"))
        else:
            for verb in ("UPDATE", "DELETE"):
                conn.execute(text(f"CREATE TRIGGER audit_entries_no_{verb.lower()} BEFORE {verb} ON audit_entries "
                                  f"BEGIN SELECT RAISE(ABORT, 'audit trail is append-only: {verb} refused'); END"))


def verify(plant) -> dict:
    return plant.call("GET", "/audit/verify", "quality_engineer")


def run_cli(plant, monkeypatch, capsys, *args) -> tuple[int, str]:
    monkeypatch.setenv("AMTRACE_DATABASE_URL", plant.app.state.settings.database_url)
    monkeypatch.setenv("AMTRACE_FILE_STORE", plant.app.state.settings.file_store)  # stored files and anchors
    code = cli_main(["audit", "verify", *args])
    return code, capsys.readouterr().out


@pytest.fixture(scope="module")
def story(plant):
    """Some history: a qualified machine and an approved design iteration."""
    ctx = plant.ready()
    return ctx


def test_intact_chain_verifies(plant, story, monkeypatch, capsys):
    report = verify(plant)
    assert report["ok"] is True and report["breaks"] == []
    assert report["entries_checked"] == report["head_seq"] > 20
    assert report["signatures_checked"] == 4  # qualification approval, two design approvals, lot release
    code, out = run_cli(plant, monkeypatch, capsys)
    assert code == 0 and out.endswith("audit trail intact\n")


def test_entry_after_a_rolled_back_savepoint_chains_on_the_last_kept_entry(plant, story):
    """record() remembers the head within a transaction; a savepoint rolled back (the kiosk's gate preview)
    takes its entry with it, so the next entry must chain on the one before, still under the chain lock."""
    from server.audit.service import record
    from server.security import SYSTEM

    with plant.app.state.sessionmaker() as session, session.begin():
        savepoint = session.begin_nested()
        dropped = record(session, actor=SYSTEM, action="test_rolled_back", record_type="test", record_id=1)
        savepoint.rollback()
        after = record(session, actor=SYSTEM, action="test_after_savepoint", record_type="test", record_id=2)
        assert (after.seq, after.prev_hash) == (dropped.seq, dropped.prev_hash)
        if session.get_bind().dialect.name == "postgresql":
            # Rolling back to the savepoint released the lock taken inside it; record() took it again.
            assert session.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                                        "AND pid = pg_backend_pid()")).scalar() == 1
    report = verify(plant)
    assert report["ok"] is True and report["head_seq"] == after.seq


def test_database_refuses_update_and_delete_of_history(plant, story):
    for statement in ("UPDATE audit_entries SET reason = 'x' WHERE seq = 1", "DELETE FROM audit_entries WHERE seq = 1"):
        with pytest.raises(DBAPIError) as e:
            with plant.app.state.engine.begin() as conn:
                conn.execute(text(statement))
        assert "audit trail is append-only" in str(e.value)


def test_no_api_deletes_history(plant, app):
    paths = app.openapi()["paths"]
    # The one DELETE never deletes: it answers how long the record is kept, or sends past-retention records to the
    # signed purge (tests/server/retention/test_purge.py).
    assert [p for p, ops in paths.items() if "delete" in ops] == ["/api/v1/retention/records/{record_type}/{record_id}"]
    assert all(not p.startswith("/api/v1/audit") or list(ops) == ["get"] for p, ops in paths.items())


def test_signed_record_changed_in_database_is_located(plant, story, monkeypatch, capsys):
    it = story["iteration"]
    sigs = plant.call("GET", f"/audit/signatures?record_type=design_iteration&record_id={it['id']}",
                      "quality_engineer")
    with plant.app.state.engine.begin() as conn:
        conn.execute(text("UPDATE design_files SET sha256 = :s WHERE iteration_id = :i"), {"s": "0" * 64, "i": it["id"]})
        file_id = conn.execute(text("SELECT id FROM design_files WHERE iteration_id = :i"), {"i": it["id"]}).scalar()
    report = verify(plant)
    assert report["ok"] is False
    problems = [b["problem"] for b in report["breaks"]]
    assert problems[:2] == [
        f"signature {sigs[0]['id']} (approved by Dana Designer): design_iteration {it['id']} was changed after it "
        f"was signed",
        f"signature {sigs[1]['id']} (approved by Dr. Clara Clinician): design_iteration {it['id']} was changed "
        f"after it was signed"]
    # The row itself no longer matches its seal in the chain, and no stored file has the hash it now claims.
    assert problems[2].startswith(f"design_files row {file_id} was changed outside amtrace: it no longer matches "
                                  f"its seal in entry ")
    assert problems[3:] == [f"design file {story['iteration']['files'][0]['file_name']} (iteration {it['id']}): the "
                            f"stored file {plant.app.state.settings.file_store}/{'0' * 64} is missing"]
    code, out = run_cli(plant, monkeypatch, capsys)
    assert code == 1 and f"BROKEN at signature {sigs[0]['id']}: signature {sigs[0]['id']}" in out
    with plant.app.state.engine.begin() as conn:  # put it back for the next tests
        conn.execute(text("UPDATE design_files SET sha256 = :s WHERE iteration_id = :i"), {"s": story["sha"],
                                                                                         "i": it["id"]})
    assert verify(plant)["ok"] is True


def test_signature_moved_to_another_record_is_detected(plant, story):
    other = plant.iteration(plant.design(plant.case()["id"])["id"], sign=False)
    it = story["iteration"]
    sigs = plant.call("GET", f"/audit/signatures?record_type=design_iteration&record_id={it['id']}",
                      "quality_engineer")
    with plant.app.state.engine.begin() as conn:
        conn.execute(text("UPDATE signatures SET record_id = :o WHERE id = :s"), {"o": str(other["id"]),
                                                                                  "s": sigs[1]["id"]})
    report = verify(plant)
    assert [b["problem"] for b in report["breaks"]][:1] == [
        f"signature {sigs[1]['id']} (approved by Dr. Clara Clinician) was altered or moved to another record"]
    assert [b["problem"] for b in report["breaks"]][1].startswith(f"signatures row {sigs[1]['id']} was changed "
                                                                  f"outside amtrace")
    with plant.app.state.engine.begin() as conn:
        conn.execute(text("UPDATE signatures SET record_id = :o WHERE id = :s"), {"o": str(it["id"]),
                                                                                  "s": sigs[1]["id"]})
    assert verify(plant)["ok"] is True


def test_edited_audit_entry_is_located(plant, story, monkeypatch, capsys):
    head = verify(plant)["head_seq"]
    target = head - 5
    with attacker(plant) as conn:
        original = conn.execute(text("SELECT new_values FROM audit_entries WHERE seq = :s"), {"s": target}).scalar()
        conn.execute(text("UPDATE audit_entries SET new_values = '{}' WHERE seq = :s"), {"s": target})
    report = verify(plant)
    assert [b["seq"] for b in report["breaks"]] == [target]
    assert report["breaks"][0]["problem"].startswith(f"entry {target} (")
    assert report["breaks"][0]["problem"].endswith("was altered after it was written")
    code, out = run_cli(plant, monkeypatch, capsys)
    assert code == 1 and f"BROKEN at entry {target}: entry {target} (" in out
    # The scheduled check's outcome reaches Prometheus (the AmtraceAuditVerifyFailed alert).
    assert _audit_metrics(plant) == {"amtrace_audit_verify_ok": 0, "amtrace_audit_verify_problems": 1}
    with attacker(plant) as conn:
        conn.execute(text("UPDATE audit_entries SET new_values = :v WHERE seq = :s"), {"v": original, "s": target})
    head = verify(plant)["head_seq"]
    assert run_cli(plant, monkeypatch, capsys)[0] == 0
    assert verify(plant)["head_seq"] == head  # recording the outcome appends nothing to the chain it examined
    assert _audit_metrics(plant) == {"amtrace_audit_verify_ok": 1, "amtrace_audit_verify_problems": 0}
    runs = lambda: plant.app.state.engine.connect().execute(text("SELECT count(*) FROM audit_verifications")).scalar()  # noqa: E731
    before = runs()
    assert run_cli(plant, monkeypatch, capsys, "--no-record")[0] == 0
    assert runs() == before  # a read-only check (of a backup, say) leaves no row


def _audit_metrics(plant) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families
    text_ = plant.client.get("/metrics", headers=plant.h("admin")).text
    found = {s.name: s.value for f in text_string_to_metric_families(text_) for s in f.samples
             if s.name.startswith("amtrace_audit_verify")}
    assert abs(found.pop("amtrace_audit_verify_last_run_timestamp_seconds") - time.time()) < 60
    return found


def test_deleted_audit_entries_are_located(plant, story, monkeypatch, capsys):
    before = verify(plant)
    target = before["head_seq"] - 3
    with attacker(plant) as conn:
        conn.execute(text("DELETE FROM audit_entries WHERE seq = :s"), {"s": target})
    report = verify(plant)
    # The gap is named first; rows whose only seal was in the deleted entry are named after it.
    assert [(b["seq"], b["problem"]) for b in report["breaks"]][:1] == [
        (target + 1, f"entries {target} to {target} are missing (deleted from the database)")]
    # Deleting the newest entries leaves no gap: the head hash kept outside the database reveals it.
    with attacker(plant) as conn:
        conn.execute(text("DELETE FROM audit_entries WHERE seq = :s"), {"s": before["head_seq"]})
    code, out = run_cli(plant, monkeypatch, capsys, "--expect-head", before["head_hash"])
    assert code == 1
    assert "BROKEN at chain: the head recorded earlier is no longer in the chain" in out


def test_failed_login_and_refused_signature_are_recorded(plant):
    r = plant.client.post("/api/v1/auth/token", data={"username": "operator", "password": "wrong-password"})
    assert r.status_code == 401 and r.json() == {"code": "login_failed", "detail": "User id or password is not correct, or the account is locked for a while after repeated failures"}
    it = plant.iteration(plant.design(plant.case()["id"])["id"], sign=False)
    r = plant.client.post(f"/api/v1/designs/iterations/{it['id']}/signatures", headers=plant.h("clinician"),
                          json={"password": "not-my-password"})
    assert r.status_code == 409 and r.json()["detail"] == "Signature refused: the password is not correct"
    entries = plant.call("GET", "/audit/entries?after_seq=0&limit=1000", "admin")
    while len(entries) == 1000:
        entries += plant.call("GET", f"/audit/entries?after_seq={entries[-1]['seq']}&limit=1000", "admin")
    actions = [e["action"] for e in entries]
    assert "login_failed" in actions and "signature_refused" in actions
