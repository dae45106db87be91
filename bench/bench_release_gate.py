"""Release-gate decisions per second and latency percentiles on loopback, on SQLite and PostgreSQL.

    .venv/bin/python bench/bench_release_gate.py [--rate 200] [--seconds 20] [--backends sqlite,postgresql]

Starts `amtrace-server serve` (uvicorn, one process) on a free 127.0.0.1 port per backend, seeds a qualified
machine, an approved design and a job through the API, then:
  1. fixed rate: an open-loop client sends POST /api/v1/gate/decisions as the edge agent at --rate req/s
     for --seconds; latency is measured from the *scheduled* send time, so a stalled server cannot hide its
     queueing (the coordinated-omission correction of wrk2);
  2. saturation: 16 closed-loop clients for 10 s give the maximum decisions per second.
Why not wrk: Debian's wrk is closed-loop only (no fixed rate, so "p99 at 200 req/s" cannot be measured) and
wrk2, which has the fixed rate, is not packaged in Debian. The client runs in this process with httpx over
keep-alive connections; the server runs in its own process.
Results go to bench/results/release_gate.json and the "## Release gate" section of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "deploy" / "local"))

import localstack  # noqa: E402

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
    case = call("POST", "/cases", "clinician", json={"patient_ref": "P-BENCH", "clinician": "Dr C",
                                                     "institution": "H", "surgery_date": str(TODAY + timedelta(days=30))})
    design = call("POST", f"/cases/{case['id']}/designs", "design_engineer", json={
        "name": "cup", "process": "LPBF", "material": "Ti64", "product_family": "cup",
        "regulatory_category": "patient_matched", "gtin": "09506000134352"})
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
    check = c.post("/gate/decisions", headers=A, json=body).json()
    assert check["allowed"] is True, check
    c.close()
    return {"headers": A, "body": body}


def pct(sorted_ms: list[float], p: float) -> float:
    return round(sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * p / 100))], 2)


async def fixed_rate(base: str, req: dict, rate: float, seconds: float) -> dict:
    """Open-loop load at `rate` req/s; latency from the scheduled send time."""
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    latencies: list[float] = []
    errors = 0
    timeout = httpx.Timeout(30, pool=None)  # queueing for a connection is part of the measured latency
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as client:
        for _ in range(20):  # warm-up
            await client.post("/api/v1/gate/decisions", headers=req["headers"], json=req["body"])
        n = int(rate * seconds)
        start = time.perf_counter() + 0.05

        async def one(i: int) -> None:
            nonlocal errors
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                r = await client.post("/api/v1/gate/decisions", headers=req["headers"], json=req["body"])
                ok = r.status_code == 200 and r.json()["allowed"]
            except httpx.HTTPError:
                ok = False
            latencies.append((time.perf_counter() - scheduled) * 1000)
            errors += not ok

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - t0
    lat = sorted(latencies)
    return {"target_rate": rate, "requests": n, "errors": errors, "achieved_rate": round(n / elapsed, 1),
            "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90), "p99_ms": pct(lat, 99), "p999_ms": pct(lat, 99.9),
            "max_ms": round(lat[-1], 2)}


async def saturation(base: str, req: dict, clients: int, seconds: float) -> dict:
    """Closed-loop: `clients` concurrent clients as fast as the server answers."""
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=clients), timeout=30) as client:
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                r = await client.post("/api/v1/gate/decisions", headers=req["headers"], json=req["body"])
                r.raise_for_status()
                latencies.append((time.perf_counter() - t) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    lat = sorted(latencies)
    return {"clients": clients, "requests": len(lat), "decisions_per_s": round(len(lat) / elapsed, 1),
            "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)}


def run_backend(name: str, url: str, work: Path, rate: float, seconds: float, workers: int) -> dict:
    """Migrate, start, seed, load one backend."""
    env = {**os.environ, "AMTRACE_DATABASE_URL": url, "AMTRACE_FILE_STORE": str(work / "files"),
           "AMTRACE_ARGON2_TIME_COST": "1", "AMTRACE_ARGON2_MEMORY_KIB": "1024", "AMTRACE_ARGON2_PARALLELISM": "1"}
    subprocess.run([sys.executable, "-m", "server.cli", "migrate"], cwd=ROOT, env=env, check=True, capture_output=True)
    port = localstack.free_port()
    proc = start_server(env, port, work / f"server-{name}.log", workers)
    base = f"http://127.0.0.1:{port}"
    try:
        req = seed(base, env)
        print(f"[{name}] fixed rate {rate:g} req/s for {seconds:g} s …", flush=True)
        fixed = asyncio.run(fixed_rate(base, req, rate, seconds))
        print(f"[{name}] {fixed}", flush=True)
        print(f"[{name}] saturation, 16 clients for 10 s …", flush=True)
        sat = asyncio.run(saturation(base, req, 16, 10))
        print(f"[{name}] {sat}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    return {"backend": name, "workers": workers, "fixed_rate": fixed, "saturation": sat}


def write_docs(result: dict) -> None:
    """Replace (or append) only the '## Release gate' section of docs/benchmarks.md."""
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    rows = "\n".join(
        f"| {r['backend']} | {r['fixed_rate']['achieved_rate']:g} | {r['fixed_rate']['p50_ms']} | "
        f"{r['fixed_rate']['p90_ms']} | {r['fixed_rate']['p99_ms']} | {r['fixed_rate']['max_ms']} | "
        f"{r['fixed_rate']['errors']} | {r['saturation']['decisions_per_s']:g} | {r['saturation']['p99_ms']} |"
        for r in result["runs"])
    verdict = "; ".join(f"{r['backend']}: p99 {r['fixed_rate']['p99_ms']} ms "
                        f"({'met' if r['fixed_rate']['p99_ms'] <= 20 else 'NOT met'})" for r in result["runs"])
    section = f"""## Release gate

