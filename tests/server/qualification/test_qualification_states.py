"""Qualification: every state transition (and refusals), every trigger with its source, locked criteria."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from sqlalchemy import text

PASSWORD = "correct-horse-battery"
TODAY = date.today()


def scope_of(plant, scope_id):
    return plant.call("GET", f"/qualification/scopes/{scope_id}", "operator")


def triggers(plant, scope_id):
    return [(t["kind"], t["source"], t["detail"])
            for t in plant.call("GET", f"/qualification/scopes/{scope_id}/triggers", "operator")]


def test_initial_qualification_unqualified_to_qualified(plant):
    m = plant.machine()
    s = plant.scope(m["id"], qualified=False)
    assert s["state"] == "unqualified"
    req = plant.qualify(s["id"])
    assert req["kind"] == "initial" and req["state"] == "approved"
    s = scope_of(plant, s["id"])
    assert (s["state"], s["qualified_software_revision"], s["qualified_site"]) == ("qualified", "4.2.1", "Plant 1")


def test_refused_transitions_say_why(plant):
    m = plant.machine()
    s = plant.scope(m["id"])
    r = plant.client.post("/api/v1/qualification/requalifications", headers=plant.h("quality_engineer"), json={
        "scope_id": s["id"], "risk_decision": "full", "rationale": "periodic", "protocol": "P",
        "valid_until": str(TODAY + timedelta(days=10))})
    assert r.status_code == 409
    assert r.json()["detail"] == (f"Scope {s['id']} is qualified; a requalification starts only when it is "
                                  f"requalification_required or suspended")
    plant.call("POST", f"/qualification/scopes/{s['id']}/suspend", "quality_engineer", json={"reason": "audit finding"})
    r = plant.client.post(f"/api/v1/qualification/scopes/{s['id']}/suspend", headers=plant.h("quality_engineer"),
                          json={"reason": "again"})
    assert r.status_code == 409 and r.json() == {
        "code": "qualification_transition_refused",
        "detail": f"Scope {s['id']} ({m['id']} / LPBF / Ti-6Al-4V ELI / acetabular cup) cannot go from suspended "
                  f"to suspended; from suspended it can go to: requalifying"}


def test_full_cycle_with_suspension_and_rejection(plant):
    m = plant.machine()
    s = plant.scope(m["id"])
    plant.call("POST", f"/machines/{m['id']}/maintenance", "operator", 201,
               json={"kind": "optics_replaced", "description": "f-theta lens replaced"})
    assert scope_of(plant, s["id"])["state"] == "requalification_required"
    req = plant.call("POST", "/qualification/requalifications", "production_manager", 201, json={
        "scope_id": s["id"], "risk_decision": "partial", "rationale": "optics only", "protocol": "QP-7",
        "valid_until": str(TODAY + timedelta(days=200))})
    assert scope_of(plant, s["id"])["state"] == "requalifying"
    plant.call("POST", f"/qualification/requalifications/{req['id']}/reject", "quality_engineer",
               json={"reason": "density below limit"})
    assert scope_of(plant, s["id"])["state"] == "suspended"
    approved = plant.qualify(s["id"], kind_expected="requalification")
    assert approved["state"] == "approved" and scope_of(plant, s["id"])["state"] == "qualified"
    # The optics replacement was not settled by the rejected record: the approver of the next one signed for it.
    from server.models import Requalification
    from server.qualification.service import requalification_content

    with plant.app.state.sessionmaker() as session:
        content = requalification_content(session, session.get(Requalification, approved["id"]))
    assert [t["kind"] for t in content["triggers"]] == ["maintenance"]
    assert plant.call("GET", "/audit/verify", "quality_engineer")["ok"] is True


def test_criteria_locked_before_results_and_failed_artefact_blocks_approval(plant):
    m = plant.machine()
    s = plant.scope(m["id"], qualified=False)
    req = plant.call("POST", "/qualification/requalifications", "quality_engineer", 201, json={
        "scope_id": s["id"], "risk_decision": "full", "rationale": "new machine", "protocol": "IQ/OQ/PQ",
        "valid_until": str(TODAY + timedelta(days=365))})
    rid = req["id"]
    art = {"artefact_type": "tensile_bar", "label": "TB-7", "x_mm": 240, "y_mm": 10, "z_mm": 0,
           "orientation": "XY", "property": "uts_mpa", "measured_value": 840, "unit": "MPa"}
    r = plant.client.post(f"/api/v1/qualification/requalifications/{rid}/artefacts", headers=plant.h("quality_engineer"),
                          json=art)
    assert r.status_code == 409 and r.json() == {"code": "criteria_not_locked", "detail":
                                                 "Acceptance criteria must be locked before any result is entered"}
    plant.call("PUT", f"/qualification/requalifications/{rid}/criteria", "quality_engineer", json={"criteria": [
        {"artefact_type": "tensile_bar", "property": "uts_mpa", "min": 860, "unit": "MPa", "min_count": 1}]})
    locked = plant.call("POST", f"/qualification/requalifications/{rid}/criteria/lock", "quality_engineer")
    assert locked["state"] == "criteria_locked" and len(locked["criteria_sha256"]) == 64
    r = plant.client.put(f"/api/v1/qualification/requalifications/{rid}/criteria", headers=plant.h("quality_engineer"),
                         json={"criteria": [{"artefact_type": "tensile_bar", "property": "uts_mpa", "min": 800,
                                             "unit": "MPa"}]})
    assert r.status_code == 409 and r.json()["detail"] == (f"Acceptance criteria of requalification {rid} are "
                                                           f"locked and cannot change")
    result = plant.call("POST", f"/qualification/requalifications/{rid}/artefacts", "operator", 201, json=art)
    assert result["passed"] is False
    r = plant.client.post(f"/api/v1/qualification/requalifications/{rid}/approve", headers=plant.h("quality_engineer"),
                          json={"password": PASSWORD})
    assert r.status_code == 409 and r.json()["detail"] == (
        "Requalification cannot be approved: artefact TB-7 (tensile_bar at x=240 y=10 z=0) failed: uts_mpa 840 MPa")
    r = plant.client.post(f"/api/v1/qualification/requalifications/{rid}/approve", headers=plant.h("production_manager"),
                          json={"password": PASSWORD})
    assert r.status_code == 403
    assert scope_of(plant, s["id"])["state"] == "unqualified"


def test_trigger_software_revision_reported_by_agent(plant):
    m = plant.machine(software="4.2.1")
    s = plant.scope(m["id"])
    plant.report_identity(m, software="4.2.1")  # unchanged: no trigger
    assert scope_of(plant, s["id"])["state"] == "qualified"
    out = plant.report_identity(m, software="4.3.0")
    assert out["scopes"] == [{"id": s["id"], "state": "requalification_required",
                              "state_reason": "software changed from 4.2.1 to 4.3.0"}]
    plant.report_identity(m, software="4.3.0")  # reported again: recorded once
    assert triggers(plant, s["id"]) == [("software_changed", f"agent:agent-{m['id']}",
                                         "software changed from 4.2.1 to 4.3.0")]


def test_trigger_firmware_and_build_prep_software(plant):
    m = plant.machine()
    s1 = plant.scope(m["id"])
    plant.report_identity(m, software="4.2.1", firmware="1.1", build_prep="Magics 28")
    assert [t[0] for t in triggers(plant, s1["id"])] == ["firmware_changed", "build_prep_software_changed"]
    assert scope_of(plant, s1["id"])["state_reason"] == "firmware changed from 1.0 to 1.1"


def test_trigger_relocation(plant):
    m = plant.machine()
    s = plant.scope(m["id"])
    plant.call("POST", f"/machines/{m['id']}/relocation", "production_manager",
               json={"site": "Plant 2", "room": "AM-4", "reason": "new clean room"})
    assert triggers(plant, s["id"]) == [("relocated", "user:production.manager",
                                         "machine moved from Plant 1 / AM-1 to Plant 2 / AM-4")]
    assert scope_of(plant, s["id"])["state"] == "requalification_required"


def test_trigger_maintenance_only_for_requalifying_kinds(plant):
    m = plant.machine()
    s = plant.scope(m["id"])
    log = plant.call("POST", f"/machines/{m['id']}/maintenance", "operator", 201,
                     json={"kind": "filter_change", "description": "gas filter"})
    assert log["requires_requalification"] is False and scope_of(plant, s["id"])["state"] == "qualified"
    log = plant.call("POST", f"/machines/{m['id']}/maintenance", "operator", 201,
                     json={"kind": "laser_replaced", "description": "laser 1 swapped"})
    assert log["requires_requalification"] is True
    assert triggers(plant, s["id"]) == [("maintenance", "user:operator",
                                         "maintenance 'laser replaced' logged (laser 1 swapped)")]


def test_trigger_calibration_and_qualification_expiry(plant):
    m = plant.machine()
    s = plant.scope(m["id"])
    m2 = plant.machine()
    s2 = plant.scope(m2["id"])
    yesterday = TODAY - timedelta(days=1)
    plant.call("POST", f"/machines/{m['id']}/due-dates", "quality_engineer",
               json={"calibration_due": str(yesterday), "reason": "lapsed"})
    with plant.app.state.engine.begin() as conn:
        conn.execute(text("UPDATE qualification_scopes SET valid_until = :d WHERE id = :i"), {"d": yesterday,
                                                                                             "i": s2["id"]})
    out = plant.call("POST", "/qualification/expiry-check", "production_manager")
    got = {(t["scope_id"], t["kind"], t["source"]) for t in out["triggers"]}
    assert {(s["id"], "calibration_expired", "user:production.manager"),
            (s2["id"], "qualification_expired", "user:production.manager")} <= got
    assert scope_of(plant, s["id"])["state"] == scope_of(plant, s2["id"])["state"] == "requalification_required"


def test_trigger_material_supplier_change_and_handling_change(plant):
    m = plant.machine()
    s = plant.scope(m["id"])  # qualified with supplier AP&C
    lot = plant.lot(supplier="Carpenter Additive")
    design = plant.design(plant.case()["id"])
    it = plant.iteration(design["id"])
    plant.job(m["id"], lot["id"], [it["id"]])
    assert triggers(plant, s["id"])[0][0] == "material_changed"
    assert scope_of(plant, s["id"])["state"] == "requalification_required"
    m2 = plant.machine()
    s2 = plant.scope(m2["id"])
    t = plant.call("POST", f"/qualification/scopes/{s2['id']}/triggers", "production_manager", 201,
                   json={"kind": "material_handling_changed", "detail": "new sieving station"})
    assert (t["source"], scope_of(plant, s2["id"])["state"]) == ("user:production.manager",
                                                                 "requalification_required")


def test_trigger_product_family_moved_to_unqualified_machine(plant):
    family = f"cranial plate {uuid.uuid4().hex[:4]}"
    m1 = plant.machine()
    plant.scope(m1["id"], family=family)
    m2 = plant.machine()
    design = plant.design(plant.case()["id"], family=family)
    it = plant.iteration(design["id"])
    job = plant.job(m2["id"], plant.lot()["id"], [it["id"]])
    scopes = plant.call("GET", f"/qualification/scopes?machine_id={m2['id']}", "operator")
    moved = [s for s in scopes if s["product_family"] == family]
    assert moved[0]["state"] == "requalification_required"
    assert triggers(plant, moved[0]["id"])[0][:2] == ("product_family_moved", "user:production.manager")
    d = plant.gate({"machine": m2, "job": job, "sha": it["files"][0]["sha256"]})
    assert d["reasons"][0]["message"].startswith(
        f"Machine requires requalification: product family {family} moved from machine {m1['id']} to {m2['id']}")


def test_trigger_during_requalification_is_attached_to_it(plant):
    m = plant.machine()
    s = plant.scope(m["id"])
    plant.report_identity(m, software="5.0")
    req = plant.call("POST", "/qualification/requalifications", "quality_engineer", 201, json={
        "scope_id": s["id"], "risk_decision": "none", "rationale": "bug-fix release, vendor validation reviewed",
        "protocol": "none", "valid_until": str(TODAY + timedelta(days=100))})
    plant.report_identity(m, software="5.0.1")
    ts = plant.call("GET", f"/qualification/scopes/{s['id']}/triggers", "operator")
    assert [t["requalification_id"] for t in ts] == [req["id"], req["id"]]
    done = plant.call("POST", f"/qualification/requalifications/{req['id']}/approve", "quality_engineer",
                      json={"password": PASSWORD})
    assert done["state"] == "approved"
    assert scope_of(plant, s["id"])["qualified_software_revision"] == "5.0.1"
