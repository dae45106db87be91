"""The parts of an agent its helpers share: the server link, the build-file guard and the local API receive these,
not the agent itself (issue 14: they reached into its internals, and `getattr(agent, "server_link", None)`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

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
