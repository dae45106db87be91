"""Security: SignAndEncrypt with certificates and a user name works; each misconfiguration says what is wrong."""

from __future__ import annotations

import pytest

from edge.connectors.opcua.cli import make_certificate, thumbprint
from edge.connectors.opcua.connector import OpcUaConnector
from edge.simulators.opcua import LpbfPrinterSimulator, SimSecurity
from opcua_helpers import machine, until

USERS = {"operator": "s3cret-pw"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Certificates made once for the module: simulator, trusted client, untrusted client, an impostor server."""
    d = tmp_path_factory.mktemp("pki")
    return {
        "server": make_certificate(d, "lpbf-01", uri="urn:amtrace:sim:server:lpbf-01", server=True),
        "impostor": make_certificate(d, "impostor", uri="urn:amtrace:sim:server:lpbf-01", server=True),
        "client": make_certificate(d, "edge-test", uri="urn:amtrace:edge:edge-test"),
        "stranger": make_certificate(d, "stranger", uri="urn:amtrace:edge:stranger"),
    }


def sim_security(pki, endpoints=(("SignAndEncrypt", "Basic256Sha256"),)):
    return SimSecurity(str(pki["server"]["cert_der"]), str(pki["server"]["key"]), list(endpoints),
                       trusted_clients=[str(pki["client"]["cert_der"])])


def secured(endpoint, pki, *, client="client", server_cert="server", mode="SignAndEncrypt", policy="Basic256Sha256",
            username="operator"):
    return machine("lpbf-01", endpoint, username=username, password_env="AMTRACE_TEST_OPCUA_PW", security={
        "mode": mode, "policy": policy,
        "client_certificate": str(pki[client]["cert_der"]), "client_private_key": str(pki[client]["key"]),
        "server_certificate": str(pki[server_cert]["cert_der"]),
    })


async def connect_and_report(cfg, sink, timeout=20.0):
    """Start a connector, wait for either a live subscription or an error; return it stopped."""
    conn = OpcUaConnector(cfg, sink, agent_id="edge-test")
    await conn.start()
    try:
        await until(lambda: conn.state.connected or conn.state.last_error, timeout, "connected or an error")
    finally:
        await conn.stop()
    return conn


@pytest.mark.parametrize("policy", ["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"])
async def test_sign_and_encrypt_with_certificates_and_user_name(pki, port, sink, monkeypatch, policy):
    """The secured session comes up and data flows, for each supported policy."""
    monkeypatch.setenv("AMTRACE_TEST_OPCUA_PW", USERS["operator"])
    async with LpbfPrinterSimulator(port=port, security=sim_security(pki, [("SignAndEncrypt", policy)]),
                                    users=USERS) as sim:
        conn = OpcUaConnector(secured(sim.endpoint, pki, policy=policy), sink, agent_id="edge-test")
        await conn.start()
        try:
            await conn.wait_subscribed(20)
            await until(lambda: sink.readings("chamber_o2"), 10, "first O2 value")
            await sim.set("Chamber.OxygenConcentration", 101.0)
            await until(lambda: [r.value for r in sink.readings("chamber_o2")][-1:] == [101.0], 10, "O2 101")
        finally:
            await conn.stop()
    assert conn.identity["serial_number"] == "SIM-LPBF-0001"


async def test_sign_only_mode(pki, port, sink, monkeypatch):
    """Sign (no encryption) is accepted when the server offers it."""
    monkeypatch.setenv("AMTRACE_TEST_OPCUA_PW", USERS["operator"])
    async with LpbfPrinterSimulator(port=port, security=sim_security(pki, [("Sign", "Basic256Sha256")]),
                                    users=USERS) as sim:
        conn = await connect_and_report(secured(sim.endpoint, pki, mode="Sign"), sink)
    assert conn.state.last_error is None and conn.state.connected


async def test_wrong_password_says_so(pki, port, sink, monkeypatch):
    """A wrong password gives one clear line, not a stack trace, and the connector keeps retrying quietly."""
    monkeypatch.setenv("AMTRACE_TEST_OPCUA_PW", "not-the-password")
    async with LpbfPrinterSimulator(port=port, security=sim_security(pki), users=USERS) as sim:
        conn = await connect_and_report(secured(sim.endpoint, pki), sink)
    assert conn.state.last_error == (f"{sim.endpoint}: login as 'operator' refused: wrong user name or password "
                                     f"(BadUserAccessDenied)")
    assert not conn.state.connected


async def test_client_certificate_not_trusted_by_the_server(pki, port, sink, monkeypatch):
    """The server does not know our certificate: the message says to add it to the server's trusted list."""
    monkeypatch.setenv("AMTRACE_TEST_OPCUA_PW", USERS["operator"])
    async with LpbfPrinterSimulator(port=port, security=sim_security(pki), users=USERS) as sim:
        conn = await connect_and_report(secured(sim.endpoint, pki, client="stranger"), sink)
    assert conn.state.last_error == (
        f"{sim.endpoint}: the server does not trust the client certificate {pki['stranger']['cert_der']}; "
        f"add it to the server's trusted certificates (BadCertificateUntrusted)")


async def test_server_certificate_not_the_trusted_one(pki, port, sink, monkeypatch):
    """The server presents another certificate than the one configured: refused before any credentials are sent."""
    monkeypatch.setenv("AMTRACE_TEST_OPCUA_PW", USERS["operator"])
    async with LpbfPrinterSimulator(port=port, security=sim_security(pki), users=USERS) as sim:
        conn = await connect_and_report(secured(sim.endpoint, pki, server_cert="impostor"), sink)
    presented = thumbprint(pki["server"]["cert_der"].read_bytes())
    trusted = thumbprint(pki["impostor"]["cert_der"].read_bytes())
    assert conn.state.last_error == (
        f"{sim.endpoint}: the server certificate is not trusted: it presents SHA1 {presented} but "
        f"security.server_certificate ({pki['impostor']['cert_der']}) is SHA1 {trusted}")


async def test_wrong_policy_lists_what_the_server_offers(pki, port, sink, monkeypatch):
    """Asking for a policy the server does not offer names the ones it does."""
    monkeypatch.setenv("AMTRACE_TEST_OPCUA_PW", USERS["operator"])
    async with LpbfPrinterSimulator(port=port, security=sim_security(pki), users=USERS) as sim:
        conn = await connect_and_report(secured(sim.endpoint, pki, policy="Aes256_Sha256_RsaPss"), sink)
    assert conn.state.last_error == (
        f"{sim.endpoint}: the server offers no endpoint with security SignAndEncrypt/Aes256_Sha256_RsaPss; "
        f"it offers: SignAndEncrypt/Basic256Sha256")


async def test_security_without_a_trusted_server_certificate_is_refused(pki, port, sink):
    """Trust is explicit: without security.server_certificate the agent does not connect."""
    cfg = machine("lpbf-01", f"opc.tcp://127.0.0.1:{port}/x", security={
        "mode": "SignAndEncrypt", "policy": "Basic256Sha256",
        "client_certificate": str(pki["client"]["cert_der"]), "client_private_key": str(pki["client"]["key"])})
    conn = await connect_and_report(cfg, sink)
    assert conn.state.last_error == (
        f"opc.tcp://127.0.0.1:{port}/x: security mode SignAndEncrypt needs security.server_certificate: the agent "
        f"only trusts a server certificate configured explicitly (fetch it with: opcua fetch-cert "
        f"opc.tcp://127.0.0.1:{port}/x)")


async def test_anonymous_refused_when_server_wants_users(port, sink):
    """No user configured but the server wants one."""
    async with LpbfPrinterSimulator(port=port, users=USERS) as sim:
        conn = await connect_and_report(machine("lpbf-01", sim.endpoint), sink)
    assert conn.state.last_error.startswith(f"{sim.endpoint}: anonymous login refused; configure username and password_env")


def test_make_cert_command(tmp_path, capsys):
    """make-cert writes DER, PEM and a private key readable by asyncua, and refuses to overwrite."""
    from argparse import ArgumentParser

    from edge.connectors.opcua.cli import register

    parser = ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["opcua", "make-cert", "--out", str(tmp_path), "--name", "edge-a", "--days", "30"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "application URI: urn:amtrace:edge:edge-a" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edge-a-cert.der", "edge-a-cert.pem", "edge-a-key.pem"]
    assert (tmp_path / "edge-a-key.pem").stat().st_mode & 0o777 == 0o600
    assert args.func(args) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
