"""Release evidence: a device is released only with a passing, signed verdict covering its cycle for every
cycle step its product family's route requires; the stage gates say what is missing (issue 12, item 4).

Before this, a device walked from build to release and was sealed with no cleaning or sterilization cycle."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import pytest
from sqlalchemy import text

from edge.simulators.profiles import SterilizerCycle
from edge_feed import NS, feed, machine
from routekit import ROUTES_WITHOUT_CYCLES
from stagekit import PASSWORD, run_stage, step_of
from server.settings import Settings

STEAM_134 = {"process": "steam", "sterilization_temp_c": 134.0, "band_minus_k": 0.0, "band_plus_k": 3.0,
             "min_hold_s": 180.0, "pressure_tolerance_kpa": 10.0, "min_f0_min": 40.0, "max_gap_s": 5.0}
STEAM_ONLY = "spinal cage"  # route: steam sterilization only
DEFAULT = "knee guide"  # not configured: the default route (cleaning, then sterilization)


@pytest.fixture(scope="module")
def settings(database_url, tmp_path_factory, influxdb, influx_database) -> Settings:
    """As the stage tests' settings, with a steam-only route for one family."""
    return Settings(database_url=database_url, argon2_time_cost=1, argon2_memory_kib=8, argon2_parallelism=1,
                    file_store=str(tmp_path_factory.mktemp("files")), influx_url=influxdb.url,
                    influx_database=influx_database,
                    routes={**ROUTES_WITHOUT_CYCLES, STEAM_ONLY: {"sterilization": ["steam"]}})


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, tz=timezone.utc).isoformat()


def _refused(r, *reasons: str) -> None:
    assert r.status_code == 409 and r.json()["code"] == "cycle_evidence_missing", r.text
    for reason in reasons:
        assert reason in r.json()["detail"], r.json()["detail"]


def test_the_default_route_needs_cleaning_and_sterilization_cycles(plant):
    ctx = plant.ready(devices=1, family=DEFAULT)
    assert plant.gate(ctx)["allowed"] is True
    code = ctx["job"]["devices"][0]["device_code"]
    run_stage(plant, code, "build")
    run_stage(plant, code, "post_processing")  # not on the default route: no cycle needed
    step = step_of(plant, code, "cleaning")
    plant.call("POST", f"/stages/steps/{step['id']}/start", "operator")
    r = plant.client.post(f"/api/v1/stages/steps/{step['id']}/complete", headers=plant.h("operator"),
                          json={"result": "washed", "password": PASSWORD})
    _refused(r, f"Cannot complete cleaning of device {code}: cleaning: no cleaning cycle recorded for this device")


def test_release_needs_a_passing_signed_steam_verdict_that_covers_the_cycle(plant, influxdb, influx_database, app):
    ctx = plant.ready(devices=1, family=STEAM_ONLY)
    assert plant.gate(ctx)["allowed"] is True
    code = ctx["job"]["devices"][0]["device_code"]
    for stage in ("build", "post_processing", "cleaning"):  # cleaning is not on this family's route
        run_stage(plant, code, stage)
    step = step_of(plant, code, "sterilization")
    plant.call("POST", f"/stages/steps/{step['id']}/start", "operator")

    def complete_sterilization():
        return plant.client.post(f"/api/v1/stages/steps/{step['id']}/complete", headers=plant.h("operator"),
                                 json={"result": "sterilized", "password": PASSWORD})

    _refused(complete_sterilization(), "sterilization: no steam cycle recorded for this device")

    mid = f"sterilizer-{uuid.uuid4().hex[:6]}"
    plant.call("POST", "/machines", "production_manager", 201, json={
        "id": mid, "manufacturer": "Belimed", "model": "MST-V", "serial_number": f"SN-{mid}", "site": "Plant 1",
        "room": "CR-B"})
    plant.authorise(mid)
    recipe = plant.call("POST", "/cycles/recipes", "quality_engineer", 201,
                        json={"name": f"STEAM-{mid}", "parameters": STEAM_134})
    plant.call("POST", f"/cycles/recipes/{recipe['id']}/approve", "quality_engineer", json={"password": PASSWORD})
    cfg = machine("sterilizer-01").model_copy(update={"id": mid})
    clock = [(int(datetime.now(timezone.utc).timestamp()) - 6 * 3600) * NS]

    def cycle(profile: SterilizerCycle) -> dict:
        start = clock[0]
        clock[0] += int((profile.period_s + 60) * NS)
        feed(url=influxdb.url, database=influx_database, machine_cfg=cfg, job="LOAD", devices=[code],
             start_ns=start, seconds=profile.period_s, step_s=1.0, state=profile.state)
        c = plant.call("POST", "/cycles", "operator", 201, json={
            "machine_id": mid, "recipe_id": recipe["id"], "device_codes": [code], "started_at": _utc(start)})
        return plant.call("POST", f"/cycles/{c['id']}/complete", "operator", json={
            "password": PASSWORD, "ended_at": _utc(start + int(profile.period_s * NS))})

    short = cycle(SterilizerCycle(plateau_c=134.0, plateau_s=150.0))
    assert short["verdict"] == "fail"
    plant.call("POST", f"/nonconformities/{short['nonconformity_ids'][0]}/disposition", "quality_engineer",
               json={"disposition": "rework", "rationale": "sterilize again", "password": PASSWORD})
    _refused(complete_sterilization(), f"sterilization: steam cycle {short['id']} on {mid} failed (hold_time)")

    good = cycle(SterilizerCycle(plateau_c=134.0, plateau_s=210.0))
    assert good["verdict"] == "pass"
    plant.call("POST", f"/stages/steps/{step['id']}/complete", "operator",
               json={"result": "sterilized", "password": PASSWORD})
    plant.call("POST", f"/stages/steps/{step['id']}/accept", "quality_engineer",
               json={"judgement": "conforming", "password": PASSWORD})
    run_stage(plant, code, "inspection")

    # Someone with database access edits the passing verdict's record (here the hold time it measured):
    # a record that no longer matches its signature is not evidence.
    with app.state.engine.begin() as conn:
        saved = conn.execute(text("SELECT evaluation FROM process_cycles WHERE id = :id"), {"id": good["id"]}).scalar()
        edited = json.loads(saved) if isinstance(saved, str) else dict(saved)
        edited["criteria"] = [{**c, "measured": 999.0} if c["name"] == "hold_time" else c for c in edited["criteria"]]
        conn.execute(text("UPDATE process_cycles SET evaluation = :e WHERE id = :id"),
                     {"e": json.dumps(edited), "id": good["id"]})
    release = step_of(plant, code, "release")
    r = plant.client.post(f"/api/v1/stages/steps/{release['id']}/start", headers=plant.h("quality_engineer"))
    _refused(r, f"steam cycle {good['id']} on {mid} does not match its signature")
    with app.state.engine.begin() as conn:
        conn.execute(text("UPDATE process_cycles SET evaluation = :e WHERE id = :id"),
                     {"e": saved if isinstance(saved, str) else json.dumps(saved), "id": good["id"]})

    run_stage(plant, code, "release")  # now complete: released and sealed
    assert step_of(plant, code, "release")["state"] == "accepted"
