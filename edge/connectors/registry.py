"""The protocol registry: one line per protocol; the machine-file models are built from it (edge/config.py)."""

from __future__ import annotations

from edge.connectors import folder, modbus, mqtt, opcua
from edge.connectors.plugin import ProtocolPlugin

PLUGINS: dict[str, ProtocolPlugin] = {p.type: p for p in (
    mqtt.PLUGIN,
    opcua.PLUGIN,
    modbus.PLUGIN,
    folder.PLUGIN,
)}

for _plugin in PLUGINS.values():
    _plugin.check()


def plugin(type_: str) -> ProtocolPlugin:
    """The plugin registered for a connection type (KeyError naming the known ones if none)."""
    try:
        return PLUGINS[type_]
    except KeyError:
        raise KeyError(f"no protocol {type_!r}; known: {', '.join(sorted(PLUGINS))}") from None


def connector_class(type_: str) -> type:
    """The Connector class (edge.connectors.base.Connector) registered for a connection type."""
    return plugin(type_).connector_class()
