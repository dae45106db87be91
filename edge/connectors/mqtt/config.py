"""Configuration of an MQTT machine connection and of an MQTT signal source."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class MqttTls(BaseModel):
    """TLS towards the broker."""

    model_config = ConfigDict(extra="forbid")

    ca_file: str | None = Field(default=None, description="CA certificate (PEM) that signed the broker's certificate")
    cert_file: str | None = Field(default=None, description="Client certificate (PEM) for mutual TLS")
    key_file: str | None = Field(default=None, description="Client private key (PEM) for mutual TLS")
    insecure_skip_verify: bool = Field(default=False, description="Do not check the broker's hostname; never in production")


class MqttConfig(BaseModel):
    """How the agent reaches a machine's data on an MQTT broker."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["mqtt"] = Field(description="Connector type")
    host: str = Field(default="127.0.0.1", description="Broker host")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port")
    protocol: Literal["5", "3.1.1"] = Field(default="5", description="MQTT protocol version")
    client_id: str | None = Field(
        default=None,
        description="Fixed client id of the persistent session; default amtrace-<agent id>-<machine id>",
    )
    topic: str = Field(description="Topic the machine publishes its snapshots on (wildcards allowed)")
    qos: Literal[1] = Field(default=1, description="Subscription QoS; 1 so the broker redelivers what was not acknowledged")
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keep-alive in seconds")
    session_expiry_s: int = Field(
        default=7 * 24 * 3600, ge=0,
        description="MQTT 5 session expiry: how long the broker keeps the session and its messages while the agent is away",
    )
    username: str | None = Field(default=None, description="Broker user name")
    password_env: str | None = Field(
        default=None, description="Name of the environment variable holding the password (secrets never sit in files)"
    )
    tls: MqttTls | None = Field(default=None, description="TLS settings; absent = plain TCP (loopback only)")
    max_payload_bytes: int = Field(default=256 * 1024, ge=64, description="Larger payloads are quarantined unread")
    seq_window: int = Field(default=1000, ge=1, description=(
        "How far a message's seq may fall below the last one and still be a redelivery (QoS 1 after a "
        "reconnect). A fall of more than this to a seq of at most this value is a machine restart (it counts "
        "from 0 again); to a higher value, a `seq_backward` event. Neither becomes a gap"))
    max_future_skew_s: float = Field(
        default=300.0, ge=0, description="A timestamp further than this in the future is refused (quarantined)"
    )
    command_topic: str | None = Field(
        default=None, description="Topic on which the agent publishes commands to the machine (e.g. block a build)"
    )


class MqttSource(BaseModel):
    """Where one signal sits in the machine's MQTT payload."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["mqtt"] = Field(description="Protocol of the source; taken from connection.type when not written")

    path: str = Field(
        pattern=r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$",
        description="Dotted path of the value inside the payload's 'values' object, e.g. 'chamber.o2_ppm'",
    )
    topic: str | None = Field(default=None, description="Topic of this signal when it differs from the connection's topic")
