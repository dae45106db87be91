"""End to end against a real asyncua server: every value change arrives once, with source time and status."""

from __future__ import annotations

import asyncio


from edge.config import MachineConfig
from edge.connectors.opcua.connector import OpcUaConnector
from edge.simulators.opcua import BenchSimulator, FurnaceProgram, FurnaceSimulator, LpbfPrinterSimulator
from opcua_helpers import PROCESS_SIGNALS, machine, until


def expected_since_subscribe(sim, key: str, first_ts: int):
    """What the simulator published on key from the value current at subscription onward."""
    return [(p.value, p.source_ts_ns) for p in sim.history[key] if p.source_ts_ns >= first_ts]


async def test_short_build_every_value_change_arrives_once_with_source_timestamps(port, sink):
    """A 12-layer build: each mapped signal's readings equal the simulator's published changes exactly."""
    async with LpbfPrinterSimulator(port=port, speed=10, layer_time_s=2.0, seed=7) as sim:
        conn = OpcUaConnector(machine("lpbf-01", sim.endpoint, publishing_interval_ms=100), sink)
        await conn.start()
        try:
            await conn.wait_subscribed(15)
            await until(lambda: all(sink.readings(s) for s in PROCESS_SIGNALS), 10, "initial values of all signals")
            # The first reading of each signal is the value current at subscription, with its source time.
            for name, key in PROCESS_SIGNALS.items():
                first = sink.readings(name)[0]
                assert (first.value, first.source_ts_ns) == (sim.history[key][-1].value, sim.history[key][-1].source_ts_ns)
            first_ts = {name: sink.readings(name)[0].source_ts_ns for name in PROCESS_SIGNALS}
            await conn.set_start_enabled(True, reason='test: the build is cleared')
            assert await sim.start_job("BUILD-0001", 12) == (True, "")
            await sim.wait_job_done(30)
            want = {n: expected_since_subscribe(sim, k, first_ts[n]) for n, k in PROCESS_SIGNALS.items()}
            total = sum(len(v) for v in want.values())
            await until(lambda: len(sink.readings()) >= total, 10, f"{total} readings")
            await conn.wait_delivered(5)
        finally:
            await conn.stop()
    got = {n: [(r.value, r.source_ts_ns) for r in sink.readings(n)] for n in PROCESS_SIGNALS}
    assert got == want
    assert [r.value for r in sink.readings("layer_number")] == list(range(0, 13))
    interlock = len(sink.readings("start_enabled"))  # the agent's own writes: at connection, then "cleared"
    assert interlock == 2 and len(sink.readings()) == total + interlock
    assert conn.stats.value_changes == total + interlock
    assert all(r.quality == "good" and r.status is None for r in sink.readings())
    assert sink.readings("job_state")[-1].value == "Completed"
    # Persisted in the durable sink too, exactly once each.
    rows = sink.db.execute("select count(*), count(distinct signal || ':' || source_ts_ns) from readings").fetchone()
    assert rows == (total + interlock, total + interlock)
    # Job/layer data arrive as ordinary signals: one ingest per publish response, never one per value.
    assert sink.submits < total


async def test_bad_status_is_recorded_as_bad_not_as_a_value(port, sink):
    """A sensor failure arrives as quality=bad with its status name and no value; recovery as good again."""
    async with LpbfPrinterSimulator(port=port) as sim:
        conn = OpcUaConnector(machine("lpbf-01", sim.endpoint, publishing_interval_ms=50), sink)
        await conn.start()
        try:
            await conn.wait_subscribed(15)
            await until(lambda: sink.readings("chamber_o2"), 10, "initial O2")
            await sim.set_sensor_fault("Chamber.OxygenConcentration", "BadSensorFailure")
            await sim.set("Chamber.OxygenConcentration", 95.0)
            await until(lambda: len(sink.readings("chamber_o2")) == 3, 10, "three O2 readings")
        finally:
            await conn.stop()
    o2 = sink.readings("chamber_o2")
    fault = sim.history["Chamber.OxygenConcentration"][-2]
    assert (o2[1].value, o2[1].quality, o2[1].status, o2[1].source_ts_ns) == (None, "bad", "BadSensorFailure", fault.source_ts_ns)
    assert (o2[2].value, o2[2].quality, o2[2].status) == (95.0, "good", None)
    assert conn.stats.bad_quality == 1


