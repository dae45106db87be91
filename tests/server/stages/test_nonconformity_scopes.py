"""A nonconformity stops what it names (R16, issue 20 item 2): a machine (every job on it, its cycles), a material
lot (every job built from it), a design iteration (every device of it), not only a job or a device."""

from __future__ import annotations

from stagekit import PASSWORD, run_stage, step_of

STEAM = {"process": "steam", "sterilization_temp_c": 134.0, "min_hold_s": 180.0, "pressure_tolerance_kpa": 10.0,
         "min_f0_min": 40.0}


def _raise(plant, **subject) -> dict:
    return plant.call("POST", "/nonconformities", "quality_engineer", 201,
                      json={"kind": "other", "description": subject.pop("description"), **subject})


def _dispose(plant, nc: dict) -> None:
    plant.call("POST", f"/nonconformities/{nc['id']}/disposition", "quality_engineer",
               json={"disposition": "use_as_is", "rationale": "investigated, no effect", "password": PASSWORD})


def test_a_nonconformity_on_a_machine_stops_new_jobs_and_cycles_on_it_until_dispositioned(plant):
    ctx = plant.ready()
    mid = ctx["machine"]["id"]
    nc = _raise(plant, machine_id=mid, description="laser power drift -8 %")
    refused = plant.gate(ctx)
    assert refused["allowed"] is False
    assert refused["reasons"] == [{"code": "open_nonconformity", "message":
                                   f"Open nonconformity {nc['id']} (other) on machine {mid} must be dispositioned "
                                   f"first: laser power drift -8 %"}]
    # The agent's context names it too, so the edge keeps the machine's start blocked.
    context = plant.call("GET", f"/agents/machines/{mid}/context", ctx["machine"]["agent"])
    assert [n["id"] for n in context["open_nonconformities"]] == [nc["id"]]
    # No cycle starts on it either.
    recipe = plant.call("POST", "/cycles/recipes", "quality_engineer", 201, json={"name": f"S-{mid}",
                                                                                   "parameters": STEAM})
    plant.call("POST", f"/cycles/recipes/{recipe['id']}/approve", "quality_engineer", json={"password": PASSWORD})
    r = plant.client.post("/api/v1/cycles", headers=plant.h("operator"), json={
        "machine_id": mid, "recipe_id": recipe["id"], "device_codes": [ctx["job"]["devices"][0]["device_code"]]})
    assert r.status_code == 409 and r.json()["code"] == "open_nonconformity"
    assert r.json()["detail"] == (f"Cannot start a cycle on {mid}: open nonconformity {nc['id']} (other): laser "
                                  f"power drift -8 % on the machine must be dispositioned first")
    _dispose(plant, nc)
    assert plant.gate(ctx)["allowed"] is True


def test_a_machine_nonconformity_stops_the_build_in_progress_not_builds_accepted_before_it(plant):
    earlier = plant.ready()
    mid = earlier["machine"]["id"]
    assert plant.gate(earlier)["allowed"] is True
    done = earlier["job"]["devices"][0]["device_code"]
    run_stage(plant, done, "build")  # accepted before the drift was found
    later = {**earlier, "job": plant.job(mid, earlier["lot"]["id"], [earlier["iteration"]["id"]])}
    assert plant.gate(later)["allowed"] is True
    code = later["job"]["devices"][0]["device_code"]
    step = step_of(plant, code, "build")
    plant.call("POST", f"/stages/steps/{step['id']}/start", "operator")
    nc = _raise(plant, machine_id=mid, description="recoater blade damaged")
    r = plant.client.post(f"/api/v1/stages/steps/{step['id']}/complete", headers=plant.h("operator"),
                          json={"result": "built", "password": PASSWORD})
    assert r.status_code == 409
    assert r.json()["detail"] == (f"Cannot complete build of device {code}: open nonconformity {nc['id']} "
                                  f"(other, on machine {mid}) must be dispositioned first")
    run_stage(plant, done, "post_processing")  # the earlier device goes on
    dhr = plant.call("GET", f"/history/devices/{code}/dhr", "quality_engineer")
    assert [(n["nonconformity_id"], n["scope"]) for n in dhr["related_nonconformities"]] == [
        (nc["id"], f"machine {mid}")]
    assert plant.call("GET", f"/history/devices/{done}/dhr", "quality_engineer")["related_nonconformities"] == []
    _dispose(plant, nc)


