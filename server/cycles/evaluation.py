"""Judge one completed cycle's time series against its recipe version: a verdict with every criterion.

Pure functions (no database, no InfluxDB) so each rule is unit-testable. Conventions, stated once:
- Durations (hold, exposure, wash, aeration) count only the time between consecutive samples that both
  meet the condition; the crossing between two samples is not credited (conservative). A gap between
  samples longer than the recipe's max_gap_s ends the run: what happened in the gap is unknown.
- F0 = ∫ 10^((T − 121.1 °C) / 10 K) dt in minutes, trapezoid rule on the samples' own timestamps; an
  interval longer than max_gap_s earns no lethality.
- Each process's own rules live in its module under server/cycles/processes/ (found through one map).
- Steam quality compares the measured pressure with the saturated-steam pressure at the measured
  temperature (IAPWS-IF97 region 4 from the `iapws` package, not from our simulator, so the verdict and the
  simulated machines do not share an oracle) on every plateau sample.
  Pressure BELOW saturation means the vapour is hotter than steam at that pressure can be, i.e.
  superheated steam (dry, poor heat transfer) or a temperature sensor reading high. Pressure ABOVE
  saturation means another gas carries the difference (Dalton): air or non-condensable gas, which
  shields surfaces from condensing steam.
- Coverage: the window is judged from the cycle's recorded start to its end. Every signal the process is
  judged on must have readings across the whole window: a stretch longer than max_gap_s without a reading
  (at the start, inside, or at the end) fails `data_coverage` ("incomplete data: N s of the cycle without
  readings"), because what the machine did then is unknown and may be the excursion that matters.
- Sensor faults: a reading outside what the process can physically produce (PLAUSIBLE, far wider than any
  acceptance limit) is a sensor fault. It fails `sensor_plausible` and is left out of the other criteria,
  which are judged on the remaining readings; it never crashes the evaluation.
"""

from __future__ import annotations

import math

from server.cycles.criteria import NS, Criterion, ResidueResult, Trace, Verdict, at, fmt
from server.cycles.processes import process_of
from server.cycles.processes.steam import saturation_pressure_kpa
from server.cycles.recipes import RecipeParameters

__all__ = ["Criterion", "ResidueResult", "Trace", "Verdict", "coverage", "coverage_fields", "evaluate",
           "plausible_ranges", "saturation_pressure_kpa", "sensor_check"]


# --- what every process shares: sensor plausibility and coverage of the window -----------------

def plausible_ranges(p: RecipeParameters) -> dict[str, tuple[float, float, str]]:
    """Per judged field, the readings the process can physically produce; outside them a sensor is at fault."""
    return process_of(p).plausible(p)


def coverage_fields(p: RecipeParameters) -> list[str]:
    """The signals that must be read across the whole window (dosimeters are read once, not streamed)."""
    return process_of(p).coverage_fields(p)


def sensor_check(p: RecipeParameters, trace: Trace) -> tuple[Criterion, Trace]:
    """The sensor_plausible criterion, and the trace without the implausible readings."""
    ranges = plausible_ranges(p)
    faults: list[tuple[int, str, float, float, float, str]] = []
    columns = dict(trace.columns)
    for name, (lo, hi, unit) in ranges.items():
        col = trace.columns.get(name)
        if not col:
            continue
        kept = list(col)
        for i, v in enumerate(col):
            if isinstance(v, (int, float)) and not isinstance(v, bool) and (
                    not math.isfinite(v) or not lo <= v <= hi):
                faults.append((trace.times[i], name, v, lo, hi, unit))
                kept[i] = None
        columns[name] = kept
    limit = "; ".join(f"{n} {fmt(lo)} to {fmt(hi)} {u}" for n, (lo, hi, u) in ranges.items())
    if not faults:
        return Criterion(name="sensor_plausible", measured=0, limit=limit, unit="readings", passed=True,
                         reason="every reading within what the process can physically produce"), trace
    t, name, v, lo, hi, unit = min(faults)
    more = (f" ({len(faults)} implausible readings in all, " if len(faults) > 1 else " (") + \
        "left out of the other criteria)"
    return Criterion(name="sensor_plausible", measured=len(faults), limit=limit, unit="readings", passed=False,
                     reason=f"sensor fault at t={at(t)}: {name} read {fmt(v)} {unit}, outside the physically possible "
                            f"{fmt(lo)} to {fmt(hi)} {unit}" + more), Trace(times=trace.times, columns=columns)


