"""Release-gate decisions per second and latency percentiles on loopback, on SQLite and PostgreSQL.

    .venv/bin/python bench/bench_release_gate.py [--rate 200] [--seconds 30] [--repeat 3] [--sweep 50,100,300]
                                                 [--backends sqlite,postgresql]

Starts `amtrace-server serve` on a free 127.0.0.1 port per backend, seeds a qualified machine, an approved
design and a job with 3 devices through the API, then drives POST /api/v1/gate/decisions as the edge agent
with wrk (Debian package `wrk`, installed with apt-get when missing):
  1. fixed rate: 16 keep-alive connections, one per wrk thread, each sending on its own schedule so that
     together they offer --rate requests/s (open loop). A Lua script paces the requests and measures each
     latency from the request's *scheduled* send time, so a stalled server cannot hide its queue
     (coordinated omission; the correction wrk2 makes, which Debian does not package);
  2. saturation: wrk closed loop, 16 connections for 10 s: the most decisions per second.
wrk is C and event-driven: it uses a few per cent of one CPU at 200 req/s, where a Python asyncio client
needed most of a CPU and held the server back on this 2-CPU machine. The server's and wrk's CPU time and
the machine's load average are recorded with each run, because other work on the machine skews latency.
PostgreSQL runs with fsync on (the test fixtures turn it off) and SQLite with synchronous=FULL, so both
make each decision durable before answering.
Results go to bench/results/release_gate.json and the "## Release gate" section of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "deploy" / "local"))

import localstack  # noqa: E402
from benchdoc import replace_section  # noqa: E402 - bench/ is this script's folder

PASSWORD = "bench-password-123"
TODAY = date.today()


def start_server(env: dict[str, str], port: int, log: Path, workers: int) -> subprocess.Popen:
    """amtrace-server serve on 127.0.0.1:port."""
    out = open(log, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--no-access-log",
                             "--workers", str(workers),
                             "--log-level", "warning"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    localstack.wait_for_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
    return proc


def seed(base: str, env: dict[str, str]) -> dict:
    """People, machine, agent, qualified scope, lot, approved design, job: returns the gate request."""
    for role in ("admin", "production_manager", "quality_engineer", "design_engineer", "clinician", "operator"):
        subprocess.run([sys.executable, "-m", "server.cli", "create-user", role.replace("_", "."), "--full-name",
                        f"Bench {role}", "--role", role], cwd=ROOT, env={**env, "AMTRACE_NEW_USER_PASSWORD": PASSWORD},
                       check=True, capture_output=True)
    c = httpx.Client(base_url=base + "/api/v1", timeout=30)

    def h(role):
        r = c.post("/auth/token", data={"username": role.replace("_", "."), "password": PASSWORD})
        r.raise_for_status()
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    H = {r: h(r) for r in ("admin", "production_manager", "quality_engineer", "design_engineer", "clinician",
                           "operator")}

    def call(method, path, role, **kw):
        r = c.request(method, path, headers=role if isinstance(role, dict) else H[role], **kw)
        assert r.status_code < 300, (path, r.text)
        return r.json()

    mid = "bench-m1"
    call("POST", "/machines", "production_manager", json={
        "id": mid, "manufacturer": "EOS", "model": "M 290", "serial_number": "SN-1", "site": "P1", "room": "AM",
        "calibration_due": str(TODAY + timedelta(days=90)), "maintenance_due": str(TODAY + timedelta(days=90))})
    agent = call("POST", "/agents", "admin", json={"name": "bench-agent", "machine_ids": [mid]})
    A = {"Authorization": f"Bearer {agent['token']}"}
    call("POST", f"/agents/machines/{mid}/identity", A, json={
        "manufacturer": "EOS", "model": "M 290", "serial_number": "SN-1", "software_revision": "4.2.1",
        "hardware_revision": "B", "firmware_revision": "1.0", "build_prep_software": "Magics 27"})
    operator_id = call("GET", "/auth/me", "operator")["id"]
    call("POST", f"/users/{operator_id}/machine-authorisations", "production_manager",
         json={"machine_id": mid, "training_reference": "TR-1"})
    scope = call("POST", "/qualification/scopes", "quality_engineer", json={
        "machine_id": mid, "process": "LPBF", "material": "Ti64", "product_family": "cup"})
    req = call("POST", "/qualification/requalifications", "quality_engineer", json={
        "scope_id": scope["id"], "risk_decision": "full", "rationale": "IQ/OQ/PQ", "protocol": "QP-1",
        "valid_until": str(TODAY + timedelta(days=365))})
    call("PUT", f"/qualification/requalifications/{req['id']}/criteria", "quality_engineer", json={"criteria": [
        {"artefact_type": "tensile_bar", "property": "uts_mpa", "min": 860, "unit": "MPa"}]})
    call("POST", f"/qualification/requalifications/{req['id']}/criteria/lock", "quality_engineer")
    call("POST", f"/qualification/requalifications/{req['id']}/artefacts", "quality_engineer", json={
        "artefact_type": "tensile_bar", "label": "TB", "x_mm": 1, "y_mm": 1, "z_mm": 0, "orientation": "Z",
        "property": "uts_mpa", "measured_value": 900, "unit": "MPa"})
    call("POST", f"/qualification/requalifications/{req['id']}/approve", "quality_engineer",
         json={"password": PASSWORD})
    lot = call("POST", "/materials/lots", "production_manager", json={
        "lot_number": "L1", "material": "Ti64", "supplier": "S", "certificate_ref": "C", "lot_type": "virgin",
        "reuse_limit": 5})
    lot = call("POST", f"/materials/lots/{lot['id']}/status", "quality_engineer", json={
        "status": "released", "reason": "incoming inspection", "password": PASSWORD})
    case = call("POST", "/cases", "clinician", json={"institution": "Bench Hospital", "surgery_date": str(TODAY + timedelta(days=30))})
    design = call("POST", f"/cases/{case['id']}/designs", "design_engineer", json={
        "name": "cup", "process": "LPBF", "material": "Ti64", "product_family": "cup",
        "regulatory_category": "patient_matched", "gtin": "09506000134352",
        "intended_use": "bench: release gate only", "anatomical_site": "left acetabulum"})
    it = call("POST", f"/designs/{design['id']}/iterations", "design_engineer",
              data={"software_name": "Mimics", "software_version": "26"},
              files=[("files", ("cup.stl", b"solid cup\nendsolid\n", "model/stl"))])
    for role in ("design_engineer", "clinician"):
        call("POST", f"/designs/iterations/{it['id']}/signatures", role, json={"password": PASSWORD})
    job = call("POST", "/jobs", "production_manager", json={
        "machine_id": mid, "material_lot_id": lot["id"],
        "devices": [{"design_iteration_id": it["id"]} for _ in range(3)]})
    body = {"machine_id": mid, "job_id": job["id"], "build_file_sha256": it["files"][0]["sha256"],
            "operator_id": operator_id}
    # The operator scans the job at the kiosk: only then may the agent name them (valid 30 min, the bench's span).
    call("POST", f"/kiosk/jobs/{job['id']}/presence", "operator")
    check = c.post("/gate/decisions", headers=A, json=body).json()
    assert check["allowed"] is True, check
    c.close()
    return {"headers": A, "body": body, "manager": H["production_manager"], "iteration_id": it["id"],
            "lot_id": lot["id"]}


# wrk script. Paced mode (RATE set): each thread has one connection and sends request k at
# start + k * THREADS / RATE; latency is measured from that scheduled time with a monotonic clock
# (LuaJIT FFI), so time spent waiting behind a slow answer counts. Closed mode: wrk's own timing.
WRK_SCRIPT = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } amt_timespec;
int clock_gettime(int clk_id, amt_timespec *tp);
]]
local ts = ffi.new("amt_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("GATE_TOKEN")
wrk.body = os.getenv("GATE_BODY")

local threads = {}
local next_index = 0
function setup(thread)
  -- thread:set writes a global of the thread's Lua state; a chunk-level `local` of the same name would
  -- shadow it in init() (every thread then had index 0 and all 16 sent at the same instant).
  thread:set("thread_index", next_index)
  next_index = next_index + 1
  table.insert(threads, thread)
end

local rate = tonumber(os.getenv("GATE_RATE") or "0")
local nthreads = tonumber(os.getenv("GATE_THREADS") or "1")
local interval, start, k, sent_at
lats, errors, refused, statuses = {}, 0, 0, {}

function init(args)
  if rate > 0 then
    interval = nthreads * 1000000 / rate
    -- threads start staggered within one interval so the offered load is even
    start = now_us() + 200000 + thread_index * interval / nthreads
    k = 0
  end
end

function delay()
  if rate == 0 then return 0 end
  local wait = (start + k * interval - now_us()) / 1000
  if wait < 0 then return 0 end
  return math.floor(wait)
end

function request()
  if rate > 0 then
    sent_at = start + k * interval
    k = k + 1
  end
  return wrk.format()
end

function response(status, headers, body)
  if rate > 0 then lats[#lats + 1] = (now_us() - sent_at) / 1000 end
  if status ~= 200 then
    errors = errors + 1
    statuses[status] = (statuses[status] or 0) + 1
  elseif not string.find(body, '"allowed":true', 1, true) then
    refused = refused + 1
  end
end

function done(summary, latency, requests)
  local out = io.open(os.getenv("GATE_OUT"), "w")
  out:write(string.format('{"requests": %d, "duration_us": %d, "socket_errors": %d, "timeouts": %d',
    summary.requests, summary.duration, summary.errors.connect + summary.errors.read + summary.errors.write,
    summary.errors.timeout))
  out:write(string.format(', "wrk_p50_ms": %.3f, "wrk_p90_ms": %.3f, "wrk_p99_ms": %.3f, "wrk_max_ms": %.3f',
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
  local errs, refs, all, codes = 0, 0, {}, {}
  for _, t in ipairs(threads) do
    errs = errs + t:get("errors")
    refs = refs + t:get("refused")
    for code, n in pairs(t:get("statuses")) do codes[#codes + 1] = string.format('"%s": %d', code, n) end
    for _, v in ipairs(t:get("lats")) do all[#all + 1] = string.format("%.3f", v) end
  end
  out:write(string.format(', "http_errors": %d, "refused": %d, "statuses": {%s}, "paced_latencies_ms": [%s]}',
    errs, refs, table.concat(codes, ", "), table.concat(all, ",")))
  out:close()
end
"""


