"""`amtrace-edge opcua ...`: make a client certificate, fetch a server certificate, browse a server."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import ipaddress
import os
import socket
import sys
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID


def register(subparsers) -> None:
    """Add the `opcua` command group to an argparse subparsers object."""
    opcua = subparsers.add_parser("opcua", help="OPC UA tools: certificates, browsing")
    sub = opcua.add_subparsers(dest="opcua_command", required=True)

    mk = sub.add_parser("make-cert", help="create a self-signed application certificate and private key")
    mk.add_argument("--out", required=True, help="folder to write <name>-cert.der, <name>-cert.pem, <name>-key.pem")
    mk.add_argument("--name", required=True, help="application name (certificate common name, file prefix)")
    mk.add_argument("--uri", help="application URI (default urn:amtrace:edge:<name>); must match the client's")
    mk.add_argument("--days", type=int, default=730, help="validity in days (default 730)")
    mk.add_argument("--hostname", action="append", help="DNS name or IP in the certificate (default this host)")
    mk.add_argument("--server", action="store_true", help="a server certificate (for a simulator) instead of a client one")
    mk.add_argument("--force", action="store_true", help="overwrite existing files")
    mk.set_defaults(func=make_cert_command)

    fc = sub.add_parser("fetch-cert", help="save the certificate a server presents, to trust it explicitly")
    fc.add_argument("endpoint", help="opc.tcp://host:port/path")
    fc.add_argument("--out", required=True, help="file to write (DER)")
    fc.set_defaults(func=fetch_cert_command)

    br = sub.add_parser("browse", help="list the address space with namespace URIs (for writing machine configs)")
    br.add_argument("endpoint", help="opc.tcp://host:port/path")
    br.add_argument("--depth", type=int, default=6, help="levels below Objects (default 6)")
    br.add_argument("--username", help="user name (default anonymous)")
    br.add_argument("--password-env", help="environment variable holding the password")
    br.add_argument("--timeout", type=float, default=10.0, help="request timeout in seconds")
    br.set_defaults(func=browse_command)


def make_certificate(out: Path, name: str, *, uri: str | None = None, days: int = 730,
                     hostnames: list[str] | None = None, server: bool = False, force: bool = False) -> dict[str, Path]:
    """Write a self-signed OPC UA application certificate (DER and PEM) and its RSA key (PEM); return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"cert_der": out / f"{name}-cert.der", "cert_pem": out / f"{name}-cert.pem", "key": out / f"{name}-key.pem"}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not force:
        raise FileExistsError(f"refusing to overwrite {', '.join(existing)} (use --force)")
    uri = uri or f"urn:amtrace:{'sim:server' if server else 'edge'}:{name}"
    hosts = hostnames or [socket.gethostname(), "localhost", "127.0.0.1"]
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    key = cert_gen.generate_private_key()
    usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = cert_gen.generate_self_signed_app_certificate(key, name, {"organizationName": "amtrace"}, sans, usage, days=days)
    paths["key"].write_bytes(cert_gen.dump_private_key_as_pem(key))
    os.chmod(paths["key"], 0o600)
    paths["cert_der"].write_bytes(cert.public_bytes(serialization.Encoding.DER))
    paths["cert_pem"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return paths


def thumbprint(der: bytes) -> str:
    """SHA-1 thumbprint as OPC UA servers list it."""
    return hashlib.sha1(der).hexdigest().upper()


def make_cert_command(args) -> int:
    """Handler of `opcua make-cert`."""
    try:
        paths = make_certificate(Path(args.out), args.name, uri=args.uri, days=args.days,
                                 hostnames=args.hostname, server=args.server, force=args.force)
    except (FileExistsError, OSError) as e:
        print(f"opcua make-cert: {e}", file=sys.stderr)
        return 1
    der = paths["cert_der"].read_bytes()
    uri = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)[0]
    print(f"certificate: {paths['cert_der']} (also {paths['cert_pem'].name})")
    print(f"private key: {paths['key']} (mode 600)")
    print(f"application URI: {uri}")
    print(f"thumbprint: SHA1 {thumbprint(der)}")
    if not args.server:
        print("\nCopy the certificate into the machine's trusted client certificates, then in the machine file:")
        print("  security:\n    mode: SignAndEncrypt\n    policy: Basic256Sha256")
        print(f"    client_certificate: {paths['cert_der']}\n    client_private_key: {paths['key']}")
        print("    server_certificate: <file from: opcua fetch-cert ENDPOINT --out FILE, checked with the machine>")
    return 0


