"""End-to-end throughput: MQTT → agent (durable outbox, fsync on) → InfluxDB, with the exact-count check,
against the ceiling of InfluxDB ingesting the same line protocol directly.

    .venv/bin/python bench/bench_e2e.py [--machines 20] [--messages 3000] [--signals 15] [--runs 3]
                                        [--publisher raw|paho] [--publishers 2]

Everything runs on this machine on loopback: Mosquitto, InfluxDB 1.x, the agent, publishers.
Writes bench/results/e2e.json and the "## End-to-end ingest" section of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import os
import selectors
import socket
import statistics
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
from benchdoc import replace_section  # noqa: E402 - bench/ is this script's folder

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


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _mqtt_string(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def raw_publisher(port: int, machines: list[int], messages: int, signals: int, ready, go, window: int = 200) -> None:
    """One MQTT 3.1.1 connection per machine, QoS 1 with at most `window` messages unacknowledged,
    packets built up front: the broker and the agent see exactly what paho would send, but the
    publishing side costs a few µs per message instead of paho's ~130 µs of pure Python, so on a
    shared 2-core machine the agent gets the CPU a real plant's machines would never take from it."""
    conns = []
    for i in machines:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = _mqtt_string("MQTT") + bytes([4, 0x02]) + (0).to_bytes(2, "big") + _mqtt_string(f"bench-pub-{i:02d}")
        sock.sendall(b"\x10" + _remaining_length(len(body)) + body)
        connack = sock.recv(4)
        if connack[:1] != b"\x20" or connack[3:4] != b"\x00":
            raise RuntimeError(f"broker refused publisher {i}: {connack!r}")
        sock.setblocking(False)
        topic = _mqtt_string(f"amtrace/bench/bench-{i:02d}/telemetry")
        packets = []
        for n in range(messages):
            payload = json.dumps(snapshot(i, signals, n)).encode()
            var = topic + (n % 65535 + 1).to_bytes(2, "big")
            packets.append(b"\x32" + _remaining_length(len(var) + len(payload)) + var + payload)
        conns.append({"sock": sock, "packets": packets, "next": 0, "acked": 0, "out": b"", "in": b""})
    sel = selectors.DefaultSelector()
    for c in conns:
        sel.register(c["sock"], selectors.EVENT_READ, c)
    ready.set()
    go.wait()
    open_conns = len(conns)
    while open_conns:
        for c in conns:
            inflight = c["next"] - c["acked"]
            if inflight < window // 2 and c["next"] < messages:
                take = min(window - inflight, messages - c["next"])
                c["out"] += b"".join(c["packets"][c["next"]:c["next"] + take])
                c["next"] += take
            if c["out"]:
                try:
                    sent = c["sock"].send(c["out"])
                    c["out"] = c["out"][sent:]
                except BlockingIOError:
                    pass
        for key, _ in sel.select(timeout=0.05):
            c = key.data
            chunk = c["sock"].recv(65536)
            if not chunk:
                raise RuntimeError("the broker closed a publisher's connection")
            data = c["in"] + chunk
            whole = len(data) // 4 * 4
            for j in range(0, whole, 4):
                if data[j] != 0x40:  # PUBACK; nothing else is expected on a publish-only session
                    raise RuntimeError(f"unexpected packet 0x{data[j]:02x} from the broker")
            c["acked"] += whole // 4
            c["in"] = data[whole:]
            if c["acked"] == messages:
                sel.unregister(c["sock"])
                c["sock"].sendall(b"\xe0\x00")
                c["sock"].close()
                open_conns -= 1


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


