"""A simulated Modbus TCP machine: pymodbus's own server holding a machine file's register map.

    amtrace-edge simulate modbus --machine washer-02 --port 5020

Every signal's registers are written from a slow wave around a plausible value (or set by a test with
set_value), encoded exactly as the machine file says the device holds it (type, word order, scale, offset)."""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge.config import ConfigError, MachineConfig
from edge.connectors.simulate import add_machine_arguments, machine_to_simulate
from edge.connectors.modbus.config import ModbusSource

_FUNC = {"holding": 16, "input": 4}
_DT = AsyncModbusTcpClient.DATATYPE


def encode(source: ModbusSource, value: float | int | bool) -> list[int]:
    """The registers a device holding value (physical units) has, by the source's rule."""
    if source.data_type == "bool":
        return [1 if value else 0]
    raw = (float(value) - source.offset) / source.scale
    if source.data_type not in ("float32", "float64"):
        raw = int(round(raw))
    name = source.data_type.upper()
    return AsyncModbusTcpClient.convert_to_registers(raw, getattr(_DT, name), word_order=source.word_order)


class ModbusMachineSimulator:
    """pymodbus TCP server with the machine's registers; start(), set_value(), stop()."""

    def __init__(self, machine: MachineConfig, *, host: str = "127.0.0.1", port: int = 5020, size: int = 1024):
        self.machine = machine
        self.host, self.port = host, port
        unit = machine.connection.unit_id
        top = max((s.source.address + s.source.registers for s in machine.signals), default=0)
        size = max(size, top)
        self._device = SimDevice(unit, simdata=(
            [SimData(0, count=1, values=False, datatype=DataType.BITS)],
            [SimData(0, count=1, values=False, datatype=DataType.BITS)],
            [SimData(0, count=size, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=size, values=0, datatype=DataType.REGISTERS)]))
        self.unit = unit
        self.server: ModbusTcpServer | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Listen on host:port (returns once it accepts connections)."""
        self.server = ModbusTcpServer([self._device], address=(self.host, self.port))
        self._task = asyncio.create_task(self.server.serve_forever())
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise RuntimeError(f"Modbus simulator did not listen on {self.host}:{self.port}")

    async def stop(self) -> None:
        """Close the server and every client connection."""
        if self.server is not None:
            await self.server.shutdown()
            self.server = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the server is gone either way
                pass
            self._task = None

    async def set_value(self, signal: str, value: float | int | bool) -> None:
        """Put a signal's physical value into its registers."""
        sig = self.machine.signal(signal)
        if sig is None:
            raise KeyError(f"machine {self.machine.id} has no signal {signal}")
        await self.server.async_setValues(self.unit, _FUNC[sig.source.table], sig.source.address,
                                          encode(sig.source, value))

    async def set_registers(self, table: str, address: int, registers: list[int]) -> None:
        """Write raw registers (a test's way of holding something the map does not expect)."""
        await self.server.async_setValues(self.unit, _FUNC[table], address, registers)

    async def animate(self, period_s: float = 1.0) -> None:
        """Write every signal from a slow wave until cancelled."""
        t0 = time.monotonic()
        while True:
            t = time.monotonic() - t0
            for i, s in enumerate(self.machine.signals):
                if s.type == "bool":
                    value = int(t // 30) % 2 == 0
                elif s.states:
                    codes = sorted(s.states)  # a state machine walks through its named states
                    value = codes[int(t // 20) % len(codes)]
                else:
                    lim = s.limits
                    lo = lim and (lim.warn_low if lim.warn_low is not None else lim.alarm_low)
                    hi = lim and (lim.warn_high if lim.warn_high is not None else lim.alarm_high)
                    if lo is not None and hi is not None:  # inside the band: a healthy machine
                        base, swing = (lo + hi) / 2, (hi - lo) * 0.2
                    else:
                        base = (hi if hi else 100.0) * 0.8
                        swing = base * 0.05
                    value = base + swing * math.sin(t / 20 + i)
                    value = int(value) if s.type == "int" else value
                await self.set_value(s.name, value)
            await asyncio.sleep(period_s)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `amtrace-edge simulate modbus`."""
    add_machine_arguments(p, "modbus")
    p.add_argument("--host", default="127.0.0.1", help="listen address (loopback)")
    p.add_argument("--port", type=int, default=None, help="listen port (default: the machine file's)")


def run(args: argparse.Namespace) -> int:
    """Serve the machine's registers until interrupted."""
    try:
        machine = machine_to_simulate(args, "modbus")
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2

    async def serve() -> None:
        sim = ModbusMachineSimulator(machine, host=args.host, port=args.port or machine.connection.port)
        await sim.start()
        print(f"Modbus machine {machine.id} on {sim.host}:{sim.port} (unit {sim.unit})", flush=True)
        await sim.animate()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m edge.connectors.modbus.simulator --machine ID`."""
    p = argparse.ArgumentParser(prog="python -m edge.connectors.modbus.simulator", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
