"""Writes machine data into a real InfluxDB the way the edge agent does: Pipeline (signal map, device tags,
limits) → Outbox on disk → InfluxWriter (v1 /write). Shared by the cycle and history tests."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from edge.assignments import AssignmentBook, AssignmentRequest
from edge.config import InfluxConfig, MachineConfig, load_machine
from edge.outbox import Outbox
from edge.pipeline import Pipeline
from edge.readings import Event, Ingest, Reading
from edge.simulators.profiles import NOISE

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "machines"
NS = 1_000_000_000


def machine(name: str) -> MachineConfig:
    """A sample machine config from configs/machines."""
    return load_machine(CONFIGS / f"{name}.yaml")


def feed(*, url: str, database: str, machine_cfg: MachineConfig, job: str, devices: list[str], start_ns: int,
         seconds: float, step_s: float, state: Callable[[float], dict], noise: bool = True, seed: int = 7,
         events: Sequence[Event] = ()) -> int:
    """Write state(t) for t in [0, seconds] every step_s under the devices, and the agent's events;
    return the number of snapshots."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        outbox = Outbox(Path(tmp) / "outbox.sqlite", budget_bytes=512 * 1024 * 1024, fsync=False)
        book = AssignmentBook(Path(tmp) / "assign.sqlite")
        if devices:  # no devices: written as before the agent knew of any job or cycle (no device tag)
            book.assign(machine_cfg.id, AssignmentRequest(job=job, devices=devices, start_ns=start_ns - NS))
        pipe = Pipeline([machine_cfg], outbox, book)
        outbox.put([("\n".join(pipe.signal_map_lines(start_ns - 2 * NS)), len(machine_cfg.signals))])
        from edge.writer import InfluxWriter
        writer = InfluxWriter(InfluxConfig(url=url, database=database, batch_lines=20000), outbox,
                              on_event=lambda e: None)
        names = {s.name for s in machine_cfg.signals}
        n, batch = 0, []
        t = 0.0
        while t <= seconds + 1e-9:
            ts = start_ns + int(round(t * NS))
            values = state(t)
            readings = []
            for k, v in values.items():
                if k not in names:
                    continue
                if noise and isinstance(v, float) and k in NOISE:
                    v = v + rng.gauss(0.0, NOISE[k])
                readings.append(Reading(k, v, ts))
            batch.append(Ingest(machine_cfg.id, readings, received_ns=ts))
            n += 1
            if len(batch) >= 500:
                pipe.submit(batch)
                batch = []
            t += step_s
        if batch:
            pipe.submit(batch)
        for ev in events:
            pipe.event(ev)
        writer.start()
        assert writer.flush(60), "InfluxDB did not take the test data"
        writer.stop()
        assert writer.stats.quarantined_lines == 0
        outbox.close()
        book.close()
    return n
