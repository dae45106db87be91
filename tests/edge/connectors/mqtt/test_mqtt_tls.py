"""TLS towards a real Mosquitto TLS listener: data flows with the right CA; a broker certificate the
agent does not trust is refused with a message that says so."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

import localstack
from edge.connectors.mqtt.connector import MqttConnector
from mqtt_testkit import SqliteSink, good, machine, wait_until


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key, issuer_name: str, issuer_key, *, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    os.chmod(path, 0o644)  # the broker reads them after dropping to user 'mosquitto'
    return str(path)


class TlsMosquitto(localstack.Mosquitto):
    """Mosquitto with its one listener on TLS (broker certificate signed by a test CA)."""

    def command(self):
        cmd = super().command()
        ca_key, srv_key = _key(), _key()
        ca = _cert("amtrace test CA", ca_key, "amtrace test CA", ca_key, ca=True)
        srv = _cert("localhost", srv_key, "amtrace test CA", ca_key, ca=False)
        pem = serialization.Encoding.PEM
        self.ca_file = _write(self.root / "ca.pem", ca.public_bytes(pem))
        cert = _write(self.root / "broker.pem", srv.public_bytes(pem))
        key = _write(self.root / "broker.key", srv_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        conf = self.root / "mosquitto.conf"
        conf.write_text(conf.read_text() + f"cafile {self.ca_file}\ncertfile {cert}\nkeyfile {key}\n")
        return cmd


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    broker = TlsMosquitto(tmp_path_factory.mktemp("tls")).start()
    yield broker
    broker.stop(kill=True)


async def test_readings_flow_over_tls_with_the_trusted_ca(tls_broker, tmp_path):
    t = "test/tls/telemetry"
    sink = SqliteSink(tmp_path / "sink.sqlite")
    conn = MqttConnector(machine(t, tls_broker.port, tls={"ca_file": tls_broker.ca_file}), sink, agent_id="test")
    await conn.start()
    try:
        wait_until(lambda: conn.state.detail.get("subscribed"), what="subscribed over TLS")
        pub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="tls-pub")
        pub.tls_set(ca_certs=tls_broker.ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        pub.connect("127.0.0.1", tls_broker.port)
        pub.loop_start()
        infos = [pub.publish(t, good(i), qos=1) for i in range(20)]
        for info in infos:
            info.wait_for_publish(10)
        pub.loop_stop()
        pub.disconnect()
        wait_until(lambda: sink.count("readings") == 40, what="40 readings over TLS")
    finally:
        await conn.stop()


async def test_an_untrusted_broker_certificate_is_refused_in_words(tls_broker, tmp_path):
    other_ca_key = _key()
    other_ca = _cert("someone else's CA", other_ca_key, "someone else's CA", other_ca_key, ca=True)
    wrong_ca = _write(tmp_path / "other-ca.pem", other_ca.public_bytes(serialization.Encoding.PEM))
    sink = SqliteSink(tmp_path / "sink.sqlite")
    conn = MqttConnector(machine("test/tls2/telemetry", tls_broker.port, tls={"ca_file": wrong_ca}), sink,
                         agent_id="test")
    await conn.start()
    try:
        wait_until(lambda: conn.state.last_error, what="a connection error")
        assert conn.state.connected is False
        assert conn.state.last_error == (f"broker 127.0.0.1:{tls_broker.port}: TLS certificate not accepted: "
                                         "self-signed certificate in certificate chain")
    finally:
        await conn.stop()
