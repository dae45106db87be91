"""The credential guard (issue 16): one lockout for every credential check, exact under parallel guessing, ending
by itself and growing; the same answer for unknown, locked and wrong; a per-client limit on failed logins; tokens
revoked by what ends their validity; a password an administrator set is changed before signing; kiosk sessions
limited to kiosk actions."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import select, text

from server.auth.service import authenticate
from server.db import session_scope
from server.errors import Unauthorized
from server.models import AuditEntry, User, utcnow

PASSWORD = "correct-horse-battery"
REFUSED = "User id or password is not correct, or the account is locked for a while after repeated failures"


def _person(plant, role: str = "operator", *, change: bool = True) -> dict:
    """A person an administrator creates through the API; changes the password themself unless told not to."""
    name = f"p.{uuid.uuid4().hex[:8]}"
    u = plant.call("POST", "/users", "admin", 201, json={"username": name, "full_name": f"Pat {name}", "role": role,
                                                         "password": "set-by-admin-1"})
    u["password"] = "set-by-admin-1"
    if change:
        token = plant.login(name, "set-by-admin-1")
        plant.call("POST", "/auth/password", token, json={"current_password": "set-by-admin-1",
                                                          "new_password": PASSWORD})
        u["password"] = PASSWORD
    return u


def _login(plant, username: str, password: str):
    return plant.client.post("/api/v1/auth/token", data={"username": username, "password": password})


def _whys(plant, user_id: int) -> list[str]:
    with plant.app.state.sessionmaker() as s:
        rows = s.scalars(select(AuditEntry.new_values).where(AuditEntry.action == "login_failed",
                                                             AuditEntry.record_id == str(user_id)))
        return [json.loads(v)["why"] for v in rows]


def test_fifty_parallel_wrong_guesses_check_exactly_the_limit(plant):
    """Each attempt is taken under a row lock before Argon2 runs: 5 passwords are checked, 45 refused as locked."""
    u = _person(plant)
    maker = plant.app.state.sessionmaker

    def guess(i: int) -> str:
        try:
            with session_scope(maker) as s:
                authenticate(s, username=u["username"], password=f"guess-{i}")
        except Unauthorized as e:
            return e.detail
        return "in"

    with ThreadPoolExecutor(max_workers=25) as pool:
        answers = list(pool.map(guess, range(50)))
    assert set(answers) == {REFUSED}, "all refused, in the same words"
    whys = _whys(plant, u["id"])
    assert (whys.count("wrong password"), whys.count("account locked")) == (5, 45)
    assert _login(plant, u["username"], PASSWORD).status_code == 401, "locked: even the right password"


def test_a_wrong_signature_counts_toward_the_same_lockout_and_locking_revokes_tokens(plant):
    ctx = plant.ready()
    u = _person(plant, "design_engineer")
    token = plant.login(u["username"], PASSWORD)
    design = plant.design(ctx["case"]["id"])
    it = plant.iteration(design["id"], sign=False)
    url = f"/api/v1/designs/iterations/{it['id']}/signatures"
    for _ in range(5):
        r = plant.client.post(url, headers=token, json={"password": "guessing"})
        assert r.json()["code"] == "signature_password"
    r = plant.client.post(url, headers=token, json={"password": PASSWORD})
    assert r.status_code == 401 and r.json()["code"] == "token_stale", "locked: the session ended"
    assert _login(plant, u["username"], PASSWORD).status_code == 401, "and the login is locked too"


def _signature_whys(plant, record_id: int) -> list[str]:
    with plant.app.state.sessionmaker() as s:
        rows = s.scalars(select(AuditEntry.new_values).where(AuditEntry.action == "signature_refused",
                                                             AuditEntry.record_type == "design_iteration",
                                                             AuditEntry.record_id == str(record_id)))
        return [json.loads(v)["why"] for v in rows]


def test_fifty_parallel_wrong_signatures_check_exactly_the_limit(plant):
    """A signature's password is taken as an attempt before Argon2 runs, like a login: a burst of parallel wrong
    signatures checks exactly the limit, not the limit plus the requests in flight (PostgreSQL overshot before)."""
    ctx = plant.ready()
    u = _person(plant, "design_engineer")
    token = plant.login(u["username"], PASSWORD)
    it = plant.iteration(plant.design(ctx["case"]["id"])["id"], sign=False)
    url = f"/api/v1/designs/iterations/{it['id']}/signatures"

    def guess(i: int) -> str:
        return plant.client.post(url, headers=token, json={"password": f"guess-{i}"}).json()["code"]

    with ThreadPoolExecutor(max_workers=25) as pool:
        codes = list(pool.map(guess, range(50)))
    assert codes.count("signature_password") == 5, codes
    # The rest: refused as locked, or (once the lock revoked the session) as a stale token, never checked.
    assert set(codes) - {"signature_password"} <= {"account_locked", "token_stale"}
    assert _signature_whys(plant, it["id"]).count("password did not match") == 5


def test_the_signature_password_is_checked_with_no_write_transaction_open(plant, monkeypatch):
    """Argon2 (~100 ms) must not run while the request holds SQLite's write lock or a PostgreSQL transaction: it
    held every other writer (gate decisions) that long per signature."""
    from server.auth import guard

    ctx = plant.ready()
    u = _person(plant, "design_engineer")
    token = plant.login(u["username"], PASSWORD)
    it = plant.iteration(plant.design(ctx["case"]["id"])["id"], sign=False)
    engine = plant.app.state.engine
    seen: list[tuple[str, object]] = []
    real = guard.check_secret

    def watching(settings, secret_hash, secret):
        if engine.dialect.name == "sqlite":
            from server.db import _write_lock_for
            seen.append(("write lock held", _write_lock_for(engine.url.database).locked()))
        else:
            with engine.connect() as conn:
                seen.append(("transactions open", conn.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state LIKE 'idle in transaction%'")).scalar()))
        return real(settings, secret_hash, secret)

    monkeypatch.setattr(guard, "check_secret", watching)
    r = plant.client.post(f"/api/v1/designs/iterations/{it['id']}/signatures", headers=token,
                          json={"password": PASSWORD})
    assert r.status_code == 201, r.text
    assert seen and all(not held for _, held in seen), seen
    sigs = plant.call("GET", f"/audit/signatures?record_type=design_iteration&record_id={it['id']}",
                      "quality_engineer")
    assert [s["printed_name"] for s in sigs] == [u["full_name"]]


def test_a_lockout_ends_by_itself_one_try_then_and_each_failure_doubles_it(plant):
    u = _person(plant)
    for _ in range(5):
        _login(plant, u["username"], "wrong-password")

    def locked_for() -> float:
        with plant.app.state.sessionmaker() as s:
            return (s.get(User, u["id"]).locked_until - utcnow()).total_seconds()

    assert 55 < locked_for() <= 60
    past = utcnow() - timedelta(seconds=1)
    with plant.app.state.engine.begin() as c:  # the minute has passed
        c.execute(text("UPDATE users SET locked_until = :t WHERE id = :i"),
                  {"t": past.replace(tzinfo=None) if c.dialect.name == "sqlite" else past, "i": u["id"]})
    assert _login(plant, u["username"], "still-wrong").status_code == 401
    assert 115 < locked_for() <= 120, "one more failure after the lockout: twice as long"
    with plant.app.state.engine.begin() as c:
        c.execute(text("UPDATE users SET locked_until = :t WHERE id = :i"),
                  {"t": past.replace(tzinfo=None) if c.dialect.name == "sqlite" else past, "i": u["id"]})
    assert _login(plant, u["username"], PASSWORD).status_code == 200, "then the right password opens it"
    plant.call("PATCH", f"/users/{u['id']}", "admin", json={"unlock": True, "reason": "checked with the person"})


def test_unknown_locked_deactivated_and_wrong_answer_alike(plant):
    known, locked, gone = _person(plant), _person(plant), _person(plant)
    for _ in range(5):
        _login(plant, locked["username"], "wrong-password")
    plant.call("PATCH", f"/users/{gone['id']}", "admin", json={"active": False, "reason": "left"})
    answers = {(r.status_code, r.text) for r in (
        _login(plant, "nobody.here", "whatever-pass"), _login(plant, known["username"], "wrong-password"),
        _login(plant, locked["username"], PASSWORD), _login(plant, gone["username"], PASSWORD))}
    assert answers == {(401, json.dumps({"code": "login_failed", "detail": REFUSED}, separators=(",", ":")))}
    badge = {(r.status_code, r.json()["detail"]) for r in (
        plant.client.post("/api/v1/auth/token", data={"username": "99999", "password": "1234", "scope": "kiosk"}),)}
    assert badge == {(401, "Badge or PIN is not correct, or the account is locked for a while after repeated "
                           "failures")}


def test_a_client_that_keeps_failing_is_slowed_down(plant):
    settings = plant.app.state.settings
    for i in range(settings.login_rate_per_min):
        plant.client.post("/api/v1/auth/token", data={"username": f"flood{i}", "password": "x" * 12})
    r = _login(plant, "flood.more", "x" * 12)
    assert r.status_code == 429 and r.json()["code"] == "too_many_requests" and int(r.headers["Retry-After"]) >= 1
    plant.app.state.failed_logins._times.clear()  # the other tests of this module log in from the same address


def test_tokens_end_with_logout_role_change_and_deactivation_and_do_not_come_back(plant):
    u = _person(plant)
    token = plant.login(u["username"], PASSWORD)
    plant.call("POST", "/auth/logout", token, 204)
    assert plant.client.get("/api/v1/auth/me", headers=token).json()["code"] == "token_stale"
    token = plant.login(u["username"], PASSWORD)
    plant.call("PATCH", f"/users/{u['id']}", "admin", json={"role": "production_manager", "reason": "promoted"})
    plant.call("PATCH", f"/users/{u['id']}", "admin", json={"role": "operator", "reason": "back again"})
    assert plant.client.get("/api/v1/auth/me", headers=token).status_code == 401, "the old role's token stays dead"


def test_a_password_set_by_an_administrator_is_changed_before_signing(plant):
    ctx = plant.ready()
    u = _person(plant, "design_engineer", change=False)
    r = _login(plant, u["username"], u["password"])
    assert r.json()["password_change_required"] is True
    token = {"Authorization": f"Bearer {r.json()['access_token']}"}
    it = plant.iteration(plant.design(ctx["case"]["id"])["id"], sign=False)
    r = plant.client.post(f"/api/v1/designs/iterations/{it['id']}/signatures", headers=token,
                          json={"password": u["password"]})
    assert r.status_code == 409 and r.json()["code"] == "password_change_required"
    other = plant.login(u["username"], u["password"])
    new = plant.call("POST", "/auth/password", token, json={"current_password": u["password"],
                                                            "new_password": "only-i-know-it"})
    assert plant.client.get("/api/v1/auth/me", headers=other).status_code == 401, "other sessions end"
    token = {"Authorization": f"Bearer {new['access_token']}"}
    plant.call("POST", f"/designs/iterations/{it['id']}/signatures", token, 201, json={"password": "only-i-know-it"})


def test_a_kiosk_session_does_kiosk_actions_only_and_administrators_get_no_badge(plant):
    plant.call("PUT", f"/users/{plant.uid('operator')}/badge", "admin", json={"badge_number": "51001", "pin": "4826"})
    r = plant.client.post("/api/v1/auth/token", data={"username": "51001", "password": "4826", "scope": "kiosk"})
    kiosk = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert plant.client.get("/api/v1/auth/me", headers=kiosk).status_code == 200
    assert plant.client.get("/api/v1/notifications", headers=kiosk).status_code == 200
    r2 = plant.client.post("/api/v1/nonconformities", headers=kiosk, json={"kind": "other", "description": "x" * 5})
    assert (r2.status_code, r2.json()["code"]) == (403, "kiosk_session")
    r = plant.client.put(f"/api/v1/users/{plant.uid('admin')}/badge", headers=plant.h("admin"),
                         json={"badge_number": "51002", "pin": "1357"})
    assert r.status_code == 409 and r.json()["code"] == "badge_role"
