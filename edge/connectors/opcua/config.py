"""Configuration of an OPC UA machine connection and of an OPC UA signal source."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class OpcUaSecurity(BaseModel):
    """Message security and certificates."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["None", "Sign", "SignAndEncrypt"] = Field(default="None", description="OPC UA message security mode")
    policy: Literal[
        "None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"
    ] = Field(default="None", description="Security policy")
    client_certificate: str | None = Field(default=None, description="Client certificate file (DER or PEM)")
    client_private_key: str | None = Field(default=None, description="Client private key file (PEM)")
    server_certificate: str | None = Field(
        default=None, description="The server certificate the agent trusts explicitly (DER or PEM)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> "OpcUaSecurity":
        if (self.mode == "None") != (self.policy == "None"):
            raise ValueError("security mode and policy must both be 'None' or both be set")
        if self.mode != "None" and not (self.client_certificate and self.client_private_key):
            raise ValueError("Sign and SignAndEncrypt need client_certificate and client_private_key")
        return self


class OpcUaIdentityNodes(BaseModel):
    """Where the machine's identity sits when the server does not offer OPC 40001-1 MachineIdentificationType."""

    model_config = ConfigDict(extra="forbid")

    manufacturer: str | None = Field(default=None, description="Node id or browse path of Manufacturer")
    model: str | None = Field(default=None, description="Node id or browse path of Model")
    serial_number: str | None = Field(default=None, description="Node id or browse path of SerialNumber")
    software_revision: str | None = Field(default=None, description="Node id or browse path of SoftwareRevision")
    hardware_revision: str | None = Field(default=None, description="Node id or browse path of HardwareRevision")


class OpcUaInterlock(BaseModel):
    """The node the agent writes (or the method it calls) to block or enable a build start."""

    model_config = ConfigDict(extra="forbid")

    node: str | None = Field(default=None, description="Node id or browse path of a boolean 'start enabled' variable")
    method: str | None = Field(default=None, description="Node id or browse path of a method taking one boolean")
    method_object: str | None = Field(default=None, description="Object on which the method is called")


class OpcUaConfig(BaseModel):
    """How the agent reaches a machine's OPC UA server."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["opcua"] = Field(description="Connector type")
    endpoint: str = Field(pattern=r"^opc\.tcp://", description="Server endpoint URL, opc.tcp://host:port/path")
    security: OpcUaSecurity = Field(default_factory=OpcUaSecurity, description="Message security and certificates")
    username: str | None = Field(default=None, description="User name; absent = anonymous")
    password_env: str | None = Field(default=None, description="Environment variable holding the password")
    publishing_interval_ms: int = Field(default=500, ge=10, description="Subscription publishing interval")
    register_batch_size: int = Field(default=200, ge=1, description="Monitored items created per request")
    timeout_s: float = Field(default=10.0, gt=0, description="Request timeout")
    watchdog_s: float = Field(
        default=10.0, gt=0,
        description="No publish response (data or keep-alive) for this long = dead session or stopped subscription",
    )
    reconnect_initial_s: float = Field(default=0.5, gt=0, description="First wait before reconnecting")
    reconnect_max_s: float = Field(
        default=3.0, gt=0, description="Longest wait between reconnect attempts (bounds the gap after a server returns)"
    )
    session_timeout_s: float = Field(default=60.0, gt=0, description="Requested OPC UA session timeout")
    identity_nodes: OpcUaIdentityNodes | None = Field(
        default=None, description="Identity node map when the server lacks OPC 40001-1 identification"
    )
    interlock: OpcUaInterlock | None = Field(default=None, description="Start-enable interlock used to block a build")


class OpcUaSource(BaseModel):
    """Where one signal sits on the OPC UA server."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["opcua"] = Field(description="Protocol of the source; taken from connection.type when not written")

    node_id: str | None = Field(
        default=None, description="Node id; prefer 'nsu=<namespace URI>;s=...' so renumbered namespaces still resolve"
    )
    browse_path: str | None = Field(
        default=None,
        description="Browse path from Objects, '/'-separated, each element '<namespace URI>:<BrowseName>' or a plain name",
    )
    sampling_interval_ms: int = Field(default=100, ge=0, description="Server sampling interval")
    queue_size: int = Field(default=10, ge=1, description="Server-side queue of value changes")
    deadband: float | None = Field(default=None, ge=0, description="Absolute deadband; absent = every change")

    @model_validator(mode="after")
    def _one_address(self) -> "OpcUaSource":
        if (self.node_id is None) == (self.browse_path is None):
            raise ValueError("give exactly one of node_id or browse_path")
        return self
