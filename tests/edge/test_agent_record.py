"""The agent's own record survives kill -9 and a broker that forgets (issue 18), through real Mosquitto, the agent
as a real process and real InfluxDB: an alarm raised before a crash is kept with its true time and not raised
twice, an outage that spans a restart is one outage with its true length, and messages a broker dropped while the
agent was down are a recorded session loss and a gap naming the missing seq range."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from agentkit import (AMTRACE_EDGE, N_SIGNALS, ROOT, AgentProcess, Publisher, influx_count, machine_yaml, snapshot,
                      wait_until, write_agent)

T0_MS = 1_767_225_600_000
NS = 1_000_000_000


def _agent(tmp_path, mqtt_port, influx, db, **kw) -> tuple[AgentProcess, str]:
    influx.create_database(db)
    m = machine_yaml("furnace-t1", mqtt_port)
    return AgentProcess(write_agent(tmp_path, machines=[m], influx_url=influx.url, database=db, **kw)), \
        m["connection"]["topic"]


def _events(influx, db: str, *kinds: str) -> list[dict]:
    """The agent's events of these kinds in InfluxDB, oldest first, with every field."""
    where = " OR ".join(f"kind='{k}'" for k in kinds)
    res = influx.query(f"SELECT * FROM amtrace_events WHERE {where}", db=db)
    series = res["results"][0].get("series", [])
    if not series:
        return []
    cols = series[0]["columns"]
    return [dict(zip(cols, v)) for v in series[0]["values"]]


@pytest.mark.slow
def test_kill_9_while_the_outbox_is_full_keeps_the_first_alarms_with_their_time_and_once(
        tmp_path, mosquitto, influxdb_factory):
    influx = influxdb_factory()
    agent, topic = _agent(tmp_path, mosquitto.port, influx, "rec_full", budget_bytes=1024 * 1024)
    agent.start()
    influx.stop()
    n = 10_000  # ~1.7 MB of line protocol: over the 1 MiB budget
    pub = Publisher(mosquitto.port, "rec-full-publisher")
    pub.publish(topic, [snapshot(i, T0_MS + i * 10) for i in range(n)], wait=False)
    seen_full = wait_until(lambda: agent.status()["outbox"]["full"] and time.time_ns(), 120, "the outbox full")
    time.sleep(1.0)
    agent.kill9()  # the alarms were raised by this process; it never gets to write them to InfluxDB
    time.sleep(2.0)
    agent.start()
    influx.start()
    wait_until(lambda: influx_count(influx, "rec_full", "machine='furnace-t1'") == n * N_SIGNALS, 240,
               f"all {n} messages after the restart")
    wait_until(lambda: _events(influx, "rec_full", "outbox_released"), 30, "the outbox released event")
    full = _events(influx, "rec_full", "outbox_full")
    pressed = _events(influx, "rec_full", "backpressure")
    assert len(full) == 1 and len(pressed) == 1, "raised once, kept across the kill, not raised again"
    for ev in (full[0], pressed[0]):
        assert abs(ev["time"] - seen_full) < 1 * NS, f"{ev['kind']} dated {(ev['time'] - seen_full) / NS:+.2f} s " \
                                                     f"from when the outbox was seen full"
    [released] = _events(influx, "rec_full", "outbox_released")
    assert released["since_ns"] == full[0]["time"], "the release names the episode's true start"
    wait_until(lambda: _events(influx, "rec_full", "backpressure_released"), 30, "back-pressure released")
    assert agent.status()["open_conditions"] == {}
    pub.close()
    agent.stop()


