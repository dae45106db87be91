"""Modbus TCP connector: polls register blocks on a fixed schedule and stores each poll as one ingest.

Modbus keeps no history and no timestamps: what is not polled is gone. So the record says so: a poll that
fails or comes late is a `gap` event (start, end, cause, recovery none), a lost connection is a lasting
condition with its true start (across agent restarts), and the time the agent was not running is a gap too.
Reconnecting follows base.Backoff; pymodbus's own reconnect is off so there is one policy."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from edge.config import MachineConfig, SignalConfig
from edge.connectors.base import Backoff, ConnectorError, TaskConnector
from edge.connectors.modbus.config import ModbusConfig, ModbusSource
from edge.readings import Event, Ingest, OutboxFull, Reading, ReadingSink
from edge.values import coerce

log = logging.getLogger("amtrace.modbus")

# Modbus exception codes (Modbus Application Protocol V1.1b3, §7) in words.
EXCEPTIONS = {1: "illegal function", 2: "illegal data address", 3: "illegal data value", 4: "server device failure",
              5: "acknowledge", 6: "server device busy", 10: "gateway path unavailable",
              11: "gateway target device failed to respond"}

_DATATYPE = {"int16": "INT16", "uint16": "UINT16", "int32": "INT32", "uint32": "UINT32", "float32": "FLOAT32",
             "float64": "FLOAT64", "bool": "UINT16"}


@dataclass
class ReadBlock:
    """One request: consecutive registers of one table, and the signals inside them."""

    table: str
    start: int
    count: int
    signals: list[SignalConfig] = field(default_factory=list)


@dataclass
class ModbusStats:
    """Counters shown in the agent's status."""

    polls: int = 0
    values: int = 0
    failed_polls: int = 0
    late_polls: int = 0
    exception_responses: int = 0
    dropped_polls: int = 0  # refused by a full outbox
    gaps: int = 0


def plan_reads(signals: list[SignalConfig], *, max_registers: int, max_gap: int) -> list[ReadBlock]:
    """Group the signals into as few requests as the limits allow (same table, near each other)."""
    blocks: list[ReadBlock] = []
    for table in ("holding", "input"):
        mine = sorted((s for s in signals if s.source.table == table), key=lambda s: s.source.address)
        current: ReadBlock | None = None
        for s in mine:
            src: ModbusSource = s.source
            end = src.address + src.registers
            if current is not None and src.address <= current.start + current.count + max_gap \
                    and max(end, current.start + current.count) - current.start <= max_registers:
                current.count = max(end, current.start + current.count) - current.start
                current.signals.append(s)
                continue
            current = ReadBlock(table, src.address, src.registers, [s])
            blocks.append(current)
    return blocks


def decode(registers: list[int], source: ModbusSource):
    """The raw value of a source from its registers (numbers as the device holds them, before scaling)."""
    dt = getattr(AsyncModbusTcpClient.DATATYPE, _DATATYPE[source.data_type])
    raw = AsyncModbusTcpClient.convert_from_registers(registers, dt, word_order=source.word_order)
    if source.data_type == "bool":
        return raw != 0
    return raw


def physical(signal: SignalConfig, raw) -> float | int | bool:
    """raw × scale + offset as the signal's type; ValueError when it is not one (NaN, a fraction for an int)."""
    src: ModbusSource = signal.source
    value = raw
    if not isinstance(raw, bool) and (src.scale != 1.0 or src.offset != 0.0):
        value = raw * src.scale + src.offset
    return coerce(signal.type, value)


