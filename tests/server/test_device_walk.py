"""One device from build to release the way the shop does it, across the seams (machine → agent → InfluxDB →
server), with time in it: the sterilizer's readings reach InfluxDB through a real edge agent and Mosquitto
before anyone records the cycle (recorded late, so no reading carries a device tag), the first cycle has a
10 s sensor dropout inside the hold, the agent is killed (-9) in the middle of the second cycle and restarted.
The stage gates' answer is asserted at every step with its reasons (issue 12).

The printer side of the same story (software change → requalification, a restarted machine blocked again)
is in test_edge_agent_link.py and tests/edge/connectors/opcua/test_opcua_identity_interlock.py."""

from __future__ import annotations

import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "edge"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "cycles"))
from agentkit import AgentProcess, wait_until, write_agent  # noqa: E402
from influx_settings import influx_database  # noqa: E402,F401

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

pytestmark = pytest.mark.timeout(300)


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


def test_a_device_walks_from_build_to_release_across_the_seams(plant, mosquitto, influxdb, influx_database,  # noqa: F811
                                                               tmp_path):
    ctx = plant.ready(devices=1, family=FAMILY)
    assert plant.gate(ctx)["allowed"] is True
    code = ctx["job"]["devices"][0]["device_code"]
    for stage in ("build", "post_processing", "cleaning"):
        run_stage(plant, code, stage)

    cfg = yaml.safe_load((ROOT / "configs" / "machines" / "sterilizer-01.yaml").read_text())
    cfg["connection"]["port"] = mosquitto.port
    plant.call("POST", "/machines", "production_manager", 201, json={
        "id": "sterilizer-01", "manufacturer": cfg["manufacturer"], "model": cfg["model"],
        "serial_number": cfg["serial"], "site": "Plant 1", "room": "CR-B"})
    recipe = plant.call("POST", "/cycles/recipes", "quality_engineer", 201,
                        json={"name": "Steam 134 °C 3.5 min", "parameters": STEAM_134})
    plant.call("POST", f"/cycles/recipes/{recipe['id']}/approve", "quality_engineer", json={"password": PASSWORD})
    agent = AgentProcess(write_agent(tmp_path, machines=[cfg], influx_url=influxdb.url,
                                     database=influx_database)).start()
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
        return plant.call("POST", f"/cycles/{c['id']}/complete", "operator", json={
            "password": PASSWORD, "ended_at": _utc(start_ms + (seconds - 1) * 1000)})

    seconds = int(sterilizer.plateau_s) + 40
    try:
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
        sterilizer.close()
        agent.stop()
