"""The parts of an agent its helpers share: the server link, the build-file guard and the local API receive these,
not the agent itself (issue 14: they reached into its internals, and `getattr(agent, "server_link", None)`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from edge.assignments import AssignmentBook
    from edge.config import MachineConfig
    from edge.connectors.base import Connector
    from edge.live import LiveState
    from edge.outbox import Outbox
    from edge.pipeline import Pipeline
    from edge.retag import Retagger
    from edge.writer import InfluxWriter


@dataclass(frozen=True)
class AgentParts:
    """One agent's machines, stores and live state; `connectors` fills in as the agent starts them."""

    agent_id: str
    machines: list[MachineConfig]
    state_dir: Path
    outbox: Outbox
    assignments: AssignmentBook
    pipeline: Pipeline
    writer: InfluxWriter
    retagger: Retagger
    live: LiveState
    connectors: dict[str, Connector]


# What each helper may use of the parts, and nothing more (tests/edge/test_parts.py checks every `parts.X` a
# helper reads against its protocol). AgentParts satisfies all three.

class LinkParts(Protocol):
    """What the server link uses: machines and their live state, the stores it books and re-tags into."""

    machines: list[MachineConfig]
    state_dir: Path
    outbox: Outbox
    assignments: AssignmentBook
    pipeline: Pipeline
    retagger: Retagger
    live: LiveState
    connectors: dict[str, Connector]


class GuardParts(Protocol):
    """What the build-file guard uses: the machines, their jobs and connectors (for the interlock)."""

    agent_id: str
    machines: list[MachineConfig]
    state_dir: Path
    assignments: AssignmentBook
    live: LiveState
    connectors: dict[str, Connector]


class ApiParts(Protocol):
    """What the local API uses: assignments, and the outbox and pipeline for its quarantine and counters."""

    outbox: Outbox
    assignments: AssignmentBook
    pipeline: Pipeline
