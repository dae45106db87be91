"""Deadlines (R9, issue 20 item 8): a surgery date is set for the future and moved only with a reason and a
signature (the open steps' deadlines follow); impact assessments of overdue steps are signed and append-only."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import text

from server.models import utcnow
from stagekit import PASSWORD, step_of


def test_a_case_for_a_surgery_that_has_passed_is_refused(plant):
    r = plant.client.post("/api/v1/cases", headers=plant.h("clinician"), json={
        "patient_ref": "P-PAST0001", "institution": "University Hospital",
        "surgery_date": str(date.today() - timedelta(days=1))})
    assert r.status_code == 409 and r.json()["code"] == "case_surgery_date_past"


def test_a_job_blocked_by_its_surgery_date_goes_on_once_the_date_is_moved_with_a_signature(plant):
    ctx = plant.ready()
    case = plant.case(surgery_in_days=1)  # inside the delivery margin: the deadline has passed
    design = plant.design(case["id"])
    it = plant.iteration(design["id"])
    job = plant.job(ctx["machine"]["id"], ctx["lot"]["id"], [it["id"]])
    late = {**ctx, "job": job, "sha": it["files"][0]["sha256"]}
    assert [r["code"] for r in plant.gate(late)["reasons"]] == ["case_deadline_passed"]
    code = job["devices"][0]["device_code"]
    before = step_of(plant, code, "delivery")["deadline"]
    new_date = date.today() + timedelta(days=40)
    body = {"surgery_date": str(new_date), "reason": "hospital moved the surgery (letter 2 Dec)"}
    r = plant.client.post(f"/api/v1/cases/{case['id']}/surgery-date", headers=plant.h("operator"),
                          json={**body, "password": PASSWORD})
    assert r.status_code == 403
    r = plant.client.post(f"/api/v1/cases/{case['id']}/surgery-date", headers=plant.h("clinician"),
                          json={**body, "password": "wrong-password"})
    assert r.status_code == 409 and r.json()["code"] == "signature_password"
    assert plant.gate(late)["allowed"] is False, "a refused signature changed nothing"
    moved = plant.call("POST", f"/cases/{case['id']}/surgery-date", "clinician", json={**body, "password": PASSWORD})
    assert moved["surgery_date"] == str(new_date)
    assert plant.gate(late)["allowed"] is True
    assert step_of(plant, code, "delivery")["deadline"] > before, "the open steps' deadlines follow the new date"
    entries = plant.call("GET", f"/audit/entries?record_type=case&record_id={case['id']}", "quality_engineer")
    assert entries[-1]["action"] == "case_surgery_date_changed" and entries[-1]["reason"] == body["reason"]


def test_impact_assessments_are_signed_and_append_only(plant):
    ctx = plant.ready()
    plant.gate(ctx)
    code = ctx["job"]["devices"][0]["device_code"]
    build = step_of(plant, code, "build")
    plant.call("POST", f"/stages/steps/{build['id']}/start", "operator")
    plant.call("POST", f"/stages/steps/{build['id']}/complete", "operator",
               json={"result": "built", "password": PASSWORD})
    past = utcnow() - timedelta(hours=3)
    with plant.app.state.engine.begin() as conn:  # time passes beyond the deadline
        conn.execute(text("UPDATE stage_steps SET deadline = :d WHERE id = :i"),
                     {"d": past.replace(tzinfo=None) if conn.dialect.name == "sqlite" else past, "i": build["id"]})
    url = f"/api/v1/stages/steps/{build['id']}/impact-assessment"
    first = "3 h late; surgery in 30 days, no effect on the device"
    r = plant.client.post(url, headers=plant.h("production_manager"), json={"assessment": first})
    assert r.status_code == 422  # unsigned
    plant.call("POST", url.removeprefix("/api/v1"), "production_manager",
               json={"assessment": first, "password": PASSWORD})
    r = plant.client.post(url, headers=plant.h("production_manager"), json={"assessment": "n/a", "password": PASSWORD})
    assert r.status_code == 422  # not an assessment
    second = "5 h late now; still no effect, delivery margin holds"
    plant.call("POST", url.removeprefix("/api/v1"), "quality_engineer",
               json={"assessment": second, "password": PASSWORD})
    history = plant.call("GET", f"/stages/steps/{build['id']}/impact-assessments", "quality_engineer")
    assert [a["assessment"] for a in history] == [first, second]
    assert all(a["signature_id"] for a in history)
    accepted = plant.call("POST", f"/stages/steps/{build['id']}/accept", "production_manager",
                          json={"judgement": "ok", "password": PASSWORD})
    assert accepted["impact_assessment"] == second


def test_a_refused_signature_leaves_no_unsigned_record_behind(plant):
    """A wrong password when signing used to commit what the service had added before asking for the signature
    (a manual step, an impact assessment, a surgery-date change) without its signature; an unsigned "rework" step
    would even have counted as the rework. Only the refusal is recorded now."""
    ctx = plant.ready()
    code = ctx["job"]["devices"][0]["device_code"]
    r = plant.client.post(f"/api/v1/devices/{code}/manual-steps", headers=plant.h("operator"),
                          json={"kind": "rework", "description": "bore reamed", "password": "wrong-password"})
    assert r.status_code == 409 and r.json()["code"] == "signature_password"
    assert plant.call("GET", f"/devices/{code}/manual-steps", "quality_engineer") == []
    entries = plant.call("GET", "/audit/entries?record_type=manual_step", "quality_engineer")
    assert entries[-1]["action"] == "signature_refused"
    assert "manual_step_recorded" not in [e["action"] for e in entries if e["seq"] > entries[-1]["seq"] - 3]


def test_a_step_that_becomes_overdue_is_notified_to_production_once(plant, app):
    """R9: overdue work is raised, not only shown when someone looks. The server's watch runs in the background
    (`overdue_check_s`); one check is run here so the test does not wait for it."""
    from server.db import session_scope
    from server.stages.service import notify_overdue

    assert not app.state.overdue_watch.done(), "the overdue watch runs with the server"
    ctx = plant.ready()
    code = ctx["job"]["devices"][0]["device_code"]
    build = step_of(plant, code, "build")
    past = utcnow() - timedelta(hours=1)
    with plant.app.state.engine.begin() as conn:
        conn.execute(text("UPDATE stage_steps SET deadline = :d WHERE id = :i"),
                     {"d": past.replace(tzinfo=None) if conn.dialect.name == "sqlite" else past, "i": build["id"]})
    for _ in range(2):  # a second check tells nobody again
        with session_scope(app.state.sessionmaker) as session:
            notify_overdue(session, now=utcnow())
    for who in ("production_manager", "quality_engineer"):
        notices = [n for n in plant.call("GET", "/notifications?unread=true", who)
                   if n["kind"] == "step_overdue" and n["record_id"] == str(build["id"])]
        assert [n["message"] for n in notices] == [
            f"Build of device {code} is overdue since {past:%d %b %Y %H:%M} UTC: an impact assessment is needed"]
