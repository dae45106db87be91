"""Connector registry: the YAML `type` names the folder and the class (one line per protocol)."""

from __future__ import annotations

import importlib

from edge.connectors.base import Connector

CONNECTORS: dict[str, str] = {
    "mqtt": "edge.connectors.mqtt.connector:MqttConnector",
    "opcua": "edge.connectors.opcua.connector:OpcUaConnector",
}


def connector_class(type_: str) -> type[Connector]:
    """The Connector class registered for a connection type."""
    module, _, name = CONNECTORS[type_].partition(":")
    return getattr(importlib.import_module(module), name)
