"""Simulator physics (saturated steam, cycles) and its messages: they parse, they are deterministic,
and a real run through Mosquitto reaches the connector with exact counts and nothing quarantined."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from pathlib import Path

import pytest
from mqtt_testkit import SqliteSink, wait_until

from edge.config import load_machine, load_machines
from edge.connectors.mqtt.connector import MqttConnector
from edge.connectors.mqtt.payload import effective_topic, parse_payload
from edge.simulators import mqtt as sim
from edge.simulators.profiles import (
    FurnaceCycle,
    SlaPrint,
    SterilizerCycle,
    WasherCycle,
    saturation_pressure_kpa,
    saturation_temperature_c,
)

ROOT = Path(__file__).resolve().parents[4]
MACHINES_DIR = ROOT / "configs" / "machines"
MQTT_MACHINES = ["furnace-01", "sla-01", "sterilizer-01", "washer-01"]

# Regulatory table of saturated steam (EN 285 / ISO 17665 usage): °C -> kPa absolute.
STEAM_TABLE = [(121.0, 205.0), (124.0, 225.2), (134.0, 304.2), (137.0, 331.9)]


@pytest.mark.parametrize("t_c,p_kpa", STEAM_TABLE)
def test_saturation_pressure_matches_the_steam_table(t_c, p_kpa):
    """IAPWS-IF97 saturation pressure within 0.5 % of the table (it is within 0.02 %)."""
    assert saturation_pressure_kpa(t_c) == pytest.approx(p_kpa, rel=0.005)
    assert saturation_pressure_kpa(t_c) == pytest.approx(p_kpa, rel=0.0003)


def test_saturation_temperature_inverts_pressure():
    """The backward equation gives the temperature back, to a millikelvin, from 100 to 140 °C."""
    for tenth in range(1000, 1401, 5):
        t = tenth / 10
        assert saturation_temperature_c(saturation_pressure_kpa(t)) == pytest.approx(t, abs=1e-3)
    assert saturation_temperature_c(101.325) == pytest.approx(99.974, abs=0.001)  # ITS-90 boiling point


def test_sterilizer_cycle_phases_and_saturated_steam():
    """Prevacuum pulses, heat-up, 3.5 min plateau in the 134..137 °C band at saturated-steam pressure, exhaust, drying."""
    cycle = SterilizerCycle()
    seen, plateau_s = [], 0
    for t in range(int(cycle.period_s)):
        phase, temp, p = cycle.chamber(t)
        if not seen or seen[-1] != phase:
            seen.append(phase)
        if phase in ("heat_up", "plateau", "exhaust") or (phase == "prevacuum" and t > 140):
            assert p == pytest.approx(saturation_pressure_kpa(temp), rel=1e-6), (t, phase)
        if phase == "plateau":
            plateau_s += 1
            assert 134.0 <= temp <= 137.0
            assert 304.2 <= p <= 331.9
        assert 5.0 <= p <= 332.0
    assert seen == ["idle", "prevacuum", "heat_up", "plateau", "exhaust", "drying", "aeration", "end"]
    assert plateau_s == 210
    bottoms = [cycle.chamber(t)[2] for t in range(60, 420)]
    assert sum(1 for a, b, c in zip(bottoms, bottoms[1:], bottoms[2:]) if b < a and b <= c) == 3  # 3 pulses


def test_121_program_holds_at_205_kpa():
    """The 121 °C program plateaus at the table's 205 kPa (+ the 0.3..0.7 K control offset)."""
    cycle = SterilizerCycle(plateau_c=121.0, plateau_s=1200.0, program="121C-20min")
    start = 60 + 3 * 120 + 150
    for t in range(start, start + 1200, 10):
        phase, temp, p = cycle.chamber(t)
        assert phase == "plateau"
        assert 121.0 <= temp <= 122.0
        assert saturation_pressure_kpa(121.0) <= p <= saturation_pressure_kpa(122.0)
    assert saturation_pressure_kpa(121.0) == pytest.approx(205.0, rel=0.001)


