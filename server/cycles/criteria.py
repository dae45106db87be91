"""What every cycle process judges with: the trace, criteria and verdicts, and the wording of limits.

Shared by the process plugins (server/cycles/processes/) and the evaluation that runs them
(server/cycles/evaluation.py, where the conventions of every judgement are stated)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, Field

NS = 1_000_000_000


class Criterion(BaseModel):
    """One checked criterion: what was measured, against which limit, and why it passed or failed."""

    name: str = Field(description="Stable criterion name, e.g. hold_time")
    measured: float | str | None = Field(description="Measured value (None when it could not be measured)")
    limit: str = Field(description="The validated limit in words, e.g. '>= 180 s'")
    unit: str = Field(description="Unit of the measured value")
    passed: bool
    reason: str = Field(description="Plain-words explanation")


class Verdict(BaseModel):
    """Result of a cycle evaluation: passed only when every criterion passed."""

    passed: bool
    process: str
    samples: int = Field(description="Samples of the time series the verdict was computed from")
    criteria: list[Criterion]

    @property
    def failed(self) -> list[Criterion]:
        """The criteria that failed."""
        return [c for c in self.criteria if not c.passed]


@dataclass
class Trace:
    """Samples of one machine's measurement in a cycle: ns timestamps and one column per field."""

    times: list[int]
    columns: dict[str, list[Any]] = field(default_factory=dict)

    def values(self, name: str) -> list[Any]:
        """The column of field name (all None when the field is absent)."""
        return self.columns.get(name) or [None] * len(self.times)

    def numeric(self, name: str, where: list[bool] | None = None) -> tuple[list[int], list[float]]:
        """(times, values) of the samples that carry a number for field name (and satisfy where)."""
        ts, vs = [], []
        for i, v in enumerate(self.values(name)):
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (
                    where is None or where[i]):
                ts.append(self.times[i])
                vs.append(float(v))
        return ts, vs


def at(ns: int) -> str:
    """A time of day (UTC) as criteria state it."""
    return datetime.fromtimestamp(ns / NS, tz=timezone.utc).strftime("%H:%M:%S")


def fmt(v: float) -> str:
    """A number as criteria state it (no trailing zeros)."""
    return f"{v:.3g}" if abs(v) < 0.01 and v != 0 else f"{v:.2f}".rstrip("0").rstrip(".")


def longest_run(times: list[int], ok: list[bool], max_gap_s: float) -> tuple[float, int | None, int | None]:
    """Longest continuous time (s) where ok holds between consecutive samples; with its start and end (ns)."""
    best, best_start, best_end = 0.0, None, None
    run_start = None
    max_gap = max_gap_s * NS
    for i, t in enumerate(times):
        if not ok[i]:
            run_start = None
            continue
        if run_start is None or t - times[i - 1] > max_gap:
            run_start = t
        length = (t - run_start) / NS
        if best_start is None or length > best:
            best, best_start, best_end = length, run_start, t
    return best, best_start, best_end


def no_data(process: str, what: str) -> Verdict:
    """The verdict of a cycle with no samples of what it is judged on."""
    return Verdict(passed=False, process=process, samples=0, criteria=[Criterion(
        name="time_series_present", measured=0, limit="> 0 samples", unit="samples", passed=False,
        reason=f"no {what} samples in InfluxDB between the cycle's start and end")])


def in_range(name: str, values: list[float], times: list[int], lo: float | None, hi: float | None, unit: str,
           what: str) -> Criterion:
    """Every value within [lo, hi]; measured = the worst value."""
    if not values:
        return Criterion(name=name, measured=None, limit=limit_words(lo, hi, unit), unit=unit, passed=False,
                         reason=f"no {what} values recorded")
    vmin, vmax = min(values), max(values)
    if lo is not None and vmin < lo:
        i = values.index(vmin)
        return Criterion(name=name, measured=vmin, limit=limit_words(lo, hi, unit), unit=unit, passed=False,
                         reason=f"{what} fell to {fmt(vmin)} {unit} at {at(times[i])}, below {fmt(lo)} {unit}")
    if hi is not None and vmax > hi:
        i = values.index(vmax)
        return Criterion(name=name, measured=vmax, limit=limit_words(lo, hi, unit), unit=unit, passed=False,
                         reason=f"{what} rose to {fmt(vmax)} {unit} at {at(times[i])}, above {fmt(hi)} {unit}")
    worst = vmin if lo is not None and (hi is None or (vmin - lo) <= (hi - vmax)) else vmax
    return Criterion(name=name, measured=worst, limit=limit_words(lo, hi, unit), unit=unit, passed=True,
                     reason=f"{what} stayed between {fmt(vmin)} and {fmt(vmax)} {unit}")


def limit_words(lo: float | None, hi: float | None, unit: str) -> str:
    """A range limit in words."""
    if lo is not None and hi is not None:
        return f"{fmt(lo)} to {fmt(hi)} {unit}"
    return f">= {fmt(lo)} {unit}" if lo is not None else f"<= {fmt(hi)} {unit}"


def at_least(name: str, measured: float, minimum: float, unit: str, what: str) -> Criterion:
    """measured against a minimum."""
    ok = measured >= minimum
    return Criterion(name=name, measured=round(measured, 3), limit=f">= {fmt(minimum)} {unit}", unit=unit,
                     passed=ok, reason=f"{what} was {fmt(measured)} {unit}, "
                                       f"{'at least' if ok else 'less than'} the required {fmt(minimum)} {unit}")


class ResidueResult(BaseModel):
    """A recorded residue test result of a cleaning cycle."""

    test: str = Field(min_length=1, max_length=200, description="Test name as in the recipe's residue limits")
    value: float = Field(description="Result")
    unit: str = Field(max_length=32, description="Unit of the result")
