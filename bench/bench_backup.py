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


def run_backend(name: str, url: str, fresh_url: str, work: Path, devices: int, per_job: int) -> dict:
    """Seed, then time backup, verify and restore on one backend."""
    env = _env(url, work / f"files-{name}")
    subprocess.run([sys.executable, "-m", "server.cli", "migrate"], cwd=ROOT, env=env, check=True, capture_output=True)
    port = localstack.free_port()
    proc = start_server(env, port, work / f"server-{name}.log", 1)
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
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    dest = work / f"backup-{name}"
    print(f"[{name}] backup …", flush=True)
    backup_s = _timed(["backup", str(dest)], env)
    print(f"[{name}] backup verify …", flush=True)
    verify_s = _timed(["backup", "verify", str(dest)], env)
    print(f"[{name}] restore into an empty database …", flush=True)
    restore_s = _timed(["restore", str(dest)], _env(fresh_url, work / f"restored-files-{name}"))
    manifest = json.loads((dest / "manifest.json").read_text())
    result = {"backend": name, "devices": made, "seeding_s": seeding_s, "backup_s": backup_s, "verify_s": verify_s,
              "restore_s": restore_s, "backup_bytes": _size(dest), "database_bytes": manifest["database"]["bytes"],
              "audit_entries": manifest["audit_head"]["seq"]}
    print(f"[{name}] {result}", flush=True)
    return result


def main() -> int:
    """Run on each backend, write the JSON and the docs section."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--per-job", type=int, default=100, help="devices per job")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="amtrace-bench-backup-") as tmp:
        work = Path(tmp)
        for name in args.backends.split(","):
            if name == "sqlite":
                runs.append(run_backend(name, f"sqlite:///{work}/live.db", f"sqlite:///{work}/restored.db", work,
                                        args.devices, args.per_job))
                continue
            pg = DurablePostgres(work / "pg").start()
            try:
                pg.create_database("amtrace_live")
                pg.create_database("amtrace_restored")
                runs.append(run_backend(name, pg.dsn("amtrace_live"), pg.dsn("amtrace_restored"), work, args.devices,
                                        args.per_job))
            finally:
                pg.stop()
    result = {"when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S%z"), "per_job": args.per_job,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "runs": runs}
    out = ROOT / "bench" / "results" / "backup.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_docs:
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
