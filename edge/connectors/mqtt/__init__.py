"""MQTT connector (paho-mqtt 2.x): persistent session, QoS 1, acknowledge only after the outbox has it."""

from edge.connectors.mqtt.config import MqttConfig, MqttSource
from edge.connectors.plugin import ProtocolPlugin

PLUGIN = ProtocolPlugin(
    type="mqtt", config=MqttConfig, source=MqttSource, connector="edge.connectors.mqtt.connector:MqttConnector",
    summary="JSON snapshots on an MQTT broker (persistent session, QoS 1, ack after the outbox has them)",
    simulator="edge.simulators.mqtt",
)