def test_a_nonconformity_on_a_material_lot_stops_every_job_and_device_built_from_it(plant):
    ctx = plant.ready()
    assert plant.gate(ctx)["allowed"] is True
    code = ctx["job"]["devices"][0]["device_code"]
    run_stage(plant, code, "build")
    lot = ctx["lot"]
    nc = _raise(plant, material_lot_id=lot["id"], description="supplier recall: oxygen content above spec")
    step = step_of(plant, code, "post_processing")
    r = plant.client.post(f"/api/v1/stages/steps/{step['id']}/start", headers=plant.h("operator"))
    assert r.status_code == 409
    assert r.json()["detail"] == (f"Cannot start post-processing of device {code}: open nonconformity {nc['id']} "
                                  f"(other, on material lot {lot['id']}) must be dispositioned first")
    second = {**ctx, "job": plant.job(ctx["machine"]["id"], lot["id"], [ctx["iteration"]["id"]])}
    refused = plant.gate(second)
    assert refused["allowed"] is False
    assert refused["reasons"] == [{"code": "open_nonconformity", "message":
                                   f"Open nonconformity {nc['id']} (other) on material lot {lot['lot_number']} must "
                                   f"be dispositioned first: supplier recall: oxygen content above spec"}]
    _dispose(plant, nc)
    plant.call("POST", f"/stages/steps/{step['id']}/start", "operator")


def test_a_nonconformity_on_a_design_iteration_stops_its_devices(plant):
    ctx = plant.ready()
    it = ctx["iteration"]
    nc = _raise(plant, design_iteration_id=it["id"], description="wall thickness below 0.8 mm at the flange")
    refused = plant.gate(ctx)
    assert [r["code"] for r in refused["reasons"]] == ["open_nonconformity"]
    assert f"on design iteration {it['id']}" in refused["reasons"][0]["message"]
    _dispose(plant, nc)
    assert plant.gate(ctx)["allowed"] is True


def test_a_nonconformity_must_name_something_that_exists(plant):
    r = plant.client.post("/api/v1/nonconformities", headers=plant.h("quality_engineer"),
                          json={"kind": "other", "description": "something"})
    assert r.status_code == 409 and r.json()["code"] == "nonconformity_subject"
    r = plant.client.post("/api/v1/nonconformities", headers=plant.h("quality_engineer"),
                          json={"kind": "material", "description": "recall", "material_lot_id": 999999})
    assert r.status_code == 404 and r.json()["code"] == "lot_not_found"


def test_rework_needs_the_rework_and_a_quality_engineers_re_inspection_before_the_device_goes_on(plant):
    """R16: "rework" used to release at once. Now the device stays stopped until the rework is recorded and a
    quality engineer has re-inspected it afterwards, both signed."""
    ctx = plant.ready()
    assert plant.gate(ctx)["allowed"] is True
    code = ctx["job"]["devices"][0]["device_code"]
    run_stage(plant, code, "build")
    step = step_of(plant, code, "post_processing")
    plant.call("POST", f"/stages/steps/{step['id']}/start", "operator")
    bore = {"name": "sleeve_bore_mm", "nominal": 4.0, "tol_minus": 0.05, "tol_plus": 0.05, "unit": "mm"}
    failed = plant.call("POST", f"/devices/{code}/manual-steps", "operator", 201, json={
        "kind": "inspection", "description": "drill sleeve bore", "password": PASSWORD,
        "measurements": [{**bore, "measured": 3.90}]})
    nc_id = failed["nonconformity_id"]
    plant.call("POST", f"/nonconformities/{nc_id}/disposition", "quality_engineer",
               json={"disposition": "rework", "rationale": "ream the bore to 4.00 mm", "password": PASSWORD})

    def complete():
        return plant.client.post(f"/api/v1/stages/steps/{step['id']}/complete", headers=plant.h("operator"),
                                 json={"result": "post-processed", "password": PASSWORD})

    r = complete()
    assert r.status_code == 409
    assert r.json()["detail"] == (f"Cannot complete post-processing of device {code}: nonconformity {nc_id} "
                                  f"(dimensional) was dispositioned as rework: no rework recorded since (manual "
                                  f"step kind rework, signed)")
    plant.call("POST", f"/devices/{code}/manual-steps", "operator", 201, json={
        "kind": "rework", "description": "bore reamed to 4.00 mm", "password": PASSWORD})
    # The operator's own check is not the re-inspection: a quality engineer's is.
    plant.call("POST", f"/devices/{code}/manual-steps", "operator", 201, json={
        "kind": "inspection", "description": "bore after reaming", "password": PASSWORD,
        "measurements": [{**bore, "measured": 4.01}]})
    r = complete()
    assert r.status_code == 409 and r.json()["detail"].endswith(
        "was dispositioned as rework: no passing re-inspection by a quality engineer after the rework")
    plant.call("POST", f"/devices/{code}/manual-steps", "quality_engineer", 201, json={
        "kind": "inspection", "description": "re-inspection of the reamed bore", "password": PASSWORD,
        "measurements": [{**bore, "measured": 4.01}]})
    assert complete().status_code == 200


def test_rework_is_refused_for_a_machine_nonconformity(plant):
    m = plant.machine()
    nc = _raise(plant, machine_id=m["id"], description="chiller alarm")
    r = plant.client.post(f"/api/v1/nonconformities/{nc['id']}/disposition", headers=plant.h("quality_engineer"),
                          json={"disposition": "rework", "rationale": "fix it", "password": PASSWORD})
    assert r.status_code == 409 and r.json()["code"] == "disposition"
    assert r.json()["detail"].startswith(f"Nonconformity {nc['id']} is on machine {m['id']}: rework applies to devices")
    _dispose(plant, nc)