async def test_large_machine_items_are_created_in_batches(port, sink):
    """1,000 nodes in batches of 150: every item is created and its current value arrives once."""
    n = 1000
    async with BenchSimulator(port=port, nodes=n, rate=0) as sim:
        signals = [
            {"name": f"s{i:05d}", "source": {"node_id": sim.node_id(f"Signals.S{i:05d}")},
             "measurement": "bench", "field": f"s{i:05d}", "unit": "1"}
            for i in range(n)
        ]
        cfg = MachineConfig.model_validate({
            "id": "bench-01", "kind": "cnc_mill", "manufacturer": "amtrace", "model": "bench", "serial": "bench-01",
            "connection": {"type": "opcua", "endpoint": sim.endpoint, "register_batch_size": 150},
            "signals": signals,
        })
        conn = OpcUaConnector(cfg, sink)
        await conn.start()
        try:
            await conn.wait_subscribed(30)
            await until(lambda: len(sink.readings()) >= n, 20, f"{n} initial values")
            await conn.wait_delivered(5)
        finally:
            await conn.stop()
    assert conn.state.detail["monitored_items"] == n + 5  # + the five identity properties
    assert sorted(r.signal for r in sink.readings()) == [f"s{i:05d}" for i in range(n)]


async def test_furnace_cycle_with_deadband(port, sink):
    """The furnace sample config resolves (node ids and a browse path) and its cycle phases arrive in order."""
    async with FurnaceSimulator(port=port, speed=3000) as sim:
        conn = OpcUaConnector(machine("furnace-02", sim.endpoint, publishing_interval_ms=50), sink)
        await conn.start()
        try:
            await conn.wait_subscribed(15)
            await until(lambda: len(sink.readings("phase")) == 1, 10, "initial phase")
            await sim.start_cycle("HT-7", FurnaceProgram(setpoint_c=300, ramp_k_per_min=100, hold_min=1,
                                                        cool_k_per_min=100, unload_c=100))
            await sim.cycle_done.wait()
            await until(lambda: [r.value for r in sink.readings("phase")][-1:] == ["Complete"], 10, "Complete")
        finally:
            await conn.stop()
    assert [r.value for r in sink.readings("phase")] == ["Idle", "Ramp", "Hold", "Cool", "Complete"]
    assert conn.state.detail["unresolved"] == []
    zone3 = [r.value for r in sink.readings("zone3_temperature")]
    # The 0.2 K deadband drops smaller changes: consecutive readings differ by more than 0.2.
    assert all(abs(a - b) > 0.2 for a, b in zip(zone3, zone3[1:]))


async def test_unreachable_server_does_not_raise_and_says_why(port, sink):
    """start() returns at once for a machine that is off; the state tells why."""
    conn = OpcUaConnector(machine("lpbf-01", f"opc.tcp://127.0.0.1:{port}/amtrace/lpbf-01"), sink)
    await conn.start()
    try:
        await until(lambda: conn.state.last_error is not None, 10, "a connection error")
        assert conn.state.last_error == f"cannot reach opc.tcp://127.0.0.1:{port}/amtrace/lpbf-01: connection refused"
        assert conn.state.connected is False
    finally:
        await conn.stop()
    assert sink.events == []


async def test_outbox_full_holds_readings_and_delivers_them_in_order_later(port, sink):
    """Back-pressure: submit raises OutboxFull twice; nothing is lost or reordered, it is retried."""
    from edge.readings import OutboxFull

    class FullTwice:
        def __init__(self, inner):
            self.inner, self.refused = inner, 0

        def submit(self, ingests, *, state=None):
            if self.refused < 2:
                self.refused += 1
                raise OutboxFull("outbox at its disk budget")
            self.inner.submit(ingests, state=state)

        def __getattr__(self, name):  # conditions and state: the inner sink's
            return getattr(self.inner, name)

        def event(self, e):
            self.inner.event(e)

        def quarantine(self, **kw):
            self.inner.quarantine(**kw)

    async with LpbfPrinterSimulator(port=port) as sim:
        conn = OpcUaConnector(machine("lpbf-01", sim.endpoint, publishing_interval_ms=50), FullTwice(sink))
        await conn.start()
        try:
            await conn.wait_subscribed(15)
            for v in (10.0, 11.0, 12.0, 13.0):
                await sim.set("Chamber.OxygenConcentration", v)
            await until(lambda: [r.value for r in sink.readings("chamber_o2")][-1:] == [13.0], 15, "O2 13")
        finally:
            await conn.stop()
    assert [r.value for r in sink.readings("chamber_o2")] == [800.0, 10.0, 11.0, 12.0, 13.0]
    assert conn.stats.value_changes == len(sink.readings())


