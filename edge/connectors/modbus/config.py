"""Configuration of a Modbus TCP machine connection and of one register signal."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Registers (16 bit) each data type occupies.
REGISTERS = {"int16": 1, "uint16": 1, "bool": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4}


class ModbusConfig(BaseModel):
    """How the agent polls a machine's Modbus TCP server (PLC, controller or gateway)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["modbus"] = Field(description="Connector type")
    host: str = Field(default="127.0.0.1", description="Modbus TCP server host")
    port: int = Field(default=502, ge=1, le=65535, description="Modbus TCP server port")
    unit_id: int = Field(default=1, ge=0, le=255, description="Unit (slave/device) id behind the server or gateway")
    poll_interval_ms: int = Field(default=1000, ge=50, le=3_600_000, description="Time between two polls")
    timeout_s: float = Field(default=3.0, gt=0, le=60, description="Request timeout")
    max_block_registers: int = Field(
        default=100, ge=1, le=125,
        description="Most registers read in one request; neighbouring signals are read together up to this")
    max_block_gap: int = Field(
        default=8, ge=0, le=100,
        description="Unused registers a block may span to join two signals (some devices refuse holes: set 0)")


class ModbusSource(BaseModel):
    """Where one signal sits in the Modbus register map, and how its raw value becomes the physical one."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["modbus"] = Field(description="Protocol of the source; taken from connection.type when not written")
    table: Literal["holding", "input"] = Field(default="holding", description="Holding (4x) or input (3x) registers")
    address: int = Field(ge=0, le=65535, description="Register address, 0-based as on the wire (40001 is 0)")
    data_type: Literal["int16", "uint16", "int32", "uint32", "float32", "float64", "bool"] = Field(
        default="int16", description="How the register(s) are read; bool = register not zero")
    word_order: Literal["big", "little"] = Field(
        default="big", description="Order of the 16-bit words of a 32/64-bit value (big = high word first)")
    scale: float = Field(default=1.0, description="value = raw × scale + offset (e.g. 0.1 for tenths of a degree)")
    offset: float = Field(default=0.0, description="Added after scaling")

    @model_validator(mode="after")
    def _fits(self) -> "ModbusSource":
        if self.address + REGISTERS[self.data_type] > 65536:
            raise ValueError(f"a {self.data_type} at address {self.address} runs past register 65535")
        return self

    @property
    def registers(self) -> int:
        """How many registers the value occupies."""
        return REGISTERS[self.data_type]
