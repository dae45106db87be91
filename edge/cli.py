"""`amtrace-edge`: the edge agent and its tools."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

# Modules that add their own subcommands with register(subparsers); one line per module.
COMMAND_MODULES = [
    "edge.validation.cli",
    "edge.connectors.opcua.cli",
]

DEFAULT_CONFIG = "configs/agent.yaml"

# Import name -> distribution, for the edge extra (tests/test_packaging.py keeps the two lists in step). Only
# check-config and protocols work without them (they read configuration files).
EDGE_LIBRARIES = {"paho": "paho-mqtt", "asyncua": "asyncua", "pymodbus": "pymodbus",
                  "influxdb_client": "influxdb-client", "prometheus_client": "prometheus-client", "numpy": "numpy",
                  "stl": "numpy-stl", "trimesh": "trimesh", "defusedxml": "defusedxml", "cryptography": "cryptography"}


def missing_libraries() -> list[str]:
    """Distributions of the edge extra that are not installed."""
    import importlib.util

    return [dist for module, dist in EDGE_LIBRARIES.items() if importlib.util.find_spec(module) is None]


def _load_agent_config(path: str):
    from edge.config import ConfigError, load_agent

    try:
        return load_agent(path)
    except ConfigError as e:
        print(f"amtrace-edge: {e}", file=sys.stderr)
        raise SystemExit(2) from e


def cmd_run(args) -> int:
    """Run the agent until SIGTERM/SIGINT."""
    from edge.agent import EdgeAgent
    from edge.config import ConfigError
    from edge.logs import setup_logging

    cfg = _load_agent_config(args.config)
    setup_logging(json_lines=args.json_logs or cfg.log_json, level=args.log_level)
    try:
        agent = EdgeAgent(cfg)
    except ConfigError as e:
        print(f"amtrace-edge: refusing to start:\n{e}", file=sys.stderr)
        return 2
    asyncio.run(agent.run())
    return 0


def cmd_check_config(args) -> int:
    """Validate machine files (and the agent file) without starting anything."""
    from edge.config import ConfigError, load_machines

    ok = True
    if args.config and Path(args.config).exists():
        _load_agent_config(args.config)
        print(f"{args.config}: ok")
    try:
        for m in load_machines(args.machines_dir):
            print(f"{args.machines_dir}/{m.id}.yaml: ok ({m.kind}, {m.connection.type}, {len(m.signals)} signals)")
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        ok = False
    return 0 if ok else 2


def _api(cfg, method: str, path: str, body: dict | None = None):
    from edge.agent import api_port_path, api_token_path

    host = "[::1]" if cfg.http.host == "::1" else "127.0.0.1"
    port = cfg.http.port
    if port == 0:
        # A free port the agent picked at start and noted in its state folder.
        noted = api_port_path(cfg)
        if not noted.exists():
            raise SystemExit(f"amtrace-edge: http.port is 0 and no port is noted at {noted}; is the agent running?")
        port = int(noted.read_text().strip())
    url = f"http://{host}:{port}{path}"
    token_file = api_token_path(cfg)
    if not token_file.exists():
        raise SystemExit(f"amtrace-edge: no local API token at {token_file}; has the agent ever started?")
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {token_file.read_text().strip()}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - loopback only
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        try:
            detail = json.loads(detail).get("error", detail)  # the agent's own words, not its JSON
        except (ValueError, AttributeError):
            pass
        raise SystemExit(f"amtrace-edge: agent answered {e.code}: {detail}") from e
    except urllib.error.URLError as e:
        raise SystemExit(f"amtrace-edge: the agent is not reachable at {url} ({e.reason}); is it running?") from e


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_status(args) -> int:
    """Show the running agent's status."""
    cfg = _load_agent_config(args.config)
    st = _api(cfg, "GET", "/status")
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    ob = st["outbox"]
    print(f"agent {st['agent']}")
    print(f"  readings in          {st['readings_in']}")
    print(f"  field values stored  {st['field_values_stored']}")
    print(f"  points written       {st['influx'].get('lines_written', '?')}  ({st['influx']['api']} {st['influx']['url']},"
          f" {'connected' if st['influx'].get('connected') else 'NOT CONNECTED'})")
    print(f"  outbox               {ob['lines']} lines waiting, {_fmt_bytes(ob['used_bytes'])} of "
          f"{_fmt_bytes(ob['budget_bytes'])}{'  ** FULL: back-pressure **' if ob['full'] else ''}")
    print(f"  quarantined          {st['quarantined']}")
    print(f"  excursions           {st['excursions']}")
    if st["influx"].get("last_error"):
        print(f"  last write error     {st['influx']['last_error']}")
    for key, c in st.get("open_conditions", {}).items():
        # Lasting problems with their true start, also when it was before a restart of the agent.
        print(f"  OPEN                 {key} since {c['since']}")
    print("  machines:")
    for mid, c in st["connections"].items():
        a = st["assignments"].get(mid)
        job = f"job {a['job']} ({len(a['devices'])} devices)" if a else "no job"
        state = "up" if c["connected"] and not c.get("intake_problem") else (
            "DOWN" if not c["connected"] else "INTAKE STOPPED")
        err = f"  last error: {c['last_error']}" if c.get("last_error") and not c["connected"] else ""
        print(f"    {mid:<16} {c['type']:<6} {state:<5} {job}{err}")
    return 0


