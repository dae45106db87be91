"""The local amtrace stack for `make demo`: broker, InfluxDB, simulated machines, the edge agent
(and the server, when present), each on a loopback port, data and logs under var/demo/.

    python deploy/local/stack.py up      start everything, check data flows, print where to look
    python deploy/local/stack.py down    stop everything started by 'up'
    python deploy/local/stack.py status  show what runs
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import localstack  # noqa: E402

VAR = ROOT / "var" / "demo"
STATE = VAR / "stack.json"
BIN = ROOT / ".venv" / "bin"

DEMO_JOBS = {
    # machine id: (job id, device codes). Device codes here are internal serials; the server
    # issues GS1 UDI codes once it runs.
    "lpbf-01": ("JOB-2026-0001", ["AMT-2026-000101", "AMT-2026-000102", "AMT-2026-000103"]),
    "sla-01": ("JOB-2026-0002", ["AMT-2026-000201"]),
    "furnace-01": ("HT-2026-0001", ["AMT-2026-000101", "AMT-2026-000102", "AMT-2026-000103"]),
    "furnace-02": ("HT-2026-0002", ["AMT-2026-000201"]),
    "washer-01": ("WASH-2026-0001", ["AMT-2026-000101", "AMT-2026-000102"]),
    "sterilizer-01": ("STER-2026-0001", ["AMT-2026-000101", "AMT-2026-000102", "AMT-2026-000103"]),
}


def _spawn(name: str, argv: list[str], env: dict | None = None) -> int:
    logs = VAR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True, env={**os.environ, **(env or {})})
    return proc.pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _machine_configs(ports: dict) -> Path:
    """Copy configs/machines into var/demo/machines with the demo's ports filled in."""
    out = VAR / "machines"
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted((ROOT / "configs" / "machines").glob("*.yaml")):
        data = yaml.safe_load(f.read_text())
        conn = data["connection"]
        if conn["type"] == "mqtt":
            conn["host"], conn["port"] = "127.0.0.1", ports["mosquitto"]
        else:
            port = ports.setdefault(f"opcua:{data['id']}", localstack.free_port())
            path = conn["endpoint"].split("/", 3)[3] if conn["endpoint"].count("/") >= 3 else ""
            conn["endpoint"] = f"opc.tcp://127.0.0.1:{port}/{path}"
        if data.get("build_files", {}) and data["build_files"].get("folder"):
            folder = VAR / "build-files" / data["id"]
            folder.mkdir(parents=True, exist_ok=True)
            data["build_files"]["folder"] = str(folder)
        (out / f.name).write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def up(args) -> int:
    """Start the whole stack and check that data reaches InfluxDB."""
    if STATE.exists():
        old = json.loads(STATE.read_text())
        if any(_alive(p) for p in old.get("pids", {}).values()):
            print("amtrace demo is already running; 'make stop' first. Where to look:")
            _print_where(old)
            return 0
    VAR.mkdir(parents=True, exist_ok=True)
    state: dict = {"pids": {}, "ports": {}}

    def step(text):
        print(f"[demo] {text}", flush=True)

    step("starting Mosquitto and InfluxDB on loopback ports")
    mosq = localstack.Mosquitto(VAR / "mosquitto").start()
    influx = localstack.InfluxDB1(VAR / "influxdb").start()
    influx.create_database("amtrace")
    state["pids"].update(mosquitto=mosq.proc.pid, influxdb=influx.proc.pid)
    state["ports"].update(mosquitto=mosq.port, influxdb=influx.port)

    machines_dir = _machine_configs(state["ports"])
    agent_port = localstack.free_port()
    agent_cfg = {
        "id": "demo-edge",
        "machines_dir": str(machines_dir),
        "state_dir": str(VAR / "edge"),
        "influx": {"api": "v1", "url": influx.url, "database": "amtrace"},
        "outbox": {"budget_bytes": 512 * 1024 * 1024},
        "http": {"host": "127.0.0.1", "port": agent_port},
    }
    (VAR / "agent.yaml").write_text(yaml.safe_dump(agent_cfg, sort_keys=False))
    state["ports"]["agent"] = agent_port

    machines = [yaml.safe_load(f.read_text()) for f in sorted(machines_dir.glob("*.yaml"))]
    opcua = [m for m in machines if m["connection"]["type"] == "opcua"]
    step(f"starting {len(opcua)} simulated OPC UA machine(s) and the MQTT machine simulator")
    for m in opcua:
        port = state["ports"][f"opcua:{m['id']}"]
        state["pids"][f"sim-{m['id']}"] = _spawn(
            f"sim-{m['id']}", [str(BIN / "amtrace-edge"), "simulate", "opcua", "--machine", m["id"],
                               "--machines-dir", str(machines_dir), "--port", str(port)])
    state["pids"]["sim-mqtt"] = _spawn(
        "sim-mqtt", [str(BIN / "amtrace-edge"), "simulate", "mqtt", "--port", str(mosq.port),
                     "--machines-dir", str(machines_dir), "--rate", "2"])

    step("starting the edge agent")
    state["pids"]["agent"] = _spawn("agent", [str(BIN / "amtrace-edge"), "run", "-c", str(VAR / "agent.yaml")])
    STATE.write_text(json.dumps(state, indent=1))
    localstack.wait_for_http(f"http://127.0.0.1:{agent_port}/healthz", timeout=30)

    step("assigning demo jobs and device codes to the machines")
    known = {m["id"] for m in machines}
    for machine, (job, devices) in DEMO_JOBS.items():
        if machine in known:
            subprocess.run([str(BIN / "amtrace-edge"), "assign", "-c", str(VAR / "agent.yaml"), machine,
                            "--job", job, *sum((["--device", d] for d in devices), [])], check=True, cwd=ROOT)

    step("waiting for the first points under a device code in InfluxDB")
    deadline = time.monotonic() + 60
    count = 0
    while time.monotonic() < deadline:
        res = influx.query('SELECT count(*) FROM /.*/ WHERE "device" = \'AMT-2026-000101\'', db="amtrace")
        series = res["results"][0].get("series", [])
        count = sum(v for s in series for v in s["values"][0][1:] if isinstance(v, int))
        if count:
            break
        time.sleep(1)
    if not count:
        print("[demo] no data reached InfluxDB within 60 s: see the logs in var/demo/logs/", file=sys.stderr)
        return 1
    state["first_check_values"] = count
    STATE.write_text(json.dumps(state, indent=1))
    _print_where(state)
    return 0


