"""The server decides, the edge enforces — end to end with real parts: the server (uvicorn, SQLite),
an edge agent process, a simulated LPBF printer (asyncua server) and InfluxDB.

The story: the agent reports the printer's identity; the machine is qualified on it; a job with two
devices is created; the agent takes the job and its approved file from the server; the approved
build file arrives but the start stays blocked until the operator's release-gate decision releases
the job; then the printer's software revision changes, the agent reports it, the server requires
requalification, the agent blocks the start again and the gate refuses with the reason."""

from __future__ import annotations

import os
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import trimesh
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "edge"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "ui"))
from agentkit import AgentProcess, wait_until  # noqa: E402
from linkkit import free_port, printer, server_url, start_enabled  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct-horse-battery"
TODAY = date.today()


@pytest.fixture(scope="module")
def database_url(tmp_path_factory) -> str:
    """SQLite only: this story is about the edge/server link, the SQL backends are covered elsewhere."""
    return f"sqlite:///{tmp_path_factory.mktemp('db')}/server.db"


@pytest.fixture(scope="module")
def settings(database_url, tmp_path_factory, influxdb):
    """The parent's settings, with the session's InfluxDB: the DHR reads process data from it."""
    from server.settings import Settings
    from routekit import ROUTES_WITHOUT_CYCLES

    return Settings(database_url=database_url, argon2_time_cost=1, argon2_memory_kib=8, argon2_parallelism=1,
                    file_store=str(tmp_path_factory.mktemp("files")), routes=ROUTES_WITHOUT_CYCLES,
                    influx_url=influxdb.url, influx_database="agent_link_dhr")


def _kiosk_shows_not_cleared(server_url: str, badge: str, pin: str, code: str, reason: str) -> None:
    """Log in at the kiosk by badge and PIN, scan the device code, expect 'not cleared' with the reason."""
    from playwright.sync_api import expect, sync_playwright

    from uikit import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(15_000)
            page.goto(server_url + "/ui/kiosk")
            page.keyboard.type(badge)
            page.keyboard.press("Tab")
            page.keyboard.type(pin)
            page.keyboard.press("Enter")
            expect(page.locator("#who")).to_have_text("Otto Operator (operator)")
            page.keyboard.type(code)  # the scanner types into the focused code field and presses Enter
            page.keyboard.press("Enter")
            expect(page.locator("#verdict-title")).to_have_text("✖ Not cleared to build")
            assert reason in page.locator("#verdict-reasons li").all_inner_texts()
        finally:
            browser.close()


