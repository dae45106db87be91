"""Materials (R15, issue 20 item 5): a lot is taken in with a real certificate, released by a quality engineer's
signature before first use, and re-checked at every stage start and by the edge after the gate released the job."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from stagekit import PASSWORD, run_stage, step_of


def _register(plant, **kw) -> "object":
    body = {"lot_number": f"LOT-{uuid.uuid4().hex[:8]}", "material": "Ti-6Al-4V ELI", "supplier": "AP&C",
            "certificate_ref": "CoA-2026-201", "lot_type": "virgin", "reuse_count": 0, "reuse_limit": 5, **kw}
    return plant.client.post("/api/v1/materials/lots", headers=plant.h("production_manager"), json=body)


def test_a_lot_needs_a_certificate_and_an_unexpired_date_to_be_taken_in(plant):
    r = _register(plant, certificate_ref="   ")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "certificate_ref"
    r = _register(plant, expires_on=str(date.today() - timedelta(days=1)))
    assert r.status_code == 409 and r.json()["code"] == "lot_expired"


def test_a_lot_is_used_only_after_a_quality_engineer_released_it_with_a_signature(plant):
    lot = _register(plant).json()
    assert lot["status"] == "incoming"
    ctx = plant.ready()
    job = plant.job(ctx["machine"]["id"], lot["id"], [ctx["iteration"]["id"]])
    refused = plant.gate({**ctx, "job": job})
    assert refused["reasons"] == [{"code": "material_lot_invalid", "message":
                                   f"Material lot {lot['lot_number']} has not passed incoming inspection (not "
                                   f"released by a quality engineer)"}]
    # The production manager cannot release it; the quality engineer must sign.
    r = plant.client.post(f"/api/v1/materials/lots/{lot['id']}/status", headers=plant.h("production_manager"),
                          json={"status": "released", "reason": "looks fine", "password": PASSWORD})
    assert r.status_code == 403
    r = plant.client.post(f"/api/v1/materials/lots/{lot['id']}/status", headers=plant.h("quality_engineer"),
                          json={"status": "released", "reason": "CoA checked"})
    assert r.status_code == 409 and r.json()["code"] == "lot_release_signature"
    released = plant.call("POST", f"/materials/lots/{lot['id']}/status", "quality_engineer",
                          json={"status": "released", "reason": "CoA checked", "password": PASSWORD})
    assert released["status"] == "released"
    assert plant.gate({**ctx, "job": job})["allowed"] is True
    entries = plant.call("GET", f"/audit/entries?record_type=material_lot&record_id={lot['id']}", "quality_engineer")
    assert entries[-1]["action"] == "material_lot_status" and "signature_id" in entries[-1]["new_values"]


def test_a_lot_quarantined_after_the_gate_released_the_job_stops_the_build_and_the_edge(plant):
    ctx = plant.ready()
    assert plant.gate(ctx)["allowed"] is True
    code = ctx["job"]["devices"][0]["device_code"]
    lot = ctx["lot"]
    plant.call("POST", f"/materials/lots/{lot['id']}/status", "quality_engineer",
               json={"status": "quarantined", "reason": "supplier recall"})
    step = step_of(plant, code, "build")
    r = plant.client.post(f"/api/v1/stages/steps/{step['id']}/start", headers=plant.h("operator"))
    assert r.status_code == 409
    assert r.json()["detail"] == (f"Cannot start build of device {code}: material lot {lot['lot_number']} is "
                                  f"quarantined")
    context = plant.call("GET", f"/agents/machines/{ctx['machine']['id']}/context", ctx["machine"]["agent"])
    assert context["job_state"] == "released"
    assert context["blocking_reasons"] == [f"material lot {lot['lot_number']} is quarantined"]
    plant.call("POST", f"/materials/lots/{lot['id']}/status", "quality_engineer",
               json={"status": "released", "reason": "recall withdrawn", "password": PASSWORD})
    run_stage(plant, code, "build")
