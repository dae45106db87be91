"""The connector interface shared by all protocols, the one error type, and the one backoff policy."""

from __future__ import annotations

import asyncio
import logging
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from edge.config import MachineConfig
    from edge.connectors.plugin import ConnectorContext
    from edge.readings import ReadingSink


class ConnectorError(RuntimeError):
    """A protocol library error, turned into words an operator or engineer can act on."""


@dataclass
class ConnectionState:
    """What status/metrics show about one connection."""

    connected: bool = False
    since_ns: int | None = None
    last_error: str | None = None
    reconnects: int = 0
    detail: dict = field(default_factory=dict)
    # Whether what the machine sends is being taken in (a worker that ended makes the agent unhealthy, even
    # with the connection up): None = running; else why not.
    intake_problem: str | None = None


@dataclass
class Backoff:
    """Exponential backoff with full jitter, capped; reset() after a success."""

    initial_s: float = 0.5
    maximum_s: float = 30.0
    factor: float = 2.0
    _attempt: int = 0

    def next_delay(self) -> float:
        """Delay before the next attempt, growing with each failure."""
        ceiling = min(self.maximum_s, self.initial_s * (self.factor ** self._attempt))
        self._attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Start again from the initial delay."""
        self._attempt = 0


class Connector(ABC):
    """A machine connection: start(), stop(), hands readings to the sink, reports its state."""

    type: ClassVar[str]
    # True when a quiet connection is not missing data: OPC UA subscriptions send changes only (a steady machine
    # sends nothing while its session stays alive), a cycle-log folder receives one file per program. The
    # dashboard's "no data for N s" then counts only while the connection is down.
    reports_changes_only: ClassVar[bool] = False

    def __init__(self, machine: "MachineConfig", sink: "ReadingSink"):
        self.machine = machine
        self.sink = sink
        self.state = ConnectionState()

    @classmethod
    def from_context(cls, machine: "MachineConfig", sink: "ReadingSink", context: "ConnectorContext") -> "Connector":
        """The connector as the agent makes it; a protocol that uses more of the context overrides this."""
        return cls(machine, sink, agent_id=context.agent_id)

    @abstractmethod
    async def start(self) -> None:
        """Connect (or start trying to) and begin delivering readings; return without blocking."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop delivering, release the connection; readings not yet acknowledged stay upstream."""

    async def set_start_enabled(self, enabled: bool, *, reason: str) -> str:
        """Enable or block the machine's build start (interlock); return what was done, checked.

        Raises ConnectorError when the machine offers no interlock or the write was not confirmed."""
        raise ConnectorError(f"machine {self.machine.id} offers no start interlock over {self.type}")


class TaskConnector(Connector):
    """A connector that is one asyncio task (a polling protocol, a watched folder): start, stop, a sleep that
    stop interrupts, and the record's calls made off the event loop."""

    def __init__(self, machine: "MachineConfig", sink: "ReadingSink"):
        super().__init__(machine, sink)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Start the task (after prepare(), e.g. reading saved state); returns at once."""
        if self._task is not None:
            return
        await self.prepare()
        self._stopping.clear()
        self._task = asyncio.create_task(self.run(), name=f"{self.type}-{self.machine.id}")

    async def stop(self) -> None:
        """Ask the task to end and wait for it; what it took in is stored already."""
        if self._task is None:
            return
        self._stopping.set()
        await self._task
        self._task = None

    async def prepare(self) -> None:
        """Before the task starts (default: nothing)."""

    @abstractmethod
    async def run(self) -> None:
        """The connector's work until self.stopping is set."""

    @property
    def stopping(self) -> bool:
        """Whether stop() was asked."""
        return self._stopping.is_set()

    async def sleep(self, seconds: float) -> None:
        """Wait, or less if stop() is asked."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def durably(self, store, *args) -> None:
        """Call a sink method (event, condition) off the event loop; a failure is logged, the work goes on."""
        try:
            await asyncio.to_thread(store, *args)
        except Exception:  # noqa: BLE001 - the record of one event must not stop the connector
            logging.getLogger(f"amtrace.{self.type}").exception(
                "%s: could not record %s", self.machine.id, getattr(args[-1], "kind", "an event"))
