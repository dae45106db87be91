"""Two edge agents (processes with their own state dirs, as on two cell PCs) against one broker, one InfluxDB and
one server, each running the machines its `machines:` list names from one shared folder of machine files.

The server knows which agent owns which machine; an agent configured with a machine the server gives to another
agent raises a lasting alarm (its /healthz says degraded and names it) instead of silently reporting into refusals;
retiring an agent hands its machines over to the one registered for them next."""

from __future__ import annotations

import os
import sys
import urllib.request
import json
import uuid
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "edge"))
from agentkit import N_SIGNALS, AgentProcess, Publisher, influx_count, machine_yaml, snapshot, wait_until  # noqa: E402
from linkkit import free_port, server_url  # noqa: E402,F401

MESSAGES = 50


@pytest.fixture(scope="module")
def database_url(tmp_path_factory) -> str:
    """SQLite only: the SQL backends are covered elsewhere; this is about agents and ownership."""
    return f"sqlite:///{tmp_path_factory.mktemp('db')}/server.db"


def _agent(folder: Path, machines_dir: Path, machines: list[str], token: str, *, influx_url: str, database: str,
           server_url: str) -> AgentProcess:
    """An agent file naming its machines, with its own state dir and local API port; the token in the environment."""
    folder.mkdir(exist_ok=True)
    env = f"TEST_TOKEN_{uuid.uuid4().hex[:8].upper()}"
    os.environ[env] = token
    cfg = {"id": folder.name, "machines_dir": str(machines_dir), "machines": machines,
           "state_dir": str(folder / "state"),
           "influx": {"api": "v1", "url": influx_url, "database": database, "max_backoff_s": 1.0},
           "http": {"host": "127.0.0.1", "port": free_port()},
           "server": {"url": server_url, "token_env": env, "interval_s": 0.3}}
    (folder / "agent.yaml").write_text(yaml.safe_dump(cfg))
    return AgentProcess(folder / "agent.yaml")


def _healthz(agent: AgentProcess) -> dict:
    with urllib.request.urlopen(agent.base + "/healthz", timeout=5) as r:
        return json.loads(r.read())


def test_two_agents_own_their_machines_a_wrong_claim_alarms_and_retiring_hands_over(
        plant, server_url, mosquitto, influxdb, tmp_path):  # noqa: F811 - pytest fixtures
    db = f"two_agents_{uuid.uuid4().hex[:6]}"
    influxdb.create_database(db)
    machines_dir = tmp_path / "machines"
    machines_dir.mkdir()
    ids = {cell: [f"{cell}-{uuid.uuid4().hex[:6]}" for _ in range(2)] for cell in ("a", "b")}
    for mid in ids["a"] + ids["b"]:
        (machines_dir / f"{mid}.yaml").write_text(yaml.safe_dump(machine_yaml(mid, mosquitto.port)))
        plant.call("POST", "/machines", "production_manager", 201, json={
            "id": mid, "manufacturer": "Test", "model": "T1", "serial_number": f"SN-{mid}", "site": "Plant 1",
            "room": "Cell"})
    tokens = {cell: plant.call("POST", "/agents", "admin", 201, json={"name": f"cell-{cell}-{ids[cell][0][-6:]}",
                                                                      "machine_ids": ids[cell]})
              for cell in ("a", "b")}
    kw = {"influx_url": influxdb.url, "database": db, "server_url": server_url}
    a = _agent(tmp_path / "cell-a", machines_dir, ids["a"], tokens["a"]["token"], **kw).start()
    b = _agent(tmp_path / "cell-b", machines_dir, ids["b"], tokens["b"]["token"], **kw).start()
    publisher = Publisher(mosquitto.port, client_id=f"two-agents-{db}")
    try:
        # 1. Each agent runs only its machines; every message lands once, whichever agent carried it.
        assert sorted(a.status()["connections"]) == sorted(ids["a"])
        assert sorted(b.status()["connections"]) == sorted(ids["b"])
        for mid in ids["a"] + ids["b"]:
            publisher.publish(f"amtrace/test/{mid}/telemetry",
                              [snapshot(i, 1_767_225_600_000 + i) for i in range(MESSAGES)])
        for mid in ids["a"] + ids["b"]:
            wait_until(lambda: influx_count(influxdb, db, f"\"machine\" = '{mid}'") == MESSAGES * N_SIGNALS, 30,
                       f"{MESSAGES * N_SIGNALS} values of {mid}")
        # The server knows who owns what, and both agents are alive on it.
        agents = {x["name"]: x for x in plant.call("GET", "/agents", "admin")}
        for cell in ("a", "b"):
            assert sorted(agents[tokens[cell]["name"]]["machine_ids"]) == sorted(ids[cell])
        wait_until(lambda: set(ids["a"] + ids["b"]) <= set(plant.call("GET", "/live/machines", "production_manager")),
                   15, "all four machines on the dashboard")
        live = plant.call("GET", "/live/machines", "production_manager")
        assert {m: live[m]["agent"] for m in ids["a"] + ids["b"]} == {
            **{m: tokens["a"]["name"] for m in ids["a"]}, **{m: tokens["b"]["name"] for m in ids["b"]}}

        # 2. B's file also names one of A's machines: the server refuses B's reports for it, B says so loudly.
        b.stop()
        b = _agent(tmp_path / "cell-b", machines_dir, ids["b"] + ids["a"][:1], tokens["b"]["token"], **kw).start()
        wait_until(lambda: b.status()["server"]["not_owned"] == ids["a"][:1], 15, "B names the machine it does not own")
        health = _healthz(b)
        assert health["status"] == "degraded" and f"not_owned:{ids['a'][0]}" in health["open_conditions"]
        assert _healthz(a)["status"] == "ok"
        assert plant.call("GET", "/live/machines", "production_manager")[ids["a"][0]]["agent"] == tokens["a"]["name"]

        # 3. Cell A's PC is retired: A is revoked; B's replacement token covers all four machines; its alarm clears.
        a.stop()
        for cell in ("a", "b"):
            plant.call("POST", f"/agents/{tokens[cell]['id']}/revoke", "admin", json={"reason": "cell A merged into B"})
        merged = plant.call("POST", "/agents", "admin", 201, json={"name": f"cell-ab-{db[-6:]}",
                                                                   "machine_ids": ids["a"] + ids["b"]})
        b.stop()
        b = _agent(tmp_path / "cell-b", machines_dir, ids["b"] + ids["a"][:1], merged["token"], **kw).start()
        wait_until(lambda: b.status()["server"]["not_owned"] == [] and _healthz(b)["status"] == "ok", 15,
                   "B owns the handed-over machine and is healthy again")
        wait_until(lambda: plant.call("GET", "/live/machines", "production_manager")[ids["a"][0]]["agent"]
                   == merged["name"], 15, "the handed-over machine reported by its new agent")
        publisher.publish(f"amtrace/test/{ids['a'][0]}/telemetry",
                          [snapshot(i, 1_767_225_700_000 + i) for i in range(MESSAGES)])
        wait_until(lambda: influx_count(influxdb, db, f"\"machine\" = '{ids['a'][0]}'") == 2 * MESSAGES * N_SIGNALS,
                   30, "the new agent's data for the handed-over machine")
    finally:
        publisher.close()
        a.stop()
        b.stop()
