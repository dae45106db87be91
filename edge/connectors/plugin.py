"""What a protocol plugin is: one object per connector folder that says everything the agent needs to know.

A protocol is added by writing `edge/connectors/<name>/` with a `PLUGIN` in its `__init__.py` and one line in
`edge/connectors/registry.py`; nothing else in the agent names a protocol (docs/architecture.md)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel


@dataclass(frozen=True)
class ConnectorContext:
    """What the agent gives every connector besides its machine and the sink."""

    agent_id: str = "edge"
    state_dir: Path | None = None  # the agent's state folder (a connector may keep files under it)
    group_commit_ms: float = 10.0  # how long an intake may collect messages into one outbox transaction


@dataclass(frozen=True)
class ProtocolPlugin:
    """One protocol: its YAML type name, its configuration models and where its connector lives."""

    type: str  # `connection.type` and `source.type` in a machine file
    config: type[BaseModel]  # the connection model; has `type: Literal[<type>]`
    source: type[BaseModel]  # one signal's source model; has `type: Literal[<type>]`
    connector: str  # "module:Class", imported only when a machine uses the protocol (keeps asyncua/pymodbus lazy)
    summary: str  # one line for `amtrace-edge protocols` and the docs
    simulator: str | None = None  # module runnable with `python -m` that simulates such a machine, if any

    def connector_class(self) -> type:
        """The Connector class (edge.connectors.base.Connector) of this protocol, imported on first use.

        Not typed as Connector: the machine models are built from the plugins, and Connector's module knows
        the machine model, so naming it here would close an import cycle."""
        module, _, name = self.connector.partition(":")
        return getattr(importlib.import_module(module), name)

    def check(self) -> None:
        """Raise TypeError when the models do not carry this plugin's type as their discriminator."""
        for model in (self.config, self.source):
            field = model.model_fields.get("type")
            args = getattr(field.annotation, "__args__", ()) if field else ()
            if tuple(args) != (self.type,):
                raise TypeError(f"protocol plugin {self.type!r}: {model.__name__}.type must be Literal[{self.type!r}]")