def test_server_decides_edge_enforces(plant, server_url, printer, influxdb, tmp_path):
    loop, sim = printer
    influxdb.create_database("edge_link")
    # The machine as the plant registers it, identity as on its nameplate; an agent token for it.
    m = plant.call("POST", "/machines", "production_manager", 201, json={
        "id": "lpbf-01", "manufacturer": "amtrace simulated machines", "model": "LPBF-SIM 280",
        "serial_number": "SIM-LPBF-0001", "site": "Plant 1", "room": "AM-2",
        "calibration_due": str(TODAY + timedelta(days=90)), "maintenance_due": str(TODAY + timedelta(days=60))})
    agent_token = plant.call("POST", "/agents", "admin", 201,
                             json={"name": "edge-cell-2", "machine_ids": ["lpbf-01"]})["token"]
    plant.call("POST", f"/users/{plant.uid('operator')}/machine-authorisations", "production_manager", 201,
               json={"machine_id": "lpbf-01", "training_reference": "TR-LPBF-SIM"})

    # The agent, configured as in production but on loopback ports.
    machine = yaml.safe_load((ROOT / "configs" / "machines" / "lpbf-01.yaml").read_text())
    machine["connection"]["endpoint"] = sim.endpoint
    drop = tmp_path / "drop"
    machine["build_files"] = {"folder": str(drop)}
    (tmp_path / "machines").mkdir()
    (tmp_path / "machines" / "lpbf-01.yaml").write_text(yaml.safe_dump(machine))
    cfg = {"id": "edge-cell-2", "machines_dir": str(tmp_path / "machines"), "state_dir": str(tmp_path / "state"),
           "influx": {"api": "v1", "url": influxdb.url, "database": "edge_link", "max_backoff_s": 1.0},
           "http": {"host": "127.0.0.1", "port": free_port()},
           "server": {"url": server_url, "token_env": "TEST_AGENT_TOKEN", "interval_s": 0.3}}
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(cfg))
    os.environ["TEST_AGENT_TOKEN"] = agent_token
    agent = AgentProcess(tmp_path / "agent.yaml").start()
    try:
        # 1. the identity the agent read from the printer reaches the server
        wait_until(lambda: plant.call("GET", "/machines/lpbf-01", "quality_engineer")["software_revision"] == "4.2.0",
                   30, "the printer's software revision on the server")
        scope = plant.scope("lpbf-01")
        assert scope["qualified_software_revision"] == "4.2.0"

        # 2. an approved design (a real STL), a job with two devices
        mesh = trimesh.creation.icosphere(subdivisions=2, radius=10.0)
        mesh.apply_translation([50, 50, 10])
        stl = trimesh.exchange.stl.export_stl(mesh)
        lot = plant.lot()
        design = plant.design(plant.case()["id"])
        it = plant.iteration(design["id"], content=stl)
        job = plant.job("lpbf-01", lot["id"], [it["id"]] * 2)
        codes = [d["device_code"] for d in job["devices"]]

        # 3. the agent takes the job and its devices from the server
        wait_until(lambda: (agent.status()["assignments"]["lpbf-01"] or {}).get("devices") == codes, 30,
                   "the job's device codes on the agent")

        # 4. the approved file arrives: it matches, but the job is not released: start stays blocked
        drop.mkdir(exist_ok=True)
        (drop / "cup.stl").write_bytes(stl)
        check = wait_until(lambda: agent.status()["build_file_checks"], 30, "the build-file check")[-1]
        assert (check["verdict"], check["allowed"], check["start_enabled"]) == ("identical", True, False)
        assert check["server_reasons"] == [f"job {job['id']} is not released by the release gate (state planned)"]
        assert start_enabled(loop, sim) is False

        # 5. the operator asks the release gate: allowed, the job is released, the agent enables the start
        ctx = {"machine": m, "job": job, "sha": it["files"][0]["sha256"]}
        assert plant.gate(ctx, who="operator")["allowed"] is True
        wait_until(lambda: start_enabled(loop, sim) is True, 30, "StartEnabled true on the printer")
        assert [n for n in plant.call("GET", "/nonconformities", "quality_engineer")
                if n.get("kind") == "build_file_mismatch"] == []

        # the printer reports that it loaded another file (OPC UA variable): it is checked and blocks
        tampered = tmp_path / "cup-edited.stl"
        edited = mesh.copy()
        edited.apply_scale(1.001)
        edited.export(tampered)
        loop.run(sim.set("Job.BuildFile", str(tampered)))
        wait_until(lambda: start_enabled(loop, sim) is False, 30, "StartEnabled false for the edited file")
        check = agent.status()["build_file_checks"][-1]
        assert (check["file"], check["verdict"], check["start_enabled"]) == (str(tampered), "different", False)
        nc = wait_until(lambda: [n for n in plant.call("GET", "/nonconformities", "quality_engineer")
                                 if n.get("kind") == "build_file_mismatch"], 30, "the mismatch nonconformity")[0]
        # the approved file again: the file check passes, but the open nonconformity keeps the start blocked
        loop.run(sim.set("Job.BuildFile", str(drop / "cup.stl")))
        check = wait_until(lambda: (c := agent.status()["build_file_checks"][-1])["verdict"] == "identical" and c,
                           30, "the approved file checked again")
        assert check["start_enabled"] is False
        assert check["server_reasons"] == [f"open nonconformity {nc['id']} (build file mismatch) must be "
                                           f"dispositioned first"]
        plant.call("POST", f"/nonconformities/{nc['id']}/disposition", "quality_engineer", json={
            "disposition": "use_as_is", "rationale": "edited file never built; approved file reloaded",
            "password": PASSWORD})
        wait_until(lambda: start_enabled(loop, sim) is True, 30, "StartEnabled true once dispositioned")

        # the live state the dashboard shows comes with the agent's heartbeat
        loop.run(sim.start_job(str(job["id"]), 40))
        live = wait_until(lambda: (s := agent.status()["live"]["lpbf-01"])["layer"] and s, 30, "a layer on the agent")
        assert live["layers_total"] == 40 and live["machine_state"] == "Running"

        # 6. the printer's software changes: requalification required, start blocked, gate refuses
        loop.run(sim.set_software_revision("4.3.0"))
        wait_until(lambda: plant.call("GET", f"/qualification/scopes/{scope['id']}", "quality_engineer")["state"]
                   == "requalification_required", 30, "requalification required on the server")
        wait_until(lambda: start_enabled(loop, sim) is False, 30, "StartEnabled false on the printer")
        refused = plant.gate(ctx, who="operator")
        assert refused["allowed"] is False
        assert refused["reasons"] == [{"code": "machine_not_qualified", "message":
                                       f"Machine requires requalification: software changed from 4.2.0 to 4.3.0 "
                                       f"on {TODAY.day} {TODAY:%b}"}]
        triggers = plant.call("GET", f"/qualification/scopes/{scope['id']}/triggers", "quality_engineer")
        assert [(t["kind"], t["source"], t["new_value"]) for t in triggers] == [
            ("software_changed", "agent:edge-cell-2", "4.3.0")]

        # ... and the operator at the kiosk (real Chromium, keys only) sees it in plain words
        plant.call("PUT", f"/users/{plant.uid('operator')}/badge", "admin",
                   json={"badge_number": "40077", "pin": "8642"})
        _kiosk_shows_not_cleared(server_url, "40077", "8642", codes[0], refused["reasons"][0]["message"])

        # 7. the process data of the build is in InfluxDB under each device code
        for code in codes:
            res = wait_until(lambda c=code: influxdb.query(
                f"SELECT count(*) FROM /lpbf_.*/ WHERE device='{c}'", db="edge_link")["results"][0].get("series"),
                30, f"points under {code}")
            assert sum(v for s in res for v in s["values"][0][1:] if isinstance(v, int)) > 0
    finally:
        agent.stop()