class _Entry:
    """A quarantine entry as the local API returns it."""

    def __init__(self, d: dict):
        import base64

        self.__dict__.update(d)
        self.raw = (d["raw_text"].encode() if "raw_text" in d else base64.b64decode(d.get("raw_base64", "")))


def _quarantine_entries(cfg, limit: int) -> tuple[list, int]:
    """Entries from the running agent, or from the outbox file when the agent is stopped."""
    from edge.outbox import Outbox

    try:
        entries = [_Entry(d) for d in _api(cfg, "GET", f"/quarantine?limit={limit}")]
        return entries, _api(cfg, "GET", "/status")["quarantined"]
    except SystemExit as e:
        if "not reachable" not in str(e) and "no local API token" not in str(e):
            raise
    path = Path(cfg.outbox.path) if cfg.outbox.path else Path(cfg.state_dir) / "outbox.sqlite"
    if not path.exists():
        raise SystemExit(f"amtrace-edge: no outbox at {path}")
    outbox = Outbox(path, budget_bytes=cfg.outbox.budget_bytes, fsync=False, read_only=True)
    try:
        return outbox.quarantine_entries(limit=limit), outbox.quarantine_count()
    finally:
        outbox.close()


def cmd_quarantine(args) -> int:
    """List or show quarantined inputs (from the running agent, or the outbox file when stopped)."""
    cfg = _load_agent_config(args.config)
    entries, total = _quarantine_entries(cfg, args.limit if args.id is None else 1000)
    if args.id is not None:
        entries = [e for e in entries if e.id == args.id]
        if not entries:
            print(f"amtrace-edge: no quarantine entry {args.id}", file=sys.stderr)
            return 1
        e = entries[0]
        print(f"id {e.id}  {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(e.time_ns / 1e9))}Z  {e.source}  "
              f"{e.origin}  machine {e.machine_id or '-'}")
        print(f"reason: {e.reason}")
        sys.stdout.flush()
        if args.raw:
            sys.stdout.buffer.write(bytes(e.raw))
        else:
            print(f"raw ({e.size} bytes): {bytes(e.raw)[:2000]!r}")
        return 0
    if args.json:
        from edge.http_api import _entry_json

        print(json.dumps([_entry_json(e) for e in entries], indent=2))
        return 0
    print(f"{total} quarantined input(s)")
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.time_ns / 1e9))
        print(f"  {e.id:>6}  {when}Z  {e.source:<8} {e.origin:<32} {e.reason}")
    return 0


def cmd_assign(args) -> int:
    """Put a job with its device codes on a machine (local assignment through the agent)."""
    cfg = _load_agent_config(args.config)
    body = {"job": args.job, "devices": args.device, "source": "cli"}
    if args.force:
        body.update(force=True, reason=args.reason)
    if args.since:
        try:
            body["start_ns"] = _since_ns(args.since)
        except ValueError as e:
            print(f"amtrace-edge assign: --since: {e}", file=sys.stderr)
            return 2
    a = _api(cfg, "PUT", f"/machines/{args.machine}/assignment", body)
    print(f"machine {a['machine']}: job {a['job']} with {len(a['devices'])} device(s): {', '.join(a['devices'])}")
    return 0


def _since_ns(text: str) -> int:
    """'-30m', '-2h', '-90s' (before now) or an ISO 8601 time with offset, in Unix ns."""
    import re
    from datetime import datetime

    m = re.fullmatch(r"-(\d+(?:\.\d+)?)([smh])", text.strip())
    if m:
        return time.time_ns() - int(float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)] * 1e9)
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"'{text}' is neither -<n>s/m/h nor an ISO 8601 time") from None
    if dt.tzinfo is None:
        raise ValueError(f"'{text}' has no UTC offset (write e.g. 2026-12-04T09:30:00+01:00)")
    return int(dt.timestamp() * 1e6) * 1000


