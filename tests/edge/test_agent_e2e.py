"""End to end through real Mosquitto, the agent process and real InfluxDB: exact counts under
device codes, and the faults the issue names (kill -9, InfluxDB down, broker restart, disk budget)."""

from __future__ import annotations

import threading
import time
import urllib.request

import pytest

from agentkit import (N_SIGNALS, AgentProcess, Publisher, influx_count, machine_yaml, snapshot, wait_until,
                      write_agent)

T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: machine timestamps, fixed so tests are exact


def _agent(tmp_path, mqtt_port, influx, db, **kw):
    influx.create_database(db)
    m = machine_yaml("furnace-t1", mqtt_port, limits_on=kw.pop("limits_on", None))
    cfg = write_agent(tmp_path, machines=[m], influx_url=influx.url, database=db, **kw)
    return AgentProcess(cfg), m["connection"]["topic"]


def test_readings_arrive_exactly_once_under_each_device_code(tmp_path, mosquitto, influxdb):
    agent, topic = _agent(tmp_path, mosquitto.port, influxdb, "e2e_basic", limits_on="s0")
    agent.start()
    try:
        agent.api("PUT", "/machines/furnace-t1/assignment",
                  {"job": "JOB-1", "devices": ["DEV-A", "DEV-B", "DEV-C"], "start_ns": (T0_MS - 1000) * 1_000_000})
        pub = Publisher(mosquitto.port)
        n = 200
        pub.publish(topic, [snapshot(i, T0_MS + i * 100, hot=(i == 50)) for i in range(n)])
        pub.close()
        expected = n * N_SIGNALS
        for device in ("DEV-A", "DEV-B", "DEV-C"):
            wait_until(lambda d=device: influx_count(influxdb, "e2e_basic", f"\"device\"='{d}'") == expected,
                       60, f"{expected} values under {device}")
        # Nothing written without a device: the whole stream ran inside the job.
        assert influx_count(influxdb, "e2e_basic", "\"device\"=''") == 0
        res = influxdb.query("SELECT f3, machine, job FROM e2e_process WHERE device='DEV-B' ORDER BY time LIMIT 2",
                             db="e2e_basic")
        rows = res["results"][0]["series"][0]["values"]
        # machine timestamps kept to the millisecond; exact values; tags set
        assert rows[0] == [T0_MS * 1_000_000, 23.0, "furnace-t1", "JOB-1"]
        assert rows[1] == [(T0_MS + 100) * 1_000_000, 23.001, "furnace-t1", "JOB-1"]
        # units are recorded once per field in the signal map
        res = influxdb.query("SELECT unit, signal FROM amtrace_signal_map WHERE machine='furnace-t1' AND \"field\"='f3'",
                             db="e2e_basic")
        assert res["results"][0]["series"][0]["values"][-1][1:] == ["degC", "s3"]
        # the excursion (message 50: s0 = 150 > warn 100) and its end are events under each device
        res = influxdb.query("SELECT kind, severity, value, \"limit\" FROM amtrace_events "
                             "WHERE device='DEV-C' AND signal='s0' ORDER BY time", db="e2e_basic")
        events = res["results"][0]["series"][0]["values"]
        assert [e[1:] for e in events] == [["excursion", "warning", 150.0, 100.0], ["excursion_end", "info", 20.051, None]]
        assert events[0][0] == (T0_MS + 5000) * 1_000_000
        st = agent.status()
        assert st["readings_in"] == expected
        assert st["quarantined"] == 0
    finally:
        agent.stop()


def test_malformed_payloads_are_quarantined_and_the_agent_keeps_going(tmp_path, mosquitto, influxdb):
    agent, topic = _agent(tmp_path, mosquitto.port, influxdb, "e2e_bad")
    agent.start()
    try:
        pub = Publisher(mosquitto.port, "bad-publisher")
        bad_type = b'{"ts": %d, "values": {"s0": "hot"}}' % T0_MS
        pub.publish(topic, [b"not json", bad_type, snapshot(1, T0_MS)])
        pub.close()
        wait_until(lambda: influx_count(influxdb, "e2e_bad", "machine='furnace-t1'") == N_SIGNALS, 30, "good message")
        entries = wait_until(lambda: agent.api("GET", "/quarantine") if len(agent.api("GET", "/quarantine")) == 2 else None,
                             30, "two quarantine entries")
        reasons = sorted(e["reason"] for e in entries)
        assert reasons[0].startswith("not JSON")
        assert "s0" in reasons[1] and "expected a number" in reasons[1]
        assert {e["raw_text"] for e in entries} == {"not json", bad_type.decode()}
        assert agent.status()["quarantined"] == 2
    finally:
        agent.stop()


