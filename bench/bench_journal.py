"""Cost of the agent's own record (issue 18): an evidence event made durable when it is raised, a lasting
condition opened and closed, and the connector state (last seq per topic) stored with each batch of data.

    .venv/bin/python bench/bench_journal.py [--events 2000] [--batches 300] [--batch 200]

Runs the real Pipeline on a real outbox (fsync on, as deployed) in a temporary folder. Writes
bench/results/journal.json and the "## Agent journal" section of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchdoc import replace_section  # noqa: E402 - bench/ is this script's folder
from edge.assignments import AssignmentBook  # noqa: E402
from edge.config import MachineConfig  # noqa: E402
from edge.outbox import Outbox  # noqa: E402
from edge.pipeline import Pipeline  # noqa: E402
from edge.readings import Event, Ingest, Reading  # noqa: E402

SIGNALS = 15


def _machine() -> MachineConfig:
    return MachineConfig.model_validate({
        "id": "furnace-b1", "kind": "furnace", "manufacturer": "Bench", "model": "B", "serial": "1",
        "connection": {"type": "mqtt", "topic": "bench/furnace-b1"},
        "signals": [{"name": f"s{i}", "source": {"path": f"s{i}"}, "measurement": "bench", "field": f"f{i}",
                     "unit": "1"} for i in range(SIGNALS)]})


def _pipeline(folder: Path) -> tuple[Pipeline, Outbox, AssignmentBook]:
    outbox = Outbox(folder / "outbox.sqlite", budget_bytes=1 << 30, fsync=True)
    book = AssignmentBook(folder / "assign.sqlite")
    return Pipeline([_machine()], outbox, book), outbox, book


def _batch(n: int, start: int, t0: int) -> list[Ingest]:
    return [Ingest("furnace-b1", [Reading(f"s{k}", 20.0 + k + i * 1e-3, t0 + i * 1_000_000) for k in range(SIGNALS)],
                   received_ns=t0 + i * 1_000_000) for i in range(start, start + n)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--batches", type=int, default=300)
    p.add_argument("--batch", type=int, default=200, help="messages per submit (the MQTT group commit)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "journal.json"))
    p.add_argument("--no-summary", action="store_true")
    args = p.parse_args()
    logging.disable(logging.CRITICAL)  # the pipeline logs every event; not what is measured
    t0 = time.time_ns()
    with tempfile.TemporaryDirectory() as tmp:
        pipe, outbox, book = _pipeline(Path(tmp))
        started = time.perf_counter()
        for i in range(args.events):
            pipe.event(Event("furnace-b1", "gap", f"bench event {i}", t0 + i, "warning", {"missing": 1}))
        event_us = (time.perf_counter() - started) / args.events * 1e6
        print(f"event made durable when raised: {event_us:.0f} µs each ({args.events} events, fsync on)")
        started = time.perf_counter()
        for i in range(args.events // 2):
            pipe.open_condition("bench_link", Event("", "connection_lost", "down", t0 + i, "warning"))
            pipe.close_condition("bench_link", lambda since: Event("", "connection_restored", "up", since + 1))
        condition_us = (time.perf_counter() - started) / (args.events // 2) * 1e6
        print(f"condition opened and closed: {condition_us:.0f} µs per pair")
        runs = {}
        for with_state in (False, True, False, True):
            started = time.perf_counter()
            for b in range(args.batches):
                batch = _batch(args.batch, b * args.batch, t0)
                state = ({f"mqtt:furnace-b1:seq:bench/furnace-b1": json.dumps([b * args.batch + args.batch - 1, t0])}
                         if with_state else None)
                pipe.submit(batch, state=state)
            runs.setdefault(with_state, []).append((time.perf_counter() - started) / args.batches * 1e6)
        outbox.close()
        book.close()
    plain, stated = statistics.median(runs[False]), statistics.median(runs[True])
    print(f"submit of {args.batch} messages: {plain:.0f} µs without state, {stated:.0f} µs with the seq state "
          f"({(stated - plain) / plain * 100:+.1f} %)")
    out = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "events": args.events, "event_us": round(event_us, 1),
           "condition_pair_us": round(condition_us, 1), "batch_messages": args.batch, "batches": args.batches,
           "submit_us_without_state": round(plain, 1), "submit_us_with_state": round(stated, 1),
           "state_overhead_pct": round((stated - plain) / plain * 100, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    if not args.no_summary:
        replace_section(f"""## Agent journal
`bench/bench_journal.py` ({out['date']}; real Pipeline and outbox, fsync on): an evidence event made durable
when it is raised costs **{out['event_us']:.0f} µs** (one fsynced transaction); opening and closing a lasting
condition (event and state together) **{out['condition_pair_us']:.0f} µs** per pair. Storing the MQTT connector's
last seq with each batch of {args.batch} messages: {out['submit_us_without_state']:.0f} µs per submit without,
{out['submit_us_with_state']:.0f} µs with ({out['state_overhead_pct']:+.1f} %: one upsert in the same transaction).
End to end (`bench/bench_e2e.py`, 3 runs twice, before and after the journal, interleaved): see
docs/outbox-and-writer.md, "The agent's own record".""")


if __name__ == "__main__":
    main()
