"""Stage gates per device: strict order, acceptance by a named second person, deadlines, nonconformity blocks."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text

from server.models import utcnow

PASSWORD = "correct-horse-battery"
PERFORM = {"build": "operator", "post_processing": "operator", "cleaning": "operator", "sterilization": "operator",
           "inspection": "quality_engineer", "release": "quality_engineer", "delivery": "production_manager"}
ACCEPT = {"build": "production_manager", "post_processing": "production_manager", "cleaning": "quality_engineer",
          "sterilization": "quality_engineer", "inspection": "quality_engineer2", "release": "quality_engineer2",
          "delivery": "clinician"}


def steps(plant, code):
    return {s["stage"]: s for s in plant.call("GET", f"/devices/{code}/stages", "operator")}


def run_step(plant, step, stage):
    plant.call("POST", f"/stages/steps/{step['id']}/start", PERFORM[stage])
    plant.call("POST", f"/stages/steps/{step['id']}/complete", PERFORM[stage],
               json={"result": f"{stage} done", "password": PASSWORD})
    return plant.call("POST", f"/stages/steps/{step['id']}/accept", ACCEPT[stage],
                      json={"judgement": "complete and conforming", "password": PASSWORD})


def test_build_waits_for_the_release_gate(plant):
    ctx = plant.ready()
    code = ctx["job"]["devices"][0]["device_code"]
    r = plant.client.post(f"/api/v1/stages/steps/{steps(plant, code)['build']['id']}/start", headers=plant.h("operator"))
    assert r.status_code == 409 and r.json() == {"code": "stage_out_of_order", "detail":
        f"Cannot start build of device {code}: the release gate has not allowed job {ctx['job']['id']}"}


def test_all_stages_in_order_to_delivery(plant):
    ctx = plant.ready()
    assert plant.gate(ctx)["allowed"]
    code = ctx["job"]["devices"][0]["device_code"]
    s = steps(plant, code)
    r = plant.client.post(f"/api/v1/stages/steps/{s['post_processing']['id']}/start", headers=plant.h("operator"))
    assert r.status_code == 409 and r.json()["detail"] == (f"Cannot start post-processing of device {code}: build "
                                                           f"has not been accepted (it is pending)")
    for stage in [s for s in PERFORM if s != "delivery"]:
        accepted = run_step(plant, steps(plant, code)[stage], stage)
        assert accepted["state"] == "accepted" and accepted["acceptance_signature_id"] is not None
    # Delivery is performed by dispatching a delivery list (tests/server/delivery) and accepted by the case's clinician.
    shipment = plant.call("POST", "/shipments", "production_manager", 201, json={"device_codes": [code]})
    plant.call("POST", f"/shipments/{shipment['id']}/dispatch", "production_manager", json={"password": PASSWORD})
    accepted = plant.call("POST", f"/stages/steps/{steps(plant, code)['delivery']['id']}/accept",
                                       "clinician", json={"judgement": "received", "password": PASSWORD})
    assert accepted["state"] == "accepted" and accepted["acceptance_signature_id"] is not None
    assert plant.call("GET", f"/shipments/{shipment['id']}", "production_manager")["state"] == "accepted"
    assert plant.call("GET", f"/devices/{code}", "operator")["state"] == "delivered"
    assert plant.call("GET", "/audit/verify", "quality_engineer")["ok"] is True


def test_performer_cannot_accept_own_step_and_wrong_roles_refused(plant):
    ctx = plant.ready()
    plant.gate(ctx)
    code = ctx["job"]["devices"][0]["device_code"]
    build = steps(plant, code)["build"]
    r = plant.client.post(f"/api/v1/stages/steps/{build['id']}/start", headers=plant.h("quality_engineer"))
    assert r.status_code == 403 and r.json()["detail"] == "A quality_engineer may not perform build; allowed: operator"
    plant.call("POST", f"/stages/steps/{build['id']}/start", "operator")
    r = plant.client.post(f"/api/v1/stages/steps/{build['id']}/accept", headers=plant.h("production_manager"),
                          json={"judgement": "ok", "password": PASSWORD})
    assert r.status_code == 409 and r.json()["detail"] == (f"Cannot accept build of device {code}: it is in progress, "
                                                           f"not completed")
    plant.call("POST", f"/stages/steps/{build['id']}/complete", "operator", json={"result": "built", "password": PASSWORD})
    r = plant.client.post(f"/api/v1/stages/steps/{build['id']}/accept", headers=plant.h("clinician"),
                          json={"judgement": "ok", "password": PASSWORD})
    assert r.status_code == 403


def test_overdue_step_needs_impact_assessment(plant):
    ctx = plant.ready()
    plant.gate(ctx)
    code = ctx["job"]["devices"][0]["device_code"]
    build = steps(plant, code)["build"]
    plant.call("POST", f"/stages/steps/{build['id']}/start", "operator")
    plant.call("POST", f"/stages/steps/{build['id']}/complete", "operator", json={"result": "built", "password": PASSWORD})
    past = utcnow() - timedelta(hours=3)
    with plant.app.state.engine.begin() as conn:  # time passes beyond the deadline
        conn.execute(text("UPDATE stage_steps SET deadline = :d WHERE id = :i"),
                     {"d": past.replace(tzinfo=None) if conn.dialect.name == "sqlite" else past, "i": build["id"]})
    s = steps(plant, code)["build"]
    assert s["overdue"] is True
    assert build["id"] in [o["id"] for o in plant.call("GET", "/stages/overdue", "production_manager")]
    r = plant.client.post(f"/api/v1/stages/steps/{build['id']}/accept", headers=plant.h("production_manager"),
                          json={"judgement": "ok", "password": PASSWORD})
    assert r.status_code == 409 and r.json()["detail"] == (
        f"Cannot accept build of device {code}: it is overdue since {past:%d %b %Y %H:%M} UTC; "
        f"record an impact assessment first")
    plant.call("POST", f"/stages/steps/{build['id']}/impact-assessment", "production_manager",
               json={"assessment": "3 h late; surgery in 30 days, no impact", "password": PASSWORD})
    assert plant.call("POST", f"/stages/steps/{build['id']}/accept", "production_manager",
                      json={"judgement": "ok", "password": PASSWORD})["state"] == "accepted"


def test_nonconformity_blocks_device_until_dispositioned(plant):
    ctx = plant.ready(devices=2)
    plant.gate(ctx)
    code, other = [d["device_code"] for d in ctx["job"]["devices"]]
    nc = plant.call("POST", "/nonconformities", "operator", 201, json={
        "kind": "surface", "description": "powder residue in lattice", "device_code": code})
    r = plant.client.post(f"/api/v1/stages/steps/{steps(plant, code)['build']['id']}/start", headers=plant.h("operator"))
    assert r.status_code == 409 and r.json()["detail"] == (f"Cannot start build of device {code}: open nonconformity "
                                                           f"{nc['id']} (surface) must be dispositioned first")
    plant.call("POST", f"/stages/steps/{steps(plant, other)['build']['id']}/start", "operator")  # other device free
    r = plant.client.post(f"/api/v1/nonconformities/{nc['id']}/disposition", headers=plant.h("operator"),
                          json={"disposition": "rework", "rationale": "re-clean", "password": PASSWORD})
    assert r.status_code == 403
    done = plant.call("POST", f"/nonconformities/{nc['id']}/disposition", "quality_engineer",
                      json={"disposition": "rework", "rationale": "re-clean lattice", "password": PASSWORD})
    assert done["state"] == "dispositioned" and done["disposition_signature_id"] is not None
    # Rework is not the end of it: the rework and a quality engineer's re-inspection come first (issue 20).
    r = plant.client.post(f"/api/v1/stages/steps/{steps(plant, code)['build']['id']}/start", headers=plant.h("operator"))
    assert r.status_code == 409 and "was dispositioned as rework: no rework recorded since" in r.json()["detail"]
    plant.call("POST", f"/devices/{code}/manual-steps", "operator", 201,
               json={"kind": "rework", "description": "lattice re-cleaned", "password": PASSWORD})
    plant.call("POST", f"/devices/{code}/manual-steps", "quality_engineer", 201,
               json={"kind": "inspection", "description": "lattice free of powder", "password": PASSWORD})
    plant.call("POST", f"/stages/steps/{steps(plant, code)['build']['id']}/start", "operator")
