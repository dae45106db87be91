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
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import localstack  # noqa: E402

# AMTRACE_DEMO_DIR: where a demo keeps its data and logs (tests run the demo in a folder of their own).
VAR = Path(os.environ.get("AMTRACE_DEMO_DIR") or ROOT / "var" / "demo")
STATE = VAR / "stack.json"
BIN = ROOT / ".venv" / "bin"

DEMO_PASSWORD = "amtrace-demo-2026"  # demo accounts only; printed at the end of `make demo`
# The MQTT machines the story plays itself (deploy/local/story.py): their cycles start when it loads them.
PLAYED_BY_STORY = ("furnace-01", "washer-01", "sterilizer-01")
# The demo product family's route: each post-processing stage needs a recorded, passing cycle of this process.
DEMO_ROUTES = {"acetabular cup": {"post_processing": ["heat_treatment"], "cleaning": ["cleaning"],
                                  "sterilization": ["steam"]}}
# AMTRACE_DEMO_TEMPO=quick: the same story with shorter programs (tests/deploy/test_demo.py), see story.py.
QUICK = os.environ.get("AMTRACE_DEMO_TEMPO") == "quick"
PRINTER_JOB = ["--job-on-enable", "DEMO-BUILD:12" if QUICK else "DEMO-BUILD:120", "--layer-time",
               "0.25" if QUICK else "0.5", "--o2-excursions", "0"]


def demo_ports() -> dict[str, int | None]:
    """Fixed ports from AMTRACE_DEMO_PORT_BASE (bookmarks survive a restart), or None each: free ports."""
    base = os.environ.get("AMTRACE_DEMO_PORT_BASE")
    if not base:
        return {}
    if not base.isdigit() or not 1024 <= int(base) <= 65000:
        raise SystemExit(f"AMTRACE_DEMO_PORT_BASE={base!r}: give a port number between 1024 and 65000")
    b = int(base)
    return {"server": b, "agent": b + 1, "mosquitto": b + 2, "influxdb": b + 3, "influxdb_rpc": b + 4,
            "next": b + 10}


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


def _machine_configs(ports: dict, first_fixed: int | None = None) -> Path:
    """Copy configs/machines into var/demo/machines with the demo's ports filled in (from first_fixed on, in file
    order, when the demo runs on fixed ports)."""
    out = VAR / "machines"
    out.mkdir(parents=True, exist_ok=True)
    fixed = iter(range(first_fixed, first_fixed + 100)) if first_fixed else None

    def port() -> int:
        return next(fixed) if fixed else localstack.free_port()

    for f in sorted((ROOT / "configs" / "machines").glob("*.yaml")):
        data = yaml.safe_load(f.read_text())
        conn = data["connection"]
        if conn["type"] == "mqtt":
            conn["host"], conn["port"] = "127.0.0.1", ports["mosquitto"]
        elif conn["type"] == "opcua":
            p = ports.setdefault(f"opcua:{data['id']}", port())
            path = conn["endpoint"].split("/", 3)[3] if conn["endpoint"].count("/") >= 3 else ""
            conn["endpoint"] = f"opc.tcp://127.0.0.1:{p}/{path}"
        elif conn["type"] == "folder":
            conn["path"] = str(VAR / "shares" / data["id"])
        elif conn["type"] == "modbus":
            conn["host"], conn["port"] = "127.0.0.1", ports.setdefault(f"modbus:{data['id']}", port())
        if data.get("build_files", {}) and data["build_files"].get("folder"):
            folder = VAR / "build-files" / data["id"]
            folder.mkdir(parents=True, exist_ok=True)
            data["build_files"]["folder"] = str(folder)
        (out / f.name).write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def up(args) -> int:
    """Start the whole stack; on any failure stop what was started and say where the logs are."""
    try:
        return _up(args)
    except BaseException as e:
        print(f"[demo] failed: {type(e).__name__}: {e}\n[demo] logs: {VAR / 'logs'}; stopping what was started",
              file=sys.stderr)
        down(args)
        return 1


