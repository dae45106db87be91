"""The server over real HTTP and a simulated LPBF printer on loopback, for tests in which a real edge agent
links to the server (test_edge_agent_link, test_device_walk): fixtures and helpers shared by both."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
import uvicorn
from asyncua import Client

from edge.connectors.opcua.addressing import resolve_node_id
from edge.simulators.opcua import LpbfPrinterSimulator


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopThread:
    """An asyncio loop in a thread, for the simulated printer next to synchronous test code."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def server_url(app):
    """The module's app served over real HTTP on loopback, as the agent reaches it."""
    port = free_port()
    # Cut waiting context long polls off 2 s into the shutdown, as `amtrace-server serve` does (5 s).
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def printer():
    """The simulated LPBF printer (OPC UA server) on a free port."""
    loop = LoopThread()
    # No random O2 excursions: an alarm excursion raises a nonconformity that stops the device (as it must), which
    # these stories do not test; test_edge_agent_link tests that path on purpose.
    sim = LpbfPrinterSimulator(port=free_port(), machine_id="lpbf-01", layer_time_s=0.5, o2_excursion_probability=0.0)
    loop.run(sim.start())
    yield loop, sim
    loop.run(sim.close())
    loop.close()


def start_enabled(loop: LoopThread, sim) -> bool:
    """StartEnabled as a separate OPC UA client reads it on the printer now."""
    async def read():
        async with Client(sim.endpoint) as c:
            nid = resolve_node_id(sim.node_id("Interlock.StartEnabled"), await c.get_namespace_array())
            return await c.get_node(nid).read_value()
    return loop.run(read())