def test_load_probes_lag_but_reach_the_plateau():
    """Load probes trail the chamber during heat-up and reach 134 °C within the first seconds of the plateau."""
    cycle = SterilizerCycle()
    st = cycle.state(60 + 360 + 100)  # heat-up
    assert st["load_temp_1_c"] < st["load_temp_2_c"] < st["chamber_temp_c"]
    st = cycle.state(60 + 360 + 150 + 20)  # 20 s into the plateau
    assert st["load_temp_1_c"] >= 134.0 and st["door_locked"] is True


def test_furnace_ramp_hold_cool():
    """10 K/min ramp, 2 h at 800 °C under vacuum, argon cooling to the unload temperature."""
    f = FurnaceCycle()
    names = [n for n, _ in f.phases()]
    assert names == ["idle", "pump_down", "ramp", "hold", "argon_cool", "done"]
    ramp_start = 660
    assert f.state(ramp_start + 600)["setpoint_c"] == pytest.approx(25 + 100)
    hold_start = ramp_start + (800 - 25) * 6
    for t in range(hold_start + 600, hold_start + 7200, 300):
        st = f.state(t)
        assert st["program_step"] == 3 and st["setpoint_c"] == 800.0
        assert all(abs(st[f"zone_{i}_temp_c"] - 800) <= 2 for i in (1, 2, 3))
        assert st["chamber_pressure_mbar"] < 1e-3 and st["argon_flow_l_min"] == 0
    st = f.state(hold_start + 7200 + 3600)
    assert st["program_step"] == 4 and st["argon_flow_l_min"] == 40.0 and st["chamber_pressure_mbar"] == 900.0
    assert f.state(f.period_s - 301)["load_temp_c"] == pytest.approx(80, abs=20)


def test_washer_and_sla_cycles():
    """Washer: ultrasound only during the wash, final rinse under 5 µS/cm; SLA: layers climb, laser and peel alternate."""
    w = WasherCycle()
    steps = {w.state(t)["step"]: w.state(t) for t in range(0, int(w.period_s), 5)}
    assert list(steps) == ["idle", "fill", "heat", "ultrasonic_wash", "rinse_1", "rinse_2", "final_rinse", "dry", "done"]
    assert w.state(30 + 60 + 300 + 100)["ultrasonic_power_w"] > 550
    assert w.state(30 + 60 + 300 + 600 + 10)["ultrasonic_power_w"] == 0
    assert w.state(30 + 60 + 300 + 600 + 240 + 179)["conductivity_us_cm"] < 5
    s = SlaPrint()
    a, b = s.state(360 + 1.0), s.state(360 + 7.0)  # layer 1: exposing, then peeling
    assert (a["layer"], a["uv_power_mw"], a["peel_force_n"]) == (1, 250.0, 0.0)
    assert b["layer"] == 1 and b["uv_power_mw"] == 0.0 and b["peel_force_n"] > 5
    assert s.state(360 + 9.0 * 600 + 1)["layer"] == 601
    assert s.state(360 + 9.0 * 600 + 1)["z_mm"] == pytest.approx(30.05)


@pytest.mark.parametrize("machine_id", MQTT_MACHINES)
def test_noiseless_cycle_raises_no_alarm_on_the_sample_limits(machine_id):
    """A normal cycle must not trip the sample file's live limits (no false alarms on the shop floor)."""
    machine = load_machine(MACHINES_DIR / f"{machine_id}.yaml")
    profile = sim._profile(machine)
    steps = 3000
    for k in range(steps):
        state = profile.state(k * profile.period_s / steps)
        for s in machine.signals:
            if s.limits is not None:
                assert s.limits.classify(float(state[s.name])) is None, (s.name, state[s.name], k)


