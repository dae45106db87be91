"""Release gate: allowed when everything holds; each refusal reason one by one, with its exact words."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from sqlalchemy import text

PASSWORD = "correct-horse-battery"
TODAY = date.today()
YESTERDAY = TODAY - timedelta(days=1)


def full(d: date) -> str:
    return f"{d.day} {d:%b %Y}"


def codes(decision: dict) -> list[str]:
    return [r["code"] for r in decision["reasons"]]


def sql(plant, statement: str, **params) -> None:
    """Change the database behind the API's back (to simulate time passing or tampering)."""
    with plant.app.state.engine.begin() as conn:
        conn.execute(text(statement), params)


def test_allowed_when_everything_holds(plant):
    ctx = plant.ready(devices=2)
    d = plant.gate(ctx)
    assert d == {"allowed": True, "reasons": [], "decision_id": d["decision_id"]}
    as_operator = plant.gate(ctx, who="operator")
    assert as_operator["allowed"] is True


def test_refused_machine_not_qualified_for_scope(plant):
    family = f"knee guide {uuid.uuid4().hex[:4]}"
    m = plant.machine()
    plant.scope(m["id"], qualified=False, family=family)
    lot = plant.lot()
    design = plant.design(plant.case()["id"], family=family)
    it = plant.iteration(design["id"])
    job = plant.job(m["id"], lot["id"], [it["id"]])
    d = plant.gate({"machine": m, "job": job, "sha": it["files"][0]["sha256"]})
    assert d["reasons"] == [{"code": "machine_not_qualified",
                             "message": f"Machine {m['id']} is not qualified for LPBF / Ti-6Al-4V ELI / {family}"}]


def test_refused_qualification_expired(plant):
    ctx = plant.ready()
    sql(plant, "UPDATE qualification_scopes SET valid_until = :d WHERE id = :i", d=YESTERDAY, i=ctx["scope"]["id"])
    d = plant.gate(ctx)
    assert d["allowed"] is False
    assert d["reasons"] == [
        {"code": "machine_not_qualified", "message": f"Machine requires requalification: qualification expired "
                                                     f"on {YESTERDAY:%d %b %Y}"},
        {"code": "qualification_expired", "message": f"Qualification of machine {ctx['machine']['id']} for LPBF / "
                                                     f"Ti-6Al-4V ELI / acetabular cup expired on {full(YESTERDAY)}"}]
    scope = plant.call("GET", f"/qualification/scopes/{ctx['scope']['id']}", "operator")
    assert scope["state"] == "requalification_required"


def test_refused_calibration_overdue(plant):
    ctx = plant.ready()
    plant.call("POST", f"/machines/{ctx['machine']['id']}/due-dates", "quality_engineer",
               json={"calibration_due": str(YESTERDAY), "reason": "certificate withdrawn"})
    d = plant.gate(ctx)
    assert codes(d) == ["machine_not_qualified", "calibration_overdue"]
    assert d["reasons"][1]["message"] == f"Machine calibration is out of date (due {full(YESTERDAY)})"
    assert d["reasons"][0]["message"] == (f"Machine requires requalification: calibration was due on "
                                          f"{YESTERDAY:%d %b %Y}")


def test_refused_maintenance_overdue(plant):
    ctx = plant.ready()
    plant.call("POST", f"/machines/{ctx['machine']['id']}/due-dates", "production_manager",
               json={"maintenance_due": str(YESTERDAY), "reason": "plan slipped"})
    d = plant.gate(ctx)
    assert d["reasons"] == [{"code": "maintenance_overdue", "message":
                             f"Preventive maintenance of the machine is overdue (due {full(YESTERDAY)})"}]


def test_refused_design_missing_clinician_signature(plant):
    ctx = plant.ready()
    it = plant.iteration(ctx["design"]["id"], sign=False, note="thicker flange")
    plant.call("POST", f"/designs/iterations/{it['id']}/signatures", "design_engineer", 201,
               json={"password": PASSWORD})
    job = plant.job(ctx["machine"]["id"], ctx["lot"]["id"], [it["id"]])
    d = plant.gate({**ctx, "job": job, "sha": it["files"][0]["sha256"]})
    name = f"Design '{ctx['design']['name']}' iteration 2"
    assert d["reasons"] == [
        {"code": "design_not_approved", "message": f"{name} is not approved: clinician signature missing"},
        {"code": "build_file_not_approved", "message": f"Build file (SHA-256 {it['files'][0]['sha256'][:12]}…) "
                                                       f"does not match any approved file of job {job['id']}"}]