class ModbusConnector(TaskConnector):
    """Polls one machine's registers into the sink; every missed poll is a gap in the record."""

    type = "modbus"

    def __init__(self, machine: MachineConfig, sink: ReadingSink, *, agent_id: str = "edge"):
        super().__init__(machine, sink)
        if not isinstance(machine.connection, ModbusConfig):
            raise ConnectorError(f"machine {machine.id}: connection type is {machine.connection.type}, not modbus")
        for s in machine.signals:
            if s.type == "str":
                raise ConnectorError(f"machine {machine.id}: signal {s.name} is of type str; Modbus registers "
                                     f"hold numbers (float, int or bool)")
        self.config: ModbusConfig = machine.connection
        self.agent_id = agent_id
        self.endpoint = f"{self.config.host}:{self.config.port}"
        self.blocks = plan_reads(machine.signals, max_registers=self.config.max_block_registers,
                                 max_gap=self.config.max_block_gap)
        self.stats = ModbusStats()
        self._client: AsyncModbusTcpClient | None = None
        self._link_key = f"modbus_link:{machine.id}"
        self._backpressure_key = f"backpressure:{machine.id}"
        self._alive_key = f"modbus:{machine.id}:alive"
        self._last_good_ns: int | None = None  # last poll stored (from the outbox across restarts)
        self._restarted = False
        self._refused_since: int | None = None
        self._reported_exceptions: set[tuple[str, int, int]] = set()
        self.state.detail = {"endpoint": self.endpoint, "unit_id": self.config.unit_id,
                             "poll_interval_ms": self.config.poll_interval_ms, "requests_per_poll": len(self.blocks)}

    async def prepare(self) -> None:
        """Read what the outbox kept from before: the last poll stored."""
        saved = await asyncio.to_thread(self.sink.saved_state, self._alive_key)
        if saved.get(self._alive_key):
            self._last_good_ns = int(saved[self._alive_key])
            self._restarted = True

    # ------------------------------------------------------------------ loop
    async def run(self) -> None:
        """Connect, poll on a fixed schedule, and after a loss reconnect with the shared backoff, until stopped."""
        backoff = Backoff()
        interval = self.config.poll_interval_ms / 1000
        failing = False
        while not self.stopping:
            client = AsyncModbusTcpClient(self.config.host, port=self.config.port, timeout=self.config.timeout_s,
                                          retries=0, reconnect_delay=0)
            self._client = client
            try:
                ok = await client.connect()
                if not ok:
                    raise ConnectionError(f"Modbus server {self.endpoint} is unreachable")
                await self._on_live()
                backoff.reset()
                failing = False
                next_tick = time.monotonic()
                while not self.stopping:
                    taken_ns = time.time_ns()
                    readings = await self._poll(client)
                    await self._store(readings, taken_ns)
                    next_tick += interval
                    late = time.monotonic() - next_tick
                    if late > interval:
                        # Polls that never happened (a slow device or a busy host): a gap, not silence.
                        missed = int(late // interval)
                        self.stats.late_polls += missed
                        await self._gap(taken_ns, time.time_ns(), f"{missed} poll(s) missed: the poll took "
                                        f"{late + interval:.1f} s for an interval of {interval:g} s")
                        next_tick = time.monotonic()
                    await self.sleep(max(0.0, next_tick - time.monotonic()))
            except (ModbusException, ConnectionError, OSError, asyncio.TimeoutError) as e:
                self.stats.failed_polls += 1
                if not failing:
                    await self._lost(self._words(e))
                failing = True
            finally:
                client.close()
                self._client = None
            await self.sleep(backoff.next_delay())
        self.state.connected = False

    async def _poll(self, client: AsyncModbusTcpClient) -> list[Reading]:
        readings: list[Reading] = []
        unit = self.config.unit_id
        for block in self.blocks:
            read = client.read_holding_registers if block.table == "holding" else client.read_input_registers
            rr = await read(block.start, count=block.count, device_id=unit)
            if rr.isError():
                # The device answered but refused: the connection is fine, these values are bad (and why).
                code = getattr(rr, "exception_code", 0)
                status = f"Modbus exception {code} ({EXCEPTIONS.get(code, 'unknown')})"
                self.stats.exception_responses += 1
                await self._exception_once(block, code, status)
                readings.extend(Reading(s.name, None, quality="bad", status=status) for s in block.signals)
                continue
            for s in block.signals:
                src: ModbusSource = s.source
                regs = rr.registers[src.address - block.start: src.address - block.start + src.registers]
                try:
                    readings.append(Reading(s.name, physical(s, decode(regs, src))))
                except ValueError as e:
                    readings.append(Reading(s.name, None, quality="bad", status=f"not a {s.type}: {e}"))
        return readings

    async def _store(self, readings: list[Reading], taken_ns: int) -> None:
        ingest = Ingest(self.machine.id, readings, received_ns=taken_ns,
                        origin=f"modbus://{self.endpoint}/{self.config.unit_id}")
        try:
            await asyncio.to_thread(self.sink.submit, [ingest], state={self._alive_key: str(taken_ns)})
        except OutboxFull:
            # A polled value cannot wait upstream: this poll is lost, and the record says so when it drains.
            self.stats.dropped_polls += 1
            if self._refused_since is None:
                self._refused_since = taken_ns
                await self.durably(self.sink.open_condition, self._backpressure_key, Event(
                    self.machine.id, "backpressure", "the outbox is full: Modbus polls are dropped until it drains",
                    taken_ns, "alarm"))
            return
        self.stats.polls += 1
        self.stats.values += len(readings)
        if self._refused_since is not None:
            start, self._refused_since = self._refused_since, None
            await self.durably(self.sink.close_condition, self._backpressure_key, lambda since: Event(
                self.machine.id, "backpressure_cleared", "the outbox takes data again", taken_ns, "info",
                {"since_ns": since}))
            await self._gap(start, taken_ns, "the outbox was full (back-pressure)")
        self._last_good_ns = taken_ns

    # ------------------------------------------------------------------ record
    async def _on_live(self) -> None:
        now = time.time_ns()
        was_down = self.state.last_error is not None
        self.state.connected = True
        self.state.since_ns = now
        self.state.last_error = None
        if was_down:
            self.state.reconnects += 1
        log.info("%s: connected to Modbus server %s (unit %d)", self.machine.id, self.endpoint, self.config.unit_id)
        down_since = None

        def restored(since: int) -> Event:
            nonlocal down_since
            down_since = since
            return Event(self.machine.id, "connection_restored",
                         f"Modbus connection to {self.endpoint} restored after {(now - since) / 1e9:.1f} s", now,
                         "info", {"endpoint": self.endpoint, "down_since_ns": since})
        await self.durably(self.sink.close_condition, self._link_key, restored)
        if self._last_good_ns is not None and now - self._last_good_ns > 2 * self.config.poll_interval_ms * 1e6:
            cause = "the agent was not running" if self._restarted and down_since is None else \
                f"no connection to {self.endpoint}"
            await self._gap(self._last_good_ns, now, cause)
        self._restarted = False

    async def _lost(self, reason: str) -> None:
        now = time.time_ns()
        self.state.connected = False
        self.state.last_error = reason
        log.warning("%s: %s", self.machine.id, reason)
        await self.durably(self.sink.open_condition, self._link_key, Event(
            self.machine.id, "connection_lost", f"Modbus connection lost: {reason}", now, "warning",
            {"cause": reason, "endpoint": self.endpoint}))

    async def _gap(self, start: int, end: int, cause: str) -> None:
        """Record polls that did not happen: Modbus keeps no history, so nothing of them is recovered."""
        self.stats.gaps += 1
        await self.durably(self.sink.event, Event(
            self.machine.id, "gap", f"no data from {self.machine.id} for {(end - start) / 1e9:.1f} s: {cause}; "
            f"recovery none: Modbus keeps no history", end, "warning",
            {"start_ns": start, "end_ns": end, "cause": cause, "recovery": "none"}))

    async def _exception_once(self, block: ReadBlock, code: int, status: str) -> None:
        key = (block.table, block.start, code)
        if key in self._reported_exceptions:
            return
        self._reported_exceptions.add(key)
        names = ", ".join(s.name for s in block.signals)
        await self.durably(self.sink.event, Event(
            self.machine.id, "read_error", f"{block.table} registers {block.start}..{block.start + block.count - 1} "
            f"({names}): {status}", time.time_ns(), "alarm",
            {"table": block.table, "start": block.start, "count": block.count, "exception_code": code}))

    def _words(self, e: BaseException) -> str:
        if isinstance(e, asyncio.TimeoutError):
            return f"Modbus server {self.endpoint} did not answer within {self.config.timeout_s:g} s"
        text = str(e) or type(e).__name__
        return text if self.endpoint in text else f"Modbus server {self.endpoint}: {text}"

