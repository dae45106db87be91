"""Modbus machine → agent process → outbox → real InfluxDB, every value under the device codes of the job
that ran, and a kill -9 of the agent in the middle recorded as a gap rather than silence."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from agentkit import AgentProcess, wait_until, write_agent  # noqa: E402

from edge.config import MachineConfig  # noqa: E402
from edge.connectors.modbus.simulator import ModbusMachineSimulator  # noqa: E402

ROOT = Path(__file__).resolve().parents[4]


class SimulatorThread:
    """The pymodbus server on its own event loop, so a synchronous test can drive it."""

    def __init__(self, machine: MachineConfig, port: int):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sim = ModbusMachineSimulator(machine, port=port)
        self.call(self.sim.start())

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        self.call(self.sim.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_modbus_values_reach_influxdb_under_device_codes_and_a_kill_9_is_a_gap(tmp_path, influxdb):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = yaml.safe_load((ROOT / "configs" / "machines" / "hip-01.yaml").read_text())
    data["connection"].update(port=port, poll_interval_ms=100)
    machine = MachineConfig.model_validate(data)
    influxdb.create_database("e2e_modbus")
    agent = AgentProcess(write_agent(tmp_path, machines=[data], influx_url=influxdb.url, database="e2e_modbus"))
    sim = SimulatorThread(machine, port)
    try:
        sim.call(sim.sim.set_value("vessel_temp_c", 921.5))
        sim.call(sim.sim.set_value("pressure_mpa", 101.2))
        agent.start()
        agent.api("PUT", "/machines/hip-01/assignment", {"job": "HIP-7", "devices": ["DEV-H1", "DEV-H2"]})

        def count(device: str) -> int:
            res = influxdb.query(f"SELECT count(vessel_temp_c) FROM hip WHERE device='{device}'", db="e2e_modbus")
            series = res.get("results", [{}])[0].get("series")
            return series[0]["values"][0][1] if series else 0

        wait_until(lambda: count("DEV-H1") >= 10 and count("DEV-H2") >= 10, 60, "polls under both device codes")
        res = influxdb.query("SELECT vessel_temp_c, pressure_mpa, machine, job FROM hip WHERE device='DEV-H2' "
                             "ORDER BY time DESC LIMIT 1", db="e2e_modbus")
        row = dict(zip(res["results"][0]["series"][0]["columns"], res["results"][0]["series"][0]["values"][0]))
        assert row["vessel_temp_c"] == 921.5 and abs(row["pressure_mpa"] - 101.2) < 1e-9
        assert row["machine"] == "hip-01" and row["job"] == "HIP-7"
        status = agent.status()["connections"]["hip-01"]
        assert status["type"] == "modbus" and status["connected"] and status["stats"]["polls"] >= 10

        # kill -9, two seconds away, back: the record has a gap from the last stored poll to the first new one.
        agent.kill9()
        time.sleep(2.0)
        agent.start()

        def gaps():
            res = influxdb.query("SELECT * FROM amtrace_events WHERE kind='gap' AND machine='hip-01'",
                                 db="e2e_modbus")
            series = res.get("results", [{}])[0].get("series")
            return [dict(zip(series[0]["columns"], v)) for v in series[0]["values"]] if series else []

        wait_until(lambda: gaps(), 60, "a gap event for the time the agent was killed")
        gap = gaps()[-1]
        assert gap["cause"] == "the agent was not running" and gap["recovery"] == "none"
        assert (gap["end_ns"] - gap["start_ns"]) / 1e9 >= 2.0
    finally:
        agent.stop()
        sim.close()