def test_refused_build_file_hash_mismatch(plant):
    ctx = plant.ready()
    wrong = "ab" * 32
    d = plant.gate(ctx, sha=wrong)
    assert d["reasons"] == [{"code": "build_file_not_approved", "message":
                             f"Build file (SHA-256 abababababab…) does not match any approved file of job "
                             f"{ctx['job']['id']}"}]


def test_refused_design_superseded_after_job_creation(plant):
    ctx = plant.ready()
    plant.iteration(ctx["design"]["id"], note="surgeon asked for a longer peg")
    d = plant.gate(ctx)
    assert codes(d) == ["design_superseded", "build_file_not_approved"]
    assert d["reasons"][0]["message"] == (f"Design '{ctx['design']['name']}' iteration 1 was superseded by "
                                          f"iteration 2; the job must use the approved latest iteration")


def test_refused_design_changed_after_signing(plant):
    ctx = plant.ready()
    sql(plant, "UPDATE design_files SET sha256 = :s WHERE iteration_id = :i", s="cd" * 32, i=ctx["iteration"]["id"])
    d = plant.gate(ctx, sha="cd" * 32)
    assert codes(d) == ["design_changed_after_signing", "build_file_not_approved"]
    assert d["reasons"][0]["message"] == (f"Design '{ctx['design']['name']}' iteration 1 no longer matches what "
                                          f"was signed; it needs a new iteration and new signatures")


def test_refused_operator_not_authorised(plant):
    ctx = plant.ready()
    d = plant.gate(ctx, operator="operator2")
    assert d["reasons"] == [{"code": "operator_not_authorised",
                             "message": f"Operator Olga Operator is not authorised on machine {ctx['machine']['id']}"}]


def test_refused_person_who_is_not_an_operator(plant):
    ctx = plant.ready()
    assert plant.gate(ctx, operator="admin")["reasons"] == [
        {"code": "operator_not_authorised", "message": "Ada Admin is an admin, not an operator"}]
    assert plant.gate(ctx, operator="quality_engineer")["reasons"] == [
        {"code": "operator_not_authorised", "message": "Quentin Quality is a quality engineer, not an operator"}]


def test_refused_operator_authorisation_revoked(plant):
    ctx = plant.ready()
    auths = plant.call("GET", f"/users/{plant.uid('operator')}/machine-authorisations", "production_manager")
    auth = next(a for a in auths if a["machine_id"] == ctx["machine"]["id"])
    plant.call("POST", f"/machine-authorisations/{auth['id']}/revoke", "production_manager",
               json={"reason": "training expired"})
    assert codes(plant.gate(ctx)) == ["operator_not_authorised"]


def test_operator_authorisation_valid_through_its_last_day(plant):
    ctx = plant.ready()
    grant = plant.call("POST", f"/users/{plant.uid('operator2')}/machine-authorisations", "production_manager", 201,
                       json={"machine_id": ctx["machine"]["id"], "training_reference": "TR-EOS-002",
                             "valid_until": str(YESTERDAY)})
    assert plant.gate(ctx, operator="operator2")["reasons"] == [
        {"code": "operator_not_authorised",
         "message": f"Operator Olga Operator is not authorised on machine {ctx['machine']['id']}"}]
    plant.call("POST", f"/machine-authorisations/{grant['id']}/revoke", "production_manager",
               json={"reason": "renewed below"})
    plant.call("POST", f"/users/{plant.uid('operator2')}/machine-authorisations", "production_manager", 201,
               json={"machine_id": ctx["machine"]["id"], "training_reference": "TR-EOS-002b",
                     "valid_until": str(TODAY)})
    assert plant.gate(ctx, operator="operator2")["allowed"] is True


def test_refused_material_lot_at_reuse_limit(plant):
    ctx = plant.ready()
    lot = plant.lot(reuse_count=5, reuse_limit=5)
    job = plant.job(ctx["machine"]["id"], lot["id"], [ctx["iteration"]["id"]])
    d = plant.gate({**ctx, "job": job})
    assert d["reasons"] == [{"code": "material_lot_invalid", "message":
                             f"Material lot {lot['lot_number']} has been used 5 times, its reuse limit is 5"}]


def test_refused_material_lot_quarantined(plant):
    ctx = plant.ready()
    plant.call("POST", f"/materials/lots/{ctx['lot']['id']}/status", "quality_engineer",
               json={"status": "quarantined", "reason": "oxygen content out of spec"})
    d = plant.gate(ctx)
    assert d["reasons"] == [{"code": "material_lot_invalid",
                             "message": f"Material lot {ctx['lot']['lot_number']} is quarantined"}]


