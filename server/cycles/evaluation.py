"""Judge one completed cycle's time series against its recipe version: a verdict with every criterion.

Pure functions (no database, no InfluxDB) so each rule is unit-testable. Conventions, stated once:
- Durations (hold, exposure, wash, aeration) count only the time between consecutive samples that both
  meet the condition; the crossing between two samples is not credited (conservative). A gap between
  samples longer than the recipe's max_gap_s ends the run: what happened in the gap is unknown.
- F0 = ∫ 10^((T − 121.1 °C) / 10 K) dt in minutes, trapezoid rule on the samples' own timestamps; an
  interval longer than max_gap_s earns no lethality.
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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, Field

from iapws.iapws97 import _PSat_T
from server.cycles.recipes import (CleaningParameters, EthyleneOxideParameters, HeatTreatmentParameters,
                                   RadiationParameters, RecipeParameters, SteamParameters)

NS = 1_000_000_000
F0_REFERENCE_C = 121.1
F0_Z_K = 10.0


def saturation_pressure_kpa(temp_c: float) -> float:
    """Saturated-steam pressure (kPa) at temp_c, IAPWS-IF97 region 4 (valid 0.01 °C to 373.946 °C)."""
    return _PSat_T(temp_c + 273.15) * 1000.0


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


def _at(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, tz=timezone.utc).strftime("%H:%M:%S")


def _fmt(v: float) -> str:
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


def f0_minutes(times: list[int], temps: list[float], max_gap_s: float) -> float:
    """Lethality F0 in minutes: trapezoid rule on actual timestamps; intervals longer than max_gap_s earn none."""
    total = 0.0
    for i in range(1, len(times)):
        dt = (times[i] - times[i - 1]) / NS
        if dt <= 0 or dt > max_gap_s:
            continue
        la = 10 ** ((temps[i - 1] - F0_REFERENCE_C) / F0_Z_K)
        lb = 10 ** ((temps[i] - F0_REFERENCE_C) / F0_Z_K)
        total += (la + lb) / 2 * dt
    return total / 60.0


def _no_data(process: str, what: str) -> Verdict:
    return Verdict(passed=False, process=process, samples=0, criteria=[Criterion(
        name="time_series_present", measured=0, limit="> 0 samples", unit="samples", passed=False,
        reason=f"no {what} samples in InfluxDB between the cycle's start and end")])


def _range(name: str, values: list[float], times: list[int], lo: float | None, hi: float | None, unit: str,
           what: str) -> Criterion:
    """Every value within [lo, hi]; measured = the worst value."""
    if not values:
        return Criterion(name=name, measured=None, limit=_limit_words(lo, hi, unit), unit=unit, passed=False,
                         reason=f"no {what} values recorded")
    vmin, vmax = min(values), max(values)
    if lo is not None and vmin < lo:
        i = values.index(vmin)
        return Criterion(name=name, measured=vmin, limit=_limit_words(lo, hi, unit), unit=unit, passed=False,
                         reason=f"{what} fell to {_fmt(vmin)} {unit} at {_at(times[i])}, below {_fmt(lo)} {unit}")
    if hi is not None and vmax > hi:
        i = values.index(vmax)
        return Criterion(name=name, measured=vmax, limit=_limit_words(lo, hi, unit), unit=unit, passed=False,
                         reason=f"{what} rose to {_fmt(vmax)} {unit} at {_at(times[i])}, above {_fmt(hi)} {unit}")
    worst = vmin if lo is not None and (hi is None or (vmin - lo) <= (hi - vmax)) else vmax
    return Criterion(name=name, measured=worst, limit=_limit_words(lo, hi, unit), unit=unit, passed=True,
                     reason=f"{what} stayed between {_fmt(vmin)} and {_fmt(vmax)} {unit}")


def _limit_words(lo: float | None, hi: float | None, unit: str) -> str:
    if lo is not None and hi is not None:
        return f"{_fmt(lo)} to {_fmt(hi)} {unit}"
    return f">= {_fmt(lo)} {unit}" if lo is not None else f"<= {_fmt(hi)} {unit}"


def _at_least(name: str, measured: float, minimum: float, unit: str, what: str) -> Criterion:
    ok = measured >= minimum
    return Criterion(name=name, measured=round(measured, 3), limit=f">= {_fmt(minimum)} {unit}", unit=unit,
                     passed=ok, reason=f"{what} was {_fmt(measured)} {unit}, "
                                       f"{'at least' if ok else 'less than'} the required {_fmt(minimum)} {unit}")


# --- steam -------------------------------------------------------------------------------------

def evaluate_steam(p: SteamParameters, trace: Trace) -> Verdict:
    """Plateau band, hold time, steam quality (both directions) and F0 of a steam cycle."""
    times, temps = trace.numeric(p.temperature_field)
    if not times:
        return _no_data("steam", f"{p.measurement}.{p.temperature_field}")
    t_ster = p.sterilization_temp_c
    hold_s, hold_from, hold_to = longest_run(times, [t >= t_ster for t in temps], p.max_gap_s)
    criteria = []
    if hold_from is None:
        peak = max(temps)
        criteria.append(Criterion(name="plateau_band", measured=peak, limit=f"{_fmt(t_ster - p.band_minus_k)} to "
                                  f"{_fmt(t_ster + p.band_plus_k)} °C", unit="°C", passed=False,
                                  reason=f"the chamber never reached {_fmt(t_ster)} °C (peak {_fmt(peak)} °C)"))
        criteria.append(_at_least("hold_time", 0.0, p.min_hold_s, "s",
                                  f"time at or above {_fmt(t_ster)} °C"))
    else:
        # The plateau: from first reaching the sterilization temperature to last leaving it.
        first = next(t for t, v in zip(times, temps) if v >= t_ster)
        last = max(t for t, v in zip(times, temps) if v >= t_ster)
        on = [first <= t <= last for t in times]
        pt = [t for t, o in zip(times, on) if o]
        pv = [v for v, o in zip(temps, on) if o]
        criteria.append(_range("plateau_band", pv, pt, t_ster - p.band_minus_k, t_ster + p.band_plus_k, "°C",
                               "plateau temperature"))
        criteria.append(_at_least("hold_time", hold_s, p.min_hold_s, "s",
                                  f"continuous time at or above {_fmt(t_ster)} °C"))
        criteria.extend(_steam_quality(p, trace, first, last))
    f0 = f0_minutes(times, temps, p.max_gap_s)
    criteria.append(_at_least("f0", f0, p.min_f0_min, "min", "lethality F0 (121.1 °C, z = 10 K)"))
    return Verdict(passed=all(c.passed for c in criteria), process="steam", samples=len(times), criteria=criteria)


def _steam_quality(p: SteamParameters, trace: Trace, first: int, last: int) -> list[Criterion]:
    temps, press = trace.values(p.temperature_field), trace.values(p.pressure_field)
    dev: list[tuple[float, int, float, float]] = []  # (measured − saturated, time, T, p)
    for t, temp, pres in zip(trace.times, temps, press):
        if first <= t <= last and isinstance(temp, (int, float)) and isinstance(pres, (int, float)):
            dev.append((pres - saturation_pressure_kpa(temp), t, temp, pres))
    tol = p.pressure_tolerance_kpa
    limit = f"within {_fmt(tol)} kPa of saturated steam"
    if not dev:
        missing = Criterion(name="steam_not_superheated", measured=None, limit=limit, unit="kPa", passed=False,
                            reason=f"no chamber pressure ({p.pressure_field}) recorded on the plateau")
        return [missing, missing.model_copy(update={"name": "no_non_condensable_gas"})]
    low = min(dev)
    high = max(dev)
    below = Criterion(
        name="steam_not_superheated", measured=round(low[0], 2), limit=f">= -{_fmt(tol)} kPa ({limit})",
        unit="kPa", passed=low[0] >= -tol,
        reason=(f"at {_at(low[1])} the pressure {_fmt(low[3])} kPa was {_fmt(-low[0])} kPa below saturated steam at "
                f"{_fmt(low[2])} °C ({_fmt(saturation_pressure_kpa(low[2]))} kPa): superheated steam or a "
                f"temperature sensor reading high") if low[0] < -tol else
               f"pressure never more than {_fmt(tol)} kPa below saturated steam (lowest {_fmt(low[0])} kPa)")
    above = Criterion(
        name="no_non_condensable_gas", measured=round(high[0], 2), limit=f"<= +{_fmt(tol)} kPa ({limit})",
        unit="kPa", passed=high[0] <= tol,
        reason=(f"at {_at(high[1])} the pressure {_fmt(high[3])} kPa was {_fmt(high[0])} kPa above saturated steam "
                f"at {_fmt(high[2])} °C: air or other non-condensable gas in the chamber") if high[0] > tol else
               f"pressure never more than {_fmt(tol)} kPa above saturated steam (highest {_fmt(high[0])} kPa)")
    return [below, above]


# --- ethylene oxide ----------------------------------------------------------------------------

def evaluate_ethylene_oxide(p: EthyleneOxideParameters, trace: Trace) -> Verdict:
    """Gas concentration, humidity, temperature and time of exposure; aeration time and temperature."""
    phases = trace.values(p.phase_field)
    if not trace.times:
        return _no_data("ethylene_oxide", p.measurement)
    exposure = [ph == p.exposure_phase for ph in phases]
    aeration = [ph == p.aeration_phase for ph in phases]
    criteria = []
    for name, fld, (lo, hi), unit, what in (
            ("eo_concentration", p.concentration_field, p.concentration_mg_l, "mg/L", "EO concentration"),
            ("relative_humidity", p.humidity_field, p.humidity_pct_rh, "% RH", "relative humidity"),
            ("exposure_temperature", p.temperature_field, p.temperature_c, "°C", "exposure temperature")):
        ts, vs = trace.numeric(fld, exposure)
        criteria.append(_range(name, vs, ts, lo, hi, unit, what))
    criteria.append(_at_least("exposure_time", longest_run(trace.times, exposure, p.max_gap_s)[0],
                              p.min_exposure_s, "s", "gas exposure time"))
    criteria.append(_at_least("aeration_time", longest_run(trace.times, aeration, p.max_gap_s)[0],
                              p.min_aeration_s, "s", "aeration time"))
    ts, vs = trace.numeric(p.temperature_field, aeration)
    criteria.append(_range("aeration_temperature", vs, ts, *p.aeration_temperature_c, "°C", "aeration temperature"))
    return Verdict(passed=all(c.passed for c in criteria), process="ethylene_oxide", samples=len(trace.times),
                   criteria=criteria)


# --- radiation ---------------------------------------------------------------------------------

def evaluate_radiation(p: RadiationParameters, trace: Trace) -> Verdict:
    """Lowest dosimeter dose at least the sterilization dose; highest at most the maximum acceptable dose."""
    ts, doses = trace.numeric(p.dose_field)
    if not ts:
        return _no_data("radiation", f"{p.measurement}.{p.dose_field}")
    lo, hi = min(doses), max(doses)
    criteria = [
        Criterion(name="minimum_dose", measured=lo, limit=f">= {_fmt(p.sterilization_dose_kgy)} kGy", unit="kGy",
                  passed=lo >= p.sterilization_dose_kgy,
                  reason=f"lowest dosimeter read {_fmt(lo)} kGy against the validated sterilization dose "
                         f"{_fmt(p.sterilization_dose_kgy)} kGy" + ("" if lo >= p.sterilization_dose_kgy
                                                                     else ": the load may not be sterile")),
        Criterion(name="maximum_dose", measured=hi, limit=f"<= {_fmt(p.max_acceptable_dose_kgy)} kGy", unit="kGy",
                  passed=hi <= p.max_acceptable_dose_kgy,
                  reason=f"highest dosimeter read {_fmt(hi)} kGy against the maximum acceptable dose "
                         f"{_fmt(p.max_acceptable_dose_kgy)} kGy" + ("" if hi <= p.max_acceptable_dose_kgy
                                                                     else ": the material may be degraded")),
    ]
    return Verdict(passed=all(c.passed for c in criteria), process="radiation", samples=len(ts), criteria=criteria)


# --- heat treatment ----------------------------------------------------------------------------

def _max_rate(times: list[int], temps: list[float], window_s: float, sign: int) -> tuple[float, int | None]:
    """Fastest heating (sign=1) or cooling (sign=-1) in K/min over windows of at least window_s."""
    best, at, j = 0.0, None, 0
    for i in range(len(times)):
        while j < len(times) and times[j] - times[i] < window_s * NS:
            j += 1
        if j >= len(times):
            break
        rate = sign * (temps[j] - temps[i]) / ((times[j] - times[i]) / NS / 60.0)
        if rate > best:
            best, at = rate, times[i]
    return best, at


def evaluate_heat_treatment(p: HeatTreatmentParameters, trace: Trace) -> Verdict:
    """Ramp rate, hold band and time, atmosphere during the hold, cooling rate and unload temperature."""
    times, temps = trace.numeric(p.temperature_field)
    if not times:
        return _no_data("heat_treatment", f"{p.measurement}.{p.temperature_field}")
    lo, hi = p.hold_temp_c - p.hold_band_k, p.hold_temp_c + p.hold_band_k
    hold_s, start, end = longest_run(times, [lo <= t <= hi for t in temps], p.max_gap_s)
    criteria = []
    start = start if start is not None else times[-1]
    end = end if end is not None else times[-1]
    ramp, ramp_at = _max_rate([t for t in times if t <= start], temps[:sum(1 for t in times if t <= start)],
                              p.rate_window_s, 1)
    criteria.append(Criterion(
        name="ramp_rate", measured=round(ramp, 2), limit=f"<= {_fmt(p.max_ramp_k_per_min)} K/min", unit="K/min",
        passed=ramp <= p.max_ramp_k_per_min,
        reason=f"fastest heating {_fmt(ramp)} K/min" + (f" at {_at(ramp_at)}" if ramp_at else "")
        + (f", above {_fmt(p.max_ramp_k_per_min)} K/min" if ramp > p.max_ramp_k_per_min else "")))
    criteria.append(_at_least("hold_time", hold_s, p.min_hold_s, "s",
                              f"continuous time within {_fmt(lo)}..{_fmt(hi)} °C"))
    ht, hv = trace.numeric(p.atmosphere_field, [start <= t <= end for t in trace.times])
    criteria.append(_range("atmosphere", hv, ht, None, p.atmosphere_max, p.atmosphere_unit,
                           f"{p.atmosphere_field} during the hold"))
    after = [(t, v) for t, v in zip(times, temps) if t >= end]
    cool, cool_at = _max_rate([t for t, _ in after], [v for _, v in after], p.rate_window_s, -1)
    criteria.append(Criterion(
        name="cooling_rate", measured=round(cool, 2), limit=f"<= {_fmt(p.max_cooling_k_per_min)} K/min",
        unit="K/min", passed=cool <= p.max_cooling_k_per_min,
        reason=f"fastest cooling {_fmt(cool)} K/min" + (f" at {_at(cool_at)}" if cool_at else "")
        + (f", above {_fmt(p.max_cooling_k_per_min)} K/min" if cool > p.max_cooling_k_per_min else "")))
    final = temps[-1]
    criteria.append(Criterion(
        name="unload_temperature", measured=final, limit=f"<= {_fmt(p.max_unload_temp_c)} °C", unit="°C",
        passed=final <= p.max_unload_temp_c,
        reason=f"load at {_fmt(final)} °C at the end of the cycle ({_at(times[-1])})"))
    return Verdict(passed=all(c.passed for c in criteria), process="heat_treatment", samples=len(times),
                   criteria=criteria)


# --- cleaning ----------------------------------------------------------------------------------

class ResidueResult(BaseModel):
    """A recorded residue test result of a cleaning cycle."""

    test: str = Field(min_length=1, max_length=200, description="Test name as in the recipe's residue limits")
    value: float = Field(description="Result")
    unit: str = Field(max_length=32, description="Unit of the result")


def evaluate_cleaning(p: CleaningParameters, trace: Trace, residues: list[ResidueResult]) -> Verdict:
    """Wash temperature and time, final-rinse conductivity, and each required residue result."""
    if not trace.times:
        return _no_data("cleaning", p.measurement)
    steps = trace.values(p.phase_field)
    wash = [s == p.wash_phase for s in steps]
    ts, vs = trace.numeric(p.temperature_field, wash)
    criteria = [_range("wash_temperature", vs, ts, *p.wash_temperature_c, "°C", "wash temperature"),
                _at_least("wash_time", longest_run(trace.times, wash, p.max_gap_s)[0], p.min_wash_s, "s",
                          "wash time")]
    ct, cv = trace.numeric(p.conductivity_field, [s == p.final_rinse_phase for s in steps])
    if cv:
        ok = cv[-1] <= p.max_final_conductivity_us_cm
        criteria.append(Criterion(
            name="final_rinse_conductivity", measured=cv[-1], limit=f"<= {_fmt(p.max_final_conductivity_us_cm)} µS/cm",
            unit="µS/cm", passed=ok, reason=f"conductivity at the end of the final rinse ({_at(ct[-1])}) was "
                                            f"{_fmt(cv[-1])} µS/cm"))
    else:
        criteria.append(Criterion(name="final_rinse_conductivity", measured=None,
                                  limit=f"<= {_fmt(p.max_final_conductivity_us_cm)} µS/cm", unit="µS/cm",
                                  passed=False, reason="no final rinse recorded"))
    given = {r.test: r for r in residues}
    for lim in p.residue_limits:
        r = given.get(lim.test)
        if r is None:
            criteria.append(Criterion(name=f"residue:{lim.test}", measured=None, limit=f"<= {_fmt(lim.max)} {lim.unit}",
                                      unit=lim.unit, passed=False, reason=f"residue test {lim.test} not recorded"))
        elif r.unit != lim.unit:
            criteria.append(Criterion(name=f"residue:{lim.test}", measured=r.value, limit=f"<= {_fmt(lim.max)} {lim.unit}",
                                      unit=r.unit, passed=False,
                                      reason=f"residue test {lim.test} recorded in {r.unit}, the limit is in {lim.unit}"))
        else:
            criteria.append(Criterion(name=f"residue:{lim.test}", measured=r.value, limit=f"<= {_fmt(lim.max)} {lim.unit}",
                                      unit=lim.unit, passed=r.value <= lim.max,
                                      reason=f"residue test {lim.test}: {_fmt(r.value)} {lim.unit}"))
    return Verdict(passed=all(c.passed for c in criteria), process="cleaning", samples=len(trace.times),
                   criteria=criteria)


# --- what every process shares: sensor plausibility and coverage of the window -----------------

def plausible_ranges(p: RecipeParameters) -> dict[str, tuple[float, float, str]]:
    """Per judged field, the readings the process can physically produce; outside them a sensor is at fault."""
    if isinstance(p, SteamParameters):
        return {p.temperature_field: (-20.0, 200.0, "°C"), p.pressure_field: (0.0, 1000.0, "kPa")}
    if isinstance(p, EthyleneOxideParameters):
        return {p.temperature_field: (-20.0, 120.0, "°C"), p.humidity_field: (0.0, 100.0, "% RH"),
                p.concentration_field: (0.0, 5000.0, "mg/L")}
    if isinstance(p, RadiationParameters):
        return {p.dose_field: (0.0, 1000.0, "kGy")}
    if isinstance(p, HeatTreatmentParameters):
        return {p.temperature_field: (-50.0, 2000.0, "°C"), p.atmosphere_field: (0.0, 1_000_000.0,
                                                                                  p.atmosphere_unit)}
    return {p.temperature_field: (-20.0, 150.0, "°C"), p.conductivity_field: (0.0, 1_000_000.0, "µS/cm")}


def coverage_fields(p: RecipeParameters) -> list[str]:
    """The signals that must be read across the whole window (dosimeters are read once, not streamed)."""
    if isinstance(p, SteamParameters):
        return [p.temperature_field, p.pressure_field]
    if isinstance(p, EthyleneOxideParameters):
        return [p.temperature_field, p.humidity_field, p.concentration_field]
    if isinstance(p, RadiationParameters):
        return []
    return [p.temperature_field]


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
    limit = "; ".join(f"{n} {_fmt(lo)} to {_fmt(hi)} {u}" for n, (lo, hi, u) in ranges.items())
    if not faults:
        return Criterion(name="sensor_plausible", measured=0, limit=limit, unit="readings", passed=True,
                         reason="every reading within what the process can physically produce"), trace
    t, name, v, lo, hi, unit = min(faults)
    more = (f" ({len(faults)} implausible readings in all, " if len(faults) > 1 else " (") + \
        "left out of the other criteria)"
    return Criterion(name="sensor_plausible", measured=len(faults), limit=limit, unit="readings", passed=False,
                     reason=f"sensor fault at t={_at(t)}: {name} read {_fmt(v)} {unit}, outside the physically possible "
                            f"{_fmt(lo)} to {_fmt(hi)} {unit}" + more), Trace(times=trace.times, columns=columns)


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
    limit = f"no gap over {_fmt(p.max_gap_s)} s between {_at(start_ns)} and {_at(end_ns)}"
    if not gaps:
        return Criterion(name="data_coverage", measured=0, limit=limit, unit="s", passed=True,
                         reason=f"{', '.join(fields)} read throughout the cycle")
    missing = _union_seconds([(a, b) for a, b, _ in gaps])
    named = "; ".join(f"{name} {_at(a)}–{_at(b)} ({_fmt((b - a) / NS)} s)" for a, b, name in sorted(gaps)[:10])
    return Criterion(name="data_coverage", measured=round(missing, 1), limit=limit, unit="s", passed=False,
                     reason=f"incomplete data: {_fmt(missing)} s of the cycle without readings: {named}"
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


def _evaluate_process(parameters: RecipeParameters, trace: Trace, residues: list[ResidueResult]) -> Verdict:
    if isinstance(parameters, SteamParameters):
        return evaluate_steam(parameters, trace)
    if isinstance(parameters, EthyleneOxideParameters):
        return evaluate_ethylene_oxide(parameters, trace)
    if isinstance(parameters, RadiationParameters):
        return evaluate_radiation(parameters, trace)
    if isinstance(parameters, HeatTreatmentParameters):
        return evaluate_heat_treatment(parameters, trace)
    return evaluate_cleaning(parameters, trace, residues)


def evaluate(*, parameters: RecipeParameters, trace: Trace, residues: list[ResidueResult] | None = None,
             window: tuple[int, int] | None = None, reported_gaps: list[tuple[int, int, str]] = ()) -> Verdict:
    """Evaluate a cycle's trace against the recipe version's parameters (and its window's coverage, if given).

    Never raises on data: an implausible reading fails sensor_plausible, and anything the process rules
    cannot judge fails evaluation_error, so a cycle always ends with a recorded verdict."""
    sensors, clean = sensor_check(parameters, trace)
    try:
        verdict = _evaluate_process(parameters, clean, residues or [])
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
