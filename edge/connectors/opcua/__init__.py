"""OPC UA connector (asyncua): subscriptions, browse-path addressing, security, machine identity."""

from edge.connectors.opcua.config import OpcUaConfig, OpcUaSource
from edge.connectors.plugin import ProtocolPlugin

PLUGIN = ProtocolPlugin(
    type="opcua", config=OpcUaConfig, source=OpcUaSource, connector="edge.connectors.opcua.connector:OpcUaConnector",
    summary="OPC UA subscriptions (asyncua): node ids or browse paths, security, identity, start interlock",
    simulator="edge.simulators.opcua",
)