def _print_where(state: dict) -> None:
    p = state["ports"]
    cfg = VAR / "agent.yaml"
    print(f"""
amtrace demo is running (data and logs under {VAR}).

  edge agent status   .venv/bin/amtrace-edge status -c {cfg}
  quarantine          .venv/bin/amtrace-edge quarantine -c {cfg}
  agent metrics       http://127.0.0.1:{p['agent']}/metrics
  InfluxDB (1.x API)  http://127.0.0.1:{p['influxdb']}  database 'amtrace', e.g.
                      curl -G http://127.0.0.1:{p['influxdb']}/query --data-urlencode db=amtrace \\
                        --data-urlencode "q=SELECT * FROM sterilization WHERE device='AMT-2026-000101' ORDER BY time DESC LIMIT 5"
  MQTT broker         127.0.0.1:{p['mosquitto']}  (mosquitto_sub -p {p['mosquitto']} -t 'amtrace/#' -v)
  logs                {VAR / 'logs'}

Stop everything with:  make stop
""")


def down(args) -> int:
    """Stop everything 'up' started (agent first, so it flushes; services last)."""
    if not STATE.exists():
        print("amtrace demo is not running")
        return 0
    state = json.loads(STATE.read_text())
    order = sorted(state["pids"], key=lambda n: (n in ("mosquitto", "influxdb", "server"), n != "agent"))
    for name in order:
        pid = state["pids"][name]
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGTERM)
            except OSError:
                os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not _alive(pid):
                    break
                time.sleep(0.1)
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
            print(f"stopped {name}")
    STATE.unlink()
    return 0


def status(args) -> int:
    """Show which parts of the demo run."""
    if not STATE.exists():
        print("amtrace demo is not running")
        return 0
    state = json.loads(STATE.read_text())
    for name, pid in state["pids"].items():
        print(f"  {name:<20} pid {pid:<8} {'running' if _alive(pid) else 'STOPPED'}")
    _print_where(state)
    return 0


def main() -> int:
    """Command line of the local stack."""
    p = argparse.ArgumentParser(description="The local amtrace demo stack (loopback only).")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="start everything").set_defaults(func=up)
    sub.add_parser("down", help="stop everything").set_defaults(func=down)
    sub.add_parser("status", help="what runs").set_defaults(func=status)
    args = p.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
