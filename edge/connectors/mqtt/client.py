"""The one way amtrace builds a paho client for a machine's broker: identity, TLS, credentials, session.

Used by the telemetry connector and by the build-file topic (edge/buildfiles.py), so TLS checking,
`insecure_skip_verify`, the password from the environment and the persistent session mean the same everywhere."""

from __future__ import annotations

import os
import socket
import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.connectors.base import Backoff, ConnectorError
from edge.connectors.mqtt.config import MqttConfig


def make_client(conn: MqttConfig, client_id: str, *, machine_id: str, manual_ack: bool = False,
                reconnect: bool = False) -> mqtt.Client:
    """A paho client with a persistent session, the connection's TLS and credentials.

    reconnect=False leaves reconnecting to the caller's supervisor; True lets paho's loop reconnect with the
    bounds of base.Backoff (for a side channel that has no state of its own to keep across a loss)."""
    v5 = conn.protocol == "5"
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else False,  # 3.1.1: persistent session
        manual_ack=manual_ack,
        reconnect_on_failure=reconnect,
    )
    if reconnect:
        policy = Backoff()
        client.reconnect_delay_set(min_delay=max(1, round(policy.initial_s)), max_delay=round(policy.maximum_s))
    tls = conn.tls
    if tls is not None:
        try:
            client.tls_set(ca_certs=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (OSError, ssl.SSLError) as e:
            raise ConnectorError(f"machine {machine_id}: TLS files cannot be used: {e}") from None
        if tls.insecure_skip_verify:
            client.tls_insecure_set(True)
    if conn.username:
        password = None
        if conn.password_env:
            password = os.environ.get(conn.password_env)
            if password is None:
                raise ConnectorError(
                    f"machine {machine_id}: environment variable {conn.password_env} "
                    f"(password of MQTT user {conn.username}) is not set")
        client.username_pw_set(conn.username, password)
    return client


def connect_properties(conn: MqttConfig, *, receive_maximum: int | None = None) -> Properties | None:
    """MQTT 5 CONNECT properties: the session outlives the connection by session_expiry_s; None for 3.1.1."""
    if conn.protocol != "5":
        return None
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = conn.session_expiry_s
    if receive_maximum is not None:
        props.ReceiveMaximum = receive_maximum
    return props


def connect_kwargs(conn: MqttConfig, *, receive_maximum: int | None = None) -> dict:
    """Keyword arguments of paho's connect()/connect_async() for this connection (session kept)."""
    props = connect_properties(conn, receive_maximum=receive_maximum)
    kwargs: dict = {"host": conn.host, "port": conn.port, "keepalive": conn.keepalive_s}
    if props is not None:
        kwargs.update(clean_start=False, properties=props)
    return kwargs


def describe_error(e: BaseException, conn: MqttConfig, *, timeout_s: float = 5.0) -> str:
    """A connection error in words an operator can act on."""
    where = f"broker {conn.host}:{conn.port}"
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"{where}: TLS certificate not accepted: {e.verify_message}"
    if isinstance(e, ssl.SSLError):
        return f"{where}: TLS handshake failed: {e.reason or e}"
    if isinstance(e, ConnectionRefusedError):
        return f"{where} is unreachable: connection refused (is the broker running?)"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return f"{where} did not answer within {timeout_s:g} s"
    if isinstance(e, socket.gaierror):
        return f"{where}: host name {conn.host} not found ({e.strerror})"
    if isinstance(e, OSError):
        return f"{where} is unreachable: {e.strerror or e}"
    return f"{where}: {e}"
