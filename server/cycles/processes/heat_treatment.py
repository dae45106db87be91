"""Heat treatment (stress relief, HIP): ramp rate, hold band and time, atmosphere, cooling, unload temperature."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from server.cycles.criteria import NS, Criterion, Trace, Verdict, at, at_least, fmt, in_range, longest_run, no_data
from server.cycles.processes.base import CycleProcess, PlotField, RecipeWindow


class HeatTreatmentParameters(RecipeWindow):
    """Stress relief or HIP: ramp rate, hold band and time, atmosphere, cooling."""

    process: Literal["heat_treatment"] = "heat_treatment"
    measurement: str = Field(default="heat_treatment", description="Measurement of the furnace's signals")
    temperature_field: str = Field(default="load_temp_c", description="Load (part) temperature, °C")
    hold_temp_c: float = Field(gt=0, description="Hold temperature, e.g. 800 °C stress relief, 920 °C HIP")
    hold_band_k: float = Field(default=10.0, gt=0, description="Allowed deviation from the hold temperature, ± K")
    min_hold_s: float = Field(gt=0, description="Minimum continuous time within the hold band")
    max_ramp_k_per_min: float = Field(gt=0, description="Fastest allowed heating rate")
    rate_window_s: float = Field(default=60.0, gt=0, description="Window over which heating/cooling rates are taken")
    # Residual oxygen judges vacuum and argon alike (titanium picks up oxygen when hot); a vacuum-pressure
    # field can be named instead, but argon backfill for cooling starts while the load is still in the band.
    atmosphere_field: str = Field(default="oxygen_ppm", description="Atmosphere signal judged during the hold")
    atmosphere_max: float = Field(description="Highest allowed atmosphere value during the hold (e.g. 20 ppm O2)")
    atmosphere_unit: str = Field(default="ppm", description="Unit of the atmosphere signal")
    max_cooling_k_per_min: float = Field(gt=0, description="Fastest allowed cooling rate after the hold")
    max_unload_temp_c: float = Field(description="The load must be at or below this temperature at the end")


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
        return no_data("heat_treatment", f"{p.measurement}.{p.temperature_field}")
    lo, hi = p.hold_temp_c - p.hold_band_k, p.hold_temp_c + p.hold_band_k
    hold_s, start, end = longest_run(times, [lo <= t <= hi for t in temps], p.max_gap_s)
    criteria = []
    start = start if start is not None else times[-1]
    end = end if end is not None else times[-1]
    ramp, ramp_at = _max_rate([t for t in times if t <= start], temps[:sum(1 for t in times if t <= start)],
                              p.rate_window_s, 1)
    criteria.append(Criterion(
        name="ramp_rate", measured=round(ramp, 2), limit=f"<= {fmt(p.max_ramp_k_per_min)} K/min", unit="K/min",
        passed=ramp <= p.max_ramp_k_per_min,
        reason=f"fastest heating {fmt(ramp)} K/min" + (f" at {at(ramp_at)}" if ramp_at else "")
        + (f", above {fmt(p.max_ramp_k_per_min)} K/min" if ramp > p.max_ramp_k_per_min else "")))
    criteria.append(at_least("hold_time", hold_s, p.min_hold_s, "s",
                              f"continuous time within {fmt(lo)}..{fmt(hi)} °C"))
    ht, hv = trace.numeric(p.atmosphere_field, [start <= t <= end for t in trace.times])
    criteria.append(in_range("atmosphere", hv, ht, None, p.atmosphere_max, p.atmosphere_unit,
                           f"{p.atmosphere_field} during the hold"))
    after = [(t, v) for t, v in zip(times, temps) if t >= end]
    cool, cool_at = _max_rate([t for t, _ in after], [v for _, v in after], p.rate_window_s, -1)
    criteria.append(Criterion(
        name="cooling_rate", measured=round(cool, 2), limit=f"<= {fmt(p.max_cooling_k_per_min)} K/min",
        unit="K/min", passed=cool <= p.max_cooling_k_per_min,
        reason=f"fastest cooling {fmt(cool)} K/min" + (f" at {at(cool_at)}" if cool_at else "")
        + (f", above {fmt(p.max_cooling_k_per_min)} K/min" if cool > p.max_cooling_k_per_min else "")))
    final = temps[-1]
    criteria.append(Criterion(
        name="unload_temperature", measured=final, limit=f"<= {fmt(p.max_unload_temp_c)} °C", unit="°C",
        passed=final <= p.max_unload_temp_c,
        reason=f"load at {fmt(final)} °C at the end of the cycle ({at(times[-1])})"))
    return Verdict(passed=all(c.passed for c in criteria), process="heat_treatment", samples=len(times),
                   criteria=criteria)



def plausible(p: HeatTreatmentParameters) -> dict[str, tuple[float, float, str]]:
    """Readings a furnace or HIP press can physically produce."""
    return {p.temperature_field: (-50.0, 2000.0, "°C"), p.atmosphere_field: (0.0, 1_000_000.0, p.atmosphere_unit)}


def plot(p: HeatTreatmentParameters) -> list[PlotField]:
    """Load temperature with the hold band, and the atmosphere with its maximum."""
    return [(p.temperature_field, {"warn_low": p.hold_temp_c - p.hold_band_k, "warn_high": p.hold_temp_c + p.hold_band_k}),
            (p.atmosphere_field, {"warn_high": p.atmosphere_max})]


PROCESS = CycleProcess(name="heat_treatment", parameters=HeatTreatmentParameters,
                       evaluate=lambda p, trace, _: evaluate_heat_treatment(p, trace), plausible=plausible,
                       coverage_fields=lambda p: [p.temperature_field], plot=plot)