def ensure_wrk() -> str:
    """Path of wrk, installed from Debian with apt-get when missing."""
    path = shutil.which("wrk")
    if path:
        return path
    print("installing wrk with apt-get …", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], env=env, check=True)
    path = shutil.which("wrk")
    if not path:
        raise SystemExit("wrk is not installed and apt-get could not install it")
    return path


def pct(sorted_ms: list[float], p: float) -> float:
    """The p-th percentile of sorted values (nearest rank)."""
    return round(sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * p / 100))], 2)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of pid and all its descendants (the uvicorn master and its workers)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy so far (all processes)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _wrk_process(wrk: str, work: Path, base: str, req: dict, *, rate: float, seconds: float, connections: int,
                 tag: str = "") -> tuple[subprocess.Popen, Path]:
    """Start one wrk (paced when rate > 0); returns the process and the file its Lua script writes."""
    script = work / "gate.lua"
    script.write_text(WRK_SCRIPT)
    out = work / f"wrk-out{tag}.json"
    threads = connections if rate else min(connections, 2)
    env = {**os.environ, "GATE_TOKEN": req["headers"]["Authorization"].split()[1], "GATE_BODY": json.dumps(req["body"]),
           "GATE_RATE": str(rate or 0), "GATE_THREADS": str(threads), "GATE_OUT": str(out)}
    proc = subprocess.Popen([wrk, "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "--timeout",
                             "30s", "-s", str(script), f"{base}/api/v1/gate/decisions"], env=env,
                            stdout=subprocess.DEVNULL)
    return proc, out


