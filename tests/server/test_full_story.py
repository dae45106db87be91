"""The whole story: case → design iteration → two signatures → job with three devices → gate allowed →
software revision changes → gate refused → requalification with locked criteria, coupons, signed approval →
gate allowed again; audit trail intact at the end."""

from __future__ import annotations

from datetime import date

PASSWORD = "correct-horse-battery"


def test_full_story(plant):
    m = plant.machine(software="4.2.1")
    scope = plant.scope(m["id"])
    assert scope["qualified_software_revision"] == "4.2.1"
    lot = plant.lot()

    case = plant.case()
    design = plant.design(case["id"])
    it = plant.iteration(design["id"], sign=False)
    assert it["status"] == "draft"
    plant.call("POST", f"/designs/iterations/{it['id']}/signatures", "design_engineer", 201,
               json={"password": PASSWORD})
    half = plant.call("GET", f"/designs/iterations/{it['id']}", "quality_engineer")
    assert half["status"] == "draft" and [s["signer_role"] for s in half["signatures"]] == ["design_engineer"]
    plant.call("POST", f"/designs/iterations/{it['id']}/signatures", "clinician", 201, json={"password": PASSWORD})
    signed = plant.call("GET", f"/designs/iterations/{it['id']}", "quality_engineer")
    assert signed["status"] == "approved"
    assert {s["record_sha256"] for s in signed["signatures"]} == {signed["content_sha256"]}
    assert [(s["printed_name"], s["meaning"]) for s in signed["signatures"]] == [
        ("Dana Designer", "approved"), ("Dr. Clara Clinician", "approved")]

    job = plant.job(m["id"], lot["id"], [it["id"]] * 3, coupons=2)
    devices = [d for d in job["devices"] if d["kind"] == "device"]
    assert len(devices) == 3 and len({d["device_code"] for d in job["devices"]}) == 5
    assert all(d["regulatory_category"] == "patient_matched" for d in devices)
    assert devices[0]["udi_hri"].startswith("(01)09506000134352(11)" + date.today().strftime("%y%m%d"))
    assert devices[0]["udi_hri"].endswith(f"(10)J{job['id']}(21){devices[0]['device_code']}")

    ctx = {"machine": m, "job": job, "sha": it["files"][0]["sha256"]}
    context = plant.call("GET", f"/agents/machines/{m['id']}/context", m["agent"])
    assert context["job_id"] == str(job["id"])
    assert context["device_codes"] == [d["device_code"] for d in job["devices"]]
    # Only the fields the server fills; the edge's JobApprovals model may carry further optional ones.
    wanted = ("file_name", "sha256", "size_bytes", "design_iteration", "device_codes", "allow_geometry_equal")
    assert [{k: f[k] for k in wanted} for f in context["approvals"]["files"]] == [{
        "file_name": "cup.stl", "sha256": ctx["sha"], "size_bytes": len(it["content"]),
        "design_iteration": str(it["id"]), "device_codes": [d["device_code"] for d in devices],
        "allow_geometry_equal": False}]

    first = plant.gate(ctx)
    assert first["allowed"] is True and first["reasons"] == []
    assert plant.call("GET", f"/jobs/{job['id']}", "operator")["state"] == "released"

    plant.report_identity(m, software="4.3.0")
    s = plant.call("GET", f"/qualification/scopes/{scope['id']}", "operator")
    assert s["state"] == "requalification_required"
    assert s["state_reason"] == "software changed from 4.2.1 to 4.3.0"
    today = date.today()
    refused = plant.gate(ctx)
    assert refused["allowed"] is False
    assert refused["reasons"] == [{"code": "machine_not_qualified", "message":
                                   f"Machine requires requalification: software changed from 4.2.1 to 4.3.0 "
                                   f"on {today.day} {today:%b}"}]
    triggers = plant.call("GET", f"/qualification/scopes/{scope['id']}/triggers", "quality_engineer")
    assert [(t["kind"], t["source"], t["old_value"], t["new_value"]) for t in triggers] == [
        ("software_changed", f"agent:agent-{m['id']}", "4.2.1", "4.3.0")]

    approved = plant.qualify(scope["id"], kind_expected="requalification", risk="partial")
    assert approved["state"] == "approved" and approved["approval_signature_id"] is not None
    assert [a["passed"] for a in approved["artefacts"]] == [True, True]
    s = plant.call("GET", f"/qualification/scopes/{scope['id']}", "operator")
    assert (s["state"], s["qualified_software_revision"]) == ("qualified", "4.3.0")

    again = plant.gate(ctx)
    assert again["allowed"] is True and again["reasons"] == []
    decision = plant.call("GET", f"/gate/decisions/{refused['decision_id']}", "quality_engineer")
    assert decision["inputs"]["scope"]["state"] == "requalification_required"
    assert decision["requested_by"] == f"agent:agent-{m['id']}"

    verify = plant.call("GET", "/audit/verify", "quality_engineer")
    assert verify["ok"] is True and verify["breaks"] == []
