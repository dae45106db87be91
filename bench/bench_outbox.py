"""Outbox and writer throughput: put() with group commit (fsync on and off), drain (take + delete),
bytes on disk per line, and the writer shipping a backlog to a real InfluxDB 1.x.

    .venv/bin/python bench/bench_outbox.py [--blocks 3000] [--dir /path/on/the/target/disk] [--no-influx]

Blocks are what the pipeline stores for one MQTT message: 1 line of 15 float fields, tagged with
machine, job and device code. Results go to bench/results/outbox.json (and are printed)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "deploy" / "local"))

from edge.config import InfluxConfig  # noqa: E402
from edge.lineprotocol import render_line  # noqa: E402
from edge.outbox import Outbox  # noqa: E402

FIELDS = 15
T0 = 1_767_225_600_000_000_000


def make_blocks(n: int, start: int = 0) -> list[tuple[str, int]]:
    """n blocks of one line with FIELDS float fields each, distinct timestamps."""
    out = []
    for i in range(start, start + n):
        line = render_line(
            "process", {"machine": "lpbf-01", "job": "J-2026-0042", "device": f"DC-{i % 12:04d}"},
            {f"f{k}": 100.0 + k + i * 0.001 for k in range(FIELDS)}, T0 + i * 1_000_000,
        )
        out.append((line, 1))
    return out


def bench_put(folder: Path, blocks: list[tuple[str, int]], group: int, fsync: bool) -> dict:
    """Put blocks in groups of `group` (one transaction each); blocks/s, lines/s, latency per put."""
    path = folder / f"put-{group}-{int(fsync)}.sqlite"
    box = Outbox(path, budget_bytes=10**10, fsync=fsync)
    latencies = []
    t0 = time.perf_counter()
    for i in range(0, len(blocks), group):
        t = time.perf_counter()
        box.put(blocks[i:i + group])
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - t0
    s = box.stats()
    payload = sum(len(b[0].encode()) for b in blocks)
    box.close()
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    lat = sorted(latencies)
    return {
        "group_blocks": group, "fsync": fsync, "blocks": len(blocks), "seconds": round(elapsed, 4),
        "blocks_per_s": round(len(blocks) / elapsed), "lines_per_s": round(len(blocks) / elapsed),
        "field_values_per_s": round(len(blocks) * FIELDS / elapsed),
        "put_ms_p50": round(statistics.median(lat) * 1000, 3),
        "put_ms_p99": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 3),
        "used_bytes": s.used_bytes, "payload_bytes": payload,
        "used_per_payload": round(s.used_bytes / payload, 3),
    }


def bench_drain(folder: Path, n: int, batch_lines: int) -> dict:
    """take(batch_lines) + delete() until empty, as the writer does (without the network)."""
    path = folder / "drain.sqlite"
    box = Outbox(path, budget_bytes=10**10, fsync=True)
    blocks = make_blocks(n)
    for i in range(0, n, 200):
        box.put(blocks[i:i + 200])
    file_full = box.stats().file_bytes
    t0 = time.perf_counter()
    batches = 0
    while rows := box.take(batch_lines):
        box.delete([r.id for r in rows])
        batches += 1
    elapsed = time.perf_counter() - t0
    file_after = box.stats().file_bytes
    box.close()
    size_closed = path.stat().st_size
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return {"lines": n, "batch_lines": batch_lines, "batches": batches, "seconds": round(elapsed, 4),
            "lines_per_s": round(n / elapsed), "file_bytes_full": file_full, "file_bytes_drained": file_after,
            "file_bytes_after_close": size_closed}


def bench_writer(folder: Path, n: int) -> dict:
    """Ship an n-line backlog from the outbox to a real InfluxDB 1.x (v1 API, gzip) and verify the count."""
    import localstack

    from edge.writer import InfluxWriter

    svc = localstack.InfluxDB1(folder / "influxdb").start()
    try:
        box = Outbox(folder / "writer.sqlite", budget_bytes=10**10, fsync=True)
        blocks = make_blocks(n)
        for i in range(0, n, 200):
            box.put(blocks[i:i + 200])
        writer = InfluxWriter(InfluxConfig(api="v1", url=svc.url, database="bench"), box, on_event=lambda e: None)
        t0 = time.perf_counter()
        writer.start()
        ok = writer.flush(600)
        elapsed = time.perf_counter() - t0
        writer.stop()
        box.close()
        res = svc.query("SELECT count(f0) FROM process", "bench")["results"][0]
        counted = res["series"][0]["values"][0][1] if "series" in res else 0
        return {"lines": n, "fields_per_line": FIELDS, "batch_lines": 5000, "gzip": True, "flushed": ok,
                "seconds": round(elapsed, 3), "lines_per_s": round(n / elapsed),
                "field_values_per_s": round(n * FIELDS / elapsed), "influx_count": counted, "exact": counted == n,
                "stats": {k: v for k, v in vars(writer.stats).items()}}
    finally:
        svc.stop(kill=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=3000, help="blocks per put scenario")
    ap.add_argument("--dir", default=None, help="folder on the disk to measure (default: a temp folder)")
    ap.add_argument("--no-influx", action="store_true", help="skip the writer-to-InfluxDB part")
    ap.add_argument("--writer-lines", type=int, default=200_000, help="backlog shipped to InfluxDB")
    args = ap.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-outbox-", dir=args.dir))
    blocks = make_blocks(args.blocks)
    results: dict = {
        "what": "edge.outbox.Outbox put/drain and edge.writer.InfluxWriter to InfluxDB 1.x",
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                 "dir": str(folder)},
        "block": {"lines": 1, "fields_per_line": FIELDS, "bytes": len(blocks[0][0].encode())},
        "put": [],
    }
    for fsync in (True, False):
        for group in (1, 50, 100, 200):
            n = blocks if group > 1 else blocks[: min(len(blocks), 500)]
            r = bench_put(folder, n, group, fsync)
            results["put"].append(r)
            print(f"put fsync={'on ' if fsync else 'off'} group={group:>3}: {r['blocks_per_s']:>8} blocks/s "
                  f"{r['field_values_per_s']:>9} values/s  p50 {r['put_ms_p50']} ms  p99 {r['put_ms_p99']} ms  "
                  f"disk/payload {r['used_per_payload']}")
    results["drain"] = bench_drain(folder, 50_000, 5000)
    d = results["drain"]
    print(f"drain take+delete: {d['lines_per_s']} lines/s; file {d['file_bytes_full']} -> {d['file_bytes_drained']}"
          f" bytes (after close {d['file_bytes_after_close']})")
    if not args.no_influx:
        results["writer_v1"] = bench_writer(folder, args.writer_lines)
        w = results["writer_v1"]
        print(f"writer v1 -> InfluxDB 1.x: {w['lines_per_s']} lines/s = {w['field_values_per_s']} values/s, "
              f"count exact: {w['exact']}")
    out = ROOT / "bench" / "results" / "outbox.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