def _agent_files(args, tmp: Path, mosq, influx, run: int) -> tuple[Path, Path, int, str]:
    """Machine files (once), this run's database and agent file: (agent file, state dir, HTTP port, database)."""
    db = f"bench{run}"
    influx.create_database(db)
    mdir = tmp / "machines"
    if not mdir.exists():
        mdir.mkdir()
        for i in range(args.machines):
            (mdir / f"bench-{i:02d}.yaml").write_text(yaml.safe_dump(machine_cfg(i, mosq.port, args.signals)))
    port = localstack.free_port()
    state = tmp / f"state{run}"
    cfg = {"id": f"bench-edge-{run}", "machines_dir": str(mdir), "state_dir": str(state),
           "influx": {"api": "v1", "url": influx.url, "database": db},
           "outbox": {"fsync": not args.no_fsync, "group_commit_ms": args.group_commit_ms}, "http": {"port": port}}
    (tmp / f"agent{run}.yaml").write_text(yaml.safe_dump(cfg))
    return tmp / f"agent{run}.yaml", state, port, db


def _start_agent(config: Path, port: int) -> subprocess.Popen:
    agent = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "-c", str(config), "--log-level", "WARNING"],
                             cwd=ROOT)
    localstack.wait_for_http(f"http://127.0.0.1:{port}/healthz", proc=agent)
    return agent


def _assign_jobs(args, state: Path, port: int) -> None:
    token = (state / "api-token").read_text().strip()
    for i in range(args.machines):
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/machines/bench-{i:02d}/assignment", method="PUT",
            data=json.dumps({"job": f"JOB-{i}", "devices": [f"DEV-{i:02d}-1"], "start_ns": 1}).encode(),
            headers={"Authorization": f"Bearer {token}"})
        urllib.request.urlopen(req).read()


def _publishers(args, mosq) -> tuple[list, list, "mp.Event"]:
    groups = [list(range(args.machines))[j::args.publishers] for j in range(args.publishers)]
    ready = [mp.Event() for _ in groups]
    go = mp.Event()
    target = raw_publisher if args.publisher == "raw" else publisher
    procs = [mp.Process(target=target, args=(mosq.port, g, args.messages, args.signals, r, go))
             for g, r in zip(groups, ready)]
    for pr in procs:
        pr.start()
    for r in ready:
        r.wait()
    return procs, ready, go


def run_drain(args, tmp: Path, mosq, influx) -> dict:
    """Restart drain: the agent subscribes, stops; every message is published and queued by the broker while it is
    down; then the agent starts and empties the queue. Rate = values / (agent start → last value in InfluxDB)."""
    config, state, port, db = _agent_files(args, tmp, mosq, influx, 99)
    agent = _start_agent(config, port)
    _assign_jobs(args, state, port)
    time.sleep(1.0)  # every connector subscribed: the broker now keeps their persistent sessions
    agent.terminate()
    agent.wait(30)
    total = args.machines * args.messages * args.signals
    procs, _, go = _publishers(args, mosq)
    print(f"drain: publishing {total:,} values while the agent is down ...", flush=True)
    go.set()
    for pr in procs:
        pr.join(600)
    t = time.perf_counter()
    agent = _start_agent(config, port)
    try:
        ps = psutil.Process(agent.pid)
        got, peak_rss = 0, 0
        while time.perf_counter() - t < 900 and got < total:
            peak_rss = max(peak_rss, ps.memory_info().rss)
            got = count(influx, db)
            time.sleep(0.2)
        elapsed = time.perf_counter() - t
        cpu = sum(ps.cpu_times()[:2])
        time.sleep(1.0)
        final = count(influx, db)
    finally:
        agent.terminate()
        agent.wait(30)
    r = {"values": total, "counted": final, "exact": final == total, "seconds": round(elapsed, 3),
         "values_per_s": round(total / elapsed), "agent_peak_rss_mib": round(peak_rss / 2**20, 1),
         "agent_cpu_us_per_message": round(cpu / (args.machines * args.messages) * 1e6, 1)}
    print(f"  drain: {r['values_per_s']:,} values/s from agent start, exact: {r['exact']} ({final:,}/{total:,}), "
          f"agent {r['agent_cpu_us_per_message']} µs CPU per message (start-up included), peak RSS "
          f"{r['agent_peak_rss_mib']} MiB", flush=True)
    return r