Command: `.venv/bin/python bench/bench_release_gate.py` (results in `bench/results/release_gate.json`, {result['when']}).
`POST /api/v1/gate/decisions` as the edge agent, allowed decision for a job with 3 devices; each decision runs
every check (qualification and time triggers, calibration, maintenance, both design signatures re-verified
against the iteration hash, operator authorisation, lot, case deadline, open nonconformities), stores the
decision with its inputs and appends one hash-chained audit entry. `amtrace-server serve --workers {result['runs'][0]['workers']}`
(uvicorn) on 127.0.0.1, {result['machine']['cpus']} CPUs shared with the load client. Fixed rate:
open-loop client at {result['rate']:g} req/s for {result['seconds']:g} s, latency measured from the scheduled
send time (wrk2-style; Debian's wrk cannot hold a fixed rate and wrk2 is not packaged). Saturation: 16
closed-loop clients for 10 s.

| backend | achieved req/s | p50 ms | p90 ms | p99 ms | max ms | errors | max decisions/s | p99 ms at max |
|---|---|---|---|---|---|---|---|---|
{rows}

Target p99 ≤ 20 ms at 200 req/s: {verdict}.
"""
    pattern = re.compile(r"^## Release gate\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> int:
    """Run the benchmark on each backend, write JSON and the docs section."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--workers", type=int, default=2, help="server worker processes (default 2 = CPUs here)")
    args = ap.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="amtrace-bench-") as tmp:
        work = Path(tmp)
        for name in args.backends.split(","):
            if name == "sqlite":
                runs.append(run_backend(name, f"sqlite:///{work}/gate.db", work, args.rate, args.seconds, args.workers))
            else:
                pg = localstack.Postgres(work / "pg").start()
                try:
                    pg.create_database("amtrace_bench")
                    runs.append(run_backend(name, pg.dsn("amtrace_bench"), work, args.rate, args.seconds, args.workers))
                finally:
                    pg.stop()
    result = {"when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S%z"), "rate": args.rate,
              "seconds": args.seconds, "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "runs": runs}
    out = ROOT / "bench" / "results" / "release_gate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    write_docs(result)
    print(f"wrote {out} and docs/benchmarks.md (## Release gate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