async def _fetch(endpoint: str) -> bytes:
    client = Client(endpoint, timeout=10)
    endpoints = await client.connect_and_get_server_endpoints()
    for ep in endpoints:
        if ep.ServerCertificate:
            from asyncua.client.client import _first_cert_from_chain
            return _first_cert_from_chain(ep.ServerCertificate)
    raise LookupError(f"{endpoint} presents no certificate (it offers only security None)")


def fetch_cert_command(args) -> int:
    """Handler of `opcua fetch-cert`."""
    try:
        der = asyncio.run(_fetch(args.endpoint))
    except LookupError as e:
        print(f"opcua fetch-cert: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        print(f"opcua fetch-cert: cannot get endpoints from {args.endpoint}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    Path(args.out).write_bytes(der)
    cert = x509.load_der_x509_certificate(der)
    print(f"saved {args.out}: {cert.subject.rfc4514_string()}, valid until {cert.not_valid_after_utc:%Y-%m-%d}")
    print(f"thumbprint: SHA1 {thumbprint(der)}  <- compare with the machine's display before trusting it")
    return 0


async def browse(endpoint: str, *, depth: int = 6, username: str | None = None, password: str | None = None,
                 timeout: float = 10.0, write=print) -> None:
    """Print namespaces and the tree under Objects as config-ready browse paths and nsu= node ids."""
    client = Client(endpoint, timeout=timeout)
    if username:
        client.set_user(username)
        if password:
            client.set_password(password)
    async with client:
        nss = await client.get_namespace_array()
        write("namespaces:")
        for i, u in enumerate(nss):
            write(f"  [{i}] {u}")
        write("address space (browse_path  ->  node_id  [class, type]):")

        def element(q: ua.QualifiedName) -> str:
            return f"{nss[q.NamespaceIndex]}:{q.Name}" if q.NamespaceIndex else q.Name

        def nodeid(n: ua.NodeId) -> str:
            s = n.to_string()
            if n.NamespaceIndex:
                s = s.replace(f"ns={n.NamespaceIndex};", f"nsu={nss[n.NamespaceIndex]};", 1)
            return s

        async def walk(node, path: str, level: int):
            if level > depth:
                return
            for c in await node.get_children_descriptions(refs=ua.ObjectIds.HierarchicalReferences):
                if c.NodeId.NamespaceIndex == 0 and level == 1 and c.BrowseName.Name in ("Server", "Aliases"):
                    continue  # the standard Server object is large and the same everywhere
                p = f"{path}/{element(c.BrowseName)}" if path else element(c.BrowseName)
                kind = c.NodeClass.name
                extra = ""
                if c.NodeClass == ua.NodeClass.Variable:
                    try:
                        extra = ", " + (await client.get_node(c.NodeId).read_data_type_as_variant_type()).name
                    except Exception:
                        extra = ""
                write(f"  {'  ' * (level - 1)}{p}  ->  {nodeid(c.NodeId)}  [{kind}{extra}]")
                if c.NodeClass == ua.NodeClass.Object:
                    await walk(client.get_node(c.NodeId), p, level + 1)

        await walk(client.nodes.objects, "", 1)


def browse_command(args) -> int:
    """Handler of `opcua browse`."""
    password = os.environ.get(args.password_env) if args.password_env else None
    try:
        asyncio.run(browse(args.endpoint, depth=args.depth, username=args.username, password=password,
                           timeout=args.timeout))
    except Exception as e:
        print(f"opcua browse: {args.endpoint}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m edge.connectors.opcua ...` until the amtrace-edge CLI wires the group."""
    parser = argparse.ArgumentParser(prog="python -m edge.connectors.opcua")
    sub = parser.add_subparsers(dest="group", required=True)
    register(sub)
    args = parser.parse_args(["opcua", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)