def run_once(args, tmp: Path, mosq, influx, run: int) -> dict:
    """One end-to-end run with a fresh agent (own state, database and MQTT sessions)."""
    config, state, port, db = _agent_files(args, tmp, mosq, influx, run)
    agent = _start_agent(config, port)
    try:
        _assign_jobs(args, state, port)
        time.sleep(1.0)  # let every connector subscribe

        procs, _, go = _publishers(args, mosq)
        total = args.machines * args.messages * args.signals
        print(f"run {run}: {args.machines} machines × {args.messages} messages × {args.signals} values "
              f"= {total:,} values ...", flush=True)
        ps = psutil.Process(agent.pid)
        cpu0 = sum(ps.cpu_times()[:2])
        load_before = os.getloadavg()[0]
        peak_rss = 0
        t = time.perf_counter()
        go.set()
        got = 0
        last_print = t
        while time.perf_counter() - t < 900:
            peak_rss = max(peak_rss, ps.memory_info().rss)
            got = count(influx, db)
            now = time.perf_counter()
            if now - last_print > 5:
                print(f"  {got:,}/{total:,} in InfluxDB after {now - t:.0f} s", flush=True)
                last_print = now
            if got >= total:
                break
            time.sleep(0.2)
        elapsed = time.perf_counter() - t
        agent_cpu = sum(ps.cpu_times()[:2]) - cpu0
        load_after = os.getloadavg()[0]
        for pr in procs:
            pr.join(30)
        time.sleep(1.0)
        final = count(influx, db)
        with open(f"/proc/{agent.pid}/status") as f:
            hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
        r = {"values": total, "counted": final, "exact": final == total, "seconds": round(elapsed, 3),
             "values_per_s": round(total / elapsed), "agent_peak_rss_mib": round(max(peak_rss, hwm) / 2**20, 1),
             "agent_cpu_s": round(agent_cpu, 2),
             "agent_cpu_us_per_message": round(agent_cpu / (args.machines * args.messages) * 1e6, 1),
             "load_1min_before": round(load_before, 2), "load_1min_after": round(load_after, 2)}
        print(f"  {r['values_per_s']:,} values/s end to end, exact count: {r['exact']} ({final:,}/{total:,}), "
              f"agent {r['agent_cpu_us_per_message']} µs CPU per message, peak RSS {r['agent_peak_rss_mib']} MiB, "
              f"load {r['load_1min_before']} → {r['load_1min_after']}", flush=True)
        return r
    finally:
        agent.terminate()
        agent.wait(30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--machines", type=int, default=20)
    p.add_argument("--messages", type=int, default=3000, help="messages per machine")
    p.add_argument("--signals", type=int, default=15, help="values per message")
    p.add_argument("--runs", type=int, default=3, help="end-to-end runs (median and spread are reported)")
    p.add_argument("--publishers", type=int, default=2, help="publisher processes")
    p.add_argument("--publisher", choices=("raw", "paho"), default="raw",
                   help="raw: one lean MQTT connection per machine; paho: one paho client per process")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "e2e.json"))
    p.add_argument("--group-commit-ms", type=float, default=20.0, help="the agent's outbox.group_commit_ms")
    p.add_argument("--no-fsync", action="store_true", help="diagnosis only: outbox without fsync (never summarised)")
    p.add_argument("--drain", action="store_true",
                   help="also time a restart drain: everything published while the agent is down, then started")
    p.add_argument("--no-summary", action="store_true", help="do not rewrite the section of docs/benchmarks.md")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="amtrace-bench-"))
    mosq = localstack.Mosquitto(tmp / "mosquitto").start()
    influx = localstack.InfluxDB1(tmp / "influxdb").start()
    try:
        print("ceiling: InfluxDB ingesting the same line protocol directly ...", flush=True)
        ceil = ceiling(influx, args.machines, args.messages, args.signals)
        print(f"  {ceil['values_per_s']:,} values/s ({ceil['counted']:,}/{ceil['values']:,} counted)")
        runs = [run_once(args, tmp, mosq, influx, k + 1) for k in range(args.runs)]
        drain = run_drain(args, tmp, mosq, influx) if args.drain else None
    finally:
        mosq.stop()
        influx.stop()
    rates = [r["values_per_s"] for r in runs]
    med = statistics.median(rates)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB",
        "setup": {"machines": args.machines, "messages_per_machine": args.messages,
                  "values_per_message": args.signals, "publishers": args.publishers,
                  "publisher": args.publisher, "group_commit_ms": args.group_commit_ms,
                  "devices_per_job": 1, "outbox_fsync": not args.no_fsync, "influx_api": "v1 (InfluxDB 1.6)"},
        "runs": runs,
        "end_to_end": {"values_per_s_median": round(med), "values_per_s_min": min(rates),
                       "values_per_s_max": max(rates), "exact_every_run": all(r["exact"] for r in runs),
                       "agent_peak_rss_mib": max(r["agent_peak_rss_mib"] for r in runs),
                       "agent_cpu_us_per_message_median": statistics.median(
                           r["agent_cpu_us_per_message"] for r in runs)},
        "ceiling": ceil,
        "restart_drain": drain,
        "ratio_to_ceiling": round(med / ceil["values_per_s"], 3),
        "target_values_per_s": 200_000,
        "target_agent_cpu_us_per_message": 50,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    e = result["end_to_end"]
    print(f"median {e['values_per_s_median']:,} values/s end to end (min {e['values_per_s_min']:,}, max "
          f"{e['values_per_s_max']:,}), exact in every run: {e['exact_every_run']}, "
          f"{result['ratio_to_ceiling']:.1%} of the ceiling, agent peak RSS {e['agent_peak_rss_mib']} MiB")
    if not args.no_summary and not args.no_fsync:
        write_summary(result)
    return 0 if e["exact_every_run"] else 1


