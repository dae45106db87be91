"""One surgical guide made end to end with simulated machines (SLA printer, washer, steam sterilizer; data written
by the edge code into a real InfluxDB), released and sealed: shared by the DHR and the device archive tests."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from edge.readings import Event
from edge.simulators.profiles import SlaPrint, SterilizerCycle, WasherCycle
from edge_feed import NS, feed, machine
from stagekit import PASSWORD, backdate_job, run_stage, sla_with_resin_excursion

SLA = SlaPrint(layer_count=60)
EXCURSION = (400.0, 420.0)  # seconds into the build with the resin at 35 °C: above warning 34, below alarm 36


# Outages of the printer's data during the build as its agent records them: (from s, to s, recovery).
BUILD_GAPS = [(100.0, 110.0, "full"), (300.0, 320.5, "partial")]


def _gap(machine_id: str, t0: int, start_s: float, end_s: float, recovery: str) -> Event:
    """A gap event as the OPC UA connector writes it, stamped at the gap's end."""
    start, end = t0 + int(start_s * NS), t0 + int(end_s * NS)
    return Event(machine_id, "gap", f"no data from {machine_id}: connection lost; recovery {recovery}", end,
                 "info" if recovery == "full" else "warning",
                 {"start_ns": start, "end_ns": end, "cause": "connection lost", "recovery": recovery})


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, tz=timezone.utc).isoformat()


def make_device(plant, app, influxdb, influx_database) -> dict:
    """One surgical guide made end to end and released; returns its context."""
    ctx = plant.ready(devices=1)
    code = ctx["job"]["devices"][0]["device_code"]
    mid = ctx["machine"]["id"]
    t0 = (int(time.time()) - 3 * 3600) * NS
    # The job was planned before the data was recorded; jobs are created "now" by the API, so move its
    # creation back (a test set-up of the record's time, not of anything under test).
    backdate_job(app, ctx["job"]["id"], datetime.fromtimestamp(t0 / NS - 600, tz=timezone.utc))
    assert plant.gate(ctx)["allowed"] is True
    build = sla_with_resin_excursion(SLA, EXCURSION)

    sla = machine("sla-01").model_copy(update={"id": mid})
    feed(url=influxdb.url, database=influx_database, machine_cfg=sla, job=str(ctx["job"]["id"]), devices=[code],
         start_ns=t0, seconds=SLA.period_s, step_s=1.0, state=build, noise=False,
         events=[_gap(mid, t0, start_s, end_s, recovery) for start_s, end_s, recovery in BUILD_GAPS])
    run_stage(plant, code, "build")
    plant.call("POST", f"/devices/{code}/manual-steps", "operator", 201, json={
        "kind": "support_removal", "description": "supports removed with flush cutters", "password": PASSWORD})
    plant.call("POST", f"/devices/{code}/manual-steps", "operator", 201, json={
        "kind": "inspection", "description": "drill sleeve bore", "password": PASSWORD,
        "measurements": [{"name": "sleeve_bore_mm", "nominal": 4.0, "tol_minus": 0.05, "tol_plus": 0.05,
                          "measured": 4.02, "unit": "mm"}]})
    run_stage(plant, code, "post_processing")

    clock = t0 + int((SLA.period_s + 300) * NS)
    for kind, cfg_name, profile, params in (
            ("washer", "washer-01", WasherCycle(), {
                "process": "cleaning", "wash_temperature_c": [50.0, 60.0], "min_wash_s": 590.0,
                "max_final_conductivity_us_cm": 5.0,
                "residue_limits": [{"test": "protein_ug_cm2", "max": 6.4, "unit": "ug/cm2"}]}),
            ("sterilizer", "sterilizer-01", SterilizerCycle(), {
                "process": "steam", "sterilization_temp_c": 134.0, "min_hold_s": 180.0,
                "pressure_tolerance_kpa": 10.0, "min_f0_min": 40.0})):
        cmid = f"{kind}-{ctx['job']['id']}"
        plant.call("POST", "/machines", "production_manager", 201, json={
            "id": cmid, "manufacturer": "Belimed", "model": "X", "serial_number": f"SN-{cmid}", "site": "Plant 1",
            "room": "CR-B"})
        plant.authorise(cmid)
        r = plant.call("POST", "/cycles/recipes", "quality_engineer", 201,
                       json={"name": f"{kind.upper()}-{cmid}", "parameters": params})
        plant.call("POST", f"/cycles/recipes/{r['id']}/approve", "quality_engineer", json={"password": PASSWORD})
        cfg = machine(cfg_name).model_copy(update={"id": cmid})
        seconds = profile.period_s - 1
        feed(url=influxdb.url, database=influx_database, machine_cfg=cfg, job=f"LOAD-{cmid}", devices=[code],
             start_ns=clock, seconds=seconds, step_s=2.0, state=profile.state)
        c = plant.call("POST", "/cycles", "operator", 201, json={
            "machine_id": cmid, "recipe_id": r["id"], "device_codes": [code], "started_at": _utc(clock)})
        out = plant.call("POST", f"/cycles/{c['id']}/complete", "operator", json={
            "password": PASSWORD, "ended_at": _utc(clock + int(seconds * NS)),
            "residue_results": [{"test": "protein_ug_cm2", "value": 0.8, "unit": "ug/cm2"}]})
        assert out["verdict"] == "pass", out["criteria"]
        clock += int((seconds + 300) * NS)
        run_stage(plant, code, "cleaning" if kind == "washer" else "sterilization")
    run_stage(plant, code, "inspection")
    run_stage(plant, code, "release")
    return {"ctx": ctx, "code": code, "machine": mid}
