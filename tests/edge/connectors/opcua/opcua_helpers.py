"""Helpers shared by the OPC UA tests: machine configs pointed at a simulator, polling for arrivals."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from edge.config import MachineConfig, load_machine

ROOT = Path(__file__).resolve().parents[4]

# Signal name in configs/machines/lpbf-01.yaml -> simulator variable.
LPBF_SIGNALS = {
    "job_id": "Job.JobId",
    "job_state": "Job.JobState",
    "layer_number": "Job.CurrentLayer",
    "layers_total": "Job.NumberOfLayers",
    "build_file": "Job.BuildFile",
    "laser_power_set": "Laser.PowerSetpoint",
    "laser_power_actual": "Laser.PowerActual",
    "chamber_o2": "Chamber.OxygenConcentration",
    "chamber_pressure": "Chamber.Pressure",
    "gas_flow": "Chamber.GasFlow",
    "build_plate_temperature": "BuildPlate.Temperature",
    "recoater_state": "Recoater.State",
    "start_enabled": "Interlock.StartEnabled",
}
# The signals the machine itself changes: the interlock is written by the agent (at every connection, too),
# so the simulator's own history of it is not what a subscriber sees.
PROCESS_SIGNALS = {k: v for k, v in LPBF_SIGNALS.items() if k != "start_enabled"}


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine(name: str, endpoint: str, **connection) -> MachineConfig:
    """A shipped machine config with its endpoint (and any connection field) overridden."""
    m = load_machine(ROOT / "configs" / "machines" / f"{name}.yaml")
    conn = {**m.connection.model_dump(), "endpoint": endpoint, **connection}
    return MachineConfig.model_validate({**m.model_dump(), "connection": conn})


from waiting import until  # noqa: E402,F401 - the one waiting rule (tests/waiting.py)


class TcpCut:
    """A loopback TCP relay in front of a server: cut() drops every connection and refuses new ones (a network
    outage with the machine still running), mend() lets connections through again."""

    def __init__(self, target_port: int, port: int):
        self.target_port, self.port = target_port, port
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def mend(self) -> None:
        """Accept and relay connections."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Close the listener and every relayed connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