def _mqtt_agent(tmp_path: Path, machine: dict, token: str, influx_url: str, database: str,
                server_url: str, interval_s: float = 0.3) -> AgentProcess:
    """An agent process for one machine, linked to the server (token in the environment), heartbeat every interval_s."""
    (tmp_path / "machines").mkdir()
    (tmp_path / "machines" / f"{machine['id']}.yaml").write_text(yaml.safe_dump(machine))
    env = f"TEST_AGENT_TOKEN_{machine['id'].replace('-', '_').upper()}"
    cfg = {"id": f"edge-{machine['id']}", "machines_dir": str(tmp_path / "machines"),
           "state_dir": str(tmp_path / "state"),
           "influx": {"api": "v1", "url": influx_url, "database": database, "max_backoff_s": 1.0},
           "http": {"host": "127.0.0.1", "port": free_port()},
           "server": {"url": server_url, "token_env": env, "interval_s": interval_s}}
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(cfg))
    os.environ[env] = token
    return AgentProcess(tmp_path / "agent.yaml").start()


STEAM_134 = {"process": "steam", "sterilization_temp_c": 134.0, "band_minus_k": 0.0, "band_plus_k": 3.0,
             "min_hold_s": 180.0, "pressure_tolerance_kpa": 10.0, "min_f0_min": 40.0, "max_gap_s": 5.0}