@pytest.mark.parametrize("machine_id", MQTT_MACHINES)
def test_simulated_messages_parse_for_every_mqtt_machine(machine_id):
    """Every message the simulator builds parses with parse_payload and covers every signal of the machine."""
    machine = load_machine(MACHINES_DIR / f"{machine_id}.yaml")
    profile = sim._profile(machine)
    rng = random.Random(7)
    now_ms = 1_790_000_000_000
    seen = set()
    for k in range(400):
        t_s = k * profile.period_s / 400
        for topic, raw in sim.messages_for(machine, t_s, rng, ts_ms=now_ms + k, seq=k):
            ingest = parse_payload(raw, machine=machine, topic=topic, received_ns=(now_ms + k) * 1_000_000)
            assert ingest.readings, topic
            assert all(r.source_ts_ns == (now_ms + k) * 1_000_000 and r.quality == "good" for r in ingest.readings)
            expected = {s.name for s in machine.signals if sim.concrete_topic(effective_topic(machine, s),
                                                                                machine.id) == topic}
            assert {r.signal for r in ingest.readings} == expected
            seen |= expected
    assert seen == {s.name for s in machine.signals}


def test_same_seed_same_messages():
    """Deterministic: the same seed gives byte-identical payloads; another seed gives other noise."""
    machine = load_machine(MACHINES_DIR / "sterilizer-01.yaml")

    def series(seed):
        rng = random.Random(seed)
        return [sim.payload_for(machine, t, rng, ts_ms=1_790_000_000_000, seq=t) for t in range(0, 1500, 7)]

    assert series(3) == series(3)
    assert series(3) != series(4)
    doc = json.loads(sim.payload_for(machine, 600, random.Random(1), ts_ms=1_790_000_000_000, seq=1))
    assert set(doc) == {"ts", "seq", "values"}
    assert doc["values"]["chamber"]["temp_c"] == pytest.approx(134.5, abs=0.5)
    assert doc["values"]["chamber"]["pressure_kpa"] == pytest.approx(saturation_pressure_kpa(134.5), abs=4)


async def test_simulator_run_reaches_the_connectors_exactly(mosquitto, tmp_path):
    """`simulate mqtt --count 25` through a real broker: each connector stores exactly 25 messages per topic,
    none quarantined, and the command-line run reports success."""
    machines = load_machines(MACHINES_DIR, only=MQTT_MACHINES)
    sink = SqliteSink(tmp_path / "sink.sqlite")
    connectors = []
    for m in machines:
        local = m.model_copy(update={"connection": m.connection.model_copy(update={
            "port": mosquitto.port, "client_id": f"amtrace-simtest-{m.id}-{tmp_path.name[-12:]}"})})
        c = MqttConnector(local, sink, agent_id="simtest")
        await c.start()
        connectors.append(c)
    for c in connectors:
        wait_until(lambda c=c: c.state.detail["subscribed"], what=f"{c.machine.id} subscribed")
    parser = argparse.ArgumentParser()
    sim.add_arguments(parser)
    args = parser.parse_args(["--port", str(mosquitto.port), "--machines-dir", str(MACHINES_DIR), "--rate", "200",
                              "--speed", "300", "--count", "25", "--seed", "5", "--quiet"]
                             + [x for m in MQTT_MACHINES for x in ("--machine", m)])
    assert await asyncio.to_thread(sim.run, args) == 0
    expected = {"furnace-01": 25, "sla-01": 25, "sterilizer-01": 50, "washer-01": 25}  # the sterilizer has 2 topics
    for c in connectors:
        wait_until(lambda c=c: c.stats.messages_acked == expected[c.machine.id], what=f"{c.machine.id} messages")
        assert c.stats.quarantined == 0
    counts = dict(sink.rows("SELECT machine, count(*) FROM readings GROUP BY machine"))
    assert counts == {m.id: 25 * len(m.signals) for m in machines}
    assert sink.count("quarantine") == 0
    for c in connectors:
        await c.stop()
