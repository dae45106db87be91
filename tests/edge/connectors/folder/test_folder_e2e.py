"""Cycle logs dropped in a folder → agent process → real InfluxDB under the device codes of the job that ran
when the samples were taken; exactly once across a kill -9 between the store and the move to done/."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from agentkit import AgentProcess, wait_until, write_agent  # noqa: E402

from edge.config import MachineConfig  # noqa: E402
from edge.connectors.folder.simulator import cycle_rows, write_log  # noqa: E402

ROOT = Path(__file__).resolve().parents[4]


def test_cycle_logs_reach_influxdb_under_device_codes_exactly_once_across_a_kill_9(tmp_path, influxdb):
    share = tmp_path / "share"
    share.mkdir()
    data = yaml.safe_load((ROOT / "configs" / "machines" / "washer-02.yaml").read_text())
    data["connection"].update(path=str(share), stable_s=0.5, poll_interval_s=0.2)
    machine = MachineConfig.model_validate(data)
    influxdb.create_database("e2e_folder")
    agent = AgentProcess(write_agent(tmp_path, machines=[data], influx_url=influxdb.url, database="e2e_folder"))
    rows = len(cycle_rows(0))

    def count(device: str) -> int:
        res = influxdb.query(f"SELECT count(chamber_temp_c) FROM washer_disinfection WHERE device='{device}'",
                             db="e2e_folder")
        series = res.get("results", [{}])[0].get("series")
        return series[0]["values"][0][1] if series else 0

    def stored_events() -> int:
        res = influxdb.query("SELECT count(message) FROM amtrace_events WHERE kind='cycle_log_stored' "
                             "AND device='DEV-W1'", db="e2e_folder")
        series = res.get("results", [{}])[0].get("series")
        return series[0]["values"][0][1] if series else 0

    agent.start()
    try:
        # The load went in an hour ago; the machine writes its log only when the program has ended.
        now = time.time_ns()
        agent.api("PUT", "/machines/washer-02/assignment",
                  {"job": "WASH-9", "devices": ["DEV-W1", "DEV-W2"], "start_ns": now - 3600 * 10**9})
        first = write_log(machine, share, now - 5 * 60 * 10**9)
        wait_until(lambda: (share / "done" / first.name).exists(), 60, "the first log in done/")
        wait_until(lambda: count("DEV-W1") == rows and count("DEV-W2") == rows, 60, "every sample under both codes")
        res = influxdb.query("SELECT phase, a0_s, job FROM washer_disinfection WHERE device='DEV-W2' "
                             "ORDER BY time DESC LIMIT 1", db="e2e_folder")
        row = dict(zip(res["results"][0]["series"][0]["columns"], res["results"][0]["series"][0]["values"][0]))
        assert row["phase"] == "Trocknen" and row["job"] == "WASH-9" and row["a0_s"] >= 3000
        # A sample's time is the machine's (minutes before the file appeared), not the agent's.
        assert abs(row["time"] - (now - 5 * 60 * 10**9)) < 15 * 10**9

        # The move to done/ fails (done/ is a file), the samples are stored; kill -9; done/ repaired; restart.
        (share / "done").rename(tmp_path / "done-away")
        (share / "done").write_text("in the way")
        second = write_log(machine, share, now - 1700 * 10**9)  # the program before (no common timestamps)
        wait_until(lambda: count("DEV-W1") == 2 * rows, 60, "the second log's samples")
        assert second.exists()
        agent.kill9()
        (share / "done").unlink()
        (tmp_path / "done-away").rename(share / "done")
        agent.start()
        wait_until(lambda: (share / "done" / second.name).exists(), 60, "the second log moved after the restart")
        time.sleep(2.0)  # time for a wrong second store to show
        assert count("DEV-W1") == 2 * rows and count("DEV-W2") == 2 * rows
        assert stored_events() == 2
        status = agent.status()["connections"]["washer-02"]
        assert status["type"] == "folder" and status["connected"]
    finally:
        agent.stop()
