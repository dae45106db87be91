"""Modbus TCP connector (pymodbus): polled holding and input registers, scaled into signal values."""

from edge.connectors.modbus.config import ModbusConfig, ModbusSource
from edge.connectors.plugin import ProtocolPlugin

PLUGIN = ProtocolPlugin(
    type="modbus", config=ModbusConfig, source=ModbusSource,
    connector="edge.connectors.modbus.connector:ModbusConnector",
    summary="Modbus TCP polling (pymodbus): holding/input registers, int16/32, float32/64, scaling, word order",
    simulator="edge.connectors.modbus.simulator",
)
