"""One device from build to release the way the shop does it, across the seams (machine → agent → InfluxDB →
server), with time in it, and the gate's answer asserted at every step with its reasons (issue 12):

- the printer (OPC UA, simulated) is power-cycled while its start is blocked and comes back with its default
  StartEnabled = true: the agent blocks it again and records an alarm;
- the release gate releases the job; then the printer's software is updated: the server requires
  requalification, the agent blocks the start, the gate refuses with the reason, until the quality engineer
  requalifies; the build then runs and its readings are stored under the device code;
- the sterilizer's readings reach InfluxDB through the same agent and Mosquitto before anyone records the cycle
  (recorded late, so no reading carries a device tag), the first cycle has a 10 s sensor dropout inside the
  hold and fails, the agent is killed (-9) in the middle of the second cycle and restarted;
- the stage gates refuse sterilization until a passing, complete cycle is recorded; then release.
"""

from __future__ import annotations

import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import os
from datetime import date, timedelta

import paho.mqtt.client as mqtt
import pytest
import trimesh
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "edge"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "cycles"))
from agentkit import AgentProcess, wait_until  # noqa: E402
from influx_settings import influx_database  # noqa: E402,F401
from linkkit import free_port, printer, server_url, start_enabled  # noqa: E402,F401

from edge.config import load_machine  # noqa: E402
from edge.simulators.mqtt import messages_for  # noqa: E402
from edge.simulators.profiles import SterilizerCycle  # noqa: E402
from routekit import ROUTES_WITHOUT_CYCLES  # noqa: E402
from stagekit import PASSWORD, run_stage, step_of  # noqa: E402
from server.settings import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FAMILY = "spinal cage"  # route: steam sterilization
STEAM_134 = {"process": "steam", "sterilization_temp_c": 134.0, "band_minus_k": 0.0, "band_plus_k": 3.0,
             "min_hold_s": 180.0, "pressure_tolerance_kpa": 10.0, "min_f0_min": 40.0, "max_gap_s": 5.0}

pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def database_url(tmp_path_factory) -> str:
    """SQLite only: this walk is about the seams, the SQL backends are covered elsewhere."""
    return f"sqlite:///{tmp_path_factory.mktemp('db')}/server.db"


@pytest.fixture(scope="module")
def settings(database_url, tmp_path_factory, influxdb, influx_database) -> Settings:  # noqa: F811
    """The server reads the agent's InfluxDB database; the family's route needs a steam cycle."""
    return Settings(database_url=database_url, argon2_time_cost=1, argon2_memory_kib=8, argon2_parallelism=1,
                    file_store=str(tmp_path_factory.mktemp("files")), influx_url=influxdb.url,
                    influx_database=influx_database,
                    routes={**ROUTES_WITHOUT_CYCLES, FAMILY: {"sterilization": ["steam"]}})


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()


class Sterilizer:
    """The sterilizer-01 machine publishing its readings (1 Hz, machine timestamps) on the real broker."""

    def __init__(self, port: int, machine):
        self.machine, self.rng, self.seq = machine, random.Random(11), 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="walk-sterilizer")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        profile = SterilizerCycle()
        phases = profile.phases()
        self.plateau = sum(d for _, d in phases[:[n for n, _ in phases].index("plateau")])
        self.plateau_s = profile.plateau_s

    def run(self, start_ms: int, seconds: range, skip: tuple[float, float] | None = None) -> None:
        """Publish these seconds of the cycle (0 = 20 s before the plateau) at machine time start_ms + i s,
        except those within skip."""
        for i in seconds:
            if skip and skip[0] <= i < skip[1]:
                continue
            self.seq += 1
            for topic, payload in messages_for(self.machine, self.plateau - 20 + i, self.rng,
                                               ts_ms=start_ms + i * 1000, seq=self.seq):
                self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _linked_agent(tmp_path: Path, machines: list[dict], token: str, influx_url: str, database: str,
                  server_url: str) -> AgentProcess:  # noqa: F811
    """The cell's edge agent with both machines, linked to the server (token in the environment)."""
    mdir = tmp_path / "machines"
    mdir.mkdir()
    for m in machines:
        (mdir / f"{m['id']}.yaml").write_text(yaml.safe_dump(m))
    cfg = {"id": "edge-walk", "machines_dir": str(mdir), "state_dir": str(tmp_path / "state"),
           "influx": {"api": "v1", "url": influx_url, "database": database, "max_backoff_s": 1.0},
           "http": {"host": "127.0.0.1", "port": free_port()},
           "server": {"url": server_url, "token_env": "WALK_AGENT_TOKEN", "interval_s": 0.5}}
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(cfg))
    os.environ["WALK_AGENT_TOKEN"] = token
    return AgentProcess(tmp_path / "agent.yaml").start()