def cmd_release(args) -> int:
    """End the job on a machine."""
    cfg = _load_agent_config(args.config)
    a = _api(cfg, "DELETE", f"/machines/{args.machine}/assignment")
    print(f"machine {args.machine}: " + (f"job {a['job']} ended" if a else "had no job"))
    return 0


def cmd_simulate(args) -> int:
    """Run simulated machines."""
    from edge.connectors.registry import plugin

    return importlib.import_module(plugin(args.protocol).simulator).run(args)


def cmd_protocols(args) -> int:
    """List the protocols this agent speaks (the plugin registry)."""
    from edge.connectors.registry import PLUGINS

    for p in PLUGINS.values():
        print(f"{p.type:<8} {p.summary}" + (f"\n{'':<8} simulator: amtrace-edge simulate {p.type}" if p.simulator else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    p = argparse.ArgumentParser(
        prog="amtrace-edge",
        description="amtrace edge agent: machine data (MQTT, OPC UA, Modbus TCP, cycle-log files) into InfluxDB "
                    "under each device's code, with nothing lost; build-file checks; simulated machines.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def with_config(sp):
        sp.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=f"agent configuration file (default {DEFAULT_CONFIG})")
        return sp

    r = with_config(sub.add_parser("run", help="run the agent until stopped (SIGTERM/Ctrl-C)"))
    r.add_argument("--json-logs", action="store_true", help="one JSON object per log line")
    r.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check-config", help="validate machine configuration files and exit")
    c.add_argument("--machines-dir", default="configs/machines", help="folder of machine YAML files")
    c.add_argument("-c", "--config", default=None, help="also validate this agent configuration file")
    c.set_defaults(func=cmd_check_config)

    s = with_config(sub.add_parser("status", help="show the running agent's counters, outbox and connections"))
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_status)

    q = with_config(sub.add_parser("quarantine", help="list quarantined inputs, or show one with --id"))
    q.add_argument("--id", type=int, help="show this entry")
    q.add_argument("--raw", action="store_true", help="with --id: write the raw bytes to stdout")
    q.add_argument("--limit", type=int, default=100, help="entries to list (newest first)")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=cmd_quarantine)

    a = with_config(sub.add_parser("assign", help="put a job and its device codes on a machine"))
    a.add_argument("machine", help="machine id")
    a.add_argument("--job", required=True, help="job id")
    a.add_argument("--device", action="append", required=True, help="device code (repeat for each device)")
    a.add_argument("--force", action="store_true",
                   help="override the server on a machine whose jobs come from it (needs --reason; recorded)")
    a.add_argument("--reason", help="why the server's job context is overridden (with --force)")
    a.add_argument("--since", help="when the load went in, if earlier than now: --since=-30m, --since=-2h or an "
                                    "ISO 8601 time with offset (data a machine logs after the fact lands under "
                                    "these codes)")
    a.set_defaults(func=cmd_assign)

    rl = with_config(sub.add_parser("release", help="end the job on a machine"))
    rl.add_argument("machine", help="machine id")
    rl.set_defaults(func=cmd_release)

    sub.add_parser("protocols", help="list the machine protocols (connector plugins) this agent speaks"
                   ).set_defaults(func=cmd_protocols)

    from edge.connectors.registry import PLUGINS

    sim = sub.add_parser("simulate", help=f"run simulated machines ({', '.join(p.type for p in PLUGINS.values() if p.simulator)})")
    simsub = sim.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)
    for plugin in PLUGINS.values():
        if not plugin.simulator:
            continue
        sp = simsub.add_parser(plugin.type, help=plugin.summary)
        try:
            importlib.import_module(plugin.simulator).add_arguments(sp)
        except ModuleNotFoundError:
            sp.description = "not available in this install (pip install 'amtrace[edge]')"
        sp.set_defaults(func=cmd_simulate)

    for module in COMMAND_MODULES:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            # Absent from this build, or its library is not installed (main says which extra to install).
            if e.name != module and (e.name or "").split(".")[0] not in EDGE_LIBRARIES:
                raise
            continue
        mod.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the amtrace-edge console script."""
    args = build_parser().parse_args(argv)
    lacking = [] if args.func in (cmd_check_config, cmd_protocols) else missing_libraries()
    if lacking:
        print(f"amtrace-edge: this install lacks the edge's libraries ({', '.join(lacking)}); install them with: "
              f"pip install 'amtrace[edge]'", file=sys.stderr)
        return 3
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into head & co. and cut off: never a success code (for `verify`, 0 means "identical"), but
        # the shell's own code for it (128 + SIGPIPE) and no traceback at interpreter exit.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