@pytest.mark.slow
def test_kill_9_inside_an_influxdb_outage_keeps_one_outage_with_its_true_length(tmp_path, mosquitto, influxdb_factory):
    influx = influxdb_factory()
    agent, topic = _agent(tmp_path, mosquitto.port, influx, "rec_down")
    agent.start()
    pub = Publisher(mosquitto.port, "rec-down-publisher")
    pub.publish(topic, [snapshot(i, T0_MS + i * 10) for i in range(50)])
    wait_until(lambda: influx_count(influx, "rec_down", "machine='furnace-t1'") == 50 * N_SIGNALS, 60, "first 50")
    influx.stop()
    down_at = time.time_ns()
    pub.publish(topic, [snapshot(i, T0_MS + i * 10) for i in range(50, 100)])
    st = wait_until(lambda: (s := agent.status())["influx"]["connected"] is False and s, 30, "the outage noticed")
    assert any(k.startswith("influx_link:") for k in st["open_conditions"]), st["open_conditions"]
    time.sleep(3.0)
    agent.kill9()
    time.sleep(2.0)
    agent.start()
    health = agent.api("GET", "/healthz")
    assert health["status"] == "degraded" and any(k.startswith("influx_link:") for k in health["open_conditions"]), \
        "the outage from before the restart is still open, and says so"
    shown = subprocess.run([*AMTRACE_EDGE, "status", "-c", str(agent.config)], capture_output=True, text=True,
                           cwd=ROOT, timeout=30).stdout
    assert "OPEN                 influx_link:" in shown, shown
    pub.publish(topic, [snapshot(i, T0_MS + i * 10) for i in range(100, 150)])
    time.sleep(6.0)
    influx.start()
    up_at = time.time_ns()
    wait_until(lambda: influx_count(influx, "rec_down", "machine='furnace-t1'") == 150 * N_SIGNALS, 120, "all 150")
    wait_until(lambda: _events(influx, "rec_down", "connection_restored"), 30, "the restoration")
    lost = [e for e in _events(influx, "rec_down", "connection_lost") if e.get("target")]
    restored = [e for e in _events(influx, "rec_down", "connection_restored") if e.get("target")]
    assert len(lost) == 1 and len(restored) == 1, "one outage: each loss has exactly one partner"
    real_s = (up_at - down_at) / NS
    assert abs(restored[0]["down_s"] - real_s) < 2.0, (restored[0]["down_s"], real_s)
    assert restored[0]["down_since_ns"] == lost[0]["time"]
    assert agent.status()["open_conditions"] == {}
    pub.close()
    agent.stop()


@pytest.mark.slow
def test_a_broker_that_forgot_the_session_while_the_agent_was_down_leaves_a_session_loss_and_a_gap(
        tmp_path, mosquitto_factory, influxdb):
    broker = mosquitto_factory()
    agent, topic = _agent(tmp_path, broker.port, influxdb, "rec_amnesia")
    agent.start()
    pub = Publisher(broker.port, "amnesia-publisher-1")
    pub.publish(topic, [snapshot(i, T0_MS + i * 10) for i in range(100)])
    pub.close()
    wait_until(lambda: influx_count(influxdb, "rec_amnesia", "machine='furnace-t1'") == 100 * N_SIGNALS, 60, "100")
    agent.kill9()
    broker.stop()
    shutil.rmtree(broker.root / "data")  # the broker comes back without its persistence file
    broker.start()
    pub = Publisher(broker.port, "amnesia-publisher-2")
    pub.publish(topic, [snapshot(i, T0_MS + i * 10) for i in range(100, 200)])  # nobody keeps these for the agent
    agent.start()
    wait_until(lambda: agent.status()["connections"]["furnace-t1"]["connected"], 30, "the agent connected")
    time.sleep(1.0)  # subscribed
    pub.publish(topic, [snapshot(i, T0_MS + i * 10) for i in range(200, 250)])
    pub.close()
    wait_until(lambda: influx_count(influxdb, "rec_amnesia", "machine='furnace-t1'") == 150 * N_SIGNALS, 60, "150")
    wait_until(lambda: _events(influxdb, "rec_amnesia", "gap"), 30, "the gap event")
    [lost] = _events(influxdb, "rec_amnesia", "session_lost")
    assert "not running" in lost["message"]
    [gap] = _events(influxdb, "rec_amnesia", "gap")
    assert (gap["missing"], gap["from_seq"], gap["to_seq"], gap["recovery"]) == (100, 100, 199, "none")
    assert gap["start_ns"] < gap["end_ns"] and "dropped by the broker" in gap["cause"]
    agent.stop()