def test_a_device_walks_from_build_to_release_across_the_seams(plant, server_url, printer, mosquitto,  # noqa: F811
                                                               influxdb, influx_database, tmp_path):  # noqa: F811
    loop, sim = printer
    today = date.today()
    # The cell as the plant registers it: the printer and the sterilizer, one agent for both.
    plant.call("POST", "/machines", "production_manager", 201, json={
        "id": "lpbf-01", "manufacturer": "amtrace simulated machines", "model": "LPBF-SIM 280",
        "serial_number": "SIM-LPBF-0001", "site": "Plant 1", "room": "AM-2",
        "calibration_due": str(today + timedelta(days=90)), "maintenance_due": str(today + timedelta(days=60))})
    cfg = yaml.safe_load((ROOT / "configs" / "machines" / "sterilizer-01.yaml").read_text())
    cfg["connection"]["port"] = mosquitto.port
    plant.call("POST", "/machines", "production_manager", 201, json={
        "id": "sterilizer-01", "manufacturer": cfg["manufacturer"], "model": cfg["model"],
        "serial_number": cfg["serial"], "site": "Plant 1", "room": "CR-B"})
    plant.authorise("sterilizer-01")
    plant.call("POST", f"/users/{plant.uid('operator')}/machine-authorisations", "production_manager", 201,
               json={"machine_id": "lpbf-01", "training_reference": "TR-LPBF-SIM"})
    token = plant.call("POST", "/agents", "admin", 201,
                       json={"name": "edge-walk", "machine_ids": ["lpbf-01", "sterilizer-01"]})["token"]
    printer_cfg = yaml.safe_load((ROOT / "configs" / "machines" / "lpbf-01.yaml").read_text())
    printer_cfg["connection"]["endpoint"] = sim.endpoint
    drop = tmp_path / "drop"
    drop.mkdir()
    printer_cfg["build_files"] = {"folder": str(drop)}
    agent = _linked_agent(tmp_path, [printer_cfg, cfg], token, influxdb.url, influx_database, server_url)
    sterilizer = None
    try:
        # 1. The printer's identity reaches the server; the machine is qualified for the family on it.
        wait_until(lambda: plant.call("GET", "/machines/lpbf-01", "quality_engineer")["software_revision"] == "4.2.0",
                   30, "the printer's software revision on the server")
        scope = plant.scope("lpbf-01", family=FAMILY)
        mesh = trimesh.creation.icosphere(subdivisions=2, radius=8.0)
        mesh.apply_translation([40, 40, 8])
        stl = trimesh.exchange.stl.export_stl(mesh)
        design = plant.design(plant.case()["id"], family=FAMILY)
        it = plant.iteration(design["id"], content=stl)
        job = plant.job("lpbf-01", plant.lot()["id"], [it["id"]])
        code = job["devices"][0]["device_code"]
        ctx = {"machine": {"id": "lpbf-01"}, "job": job, "sha": it["files"][0]["sha256"]}
        wait_until(lambda: (agent.status()["assignments"]["lpbf-01"] or {}).get("devices") == [code], 30,
                   "the job on the agent")

        # 2. The approved file is loaded: identical, but the job is not released, so the start stays blocked.
        (drop / "cage.stl").write_bytes(stl)
        check = wait_until(lambda: agent.status()["build_file_checks"], 30, "the build-file check")[-1]
        assert (check["verdict"], check["start_enabled"]) == ("identical", False)
        assert check["server_reasons"] == [f"job {job['id']} is not released by the release gate (state planned)"]

        # 3. The printer is power-cycled and comes back with its default StartEnabled = true: blocked again.
        loop.run(sim.stop())
        loop.run(sim.set("Interlock.StartEnabled", True))
        loop.run(sim.start())
        wait_until(lambda: agent.status()["connections"]["lpbf-01"]["reconnects"] >= 1, 30, "the reconnection")
        wait_until(lambda: start_enabled(loop, sim) is False, 30, "StartEnabled false again after the restart")
        alarms = wait_until(lambda: influxdb.query(
            "SELECT message FROM amtrace_events WHERE machine='lpbf-01' AND kind='interlock' AND severity='alarm'",
            db=influx_database)["results"][0].get("series"), 30, "the came-back-enabled alarm in InfluxDB")
        assert any("came back with start enabled=true" in row[1] for row in alarms[0]["values"])

        # 4. The release gate releases the job: the agent enables the start.
        released = plant.gate(ctx, who="operator")
        assert (released["allowed"], released["reasons"]) == (True, []), released["reasons"]
        wait_until(lambda: start_enabled(loop, sim) is True, 30, "StartEnabled true after the gate")

        # 5. The printer's software is updated before the build starts: requalification required, start
        #    blocked, the gate refuses with the reason; the quality engineer requalifies, the gate allows.
        loop.run(sim.set_software_revision("4.3.0"))
        wait_until(lambda: plant.call("GET", f"/qualification/scopes/{scope['id']}", "quality_engineer")["state"]
                   == "requalification_required", 30, "requalification required on the server")
        wait_until(lambda: start_enabled(loop, sim) is False, 30, "StartEnabled false after the software change")
        refused = plant.gate(ctx, who="operator")
        assert refused["allowed"] is False
        assert refused["reasons"] == [{"code": "machine_not_qualified", "message":
                                       f"Machine requires requalification: software changed from 4.2.0 to 4.3.0 "
                                       f"on {today.day} {today:%b}"}]
        plant.qualify(scope["id"], kind_expected="requalification")
        assert plant.gate(ctx, who="operator")["allowed"] is True
        wait_until(lambda: start_enabled(loop, sim) is True, 30, "StartEnabled true once requalified")

        # 6. The build runs; its readings are stored under the device code.
        assert loop.run(sim.start_job(str(job["id"]), 12))[0] is True
        loop.run(sim.wait_job_done(60), timeout=70)
        wait_until(lambda: influxdb.query(f"SELECT count(*) FROM /lpbf.*/ WHERE device='{code}'",
                                          db=influx_database)["results"][0].get("series"), 30,
                   "the build's readings under the device code")
        for stage in ("build", "post_processing", "cleaning"):
            run_stage(plant, code, stage)

        recipe = plant.call("POST", "/cycles/recipes", "quality_engineer", 201,
                            json={"name": "Steam 134 °C 3.5 min", "parameters": STEAM_134})
        plant.call("POST", f"/cycles/recipes/{recipe['id']}/approve", "quality_engineer", json={"password": PASSWORD})
        machine = load_machine(tmp_path / "machines" / "sterilizer-01.yaml")
        sterilizer = Sterilizer(mosquitto.port, machine)
        step = step_of(plant, code, "sterilization")
        plant.call("POST", f"/stages/steps/{step['id']}/start", "operator")

        def complete_sterilization():
            return plant.client.post(f"/api/v1/stages/steps/{step['id']}/complete", headers=plant.h("operator"),
                                     json={"result": "sterilized", "password": PASSWORD})

        def stored(start_ms: int, end_ms: int) -> int:
            res = influxdb.query(f"SELECT count(chamber_temp_c) FROM sterilization WHERE machine='sterilizer-01' AND "
                                 f"time >= {start_ms}ms AND time <= {end_ms}ms", db=influx_database)
            series = res["results"][0].get("series")
            return series[0]["values"][0][1] if series else 0

        def record_late(start_ms: int, seconds: int) -> dict:
            """The operator types the cycle in afterwards, with the times the sterilizer's printout shows."""
            c = plant.call("POST", "/cycles", "operator", 201, json={
                "machine_id": "sterilizer-01", "recipe_id": recipe["id"], "device_codes": [code],
                "started_at": _utc(start_ms)})
            body = {"password": PASSWORD, "ended_at": _utc(start_ms + (seconds - 1) * 1000)}

            def complete():
                r = plant.client.post(f"/api/v1/cycles/{c['id']}/complete", headers=plant.h("operator"), json=body)
                # The agent may still hold readings (after its restart): the server says so, the operator retries.
                return None if r.status_code == 409 and r.json()["code"] == "cycle_data_pending" else r
            r = wait_until(complete, 60, "the agent to have stored the cycle's readings")
            assert r.status_code == 200, r.text
            return r.json()

        seconds = int(sterilizer.plateau_s) + 40
        # 1. Nothing recorded yet: the device cannot leave sterilization.
        r = complete_sterilization()
        assert r.status_code == 409 and r.json()["code"] == "cycle_evidence_missing"
        assert r.json()["detail"].endswith("sterilization: no steam cycle recorded for this device")

        # 2. First cycle: a 10 s dropout of every reading in the middle of the hold; recorded late.
        first = (int(time.time()) - 3600) * 1000
        sterilizer.run(first, range(seconds), skip=(120, 130))
        wait_until(lambda: stored(first, first + seconds * 1000) == seconds - 10, 60, "the first cycle in InfluxDB")
        assert influxdb.query(f"SELECT count(chamber_temp_c) FROM sterilization WHERE device='{code}'",
                              db=influx_database)["results"][0].get("series") is None  # no reading carries the tag
        failed = record_late(first, seconds)
        crit = {c["name"]: c for c in failed["criteria"]}
        assert failed["verdict"] == "fail" and crit["data_coverage"]["passed"] is False
        assert crit["data_coverage"]["reason"].startswith("incomplete data: 11 s of the cycle without readings")
        r = complete_sterilization()  # the open nonconformity of the failed cycle blocks first
        assert r.status_code == 409 and "open nonconformity" in r.json()["detail"]
        plant.call("POST", f"/nonconformities/{failed['nonconformity_ids'][0]}/disposition", "quality_engineer",
                   json={"disposition": "rework", "rationale": "sterilize again", "password": PASSWORD})
        r = complete_sterilization()
        assert r.status_code == 409 and r.json()["code"] == "cycle_evidence_missing"
        assert f"steam cycle {failed['id']} on sterilizer-01 failed (data_coverage" in r.json()["detail"]

        # 3. Second cycle: the agent is killed (-9) halfway; the broker keeps its persistent session and the
        #    outbox what it had taken: after the restart every reading of the cycle is in InfluxDB.
        second = first + 1200 * 1000
        sterilizer.run(second, range(seconds // 2))
        wait_until(lambda: stored(second, second + seconds * 1000) > 0, 60, "the second cycle's first readings")
        agent.kill9()
        sterilizer.run(second, range(seconds // 2, seconds))  # while the agent is down: the broker queues
        agent.start()
        wait_until(lambda: stored(second, second + seconds * 1000) >= seconds, 60, "the whole second cycle")
        assert stored(second, second + seconds * 1000) == seconds
        passed = record_late(second, seconds)
        assert passed["verdict"] == "pass", passed["criteria"]

        # 4. Now the evidence is complete: sterilization, inspection and release go through; sealed.
        plant.call("POST", f"/stages/steps/{step['id']}/complete", "operator",
                   json={"result": "sterilized", "password": PASSWORD})
        plant.call("POST", f"/stages/steps/{step['id']}/accept", "quality_engineer",
                   json={"judgement": "conforming", "password": PASSWORD})
        run_stage(plant, code, "inspection")
        run_stage(plant, code, "release")
        assert step_of(plant, code, "release")["state"] == "accepted"
    finally:
        if sterilizer is not None:
            sterilizer.close()
        agent.stop()
