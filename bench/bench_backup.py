"""Backup, verify and restore time and size for a database with many devices, on SQLite and PostgreSQL.

    .venv/bin/python bench/bench_backup.py [--devices 10000] [--per-job 100] [--backends sqlite,postgresql]

Starts `amtrace-server serve` on a free 127.0.0.1 port per backend, seeds people, a qualified machine, an approved
design and jobs of --per-job devices through the API (each device with its UDI, each job and its devices sealed in
the audit chain, as in production), then times the three commands a plant runs, as subprocesses:
`amtrace-server backup DEST`, `amtrace-server backup verify DEST` (restore into a scratch database, audit verify;
no device is released here, so no dhr verify — its cost per device is in the "Device history records" section)
and `amtrace-server restore DEST` into an empty database. PostgreSQL runs with fsync on.
Results go to bench/results/backup.json and the "## Backup and restore" section of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "deploy" / "local"))

import localstack  # noqa: E402
from bench_release_gate import DurablePostgres, seed, start_server  # noqa: E402 - bench/ is this script's folder
from benchdoc import replace_section  # noqa: E402


def _env(url: str, files: Path) -> dict[str, str]:
    return {**os.environ, "AMTRACE_ENVIRONMENT": "development", "AMTRACE_DATABASE_URL": url,
            "AMTRACE_FILE_STORE": str(files), "AMTRACE_ARGON2_TIME_COST": "1", "AMTRACE_ARGON2_MEMORY_KIB": "1024",
            "AMTRACE_ARGON2_PARALLELISM": "1"}


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "server.cli", *cmd], cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return round(time.perf_counter() - t, 2)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _backup_under_gate_load(name: str, env: dict, work: Path, base: str, ctx: dict, server_pid: int, rate: float,
                            dest: Path) -> dict:
    """Take the backup while wrk sends `rate` gate decisions/s (paced, 40 s; the backup starts 5 s in)."""
    import threading

    from bench_release_gate import ensure_wrk, run_wrk

    wrk = ensure_wrk()
    print(f"[{name}] {rate:g} gate decisions/s without a backup (baseline, 20 s) …", flush=True)
    base_run = run_wrk(wrk, work, base, {"headers": ctx["headers"], "body": ctx["body"]}, rate=rate, seconds=20,
                       connections=16, server_pid=server_pid)
    out: dict = {}
    load = threading.Thread(target=lambda: out.update(run_wrk(
        wrk, work, base, {"headers": ctx["headers"], "body": ctx["body"]}, rate=rate, seconds=40, connections=16,
        server_pid=server_pid)))
    load.start()
    time.sleep(5)
    print(f"[{name}] backup under {rate:g} gate decisions/s …", flush=True)
    backup_s = _timed(["backup", str(dest)], env)
    load.join()
    errors = out["http_errors"] + out["socket_errors"] + out["timeouts"]
    return {"backup_s": backup_s, "gate_rate": rate, "baseline_achieved_rate": base_run["achieved_rate"],
            "baseline_p50_ms": base_run["p50_ms"], "baseline_p99_ms": base_run["p99_ms"],
            "gate_achieved_rate": out["achieved_rate"],
            "gate_p50_ms": out["p50_ms"], "gate_p99_ms": out["p99_ms"], "gate_errors": errors,
            "gate_decisions_during_run": out["requests"]}


def run_backend(name: str, url: str, fresh_url: str, work: Path, devices: int, per_job: int,
                under_load: float = 0.0) -> dict:
    """Seed, then time backup, verify and restore on one backend (the backup under gate load when asked)."""
    env = _env(url, work / f"files-{name}")
    subprocess.run([sys.executable, "-m", "server.cli", "migrate"], cwd=ROOT, env=env, check=True, capture_output=True)
    port = localstack.free_port()
    # Under load, two worker processes, as the gate bench found a single worker on PostgreSQL below 200 decisions/s.
    proc = start_server(env, port, work / f"server-{name}.log", 2 if under_load else 1)
    base = f"http://127.0.0.1:{port}"
    try:
        ctx = seed(base, env)
        made = 3
        t = time.perf_counter()
        with httpx.Client(base_url=base + "/api/v1", timeout=120, headers=ctx["manager"]) as c:
            while made < devices:
                n = min(per_job, devices - made)
                r = c.post("/jobs", json={"machine_id": ctx["body"]["machine_id"], "material_lot_id": ctx["lot_id"],
                                          "devices": [{"design_iteration_id": ctx["iteration_id"]}] * n})
                r.raise_for_status()
                made += n
                if made % 1000 < per_job:
                    print(f"[{name}] {made:,}/{devices:,} devices", flush=True)
        seeding_s = round(time.perf_counter() - t, 1)
        dest = work / f"backup-{name}"
        loaded = {}
        if under_load:
            loaded = _backup_under_gate_load(name, env, work, base, ctx, proc.pid, under_load, dest)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    if loaded:
        backup_s = loaded["backup_s"]
    else:
        print(f"[{name}] backup …", flush=True)
        backup_s = _timed(["backup", str(dest)], env)
    print(f"[{name}] backup verify …", flush=True)
    verify_s = _timed(["backup", "verify", str(dest)], env)
    print(f"[{name}] restore into an empty database …", flush=True)
    restore_s = _timed(["restore", str(dest)], _env(fresh_url, work / f"restored-files-{name}"))
    manifest = json.loads((dest / "manifest.json").read_text())
    result = {"backend": name, "devices": made, "seeding_s": seeding_s, "backup_s": backup_s, "verify_s": verify_s,
              "restore_s": restore_s, "backup_bytes": _size(dest), "database_bytes": manifest["database"]["bytes"],
              "audit_entries": manifest["audit_head"]["seq"], **{k: v for k, v in loaded.items() if k != "backup_s"}}
    if loaded:
        # The restored chain ends exactly at the head the backup recorded, and verify restored and checked it.
        restored = subprocess.run([sys.executable, "-m", "server.cli", "audit", "verify", "--no-record"], cwd=ROOT,
                                  env=_env(fresh_url, work / f"restored-files-{name}"), capture_output=True, text=True)
        result["restored_audit_verify_exit"] = restored.returncode
    print(f"[{name}] {result}", flush=True)
    return result


def main() -> int:
    """Run on each backend, write the JSON and the docs section."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--per-job", type=int, default=100, help="devices per job")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--no-docs", action="store_true")
    ap.add_argument("--under-load", type=float, default=0.0, metavar="RATE",
                    help="take the backup while wrk sends RATE gate decisions/s to the running server (e.g. 200)")
    args = ap.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="amtrace-bench-backup-") as tmp:
        work = Path(tmp)
        for name in args.backends.split(","):
            if name == "sqlite":
                runs.append(run_backend(name, f"sqlite:///{work}/live.db", f"sqlite:///{work}/restored.db", work,
                                        args.devices, args.per_job, args.under_load))
                continue
            pg = DurablePostgres(work / "pg").start()
            try:
                pg.create_database("amtrace_live")
                pg.create_database("amtrace_restored")
                runs.append(run_backend(name, pg.dsn("amtrace_live"), pg.dsn("amtrace_restored"), work, args.devices,
                                        args.per_job, args.under_load))
            finally:
                pg.stop()
    result = {"when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S%z"), "per_job": args.per_job,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "runs": runs}
    out = ROOT / "bench" / "results" / ("backup_under_load.json" if args.under_load else "backup.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_docs and args.under_load:
        rows = "\n".join(
            f"| {r['backend']} | {r['devices']:,} | {r['backup_s']} | {r['baseline_achieved_rate']} / "
            f"{r['gate_achieved_rate']} | {r['baseline_p50_ms']} / {r['gate_p50_ms']} | "
            f"{r['baseline_p99_ms']} / {r['gate_p99_ms']} | {r['gate_errors']} | {r['verify_s']} | {r['restore_s']} | "
            f"{r['restored_audit_verify_exit']} |" for r in runs)
        replace_section(f"""## Backup under gate load

Command: `.venv/bin/python bench/bench_backup.py --devices {runs[0]['devices']} --under-load {args.under_load:g}`
(results in `bench/results/backup_under_load.json`, {result['when']}, {result['machine']['cpus']} CPUs). The server
keeps running while wrk sends {args.under_load:g} paced gate decisions/s for 40 s (16 connections; latency measured
from each request's scheduled time); `amtrace-server backup DEST` starts 5 s in. Then `backup verify` (restore into
a scratch database, `audit verify`) and `restore` into an empty database, whose `audit verify` exit code is listed.
Gate figures are "baseline / with the backup": the baseline is 20 s at the same rate just before, no backup.
One server with two worker processes; everything (server, database, wrk, backup) shares this machine's CPUs.

| backend | devices | backup s | gate req/s achieved | gate p50 ms | gate p99 ms | gate errors | verify s | restore s | restored audit verify exit |
|---|---|---|---|---|---|---|---|---|---|
{rows}
""")
    elif not args.no_docs:
        rows = "\n".join(
            f"| {r['backend']} | {r['devices']:,} | {r['audit_entries']:,} | {r['database_bytes'] / 2**20:.1f} | "
            f"{r['backup_bytes'] / 2**20:.1f} | {r['backup_s']} | {r['verify_s']} | {r['restore_s']} |" for r in runs)
        replace_section(f"""## Backup and restore

Command: `.venv/bin/python bench/bench_backup.py --devices {runs[0]['devices']}` (results in `bench/results/backup.json`,
{result['when']}, {result['machine']['cpus']} CPUs). Devices seeded through the API in jobs of {args.per_job} (each with its
UDI, sealed in the audit chain); then each command as a plant runs it (a new Python process each, start-up
included): `amtrace-server backup DEST` (SQLite backup API / `pg_dump -Fc`, file store, SHA-256 manifest),
`amtrace-server backup verify DEST` (manifest, restore into a scratch database, `audit verify` of the whole
chain; no released devices here, so no `dhr verify`) and `amtrace-server restore DEST` into an empty database.
These devices have little history each (a job's creation seals its devices in one entry): a year of production
has tens of audit entries per device (stages, signatures, gate decisions), and `verify` grows with the entries
(`audit verify` walks and rehashes every one), backup and restore with the database size.

| backend | devices | audit entries | database MiB | backup MiB | backup s | verify s | restore s |
|---|---|---|---|---|---|---|---|
{rows}
""")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
