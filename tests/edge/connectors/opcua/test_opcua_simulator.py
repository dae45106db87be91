"""The simulated OPC UA machines look like machines on the wire: identity, namespaces, job, interlock, restart."""

from __future__ import annotations

import asyncio

from asyncua import Client, ua

from edge.connectors.opcua.addressing import resolve
from edge.simulators.opcua import DI_NS, FurnaceProgram, FurnaceSimulator, LpbfPrinterSimulator, ts_to_ns

IDENT = "http://opcfoundation.org/UA/Machinery/:Machines/urn:amtrace:sim:lpbf-01:LPBF-Printer/" + DI_NS + ":Identification"


async def test_printer_identity_follows_machinery_browse_names_at_any_namespace_index(port):
    """Identification sits at Machines/<machine>/Identification (DI names) whatever padding shifts the indexes."""
    for extra in (0, 3):
        async with LpbfPrinterSimulator(port=port, extra_namespaces=extra) as sim:
            async with Client(sim.endpoint) as client:
                nss = await client.get_namespace_array()
                assert nss.index("urn:amtrace:sim:lpbf-01") == 4 + extra
                node = client.get_node(await resolve(client, IDENT + "/" + DI_NS + ":SoftwareRevision", nss))
                assert await node.read_value() == "4.2.0"
                await sim.set_software_revision("4.3.0")
                assert await node.read_value() == "4.3.0"


async def test_printer_runs_a_job_and_refuses_start_while_interlocked(port):
    """A job advances its layers to completion; StartJob is refused (and recorded) while StartEnabled is false."""
    async with LpbfPrinterSimulator(port=port, speed=40, layer_time_s=1.0) as sim:
        assert await sim.start_job("J-1", 5) == (True, "")
        await sim.wait_job_done(10)
        assert [p.value for p in sim.history["Job.CurrentLayer"]] == [0, 1, 2, 3, 4, 5]
        assert sim.value("Job.JobState") == "Completed"
        async with Client(sim.endpoint) as client:
            nss = await client.get_namespace_array()
            enable = client.get_node(await resolve(client, sim.node_id("Interlock.StartEnabled"), nss))
            await enable.write_value(ua.DataValue(ua.Variant(False, ua.VariantType.Boolean)))
            job = client.get_node(await resolve(client, sim.node_id("Job"), nss))
            method = await resolve(client, sim.node_id("Job.StartJob"), nss)
            try:
                await job.call_method(method, "J-2", ua.Variant(3, ua.VariantType.UInt32))
                raise AssertionError("StartJob was accepted while StartEnabled is false")
            except ua.uaerrors.BadInvalidState:
                pass
        assert sim.refusals == ["start of job J-2 refused: StartEnabled is false"]
        assert sim.value("Job.JobState") == "Completed"


async def test_restart_keeps_machine_state_and_timestamps(port):
    """After a server restart the same values come back with the same source timestamps."""
    async with LpbfPrinterSimulator(port=port) as sim:
        await sim.set("Chamber.OxygenConcentration", 321.0)
        before = sim.history["Chamber.OxygenConcentration"][-1]
        await sim.restart()
        async with Client(sim.endpoint) as client:
            nss = await client.get_namespace_array()
            dv = await client.get_node(await resolve(client, sim.node_id("Chamber.OxygenConcentration"), nss)).read_data_value()
            assert dv.Value.Value == 321.0
            assert ts_to_ns(dv.SourceTimestamp) == before.source_ts_ns


async def test_furnace_ramps_holds_and_cools(port):
    """The furnace program goes Ramp -> Hold -> Cool -> Complete."""
    async with FurnaceSimulator(port=port, speed=3000) as sim:
        assert await sim.start_cycle("HT-1", FurnaceProgram(setpoint_c=300, ramp_k_per_min=100, hold_min=1,
                                                              cool_k_per_min=100, unload_c=100))
        await asyncio.wait_for(sim.cycle_done.wait(), 20)
        phases = [p.value for p in sim.history["Cycle.Phase"]]
        assert phases == ["Idle", "Ramp", "Hold", "Cool", "Complete"]
        assert max(p.value for p in sim.history["Control.Setpoint"]) == 300.0
