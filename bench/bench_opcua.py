"""OPC UA ingest: sustained value changes per second one agent process takes in end to end, lag, peak memory.

    .venv/bin/python bench/bench_opcua.py [--rate 12000] [--nodes 1000] [--duration 40] [--multi 4 --multi-duration 20]
    .venv/bin/python bench/bench_opcua.py --long        # 300 s single machine + 300 s several machines

Simulated machines (BenchSimulator: `nodes` Double variables changing `rate` times per second in
total, each change with its own source timestamp) run as SEPARATE processes. This process runs
the agent side: OpcUaConnector(s) → Pipeline (render, tag, limits) → Outbox (SQLite WAL, fsync on)
with a drain thread standing in for the InfluxDB writer (take + delete, as on confirmation).
Lag = time the readings are durable in the outbox − their source timestamp (server side).
"Flat" compares the median lag of the first and last fifth of the run. Results go to
bench/results/opcua.json and the "## OPC UA ingest" section of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.assignments import AssignmentBook  # noqa: E402
from edge.config import MachineConfig  # noqa: E402
from edge.connectors.opcua.connector import OpcUaConnector  # noqa: E402
from edge.outbox import Outbox  # noqa: E402
from edge.pipeline import Pipeline  # noqa: E402
from benchdoc import replace_section  # noqa: E402 - bench/ is this script's folder

SECTION = "## OPC UA ingest"


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine_config(machine_id: str, endpoint: str, nodes: int, publishing_ms: int) -> MachineConfig:
    """A machine file for a bench simulator: one float signal per node."""
    return MachineConfig.model_validate({
        "id": machine_id, "kind": "lpbf_printer", "manufacturer": "amtrace", "model": "bench", "serial": machine_id,
        "connection": {"type": "opcua", "endpoint": endpoint, "publishing_interval_ms": publishing_ms,
                       "register_batch_size": 500},
        "signals": [
            {"name": f"s{i:05d}", "measurement": "bench", "field": f"s{i:05d}", "unit": "1",
             "source": {"node_id": f"nsu=urn:amtrace:sim:{machine_id};s={machine_id}.Signals.S{i:05d}",
                        "queue_size": 100, "sampling_interval_ms": 0}}
            for i in range(nodes)
        ],
    })


class MeasuringSink:
    """Wraps the pipeline: after each durable submit, records readings, lag (now − source time)."""

    def __init__(self, inner: Pipeline):
        self.inner = inner
        self.readings = 0
        self.lags_ms: list[float] = []  # one sample per submit: the oldest reading's lag
        self._lock = threading.Lock()

    def submit(self, ingests, *, state=None) -> None:
        self.inner.submit(ingests, state=state)
        now = time.time_ns()
        oldest = min((r.source_ts_ns for i in ingests for r in i.readings if r.source_ts_ns), default=None)
        n = sum(len(i.readings) for i in ingests)
        with self._lock:
            self.readings += n
            if oldest is not None:
                self.lags_ms.append((now - oldest) / 1e6)

    def quarantine(self, **kw) -> None:
        self.inner.quarantine(**kw)

    def event(self, event) -> None:
        self.inner.event(event)

    def __getattr__(self, name):  # conditions and connector state: the pipeline's
        return getattr(self.inner, name)

    def take_lags(self) -> list[float]:
        with self._lock:
            out, self.lags_ms = self.lags_ms, []
            return out


def drain(outbox: Outbox, stop: threading.Event, counter: list[int]) -> None:
    """Stand-in for the InfluxDB writer: take and delete what is stored, as after a confirmed write."""
    while not stop.is_set():
        rows = outbox.take(20_000)
        if not rows:
            time.sleep(0.05)
            continue
        outbox.delete([r.id for r in rows])
        counter[0] += sum(r.lines for r in rows)


def start_simulator(machine_id: str, nodes: int, rate: float, workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    ready = workdir / f"{machine_id}.ready"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.simulators.opcua", "--kind", "bench", "--machine", machine_id,
         "--port", str(port), "--nodes", str(nodes), "--rate", str(rate), "--ready-file", str(ready),
         "--stats-file", str(workdir / f"{machine_id}.stats")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"simulator {machine_id} did not start")
        time.sleep(0.05)
    return proc, ready.read_text()


async def run_phase(name: str, machines: int, rate: float, nodes: int, duration: float, publishing_ms: int,
                    workdir: Path, progress: bool) -> dict:
    """Run `machines` simulators at rate/machines each for `duration` seconds; measure the agent side."""
    sims = [start_simulator(f"bench-{name}-{k:02d}", nodes, rate / machines, workdir) for k in range(machines)]
    try:
        configs = [machine_config(f"bench-{name}-{k:02d}", ep, nodes, publishing_ms) for k, (_, ep) in enumerate(sims)]
        outbox = Outbox(workdir / f"outbox-{name}.sqlite", budget_bytes=20 * 1024**3, fsync=True)
        book = AssignmentBook(workdir / f"assignments-{name}.sqlite")
        sink = MeasuringSink(Pipeline(configs, outbox, book))
        stop, drained = threading.Event(), [0]
        drainer = threading.Thread(target=drain, args=(outbox, stop, drained), daemon=True)
        drainer.start()
        conns = [OpcUaConnector(c, sink, agent_id="bench") for c in configs]
        for c in conns:
            await c.start()
        for c in conns:
            await c.wait_subscribed(60)
        await asyncio.sleep(3)  # initial values and ramp-up are not part of the measurement
        sink.take_lags()
        me = psutil.Process()
        sim_procs = [psutil.Process(p.pid) for p, _ in sims]
        for p in sim_procs:
            p.cpu_percent(None)
        me.cpu_percent(None)
        samples = []
        def published() -> int:
            total = 0
            for k in range(machines):
                try:
                    total += int((workdir / f"bench-{name}-{k:02d}.stats").read_text().split()[1])
                except (OSError, IndexError, ValueError):
                    pass
            return total

        pub0 = published()
        start_n, t0 = sink.readings, time.monotonic()
        last_n, last_t = start_n, t0
        while time.monotonic() - t0 < duration:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            lags = sink.take_lags()
            backlog = sum(c._queue.qsize() for c in conns)
            s = {
                "t_s": round(now - t0, 1),
                "changes_per_s": round((sink.readings - last_n) / (now - last_t)),
                "lag_ms_median": round(statistics.median(lags), 1) if lags else None,
                "lag_ms_max": round(max(lags), 1) if lags else None,
                "backlog_notifications": backlog,
                "rss_mib": round(me.memory_info().rss / 2**20, 1),
            }
            samples.append(s)
            last_n, last_t = sink.readings, now
            if progress:
                print(f"  [{name}] {s['t_s']:6.1f} s  {s['changes_per_s']:7d}/s  lag median {s['lag_ms_median']} ms"
                      f"  max {s['lag_ms_max']} ms  backlog {backlog}  rss {s['rss_mib']} MiB", flush=True)
        elapsed = time.monotonic() - t0
        total = sink.readings - start_n
        produced = published() - pub0  # the servers' own count (file rewritten each second: +-1 s of data)
        agent_cpu = me.cpu_percent(None)
        sim_cpu = sum(p.cpu_percent(None) for p in sim_procs)
        stats = [c.stats.as_dict() for c in conns]
        for c in conns:
            await c.stop()
        stop.set()
        drainer.join(10)
        outbox.close()
    finally:
        for p, _ in sims:
            p.terminate()
        for p, _ in sims:
            p.wait(10)
    fifth = max(1, len(samples) // 5)
    med = [s["lag_ms_median"] for s in samples if s["lag_ms_median"] is not None]
    first, last = statistics.median(med[:fifth]), statistics.median(med[-fifth:])
    return {
        "phase": name, "machines": machines, "nodes_per_machine": nodes, "offered_changes_per_s": rate,
        "publishing_interval_ms": publishing_ms, "duration_s": round(elapsed, 1),
        "ingested": total, "ingested_per_s": round(total / elapsed),
        "servers_produced_per_s": round(produced / elapsed),
        "lag_ms_median_first_fifth": round(first, 1), "lag_ms_median_last_fifth": round(last, 1),
        "lag_ms_p99": round(sorted(med)[int(len(med) * 0.99) - 1], 1) if med else None,
        "lag_flat": last <= max(2 * first, first + 250),
        "max_backlog_notifications": max(s["backlog_notifications"] for s in samples),
        "agent_cpu_percent": round(agent_cpu), "simulators_cpu_percent": round(sim_cpu),
        "reconnects": sum(s["reconnects"] for s in stats), "duplicates_dropped": sum(s["duplicates_dropped"] for s in stats),
        "samples": samples,
    }


def write_docs(result: dict, command: str) -> None:
    rows = []
    for p in result["phases"]:
        rows.append(
            f"| {p['machines']} × {p['nodes_per_machine']} nodes | {p['offered_changes_per_s']:,.0f}/s "
            f"({p['servers_produced_per_s']:,}/s) | "
            f"**{p['ingested_per_s']:,}/s** | {p['duration_s']:.0f} s | {p['lag_ms_median_first_fifth']:.0f} → "
            f"{p['lag_ms_median_last_fifth']:.0f} ms ({'flat' if p['lag_flat'] else 'GROWING'}) | "
            f"{p['lag_ms_p99']:.0f} ms | {p['max_backlog_notifications']} | {p['agent_cpu_percent']}% / "
            f"{p['simulators_cpu_percent']}% |"
        )
    target = 10_000
    kept_up = all(p["ingested_per_s"] >= 0.97 * p["servers_produced_per_s"] and p["lag_flat"] for p in result["phases"])
    reached = [p for p in result["phases"] if p["ingested_per_s"] >= target]
    if kept_up and reached:
        verdict = "**met**"
    elif kept_up:
        verdict = (f"**not shown**: the agent took in everything the servers produced with flat lag, but the "
                   f"simulated servers produced less than {target:,}/s on this shared machine")
    else:
        verdict = "**not met**: the agent fell behind what the servers produced"
    short = [p for p in result["phases"] if p["servers_produced_per_s"] < 0.97 * p["offered_changes_per_s"]]
    limited = "".join(
        f"With {p['machines']} machine(s) the simulated server side produced only {p['servers_produced_per_s']:,}/s "
        f"of the {p['offered_changes_per_s']:,.0f}/s offered (one asyncua server process tops out near 10,000/s "
        f"on a core it shares); the agent took in all of it (backlog ≤ {p['max_backlog_notifications']}). "
        for p in short)
    text = f"""{SECTION}

