"""A simulated machine that writes one cycle log per cycle into its folder, in the machine file's dialect.

    amtrace-edge simulate folder --machine washer-02 --every 60

Each log covers a thermal washer-disinfector program that has just ended (so its samples are minutes old
when the file appears, as on a real share), written in two parts with a pause: a watcher that takes a file
before it holds still would take half a log."""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from edge.config import ConfigError, MachineConfig
from edge.connectors.simulate import add_machine_arguments, machine_to_simulate

# (phase, seconds, chamber temperature target °C)
PROGRAM = [("Vorspülen", 120, 25.0), ("Reinigen", 300, 55.0), ("Neutralisieren", 120, 40.0),
           ("Zwischenspülen", 120, 35.0), ("Desinfektion", 420, 93.0), ("Trocknen", 240, 80.0)]


def cycle_rows(end_ns: int, step_s: float = 10.0, *, disinfection_c: float = 93.0) -> list[dict]:
    """Samples of one program that ended at end_ns: phase, temperatures, A0, spray pressure, conductivity."""
    total = sum(d for _, d, _ in PROGRAM)
    start_s = end_ns / 1e9 - total
    rows, temp, a0, t = [], 20.0, 0.0, 0.0
    for phase, dur, target in PROGRAM:
        target = disinfection_c if phase == "Desinfektion" else target
        x = 0.0
        while x < dur:
            temp += (target - temp) * (1 - math.exp(-step_s / 60.0))
            doc = temp - 0.4 + 0.2 * math.sin(t / 40)
            if doc >= 65.0:
                a0 += step_s * 10 ** ((doc - 80.0) / 10.0)  # ISO 15883-1 Annex B, z = 10 K
            rows.append({"time_s": start_s + t, "phase": phase, "chamber": temp, "doc": doc, "a0": a0,
                         "pressure_bar": 0.0 if phase == "Trocknen" else 0.55 + 0.02 * math.sin(t / 7),
                         "conductivity": 1500.0 if phase == "Reinigen" else (3.2 if phase == "Desinfektion" else 420.0)})
            x += step_s
            t += step_s
    return rows


def render(machine: MachineConfig, rows: list[dict]) -> bytes:
    """The rows as the machine writes them: its delimiter, decimal mark, time format, zone and encoding."""
    cfg = machine.connection
    zone = ZoneInfo(cfg.timezone)
    columns = {s.name: s.source.column for s in machine.signals}
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=cfg.delimiter, lineterminator="\r\n")
    w.writerow([cfg.time_column, *columns.values()])

    def num(v: float, digits: int = 1) -> str:
        text = f"{v:.{digits}f}"
        return text.replace(".", ",") if cfg.decimal == "," else text

    for r in rows:
        when = datetime.fromtimestamp(r["time_s"], timezone.utc).astimezone(zone)
        stamp = when.isoformat() if cfg.time_format == "iso" else when.strftime(cfg.time_format)
        by_signal = {"phase": r["phase"], "chamber_temp_c": num(r["chamber"]), "disinfection_temp_c": num(r["doc"]),
                     "a0_s": num(r["a0"], 0), "spray_pressure_kpa": num(r["pressure_bar"], 2),
                     "conductivity_us_cm": num(r["conductivity"])}
        w.writerow([stamp, *(by_signal.get(name, "") for name in columns)])
    return buf.getvalue().encode(cfg.encoding)


def write_log(machine: MachineConfig, folder: Path, end_ns: int, *, pause_s: float = 0.5, **kw) -> Path:
    """Write one cycle log ending at end_ns into folder, in two parts; return its path."""
    data = render(machine, cycle_rows(end_ns, **kw))
    when = datetime.fromtimestamp(end_ns / 1e9, timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = folder / f"{machine.id}-{when}.csv"
    half = len(data) // 2
    with open(path, "wb") as f:
        f.write(data[:half])
        f.flush()
        time.sleep(pause_s)
        f.write(data[half:])
    return path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `amtrace-edge simulate folder`."""
    add_machine_arguments(p, "folder")
    p.add_argument("--every", type=float, default=60.0, help="seconds between two cycle logs")
    p.add_argument("--count", type=int, default=0, help="stop after this many logs (0 = run until interrupted)")


def run(args: argparse.Namespace) -> int:
    """Write cycle logs until interrupted."""
    try:
        machine = machine_to_simulate(args, "folder")
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    folder = Path(machine.connection.path)
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        while args.count == 0 or written < args.count:
            path = write_log(machine, folder, time.time_ns())
            written += 1
            print(f"{machine.id}: cycle log {path.name} written", flush=True)
            time.sleep(args.every)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    _p = argparse.ArgumentParser(prog="python -m edge.connectors.folder.simulator", description=__doc__.splitlines()[0])
    add_arguments(_p)
    sys.exit(run(_p.parse_args()))