def test_refused_case_deadline_passed(plant):
    ctx = plant.ready()
    case = plant.case(surgery_in_days=1)
    design = plant.design(case["id"])
    it = plant.iteration(design["id"])
    job = plant.job(ctx["machine"]["id"], ctx["lot"]["id"], [it["id"]])
    d = plant.gate({**ctx, "job": job, "sha": it["files"][0]["sha256"]})
    surgery = TODAY + timedelta(days=1)
    assert d["reasons"] == [{"code": "case_deadline_passed", "message":
                             f"Case {case['id']}: delivery deadline {full(surgery - timedelta(days=2))} has passed"}]
    assert case["patient_ref"] not in str(d), "the operator's answer names no patient reference"


def test_refused_open_nonconformity_from_failed_build_file_check(plant):
    ctx = plant.ready()
    check = plant.call("POST", f"/agents/machines/{ctx['machine']['id']}/build-file-checks", ctx["machine"]["agent"],
                       201, json={"job_id": ctx["job"]["id"], "file_name": "cup.stl", "sha256": "ef" * 32,
                                  "passed": False, "detail": "hash differs from the approved file"})
    d = plant.gate(ctx)
    nc = check["nonconformity_id"]
    assert d["reasons"] == [{"code": "open_nonconformity", "message":
                             f"Open nonconformity {nc} (build file mismatch) on this job must be dispositioned "
                             f"first: Build file cup.stl failed the check: hash differs from the approved file"}]
    plant.call("POST", f"/nonconformities/{nc}/disposition", "quality_engineer", json={
        "disposition": "use_as_is", "rationale": "wrong file was staged; correct file re-sent", "password": PASSWORD})
    assert plant.gate(ctx)["allowed"] is True


def test_change_between_snapshot_and_append_is_seen(plant, monkeypatch):
    """The gate reads on a snapshot and appends under the lock; a change committed in between (here a
    nonconformity raised by another connection) makes it decide again on the current state."""
    from server.gate import service as gate
    from server.nonconformities.service import raise_nonconformity
    from server.security import SYSTEM

    ctx = plant.ready()
    real_start_writing = gate.start_writing
    raised = []

    def nonconformity_lands_first(session):
        real_start_writing(session)
        if not raised:
            with plant.app.state.sessionmaker() as other, other.begin():
                raised.append(raise_nonconformity(other, actor=SYSTEM, kind="build_file_mismatch",
                                                  description="raised while the gate was reading",
                                                  job_id=ctx["job"]["id"]).id)

    monkeypatch.setattr(gate, "start_writing", nonconformity_lands_first)
    d = plant.gate(ctx)
    assert raised and d["allowed"] is False
    assert d["reasons"] == [{"code": "open_nonconformity", "message":
                             f"Open nonconformity {raised[0]} (build file mismatch) on this job must be "
                             f"dispositioned first: raised while the gate was reading"}]
    # Only the gate's own entries came after the nonconformity's: no re-evaluation without need.
    monkeypatch.setattr(gate, "start_writing", real_start_writing)
    plant.call("POST", f"/nonconformities/{raised[0]}/disposition", "quality_engineer", json={
        "disposition": "use_as_is", "rationale": "test", "password": PASSWORD})
    assert plant.gate(ctx)["allowed"] is True


def test_refused_job_of_another_machine(plant):
    ctx = plant.ready()
    other = plant.ready()
    d = plant.gate({**ctx, "job": other["job"]})
    assert d["reasons"] == [{"code": "job_not_for_machine", "message":
                             f"Job {other['job']['id']} is planned for machine {other['machine']['id']}, "
                             f"not {ctx['machine']['id']}"}]


def test_every_reason_at_once(plant):
    ctx = plant.ready()
    plant.call("POST", f"/machines/{ctx['machine']['id']}/due-dates", "production_manager",
               json={"maintenance_due": str(YESTERDAY), "reason": "plan slipped"})
    plant.call("POST", f"/materials/lots/{ctx['lot']['id']}/status", "quality_engineer",
               json={"status": "quarantined", "reason": "suspect"})
    d = plant.gate(ctx, sha="00" * 32, operator="operator2")
    assert codes(d) == ["maintenance_overdue", "build_file_not_approved", "material_lot_invalid",
                        "operator_not_authorised"]


def test_decision_recorded_with_inputs(plant):
    ctx = plant.ready()
    d = plant.gate(ctx, operator="operator2")
    rec = plant.call("GET", f"/gate/decisions/{d['decision_id']}", "quality_engineer")
    assert rec["allowed"] is False and rec["operator_id"] == plant.uid("operator2")
    assert rec["inputs"]["material_lot"]["lot_number"] == ctx["lot"]["lot_number"]
    assert rec["inputs"]["scope"]["state"] == "qualified"
    assert rec["inputs"]["design_iterations"][0]["files"] == [ctx["sha"]]
    entries = plant.call("GET", f"/audit/entries?record_type=job&record_id={ctx['job']['id']}&limit=1000",
                         "quality_engineer")
    gate_entries = [e for e in entries if e["action"] == "gate_decision"]
    assert '"allowed":false' in gate_entries[-1]["new_values"]


