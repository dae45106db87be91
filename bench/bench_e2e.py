"""End-to-end throughput: MQTT → agent (durable outbox, fsync on) → InfluxDB, with the exact-count check,
against the ceiling of InfluxDB ingesting the same line protocol directly.

    .venv/bin/python bench/bench_e2e.py [--machines 20] [--messages 2500] [--signals 15]

Everything runs on this machine on loopback: Mosquitto, InfluxDB 1.x, the agent, publishers.
Writes bench/results/e2e.json and the "## End-to-end ingest" section of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy" / "local"))
sys.path.insert(0, str(ROOT))
import localstack  # noqa: E402

from edge.lineprotocol import render_line  # noqa: E402

T0_MS = 1_767_225_600_000


def machine_cfg(i: int, port: int, n_signals: int) -> dict:
    return {
        "id": f"bench-{i:02d}", "kind": "lpbf_printer", "manufacturer": "Bench", "model": "B", "serial": str(i),
        "connection": {"type": "mqtt", "host": "127.0.0.1", "port": port,
                       "topic": f"amtrace/bench/bench-{i:02d}/telemetry"},
        "signals": [{"name": f"s{k}", "source": {"path": f"group{k % 3}.s{k}"}, "measurement": "bench_process",
                     "field": f"f{k}", "unit": "1", "type": "float",
                     **({"limits": {"warn_high": 1e9}} if k == 0 else {})} for k in range(n_signals)],
    }


def snapshot(i: int, k_signals: int, n: int) -> dict:
    values: dict = {}
    for k in range(k_signals):
        values.setdefault(f"group{k % 3}", {})[f"s{k}"] = round(100.0 + k + n * 0.01 + i, 3)
    return {"ts": T0_MS + n * 10, "seq": n, "values": values}


def publisher(port: int, machines: list[int], messages: int, signals: int, ready, go) -> None:
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    payloads = [(f"amtrace/bench/bench-{i:02d}/telemetry", json.dumps(snapshot(i, signals, n)).encode())
                for n in range(messages) for i in machines]
    ready.set()
    go.wait()
    infos = [c.publish(t, p, qos=1) for t, p in payloads]
    for info in infos:
        info.wait_for_publish(timeout=600)
    c.loop_stop()
    c.disconnect()


def count(influx, db: str) -> int:
    res = influx.query('SELECT count(*) FROM "bench_process"', db=db)
    series = res["results"][0].get("series", [])
    return sum(v for s in series for v in s["values"][0][1:] if isinstance(v, int))


def ceiling(influx, machines: int, messages: int, signals: int) -> dict:
    """InfluxDB ingesting the same line protocol directly: 5,000-line gzip batches, two writers."""
    influx.create_database("ceiling")
    lines = []
    for n in range(messages):
        for i in range(machines):
            s = snapshot(i, signals, n)
            fields = {f"f{k}": s["values"][f"group{k % 3}"][f"s{k}"] for k in range(signals)}
            lines.append(render_line("bench_process", {"machine": f"bench-{i:02d}", "job": "J", "device": f"D{i}"},
                                     fields, s["ts"] * 1_000_000))
    bodies = [gzip.compress("\n".join(lines[j:j + 5000]).encode(), 1) for j in range(0, len(lines), 5000)]

    def post(body):
        req = urllib.request.Request(f"{influx.url}/write?db=ceiling&precision=ns", data=body,
                                     headers={"Content-Encoding": "gzip"})
        urllib.request.urlopen(req, timeout=120).read()

    from concurrent.futures import ThreadPoolExecutor

    t = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(post, bodies))
    elapsed = time.perf_counter() - t
    total = machines * messages * signals
    got = count(influx, "ceiling")
    return {"values": total, "counted": got, "seconds": round(elapsed, 3), "values_per_s": round(total / elapsed)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--machines", type=int, default=20)
    p.add_argument("--messages", type=int, default=2500, help="messages per machine")
    p.add_argument("--signals", type=int, default=15, help="values per message")
    p.add_argument("--publishers", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "e2e.json"))
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="amtrace-bench-"))
    mosq = localstack.Mosquitto(tmp / "mosquitto").start()
    influx = localstack.InfluxDB1(tmp / "influxdb").start()
    agent = None
    try:
        print("ceiling: InfluxDB ingesting the same line protocol directly ...", flush=True)
        ceil = ceiling(influx, args.machines, args.messages, args.signals)
        print(f"  {ceil['values_per_s']:,} values/s ({ceil['counted']:,}/{ceil['values']:,} counted)")

        influx.create_database("bench")
        mdir = tmp / "machines"
        mdir.mkdir()
        for i in range(args.machines):
            (mdir / f"bench-{i:02d}.yaml").write_text(yaml.safe_dump(machine_cfg(i, mosq.port, args.signals)))
        port = localstack.free_port()
        cfg = {"id": "bench-edge", "machines_dir": str(mdir), "state_dir": str(tmp / "state"),
               "influx": {"api": "v1", "url": influx.url, "database": "bench"},
               "outbox": {"fsync": True, "group_commit_ms": 20}, "http": {"port": port}}
        (tmp / "agent.yaml").write_text(yaml.safe_dump(cfg))
        agent = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "-c", str(tmp / "agent.yaml"),
                                  "--log-level", "WARNING"], cwd=ROOT)
        localstack.wait_for_http(f"http://127.0.0.1:{port}/healthz", proc=agent)
        token = (tmp / "state" / "api-token").read_text().strip()
        for i in range(args.machines):
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/machines/bench-{i:02d}/assignment", method="PUT",
                data=json.dumps({"job": f"JOB-{i}", "devices": [f"DEV-{i:02d}-1"], "start_ns": 1}).encode(),
                headers={"Authorization": f"Bearer {token}"})
            urllib.request.urlopen(req).read()
        time.sleep(1.0)  # let every connector subscribe

        groups = [list(range(args.machines))[j::args.publishers] for j in range(args.publishers)]
        ready = [mp.Event() for _ in groups]
        go = mp.Event()
        procs = [mp.Process(target=publisher, args=(mosq.port, g, args.messages, args.signals, r, go))
                 for g, r in zip(groups, ready)]
        for pr in procs:
            pr.start()
        for r in ready:
            r.wait()
        total = args.machines * args.messages * args.signals
        print(f"end to end: {args.machines} machines × {args.messages} messages × {args.signals} values "
              f"= {total:,} values ...", flush=True)
        ps = psutil.Process(agent.pid)
        peak_rss = 0
        t = time.perf_counter()
        go.set()
        got = 0
        last_print = t
        while time.perf_counter() - t < 900:
            peak_rss = max(peak_rss, ps.memory_info().rss)
            got = count(influx, "bench")
            now = time.perf_counter()
            if now - last_print > 5:
                print(f"  {got:,}/{total:,} in InfluxDB after {now - t:.0f} s", flush=True)
                last_print = now
            if got >= total:
                break
            time.sleep(0.2)
        elapsed = time.perf_counter() - t
        for pr in procs:
            pr.join(30)
        time.sleep(1.0)
        final = count(influx, "bench")
        with open(f"/proc/{agent.pid}/status") as f:
            hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB",
            "setup": {"machines": args.machines, "messages_per_machine": args.messages,
                      "values_per_message": args.signals, "publishers": args.publishers,
                      "devices_per_job": 1, "outbox_fsync": True, "influx_api": "v1 (InfluxDB 1.6)"},
            "end_to_end": {"values": total, "counted": final, "exact": final == total,
                           "seconds": round(elapsed, 3), "values_per_s": round(total / elapsed),
                           "agent_peak_rss_mib": round(max(peak_rss, hwm) / 2**20, 1)},
            "ceiling": ceil,
            "ratio_to_ceiling": round((total / elapsed) / ceil["values_per_s"], 3),
            "target_values_per_s": 50_000,
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        e = result["end_to_end"]
        print(f"  {e['values_per_s']:,} values/s end to end, exact count: {e['exact']} ({final:,}/{total:,}), "
              f"{result['ratio_to_ceiling']:.0%} of the ceiling, agent peak RSS {e['agent_peak_rss_mib']} MiB")
        write_summary(result)
        return 0 if e["exact"] else 1
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(30)
        mosq.stop()
        influx.stop()


def write_summary(r: dict) -> None:
    """Replace the '## End-to-end ingest' section of docs/benchmarks.md."""
    e, c = r["end_to_end"], r["ceiling"]
    s = r["setup"]
    section = f"""## End-to-end ingest

`.venv/bin/python bench/bench_e2e.py` ({r['date']}, {r['machine']}; results in `bench/results/e2e.json`).
{s['machines']} simulated machines publish {s['messages_per_machine']} snapshots each of
{s['values_per_message']} values (QoS 1, {s['publishers']} publisher processes) through Mosquitto; the agent
stores them in the outbox with fsync on, then writes them to {s['influx_api']}. Broker, database,
publishers and agent share the same 2 cores.

| | field values/s | values | exact count |
|---|---:|---:|---|
| end to end (MQTT → outbox → InfluxDB) | {e['values_per_s']:,} | {e['values']:,} | {'yes' if e['exact'] else 'NO'} ({e['counted']:,}) |
| ceiling (same lines straight into InfluxDB) | {c['values_per_s']:,} | {c['values']:,} | {c['counted']:,} |

Ratio to the ceiling: {r['ratio_to_ceiling']:.0%}. Agent peak memory (RSS): {e['agent_peak_rss_mib']} MiB.
Target: at least 50,000 field values/s sustained end to end.
"""
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n\nEach section is written by its benchmark.\n"
    start = text.find("## End-to-end ingest")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
