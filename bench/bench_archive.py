"""Size and time of a device archive's time series for a device with many points (issue 19: 1 million).

    .venv/bin/python bench/bench_archive.py [--points 1000000] [--fields 6]

Starts a real InfluxDB 1.x on a free 127.0.0.1 port and writes --points points under one device code (a 10 Hz
build: 6 float fields with noise, an integer layer, a string state, tags device/machine/job), then times what the
release and `dhr verify` do with them, with the server's own code:
- read + seal digest + gzip of the canonical text (`series_digest` with the archive's `GzipSink`): the release's
  read, which now also yields `series.txt.gz`;
- the same read without the gzip sink (what the seal cost before archives), to show what the archive adds;
- checking the archived file (gunzip, SHA-256 of the text against the seal);
- `dhr verify`'s point-by-point comparison of InfluxDB's points with the archive's (after 1 % of them are deleted);
- `dhr export` to line protocol, and the size of that as gzip (the usual alternative archive format).
Results go to bench/results/archive.json and the "## Device archive" section of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import platform
import random
import resource
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "deploy" / "local"))

import localstack  # noqa: E402
from benchdoc import replace_section  # noqa: E402 - bench/ is this script's folder
from server.archive.reading import GzipSink, compare, to_line_protocol  # noqa: E402
from server.history.seal import series_digest  # noqa: E402
from server.timeseries.influx import InfluxQL  # noqa: E402

NS = 1_000_000_000
CODE = "AMT-2026-000001"


def _write(url: str, db: str, points: int, start_ns: int, progress) -> None:
    """Write the points in batches of 20,000 lines (a 10 Hz build: one point per 100 ms)."""
    rng = random.Random(7)
    batch: list[str] = []
    for i in range(points):
        t = start_ns + i * NS // 10
        layer = i // 600
        batch.append(
            f"print_process,device={CODE},job=J1,machine=M1 "
            f"chamber_temp_c={80 + rng.gauss(0, 0.2):.3f},o2_ppm={rng.uniform(200, 900):.1f},"
            f"laser_power_w={370 + rng.gauss(0, 2):.2f},platform_temp_c={80 + rng.gauss(0, 0.1):.3f},"
            f"gas_flow_m3h={rng.uniform(20, 22):.3f},recoater_n={rng.gauss(4, 0.3):.4f},layer={layer}i,"
            f'state="printing" {t}')
        if len(batch) == 20_000 or i == points - 1:
            urllib.request.urlopen(f"{url}/write?db={db}&precision=ns", data="\n".join(batch).encode(),  # noqa: S310
                                   timeout=120).read()
            batch = []
            progress(f"written {i + 1:,} / {points:,} points")


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t, 2)


def run(points: int, work: Path) -> dict:
    """Write, then time each step."""
    influx = localstack.InfluxDB1(work / "influx").start()
    progress = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    try:
        influx.create_database("bench")
        start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=3)
        start_ns = int(start.timestamp()) * NS
        _, write_s = _timed(lambda: _write(influx.url, "bench", points, start_ns, progress))
        end = start + timedelta(seconds=points / 10 + 60)
        with InfluxQL(url=influx.url, database="bench", timeout_s=600) as q:
            progress("seal read without the archive's gzip")
            plain, plain_s = _timed(lambda: series_digest(q, device_code=CODE, start=start, end=end))
            progress("seal read with series.txt.gz")
            sink = GzipSink()
            digest, with_s = _timed(lambda: series_digest(q, device_code=CODE, start=start, end=end, sink=sink))
            blob = sink.value()
            assert digest.sha256 == plain.sha256 and digest.points == points, "the archive changed the digest"
            progress("check series.txt.gz")

            def check():
                text = gzip.decompress(blob)
                assert hashlib.sha256(text).hexdigest() == digest.sha256
                return text.decode()
            text, check_s = _timed(check)
            progress("export as line protocol")
            (lp, export_s) = _timed(lambda: "\n".join(to_line_protocol(text, {"print_process": {
                "tags": ["device", "job", "machine"], "fields": {"layer": "integer", "state": "string"}}})))
            lp_gz = gzip.compress(lp.encode(), compresslevel=6)
            progress("delete 1 % of the points, compare InfluxDB with the archive")
            cut = start + timedelta(seconds=points / 1000)
            influx.query(f"DELETE FROM print_process WHERE time < '{cut.isoformat().replace('+00:00', 'Z')}'", "bench")
            chunks: list[bytes] = []

            def verify():
                now = series_digest(q, device_code=CODE, start=start, end=end, sink=chunks.append)
                return now, compare(text, b"".join(chunks).decode().split("\n"))
            (now, (problems, notes)), compare_s = _timed(verify)
            assert not problems and notes and now.points < points, (problems, notes)
    finally:
        influx.stop()
    return {"points": points, "fields_per_point": 8, "write_s": write_s,
            "seal_read_without_archive_s": plain_s, "seal_read_with_archive_s": with_s,
            "archive_series_bytes": len(blob), "canonical_text_bytes": len(text.encode()),
            "bytes_per_point": round(len(blob) / points, 1),
            "line_protocol_gzip_bytes": len(lp_gz), "line_protocol_bytes": len(lp.encode()),
            "check_archive_s": check_s, "export_line_protocol_s": export_s,
            "verify_compare_after_1pct_deleted_s": compare_s, "verify_note": notes[0][:160],
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=1_000_000, help="points under the device code (default 1,000,000)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as tmp:
        r = run(args.points, Path(tmp))
    r.update(measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
             machine=f"{platform.node()} {platform.machine()}, Python {platform.python_version()}")
    out = ROOT / "bench" / "results" / "archive.json"
    out.write_text(json.dumps(r, indent=1) + "\n")
    mib = 1024 * 1024
    replace_section(f"""## Device archive
`.venv/bin/python bench/bench_archive.py --points {r['points']}` ({r['measured_at']}, {r['machine']}; results in
`bench/results/archive.json`). One device with {r['points']:,} points of 8 fields (a 10 Hz build of
{r['points'] / 36000:.1f} h) in a real InfluxDB 1.x, read with the server's own code.

| step | time |
|---|---|
| seal read (digest) without the archive, as before | {r['seal_read_without_archive_s']} s |
| seal read with `series.txt.gz` (gzip of the exact hashed text) | {r['seal_read_with_archive_s']} s |
| check the archived file (gunzip, SHA-256 against the seal) | {r['check_archive_s']} s |
| `dhr verify` point-by-point comparison, 1 % of the points deleted in InfluxDB | {r['verify_compare_after_1pct_deleted_s']} s |
| `dhr export` to line protocol | {r['export_line_protocol_s']} s |

| format | size |
|---|---|
| `series.txt.gz` (chosen) | {r['archive_series_bytes'] / mib:.1f} MiB ({r['bytes_per_point']} bytes/point) |
| canonical text, uncompressed | {r['canonical_text_bytes'] / mib:.1f} MiB |
| line protocol, gzip level 6 | {r['line_protocol_gzip_bytes'] / mib:.1f} MiB |
| line protocol, uncompressed | {r['line_protocol_bytes'] / mib:.1f} MiB |

Peak RSS of the benchmark process {r['peak_rss_mib']} MiB (not split by step: the seal's read holds every point as Python objects, as it did before archives, and the check and the comparison hold the 214 MiB text and its lines; a streaming check is possible if devices grow past this). `dhr verify`
said: "{r['verify_note']}…". Why this format and not Parquet: docs/decisions.md "Device archives".
""")
    print(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