def test_agent_cannot_ask_for_another_machine(plant):
    ctx = plant.ready()
    other = plant.ready()
    r = plant.client.post("/api/v1/gate/decisions", headers=other["machine"]["agent"], json={
        "machine_id": ctx["machine"]["id"], "job_id": ctx["job"]["id"], "build_file_sha256": ctx["sha"],
        "operator_id": plant.uid("operator")})
    assert r.status_code == 403
    assert r.json() == {"code": "agent_scope", "detail": f"Agent agent-{other['machine']['id']} is not scoped to "
                                                         f"machine {ctx['machine']['id']}"}


def test_operator_can_ask_only_for_themself(plant):
    ctx = plant.ready()
    r = plant.client.post("/api/v1/gate/decisions", headers=plant.h("operator2"), json={
        "machine_id": ctx["machine"]["id"], "job_id": ctx["job"]["id"], "build_file_sha256": ctx["sha"],
        "operator_id": plant.uid("operator")})
    assert r.status_code == 403 and r.json()["code"] == "operator_mismatch"


def test_an_agent_may_name_only_an_operator_identified_at_the_kiosk_for_this_job(plant):
    """Issue 16: the agent token could name any authorised operator for a build nobody attended."""
    from datetime import timedelta

    from server.models import OperatorPresence, utcnow

    ctx = plant.ready()
    body = {"machine_id": ctx["machine"]["id"], "job_id": ctx["job"]["id"], "build_file_sha256": ctx["sha"],
            "operator_id": plant.uid("operator")}
    d = plant.call("POST", "/gate/decisions", ctx["machine"]["agent"], json=body)
    assert d["allowed"] is False
    assert [r["code"] for r in d["reasons"]] == ["operator_not_identified"]
    assert "scan the job at the kiosk with your badge" in d["reasons"][0]["message"]
    # Identified for another job: does not count for this one.
    other = plant.ready()
    plant.identify(other)
    assert plant.call("POST", "/gate/decisions", ctx["machine"]["agent"], json=body)["allowed"] is False
    # Identified too long ago (35 minutes; the window is 30): does not count either.
    with plant.app.state.sessionmaker() as s, s.begin():
        s.add(OperatorPresence(user_id=plant.uid("operator"), machine_id=ctx["machine"]["id"], job_id=ctx["job"]["id"],
                               at=utcnow() - timedelta(minutes=35), via="kiosk"))
    assert plant.call("POST", "/gate/decisions", ctx["machine"]["agent"], json=body)["allowed"] is False
    presence = plant.identify(ctx)
    assert presence["machine_id"] == ctx["machine"]["id"] and presence["operator_id"] == plant.uid("operator")
    d = plant.call("POST", "/gate/decisions", ctx["machine"]["agent"], json=body)
    assert d["allowed"] is True, d["reasons"]
    record = plant.call("GET", f"/gate/decisions/{d['decision_id']}", "quality_engineer")
    assert record["inputs"]["operator_identified_at"] is not None
    # Only the operator themself says they are there; nobody identifies on their behalf.
    plant.call("POST", f"/kiosk/jobs/{ctx['job']['id']}/presence", "production_manager", 403)
    plant.call("POST", f"/kiosk/jobs/{ctx['job']['id']}/presence", ctx["machine"]["agent"], 403)


def test_a_job_that_does_not_exist_is_the_one_reason_whoever_is_named(plant):
    """Machine and job come first: with no job, neither the operator nor their presence is judged."""
    ctx = plant.ready()
    body = {"machine_id": ctx["machine"]["id"], "job_id": 999_999, "build_file_sha256": ctx["sha"],
            "operator_id": plant.uid("operator")}
    d = plant.call("POST", "/gate/decisions", ctx["machine"]["agent"], json=body)
    assert d["allowed"] is False and [r["code"] for r in d["reasons"]] == ["job_unknown"]
    d = plant.call("POST", "/gate/decisions", ctx["machine"]["agent"], json={**body, "operator_id": None})
    assert [r["code"] for r in d["reasons"]] == ["job_unknown"]


def test_a_boolean_is_not_a_job_id(plant):
    """JSON false was read as job 0 and answered 200 "Job 0 does not exist" (found by schemathesis): refused."""
    m = plant.machine()
    r = plant.client.post("/api/v1/gate/decisions", headers=m["agent"], json={
        "machine_id": m["id"], "job_id": False, "build_file_sha256": "0" * 64, "operator_id": None})
    assert r.status_code == 422 and "job_id" in r.text