Command: `{command}` (results in `bench/results/opcua.json`, {result['when']}).
Simulated machines (`BenchSimulator`, asyncua servers) run as separate processes; each change has
its own source timestamp. The agent side in one process: `OpcUaConnector` (one subscription per
machine, monitored items created in batches of 500, publishing interval {result['phases'][0]['publishing_interval_ms']} ms)
→ `Pipeline` (line protocol, tags, limits) → `Outbox` (SQLite WAL, **fsync on**), with a thread
taking and deleting stored rows in place of the InfluxDB writer. Lag = moment the readings are
durable in the outbox − their source timestamp; one sample per submit, medians per second. Machine:
{result['machine']}.

| machines | offered (servers produced) | ingested | run | median lag first → last fifth | p99 of per-second medians | max backlog (notifications) | CPU agent / servers |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Peak RSS of the agent process: **{result['peak_rss_mib']:.0f} MiB** (whole process, Python and asyncua included).
Target (≥ {target:,} value changes/s per agent process with the outbox on, lag flat): {verdict}
({result['duration_note']}; load average at the start {result['loadavg_at_start']}{'' if result.get('long') else '; the issue asks for 5 minutes: `--long`'}).
{limited}
The lag includes up to one publishing interval of server-side queueing, by design of OPC UA
subscriptions. Both processes share the machine's 2 cores, so the servers' CPU is taken from the agent.
"""
    replace_section(text)


async def main_async(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="bench-opcua-", dir=args.dir))
    phases = [await run_phase("single", 1, args.rate, args.nodes, args.duration, args.publishing_ms, workdir, True)]
    if args.multi > 1:
        phases.append(await run_phase("multi", args.multi, args.rate, args.nodes, args.multi_duration,
                                      args.publishing_ms, workdir, True))
    return {"phases": phases, "workdir": str(workdir)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=12_000, help="offered value changes per second (all machines)")
    parser.add_argument("--nodes", type=int, default=1000, help="variables per simulated machine")
    parser.add_argument("--duration", type=float, default=40, help="seconds measured, one machine")
    parser.add_argument("--multi", type=int, default=4, help="machines at once in the second phase (0/1 = skip)")
    parser.add_argument("--multi-duration", type=float, default=20, help="seconds measured, several machines")
    parser.add_argument("--publishing-ms", type=int, default=100, help="subscription publishing interval")
    parser.add_argument("--long", action="store_true", help="300 s per phase (the issue's 5 minutes)")
    parser.add_argument("--dir", help="where the outbox files go (default: temp)")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--docs-only", action="store_true", help="rewrite the docs section from bench/results/opcua.json")
    args = parser.parse_args()
    if args.docs_only:
        result = json.loads((ROOT / "bench" / "results" / "opcua.json").read_text())
        write_docs(result, result.get("command", ".venv/bin/python bench/bench_opcua.py"))
        return 0
    if args.long:
        args.duration = args.multi_duration = 300
    loadavg = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    res = asyncio.run(main_async(args))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": f"{platform.machine()}, {psutil.cpu_count()} cores, Python {platform.python_version()}",
        "peak_rss_mib": round(peak, 1),
        "loadavg_at_start": loadavg,
        "long": args.long,
        "duration_note": f"{args.duration:.0f} s single machine, {args.multi_duration:.0f} s × {args.multi} machines",
        **res,
    }
    result["command"] = " ".join([".venv/bin/python bench/bench_opcua.py", *sys.argv[1:]])
    out = ROOT / "bench" / "results" / "opcua.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    for p in result["phases"]:
        print(f"{p['phase']}: {p['machines']} machine(s), offered {p['offered_changes_per_s']:.0f}/s, ingested "
              f"{p['ingested_per_s']}/s, lag median {p['lag_ms_median_first_fifth']} -> {p['lag_ms_median_last_fifth']} ms "
              f"({'flat' if p['lag_flat'] else 'growing'}), backlog max {p['max_backlog_notifications']}")
    print(f"peak RSS {peak:.0f} MiB; results in {out}")
    if not args.no_docs:
        write_docs(result, result["command"])
    import shutil
    shutil.rmtree(res["workdir"], ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
