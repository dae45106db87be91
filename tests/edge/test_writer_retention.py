"""The agent reads the retention of the InfluxDB database it writes (real InfluxDB 1.x) and warns, without
stopping, when points would expire before a device is released and archived: in /healthz, /status and /metrics."""

from __future__ import annotations

import json
import urllib.request

from agentkit import AgentProcess, machine_yaml, write_agent
from edge.config import InfluxConfig
from edge.writer.retention import retention_warning


def test_infinite_retention_is_fine_a_one_day_policy_is_named(influxdb):
    influxdb.create_database("ret_forever")
    assert retention_warning(InfluxConfig(url=influxdb.url, database="ret_forever")) is None
    influxdb.create_database("ret_short")
    influxdb.query('CREATE RETENTION POLICY "one_day" ON "ret_short" DURATION 1d REPLICATION 1 DEFAULT')
    warning = retention_warning(InfluxConfig(url=influxdb.url, database="ret_short"))
    assert warning.startswith("InfluxDB database ret_short, retention policy one_day keeps points 1 days, less than "
                              "the 730 days"), warning
    # The policy the agent is told to write to is the one that counts, not the default.
    influxdb.query('CREATE RETENTION POLICY "ten_years" ON "ret_short" DURATION 3650d REPLICATION 1')
    assert retention_warning(InfluxConfig(url=influxdb.url, database="ret_short", retention_policy="ten_years")) is None
    assert retention_warning(InfluxConfig(url=influxdb.url, database="ret_short", min_retention_days=0.5)) is None


def test_a_retention_that_cannot_be_read_is_a_warning_too(influxdb, victoria):
    missing = retention_warning(InfluxConfig(url=influxdb.url, database="ret_short", retention_policy="nope"))
    assert missing.startswith(f"InfluxDB retention not checked ({influxdb.url}): ValueError: retention policy nope "
                              "not found"), missing
    down = retention_warning(InfluxConfig(url="http://127.0.0.1:9", database="x", timeout_s=2))
    assert down.startswith("InfluxDB retention not checked (http://127.0.0.1:9): ConnectError"), down
    # A v2 write endpoint without the buckets API (VictoriaMetrics) cannot say how long it keeps points.
    v2 = retention_warning(InfluxConfig(api="v2", url=victoria.url, bucket="amtrace", timeout_s=2))
    assert v2.startswith(f"InfluxDB retention not checked ({victoria.url})"), v2


def test_the_agent_warns_in_healthz_status_and_metrics_and_keeps_running(tmp_path, mosquitto, influxdb):
    influxdb.create_database("ret_agent")
    influxdb.query('CREATE RETENTION POLICY "week" ON "ret_agent" DURATION 7d REPLICATION 1 DEFAULT')
    agent = AgentProcess(write_agent(tmp_path, machines=[machine_yaml("washer-r1", mosquitto.port)],
                                     influx_url=influxdb.url, database="ret_agent")).start()
    try:
        from agentkit import wait_until
        wait_until(lambda: agent.status()["influx"]["retention_warning"], 15, "the retention checked")
        with urllib.request.urlopen(agent.base + "/healthz", timeout=5) as r:
            health = json.loads(r.read())
        assert health["status"] == "ok"  # a warning, not ill health: intake goes on
        assert health["warnings"] == [agent.status()["influx"]["retention_warning"]]
        assert "retention policy week keeps points 7 days" in health["warnings"][0]
        with urllib.request.urlopen(agent.base + "/metrics", timeout=5) as r:
            assert "amtrace_influx_retention_short 1.0" in r.read().decode()
    finally:
        agent.stop()