def _up(args) -> int:
    """Start the whole stack and check that data reaches InfluxDB."""
    if STATE.exists():
        old = json.loads(STATE.read_text())
        if any(_alive(p) for p in old.get("pids", {}).values()):
            print("amtrace demo is already running; 'make stop' first. Where to look:")
            _print_where(old)
            return 0
    # Each demo starts from empty records and an empty database: it tells the whole story again.
    if VAR.exists():
        import shutil

        shutil.rmtree(VAR)
    VAR.mkdir(parents=True, exist_ok=True)
    state: dict = {"pids": {}, "ports": {}}

    def step(text):
        print(f"[demo] {text}", flush=True)

    fixed = demo_ports()
    step("starting Mosquitto and InfluxDB on loopback ports"
         + (f" (fixed from AMTRACE_DEMO_PORT_BASE={fixed['server']})" if fixed else ""))
    mosq = localstack.Mosquitto(VAR / "mosquitto", port=fixed.get("mosquitto")).start()
    influx = localstack.InfluxDB1(VAR / "influxdb", port=fixed.get("influxdb"))
    if fixed:
        influx.rpc_port = fixed["influxdb_rpc"]
    influx.start()
    influx.create_database("amtrace")
    state["pids"].update(mosquitto=mosq.proc.pid, influxdb=influx.proc.pid)
    state["ports"].update(mosquitto=mosq.port, influxdb=influx.port)
    STATE.write_text(json.dumps(state, indent=1))  # from here on, 'make stop' can stop what runs

    machines_dir = _machine_configs(state["ports"], fixed.get("next"))

    step("starting the amtrace server (SQLite records, keys generated for this demo)")
    server_port = fixed.get("server") or localstack.free_port()
    env_file = VAR / "server.env"
    if not env_file.exists():
        fd = os.open(env_file, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"AMTRACE_SECRET_KEY={secrets.token_urlsafe(48)}\nAMTRACE_AUDIT_KEY={secrets.token_urlsafe(48)}\n")
    server_env = dict(line.split("=", 1) for line in env_file.read_text().split())
    server_env.update(AMTRACE_ENVIRONMENT="production", AMTRACE_DATABASE_URL=f"sqlite:///{VAR}/server.db",
                      AMTRACE_FILE_STORE=str(VAR / "files"), AMTRACE_INFLUX_URL=influx.url,
                      AMTRACE_INFLUX_DATABASE="amtrace", AMTRACE_ROUTES=json.dumps(DEMO_ROUTES, separators=(",", ":")))
    if QUICK:  # tests: light password hashing, the demo's dozens of signatures would cost a minute otherwise
        server_env.update(AMTRACE_ARGON2_TIME_COST="1", AMTRACE_ARGON2_MEMORY_KIB="8", AMTRACE_ARGON2_PARALLELISM="1")
    # Every setting the server CLIs need, for the ready-to-paste commands at the end (keys: owner-only file).
    cli_env = VAR / "server-cli.env"
    fd = os.open(cli_env, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{k}={shlex.quote(v)}\n" for k, v in server_env.items()))
    run_env = {**os.environ, **server_env}
    subprocess.run([str(BIN / "amtrace-server"), "migrate"], check=True, cwd=ROOT, env=run_env)
    subprocess.run([str(BIN / "amtrace-server"), "create-user", "ada.admin", "--full-name", "Ada Admin", "--role",
                    "admin"], check=True, cwd=ROOT, env={**run_env, "AMTRACE_NEW_USER_PASSWORD": DEMO_PASSWORD},
                   stdout=subprocess.DEVNULL)
    state["pids"]["server"] = _spawn("server", [str(BIN / "amtrace-server"), "serve", "--port", str(server_port),
                                                "--no-access-log"], env=server_env)
    state["ports"]["server"] = server_port
    STATE.write_text(json.dumps(state, indent=1))
    server_url = f"http://127.0.0.1:{server_port}"
    localstack.wait_for_http(server_url + "/healthz", timeout=30)
    import seed_demo

    seeded = seed_demo.seed_people_and_machines(server_url, DEMO_PASSWORD, machines_dir)
    agent_port = fixed.get("agent") or localstack.free_port()
    agent_cfg = {
        "id": "demo-edge",
        "machines_dir": str(machines_dir),
        "state_dir": str(VAR / "edge"),
        "influx": {"api": "v1", "url": influx.url, "database": "amtrace"},
        "outbox": {"budget_bytes": 512 * 1024 * 1024},
        "http": {"host": "127.0.0.1", "port": agent_port},
        "server": {"url": server_url, "token_env": "AMTRACE_AGENT_TOKEN"},
    }
    (VAR / "agent.yaml").write_text(yaml.safe_dump(agent_cfg, sort_keys=False))
    state["ports"]["agent"] = agent_port

    machines = [yaml.safe_load(f.read_text()) for f in sorted(machines_dir.glob("*.yaml"))]
    opcua = [m for m in machines if m["connection"]["type"] == "opcua"]
    step(f"starting {len(opcua)} simulated OPC UA machine(s) and the MQTT machine simulator")
    for m in opcua:
        port = state["ports"][f"opcua:{m['id']}"]
        # The printer waits: it builds once the agent enables its start (the release gate allowed the job).
        job_args = PRINTER_JOB if m["kind"].endswith("printer") else ["--job", "HT-DEMO-2"]
        state["pids"][f"sim-{m['id']}"] = _spawn(
            f"sim-{m['id']}", [str(BIN / "amtrace-edge"), "simulate", "opcua", "--machine", m["id"],
                               "--port", str(port), *job_args])
    for m in (m for m in machines if m["connection"]["type"] == "modbus"):
        step(f"starting the simulated Modbus TCP machine {m['id']}")
        state["pids"][f"sim-{m['id']}"] = _spawn(
            f"sim-{m['id']}", [str(BIN / "amtrace-edge"), "simulate", "modbus", "--machine", m["id"],
                               "--machines-dir", str(machines_dir), "--port", str(m["connection"]["port"])])
    continuous = [m["id"] for m in machines if m["connection"]["type"] == "mqtt" and m["id"] not in PLAYED_BY_STORY]
    state["pids"]["sim-mqtt"] = _spawn(
        "sim-mqtt", [str(BIN / "amtrace-edge"), "simulate", "mqtt", "--port", str(mosq.port),
                     "--machines-dir", str(machines_dir), "--rate", "2", *sum((["--machine", i] for i in continuous), [])])

    step("starting the edge agent")
    state["pids"]["agent"] = _spawn("agent", [str(BIN / "amtrace-edge"), "run", "-c", str(VAR / "agent.yaml")],
                                    env={"AMTRACE_AGENT_TOKEN": seeded["agent_token"]})
    STATE.write_text(json.dumps(state, indent=1))
    localstack.wait_for_http(f"http://127.0.0.1:{agent_port}/healthz", timeout=30)

    step("qualifying lpbf-01 on the identity its agent reported; approving a design; creating a job")
    stl = _demo_cup_stl()
    build = seed_demo.seed_build(seeded["api"], machine_id="lpbf-01", stl=stl)
    devices = [d["device_code"] for d in build["job"]["devices"] if d["kind"] == "device"]
    state["devices"] = devices
    step(f"job {build['job']['id']} with devices {', '.join(devices)}: the build file reaches the printer")
    (VAR / "build-files" / "lpbf-01").mkdir(parents=True, exist_ok=True)
    (VAR / "build-files" / "lpbf-01" / "cup.stl").write_bytes(stl)
    time.sleep(3)
    state["job"] = {"id": build["job"]["id"], "machine_id": "lpbf-01"}
    decision = seed_demo.release(seeded["api"], machine_id="lpbf-01", job_id=build["job"]["id"],
                                 sha256=build["iteration"]["files"][0]["sha256"])
    step(f"release gate for job {build['job']['id']}: {'allowed' if decision['allowed'] else 'REFUSED'}"
         + "".join(f"\n         - {r['message']}" for r in decision["reasons"]))
    known = {m["id"] for m in machines}
    for m in (m for m in machines if m["connection"]["type"] == "folder"):
        step(f"{m['id']} drops a CSV cycle log into {m['connection']['path']} every 2 minutes")
        state["pids"][f"sim-{m['id']}"] = _spawn(
            f"sim-{m['id']}", [str(BIN / "amtrace-edge"), "simulate", "folder", "--machine", m["id"],
                               "--machines-dir", str(machines_dir), "--every", "120"])
    STATE.write_text(json.dumps(state, indent=1))
    if all(i in known for i in PLAYED_BY_STORY):
        step("the story goes on in the background: build, furnace, washer, sterilizer, inspection, release, seal "
             f"(about 15 minutes; follow it in {VAR / 'logs' / 'story.log'})")
        state["pids"]["story"] = _spawn("story", [str(BIN / "python"), str(HERE / "story.py")])
        STATE.write_text(json.dumps(state, indent=1))

    step("waiting for the first points under a device code in InfluxDB")
    deadline = time.monotonic() + 60
    count = 0
    while time.monotonic() < deadline:
        res = influx.query(f'SELECT count(*) FROM /lpbf.*/ WHERE "device" = \'{devices[0]}\'', db="amtrace")
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


def _demo_cup_stl() -> bytes:
    """A small closed mesh standing in for the approved implant design."""
    import trimesh

    cup = trimesh.creation.icosphere(subdivisions=3, radius=22.0)
    cup.apply_translation([80, 80, 22])
    return trimesh.exchange.stl.export_stl(cup)


def _print_where(state: dict) -> None:
    p = state["ports"]
    cfg = VAR / "agent.yaml"
    device = (state.get("devices") or ["AMT-…"])[0]
    print(f"""
amtrace demo is running (data and logs under {VAR}).

  kiosk (operator)    http://127.0.0.1:{p.get('server')}/ui/kiosk      badge B-1001, PIN 2468; scan {device}
  dashboard           http://127.0.0.1:{p.get('server')}/ui/dashboard  paula.manager
  quality pages       http://127.0.0.1:{p.get('server')}/ui/quality    quentin.quality
  server API          http://127.0.0.1:{p.get('server')}/docs          (OpenAPI)
                      people: ada.admin, otto.operator, paula.manager, quentin.quality, rita.reviewer,
                      dana.designer, clara.clinician; demo password {DEMO_PASSWORD}
  devices             {', '.join(state.get('devices', []))}

  the story           {VAR / 'logs' / 'story.log'}  (progress; {VAR / 'story.json'} when done)
                      printer builds once the gate allows it → furnace → washer → sterilizer → inspection →
                      release → sealed device history record (about 15 minutes)
  DHR of {device}   http://127.0.0.1:{p.get('server')}/ui/quality  (quentin.quality; search {device})
                      http://127.0.0.1:{p.get('server')}/api/v1/history/devices/{device}/dhr.pdf (with a token)
  server CLIs         set -a; . {VAR / 'server-cli.env'}; set +a
                      .venv/bin/amtrace-server audit verify
                      .venv/bin/amtrace-server dhr verify {device}

  edge agent status   .venv/bin/amtrace-edge status -c {cfg}
  quarantine          .venv/bin/amtrace-edge quarantine -c {cfg}
  agent metrics       http://127.0.0.1:{p['agent']}/metrics
  InfluxDB (1.x API)  http://127.0.0.1:{p['influxdb']}  database 'amtrace', e.g.
                      curl -G http://127.0.0.1:{p['influxdb']}/query --data-urlencode db=amtrace \\
                        --data-urlencode "q=SELECT * FROM lpbf_process WHERE device='{device}' ORDER BY time DESC LIMIT 5"
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
