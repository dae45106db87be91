"""Machine identity (OPC 40001-1) at connect and on change; the start-enable interlock written and checked."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from edge.connectors.base import ConnectorError
from edge.connectors.opcua.connector import OpcUaConnector
from edge.simulators.opcua import LpbfPrinterSimulator
from opcua_helpers import machine, until

IDENTITY = {
    "manufacturer": "amtrace simulated machines",
    "model": "LPBF-SIM 280",
    "serial_number": "SIM-LPBF-0001",
    "software_revision": "4.2.0",
    "hardware_revision": "B",
}


async def test_identity_read_at_connect_and_software_change_reported_within_one_publishing_cycle(port, sink):
    """Identity event at connect; a SoftwareRevision change raises identity_changed within one publishing interval."""
    async with LpbfPrinterSimulator(port=port) as sim:
        conn = OpcUaConnector(machine("lpbf-01", sim.endpoint, publishing_interval_ms=500), sink)
        await conn.start()
        try:
            await conn.wait_subscribed(15)
            assert conn.identity == IDENTITY
            [ident] = sink.kinds("identity")
            assert ident.fields == IDENTITY
            assert ident.message == "amtrace simulated machines LPBF-SIM 280 serial SIM-LPBF-0001, software 4.2.0, hardware B"
            await until(lambda: sink.readings("job_state"), 10, "first data")
            changed_at = time.monotonic()
            await sim.set_software_revision("4.3.0")
            await until(lambda: sink.kinds("identity_changed"), 5, "identity_changed")
            latency = time.monotonic() - changed_at
            # Server-side the change is queued at once and goes out with the next publish: <= one interval (0.5 s).
            assert latency < 0.5 + 0.25
            [change] = sink.kinds("identity_changed")
            assert change.severity == "alarm"
            assert change.message == "software revision changed from 4.2.0 to 4.3.0: requalification required"
            assert change.fields == {"old_software_revision": "4.2.0", "new_software_revision": "4.3.0",
                                     "changed": "software_revision"}
            assert conn.identity["software_revision"] == "4.3.0"
            # A firmware update while the connection is down is found at the next connect.
            await sim.stop()
            await sim.set_software_revision("5.0.1")
            await sim.start()
            await until(lambda: len(sink.kinds("identity_changed")) == 2, 15, "second identity_changed")
        finally:
            await conn.stop()
    assert sink.kinds("identity_changed")[1].fields["new_software_revision"] == "5.0.1"
    assert [e.fields["software_revision"] for e in sink.kinds("identity")] == ["4.2.0", "5.0.1"]
    assert conn.stats.identity_changes == 2


async def test_interlock_blocks_the_start_and_is_logged(port, sink, caplog):
    """start enabled=false is written and read back; the printer then refuses StartJob; true lets it start."""
    caplog.set_level(logging.WARNING, logger="edge.connectors.opcua.connector")
    async with LpbfPrinterSimulator(port=port, speed=20) as sim:
        conn = OpcUaConnector(machine("lpbf-01", sim.endpoint, publishing_interval_ms=50), sink)
        await conn.start()
        try:
            await conn.wait_subscribed(15)
            done = await conn.set_start_enabled(False, reason="build file hash mismatch for job BUILD-9")
            assert done == ("machine lpbf-01: start enabled set to false "
                            "(nsu=urn:amtrace:sim:lpbf-01;s=lpbf-01.Interlock.StartEnabled, read back false); "
                            "reason: build file hash mismatch for job BUILD-9")
            assert done in caplog.text
            assert await sim.start_job("BUILD-9", 3) == (False, "start of job BUILD-9 refused: StartEnabled is false")
            assert sim.refusals == ["start of job BUILD-9 refused: StartEnabled is false"]
            await until(lambda: sink.readings("start_enabled")[-1].value is False, 10, "start_enabled false")
            await conn.set_start_enabled(True, reason="release gate passed for job BUILD-9")
            assert await sim.start_job("BUILD-9", 3) == (True, "")
        finally:
            await conn.stop()
    events = sink.kinds("interlock")
    # First the agent's decision at connection (blocked; the simulator starts enabled: an alarm), then the two writes.
    assert [(e.fields["enabled"], e.fields["ok"], e.severity) for e in events] == [
        (False, True, "alarm"), (False, True, "warning"), (True, True, "info")]


async def test_a_machine_that_restarts_start_enabled_is_blocked_again_on_reconnection(port, sink):
    """The printer power-cycles and comes back with its default StartEnabled = true while the agent's decision
    is "blocked" (e.g. requalification required): the agent writes its decision again on reconnection, reads
    it back, and records an alarm that the machine came back enabled. Before, it stayed enabled."""
    async with LpbfPrinterSimulator(port=port) as sim:
        conn = OpcUaConnector(machine("lpbf-01", sim.endpoint, publishing_interval_ms=100), sink)
        await conn.start()
        try:
            await conn.wait_subscribed(15)
            await conn.set_start_enabled(True, reason="release gate passed for job BUILD-7")
            await conn.set_start_enabled(False, reason="requalification required: software changed")
            assert (await sim.start_job("BUILD-7", 3))[0] is False
            await sim.stop()
            await sim.set("Interlock.StartEnabled", True)  # the machine's power-on default
            await sim.start()
            await until(lambda: conn.stats.reconnects == 1, 20, "the reconnection")
            assert await sim.start_job("BUILD-7", 3) == (False, "start of job BUILD-7 refused: StartEnabled is false")
        finally:
            await conn.stop()
    came_back = [e for e in sink.kinds("interlock") if e.fields.get("found") is True]
    assert len(came_back) == 2  # at the first connection (the simulator starts enabled) and after the restart
    assert came_back[-1].severity == "alarm" and came_back[-1].ts_ns > came_back[0].ts_ns
    assert came_back[0].message.startswith("machine lpbf-01 was found with start enabled=true")  # first connection
    assert came_back[-1].message.startswith("machine lpbf-01 came back with start enabled=true while the agent's "
                                           "decision is false: machine lpbf-01: start enabled set to false")


async def test_interlock_by_method(port, sink):
    """An interlock offered as a method: the call is made and checked."""
    async with LpbfPrinterSimulator(port=port) as sim:
        cfg = machine("lpbf-01", sim.endpoint, interlock={
            "method": "nsu=urn:amtrace:sim:lpbf-01;s=lpbf-01.Interlock.SetStartEnabled"})
        conn = OpcUaConnector(cfg, sink)
        await conn.start()
        try:
            await conn.wait_subscribed(15)
            done = await conn.set_start_enabled(False, reason="requalification required")
        finally:
            await conn.stop()
    assert done == ("machine lpbf-01: start enabled set to false (method "
                    "nsu=urn:amtrace:sim:lpbf-01;s=lpbf-01.Interlock.SetStartEnabled accepted); "
                    "reason: requalification required")
    assert sim.value("Interlock.StartEnabled") is False


async def test_interlock_refused_by_the_server_raises_a_clear_error(port, sink):
    """A node the server does not let us write: ConnectorError naming the status, and an alarm event."""
    async with LpbfPrinterSimulator(port=port) as sim:
        cfg = machine("lpbf-01", sim.endpoint, interlock={"node": "nsu=urn:amtrace:sim:lpbf-01;s=lpbf-01.Job.JobState"})
        conn = OpcUaConnector(cfg, sink)
        await conn.start()
        try:
            await conn.wait_subscribed(15)
            with pytest.raises(ConnectorError) as err:
                await conn.set_start_enabled(False, reason="test")
        finally:
            await conn.stop()
    assert str(err.value) == (f"machine lpbf-01: setting start enabled=false was refused: "
                              f"{sim.endpoint}: the server answered BadUserAccessDenied")
    at_connection, ev = sink.kinds("interlock")  # the failed write at connection is an alarm too
    assert (at_connection.severity, at_connection.fields["ok"], at_connection.fields["reason"]) == (
        "alarm", False, "reconnection")
    assert (ev.severity, ev.fields["ok"]) == ("alarm", False)


async def test_interlock_when_not_connected(sink, port):
    """No connection: the agent is told so, it is not silently ignored."""
    conn = OpcUaConnector(machine("lpbf-01", f"opc.tcp://127.0.0.1:{port}/x"), sink)
    with pytest.raises(ConnectorError, match=f"machine lpbf-01: cannot set start enabled=False: not connected to opc.tcp://127.0.0.1:{port}/x"):
        await conn.set_start_enabled(False, reason="test")


async def test_a_machine_without_hardware_revision_still_reports_its_identity(port, sink):
    """HardwareRevision is optional in OPC 40001-1. A machine without it reports what it has, and a software
    change on it is still seen. Before, the identity needed all five fields and was never reported."""
    sim = LpbfPrinterSimulator(port=port)
    del sim.vars["Identification.HardwareRevision"], sim.identity["HardwareRevision"]
    async with sim:
        conn = OpcUaConnector(machine("lpbf-01", sim.endpoint, publishing_interval_ms=100), sink)
        await conn.start()
        try:
            await conn.wait_subscribed(15)
            assert conn.identity == {k: v for k, v in IDENTITY.items() if k != "hardware_revision"}
            [incomplete] = sink.kinds("identity_incomplete")
            assert (incomplete.severity, incomplete.message) == (
                "info", "machine lpbf-01 does not offer HardwareRevision")
            await sim.set_software_revision("4.3.0")
            await until(lambda: sink.kinds("identity_changed"), 10, "identity_changed")
        finally:
            await conn.stop()
    assert conn.state.detail["identity"] == "incomplete"


async def test_a_machine_without_identification_raises_identity_unknown(port, sink):
    sim = LpbfPrinterSimulator(port=port)
    for name in list(sim.identity):
        del sim.vars[f"Identification.{name}"]
    sim.identity = {}
    async with sim:
        conn = OpcUaConnector(machine("lpbf-01", sim.endpoint), sink)
        await conn.start()
        try:
            await conn.wait_subscribed(15)
        finally:
            await conn.stop()
    [unknown] = sink.kinds("identity_unknown")
    assert unknown.severity == "alarm"
    assert unknown.message == ("identity unknown: requalification triggers are blind (machine lpbf-01 offers no "
                               "Manufacturer or SerialNumber)")
    assert conn.state.detail["identity"] == "unknown"


async def test_a_machine_that_enables_its_own_start_while_blocked_is_blocked_again_with_an_alarm(port, sink):
    """Someone enables the start at the machine's HMI while the agent's decision is "blocked": the agent sees the
    change on its subscription, writes its decision back and records an alarm. Its own writes raise none."""
    async with LpbfPrinterSimulator(port=port) as sim:
        conn = OpcUaConnector(machine("lpbf-01", sim.endpoint, publishing_interval_ms=100), sink)
        await conn.start()
        try:
            await conn.wait_subscribed(15)
            for enabled in (True, False, True, False):  # the agent's own decisions: no override alarm
                await conn.set_start_enabled(enabled, reason="test: the agent decides")
            await asyncio.sleep(1.0)
            assert not [e for e in sink.kinds("interlock") if e.fields.get("reason") == "machine override"]
            # At the HMI. (The simulator's own copy still holds its power-on true: bring it to the agent's false first.)
            await sim.set("Interlock.StartEnabled", False)
            await sim.set("Interlock.StartEnabled", True)
            await until(lambda: [e for e in sink.kinds("interlock") if e.fields.get("reason") == "machine override"],
                        10, "the override alarm")
            # The alarm is recorded after the write was read back: the machine refuses to start.
            assert await sim.start_job("BUILD-9", 3) == (False, "start of job BUILD-9 refused: StartEnabled is false")
        finally:
            await conn.stop()
    [override] = [e for e in sink.kinds("interlock") if e.fields.get("reason") == "machine override"]
    assert override.severity == "alarm"
    assert override.message.startswith("machine lpbf-01 enabled its start by itself while the agent's decision is "
                                       "false: machine lpbf-01: start enabled set to false")