def _drain_line(d: dict | None) -> str:
    if not d:
        return "Restart drain: not run (`--drain`).\n"
    return (f"**Restart drain** (`--drain`: the agent subscribed, was stopped, all {d['values']:,} values were "
            f"published and queued by the broker, then the agent started): **{d['values_per_s']:,} values/s** from "
            f"the agent's start to the last value in InfluxDB ({d['seconds']} s), exact count: "
            f"{'yes' if d['exact'] else 'NO'} ({d['counted']:,}); {d['agent_cpu_us_per_message']} µs of agent CPU "
            f"per message including start-up; peak RSS {d['agent_peak_rss_mib']} MiB.\n")


def write_summary(r: dict) -> None:
    """Replace the '## End-to-end ingest' section of docs/benchmarks.md."""
    e, c, s = r["end_to_end"], r["ceiling"], r["setup"]
    rows = "\n".join(
        f"| {k + 1} | {x['values_per_s']:,} | {'yes' if x['exact'] else 'NO'} ({x['counted']:,}) | "
        f"{x['agent_cpu_us_per_message']} | {x['agent_peak_rss_mib']} | {x['load_1min_before']} → {x['load_1min_after']} |"
        for k, x in enumerate(r["runs"]))
    publisher = ("lean publishers (one MQTT 3.1.1 connection per machine, packets built before the start, "
                 "at most 200 unacknowledged per machine)" if s["publisher"] == "raw" else "paho-mqtt publishers")
    section = f"""## End-to-end ingest

`.venv/bin/python bench/bench_e2e.py --machines {s['machines']} --messages {s['messages_per_machine']}{' --drain' if r.get('restart_drain') else ''}` \
({r['date']}, {r['machine']}; results in `bench/results/e2e.json`).
{s['machines']} simulated machines publish {s['messages_per_machine']} snapshots each of {s['values_per_message']} values
(QoS 1; {s['publishers']} publisher processes, {publisher}) through Mosquitto; the agent stores them in the
outbox with fsync on (group commit {s['group_commit_ms']:g} ms), then writes them to {s['influx_api']}.
Broker, database, publishers and agent share the same 2 cores; other engineers' test suites were running
on them too (1-minute load average per run below).

| run | field values/s end to end | exact count | agent CPU µs/message | agent peak RSS MiB | load |
|---|---:|---|---:|---:|---|
{rows}

**Median {e['values_per_s_median']:,} field values/s** (min {e['values_per_s_min']:,}, max {e['values_per_s_max']:,});
exact count in every run: {'yes' if e['exact_every_run'] else 'NO'}. Ceiling (the same {c['values']:,} values as
line protocol straight into InfluxDB, 5,000-line gzip batches, two writers): {c['values_per_s']:,} values/s;
ratio {r['ratio_to_ceiling']:.1%} (the ceiling suffers more from a busy machine: 1.1–2.1 M values/s at load ~2).
Agent peak memory (RSS): {e['agent_peak_rss_mib']} MiB.
{_drain_line(r.get("restart_drain"))}Target (issue 15): at least 200,000 field values/s end to end and at most 50 µs of agent CPU per message:
{'met' if e['values_per_s_median'] >= 200_000 and e['agent_cpu_us_per_message_median'] <= 50 else '**not met**'} (the first target, 50,000 values/s, is met since 2026-11-26).

**Profile 2026-12-04** (`py-spy record -r 250 --nonblocking -f raw` on the agent for 9 s of a run of this
bench that gave 82,695 values/s at 155 µs/message; samples of all threads, waiting ones included). Flusher threads
38 % of the samples: parsing 16 % (walking the compiled plan and making one `Reading` per value 13 %, the JSON
decode itself only 2 %), pipeline submit (tags, line protocol, outbox commit) 13 %, the per-message PUBACK through
paho 7 %. Paho's network threads 50 %, most of it in `recv`/`select` and pure-Python packet reads. Writer 8 %.
Today's runs cost 155–231 µs of agent CPU per message against 138–175 on 2026-11-26; what was added since on
this path (live state, `LiveState.observe`) is 0.5 % of the samples, and the run-to-run spread on this shared
machine is as large as the difference. **Why 200k was not reached**: it needs ≤ 50 µs
per message, three to four times less than today; sharding the machines over processes spreads the same CPU
over both cores, which the broker, InfluxDB and the publishers already use — on this 2-core machine it cannot
triple throughput. What would: an intake that handles messages in bulk (one broker connection per shard with an
MQTT 5 shared subscription, packets parsed outside pure-Python paho, payloads decoded and rendered as a batch
without a `Reading` per value), with the outbox, quarantine and ack-after-commit guarantees re-proven by the fault
tests. Not built in this issue (docs/decisions.md, "Ingest at 200k: measured, not met").

**What limits it** (py-spy and per-process CPU under this benchmark, 2026-11-26). The agent is one
Python process with some forty threads: per machine a paho network thread (pure-Python packet reads:
three to four `recv` calls and a `select` per message, a socket-pair wake-up per PUBACK) and a flusher
thread (parse, render, outbox commit, acknowledge), plus the writer. The flushers take about three
quarters of the agent's active time, paho's threads about a fifth, the writer ~5 %. The fsync'd commit
is not the limit: the same run with fsync off, or with 100 ms group commits, was no faster. The fast
paths (compiled parse plan, 47 → 24 µs per message; cached escaped line heads and a plain-float render
path, submit 25.6 → 19.3 µs per message in groups of 50) cut the agent's CPU from ~180 to ~130–140 µs
per message; what remains is mostly Reading objects (~0.8 µs each), paho's packet handling and GIL
hand-overs between the threads. On two shared cores the publishers matter too: paho publishers cost
~130 µs of CPU per message, so with 2 paho processes the same agent measured 66,634 values/s and with
1 paho process 56,811 (load 5–7); before the fast paths, 2 paho processes gave 50,408–68,663 (load
~2). With the lean publishers 1 and 2 processes give the same figure (77,444 and the median above):
the agent, not the load generator, sets the pace.
"""
    replace_section(section)


if __name__ == "__main__":
    sys.exit(main())