def run_wrk(wrk: str, work: Path, base: str | list[str], req: dict, *, rate: float, seconds: float, connections: int,
            server_pid: int | list[int], db_pid: int | None = None) -> dict:
    """One wrk run (one wrk per base URL, sharing rate and connections, as a load balancer would spread them);
    returns its figures plus CPU used by the server(s), the database, wrk and everything else."""
    bases = [base] if isinstance(base, str) else base
    server_pids = [server_pid] if isinstance(server_pid, int) else server_pid
    server_cpu_now = lambda: sum(_cpu_seconds(p) for p in server_pids)  # noqa: E731
    server0, machine0, load0 = server_cpu_now(), _machine_busy_seconds(), os.getloadavg()[0]
    db0 = _cpu_seconds(db_pid) if db_pid else 0.0
    wrk0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = [_wrk_process(wrk, work, b, req, rate=rate / len(bases), seconds=seconds,
                            connections=connections // len(bases), tag=str(i)) for i, b in enumerate(bases)]
    for proc, _ in started:
        if proc.wait() != 0:
            raise RuntimeError(f"wrk exited with {proc.returncode}")
    wrk1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = server_cpu_now() - server0
    machine_cpu = _machine_busy_seconds() - machine0
    wrk_cpu = (wrk1.ru_utime - wrk0.ru_utime) + (wrk1.ru_stime - wrk0.ru_stime)
    db_cpu = _cpu_seconds(db_pid) - db0 if db_pid else 0.0
    parts = [json.loads(out.read_text()) for _, out in started]
    r = {k: sum(p[k] for p in parts) for k in ("requests", "http_errors", "socket_errors", "timeouts", "refused")}
    r["statuses"] = {code: sum(p["statuses"].get(code, 0) for p in parts) for p in parts for code in p["statuses"]}
    elapsed = max(p["duration_us"] for p in parts) / 1e6
    n = r["requests"]
    result = {"requests": n, "achieved_rate": round(n / elapsed, 1), "http_errors": r["http_errors"],
              "statuses": r["statuses"], "socket_errors": r["socket_errors"], "timeouts": r["timeouts"],
              "refused": r["refused"], "instances": len(bases),
              "server_cpu_ms_per_request": round(server_cpu * 1000 / max(n, 1), 2),
              "db_server_cpu_ms_per_request": round(db_cpu * 1000 / max(n, 1), 2),
              "server_cpu_pct": round(100 * server_cpu / elapsed, 1), "db_server_cpu_pct": round(100 * db_cpu / elapsed, 1),
              "wrk_cpu_pct": round(100 * wrk_cpu / elapsed, 1),
              "other_cpu_pct": round(100 * max(0.0, machine_cpu - server_cpu - db_cpu - wrk_cpu) / elapsed, 1),
              "load_average_before": round(load0, 2)}
    if rate:
        lat = sorted(v for p in parts for v in p["paced_latencies_ms"])
        result.update({"target_rate": rate, "connections": connections, "p50_ms": pct(lat, 50),
                       "p90_ms": pct(lat, 90), "p99_ms": pct(lat, 99), "p999_ms": pct(lat, 99.9),
                       "max_ms": round(lat[-1], 2)})
    else:
        # Closed loop: wrk's own percentiles per process; the slower instance's stand for the pair.
        result.update({"clients": connections, "decisions_per_s": result["achieved_rate"],
                       **{f"{k}_ms": round(max(p[f"wrk_{k}_ms"] for p in parts), 2) for k in ("p50", "p90", "p99", "max")}})
    return result


class DurablePostgres(localstack.Postgres):
    """The test fixtures' PostgreSQL, but with fsync on: a benchmark of durable decisions."""

    def command(self) -> list[str]:
        return [("fsync=on" if a == "fsync=off" else a) for a in super().command()]


def run_backend(name: str, url: str, work: Path, rate: float, seconds: float, workers: int,
                connections: int, wrk: str, db_pid: int | None = None, sweep: tuple[float, ...] = (),
                repeat: int = 1) -> dict:
    """Migrate, start, seed, load one backend."""
    env = {**os.environ, "AMTRACE_ENVIRONMENT": "development", "AMTRACE_DATABASE_URL": url, "AMTRACE_FILE_STORE": str(work / "files"),
           "AMTRACE_ARGON2_TIME_COST": "1", "AMTRACE_ARGON2_MEMORY_KIB": "1024", "AMTRACE_ARGON2_PARALLELISM": "1"}
    subprocess.run([sys.executable, "-m", "server.cli", "migrate"], cwd=ROOT, env=env, check=True, capture_output=True)
    port = localstack.free_port()
    proc = start_server(env, port, work / f"server-{name}.log", workers)
    base = f"http://127.0.0.1:{port}"
    try:
        req = seed(base, env)
        # warm-up: connections, statement caches, SQLite pages
        run_wrk(wrk, work, base, req, rate=0, seconds=3, connections=connections, server_pid=proc.pid, db_pid=db_pid)
        repeats = []
        for n in range(repeat):
            print(f"[{name}] fixed rate {rate:g} req/s for {seconds:g} s, {connections} connections "
                  f"(run {n + 1} of {repeat}) …", flush=True)
            repeats.append(run_wrk(wrk, work, base, req, rate=rate, seconds=seconds, connections=connections,
                                   server_pid=proc.pid, db_pid=db_pid))
            print(f"[{name}] {repeats[-1]}", flush=True)
        # The run with the median p99 stands for the backend: one run on a shared 2-CPU machine can be
        # spoilt by someone else's burst (see "other CPU %"), and so can the best one be flattered.
        fixed = sorted(repeats, key=lambda f: f["p99_ms"])[len(repeats) // 2]
        curve = []
        for other_rate in sweep:
            print(f"[{name}] fixed rate {other_rate:g} req/s for 15 s …", flush=True)
            curve.append(run_wrk(wrk, work, base, req, rate=other_rate, seconds=15, connections=connections,
                                 server_pid=proc.pid, db_pid=db_pid))
            print(f"[{name}] {curve[-1]}", flush=True)
        print(f"[{name}] saturation, {connections} closed-loop connections for 10 s …", flush=True)
        sat = run_wrk(wrk, work, base, req, rate=0, seconds=10, connections=connections, server_pid=proc.pid,
                      db_pid=db_pid)
        print(f"[{name}] {sat}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    return {"backend": name, "workers": workers, "fixed_rate": fixed, "fixed_rate_runs": repeats, "sweep": curve,
            "saturation": sat}


def write_docs(result: dict) -> None:
    """Replace (or append) only the '## Release gate' section of docs/benchmarks.md."""
    runs = result["runs"]
    fixed_rows = "\n".join(
        f"| {r['backend']} | {f['achieved_rate']:g} | {f['p50_ms']} | {f['p90_ms']} | {f['p99_ms']} | {f['max_ms']} | "
        f"{f['http_errors'] + f['socket_errors'] + f['timeouts']} | "
        f"{f['server_cpu_ms_per_request'] + f['db_server_cpu_ms_per_request']:.2f} | {f['wrk_cpu_pct']} | "
        f"{f['other_cpu_pct']} | {f['load_average_before']} |"
        for r in runs for f in r.get("fixed_rate_runs", [r["fixed_rate"]]))
    curve_rows = "\n".join(
        f"| {r['backend']} | {f['target_rate']:g} | {f['achieved_rate']:g} | {f['p50_ms']} | {f['p90_ms']} | "
        f"{f['p99_ms']} | {f['max_ms']} | {f['server_cpu_pct']} | {f['db_server_cpu_pct']} | {f['other_cpu_pct']} |"
        for r in runs for f in sorted(r.get("sweep", []) + [r["fixed_rate"]], key=lambda f: f["target_rate"]))
    sat_rows = "\n".join(
        f"| {r['backend']} | {s['decisions_per_s']:g} | {s['p50_ms']} | {s['p99_ms']} | "
        f"{s['http_errors'] + s['socket_errors'] + s['timeouts']} | {s['server_cpu_pct']} | {s['db_server_cpu_pct']} | "
        f"{s['other_cpu_pct']} |"
        for r in runs for s in [r["saturation"]])
    cpus = result["machine"]["cpus"]
    verdict = "; ".join(
        f"{r['backend']}: p99 {r['fixed_rate']['p99_ms']} ms at {r['fixed_rate']['achieved_rate']:g} req/s "
        f"({'met' if r['fixed_rate']['p99_ms'] <= 20 and r['fixed_rate']['achieved_rate'] >= 0.98 * result['rate'] else 'NOT met'})"
        for r in runs)
    capacity = "; ".join(
        f"{r['backend']}: {r['fixed_rate']['server_cpu_ms_per_request'] + r['fixed_rate']['db_server_cpu_ms_per_request']:.1f}"
        f" ms of CPU per decision, so {cpus} idle CPUs could carry at most "
        f"~{1000 * cpus / (r['fixed_rate']['server_cpu_ms_per_request'] + r['fixed_rate']['db_server_cpu_ms_per_request']):.0f}"
        f" decisions/s" for r in runs)
    section = f"""## Release gate

Command: `.venv/bin/python bench/bench_release_gate.py` (results in `bench/results/release_gate.json`, {result['when']}).
`POST /api/v1/gate/decisions` as the edge agent, allowed decision for a job with 3 devices; each decision runs
every check (qualification and time triggers, calibration, maintenance, both design signatures re-verified
against the iteration's recomputed content hash, operator authorisation, lot, case deadline, open
nonconformities), stores the decision with its inputs and appends one hash-chained audit entry, durably
(SQLite `synchronous=FULL`; PostgreSQL with `fsync=on`). `amtrace-server serve --workers {runs[0]['workers']}` on
127.0.0.1, {cpus} CPUs shared with the load tool and with whatever else runs on the machine.

Load tool: `{result['machine']['load_tool']}` (Debian package, installed by the command when missing) with a Lua
script. Fixed rate: {result['connections']} keep-alive connections (one per wrk thread) each send on a schedule
so that together they offer {result['rate']:g} req/s for {result['seconds']:g} s (open loop); latency is taken from each
request's *scheduled* send time with a monotonic clock, so time spent queued behind a slow answer counts
(the coordinated-omission correction of wrk2, which Debian does not package). Saturation: wrk closed loop,
{result['connections']} connections, 10 s. Why wrk and not the earlier Python client: the asyncio/httpx client
needed most of a CPU of this 2-CPU machine at 200 req/s and its connection pool degraded with 1,000 waiting
requests (it "achieved" 21 req/s against a server that could do 82/s); wrk uses {runs[0]['fixed_rate']['wrk_cpu_pct']} % of a CPU.
CPU columns: per cent of one CPU; "other" is everything on the machine except server, database and wrk
(other engineers' test runs share these 2 CPUs), with the 1-minute load average before the run.

Fixed rate, {result['rate']:g} req/s offered, {result.get('repeat', 1)} runs of {result['seconds']:g} s per backend (one after the other, same server):

| backend | achieved req/s | p50 ms | p90 ms | p99 ms | max ms | errors | CPU ms/decision (server + database) | wrk CPU % | other CPU % | load avg |
|---|---|---|---|---|---|---|---|---|---|---|
{fixed_rows}

Latency against offered load (the row at {result['rate']:g} req/s is the median-p99 run above; the others 15 s each):

| backend | offered req/s | achieved | p50 ms | p90 ms | p99 ms | max ms | server CPU % | database CPU % | other CPU % |
|---|---|---|---|---|---|---|---|---|---|
{curve_rows}

Saturation (closed loop):

| backend | max decisions/s | p50 ms | p99 ms | errors | server CPU % | database CPU % | other CPU % |
|---|---|---|---|---|---|---|---|
{sat_rows}

Target p99 ≤ 20 ms at {result['rate']:g} req/s (median p99 of the runs): {verdict}.
CPU per decision: {capacity}. Latency grows when the CPUs are shared: compare "other CPU %" (other
engineers' work on the same 2 CPUs) between rows before reading a difference as the server's.

**How a decision runs** (since 2026-11-26 11:00; `server/gate/`, `server/db.py`, docs/decisions.md):
1. The endpoint is `async`; pydantic parses the body on the event loop, and the bearer token is pre-checked
   there without the database (a missing or bad token, a role not admitted: 401/403 before any 422).
2. One hop to the gate's own thread (`AMTRACE_GATE_THREADS`, default 1 per process)
   runs authentication, every check and the commit: before, FastAPI moved each request through four
   thread hops (session, authentication, endpoint, session exit) among 40 threads fighting for one GIL.
3. Authentication and the checks read one snapshot (SQLite: a deferred WAL transaction, no write lock).
4. Only the append is serialised: the decision row, its audit entry and the job's release, under SQLite's
   write lock (PostgreSQL: the audit chain's advisory lock). If anything other than a gate decision was
   audited after the snapshot, the decision is re-evaluated under the lock, so no decision rests on
   superseded state (`tests/server/test_gate.py::test_change_between_snapshot_and_append_is_seen`).
5. Server processes queue for SQLite's write turn on an `flock` beside the database, woken at release;
   before, the second worker polled in SQLite's busy handler (sleeps of 1, 2, 5 … 100 ms).
6. uvloop and httptools instead of asyncio's loop and h11.
7. (since 2026-11-26 14:00) PostgreSQL: 12 round trips per decision instead of 22 (one statement for the
   one-row reads, devices joined with their iteration and case, reads and append in one transaction on one
   connection), the decision row inserted before the chain lock, and the lock with the head/staleness read
   in one psycopg pipeline: under the lock only that round trip, the audit INSERT and COMMIT.
8. No sequential scans as the chain grows: the staleness check is a scalar subquery in `seq` order (an
   `EXISTS` was planned as a scan of the whole chain per decision), and signatures are indexed by record.
9. Served processes freeze their start-up objects for the GC (full collections stalled a worker 76-117 ms)
   and switch the GIL every 1 ms instead of 5 ms.
10. A worker with 3 or more decisions in flight answers `Connection: close`, so keep-alive connections move
    off a busy worker: uvicorn's workers keep the connections they accept, and 16 connections were split
    16/0 or 12/4 in about a third of the runs before.

Run to run (PostgreSQL, 200 req/s, 30 s each): the three runs above and three more right after them
(`--backends postgresql --sweep ""`: 15.73, 26.10, 11.57 ms, median 15.73) give p99 from 11.6 to 26.1 ms;
4 of 6 runs within 20 ms, both medians within it. With item 10 at 4 in flight instead of 3 (same day,
14:16): 20.1, 25.0, 25.3 ms (median 25.0, not met); without item 10, seconds in about a third of the runs.

Before these changes (same bench, 2026-11-26 09:43, quiet machine): SQLite p99 178 ms at 198 req/s,
saturation 257/s at ~100 % of 200 % CPU (decisions serialised for their whole length); PostgreSQL p99
2.4 s at 188 req/s, saturation 137/s. Those figures were also inflated by a bug in this bench's Lua
script, fixed with these changes: every wrk thread started its schedule at the same instant (a chunk-level
`local` shadowed the thread index), so the "fixed rate" arrived as bursts of 16 requests every 80 ms,
adding ~40 ms at any rate.

Errors under load (the 42-55 failed requests of an earlier run) had one cause on both databases:
connection-pool exhaustion while FastAPI moved a request between threads holding its connection.
`tests/server/test_gate_concurrency.py` sends 60 concurrent requests to a real uvicorn server on both
databases and checks 60 answers, 60 stored decisions, 60 chained audit entries that verify and one job
release.
"""
    replace_section(section)


def run_instances(work: Path, wrk: str, *, instances: int, rates: tuple[float, ...], seconds: float,
                  connections: int, repeat: int) -> dict:
    """N `serve --workers 1` processes on one durable PostgreSQL, one wrk per instance (the load balancer's share)."""
    pg = DurablePostgres(work / "pg").start()
    procs: list[subprocess.Popen] = []
    try:
        pg.create_database("amtrace_instances")
        env = {**os.environ, "AMTRACE_ENVIRONMENT": "development", "AMTRACE_DATABASE_URL": pg.dsn("amtrace_instances"),
               "AMTRACE_FILE_STORE": str(work / "files-instances"), "AMTRACE_ARGON2_TIME_COST": "1",
               "AMTRACE_ARGON2_MEMORY_KIB": "1024", "AMTRACE_ARGON2_PARALLELISM": "1"}
        subprocess.run([sys.executable, "-m", "server.cli", "migrate"], cwd=ROOT, env=env, check=True,
                       capture_output=True)
        ports = [localstack.free_port() for _ in range(instances)]
        procs = [start_server(env, port, work / f"server-instance-{i}.log", 1) for i, port in enumerate(ports)]
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        req = seed(bases[0], env)
        pids = [p.pid for p in procs]
        run_wrk(wrk, work, bases, req, rate=0, seconds=3, connections=connections, server_pid=pids, db_pid=pg.proc.pid)
        by_rate = []
        for rate in rates:
            runs = []
            for n in range(repeat):
                print(f"[{instances} instances] {rate:g} req/s for {seconds:g} s (run {n + 1} of {repeat}) …", flush=True)
                runs.append(run_wrk(wrk, work, bases, req, rate=rate, seconds=seconds, connections=connections,
                                    server_pid=pids, db_pid=pg.proc.pid))
                print(f"[{instances} instances] {runs[-1] | {'paced_latencies_ms': None}}", flush=True)
            by_rate.append({"rate": rate, "runs": runs, "median": sorted(runs, key=lambda f: f["p99_ms"])[len(runs) // 2]})
        print(f"[{instances} instances] saturation, {connections} closed-loop connections for 10 s …", flush=True)
        sat = run_wrk(wrk, work, bases, req, rate=0, seconds=10, connections=connections, server_pid=pids,
                      db_pid=pg.proc.pid)
        # The instances wrote one chain between them: the same check a plant runs daily.
        check = subprocess.run([sys.executable, "-m", "server.cli", "audit", "verify", "--no-record"], cwd=ROOT,
                               env=env, capture_output=True, text=True)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=15)
        pg.stop()
    return {"instances": instances, "by_rate": by_rate, "saturation": sat,
            "audit_verify_exit": check.returncode, "audit_verify": check.stdout.strip().splitlines()[-1]}


def write_instances_docs(result: dict) -> None:
    """The '## Release gate, several server instances' section of docs/benchmarks.md."""
    r = result["result"]
    rows = "\n".join(
        f"| {b['rate']:g} | {f['achieved_rate']:g} | {f['p50_ms']} | {f['p90_ms']} | {f['p99_ms']} | {f['max_ms']} | "
        f"{f['http_errors'] + f['socket_errors'] + f['timeouts']} | {f['server_cpu_pct']} | {f['db_server_cpu_pct']} | "
        f"{f['wrk_cpu_pct']} | {f['other_cpu_pct']} | {'median' if f is b['median'] else ''} |"
        for b in r["by_rate"] for f in b["runs"])
    s = r["saturation"]
    replace_section(f"""## Release gate, several server instances

Command: `.venv/bin/python bench/bench_release_gate.py --instances {r['instances']}` (results in
`bench/results/release_gate_instances.json`, {result['when']}). {r['instances']} `amtrace-server serve --workers 1`
processes on one PostgreSQL (fsync on), as behind a load balancer: one wrk per instance, each offering its share
of the rate on {result['connections'] // r['instances']} connections, latencies merged (from each request's
scheduled send time, as in the section above). All on this {result['machine']['cpus']}-CPU machine: servers,
PostgreSQL and wrk share it, so this measures that instances *work together* on one chain, not that they add
capacity — on separate hosts each instance would have its own CPUs.

| offered req/s | achieved | p50 ms | p90 ms | p99 ms | max ms | errors | servers CPU % | PostgreSQL CPU % | wrk CPU % | other CPU % | |
|---|---|---|---|---|---|---|---|---|---|---|---|
{rows}

Saturation (closed loop, {result['connections']} connections over both): {s['decisions_per_s']:g} decisions/s, p99
{s['p99_ms']} ms, {s['http_errors'] + s['socket_errors'] + s['timeouts']} errors. Afterwards `amtrace-server audit
verify` over the chain both instances wrote: exit {r['audit_verify_exit']} ("{r['audit_verify']}").
""")


def main() -> int:
    """Run the benchmark on each backend, write JSON and the docs section."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=200, help="offered requests per second (fixed rate)")
    ap.add_argument("--seconds", type=float, default=30, help="length of the fixed-rate run")
    ap.add_argument("--connections", type=int, default=16, help="keep-alive connections (as many edge agents)")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--workers", type=int, default=2, help="server worker processes (default 2 = CPUs here)")
    ap.add_argument("--no-docs", action="store_true", help="write only the JSON (for trying settings)")
    ap.add_argument("--instances", type=int, default=1,
                    help="N > 1: N single-worker server processes on one PostgreSQL instead of the per-backend runs")
    ap.add_argument("--instance-rates", default="200,400", help="offered rates for --instances")
    ap.add_argument("--repeat", type=int, default=3, help="fixed-rate runs at --rate; the median p99 is reported")
    ap.add_argument("--sweep", default="50,100,300",
                    help="other offered rates, 15 s each, for the latency-versus-load table ('' for none)")
    args = ap.parse_args()
    sweep = tuple(float(x) for x in args.sweep.split(",") if x.strip())
    wrk = ensure_wrk()
    if args.instances > 1:
        return _main_instances(args, wrk)
    runs = []
    with tempfile.TemporaryDirectory(prefix="amtrace-bench-") as tmp:
        work = Path(tmp)
        for name in args.backends.split(","):
            if name == "sqlite":
                runs.append(run_backend(name, f"sqlite:///{work}/gate.db", work, args.rate, args.seconds,
                                        args.workers, args.connections, wrk, sweep=sweep,
                                        repeat=args.repeat))
            else:
                pg = DurablePostgres(work / "pg").start()
                try:
                    pg.create_database("amtrace_bench")
                    runs.append(run_backend(name, pg.dsn("amtrace_bench"), work, args.rate, args.seconds,
                                            args.workers, args.connections, wrk, db_pid=pg.proc.pid, sweep=sweep,
                                            repeat=args.repeat))
                finally:
                    pg.stop()
    wrk_version = subprocess.run([wrk, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    result = {"when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S%z"), "rate": args.rate,
              "repeat": args.repeat,
              "seconds": args.seconds, "connections": args.connections,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_tool": wrk_version},
              "runs": runs}
    out = ROOT / "bench" / "results" / "release_gate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_docs:
        write_docs(result)
    print(f"wrote {out}" + ("" if args.no_docs else " and docs/benchmarks.md (## Release gate)"))
    return 0


def _main_instances(args: argparse.Namespace, wrk: str) -> int:
    with tempfile.TemporaryDirectory(prefix="amtrace-bench-") as tmp:
        result = run_instances(Path(tmp), wrk, instances=args.instances, seconds=args.seconds,
                               connections=args.connections, repeat=args.repeat,
                               rates=tuple(float(x) for x in args.instance_rates.split(",")))
    wrk_version = subprocess.run([wrk, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    doc = {"when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": args.seconds,
           "connections": args.connections,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_tool": wrk_version},
           "result": result}
    out = ROOT / "bench" / "results" / "release_gate_instances.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    if not args.no_docs:
        write_instances_docs(doc)
    print(f"wrote {out}" + ("" if args.no_docs else " and docs/benchmarks.md (## Release gate, several server instances)"))
    return 0 if result["audit_verify_exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
