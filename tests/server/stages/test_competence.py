"""Competence at every door (R14, issue 20 item 1): a person performs a step on a machine only while authorised
on that machine: the build stage (start and completion) and cycles on furnaces, washers and sterilizers, not only
the release gate's request."""

from __future__ import annotations

from stagekit import PASSWORD, step_of

STEAM = {"process": "steam", "sterilization_temp_c": 134.0, "min_hold_s": 180.0, "pressure_tolerance_kpa": 10.0,
         "min_f0_min": 40.0}


def _refused(r, who: str, machine_id: str, doing: str) -> None:
    assert r.status_code == 403, r.text
    assert r.json() == {"code": "operator_not_authorised", "detail": (
        f"{who} is not authorised on machine {machine_id} (no current training authorisation): may not {doing}")}


def test_an_operator_without_authorisation_on_the_machine_cannot_start_or_sign_the_build(plant):
    ctx = plant.ready()
    assert plant.gate(ctx)["allowed"] is True  # the gate was asked for the authorised operator
    code = ctx["job"]["devices"][0]["device_code"]
    mid = ctx["machine"]["id"]
    step = step_of(plant, code, "build")
    # Olga holds no authorisation on this machine: she may not start its build.
    r = plant.client.post(f"/api/v1/stages/steps/{step['id']}/start", headers=plant.h("operator2"))
    _refused(r, "Olga Operator", mid, f"start the build of device {code}")
    # Otto starts it; his authorisation is revoked before he signs it as performed: refused.
    plant.call("POST", f"/stages/steps/{step['id']}/start", "operator")
    [auth] = [a for a in plant.call("GET", f"/users/{plant.uid('operator')}/machine-authorisations",
                                    "production_manager") if a["machine_id"] == mid]
    plant.call("POST", f"/machine-authorisations/{auth['id']}/revoke", "production_manager",
               json={"reason": "training expired"})
    r = plant.client.post(f"/api/v1/stages/steps/{step['id']}/complete", headers=plant.h("operator"),
                          json={"result": "built", "password": PASSWORD})
    _refused(r, "Otto Operator", mid, f"complete the build of device {code}")
    assert step_of(plant, code, "build")["state"] == "in_progress"
    # Re-trained: he signs it.
    plant.authorise(mid)
    plant.call("POST", f"/stages/steps/{step['id']}/complete", "operator", json={"result": "built",
                                                                                 "password": PASSWORD})


def test_a_cycle_is_started_and_completed_only_by_someone_authorised_on_its_machine(plant):
    ctx = plant.ready()
    code = ctx["job"]["devices"][0]["device_code"]
    plant.call("POST", "/machines", "production_manager", 201, json={
        "id": "sterilizer-r14", "manufacturer": "Belimed", "model": "MST-V", "serial_number": "SN-R14",
        "site": "Plant 1", "room": "CR-B"})
    recipe = plant.call("POST", "/cycles/recipes", "quality_engineer", 201, json={"name": "R14", "parameters": STEAM})
    plant.call("POST", f"/cycles/recipes/{recipe['id']}/approve", "quality_engineer", json={"password": PASSWORD})
    body = {"machine_id": "sterilizer-r14", "recipe_id": recipe["id"], "device_codes": [code]}
    r = plant.client.post("/api/v1/cycles", headers=plant.h("operator"), json=body)
    _refused(r, "Otto Operator", "sterilizer-r14", "start a cycle on sterilizer-r14")
    assert plant.call("GET", "/cycles?machine_id=sterilizer-r14", "quality_engineer") == []
    auth = plant.authorise("sterilizer-r14")
    cycle = plant.call("POST", "/cycles", "operator", 201, json=body)
    plant.call("POST", f"/machine-authorisations/{auth['id']}/revoke", "production_manager",
               json={"reason": "moved to another cell"})
    r = plant.client.post(f"/api/v1/cycles/{cycle['id']}/complete", headers=plant.h("operator"),
                          json={"password": PASSWORD})
    _refused(r, "Otto Operator", "sterilizer-r14", f"complete cycle {cycle['id']} on sterilizer-r14")