@pytest.mark.slow
def test_kill_9_mid_stream_loses_nothing(tmp_path, mosquitto, influxdb):
    agent, topic = _agent(tmp_path, mosquitto.port, influxdb, "e2e_kill")
    agent.start()
    n = 3000
    pub = Publisher(mosquitto.port, "kill-publisher")
    sender = threading.Thread(target=pub.publish, args=(topic, [snapshot(i, T0_MS + i * 10) for i in range(n)]))
    sender.start()
    wait_until(lambda: agent.status()["readings_in"] > 300 * N_SIGNALS, 60, "the stream to be under way")
    agent.kill9()
    time.sleep(1.0)  # the broker keeps queueing for the persistent session meanwhile
    agent.start()
    sender.join(120)
    pub.close()
    expected = n * N_SIGNALS
    wait_until(lambda: influx_count(influxdb, "e2e_kill", "machine='furnace-t1'") == expected, 120,
               f"exactly {expected} values after kill -9 and restart")
    time.sleep(1.0)
    assert influx_count(influxdb, "e2e_kill", "machine='furnace-t1'") == expected  # and no more
    agent.stop()


@pytest.mark.slow
def test_influxdb_down_then_back(tmp_path, mosquitto, influxdb_factory):
    influx = influxdb_factory()
    agent, topic = _agent(tmp_path, mosquitto.port, influx, "e2e_down")
    agent.start()
    try:
        pub = Publisher(mosquitto.port, "down-publisher")
        pub.publish(topic, [snapshot(i, T0_MS + i * 10) for i in range(100)])
        wait_until(lambda: influx_count(influx, "e2e_down", "machine='furnace-t1'") == 100 * N_SIGNALS, 60, "first 100")
        influx.stop()
        pub.publish(topic, [snapshot(i, T0_MS + i * 10) for i in range(100, 600)])
        wait_until(lambda: agent.status()["readings_in"] == 600 * N_SIGNALS, 60, "all readings in the outbox")
        st = agent.status()
        assert st["outbox"]["lines"] >= 500  # held on disk while InfluxDB is away
        assert st["influx"]["connected"] is False
        influx.start()
        wait_until(lambda: influx_count(influx, "e2e_down", "machine='furnace-t1'") == 600 * N_SIGNALS, 90,
                   "all 600 messages after InfluxDB returned")
        res = influx.query("SELECT kind, message FROM amtrace_events WHERE kind='connection_lost' OR kind='connection_restored'",
                           db="e2e_down")
        kinds = [v[1] for v in res["results"][0]["series"][0]["values"]]
        assert kinds == ["connection_lost", "connection_restored"]
        pub.close()
    finally:
        agent.stop()


@pytest.mark.slow
def test_broker_restart_mid_stream(tmp_path, mosquitto_factory, influxdb):
    broker = mosquitto_factory()
    agent, topic = _agent(tmp_path, broker.port, influxdb, "e2e_broker")
    agent.start()
    try:
        pub = Publisher(broker.port, "broker-publisher-1")
        pub.publish(topic, [snapshot(i, T0_MS + i * 10) for i in range(300)])
        pub.close()
        broker.restart()
        pub = Publisher(broker.port, "broker-publisher-2")
        pub.publish(topic, [snapshot(i, T0_MS + i * 10) for i in range(300, 600)])
        pub.close()
        wait_until(lambda: influx_count(influxdb, "e2e_broker", "machine='furnace-t1'") == 600 * N_SIGNALS, 90,
                   "all 600 messages across the broker restart")
        assert agent.status()["connections"]["furnace-t1"]["connected"] is True
    finally:
        agent.stop()


@pytest.mark.slow
def test_disk_budget_applies_backpressure_then_recovers(tmp_path, mosquitto, influxdb_factory):
    influx = influxdb_factory()
    agent, topic = _agent(tmp_path, mosquitto.port, influx, "e2e_budget", budget_bytes=1024 * 1024)
    agent.start()
    try:
        influx.stop()
        pub = Publisher(mosquitto.port, "budget-publisher")
        n = 10_000  # ~1.7 MB of line protocol: well over the 1 MiB budget
        pub.publish(topic, [snapshot(i, T0_MS + i * 10) for i in range(n)], wait=False)
        st = wait_until(lambda: (s := agent.status())["outbox"]["full"] and s["backpressure_refusals"] >= 1 and s,
                        120, "the outbox to reach its budget and refuse an ingest")
        assert st["readings_in"] < n * N_SIGNALS  # the rest is held back at the broker, unacknowledged
        metrics = urllib.request.urlopen(agent.base + "/metrics").read().decode()
        assert "amtrace_outbox_full 1.0" in metrics
        influx.start()
        wait_until(lambda: influx_count(influx, "e2e_budget", "machine='furnace-t1'") == n * N_SIGNALS, 180,
                   f"all {n} messages after the budget was released")
        pub.close()
        res = influx.query("SELECT kind, severity, message FROM amtrace_events WHERE kind='outbox_full'", db="e2e_budget")
        assert res["results"][0]["series"][0]["values"][0][1:] == ["outbox_full", "alarm",
                                                                "outbox reached its disk budget: upstream acknowledgements "
                                                                "stopped, data held at the source"]
        assert agent.status()["outbox"]["full"] is False
    finally:
        agent.stop()