def _sterilizer(plant, mosquitto, n: int) -> tuple[dict, str, dict]:
    """sterilizer-0<n> from the shipped sterilizer-01 config (topics renamed), registered on the server with the
    operator authorised on it, an agent token for it, and an approved steam recipe: (config, token, recipe)."""
    mid = f"sterilizer-0{n}"
    machine = yaml.safe_load((ROOT / "configs" / "machines" / "sterilizer-01.yaml").read_text())
    machine["id"] = mid
    for sig in machine["signals"]:  # the status topic names the machine
        if "topic" in sig["source"]:
            sig["source"]["topic"] = sig["source"]["topic"].replace("sterilizer-01", mid)
    machine["connection"]["topic"] = machine["connection"]["topic"].replace("sterilizer-01", mid)
    machine["connection"]["port"] = mosquitto.port
    plant.call("POST", "/machines", "production_manager", 201, json={
        "id": mid, "manufacturer": machine["manufacturer"], "model": machine["model"],
        "serial_number": machine["serial"] if n == 1 else f"{machine['serial']}-{n}", "site": "Plant 1",
        "room": "CR-B"})
    plant.authorise(mid)
    token = plant.call("POST", "/agents", "admin", 201, json={"name": f"edge-{mid}", "machine_ids": [mid]})["token"]
    recipe = plant.call("POST", "/cycles/recipes", "quality_engineer", 201,
                        json={"name": f"Steam 134 on {mid}", "parameters": STEAM_134})
    plant.call("POST", f"/cycles/recipes/{recipe['id']}/approve", "quality_engineer", json={"password": PASSWORD})
    return machine, token, recipe


def test_a_running_cycle_tags_the_sterilizer_data_with_its_load(plant, server_url, mosquitto, influxdb, tmp_path):
    """Post-processing as for builds: the operator starts a sterilization cycle on a load; the agent takes
    the cycle from the server's context and tags the sterilizer's time series with the load's device codes."""
    import random

    import paho.mqtt.client as mqtt

    from edge.config import load_machine
    from edge.simulators.mqtt import messages_for

    influxdb.create_database("cycle_link")
    ctx = plant.ready(devices=2)
    load = [d["device_code"] for d in ctx["job"]["devices"]]
    machine, token, recipe = _sterilizer(plant, mosquitto, 1)
    cycle = plant.call("POST", "/cycles", "operator", 201,
                       json={"machine_id": "sterilizer-01", "recipe_id": recipe["id"], "device_codes": load})

    agent = _mqtt_agent(tmp_path, machine, token, influxdb.url, "cycle_link", server_url)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sterilizer")
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        a = wait_until(lambda: agent.status()["assignments"]["sterilizer-01"], 30, "the cycle on the agent")
        assert (a["job"], a["devices"], a["source"]) == (f"cycle-{cycle['id']}", sorted(load), "server")
        m = load_machine(tmp_path / "machines" / "sterilizer-01.yaml")
        rng = random.Random(7)
        now_ms = time.time_ns() // 1_000_000
        for i in range(5):
            for topic, payload in messages_for(m, 600.0 + i, rng, ts_ms=now_ms + i * 1000, seq=i):
                pub.publish(topic, payload, qos=1).wait_for_publish(10)
        def count(code: str) -> int:
            series = influxdb.query(
                f"SELECT count(chamber_temp_c) FROM sterilization WHERE device='{code}' AND job='cycle-{cycle['id']}'",
                db="cycle_link")["results"][0].get("series")
            return series[0]["values"][0][1] if series else 0

        for code in load:  # all five snapshots under each device of the load (and no more, checked after)
            wait_until(lambda c=code: count(c) == 5, 30, f"5 sterilizer snapshots under {code}")
        time.sleep(0.5)
        assert [count(code) for code in load] == [5, 5]
    finally:
        pub.loop_stop()
        pub.disconnect()
        agent.stop()


