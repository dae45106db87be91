"""The Modbus TCP connector against pymodbus's own server: register decoding by the machine file, exception
responses, outages and agent restarts recorded as gaps, and the whole path to InfluxDB under device codes."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
import yaml

from edge.config import MachineConfig, load_machine
from edge.connectors.modbus.connector import ModbusConnector, decode, physical, plan_reads
from edge.connectors.modbus.simulator import ModbusMachineSimulator, encode
from edge.connectors.registry import connector_class
from edge.readings import Event, MemoryJournal

ROOT = Path(__file__).resolve().parents[4]
SAMPLE = ROOT / "configs" / "machines" / "hip-01.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ListSink(MemoryJournal):
    """Readings and events in memory; state survives a 'restart' (a new connector on the same sink)."""

    def __init__(self) -> None:
        super().__init__()
        self.ingests = []
        self.events: list[Event] = []
        self.lock = threading.Lock()
        self.full = False

    def submit(self, ingests, *, state=None) -> None:
        from edge.readings import OutboxFull

        if self.full:
            raise OutboxFull("test: outbox full")
        with self.lock:
            self.keep_state(state)
            self.ingests.extend(ingests)

    def event(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)

    def quarantine(self, **kw) -> None:
        raise AssertionError(f"unexpected quarantine: {kw}")

    def latest(self, signal: str):
        with self.lock:
            for ingest in reversed(self.ingests):
                for r in ingest.readings:
                    if r.signal == signal:
                        return r
        return None

    def kinds(self) -> list[str]:
        with self.lock:
            return [e.kind for e in self.events]


def machine(port: int, **conn) -> MachineConfig:
    data = yaml.safe_load(SAMPLE.read_text())
    data["connection"].update(port=port, poll_interval_ms=100, timeout_s=0.5, **conn)
    return MachineConfig.model_validate(data)


from waiting import until  # noqa: E402 - the one waiting rule (tests/waiting.py)


def test_the_sample_machine_file_is_a_modbus_machine_and_the_registry_finds_its_connector():
    m = load_machine(SAMPLE)
    assert m.connection.type == "modbus" and all(s.source.type == "modbus" for s in m.signals)
    assert connector_class("modbus") is ModbusConnector


def test_registers_decode_by_type_and_word_order_as_ieee_754_and_twos_complement_say():
    """Reference values computed with struct, not with the library the connector uses."""
    m = load_machine(SAMPLE)
    temp, pressure, hold = m.signal("vessel_temp_c"), m.signal("pressure_mpa"), m.signal("hold_elapsed_s")
    hi, lo = struct.unpack(">HH", struct.pack(">f", 921.25))
    assert physical(temp, decode([hi, lo], temp.source)) == 921.25
    low_first = temp.source.model_copy(update={"word_order": "little"})
    assert decode([lo, hi], low_first) == 921.25
    (raw,) = struct.unpack(">H", struct.pack(">h", -15))  # -1.5 MPa in tenths, two's complement
    assert physical(pressure, decode([raw], pressure.source)) == pytest.approx(-1.5)
    big = 70_000  # over 16 bits: the low word comes first on this PLC
    assert physical(hold, decode([big & 0xFFFF, big >> 16], hold.source)) == 70_000
    for sig, value in ((temp, 921.25), (pressure, 101.3), (hold, 70_000)):
        assert physical(sig, decode(encode(sig.source, value), sig.source)) == pytest.approx(value)
    nan = list(struct.unpack(">HH", struct.pack(">f", float("nan"))))
    with pytest.raises(ValueError, match="not a measurement"):
        physical(temp, decode(nan, temp.source))


def test_neighbouring_signals_are_read_in_one_request_per_table():
    m = load_machine(SAMPLE)
    blocks = plan_reads(m.signals, max_registers=100, max_gap=8)
    assert [(b.table, b.start, b.count, [s.name for s in b.signals]) for b in blocks] == [
        ("holding", 0, 2, ["phase", "door_locked"]),
        ("input", 0, 5, ["vessel_temp_c", "pressure_mpa", "hold_elapsed_s"]),
    ]
    # A device that refuses holes or long reads gets one request per signal.
    assert len(plan_reads(m.signals, max_registers=1, max_gap=0)) == 5


async def test_polled_values_arrive_scaled_and_typed_and_an_exception_response_is_a_bad_reading():
    port = free_port()
    m = machine(port)
    sim = ModbusMachineSimulator(m, port=port)
    await sim.start()
    sink = ListSink()
    conn = ModbusConnector(m, sink)
    try:
        for name, value in (("phase", 4), ("vessel_temp_c", 921.25), ("pressure_mpa", 101.3),
                            ("hold_elapsed_s", 70_000), ("door_locked", True)):
            await sim.set_value(name, value)
        await conn.start()
        await until(lambda: sink.latest("door_locked") is not None, 10, "a first poll")
        assert sink.latest("phase").value == 4 and isinstance(sink.latest("phase").value, int)
        assert sink.latest("vessel_temp_c").value == 921.25
        assert sink.latest("pressure_mpa").value == pytest.approx(101.3)
        assert sink.latest("hold_elapsed_s").value == 70_000
        assert sink.latest("door_locked").value is True
        await sim.set_value("vessel_temp_c", 935.5)
        await until(lambda: sink.latest("vessel_temp_c").value == 935.5, 5, "a changed value")
        assert conn.state.connected and conn.stats.polls >= 2
    finally:
        await conn.stop()
        await sim.stop()

    # A register map beyond what the device has: the device answers "illegal data address".
    port = free_port()
    data = yaml.safe_load(SAMPLE.read_text())
    data["connection"].update(port=port, poll_interval_ms=100)
    data["signals"][1]["source"]["address"] = 4000
    far = MachineConfig.model_validate(data)
    sim = ModbusMachineSimulator(yaml_machine_with_small_inputs(far), port=port)  # registers 0..1023
    await sim.start()
    sink = ListSink()
    conn = ModbusConnector(far, sink)
    try:
        await conn.start()
        await until(lambda: sink.latest("vessel_temp_c") is not None, 10, "a poll with the bad block")
        bad = sink.latest("vessel_temp_c")
        assert bad.quality == "bad" and bad.value is None
        assert bad.status == "Modbus exception 2 (illegal data address)"
        assert sink.latest("pressure_mpa").quality == "good"  # the other block is unaffected
        await asyncio.sleep(0.5)
        errors = [e for e in sink.events if e.kind == "read_error"]
        assert len(errors) == 1 and "vessel_temp_c" in errors[0].message and errors[0].severity == "alarm"
        assert conn.state.connected
    finally:
        await conn.stop()
        await sim.stop()


def yaml_machine_with_small_inputs(m: MachineConfig) -> MachineConfig:
    """The same machine for the simulator, without the far signal (so the server's table stays small)."""
    return m.model_copy(update={"signals": [s for s in m.signals if s.source.address < 1000]})


async def test_an_outage_is_a_lasting_condition_and_a_gap_and_an_agent_restart_is_a_gap_too():
    port = free_port()
    m = machine(port)
    sim = ModbusMachineSimulator(m, port=port)
    await sim.start()
    sink = ListSink()
    conn = ModbusConnector(m, sink)
    try:
        await conn.start()
        await until(lambda: len(sink.ingests) >= 3, 10, "polls")
        await sim.stop()
        down_at = time.time_ns()
        await until(lambda: "connection_lost" in sink.kinds(), 10, "connection_lost")
        assert not conn.state.connected and f"127.0.0.1:{port}" in conn.state.last_error
        assert sink.conditions().get(f"modbus_link:{m.id}") is not None
        await asyncio.sleep(1.0)
        sim = ModbusMachineSimulator(m, port=port)
        await sim.start()
        await until(lambda: "connection_restored" in sink.kinds(), 30, "connection_restored")
        # The gap is recorded right after the restoration, from another thread: wait for it, do not race it.
        await until(lambda: "gap" in sink.kinds(), 10, "the outage's gap")
        gap = next(e for e in sink.events if e.kind == "gap")
        assert gap.fields["recovery"] == "none" and gap.fields["start_ns"] <= down_at
        assert gap.fields["end_ns"] - gap.fields["start_ns"] >= 1.0e9
        assert f"modbus_link:{m.id}" not in sink.conditions()
        n = len(sink.ingests)
        await until(lambda: len(sink.ingests) > n + 2, 10, "polls after the outage")
    finally:
        await conn.stop()

    # The agent stops for a while and starts again: the time it was away is a gap from the last stored poll.
    stopped = sink.ingests[-1].received_ns
    await asyncio.sleep(1.0)
    before = len([e for e in sink.events if e.kind == "gap"])
    conn = ModbusConnector(m, sink)
    try:
        await conn.start()
        await until(lambda: len([e for e in sink.events if e.kind == "gap"]) > before, 10, "the restart gap")
        gap = [e for e in sink.events if e.kind == "gap"][-1]
        assert gap.fields["start_ns"] == stopped and gap.fields["cause"] == "the agent was not running"
    finally:
        await conn.stop()
        await sim.stop()


async def test_polls_refused_by_a_full_outbox_are_an_alarm_and_a_gap_when_it_drains():
    port = free_port()
    m = machine(port)
    sim = ModbusMachineSimulator(m, port=port)
    await sim.start()
    sink = ListSink()
    conn = ModbusConnector(m, sink)
    try:
        await conn.start()
        await until(lambda: len(sink.ingests) >= 2, 10, "polls")
        sink.full = True
        await until(lambda: conn.stats.dropped_polls >= 3, 10, "dropped polls")
        assert "backpressure" in sink.kinds()
        sink.full = False
        await until(lambda: "backpressure_cleared" in sink.kinds(), 10, "back-pressure cleared")
        gap = [e for e in sink.events if e.kind == "gap"][-1]
        assert gap.fields["cause"] == "the outbox was full (back-pressure)" and gap.fields["recovery"] == "none"
    finally:
        await conn.stop()
        await sim.stop()
