"""`audit verify` catches what an auditor would try with SQL: every regulated row is sealed in the chain, every
signature has its entry, stored files keep their bytes, the chain's head is anchored outside the database, and a
wrong key is named as such (issue 16: 18 of 33-35 tampering scenarios went unseen before)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from server.audit.anchors import key_fingerprint
from server.cli import main as cli_main
from test_audit_chain import attacker

OTHER_KEY = "an-entirely-different-audit-key-0123456789abcdef"


@pytest.fixture(scope="module")
def story(plant):
    """A qualified machine, an approved design, a released job with one gate decision."""
    ctx = plant.ready()
    ctx["decision"] = plant.gate(ctx)
    assert ctx["decision"]["allowed"] is True
    return ctx


def problems(plant) -> list[tuple[int | None, str]]:
    report = plant.call("GET", "/audit/verify", "quality_engineer")
    return [(b["seq"], b["problem"]) for b in report["breaks"]]


def run_cli(plant, monkeypatch, capsys, *args, key: str | None = None) -> tuple[int, str]:
    s = plant.app.state.settings
    monkeypatch.setenv("AMTRACE_DATABASE_URL", s.database_url)
    monkeypatch.setenv("AMTRACE_FILE_STORE", s.file_store)
    if key:
        monkeypatch.setenv("AMTRACE_AUDIT_KEY", key)
    code = cli_main(["audit", *args])
    return code, capsys.readouterr().out


def test_intact_plant_verifies_every_row(plant, story):
    report = plant.call("GET", "/audit/verify", "quality_engineer")
    assert report["ok"] is True, report["breaks"]
    tables = plant.app.state.engine.connect()
    with tables as conn:
        users = conn.execute(text("SELECT count(*) FROM users")).scalar()
        decisions = conn.execute(text("SELECT count(*) FROM gate_decisions")).scalar()
    assert report["rows_checked"] > users + decisions  # every regulated table, not only signed records


# (what an attacker edits, the SQL, the SQL that puts it back, the table whose row must be named)
EDITS = [
    ("a user's role", "UPDATE users SET role = 'admin' WHERE username = 'operator'",
     "UPDATE users SET role = 'operator' WHERE username = 'operator'", "users"),
    ("a user's password hash", "UPDATE users SET password_hash = password_hash || 'x' WHERE username = 'clinician'",
     "UPDATE users SET password_hash = substr(password_hash, 1, length(password_hash) - 1) "
     "WHERE username = 'clinician'", "users"),
    ("a design's material (outside the signed hash)", "UPDATE designs SET material = 'CoCr' WHERE id = :design",
     "UPDATE designs SET material = :material WHERE id = :design", "designs"),
    ("a design's GTIN", "UPDATE designs SET gtin = '00000000000000' WHERE id = :design",
     "UPDATE designs SET gtin = :gtin WHERE id = :design", "designs"),
    ("a scope's valid_until", "UPDATE qualification_scopes SET valid_until = '2099-12-31' WHERE id = :scope",
     "UPDATE qualification_scopes SET valid_until = :valid_until WHERE id = :scope", "qualification_scopes"),
    ("a gate decision's verdict", "UPDATE gate_decisions SET allowed = NOT allowed WHERE id = :decision",
     "UPDATE gate_decisions SET allowed = NOT allowed WHERE id = :decision", "gate_decisions"),
    ("a machine's calibration due date", "UPDATE machines SET calibration_due = '2099-12-31' WHERE id = :machine",
     "UPDATE machines SET calibration_due = :calibration_due WHERE id = :machine", "machines"),
]


@pytest.mark.parametrize("what,edit,undo,table", EDITS, ids=[e[0] for e in EDITS])
def test_row_edited_in_sql_is_located(plant, story, what, edit, undo, table):
    with plant.app.state.engine.begin() as conn:
        params = {"design": story["design"]["id"], "scope": story["scope"]["id"],
                  "decision": story["decision"]["decision_id"], "machine": story["machine"]["id"]}
        original = dict(conn.execute(text("SELECT d.material, d.gtin, s.valid_until, m.calibration_due "
                                          "FROM designs d, qualification_scopes s, machines m WHERE d.id = :design "
                                          "AND s.id = :scope AND m.id = :machine"), params).one()._mapping)
        assert conn.execute(text(edit), params).rowcount == 1
    try:
        found = problems(plant)
        assert len(found) == 1, found
        seq, problem = found[0]
        assert f"{table} row " in problem and "was changed outside amtrace: it no longer matches its seal in entry " \
            f"{seq}" in problem
    finally:
        with plant.app.state.engine.begin() as conn:
            conn.execute(text(undo), {**params, **original})
    assert problems(plant) == []


def test_row_added_in_sql_is_named(plant, story):
    with plant.app.state.engine.begin() as conn:
        conn.execute(text("INSERT INTO users (username, full_name, role, password_hash, active, failed_logins, "
                          "created_at, token_version, must_change_password) VALUES ('mallory', 'Mallory', 'admin', "
                          "'x', true, 0, '2026-01-01 00:00:00', 0, false)"))
        uid = conn.execute(text("SELECT id FROM users WHERE username = 'mallory'")).scalar()
    try:
        assert problems(plant) == [(None, f"users row {uid} is in no audit entry: it was added outside amtrace")]
    finally:
        with plant.app.state.engine.begin() as conn:
            conn.execute(text("DELETE FROM users WHERE id = :u"), {"u": uid})
    assert problems(plant) == []


def test_deleted_signature_row_is_located(plant, story):
    it = story["iteration"]
    sig = plant.call("GET", f"/audit/signatures?record_type=design_iteration&record_id={it['id']}",
                     "quality_engineer")[0]
    with plant.app.state.engine.begin() as conn:
        row = dict(conn.execute(text("SELECT * FROM signatures WHERE id = :s"), {"s": sig["id"]}).one()._mapping)
        conn.execute(text("DELETE FROM signatures WHERE id = :s"), {"s": sig["id"]})
    try:
        found = problems(plant)
        assert [p for _, p in found][0] == (f"signature {sig['id']}, recorded in entry {found[0][0]}, is no longer "
                                            f"in the database: the signature row was deleted")
        assert any(p.startswith(f"signatures row {sig['id']} (sealed in entry ") and p.endswith(
            "was deleted from the database") for _, p in found)
    finally:
        with plant.app.state.engine.begin() as conn:
            conn.execute(text(f"INSERT INTO signatures ({', '.join(row)}) VALUES "
                              f"({', '.join(':' + c for c in row)})"), row)
    assert problems(plant) == []


def test_stored_file_bytes_replaced_are_named(plant, story):
    store = plant.app.state.settings.file_store
    path = f"{store}/{story['sha']}"
    original = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(original.replace(b"facet", b"FACET", 1) if b"facet" in original else original + b"\0")
    try:
        name = story["iteration"]["files"][0]["file_name"]
        assert problems(plant) == [(None, f"design file {name} (iteration {story['iteration']['id']}): the stored "
                                          f"file {path} no longer has its recorded SHA-256 (its bytes were replaced)")]
    finally:
        with open(path, "wb") as f:
            f.write(original)
    assert problems(plant) == []


def test_failed_logins_and_heartbeats_add_no_seals(plant, story):
    """The lockout counter and liveness stamps are left out of the row hash: use is not a record."""
    def seals() -> int:
        with plant.app.state.engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM audit_entries WHERE action = 'rows_sealed'")).scalar()
    before = seals()
    r = plant.client.post("/api/v1/auth/token", data={"username": "quality.engineer2", "password": "wrong"})
    assert r.status_code == 401
    plant.call("POST", "/agents/heartbeat", story["machine"]["agent"], json={"status": {"ok": True}})
    assert seals() == before
    assert problems(plant) == []


def test_tail_deleted_is_caught_by_the_anchor_without_expect_head(plant, story, monkeypatch, capsys):
    code, out = run_cli(plant, monkeypatch, capsys, "anchor")
    assert code == 0 and out.startswith("anchored entry ")
    anchored = json.loads(open(plant.app.state.settings.anchor_path).read().splitlines()[-1])
    assert anchored["key_fingerprint"] == key_fingerprint(plant.app.state.settings.audit_key)
    with attacker(plant) as conn:
        tail = [dict(r._mapping) for r in conn.execute(
            text("SELECT * FROM audit_entries WHERE seq > :s ORDER BY seq"), {"s": anchored["seq"] - 2})]
        conn.execute(text("DELETE FROM audit_entries WHERE seq > :s"), {"s": anchored["seq"] - 2})
    try:
        found = problems(plant)
        head = anchored["seq"] - 2
        assert (anchored["seq"], f"entries {head + 1} to {anchored['seq']} are missing: the chain ends at entry {head} "
                                 f"but its head was entry {anchored['seq']} on ") == (found[0][0], found[0][1][:len(
                                     f"entries {head + 1} to {anchored['seq']} are missing: the chain ends at entry "
                                     f"{head} but its head was entry {anchored['seq']} on ")])
        code, out = run_cli(plant, monkeypatch, capsys, "verify")
        assert code == 1 and f"BROKEN at entry {anchored['seq']}: entries {head + 1} to" in out
    finally:
        with attacker(plant) as conn:
            for row in tail:
                conn.execute(text(f"INSERT INTO audit_entries ({', '.join(row)}) VALUES "
                                  f"({', '.join(':' + c for c in row)})"), row)
    assert problems(plant) == []


def test_wrong_key_is_named_not_every_entry(plant, story, monkeypatch, capsys):
    code, out = run_cli(plant, monkeypatch, capsys, "verify", key=OTHER_KEY)
    assert code == 1
    broken = [line for line in out.splitlines() if line.startswith("BROKEN")]
    assert broken == [f"BROKEN at chain: the audit key does not match the chain: no entry verifies with this key "
                      f"(fingerprint {key_fingerprint(OTHER_KEY)}; the anchors were written with "
                      f"{key_fingerprint(plant.app.state.settings.audit_key)}). Set AMTRACE_AUDIT_KEY to the key the "
                      f"chain was written with; if it is right, every entry was rewritten"]


def test_every_entry_deleted_while_signatures_exist(plant, story):
    with attacker(plant) as conn:
        saved = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM audit_entries ORDER BY seq"))]
        conn.execute(text("DELETE FROM audit_entries"))
    try:
        report = plant.call("GET", "/audit/verify", "quality_engineer")
        # The request itself may append (nothing does for a verify); what matters: nothing verifies.
        assert report["ok"] is False
        found = [b["problem"] for b in report["breaks"]]
        assert any("has no 'signed' entry in the audit trail: added outside amtrace" in p for p in found)
        assert any(p.startswith("users row ") and p.endswith("is in no audit entry: it was added outside amtrace")
                   for p in found)
    finally:
        with attacker(plant) as conn:
            conn.execute(text("DELETE FROM audit_entries"))
            for row in saved:
                conn.execute(text(f"INSERT INTO audit_entries ({', '.join(row)}) VALUES "
                                  f"({', '.join(':' + c for c in row)})"), row)
    assert problems(plant) == []


def test_migrate_seals_rows_written_before_row_seals_once(tmp_path, monkeypatch, capsys):
    """An upgraded database: its rows predate row seals. `migrate` seals them once, as a baseline; a row added
    in SQL after that is reported, not silently adopted by the next migrate."""
    url = f"sqlite:///{tmp_path}/old.db"
    monkeypatch.setenv("AMTRACE_DATABASE_URL", url)
    monkeypatch.setenv("AMTRACE_FILE_STORE", str(tmp_path / "files"))
    assert cli_main(["migrate"]) == 0
    from sqlalchemy import create_engine
    engine = create_engine(url)
    insert_user = text("INSERT INTO users (username, full_name, role, password_hash, active, failed_logins, "
                       "created_at, token_version, must_change_password) VALUES (:u, :u, 'admin', 'x', 1, 0, "
                       "'2025-01-01 00:00:00.000000', 0, 0)")
    with engine.begin() as conn:
        conn.execute(insert_user, {"u": "from-2025"})
    capsys.readouterr()
    assert cli_main(["migrate"]) == 0
    assert "sealed 1 existing rows into the audit chain" in capsys.readouterr().out
    assert cli_main(["audit", "verify"]) == 0
    assert capsys.readouterr().out.endswith("audit trail intact\n")
    with engine.begin() as conn:
        conn.execute(insert_user, {"u": "smuggled"})
    assert cli_main(["migrate"]) == 0
    assert "existing rows" not in capsys.readouterr().out
    assert cli_main(["audit", "verify"]) == 1
    assert "BROKEN at chain: users row 2 is in no audit entry: it was added outside amtrace" in capsys.readouterr().out
    engine.dispose()