def coverage(p: RecipeParameters, trace: Trace, start_ns: int, end_ns: int,
             reported: list[tuple[int, int, str]] = ()) -> Criterion | None:
    """data_coverage: no stretch longer than max_gap_s of the window [start, end] without a reading of a signal,
    and no loss the machine's agent reported inside it (reported: (start, end, what) of each, e.g. messages the
    broker dropped: the readings either side may be close, and still messages are missing)."""
    fields = coverage_fields(p)
    if not fields:
        return None
    gaps: list[tuple[int, int, str]] = [(max(a, start_ns), min(b, end_ns), what) for a, b, what in reported
                                        if a <= end_ns and b >= start_ns]
    for name in fields:
        ts = [t for t in trace.numeric(name)[0] if start_ns <= t <= end_ns]
        points = [start_ns, *ts, end_ns]
        gaps += [(a, b, name) for a, b in zip(points, points[1:]) if b - a > p.max_gap_s * NS]
    limit = f"no gap over {fmt(p.max_gap_s)} s between {at(start_ns)} and {at(end_ns)}"
    if not gaps:
        return Criterion(name="data_coverage", measured=0, limit=limit, unit="s", passed=True,
                         reason=f"{', '.join(fields)} read throughout the cycle")
    missing = _union_seconds([(a, b) for a, b, _ in gaps])
    named = "; ".join(f"{name} {at(a)}–{at(b)} ({fmt((b - a) / NS)} s)" for a, b, name in sorted(gaps)[:10])
    return Criterion(name="data_coverage", measured=round(missing, 1), limit=limit, unit="s", passed=False,
                     reason=f"incomplete data: {fmt(missing)} s of the cycle without readings: {named}"
                            + (f"; and {len(gaps) - 10} more gaps" if len(gaps) > 10 else ""))


def _union_seconds(spans: list[tuple[int, int]]) -> float:
    total, end = 0, None
    for a, b in sorted(spans):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total / NS


def evaluate(*, parameters: RecipeParameters, trace: Trace, residues: list[ResidueResult] | None = None,
             window: tuple[int, int] | None = None, reported_gaps: list[tuple[int, int, str]] = ()) -> Verdict:
    """Evaluate a cycle's trace against the recipe version's parameters (and its window's coverage, if given).

    Never raises on data: an implausible reading fails sensor_plausible, and anything the process rules
    cannot judge fails evaluation_error, so a cycle always ends with a recorded verdict."""
    sensors, clean = sensor_check(parameters, trace)
    try:
        verdict = process_of(parameters).evaluate(parameters, clean, residues or [])
    except Exception as e:  # noqa: BLE001 - a verdict that says "not judged" beats a cycle stuck as running
        verdict = Verdict(passed=False, process=parameters.process, samples=len(trace.times), criteria=[Criterion(
            name="evaluation_error", measured=None, limit="the data can be judged", unit="", passed=False,
            reason=f"the cycle could not be judged: {type(e).__name__}: {e}")])
    extra = [sensors]
    if window is not None:
        covered = coverage(parameters, clean, *window, reported=list(reported_gaps))
        if covered is not None:
            extra.append(covered)
    criteria = extra + verdict.criteria
    return Verdict(passed=all(c.passed for c in criteria), process=verdict.process, samples=verdict.samples,
                   criteria=criteria)