async def test_a_long_outbox_outage_drops_beyond_the_bound_and_records_the_gap(port, sink, monkeypatch):
    """OPC UA has no acknowledgement to withhold: past the in-memory bound, notifications are dropped
    and the span is recorded as a gap event with cause 'outbox full' — memory bounded, loss visible."""
    import edge.connectors.opcua.connector as connector_module
    from edge.readings import OutboxFull

    monkeypatch.setattr(connector_module, "MAX_PENDING_NOTIFICATIONS", 3)

    class Switchable:
        def __init__(self, inner):
            self.inner, self.full = inner, True

        def submit(self, ingests, *, state=None):
            if self.full:
                raise OutboxFull("outbox at its disk budget")
            self.inner.submit(ingests, state=state)

        def __getattr__(self, name):  # conditions and state: the inner sink's
            return getattr(self.inner, name)

        def event(self, e):
            self.inner.event(e)

        def quarantine(self, **kw):
            self.inner.quarantine(**kw)

    gate = Switchable(sink)
    async with LpbfPrinterSimulator(port=port) as sim:
        conn = OpcUaConnector(machine("lpbf-01", sim.endpoint, publishing_interval_ms=50), gate)
        await conn.start()
        try:
            await conn.wait_subscribed(15)
            for v in range(20):
                await sim.set("Chamber.OxygenConcentration", 100.0 + v)
                await asyncio.sleep(0.08)  # one publish each: more notifications than the bound
            await until(lambda: conn.stats.dropped_notifications > 0, 15, "notifications dropped past the bound")
            gate.full = False
            await until(lambda: sink.readings("chamber_o2"), 15, "the held notifications delivered")
            await asyncio.sleep(0.5)
            await sim.set("Chamber.OxygenConcentration", 999.0)
            await until(lambda: [r.value for r in sink.readings("chamber_o2")][-1:] == [999.0], 15, "O2 999")
        finally:
            await conn.stop()
    gaps = [e for e in sink.events if e.kind == "gap" and e.fields.get("cause") == "outbox full"]
    assert len(gaps) == 1 and gaps[0].severity == "alarm"
    assert gaps[0].fields["start_ns"] < gaps[0].fields["end_ns"]
    got = sink.readings("chamber_o2")
    times = [r.source_ts_ns for r in got]
    assert times == sorted(times) and got[-1].value == 999.0
    assert len(got) < 22  # 800 + 20 changes + 999 published; what is missing is the recorded gap


async def test_the_time_the_agent_was_not_running_is_a_gap_of_the_machines_record(port, sink):
    """Issue 18: when this machine's data last arrived is kept with the data; the connector of a restarted agent
    records the time in between as a gap (recovery partial: the values current at reconnection are read, the
    changes meanwhile are lost). The sink outlives the connector here, as the outbox outlives the agent."""
    import time

    async with LpbfPrinterSimulator(port=port) as sim:
        first = OpcUaConnector(machine("lpbf-01", sim.endpoint, publishing_interval_ms=50), sink)
        await first.start()
        await first.wait_subscribed(15)
        await sim.set("Chamber.OxygenConcentration", 10.0)
        await until(lambda: [r.value for r in sink.readings("chamber_o2")][-1:] == [10.0], 15, "O2 10")
        last_stored = max(i.received_ns for i in sink.ingests)
        await first.stop()
        await asyncio.sleep(1.0)
        await sim.set("Chamber.OxygenConcentration", 11.0)  # while no agent runs: this change is lost
        await sim.set("Chamber.OxygenConcentration", 12.0)
        second = OpcUaConnector(machine("lpbf-01", sim.endpoint, publishing_interval_ms=50), sink)
        started = time.time_ns()
        await second.start()
        await second.wait_subscribed(15)
        await until(lambda: [e for e in sink.events if e.kind == "gap"], 15, "the gap")
        await second.stop()
    [gap] = [e for e in sink.events if e.kind == "gap"]
    assert gap.fields["start_ns"] == last_stored and gap.fields["end_ns"] >= started
    assert (gap.fields["cause"], gap.fields["recovery"]) == ("the agent was not running", "partial")
    assert [r.value for r in sink.readings("chamber_o2")][-1] == 12.0, "the current value is read on reconnection"