def test_a_cycle_recorded_late_gets_its_device_codes_on_readings_already_stored(plant, server_url, mosquitto,
                                                                               influxdb, tmp_path):
    """The sterilizer ran before anyone recorded the cycle: the agent stored its readings with only the machine
    tag. The operator then records the cycle with its real start. The agent learns it from the server's context
    and writes those readings again under the load's device codes, so the device's history
    (read by device code) holds every reading of its cycle. Before, they stayed untagged for good."""
    import random

    import paho.mqtt.client as mqtt

    from edge.config import load_machine
    from edge.simulators.mqtt import messages_for

    influxdb.create_database("late_link")
    ctx = plant.ready(devices=2)
    load = [d["device_code"] for d in ctx["job"]["devices"]]
    machine, token, recipe = _sterilizer(plant, mosquitto, 2)
    agent = _mqtt_agent(tmp_path, machine, token, influxdb.url, "late_link", server_url)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sterilizer-2")
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()

    def count(where: str) -> int:
        series = influxdb.query(f"SELECT count(chamber_temp_c) FROM sterilization WHERE machine='sterilizer-02' "
                                f"AND {where}", db="late_link")["results"][0].get("series")
        return series[0]["values"][0][1] if series else 0

    try:
        m = load_machine(tmp_path / "machines" / "sterilizer-02.yaml")
        rng = random.Random(3)
        start_ms = (time.time_ns() // 1_000_000) - 600_000  # ten minutes ago, by the sterilizer's clock
        for i in range(40):
            for topic, payload in messages_for(m, 600.0 + i, rng, ts_ms=start_ms + i * 1000, seq=i):
                pub.publish(topic, payload, qos=1).wait_for_publish(10)
        window = f"time >= {start_ms}ms AND time <= {start_ms + 39_000}ms"
        wait_until(lambda: count(window) == 40, 30, "the sterilizer's readings, untagged, in InfluxDB")
        assert count(f"device = '{load[0]}'") == 0
        cycle = plant.call("POST", "/cycles", "operator", 201, json={
            "machine_id": "sterilizer-02", "recipe_id": recipe["id"], "device_codes": load,
            "started_at": datetime.fromtimestamp(start_ms / 1000, tz=timezone.utc).isoformat()})
        for code in load:
            wait_until(lambda c=code: count(f"device = '{c}' AND job = 'cycle-{cycle['id']}'") == 40, 30,
                       f"the cycle's 40 readings under {code}")
        assert agent.status()["retag"] == {"done": 1}
    finally:
        pub.loop_stop()
        pub.disconnect()
        agent.stop()


def test_the_agent_learns_a_cycle_by_push_from_its_recorded_start(plant, server_url, mosquitto, influxdb, tmp_path):
    """The agent's heartbeat runs every 120 s, so only the long poll can tell it of a cycle within seconds; it
    books the cycle from the start the server recorded, and books its end at the recorded end, so no reading
    between the start and the moment the agent heard of it goes out untagged."""
    ctx = plant.ready(devices=1)
    load = [d["device_code"] for d in ctx["job"]["devices"]]
    machine, token, recipe = _sterilizer(plant, mosquitto, 3)
    agent = _mqtt_agent(tmp_path, machine, token, influxdb.url, "push_link", server_url, interval_s=120)
    try:
        wait_until(lambda: agent.status()["server"]["connected"], 30, "the agent linked to the server")
        time.sleep(1.0)  # its first look at the context is behind it: the next one is the long poll's answer
        asked = time.monotonic()
        cycle = plant.call("POST", "/cycles", "operator", 201,
                           json={"machine_id": "sterilizer-03", "recipe_id": recipe["id"], "device_codes": load})
        a = wait_until(lambda: agent.status()["assignments"]["sterilizer-03"], 60, "the cycle on the agent")
        took = time.monotonic() - asked
        print(f"the cycle reached the agent {took:.2f} s after it was recorded (heartbeat every 120 s)")
        assert took < 60, "learnt only by the 120 s poll"
        assert (a["job"], a["devices"]) == (f"cycle-{cycle['id']}", load)
        history = agent.api("GET", "/assignments")
        [booked] = [h for h in history if h["job"] == f"cycle-{cycle['id']}"]
        assert booked["start_ns"] == _ns(cycle["started_at"]), "booked from the recorded start, not from when heard"
    finally:
        agent.stop()


def _ns(iso: str) -> int:
    at = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return int(at.replace(tzinfo=at.tzinfo or timezone.utc).timestamp() * 1_000_000) * 1000


def test_a_machine_whose_identity_cannot_be_read_is_an_alert_on_the_dashboard(plant, server_url, influxdb, tmp_path):
    """A printer that offers no manufacturer or serial number: no identity report can go out, so a software change
    on it would trigger no requalification. The production manager's dashboard says so, and keeps saying so."""
    from edge.simulators.opcua import LpbfPrinterSimulator
    from linkkit import LoopThread

    influxdb.create_database("identity_link")
    loop = LoopThread()
    sim = LpbfPrinterSimulator(port=free_port(), machine_id="lpbf-01")
    for name in list(sim.identity):
        del sim.vars[f"Identification.{name}"]
    sim.identity = {}
    loop.run(sim.start())
    plant.call("POST", "/machines", "production_manager", 201, json={
        "id": "lpbf-09", "manufacturer": "amtrace simulated machines", "model": "LPBF-SIM 280",
        "serial_number": "SIM-LPBF-0009", "site": "Plant 1", "room": "AM-2"})
    token = plant.call("POST", "/agents", "admin", 201, json={"name": "edge-cell-9", "machine_ids": ["lpbf-09"]})["token"]
    machine = yaml.safe_load((ROOT / "configs" / "machines" / "lpbf-01.yaml").read_text())
    machine["id"] = "lpbf-09"
    machine["connection"]["endpoint"] = sim.endpoint
    agent = _mqtt_agent(tmp_path, machine, token, influxdb.url, "identity_link", server_url)
    try:
        def identity_alert():
            live = plant.call("GET", "/live/machines", "production_manager").get("lpbf-09")
            return live and [a for a in live["alerts"] if a["key"] == "identity"]
        [shown] = wait_until(identity_alert, 30, "an identity alert for lpbf-09 on the dashboard")
        assert (shown["severity"], shown["state"]) == ("alarm", "active")
        assert shown["message"].startswith("identity unknown: requalification triggers are blind")
        assert plant.call("GET", "/machines/lpbf-09", "quality_engineer")["software_revision"] is None
    finally:
        agent.stop()
        loop.run(sim.close())
        loop.close()


def test_a_limit_excursion_is_an_alert_that_clears_an_nc_and_a_trend_on_the_dashboard(plant, server_url, mosquitto,
                                                                                      influxdb, tmp_path):
    """Machine → agent → server → dashboard: a sterilizer's chamber goes above its alarm limit during a cycle. The
    dashboard shows the sterilizer's own phase, an active alarm and the spike in the chamber's trend; the server
    raises a nonconformity on each device of the load; back within limits, the alert is cleared with the time."""
    import json
    import random

    import paho.mqtt.client as mqtt

    from edge.config import load_machine
    from edge.simulators.mqtt import messages_for

    influxdb.create_database("excursion_link")
    ctx = plant.ready(devices=2)
    load = [d["device_code"] for d in ctx["job"]["devices"]]
    machine, token, recipe = _sterilizer(plant, mosquitto, 4)
    plant.call("POST", "/cycles", "operator", 201,
               json={"machine_id": "sterilizer-04", "recipe_id": recipe["id"], "device_codes": load})
    agent = _mqtt_agent(tmp_path, machine, token, influxdb.url, "excursion_link", server_url)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-excursion")
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    m = load_machine(tmp_path / "machines" / "sterilizer-04.yaml")
    rng = random.Random(3)
    seq = 0

    def send(chamber_temp_c: float | None) -> None:
        nonlocal seq
        for topic, payload in messages_for(m, 700.0, rng, ts_ms=time.time_ns() // 1_000_000, seq=seq):
            body = json.loads(payload)
            if chamber_temp_c is not None and "chamber" in body["values"]:
                body["values"]["chamber"]["temp_c"] = chamber_temp_c
            pub.publish(topic, json.dumps(body), qos=1).wait_for_publish(10)
        seq += 1

    def live():
        return plant.call("GET", "/live/machines", "production_manager").get("sterilizer-04") or {}

    try:
        wait_until(lambda: agent.status()["assignments"]["sterilizer-04"], 30, "the cycle on the agent")
        send(135.2)
        send(139.4)
        alert = wait_until(lambda: [a for a in live().get("alerts", []) if a["key"] == "excursion:chamber_temp_c"],
                           30, "the excursion alert on the dashboard")[0]
        assert (alert["state"], alert["severity"]) == ("active", "alarm")
        assert "139.4" in alert["message"]
        def chamber_trend():
            return [t for t in live().get("trends") or [] if t["signal"] == "chamber_temp_c" and t["points"]]
        [trend] = wait_until(chamber_trend, 40, "the chamber's trend on the dashboard (sent every 15 s)")
        assert max(p[2] for p in trend["points"]) == 139.4 and trend["limits"]["alarm_high"] == 138.0
        state = live()
        assert (state["state"], state["phase"]) == ("active", "plateau"), "a sterilizer is not 'building'"
        ncs = wait_until(lambda: [n for n in plant.call("GET", "/nonconformities", "quality_engineer")
                                  if n["kind"] == "limit_excursion" and n["machine_id"] == "sterilizer-04"],
                         30, "the excursion's nonconformities on the server")
        assert sorted(n["device_id"] for n in ncs) == sorted(d["id"] for d in ctx["job"]["devices"]), \
            "one nonconformity per device of the load"
        assert all(n["source"] == "edge" and n["details"]["value"] == 139.4 for n in ncs)
        send(135.0)
        cleared = wait_until(lambda: [a for a in live().get("alerts", [])
                                      if a["key"] == "excursion:chamber_temp_c" and a["state"] == "cleared"],
                             30, "the alert cleared")[0]
        assert cleared["cleared_ns"] >= cleared["since_ns"]
    finally:
        pub.loop_stop()
        pub.disconnect()
        agent.stop()


def test_a_forced_local_assignment_is_a_nonconformity_and_the_dhr_names_its_interval(plant, server_url, mosquitto,
                                                                                    influxdb, tmp_path):
    """Issue 13: on a machine whose jobs come from the server, a local assignment forced with a reason is reported:
    one nonconformity per device it tagged, and the device's DHR names the interval, its end once it ended."""
    influxdb.create_database("agent_link_dhr")
    ctx = plant.ready(devices=1)
    [device] = ctx["job"]["devices"]
    machine, token, _ = _sterilizer(plant, mosquitto, 5)
    agent = _mqtt_agent(tmp_path, machine, token, influxdb.url, "agent_link_dhr", server_url)
    try:
        wait_until(lambda: agent.status()["server"]["connected"], 30, "the agent linked to the server")
        booked = agent.api("PUT", "/machines/sterilizer-05/assignment", {
            "job": "night-7", "devices": [device["device_code"]], "force": True,
            "reason": "server unreachable from the cell during the night shift"})

        def overrides():
            dhr = plant.call("GET", f"/history/devices/{device['device_code']}/dhr", "quality_engineer")
            return dhr["local_overrides"]
        [o] = wait_until(overrides, 30, "the override in the DHR")
        assert (o["machine_id"], o["job"], o["end"], o["state"]) == ("sterilizer-05", "night-7", None, "open")
        assert o["reason"] == "server unreachable from the cell during the night shift"
        assert abs(_ns(o["start"]) - booked["start_ns"]) < 1_000_000
        nc = plant.call("GET", f"/nonconformities/{o['nonconformity_id']}", "quality_engineer")
        assert (nc["kind"], nc["source"], nc["device_id"]) == ("local_override", "edge", device["id"])

        ended = agent.api("DELETE", "/machines/sterilizer-05/assignment")
        [o] = wait_until(lambda: [x for x in overrides() if x["end"]], 30, "the override's end in the DHR")
        assert abs(_ns(o["end"]) - ended["end_ns"]) < 1_000_000
        assert len(plant.call("GET", "/nonconformities", "quality_engineer", params={"kind": "local_override"})) >= 1
        pdf = plant.client.get(f"/api/v1/history/devices/{device['device_code']}/dhr.pdf",
                               headers=plant.h("quality_engineer"))
        assert pdf.status_code == 200
    finally:
        agent.stop()
